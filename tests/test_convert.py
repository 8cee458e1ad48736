"""state_dict conversion both ways, load_state_dict semantics, from_torch for all six classes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.utils.prune
from _torch_oracle import assert_close
from flax import nnx

import jaxrnn


def test_state_dict_round_trip_into_torch_strict():
    m = jaxrnn.LSTM(4, 6, 2, bidirectional=True, proj_size=3, rngs=nnx.Rngs(1))
    sd = m.state_dict()
    t = torch.nn.LSTM(4, 6, 2, bidirectional=True, proj_size=3)
    assert list(sd) == list(t.state_dict())  # torch's key order too
    t.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    x = np.random.default_rng(0).standard_normal((5, 2, 4)).astype(np.float32)
    assert_close(
        m(x),
        (
            t(torch.from_numpy(x))[0].detach().numpy(),
            tuple(s.detach().numpy() for s in t(torch.from_numpy(x))[1]),
        ),
    )


def test_prefix_picks_one_layer_out_of_a_model():
    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(10, 3)
            self.gru = torch.nn.GRU(3, 5, batch_first=True)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = Encoder()
            self.head = torch.nn.Linear(5, 2)

    model = Model()
    params = jaxrnn.state_dict_to_params(model.state_dict(), prefix="encoder.gru.")
    assert sorted(params) == sorted(model.encoder.gru.state_dict())
    back = jaxrnn.params_to_state_dict(params, prefix="encoder.gru.")
    for k, v in back.items():
        np.testing.assert_array_equal(v, model.state_dict()[k].numpy())


def test_load_state_dict_copies_weights():
    """A torch model that keeps training in place must not change the jaxrnn module."""
    t = torch.nn.GRU(3, 4)
    m = jaxrnn.GRU(3, 4, rngs=nnx.Rngs(0))
    m.load_state_dict(t.state_dict())
    before = np.asarray(m.weight_ih_l0[...]).copy()
    with torch.no_grad():
        t.weight_ih_l0.add_(1.0)
    np.testing.assert_array_equal(np.asarray(m.weight_ih_l0[...]), before)
    params = jaxrnn.state_dict_to_params(t.state_dict())
    with torch.no_grad():
        t.weight_ih_l0.add_(1.0)
    np.testing.assert_array_equal(params["weight_ih_l0"], before + 1.0)


def test_strict_load_errors_name_each_key_and_change_nothing():
    m = jaxrnn.LSTM(3, 4, rngs=nnx.Rngs(0))
    before = m.state_dict()
    sd = torch.nn.LSTM(3, 4).state_dict()
    bad = dict(sd)
    del bad["bias_hh_l0"]
    bad["weight_hr_l0"] = torch.zeros(2, 4)
    bad["weight_ih_l0"] = torch.zeros(16, 5)
    with pytest.raises(ValueError) as err:
        m.load_state_dict(bad)
    msg = str(err.value)
    assert "Error(s) in loading state_dict for LSTM" in msg
    assert 'Missing key(s) in state_dict: "bias_hh_l0"' in msg
    assert 'Unexpected key(s) in state_dict: "weight_hr_l0"' in msg
    with pytest.raises(RuntimeError) as theirs:  # torch's own wording of the size mismatch
        torch.nn.LSTM(3, 4).load_state_dict({"weight_ih_l0": torch.zeros(16, 5)}, strict=False)
    mismatch = str(theirs.value).split("\n\t")[1]
    assert mismatch.startswith("size mismatch for weight_ih_l0: copying a param with shape torch.")
    assert mismatch in msg
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_non_strict_load_loads_what_matches():
    m = jaxrnn.LSTM(3, 4, rngs=nnx.Rngs(0))
    sd = {k: v for k, v in torch.nn.LSTM(3, 4).state_dict().items() if "bias" not in k}
    sd["extra"] = torch.zeros(1)
    missing, unexpected = m.load_state_dict(sd, strict=False)
    assert sorted(missing) == ["bias_hh_l0", "bias_ih_l0"]
    assert unexpected == ["extra"]
    np.testing.assert_array_equal(np.asarray(m.weight_hh_l0[...]), sd["weight_hh_l0"].numpy())


def test_load_casts_to_param_dtype_and_accepts_numpy():
    m = jaxrnn.RNN(3, 4, rngs=nnx.Rngs(0))
    sd = {k: v.double().numpy() for k, v in torch.nn.RNN(3, 4).state_dict().items()}
    m.load_state_dict(sd)
    assert m.weight_ih_l0[...].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(m.weight_ih_l0[...]), sd["weight_ih_l0"], rtol=1e-7)


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.nn.RNN(3, 4, 2, nonlinearity="relu", bias=False, batch_first=True),
        lambda: torch.nn.LSTM(3, 4, 2, dropout=0.25, bidirectional=True, proj_size=2),
        lambda: torch.nn.GRU(3, 4, 3, batch_first=True, bidirectional=True),
        lambda: torch.nn.RNNCell(3, 4, nonlinearity="relu"),
        lambda: torch.nn.LSTMCell(3, 4, bias=False),
        lambda: torch.nn.GRUCell(3, 4),
    ],
)
def test_from_torch_copies_configuration(make):
    t = make().eval()
    m = jaxrnn.from_torch(t)
    assert type(m).__name__ == type(t).__name__
    for attr in (
        "input_size",
        "hidden_size",
        "bias",
        "num_layers",
        "batch_first",
        "bidirectional",
        "proj_size",
        "nonlinearity",
    ):
        if hasattr(t, attr):
            assert getattr(m, attr) == getattr(t, attr), attr
    if hasattr(t, "dropout"):
        assert m.dropout == t.dropout and m.deterministic  # eval mode carried over
    sd = m.state_dict()
    for k, v in t.state_dict().items():
        np.testing.assert_array_equal(sd[k], v.numpy())


def test_from_torch_dropout_stream_defaults_to_seed_0_as_the_readme_says():
    t = torch.nn.GRU(3, 4, 2, dropout=0.5)  # training mode: dropout between the layers
    x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 2, 3)), jnp.float32)
    runs = [jaxrnn.from_torch(t, **kw)(x)[0] for kw in ({}, {}, {"rngs": nnx.Rngs(1)})]
    np.testing.assert_array_equal(runs[0], runs[1])  # the same masks without rngs=
    assert not np.allclose(runs[0], runs[2])  # another seed, other masks
    t.eval()
    assert_close(jaxrnn.from_torch(t)(x)[0], t(torch.from_numpy(np.array(x)))[0].detach())


def test_converters_follow_the_rnn_layers_mode_not_a_later_nonlinearity():
    """An RNN layer computes with the mode fixed at construction, in torch and here: a
    nonlinearity assigned afterwards changes the attribute only. The converted copy computes as
    the original (to_torch built a relu RNN from a tanh one, off by up to 4)."""
    torch.manual_seed(0)
    x = torch.randn(5, 2, 3) * 3
    ours = jaxrnn.RNN(3, 4, rngs=nnx.Rngs(0))
    ours.nonlinearity = "relu"
    with torch.no_grad():
        assert_close(jaxrnn.to_torch(ours)(x), ours(x.numpy()))
    theirs = torch.nn.RNN(3, 4, nonlinearity="relu")
    theirs.nonlinearity = "tanh"
    with torch.no_grad():
        assert_close(jaxrnn.from_torch(theirs)(x.numpy()), theirs(x))


def test_from_torch_rejects_other_modules():
    with pytest.raises(TypeError, match="from_torch expects a torch.nn.RNN, LSTM, GRU"):
        jaxrnn.from_torch(torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    "wrap",
    [torch.compile, torch.nn.DataParallel, lambda m: torch.nn.DataParallel(torch.compile(m))],
    ids=["compile", "DataParallel", "DataParallel-of-compile"],
)
@pytest.mark.parametrize(
    "make",
    [lambda: torch.nn.LSTM(3, 5, 2, batch_first=True, proj_size=2), lambda: torch.nn.GRUCell(3, 5)],
    ids=["LSTM", "GRUCell"],
)
def test_from_torch_unwraps_compile_and_data_parallel(make, wrap):
    """``torch.compile(lstm)`` (an ``OptimizedModule`` that forwards the LSTM's attributes) and
    ``nn.DataParallel(lstm)`` convert as the module they wrap; from_torch refused them as
    'got OptimizedModule' / 'got DataParallel'."""
    torch.manual_seed(0)
    inner = make().eval()
    ours = jaxrnn.from_torch(wrap(inner))
    assert type(ours).__name__ == type(inner).__name__ and not ours.training
    x = torch.randn(2, 4, 3) if isinstance(inner, torch.nn.LSTM) else torch.randn(2, 3)
    assert_close(ours(x.numpy()), jax.tree.map(lambda t: t.detach().numpy(), inner(x)))


def _weight_normed(m):
    return torch.nn.utils.parametrizations.weight_norm(m, "weight_hh_l0")


def _old_weight_norm(m):
    with pytest.warns(FutureWarning):  # torch.nn.utils.weight_norm is deprecated
        return torch.nn.utils.weight_norm(m, "weight_ih_l1")


@pytest.mark.parametrize(
    "parametrize",
    [
        _weight_normed,
        lambda m: torch.nn.utils.parametrizations.spectral_norm(m, "weight_ih_l1_reverse"),
        lambda m: torch.nn.utils.prune.l1_unstructured(m, "weight_hh_l1", 0.5),
        _old_weight_norm,
        lambda m: torch.nn.utils.spectral_norm(m, "weight_hh_l0_reverse"),
    ],
    ids=["weight_norm", "spectral_norm", "prune", "old-weight_norm", "old-spectral_norm"],
)
@pytest.mark.parametrize("training", [True, False])
def test_from_torch_reads_parametrized_weights_as_computed(parametrize, training):
    """Weight norm, spectral norm and pruning keep originals in the state dict
    (``parametrizations.weight_hh_l0.original0``, ``weight_hh_l1_orig``, ``weight_ih_l1_g``):
    the converted module holds the weights the torch module computes, and the torch module is
    left as it was (spectral norm's power-iteration vector, the training mode). The originals
    change after the reparametrization, as loading a checkpoint or an optimizer step changes
    them: the older hooks' weight attribute is then stale until torch's next forward recomputes
    it, and from_torch copied the stale one."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 5, 2, bidirectional=True)
    parametrize(lstm)
    with torch.no_grad():
        for p in lstm.parameters():
            p.add_(0.3 * torch.randn_like(p))
    lstm.train(training)
    before = {k: v.clone() for k, v in lstm.state_dict().items()}
    ours = jaxrnn.from_torch(lstm)
    assert lstm.training is training and ours.training is training
    for k, v in lstm.state_dict().items():
        assert torch.equal(v, before[k]), k
    lstm.eval()
    x = torch.randn(4, 2, 3)
    with torch.no_grad():
        assert_close(ours.eval()(x.numpy()), jax.tree.map(lambda t: t.numpy(), lstm(x)))
        for name in ours.state_dict():
            np.testing.assert_allclose(ours.state_dict()[name], getattr(lstm, name).numpy())


def test_from_torch_refuses_a_weight_left_by_a_weight_drop_wrapper():
    """fastai's AWD-LSTM WeightDropout moves weight_hh_l0 to its own weight_hh_l0_raw and sets
    the LSTM's weight_hh_l0, a plain attribute, on each forward (with dropout in training):
    from_torch of the LSTM copied whatever the last forward left (off by 0.05 after a training
    forward). It is refused, naming the raw weight to convert instead."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 4)
    raw = lstm.weight_hh_l0.detach().clone()
    del lstm.weight_hh_l0
    lstm.weight_hh_l0 = torch.nn.functional.dropout(raw, 0.5, training=True)
    with pytest.raises(
        ValueError, match=r"from_torch: LSTM's weight_hh_l0 is a plain tensor attribute.*_raw"
    ):
        jaxrnn.from_torch(lstm)


def test_load_state_dict_with_a_key_that_is_not_a_string():
    """A key that is not a string beside a missing weight: torch's own load_state_dict fails
    with AttributeError ('int' object has no attribute 'startswith'); here torch's lines."""
    sd = torch.nn.LSTM(3, 4).state_dict()
    del sd["weight_hh_l0"]
    sd[0] = torch.zeros(1)
    with pytest.raises(ValueError, match=r'(?s)Missing key.*"weight_hh_l0".*Unexpected key.*"0"'):
        jaxrnn.LSTM(3, 4, rngs=nnx.Rngs(0)).load_state_dict(sd)


def test_from_torch_refuses_a_subclass_with_more_parameters():
    class Normed(torch.nn.GRU):
        def __init__(self):
            super().__init__(3, 4)
            self.norm = torch.nn.LayerNorm(4)

    with pytest.raises(
        ValueError,
        match=r"from_torch: Normed has parameters beyond torch.nn.GRU's: norm.weight, norm.bias",
    ):
        jaxrnn.from_torch(Normed())

    class Plain(torch.nn.GRU):  # a subclass with torch's parameters only converts
        pass

    torch.manual_seed(0)
    plain = Plain(3, 4).eval()
    x = torch.randn(2, 3)
    assert_close(
        jaxrnn.from_torch(plain)(x.numpy()), jax.tree.map(lambda t: t.detach().numpy(), plain(x))
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize(
    "make,shape",
    [
        (lambda: torch.nn.LSTM(3, 4, 2, batch_first=True, proj_size=2), (2, 5, 3)),
        (lambda: torch.nn.RNN(3, 4, nonlinearity="relu", bidirectional=True), (5, 2, 3)),
        (lambda: torch.nn.GRU(3, 4, bias=False), (5, 2, 3)),
        (lambda: torch.nn.RNNCell(3, 4, nonlinearity="relu"), (2, 3)),
        (lambda: torch.nn.LSTMCell(3, 4), (2, 3)),
    ],
)
def test_from_torch_of_a_scripted_module_and_not_of_a_traced_one(make, shape):
    """``torch.jit.script`` keeps the configuration as attributes (the RNN's nonlinearity too);
    ``torch.jit.trace`` only the weights, which the error says how to convert."""
    torch.manual_seed(0)
    module = make().eval()
    ours = jaxrnn.from_torch(torch.jit.script(module))
    assert repr(ours) == repr(module) and not ours.training
    x = torch.randn(*shape)
    with torch.no_grad():
        assert_close(ours(x.numpy()), jax.tree.map(lambda t: t.numpy(), module(x)))
    with pytest.raises(TypeError, match=r"from_torch: this traced torch.nn.\w+ keeps no config"):
        jaxrnn.from_torch(torch.jit.trace(module, (x,)))


def test_nested_params_flatten_with_dots():
    """A Linen ``variables['params']`` of several layers: torch's dotted names, one level per
    submodule, as ``save_state_dict_file`` writes them."""
    gru = torch.nn.GRU(3, 4, 2)
    params = {"enc": {"gru": {k: v.numpy() for k, v in gru.state_dict().items()}}}
    sd = jaxrnn.params_to_state_dict(params, prefix="model.")
    assert list(sd) == [f"model.enc.gru.{k}" for k in gru.state_dict()]
    back = jaxrnn.state_dict_to_params({"model": params}, prefix="model.enc.gru.")
    assert list(back) == list(gru.state_dict())
    for k, v in gru.state_dict().items():
        np.testing.assert_array_equal(back[k], v.numpy())
    with pytest.raises(ValueError, match="params_to_state_dict: two values are named 'a.b'"):
        jaxrnn.params_to_state_dict({"a.b": np.ones(1), "a": {"b": np.ones(1)}})


def test_prefix_without_its_dot_is_refused(tmp_path):
    """``'encoder.lstm'`` would leave ``'.weight_ih_l0'``, which loads nowhere (with
    ``strict=False``, silently nothing)."""
    sd = {f"encoder.lstm.{k}": v for k, v in torch.nn.LSTM(3, 4).state_dict().items()}
    with pytest.raises(ValueError, match=r"state_dict_to_params: prefix 'encoder.lstm' leaves"):
        jaxrnn.state_dict_to_params(sd, prefix="encoder.lstm")
    path = str(tmp_path / "model.pt")
    torch.save(sd, path)
    with pytest.raises(ValueError, match=r"ends with its dot: 'encoder.lstm.'"):
        jaxrnn.load_state_dict_file(path, prefix="encoder.lstm")
    assert list(jaxrnn.load_state_dict_file(path, prefix="encoder.lstm.")) == [
        k.removeprefix("encoder.lstm.") for k in sd
    ]


def test_strict_load_message_is_torchs():
    """Missing and unexpected keys: torch's own message for the same state_dict (it is ours after
    the exception type)."""
    sd = dict(torch.nn.GRU(3, 4).state_dict())
    del sd["bias_hh_l0"]
    sd["extra"] = torch.zeros(1)
    with pytest.raises(RuntimeError) as theirs:
        torch.nn.GRU(3, 4).load_state_dict(sd)
    with pytest.raises(ValueError) as ours:
        jaxrnn.GRU(3, 4, rngs=nnx.Rngs(0)).load_state_dict(sd)
    assert str(ours.value) == str(theirs.value)


def test_load_that_fails_to_cast_changes_nothing():
    m = jaxrnn.GRU(3, 4, rngs=nnx.Rngs(0))
    before = m.state_dict()
    sd = {k: v.numpy() for k, v in torch.nn.GRU(3, 4).state_dict().items()}
    sd["bias_hh_l0"] = np.full(12, "x")  # the right shape, but no numbers: fails last
    with pytest.raises(ValueError, match='GRU:\n\tWhile copying the parameter named "bias_hh_l0"'):
        m.load_state_dict(sd)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_from_torch_keeps_the_parameter_dtype(dtype):
    t = torch.nn.LSTM(3, 4, 2).to(dtype)
    m = jaxrnn.from_torch(t)
    assert str(m.weight_ih_l0[...].dtype) == str(dtype).split(".")[-1]
    sd = m.state_dict()
    for k, v in t.state_dict().items():
        np.testing.assert_array_equal(np.asarray(sd[k], np.float32), v.float().numpy())
    m32 = jaxrnn.from_torch(t, param_dtype=jnp.float32)  # an explicit param_dtype wins
    assert m32.weight_ih_l0[...].dtype == jnp.float32


FLOAT8 = [
    getattr(torch, n)
    for n in (
        "float8_e4m3fn",
        "float8_e5m2",
        "float8_e4m3fnuz",
        "float8_e5m2fnuz",
        "float8_e8m0fnu",
    )
    if hasattr(torch, n)
]


@pytest.mark.parametrize("dtype", [*FLOAT8, torch.bfloat16], ids=str)
@pytest.mark.parametrize("cls", ["GRU", "LSTMCell"])
def test_load_state_dict_casts_float8_and_bfloat16_as_torch(dtype, cls):
    """torch's ``load_state_dict`` casts a float8 (or bfloat16) checkpoint into the module's
    dtype; jaxrnn's loaded the same values (it refused float8 with numpy's error, naming no key)."""
    src = getattr(torch.nn, cls)(3, 4)
    sd = {k: v.to(dtype) for k, v in src.state_dict().items()}
    theirs = getattr(torch.nn, cls)(3, 4)
    theirs.load_state_dict(sd)
    ours = getattr(jaxrnn, cls)(3, 4, rngs=R())
    ours.load_state_dict(sd)
    got = ours.state_dict()
    for k, v in theirs.state_dict().items():
        assert got[k].dtype == np.float32
        np.testing.assert_array_equal(np.asarray(got[k]), v.numpy())


def test_from_torch_float64_without_x64_warns_and_loads_float32():
    if jax.config.jax_enable_x64:
        pytest.skip("x64 is on")
    with pytest.warns(UserWarning, match="float64 but jax_enable_x64 is off"):
        m = jaxrnn.from_torch(torch.nn.GRU(3, 4).double())
    assert m.weight_ih_l0[...].dtype == jnp.float32


TO_TORCH = [
    lambda: jaxrnn.LSTM(3, 5, 2, proj_size=2, bidirectional=True, batch_first=True, rngs=R()),
    lambda: jaxrnn.GRU(3, 4, 3, bias=False, dropout=0.25, rngs=R()),
    lambda: jaxrnn.RNN(3, 4, 2, nonlinearity="relu", bidirectional=True, rngs=R()),
    lambda: jaxrnn.LSTMCell(3, 4, rngs=R()),
    lambda: jaxrnn.GRUCell(3, 4, bias=False, rngs=R()),
    lambda: jaxrnn.RNNCell(3, 4, nonlinearity="relu", rngs=R()),
]


def R():
    return nnx.Rngs(0)


@pytest.mark.parametrize("make", TO_TORCH)
def test_to_torch_is_the_same_module(make):
    """to_torch: torch's module of the same class, configuration and weights computes what
    ours does (outputs and input gradients), keeps the mode, and from_torch brings it back."""
    ours = make()
    theirs = jaxrnn.to_torch(ours)
    assert type(theirs) is getattr(torch.nn, type(ours).__name__)
    assert repr(theirs) == repr(ours)
    assert getattr(theirs, "nonlinearity", None) == getattr(ours, "nonlinearity", None)
    assert theirs.training
    ours.eval()
    theirs = jaxrnn.to_torch(ours)
    assert not theirs.training
    cell = type(ours).__name__.endswith("Cell")
    x = np.random.default_rng(0).standard_normal((2, 3) if cell else (4, 2, 3)).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    out_t = theirs(xt)
    leaves_t = [out_t] if cell and not isinstance(out_t, tuple) else list(out_t)
    leaves_t = [o for o in leaves_t for o in (o if isinstance(o, tuple) else (o,))]
    sum(o.sum() for o in leaves_t).backward()

    def total(x):
        return sum(o.sum() for o in jax.tree.leaves(ours(x)))

    assert_close(jax.tree.leaves(ours(jnp.asarray(x))), [o.detach().numpy() for o in leaves_t])
    assert_close(jax.grad(total)(jnp.asarray(x)), xt.grad.numpy())
    back = jaxrnn.from_torch(theirs)
    for k, v in ours.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k], v)


def test_to_torch_keeps_bfloat16():
    ours = jaxrnn.GRU(3, 4, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    theirs = jaxrnn.to_torch(ours)
    for k, v in theirs.state_dict().items():
        assert v.dtype == torch.bfloat16
        np.testing.assert_array_equal(
            v.float().numpy(), np.asarray(ours.state_dict()[k], np.float32)
        )


def test_to_torch_tensors_takes_bfloat16_which_from_numpy_cannot():
    sd = jaxrnn.LSTM(3, 4, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0)).state_dict()
    with pytest.raises(TypeError):
        torch.from_numpy(sd["weight_ih_l0"])
    t = torch.nn.LSTM(3, 4).to(torch.bfloat16)
    t.load_state_dict(jaxrnn.to_torch_tensors(sd), strict=True)
    for k, v in t.state_dict().items():
        np.testing.assert_array_equal(v.float().numpy(), np.asarray(sd[k], np.float32))


def test_to_torch_rejects_other_modules():
    with pytest.raises(TypeError, match="to_torch expects a jaxrnn.RNN, LSTM, GRU"):
        jaxrnn.to_torch(torch.nn.LSTM(2, 2))


def test_load_state_dict_of_traced_values_says_what_to_do_instead():
    """Inside jax.grad the values are tracers: loading them would leak them into the module, so
    it is refused with what to use instead, and the module is unchanged."""
    m = jaxrnn.GRU(3, 4, rngs=nnx.Rngs(0))
    before = m.state_dict()
    params = {k: jnp.asarray(v) for k, v in before.items()}

    def loss(p):
        m.load_state_dict(p)
        return m(jnp.ones((5, 2, 3)))[0].sum()

    with pytest.raises(TypeError, match=r"GRU.load_state_dict: the values of .* are traced.*nnx"):
        jax.grad(loss)(params)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
