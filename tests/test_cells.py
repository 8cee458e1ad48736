"""Cells against torch's RNNCell/LSTMCell/GRUCell: outputs and gradients, NNX and Linen."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _torch_oracle import assert_close, torch_cell, torch_run, weighted_sum
from flax import nnx

import jaxrnn
from jaxrnn import functional as F
from jaxrnn import linen as jrl

I, H, B = 4, 5, 3  # noqa: E741
MODES = ("RNN_TANH", "RNN_RELU", "LSTM", "GRU")


@pytest.mark.parametrize(
    "mode,bias,with_hx,batched",
    list(itertools.product(MODES, (True, False), (True, False), (True, False))),
)
def test_cell_matches_torch(mode, bias, with_hx, batched):
    rng = np.random.default_rng(0)
    tc = torch_cell(mode, I, H, bias=bias)
    lead = (B,) if batched else ()
    x = rng.standard_normal((*lead, I)).astype(np.float32)
    hx = None
    if with_hx:
        h = rng.standard_normal((*lead, H)).astype(np.float32)
        hx = (h, rng.standard_normal((*lead, H)).astype(np.float32)) if mode == "LSTM" else h
    shape_out = ((*lead, H), (*lead, H)) if mode == "LSTM" else (*lead, H)
    weights = (
        tuple(rng.standard_normal(s).astype(np.float32) for s in shape_out)
        if mode == "LSTM"
        else rng.standard_normal(shape_out).astype(np.float32)
    )
    t_out, t_gp, t_gx, t_ghx = torch_run(tc, x, hx, weights)

    m = jaxrnn.from_torch(tc)
    assert_close(m(x, hx), t_out, what="nnx")
    params = jaxrnn.state_dict_to_params(tc.state_dict())

    def loss(params, x, hx):
        out = F.cell_forward(mode, params, x, hx)
        return weighted_sum(out, weights)

    argnums = (0, 1, 2) if with_hx else (0, 1)
    grads = jax.jit(jax.grad(loss, argnums=argnums))(params, x, hx)
    assert_close(grads[0], t_gp, atol=2e-5, rtol=2e-5, what="d params")
    assert_close(grads[1], t_gx, atol=2e-5, rtol=2e-5, what="d input")
    if with_hx:
        assert_close(grads[2], t_ghx, atol=2e-5, rtol=2e-5, what="d hx")

    cls = {"LSTM": jrl.LSTMCell, "GRU": jrl.GRUCell}.get(mode, jrl.RNNCell)
    kw = {"nonlinearity": "relu"} if mode == "RNN_RELU" else {}
    lm = cls(I, H, bias=bias, **kw)
    variables = lm.init(jax.random.key(0), x)
    assert set(variables["params"]) == set(tc.state_dict())
    assert_close(lm.apply({"params": params}, x, hx), t_out, what="linen")


def test_cell_step_by_step_equals_layer():
    """Driving LSTMCell over time by hand equals nn.LSTM with the same weights (torch too)."""
    rng = np.random.default_rng(3)
    tl = torch.nn.LSTM(I, H)
    x = rng.standard_normal((6, B, I)).astype(np.float32)
    cell = jaxrnn.LSTMCell(I, H, rngs=nnx.Rngs(0))
    cell.load_state_dict({k[:-3]: v for k, v in tl.state_dict().items()})
    state = None
    outs = []
    for t in range(6):
        state = cell(x[t], state)
        outs.append(state[0])
    ref = tl(torch.from_numpy(x))[0].detach().numpy()
    assert_close(jnp.stack(outs), ref)


def test_default_init_is_torchs_uniform():
    cell = jaxrnn.GRUCell(3, 400, rngs=nnx.Rngs(0))
    w = np.asarray(cell.weight_hh[...])
    bound = 1 / np.sqrt(400)
    assert w.shape == (1200, 400)
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.99 * bound and abs(w.mean()) < 0.01 * bound
    # and different parameters are not copies of each other
    assert not np.allclose(cell.bias_ih[...], cell.bias_hh[...])
    # every parameter, both biases included, is U(-bound, bound): std bound/sqrt(3), mean 0
    # (the smallest tensor has 1200 entries: the std's relative standard error is ~1.3%)
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    t = torch_cell("GRU", 3, 400)  # seeded
    assert {k: tuple(v.shape) for k, v in t.state_dict().items()} == {
        k: cell.torch_params()[k].shape for k in names
    }
    for name in names:
        v = np.asarray(getattr(cell, name)[...], np.float64)
        assert v.size >= 1200, name
        assert np.abs(v).max() <= bound, name
        assert abs(v.mean()) < 0.1 * bound, name
        np.testing.assert_allclose(v.std(), bound / np.sqrt(3), rtol=0.05, err_msg=name)
        # torch's own default init has the same spread
        tv = t.state_dict()[name].numpy().astype(np.float64)
        np.testing.assert_allclose(v.std(), tv.std(), rtol=0.08, err_msg=name)
