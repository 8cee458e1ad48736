"""jaxrnn.io: checkpoint files in and out, and recurrent layers found in a model's state dict.

PyTorch is the oracle: files are written by torch (or read back by torch), configurations are
compared with the torch modules' own attributes, and models built from files are compared with
torch's outputs and gradients.
"""

from __future__ import annotations

import copy
import os
import pickle
import re
import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.utils.prune
from _torch_oracle import assert_close
from flax import nnx
from safetensors.torch import save_file as torch_save_safetensors

import jaxrnn
from jaxrnn import io

FORMATS = ("pt", "safetensors", "npz")


class Model(torch.nn.Module):
    """A small full model: recurrent layers and cells among other layers."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Linear(3, 5)
        self.encoder = torch.nn.Sequential()
        self.encoder.add_module("lstm", torch.nn.LSTM(5, 8, 2, bidirectional=True, proj_size=3))
        self.gru = torch.nn.GRU(4, 6, bias=False)
        self.rnn = torch.nn.RNN(2, 3, 3, nonlinearity="relu")
        self.lstm_cell = torch.nn.LSTMCell(6, 5)
        self.gru_cell = torch.nn.GRUCell(3, 4, bias=False)
        self.rnn_cell = torch.nn.RNNCell(2, 7)
        self.head = torch.nn.Linear(6, 1)


RECURRENT = {
    "encoder.lstm.": "LSTM",
    "gru.": "GRU",
    "rnn.": "RNN",
    "lstm_cell.": "LSTMCell",
    "gru_cell.": "GRUCell",
    "rnn_cell.": "RNNCell",
}


def torch_config(module) -> dict:
    """The constructor arguments a torch recurrent module was built with (what weights store)."""
    config = dict(input_size=module.input_size, hidden_size=module.hidden_size, bias=module.bias)
    if isinstance(module, torch.nn.RNNBase):
        config.update(num_layers=module.num_layers, bidirectional=module.bidirectional)
        if isinstance(module, torch.nn.LSTM):
            config["proj_size"] = module.proj_size
    return config


def write(state_dict, path):
    """Write a torch state dict with torch's own writer (or numpy's for .npz)."""
    if path.endswith(".pt"):
        torch.save(state_dict, path)
    elif path.endswith(".safetensors"):
        torch_save_safetensors({k: v.contiguous() for k, v in state_dict.items()}, path)
    else:
        np.savez(path, **{k: v.numpy() for k, v in state_dict.items()})


@pytest.fixture(scope="module")
def model():
    return Model()


@pytest.mark.parametrize("fmt", FORMATS)
def test_load_returns_torch_arrays_and_finds_layers(model, tmp_path, fmt):
    path = str(tmp_path / f"model.{fmt}")
    write(model.state_dict(), path)
    sd = jaxrnn.load_state_dict_file(path)
    assert set(sd) == set(model.state_dict())
    if fmt != "safetensors":  # safetensors stores keys sorted, the others in torch's order
        assert list(sd) == list(model.state_dict())
    for key, value in model.state_dict().items():
        assert isinstance(sd[key], np.ndarray)
        np.testing.assert_array_equal(sd[key], value.numpy())
    layers = {layer.prefix: layer for layer in jaxrnn.find_recurrent_layers(sd)}
    assert set(layers) == set(RECURRENT)
    for prefix, cls in RECURRENT.items():
        layer = layers[prefix]
        module = model.get_submodule(prefix.rstrip("."))
        assert layer.error is None
        assert layer.cls == cls == type(module).__name__
        assert layer.config == torch_config(module)
        assert set(layer.keys) == {prefix + k for k in module.state_dict()}


def test_nested_mappings_are_found_as_recurrent_layer_reads_them():
    """find_recurrent_layers flattens nested mappings with dots, as recurrent_layer and
    state_dict_to_params do (it found nothing in a Linen-style nested params tree)."""
    gru = torch.nn.GRU(3, 4, bidirectional=True)
    nested = {"encoder": {"gru": {k: v.numpy() for k, v in gru.state_dict().items()}}}
    (layer,) = jaxrnn.find_recurrent_layers(nested)
    assert (layer.prefix, layer.cls, layer.error) == ("encoder.gru.", "GRU", None)
    assert layer.config == torch_config(gru)
    assert jaxrnn.recurrent_layer(nested, "encoder.gru.") == layer


def test_found_layers_are_the_ones_that_load():
    """A layer with keys torch's layer does not have (a subclass's learned ``h0``, AWD-LSTM's
    ``weight_hh_l0_raw`` kept beside the weight) is listed with the error that loading it gives:
    find_recurrent_layers (and ``inspect``) listed it as a layer that module_from_state_dict
    then refused."""

    class LearnedInit(torch.nn.LSTM):
        def __init__(self):
            super().__init__(4, 3)
            self.h0 = torch.nn.Parameter(torch.zeros(1, 1, 3))

    model = torch.nn.Module()
    model.enc, model.awd, model.gru = LearnedInit(), torch.nn.LSTM(4, 3), torch.nn.GRU(4, 3)
    model.awd.weight_hh_l0_raw = torch.nn.Parameter(model.awd.weight_hh_l0.detach().clone())
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    layers = {layer.prefix: layer for layer in jaxrnn.find_recurrent_layers(sd)}
    assert set(layers) == {"enc.", "awd.", "gru."}
    assert layers["gru."].error is None and jaxrnn.module_from_state_dict(sd, "gru.")
    for prefix, extra in (("enc.", "h0"), ("awd.", "weight_hh_l0_raw")):
        assert f'Unexpected key(s) in state_dict: "{extra}"' in layers[prefix].error
        assert prefix + extra in layers[prefix].keys
        with pytest.raises(ValueError) as raised:
            jaxrnn.module_from_state_dict(sd, prefix)
        assert " ".join(layers[prefix].error.split()) in " ".join(str(raised.value).split())


def _raw_beside_module(model):
    """fastai's AWD-LSTM: the raw weight one level above the LSTM it drops into."""
    sd = {"rnns.0.module." + k: v for k, v in model.lstm.state_dict().items()}
    sd["rnns.0.weight_hh_l0_raw"] = sd.pop("rnns.0.module.weight_hh_l0")
    return sd


REPARAMETRIZED = {  # how torch's reparametrizations store weight_hh_l0 of model.lstm
    "weight_norm": (
        lambda m: torch.nn.utils.weight_norm(m.lstm, "weight_hh_l0"),
        "the originals of torch.nn.utils.weight_norm",
        lambda m: torch.nn.utils.remove_weight_norm(m.lstm, "weight_hh_l0"),
    ),
    "spectral_norm": (
        lambda m: torch.nn.utils.spectral_norm(m.lstm, "weight_hh_l0"),
        "the originals of torch.nn.utils.spectral_norm",
        lambda m: torch.nn.utils.remove_spectral_norm(m.lstm, "weight_hh_l0"),
    ),
    "prune": (
        lambda m: torch.nn.utils.prune.random_unstructured(m.lstm, "weight_hh_l0", 0.5),
        "the originals of torch.nn.utils.prune",
        lambda m: torch.nn.utils.prune.remove(m.lstm, "weight_hh_l0"),
    ),
    "parametrizations": (
        lambda m: torch.nn.utils.parametrizations.weight_norm(m.lstm, "weight_hh_l0"),
        "a torch.nn.utils.parametrizations parametrization's originals",
        lambda m: torch.nn.utils.parametrize.remove_parametrizations(m.lstm, "weight_hh_l0"),
    ),
}


@pytest.mark.filterwarnings("ignore:.*is deprecated:FutureWarning")
@pytest.mark.parametrize("how", sorted(REPARAMETRIZED))
def test_reparametrized_weights_are_named_with_the_way_out(how):
    """A checkpoint saved with a weight reparametrized stores the originals instead of the weight
    (``weight_hh_l0_g``/``_v``, ``_orig``/``_mask``, ``parametrizations.weight_hh_l0.*``). Loading
    refuses it, as torch's LSTM does, and says which reparametrization it is and how to remove
    it; that way out (in torch) gives a file that loads and runs as the torch model (the
    message said only 'missing parameter weight_hh_l0')."""
    reparametrize, what, remove = REPARAMETRIZED[how]
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.lstm = torch.nn.LSTM(3, 4)
    reparametrize(model)
    model.eval()
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    (layer,) = jaxrnn.find_recurrent_layers(sd)
    assert layer.error.startswith("weight_hh_l0 is stored as ") and what in layer.error
    with pytest.raises(ValueError, match="remove it in torch before saving") as raised:
        jaxrnn.module_from_state_dict(sd, "lstm.")
    assert layer.error in str(raised.value)
    with pytest.raises(ValueError, match=f'(?s)Missing key.*"weight_hh_l0".*{re.escape(what)}'):
        jaxrnn.LSTM(3, 4, rngs=nnx.Rngs(0)).load_state_dict(
            {k.removeprefix("lstm."): v for k, v in sd.items()}
        )
    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        want = model.lstm(x)
    remove(model)
    ours = jaxrnn.module_from_state_dict(model.state_dict(), "lstm.")
    assert_close(ours(x.numpy()), jax.tree.map(lambda t: t.numpy(), want))


@pytest.mark.parametrize("where", ["salesforce", "fastai"])
def test_weight_drop_raw_weights_are_named_with_the_key_to_use(where):
    """AWD-LSTM's weight drop keeps ``weight_hh_l0_raw`` (beside the LSTM's keys, or one level up
    in fastai's ``rnns.0.module.``): the message names the key to rename it to, and renamed it
    loads as the LSTM (its weight in eval mode)."""
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.lstm = torch.nn.LSTM(3, 4)
    if where == "fastai":
        sd, prefix = _raw_beside_module(model), "rnns.0.module."
    else:
        sd = {"lstm." + k: v for k, v in model.lstm.state_dict().items()}
        sd["lstm.weight_hh_l0_raw"], prefix = sd.pop("lstm.weight_hh_l0"), "lstm."
    raw = next(k for k in sd if k.endswith("_raw"))
    (layer,) = jaxrnn.find_recurrent_layers(sd)
    assert layer.prefix == prefix
    assert layer.error == (
        f'weight_hh_l0 is stored as "{raw}", the weight a weight-drop (DropConnect) wrapper such '
        f"as AWD-LSTM's keeps; in eval mode it is the layer's weight_hh_l0: rename the key to "
        f'"{prefix}weight_hh_l0"'
    )
    sd[prefix + "weight_hh_l0"] = sd.pop(raw)
    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        want = jax.tree.map(lambda t: t.numpy(), model.lstm(x))
    assert_close(jaxrnn.module_from_state_dict(sd, prefix)(x.numpy()), want)


@pytest.mark.parametrize("fmt", FORMATS)
def test_prefix_picks_one_layer(model, tmp_path, fmt):
    path = str(tmp_path / f"model.{fmt}")
    write(model.state_dict(), path)
    params = jaxrnn.load_state_dict_file(path, prefix="encoder.lstm.")
    expected = model.encoder.lstm.state_dict()
    assert set(params) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(params[key], value.numpy())


def test_nested_checkpoint_is_flattened(model, tmp_path):
    opt = torch.optim.Adam(model.parameters())
    path = str(tmp_path / "ckpt.pt")
    torch.save({"model": model.state_dict(), "epoch": 3, "optimizer": opt.state_dict()}, path)
    sd = jaxrnn.load_state_dict_file(path)
    assert "epoch" not in sd
    gru = jaxrnn.load_state_dict_file(path, prefix="model.gru.")
    for key, value in model.gru.state_dict().items():
        np.testing.assert_array_equal(gru[key], value.numpy())
    prefixes = {layer.prefix for layer in jaxrnn.find_recurrent_layers(sd)}
    assert prefixes == {"model." + p for p in RECURRENT}


def test_tensors_in_lists_and_tuples_are_kept(model, tmp_path):
    """torch.load reads tensors in lists and tuples (``{'models': [sd0, sd1]}``, an EMA copy):
    they are named by index, none is dropped."""
    sd = model.state_dict()
    path = str(tmp_path / "ensemble.pt")
    torch.save({"models": [sd, {"gru": model.gru.state_dict()}], "ema": (sd,), "step": 9}, path)
    flat = jaxrnn.load_state_dict_file(path)
    assert len(flat) == 2 * len(sd) + len(model.gru.state_dict())
    for key, value in sd.items():
        np.testing.assert_array_equal(flat[f"models.0.{key}"], value.numpy())
        np.testing.assert_array_equal(flat[f"ema.0.{key}"], value.numpy())
    gru = jaxrnn.load_state_dict_file(path, prefix="models.1.gru.")
    assert set(gru) == set(model.gru.state_dict())
    prefixes = {layer.prefix for layer in jaxrnn.find_recurrent_layers(flat)}
    assert "ema.0.encoder.lstm." in prefixes and "models.1.gru." in prefixes


@pytest.mark.parametrize(
    "name, how",
    [
        ("model_best.pth.tar", "zip"),
        ("ckpt.pkl", "legacy"),
        ("checkpoint", "zip"),
        ("weights.data", "npz"),
        ("weights.st", "safetensors"),
    ],
)
def test_other_file_names_are_read_by_content(model, tmp_path, name, how):
    """torch.save files named as pytorch/examples names them (``model_best.pth.tar``), ``.pkl``
    or without a suffix, and .npz/.safetensors content under other names, are recognised by
    their first bytes, as torch.load reads any name."""
    sd = model.state_dict()
    path = str(tmp_path / name)
    if how == "npz":
        with open(path, "wb") as f:
            np.savez(f, **{k: v.numpy() for k, v in sd.items()})
    elif how == "safetensors":
        torch_save_safetensors({k: v.contiguous() for k, v in sd.items()}, path)
    else:
        torch.save({"state_dict": sd}, path, _use_new_zipfile_serialization=how == "zip")
    flat = jaxrnn.load_state_dict_file(path)
    prefix = "" if how in ("npz", "safetensors") else "state_dict."
    assert set(flat) == {prefix + k for k in sd}
    for key, value in sd.items():
        np.testing.assert_array_equal(flat[prefix + key], value.numpy())


# ---------------------------------------------------------------------------------------------
# a model built from a file computes what torch computes


def _parity(torch_module, jax_module, x):
    """Outputs and gradients (input and every parameter) of the same loss, torch vs jax."""
    rng = np.random.default_rng(1)
    xt = torch.tensor(x, requires_grad=True)
    out_t = torch_module(xt)
    outs_t = out_t if isinstance(out_t, tuple) else (out_t,)
    flat_t = [o for o in outs_t for o in (o if isinstance(o, tuple) else (o,))]
    weights = [rng.standard_normal(tuple(o.shape)).astype(np.float32) for o in flat_t]
    loss_t = sum((o * torch.from_numpy(w)).sum() for o, w in zip(flat_t, weights, strict=True))
    loss_t.backward()

    def loss(module, x):
        out = module(x)
        flat = jax.tree.leaves(out)
        return sum((o * w).sum() for o, w in zip(flat, weights, strict=True)), flat

    grad_fn = nnx.jit(nnx.value_and_grad(loss, argnums=(0, 1), has_aux=True))
    (_, flat_j), (g_mod, g_x) = grad_fn(jax_module, jnp.asarray(x))
    for o_t, o_j in zip(flat_t, flat_j, strict=True):
        np.testing.assert_allclose(o_j, o_t.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g_x, xt.grad.numpy(), rtol=1e-5, atol=1e-5)
    for name, p in torch_module.named_parameters():
        np.testing.assert_allclose(g_mod[name][...], p.grad.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prefix", list(RECURRENT))
def test_module_from_file_matches_torch(model, tmp_path, prefix):
    path = str(tmp_path / "model.safetensors")
    write(model.state_dict(), path)
    sd = jaxrnn.load_state_dict_file(path)
    torch_module = model.get_submodule(prefix.rstrip("."))
    nonlinearity = getattr(torch_module, "nonlinearity", "tanh")
    jax_module = jaxrnn.module_from_state_dict(sd, prefix, nonlinearity=nonlinearity)
    assert type(jax_module).__name__ == type(torch_module).__name__
    x = np.random.default_rng(0).standard_normal((4, 2, torch_module.input_size), np.float32)
    if prefix.endswith("cell."):
        x = x[0]
    _parity(torch_module, jax_module, x)


def test_torchscript_archive_is_read_with_its_weights(model, tmp_path):
    """A ``torch.jit.save`` archive (how deployed models ship): its state dict, every layer in
    it found, and the modules built from it compute as torch's."""
    path = str(tmp_path / "model.pt")
    with warnings.catch_warnings():  # torch deprecates TorchScript for torch.export
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model), path)
    sd = jaxrnn.load_state_dict_file(path)
    assert list(sd) == list(model.state_dict())
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(sd[key], value.numpy())
    assert {layer.prefix for layer in jaxrnn.find_recurrent_layers(sd)} == set(RECURRENT)
    gru = jaxrnn.module_from_state_dict(sd, "gru.")
    x = np.random.default_rng(0).standard_normal((4, 2, 4), np.float32)
    _parity(copy.deepcopy(model.gru), gru, x)  # a copy: the shared model's .grad stays clean
    damaged = tmp_path / "damaged.pt"
    data = open(path, "rb").read()
    damaged.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        jaxrnn.load_state_dict_file(damaged)


# ---------------------------------------------------------------------------------------------
# export: files that torch's load_state_dict(strict=True) accepts


class Wrapper(torch.nn.Module):
    def __init__(self, name, module):
        super().__init__()
        self.add_module(name, module)


JAX_MODULES = {
    "lstm": lambda: jaxrnn.LSTM(3, 6, 2, bidirectional=True, proj_size=2, rngs=nnx.Rngs(1)),
    "gru": lambda: jaxrnn.GRU(3, 5, bias=False, rngs=nnx.Rngs(2)),
    "cell": lambda: jaxrnn.LSTMCell(3, 4, rngs=nnx.Rngs(3)),
}
TORCH_TWINS = {
    "lstm": lambda: torch.nn.LSTM(3, 6, 2, bidirectional=True, proj_size=2),
    "gru": lambda: torch.nn.GRU(3, 5, bias=False),
    "cell": lambda: torch.nn.LSTMCell(3, 4),
}


_forward = nnx.jit(lambda m, x: m(x))  # one compilation per module kind, shared by the formats


@pytest.mark.parametrize("fmt", ("safetensors", "pt", "npz"))
@pytest.mark.parametrize("kind", list(JAX_MODULES))
def test_export_loads_into_torch_strict(tmp_path, fmt, kind):
    jax_module = JAX_MODULES[kind]()
    path = str(tmp_path / f"out.{fmt}")
    jaxrnn.save_state_dict_file(jax_module, path, prefix="encoder.")
    target = Wrapper("encoder", TORCH_TWINS[kind]())
    if fmt == "npz":
        sd = {k: torch.from_numpy(v) for k, v in np.load(path).items()}
    elif fmt == "pt":
        sd = torch.load(path, weights_only=True)
    else:
        from safetensors.torch import load_file

        sd = load_file(path)
    target.load_state_dict(sd, strict=True)
    x = np.random.default_rng(0).standard_normal((5, 2, 3), np.float32)
    if kind == "cell":
        x = x[0]
    out_t = target.encoder(torch.from_numpy(x))
    out_j = _forward(jax_module, jnp.asarray(x))
    for o_j, o_t in zip(jax.tree.leaves(out_j), jax.tree.leaves(out_t), strict=True):
        np.testing.assert_allclose(o_j, o_t.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_export_nnx_model_uses_attribute_paths(tmp_path):
    class JaxModel(nnx.Module):
        def __init__(self):
            self.gru = jaxrnn.GRU(3, 4, 2, rngs=nnx.Rngs(0))
            self.cells = nnx.List([jaxrnn.RNNCell(4, 2, rngs=nnx.Rngs(1))])
            self.scale = nnx.Param(jnp.arange(2.0))

    class TorchModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = torch.nn.GRU(3, 4, 2)
            self.cells = torch.nn.ModuleList([torch.nn.RNNCell(4, 2)])
            self.scale = torch.nn.Parameter(torch.zeros(2))

    jax_model, target = JaxModel(), TorchModel()
    path = str(tmp_path / "model.safetensors")
    jaxrnn.save_state_dict_file(jax_model, path)
    from safetensors.torch import load_file

    target.load_state_dict(load_file(path), strict=True)
    np.testing.assert_array_equal(target.scale.detach().numpy(), [0.0, 1.0])
    np.testing.assert_array_equal(
        target.cells[0].weight_ih.detach().numpy(), jax_model.cells[0].weight_ih[...]
    )
    # every exported array, compared per key with its source (bias_ih and bias_hh share a shape,
    # so a swap would load without complaint)
    sources = {f"gru.{k}": v for k, v in jax_model.gru.torch_params().items()}
    sources.update({f"cells.0.{k}": v for k, v in jax_model.cells[0].torch_params().items()})
    sources["scale"] = jax_model.scale[...]
    loaded = target.state_dict()
    assert set(loaded) == set(sources)
    # in torch's order (NNX's own is alphabetical): a module's own parameters first, attributes
    # as assigned, each layer's as torch's (safetensors files keep no order; .pt files do)
    jaxrnn.save_state_dict_file(jax_model, str(tmp_path / "model.pt"))
    assert list(jaxrnn.load_state_dict_file(str(tmp_path / "model.pt"))) == list(loaded)
    for key, value in sources.items():
        np.testing.assert_array_equal(loaded[key].detach().numpy(), np.asarray(value), err_msg=key)
    assert not np.array_equal(np.asarray(sources["gru.bias_ih_l0"]), sources["gru.bias_hh_l0"])
    # an optimizer step's nnx.update with gradients (nnx.grad returns them sorted) re-sorts
    # every module's attributes: the layers keep torch's order (they came alphabetically,
    # bias_hh_l0 first); the modules' order is lost
    grads = nnx.grad(lambda m: m.gru(jnp.ones((2, 3)))[0].sum() + m.scale.sum())(jax_model)
    nnx.update(jax_model, grads)
    jaxrnn.save_state_dict_file(jax_model, str(tmp_path / "updated.pt"))
    updated = list(jaxrnn.load_state_dict_file(str(tmp_path / "updated.pt")))
    for layer in ("gru.", "cells.0."):
        assert [k for k in updated if k.startswith(layer)] == [
            k for k in loaded if k.startswith(layer)
        ]


def test_export_linen_params(tmp_path):
    from jaxrnn import linen as jrl

    x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 2, 3), np.float32))
    layer = jrl.GRU(3, 4, num_layers=2)
    variables = layer.init(jax.random.key(0), x)
    path = str(tmp_path / "linen.safetensors")
    jaxrnn.save_state_dict_file({"encoder": variables["params"]}, path)  # nested: dotted names
    from safetensors.torch import load_file

    target = Wrapper("encoder", torch.nn.GRU(3, 4, num_layers=2))
    target.load_state_dict(load_file(path), strict=True)
    out_j, h_j = layer.apply(variables, x)
    out_t, h_t = target.encoder(torch.tensor(np.asarray(x)))
    np.testing.assert_allclose(out_j, out_t.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h_j, h_t.detach().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fmt", ("pt", "safetensors"))
def test_export_bfloat16(tmp_path, fmt):
    jax_module = jaxrnn.GRUCell(3, 2, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    path = str(tmp_path / f"bf16.{fmt}")
    jaxrnn.save_state_dict_file(jax_module, path)
    target = torch.nn.GRUCell(3, 2).to(torch.bfloat16)
    if fmt == "pt":
        sd = torch.load(path, weights_only=True)
    else:
        from safetensors.torch import load_file

        sd = load_file(path)
    target.load_state_dict(sd, strict=True)
    assert target.weight_ih.dtype == torch.bfloat16
    np.testing.assert_array_equal(
        target.weight_ih.detach().float().numpy(), np.asarray(jax_module.weight_ih[...], np.float32)
    )
    back = jaxrnn.load_state_dict_file(path)
    assert back["weight_ih"].dtype == jnp.bfloat16


def test_export_bfloat16_to_npz_is_refused(tmp_path):
    """``np.savez`` would write bfloat16 as opaque void bytes that neither torch nor jaxrnn can
    read back; the export refuses before writing anything."""
    jax_module = jaxrnn.GRUCell(3, 2, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    path = tmp_path / "bf16.npz"
    with pytest.raises(ValueError, match="save_state_dict_file: .npz cannot hold bfloat16"):
        jaxrnn.save_state_dict_file(jax_module, str(path))
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# safety: loading never runs code from the file


class _Evil:
    """Unpickling this creates the marker file: proof that code from the checkpoint ran."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("how", ("torch.save", "pickle.dump"))
def test_malicious_pickle_is_refused_not_executed(tmp_path, how):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = str(marker)
    path = str(tmp_path / "evil.pt")
    payload = {"weight_ih_l0": torch.zeros(4, 3), "payload": evil}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    # the file really is malicious: a plain unpickle would run the payload
    assert not marker.exists()
    message = "refusing to load.*arbitrary Python objects"
    if how == "pickle.dump":  # not torch.save's format at all (torch.load: "Invalid magic number")
        message = "a plain Python pickle .pickle.dump., not a torch.save checkpoint.*could run code"
    with pytest.raises(ValueError, match=message):
        jaxrnn.load_state_dict_file(path)
    assert not marker.exists()
    if how == "pickle.dump":
        with open(path, "rb") as f:
            pickle.load(f)
        assert marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_pickle_of_a_state_dict_says_so(tmp_path, protocol):
    """``pickle.dump(state_dict)`` is no torch.save file (torch.load with weights_only=False
    fails too); a legacy torch.save file, whose first object is torch's magic number, is read."""
    sd = torch.nn.GRU(3, 4).state_dict()
    path = str(tmp_path / "plain.pt")
    with open(path, "wb") as f:
        pickle.dump(sd, f, protocol=protocol)
    with pytest.raises(RuntimeError, match="Invalid magic number"):
        torch.load(path, weights_only=False)
    with pytest.raises(ValueError, match=rf"{path}: a plain Python pickle \(pickle.dump\)"):
        jaxrnn.load_state_dict_file(path)
    legacy = str(tmp_path / "legacy.pt")  # torch's default protocol (its weights_only reader
    torch.save(sd, legacy, _use_new_zipfile_serialization=False)  # refuses 4 and 5's frames)
    for key, value in jaxrnn.load_state_dict_file(legacy).items():
        np.testing.assert_array_equal(value, sd[key].numpy())


def test_whole_module_pickle_is_refused(tmp_path):
    path = str(tmp_path / "module.pt")
    torch.save(torch.nn.GRU(2, 3), path)
    with pytest.raises(ValueError, match=r"refusing to load.*torch\.save\(model\.state_dict\(\)"):
        jaxrnn.load_state_dict_file(path)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:torch.quantize_per_tensor")
def test_quantized_state_dict_is_named(tmp_path):
    """A quantize_dynamic LSTM's state dict holds packed weights (torch.ScriptObject), which
    torch.load(weights_only=True) refuses: the message says so (it advised saving
    model.state_dict(), which is what the file is)."""
    model = torch.nn.Module()
    model.lstm = torch.nn.LSTM(4, 3)
    quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.LSTM}, dtype=torch.qint8)
    path = str(tmp_path / "quantized.pt")
    torch.save(quantized.state_dict(), path)
    with pytest.raises(ValueError, match=r"torch\.ScriptObject values, as a quantized model's"):
        jaxrnn.load_state_dict_file(path)


# ---------------------------------------------------------------------------------------------
# without torch


def test_safetensors_and_npz_without_torch(tmp_path, model):
    st, npz, pt = (str(tmp_path / f"m.{s}") for s in ("safetensors", "npz", "pt"))
    for path in (st, npz, pt):
        write(model.state_dict(), path)
    expected = model.gru.state_dict()["weight_ih_l0"].numpy()
    np.save(tmp_path / "expected.npy", expected)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        import numpy as np
        import jaxrnn
        expected = np.load({str(tmp_path / "expected.npy")!r})
        for path in ({st!r}, {npz!r}):
            params = jaxrnn.load_state_dict_file(path, prefix="gru.")
            np.testing.assert_array_equal(params["weight_ih_l0"], expected)
            gru = jaxrnn.module_from_state_dict(params)
            assert type(gru).__name__ == "GRU" and not gru.bias
        out = {str(tmp_path / "out.safetensors")!r}
        jaxrnn.save_state_dict_file(gru, out, prefix="gru.")
        np.testing.assert_array_equal(jaxrnn.load_state_dict_file(out)["gru.weight_ih_l0"], expected)
        try:
            jaxrnn.load_state_dict_file({pt!r})
        except ModuleNotFoundError as e:
            assert "needs torch" in str(e), e
        else:
            raise AssertionError("a .pt file loaded without torch")
        print("OK")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"


# ---------------------------------------------------------------------------------------------
# clear errors


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        jaxrnn.load_state_dict_file(tmp_path / "nope.pt")
    with pytest.raises(IsADirectoryError):
        jaxrnn.load_state_dict_file(tmp_path)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "model.h5"
    path.write_bytes(b"x")
    with pytest.raises(
        ValueError, match=r"unsupported checkpoint suffix '\.h5', and the file is not a PyTorch"
    ):
        jaxrnn.load_state_dict_file(path)
    with pytest.raises(ValueError, match="unsupported checkpoint suffix"):
        jaxrnn.save_state_dict_file({"a": np.zeros(2)}, tmp_path / "out.json")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".npz"])
def test_save_into_a_missing_directory(tmp_path, suffix):
    path = tmp_path / "missing" / f"out{suffix}"
    with pytest.raises(FileNotFoundError, match=f"no such directory '{tmp_path / 'missing'}'"):
        jaxrnn.save_state_dict_file({"a": np.zeros(2, np.float32)}, path)
    assert os.listdir(tmp_path) == []


def test_save_pt_without_torch_says_what_needs_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as if not installed
    path = tmp_path / "x.pt"
    with pytest.raises(ModuleNotFoundError, match=f"writing the PyTorch file {path} needs torch"):
        jaxrnn.save_state_dict_file({"a": np.zeros(2, np.float32)}, path)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("damage", ("truncated", "garbage", "empty"))
def test_corrupt_files(model, tmp_path, fmt, damage):
    path = str(tmp_path / f"model.{fmt}")
    write(model.state_dict(), path)
    data = open(path, "rb").read()
    data = {"truncated": data[: len(data) // 2], "garbage": b"not a checkpoint" * 7, "empty": b""}
    with open(path, "wb") as f:
        f.write(data[damage])
    with pytest.raises(ValueError, match=rf"{path}: not a (valid|readable|PyTorch)") as e:
        jaxrnn.load_state_dict_file(path)
    assert "weights_only" not in str(e.value)  # torch's advice, no help for a non-checkpoint


@pytest.mark.parametrize(
    "content,name,message",
    [
        # "h" is a pickle opcode: torch.load read it as one (KeyError: 101)
        ("text", "model.pt", "not a PyTorch checkpoint \\(neither a zip nor a pickle\\)"),
        ("empty", "model.pt", "not a PyTorch checkpoint: the file is empty"),
        ("safetensors", "model.bin", "not a PyTorch checkpoint: the file is a .safetensors file"),
        ("npz", "model.pt", "not a PyTorch checkpoint: the file is a .npz file"),
        ("legacy, truncated", "model.pt", "not a readable .* EOFError: the file ends early"),
    ],
)
def test_pytorch_suffix_with_other_content_says_what_it_is(model, tmp_path, content, name, message):
    path = str(tmp_path / name)
    if content in ("safetensors", "npz"):
        write(model.state_dict(), str(tmp_path / f"m.{content}"))
        os.replace(tmp_path / f"m.{content}", path)
    elif content == "legacy, truncated":
        torch.save(model.state_dict(), path, _use_new_zipfile_serialization=False)
        data = open(path, "rb").read()
        with open(path, "wb") as f:
            f.write(data[:20])  # within the pickle: torch's EOFError says nothing
    else:
        with open(path, "wb") as f:
            f.write(b"hello world\n" if content == "text" else b"")
    with pytest.raises(ValueError, match=rf"{path}: {message}"):
        jaxrnn.load_state_dict_file(path)


def test_damaged_zip_member_is_caught_by_its_crc(model, tmp_path):
    """torch.load does not check the zip members' CRCs: 200 bytes overwritten inside a tensor's
    data loaded as garbage weights. A genuine file (zip, legacy, TorchScript) passes."""
    path = str(tmp_path / "model.pt")
    torch.save(model.state_dict(), path)
    data = bytearray(open(path, "rb").read())
    sizes = sorted(((v.numel(), k) for k, v in model.state_dict().items()), reverse=True)
    blob = model.state_dict()[sizes[0][1]].numpy().tobytes()  # the largest tensor's bytes
    at = bytes(data).index(blob[:64]) + 16
    data[at : at + 200] = os.urandom(200)
    with open(path, "wb") as f:
        f.write(data)
    with pytest.raises(ValueError, match=rf"{path}: corrupt checkpoint: its member .* CRC"):
        jaxrnn.load_state_dict_file(path)
    for kind in ("zip", "legacy", "script"):
        good = str(tmp_path / f"{kind}.pt")
        if kind == "script":
            with warnings.catch_warnings():  # torch.jit's deprecation notes
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.jit.save(torch.jit.script(torch.nn.LSTM(3, 4)), good)
        else:
            torch.save(model.state_dict(), good, _use_new_zipfile_serialization=kind == "zip")
        assert jaxrnn.load_state_dict_file(good)
        if kind != "script":
            for key, value in jaxrnn.load_state_dict_file(good).items():
                np.testing.assert_array_equal(value, model.state_dict()[key].numpy())


def test_file_saved_without_crcs_is_read_as_torch_reads_it(model, tmp_path):
    """``torch.save`` skips the checksums when told to (a zip CRC of 0 in every member), and
    ``torch.load`` reads the file: the CRC check passes such members."""
    path = str(tmp_path / "nocrc.pt")
    torch.serialization.set_crc32_options(False)
    try:
        torch.save(model.state_dict(), path)
    finally:
        torch.serialization.set_crc32_options(True)
    theirs = torch.load(path, weights_only=True)
    ours = jaxrnn.load_state_dict_file(path)
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        np.testing.assert_array_equal(ours[key], value.numpy())


@pytest.mark.parametrize(
    "content,what",
    [
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 12\n", "Git LFS"),
        (b"<!DOCTYPE html><html><body>Virus scan warning</body></html>", "web page"),
    ],
)
@pytest.mark.parametrize("name", ["model.pt", "model.bin", "model.safetensors", "model"])
def test_pointer_and_web_page_saved_as_checkpoint_say_so(tmp_path, content, what, name):
    path = str(tmp_path / name)
    with open(path, "wb") as f:
        f.write(content)
    with pytest.raises(ValueError, match=what) as e:
        jaxrnn.load_state_dict_file(path)
    assert "weights_only" not in str(e.value)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2])
def test_bfloat16_and_float8_tensors_read_as_ml_dtypes(tmp_path, dtype):
    """numpy holds neither; the reader gives the ``ml_dtypes`` type of the same name, with
    torch's values, and a module loads them cast to its dtype (as torch's ``load_state_dict``)."""
    lstm = torch.nn.LSTM(3, 4)
    sd = {k: v.to(dtype) for k, v in lstm.state_dict().items()}
    path = str(tmp_path / "low.pt")
    torch.save(sd, path)
    got = jaxrnn.load_state_dict_file(path)
    assert list(got) == list(sd)
    for k, v in sd.items():
        assert got[k].dtype.name == str(dtype).removeprefix("torch.")
        np.testing.assert_array_equal(got[k].astype(np.float32), v.float().numpy())
    ours = jaxrnn.LSTM(3, 4, rngs=nnx.Rngs(0))
    ours.load_state_dict(got)
    lstm.load_state_dict(sd)
    for k, v in lstm.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[k], v.numpy())


FLOAT8 = [
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.float8_e4m3fnuz,
    torch.float8_e5m2fnuz,
    torch.float8_e8m0fnu,
]


def test_float8_round_trips_through_every_torch_format(tmp_path):
    """A file with float8 tensors (also only beside the RNN) reads as in a ``.pt`` file
    (safetensors' numpy reader looks float8 up in numpy, which has none) and writes back
    bit for bit; ``.npz`` refuses them before writing anything."""
    from safetensors.torch import load_file

    lstm = torch.nn.LSTM(3, 4)
    sd = {f"rnn.{k}": v for k, v in lstm.state_dict().items()}
    sd.update({f"q.{str(d)[6:]}": torch.rand(5, 2).to(d) for d in FLOAT8})
    for fmt in ("pt", "safetensors"):
        path = str(tmp_path / f"f8.{fmt}")
        torch.save(sd, path) if fmt == "pt" else torch_save_safetensors(sd, path)
        got = jaxrnn.load_state_dict_file(path)
        assert sorted(got) == sorted(sd)
        for k, v in sd.items():
            assert got[k].dtype.name == str(v.dtype).removeprefix("torch.")
            np.testing.assert_array_equal(got[k].astype(np.float32), v.float().numpy())
        (layer,) = jaxrnn.find_recurrent_layers(got)
        assert layer.cls == "LSTM" and layer.error is None
        for out_fmt in ("pt", "safetensors"):
            out = str(tmp_path / f"back-{fmt}.{out_fmt}")
            jaxrnn.save_state_dict_file(got, out)
            back = torch.load(out, weights_only=True) if out_fmt == "pt" else load_file(out)
            for k, v in sd.items():
                assert back[k].dtype == v.dtype
                assert torch.equal(back[k].view(torch.uint8), v.view(torch.uint8))
        with pytest.raises(ValueError, match=r"\.npz cannot hold float8_e4m3fn, float8_e4m3fnuz"):
            jaxrnn.save_state_dict_file(got, str(tmp_path / "f8.npz"))
        assert not (tmp_path / "f8.npz").exists()


def test_unreadable_tensor_and_name_collision_name_the_key(tmp_path):
    lstm = torch.nn.LSTM(3, 4)
    path = str(tmp_path / "sparse.pt")
    torch.save({**lstm.state_dict(), "q": torch.zeros(2).to_sparse()}, path)
    with pytest.raises(ValueError, match=rf"{path}: q: cannot read this tensor"):
        jaxrnn.load_state_dict_file(path)
    path = str(tmp_path / "collide.pt")
    torch.save({"a.w": torch.ones(2), "a": {"w": torch.zeros(2)}}, path)
    with pytest.raises(ValueError, match="two values are named 'a.w'"):
        jaxrnn.load_state_dict_file(path)


def test_saved_mapping_is_named_as_the_reader_names_it(tmp_path):
    """Lists are items by index (not one stacked array), two arrays under one name refused."""
    path = str(tmp_path / "list.pt")
    jaxrnn.save_state_dict_file({"a": [np.ones(2, np.float32), np.zeros(3, np.float32)]}, path)
    saved = torch.load(path, weights_only=True)
    assert list(saved) == ["a.0", "a.1"] and saved["a.1"].shape == (3,)
    collide = {"a.b": np.ones(2, np.float32), "a": {"b": np.zeros(2, np.float32)}}
    with pytest.raises(ValueError, match="save_state_dict_file: two values are named 'a.b'"):
        jaxrnn.save_state_dict_file(collide, str(tmp_path / "collide.pt"))
    assert not (tmp_path / "collide.pt").exists()


def test_top_level_list_of_state_dicts_is_flattened(tmp_path):
    lstm = torch.nn.LSTM(3, 4)
    path = str(tmp_path / "list.pt")
    torch.save([lstm.state_dict(), {"lr": 0.1}], path)
    sd = jaxrnn.load_state_dict_file(path)
    assert set(sd) == {f"0.{k}" for k in lstm.state_dict()}
    assert jaxrnn.find_recurrent_layers(sd)[0].prefix == "0."


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = str(tmp_path / "objects.npz")
    np.savez(path, w=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="not a valid .npz archive"):
        jaxrnn.load_state_dict_file(path)


def test_npy_named_npz_is_called_that(tmp_path):
    """np.save's single array under an .npz name: the message said 'ndarray object does not
    support the context manager protocol'."""
    path = str(tmp_path / "one.npz")
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(ValueError, match=r"one\.npz: .*a single \.npy array, not an \.npz archive"):
        jaxrnn.load_state_dict_file(path)


def test_torch_file_without_state_dict(tmp_path):
    path = str(tmp_path / "tensor.pt")
    torch.save(torch.zeros(3), path)
    with pytest.raises(ValueError, match="expected a state dict.*got Tensor"):
        jaxrnn.load_state_dict_file(path)
    torch.save({"epoch": 3}, path)
    with pytest.raises(ValueError, match="holds no tensors"):
        jaxrnn.load_state_dict_file(path)


def test_prefix_not_in_file_names_the_layers(model, tmp_path):
    path = str(tmp_path / "model.safetensors")
    write(model.state_dict(), path)
    with pytest.raises(
        ValueError, match=r"no key starts with prefix 'decoder\.'.*'encoder\.lstm\.'"
    ):
        jaxrnn.load_state_dict_file(path, prefix="decoder.")


def _lstm_sd(**changes):
    sd = {k: v.numpy() for k, v in torch.nn.LSTM(3, 4, 2).state_dict().items()}
    sd.update(changes)
    return {k: v for k, v in sd.items() if v is not None}


@pytest.mark.parametrize(
    "sd, match",
    [
        (_lstm_sd(weight_hh_l1=None), r'Missing key\(s\) in state_dict: "weight_hh_l1"'),
        (_lstm_sd(weight_ih_l1=None), r'Missing key\(s\) in state_dict: "weight_ih_l1"\. $'),
        (  # one direction's input weight: the layer is still bidirectional
            {
                k: v.numpy()
                for k, v in torch.nn.GRU(3, 4, bidirectional=True).state_dict().items()
                if k != "weight_ih_l0_reverse"
            },
            r'Missing key\(s\) in state_dict: "weight_ih_l0_reverse"\. $',
        ),
        (_lstm_sd(bias_ih_l0=None), r'Missing key\(s\) in state_dict: "bias_ih_l0"'),
        (_lstm_sd(weight_ih_l3=np.zeros((16, 4))), r'Unexpected key\(s\).*"weight_ih_l3"'),
        (_lstm_sd(fc=np.zeros(2)), r'Unexpected key\(s\) in state_dict: "fc"'),
        (
            _lstm_sd(bias_hh_l1=np.zeros(12)),
            r"size mismatch for bias_hh_l1: .*Size\(\[12\]\).*Size\(\[16\]\)",
        ),
        (_lstm_sd(weight_ih_l0=np.zeros((20, 3))), r"weight_ih_l0 has 20 rows, expected 1, 3 or 4"),
        (_lstm_sd(weight_hh_l0=np.zeros(16)), r"must be 2-D"),
        ({"weight_ih_l0": np.zeros((12, 3))}, r"missing parameter weight_hh_l0"),
        (
            {
                "weight_ih_l0": np.zeros((6, 3)),
                "weight_hh_l0": np.zeros((6, 1)),
                "weight_hr_l0": np.zeros((1, 2)),
            },
            r"weight_hr_l0 \(a projection\) is only supported for LSTM, not GRU",
        ),
        (  # a projected LSTM's checkpoint without its projection
            {
                k: v.numpy()
                for k, v in torch.nn.LSTM(3, 8, 2, proj_size=4).state_dict().items()
                if k != "weight_hr_l0"
            },
            r"missing parameter weight_hr_l0: weight_hh_l0 \(32, 4\) has fewer columns .*"
            r"proj_size=4, hidden_size=8",
        ),
        (  # a plain LSTM's with a stray projection
            _lstm_sd(weight_hr_l0=np.zeros((3, 4))),
            r"weight_hr_l0 \(3, 4\) does not fit weight_hh_l0 \(16, 4\).*\(a stray weight_hr_l0",
        ),
    ],
)
def test_keys_that_do_not_form_a_layer(sd, match):
    with pytest.raises(ValueError, match=match) as info:
        jaxrnn.recurrent_layer(sd)
    assert "the keys under the top level do not form a recurrent layer: " in str(info.value)
    (found,) = jaxrnn.find_recurrent_layers(sd)
    if "fc" not in sd:  # find_recurrent_layers only groups keys named as recurrent parameters
        assert found.cls is None and found.error is not None
    with pytest.raises(ValueError, match=match):
        jaxrnn.module_from_state_dict(sd)


def test_no_layer_at_prefix_lists_the_layers_below(model):
    sd = model.state_dict()
    with pytest.raises(
        ValueError,
        match=r"no recurrent layer at prefix 'encoder\.'.*'encoder\.lstm\.' \(LSTM\(5, 8",
    ):
        jaxrnn.recurrent_layer(sd, "encoder.")


def test_describe_is_torch_repr(model):
    for layer in jaxrnn.find_recurrent_layers(model.state_dict()):
        torch_repr = repr(model.get_submodule(layer.prefix.rstrip(".")))
        if layer.cls == "RNN":  # torch shows the nonlinearity, which the weights do not store
            torch_repr = torch_repr.replace(", nonlinearity=relu", "")
        assert layer.describe() == torch_repr


def test_rnn_nonlinearity_comes_from_the_caller(model):
    sd = model.state_dict()
    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 2), np.float32))
    relu = jaxrnn.module_from_state_dict(sd, "rnn_cell.", nonlinearity="relu")
    tanh = jaxrnn.module_from_state_dict(sd, "rnn_cell.")
    expected = model.rnn_cell(torch.tensor(np.asarray(x))).detach().numpy()
    np.testing.assert_allclose(tanh(x), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(relu(x), expected, atol=1e-3)
    relu_cell = torch.nn.RNNCell(2, 7, nonlinearity="relu")
    relu_cell.load_state_dict(model.rnn_cell.state_dict(), strict=True)
    relu_expected = relu_cell(torch.tensor(np.asarray(x))).detach().numpy()
    assert (relu_expected == 0).any() and (relu_expected > 0).any()  # relu really clips here
    np.testing.assert_allclose(relu(x), relu_expected, rtol=1e-5, atol=1e-6)
    # the layer too: model.rnn was built with relu, which its weights do not record
    xs = jnp.asarray(np.random.default_rng(1).standard_normal((4, 2, 2), np.float32))
    rnn = jaxrnn.module_from_state_dict(sd, "rnn.", nonlinearity="relu")
    want = [t.detach().numpy() for t in model.rnn(torch.tensor(np.asarray(xs)))]
    for got, exp in zip(rnn(xs), want, strict=True):
        np.testing.assert_allclose(got, exp, rtol=1e-5, atol=1e-6)


def test_nonlinearity_only_for_rnn(model):
    sd = model.state_dict()
    with pytest.raises(TypeError, match="'gru.' is a GRU, which has no nonlinearity='relu'"):
        jaxrnn.module_from_state_dict(sd, "gru.", nonlinearity="relu")
    with pytest.raises(ValueError, match="Unknown nonlinearity 'sigmoid'. Select from 'tanh'"):
        jaxrnn.module_from_state_dict(sd, "lstm_cell.", nonlinearity="sigmoid")
    cell = jaxrnn.module_from_state_dict(sd, "lstm_cell.", nonlinearity="tanh")  # the default
    assert type(cell).__name__ == "LSTMCell"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_module_from_state_dict_keeps_the_checkpoint_dtype(dtype):
    """As from_torch: the parameters keep the file's dtype (float64 only with x64, else float32
    with a warning); an explicit param_dtype wins."""
    t = torch.nn.LSTM(3, 4, 2).to(dtype)
    sd = jaxrnn.state_dict_to_params(t.state_dict())
    want = dtype
    if dtype == torch.float64 and not jax.config.jax_enable_x64:
        with pytest.warns(UserWarning, match="the LSTM at prefix '' is float64 but jax_enable_x64"):
            m = jaxrnn.module_from_state_dict(sd)
        want = torch.float32
    else:
        m = jaxrnn.module_from_state_dict(sd)
    assert str(m.weight_ih_l0[...].dtype) == str(want).split(".")[-1]
    ours = m.state_dict()
    for k, v in t.state_dict().items():
        np.testing.assert_array_equal(np.asarray(ours[k], np.float64), v.to(want).double().numpy())
    m32 = jaxrnn.module_from_state_dict(sd, param_dtype=jnp.float32)
    assert m32.weight_ih_l0[...].dtype == jnp.float32


@pytest.mark.parametrize("first", [True, False])
def test_module_from_state_dict_of_mixed_dtypes_takes_the_widest(first):
    """One float16 array among float32 ones, first or not: the module is float32 and holds every
    value as the file does (it was built in the first key's dtype, float16)."""
    sd = {k: v.numpy() for k, v in torch.nn.LSTM(3, 4, 2, proj_size=2).state_dict().items()}
    key = "weight_ih_l0" if first else "bias_hh_l1"
    sd[key] = sd[key].astype(np.float16)
    m = jaxrnn.module_from_state_dict(sd)
    assert m.param_dtype == jnp.float32
    for k, v in m.state_dict().items():
        assert v.dtype == np.float32
        np.testing.assert_array_equal(v, sd[k].astype(np.float32))


def test_argument_types(tmp_path):
    with pytest.raises(TypeError, match="path must be a str"):
        jaxrnn.load_state_dict_file(3)
    with pytest.raises(TypeError, match="expected a jaxrnn or Flax NNX module or a mapping"):
        jaxrnn.save_state_dict_file([1, 2], tmp_path / "x.safetensors")
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        jaxrnn.find_recurrent_layers([("weight_ih", 1)])
    assert io.find_recurrent_layers({"fc.weight": np.zeros(2)}) == []


def test_save_is_atomic_on_failure(tmp_path):
    path = tmp_path / "out.safetensors"
    path.write_bytes(b"old")
    with pytest.raises(TypeError, match="a must be a numeric array, got dtype <U12"):
        jaxrnn.save_state_dict_file({"a": "not an array"}, path)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.safetensors"]


@pytest.mark.parametrize("suffix", [".safetensors", ".npz", ".pt"])
def test_writers_of_one_path_do_not_share_a_temporary_file(tmp_path, suffix, monkeypatch):
    """Two saves of one path at once (every data-parallel rank saving the checkpoint) wrote the
    same temporary file, and the survivor was corrupt. Here a second save starts while the
    first is writing: each writes its own temporary file, and the file ends up one of them
    whole."""
    path = tmp_path / f"ckpt{suffix}"
    first, second = {"w": np.zeros(4, np.float32)}, {"w": np.ones(4, np.float32)}
    writers = {".safetensors": None, ".npz": "_save_npz", ".pt": "_save_torch"}
    temporaries = []
    if suffix == ".safetensors":
        from safetensors import numpy as st

        module, name = st, "save_file"
    else:
        module, name = io, writers[suffix]
    write = getattr(module, name)

    def interleaved(state_dict, tmp, **kwargs):
        temporaries.append(tmp)
        if len(temporaries) == 1:  # the other writer runs while this one is at work
            jaxrnn.save_state_dict_file(second, path)
        write(state_dict, tmp, **kwargs)

    monkeypatch.setattr(module, name, interleaved)
    jaxrnn.save_state_dict_file(first, path)
    assert len(set(temporaries)) == 2
    np.testing.assert_array_equal(jaxrnn.load_state_dict_file(path)["w"], first["w"])
    assert os.listdir(tmp_path) == [path.name]


def test_save_writes_through_a_symlink_as_torch_save(tmp_path):
    """``latest.npz -> ckpt_1.npz``: the save replaced the link by a file, leaving ckpt_1 stale."""
    target, link = tmp_path / "ckpt_1.npz", tmp_path / "latest.npz"
    jaxrnn.save_state_dict_file({"w": np.zeros(2)}, target)
    link.symlink_to(target.name)
    jaxrnn.save_state_dict_file({"w": np.ones(2)}, link)
    assert link.is_symlink()
    np.testing.assert_array_equal(jaxrnn.load_state_dict_file(target)["w"], [1.0, 1.0])


def test_npz_keys_that_are_savez_arguments(tmp_path):
    """np.savez(f, **state_dict) took a key named allow_pickle as its own argument (the array
    was dropped) and failed on one named file."""
    sd = {"allow_pickle": np.ones(2, np.float32), "file": np.zeros(3), "w": np.arange(4.0)}
    jaxrnn.save_state_dict_file(sd, tmp_path / "odd.npz")
    back = np.load(tmp_path / "odd.npz")
    assert sorted(back.files) == sorted(sd)
    for key, value in sd.items():
        np.testing.assert_array_equal(back[key], value)


@pytest.mark.parametrize("suffix", [".safetensors", ".npz", ".pt"])
def test_zero_dim_arrays_keep_their_shape(tmp_path, suffix):
    """torch's BatchNorm ``num_batches_tracked`` is 0-d; it must come back 0-d."""
    sd = {"bn.num_batches_tracked": np.array(7, np.int64), "w": np.ones((2, 3), np.float32)}
    path = tmp_path / f"ckpt{suffix}"
    jaxrnn.save_state_dict_file(sd, path)
    back = jaxrnn.load_state_dict_file(path)
    assert back["bn.num_batches_tracked"].shape == ()
    assert int(back["bn.num_batches_tracked"]) == 7


def test_save_argument_checks_and_missing_safetensors(tmp_path, monkeypatch):
    with pytest.raises(TypeError, match="save_state_dict_file: path must be a str"):
        jaxrnn.save_state_dict_file({"a": np.zeros(2)}, 3)
    with pytest.raises(TypeError, match="recurrent_layer: state_dict must be a mapping"):
        jaxrnn.recurrent_layer([("weight_ih", 1)])
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)  # as if not installed
    path = tmp_path / "x.safetensors"
    with pytest.raises(ModuleNotFoundError, match=f"writing {path} needs the safetensors"):
        jaxrnn.save_state_dict_file({"a": np.zeros(2)}, path)
    assert os.listdir(tmp_path) == []


def test_torch_export_archive_is_named_and_not_unpickled(tmp_path):
    """``torch.export.load`` unpickles with ``weights_only=False``: jaxrnn names the format and
    refuses, as for other pickles that could run code (it called the file corrupt before)."""
    path = str(tmp_path / "m.pt2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(torch.nn.LSTM(3, 4), (torch.zeros(2, 1, 3),))
        torch.export.save(program, path)
    with pytest.raises(ValueError, match=rf"{path}: a torch.export archive \(.pt2\)"):
        jaxrnn.load_state_dict_file(path)
