"""The torch parity grid: every constructor option, outputs, final states and gradients.

For each configuration a seeded torch module is the oracle; jaxrnn gets its weights through
``from_torch`` / ``state_dict_to_params`` and must match outputs, ``h_n``/``c_n`` and the gradients
of a random weighted sum of all outputs with respect to parameters, input and ``hx``.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _torch_oracle import (
    assert_close,
    loss_weights,
    torch_layer,
    torch_run,
    tuple_map,
    weighted_sum,
)

import jaxrnn
from jaxrnn import functional as F
from jaxrnn import linen as jrl

T, B, I, H, P = 5, 3, 4, 6, 3  # noqa: E741


def _grid():
    """Every mode x layers x directions x batch_first x bias x proj_size, each run twice: once
    batched and once unbatched, one of the two with ``hx`` given and the other without,
    alternating across the grid, so that each (hx, batched) pair meets every mode, layer count
    and direction (and every compilation stays worth its cost on 2 cores)."""
    i = 0
    for mode in ("RNN_TANH", "RNN_RELU", "LSTM", "GRU"):
        projs = (0, P) if mode == "LSTM" else (0,)
        for layers, bidir, batch_first, bias, proj in itertools.product(
            (1, 2), (False, True), (False, True), (True, False), projs
        ):
            i += 1
            for batched in (True, False):
                if not batched and batch_first and layers == 1:
                    continue  # batch_first does not apply to unbatched input
                with_hx = batched == bool(i % 2)
                yield pytest.param(
                    mode,
                    layers,
                    bidir,
                    batch_first,
                    bias,
                    proj,
                    with_hx,
                    batched,
                    id=f"{mode}-L{layers}-{'bi' if bidir else 'uni'}-"
                    f"{'bf' if batch_first else 'sf'}-{'b' if bias else 'nob'}-p{proj}-"
                    f"{'hx' if with_hx else 'nohx'}-{'batched' if batched else 'unbatched'}",
                )


def _inputs(rng, mode, layers, bidir, batch_first, proj, with_hx, batched):
    d = 2 if bidir else 1
    if batched:
        x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(np.float32)
        lead = (d * layers, B)
    else:
        x = rng.standard_normal((T, I)).astype(np.float32)
        lead = (d * layers,)
    hx = None
    if with_hx:
        h0 = rng.standard_normal((*lead, proj or H)).astype(np.float32)
        hx = (h0, rng.standard_normal((*lead, H)).astype(np.float32)) if mode == "LSTM" else h0
    return x, hx


@pytest.mark.parametrize("mode,layers,bidir,batch_first,bias,proj,with_hx,batched", list(_grid()))
def test_layer_matches_torch(mode, layers, bidir, batch_first, bias, proj, with_hx, batched):
    rng = np.random.default_rng(0)
    kwargs = dict(num_layers=layers, bidirectional=bidir, batch_first=batch_first, bias=bias)
    if proj:
        kwargs["proj_size"] = proj
    torch_m = torch_layer(mode, I, H, **kwargs)
    x, hx = _inputs(rng, mode, layers, bidir, batch_first, proj, with_hx, batched)
    weights = loss_weights(
        rng, tuple_map(lambda t: t.detach().numpy(), torch_m(torch.from_numpy(x)))
    )
    t_out, t_gp, t_gx, t_ghx = torch_run(torch_m, x, hx, weights)

    params = jaxrnn.state_dict_to_params(torch_m.state_dict())

    def loss(params, x, hx):
        out = F.rnn(params, x, hx, mode=mode, batch_first=batch_first)
        return weighted_sum(out, weights), out

    grad_argnums = (0, 1, 2) if with_hx else (0, 1)
    (value, out), grads = jax.jit(jax.value_and_grad(loss, argnums=grad_argnums, has_aux=True))(
        params, x, hx
    )
    assert_close(out, t_out, what="outputs")
    assert_close(grads[0], t_gp, atol=2e-5, rtol=2e-5, what="d params")
    assert_close(grads[1], t_gx, atol=2e-5, rtol=2e-5, what="d input")
    if with_hx:
        assert_close(grads[2], t_ghx, atol=2e-5, rtol=2e-5, what="d hx")


# A representative slice of the grid through the NNX and Linen modules, eager and jitted.
_MODULE_CASES = [
    ("RNN_TANH", dict(num_layers=2, bidirectional=True)),
    ("RNN_RELU", dict(num_layers=1, batch_first=True, bias=False)),
    ("LSTM", dict(num_layers=2, bidirectional=True, proj_size=P, batch_first=True)),
    ("LSTM", dict(num_layers=1)),
    ("GRU", dict(num_layers=2, bidirectional=True, bias=False)),
    ("GRU", dict(num_layers=1, batch_first=True)),
]


def _linen_module(mode, kwargs):
    cls = {"RNN_TANH": jrl.RNN, "RNN_RELU": jrl.RNN, "LSTM": jrl.LSTM, "GRU": jrl.GRU}[mode]
    if mode.startswith("RNN"):
        kwargs = dict(kwargs, nonlinearity="tanh" if mode == "RNN_TANH" else "relu")
    return cls(I, H, **kwargs)


@pytest.mark.parametrize("mode,kwargs", _MODULE_CASES)
def test_nnx_and_linen_modules_match_torch(mode, kwargs):
    from flax import nnx

    rng = np.random.default_rng(1)
    torch_m = torch_layer(mode, I, H, **kwargs)
    bf = kwargs.get("batch_first", False)
    x = rng.standard_normal((B, T, I) if bf else (T, B, I)).astype(np.float32)
    t_out = torch_m(torch.from_numpy(x))
    t_out_np = (
        t_out[0].detach().numpy(),
        tuple(s.detach().numpy() for s in t_out[1])
        if isinstance(t_out[1], tuple)
        else t_out[1].detach().numpy(),
    )
    weights = loss_weights(rng, t_out_np)
    _, t_gp, t_gx, _ = torch_run(torch_m, x, None, weights)

    # NNX: eager, nnx.jit, and grads through nnx.grad
    m = jaxrnn.from_torch(torch_m)
    assert_close(m(jnp.asarray(x)), t_out_np, what="nnx eager")
    assert_close(nnx.jit(lambda m, x: m(x))(m, x), t_out_np, what="nnx jit")

    def nnx_loss(m, x):
        return weighted_sum(m(x), weights)

    g_m, g_x = nnx.jit(nnx.grad(nnx_loss, argnums=(0, 1)))(m, jnp.asarray(x))
    g_params = {path[0]: np.asarray(v[...]) for path, v in nnx.to_flat_state(g_m)}
    assert_close(g_params, t_gp, atol=2e-5, rtol=2e-5, what="nnx d params")
    assert_close(g_x, t_gx, atol=2e-5, rtol=2e-5, what="nnx d input")

    # Linen: init creates torch-named params; apply with torch's weights matches
    lm = _linen_module(mode, kwargs)
    variables = lm.init(jax.random.key(0), x)
    assert {k: v.shape for k, v in variables["params"].items()} == {
        k: tuple(v.shape) for k, v in torch_m.state_dict().items()
    }
    variables = {"params": jaxrnn.state_dict_to_params(torch_m.state_dict())}
    assert_close(jax.jit(lm.apply)(variables, x), t_out_np, what="linen jit")
    g = jax.grad(lambda v, x: weighted_sum(lm.apply(v, x), weights), argnums=(0, 1))(variables, x)
    assert_close(g[0]["params"], t_gp, atol=2e-5, rtol=2e-5, what="linen d params")
    assert_close(g[1], t_gx, atol=2e-5, rtol=2e-5, what="linen d input")


def test_nan_in_one_sequence_does_not_leak():
    torch_m = torch_layer("LSTM", I, H, num_layers=2, bidirectional=True)
    m = jaxrnn.from_torch(torch_m)
    x = np.random.default_rng(2).standard_normal((T, B, I)).astype(np.float32)
    x[2, 1, 0] = np.nan
    out, (h, c) = m(x)
    clean = np.delete(np.asarray(out), 1, axis=1)
    assert np.isfinite(clean).all() and np.isnan(np.asarray(out)[:, 1]).any()
    assert np.isfinite(np.delete(np.asarray(h), 1, axis=1)).all()
    ref = torch_m(torch.from_numpy(np.delete(x, 1, axis=1)))[0].detach().numpy()
    assert_close(clean, ref, what="other sequences")
    with torch.no_grad():
        _, (ref_h, ref_c) = torch_m(torch.from_numpy(np.delete(x, 1, axis=1)))
    assert_close(np.delete(np.asarray(h), 1, axis=1), ref_h.numpy(), what="h_n of the others")
    assert_close(np.delete(np.asarray(c), 1, axis=1), ref_c.numpy(), what="c_n of the others")


@pytest.mark.parametrize("path", ["fused", "remat", "cell"])
def test_relu_gradient_passes_nan_as_torchs(path):
    """torch's relu backward zeroes the gradient where the result is <= 0 and passes it
    elsewhere, NaN included (``jax.nn.relu``'s stops at NaN): a NaN step then changes the finite
    gradients of the steps before it, in torch as here."""
    t = torch_layer("RNN_RELU", 1, 1).double()
    with torch.no_grad():
        t.weight_ih_l0.fill_(2.0), t.weight_hh_l0.fill_(0.5)
        t.bias_ih_l0.fill_(0.1), t.bias_hh_l0.fill_(0.0)
    x = torch.tensor([[[np.nan]], [[1.0]]], dtype=torch.float64, requires_grad=True)
    with jax.enable_x64(True):
        if path == "cell":  # one step from a NaN state
            tc = torch.nn.RNNCell(1, 1, nonlinearity="relu").double()
            tc.load_state_dict({k[:-3]: v for k, v in t.state_dict().items()})
            h = torch.tensor([[np.nan]], dtype=torch.float64, requires_grad=True)
            tc(torch.ones(1, 1, dtype=torch.float64), h).sum().backward()
            ours = jax.grad(lambda h: jaxrnn.from_torch(tc)(jnp.ones((1, 1)), h).sum())(
                jnp.full((1, 1), np.nan)
            )
            np.testing.assert_allclose(ours, h.grad.numpy())
            return
        t(x)[0].sum().backward()
        m = jaxrnn.from_torch(t)
        m.remat = path == "remat"
        ours = jax.grad(lambda x: m(x)[0].sum())(jnp.asarray(x.detach().numpy()))
    np.testing.assert_allclose(ours, x.grad.numpy())
    assert np.isfinite(x.grad.numpy()).all()  # [3, 2]: finite, and not the zeros of before


def test_dropout_keeps_nan_where_it_drops_as_torchs():
    """torch's dropout multiplies by its mask (``x * 0`` at ``p=1``), so NaN stays NaN."""
    t = torch_layer("LSTM", 3, 4, num_layers=2, dropout=1.0).train()
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    x[1, 0, 0] = np.nan
    _, (h_t, _) = t(torch.from_numpy(x))
    _, (h, _) = jaxrnn.from_torch(t)(x)
    np.testing.assert_array_equal(np.isnan(np.asarray(h)), np.isnan(h_t.detach().numpy()))
    assert np.isnan(np.asarray(h)[1, 0]).all()  # layer 1 of sequence 0, behind the dropped NaN
    assert_close(np.asarray(h)[:, 1], h_t.detach().numpy()[:, 1])
