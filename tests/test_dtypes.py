"""Dtypes: float64 parity with torch float64, and mixed precision (bfloat16/float16 compute with
float32 parameters) with its error against torch float32 measured and bounded.

The compute-dtype contract (see :func:`jaxrnn.functional.rnn`): input, ``hx`` and parameters are
cast to one compute dtype, the carry (``h`` and LSTM ``c``) stays in it, outputs and final states
come back in it, and gradients reach the parameters in the parameters' dtype.

float64 runs under ``jax.enable_x64(True)``, a context manager that restores the global flag, so
the other tests of an xdist worker keep float32 defaults.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _torch_oracle import (
    assert_close,
    loss_weights,
    torch_cell,
    torch_layer,
    torch_run,
    weighted_sum,
)
from flax import nnx

import jaxrnn
from jaxrnn import functional as F
from jaxrnn import linen as jrl

T, N, IN, H = 7, 3, 4, 6


# torch runs on one thread: see tests/conftest.py


def _jax_run(params, x, hx, weights, **kwargs):
    """Outputs and gradients (params, input, hx) of ``sum(weights * outputs)`` in jaxrnn."""

    def loss(p, x, hx):
        outs = F.rnn(p, x, hx, **kwargs)
        return weighted_sum(outs, weights, jnp), outs

    (_, outs), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
        params, x, hx
    )
    return outs, grads


# ---------------------------------------------------------------------------------------------
# float64


@pytest.mark.parametrize("mode,proj", [("RNN_RELU", 0), ("LSTM", 3), ("GRU", 0)])
def test_float64_matches_torch_float64(mode, proj):
    """Outputs, final states and all gradients at 1e-10 against torch in float64."""
    rng = np.random.default_rng(0)
    kwargs = dict(num_layers=2, bidirectional=True, batch_first=True)
    if proj:
        kwargs["proj_size"] = proj
    tmod = torch_layer(mode, IN, H, dtype=torch.float64, **kwargs)
    x = rng.standard_normal((N, T, IN))
    h0 = rng.standard_normal((4, N, proj or H))
    hx = (h0, rng.standard_normal((4, N, H))) if mode == "LSTM" else h0
    lengths = np.array([T, 3, 5])
    with torch.no_grad():
        ref_out = tmod(torch.from_numpy(x), jax.tree.map(torch.from_numpy, hx))
    weights = loss_weights(rng, jax.tree.map(lambda t: t.numpy(), ref_out))
    t_outs, t_grads, t_gx, t_ghx = torch_run(tmod, x, hx, weights)
    sd = jaxrnn.state_dict_to_params(tmod.state_dict())
    with jax.enable_x64(True):
        outs, (g_p, g_x, g_hx) = _jax_run(sd, x, hx, weights, mode=mode, batch_first=True)
        assert outs[0].dtype == jnp.float64
        assert_close(outs, t_outs, 1e-10, 1e-10, "outputs")
        assert_close(g_p, t_grads, 1e-10, 1e-10, "grad params")
        assert_close(g_x, t_gx, 1e-10, 1e-10, "grad input")
        assert_close(g_hx, t_ghx, 1e-10, 1e-10, "grad hx")
        # variable lengths in float64: the valid prefix of each sequence is torch's full run
        out_v, _ = F.rnn(sd, x, hx, mode=mode, batch_first=True, seq_lengths=lengths)
        for n, length in enumerate(lengths):
            with torch.no_grad():
                hx_n = jax.tree.map(lambda a, n=n: torch.from_numpy(a[:, n : n + 1]), hx)
                ref_n, _ = tmod(torch.from_numpy(x[n : n + 1, :length]), hx_n)
            assert_close(out_v[n, :length], ref_n[0].numpy(), 1e-10, 1e-10, f"seq {n}")
    assert not jax.config.jax_enable_x64  # the flag is restored for the rest of the worker


@pytest.mark.parametrize("front", ["nnx", "linen"])
def test_float64_modules_and_cell(front):
    rng = np.random.default_rng(1)
    tmod = torch_layer("GRU", IN, H, dtype=torch.float64)
    tcell = torch_cell("LSTM", IN, H).double()
    x = rng.standard_normal((T, N, IN))
    with torch.no_grad():
        ref, _ = tmod(torch.from_numpy(x))
        ref_h, ref_c = tcell(torch.from_numpy(x[0]))
    with jax.enable_x64(True):
        if front == "nnx":
            mod = jaxrnn.from_torch(tmod, param_dtype=jnp.float64)
            cell = jaxrnn.from_torch(tcell, param_dtype=jnp.float64)
            out, _ = mod(x)
            h, c = cell(x[0])
            assert mod.weight_ih_l0[...].dtype == jnp.float64
        else:
            params = {"params": jaxrnn.state_dict_to_params(tmod.state_dict())}
            out, _ = jrl.GRU(IN, H, param_dtype=jnp.float64).apply(params, x)
            cparams = {"params": jaxrnn.state_dict_to_params(tcell.state_dict())}
            h, c = jrl.LSTMCell(IN, H, param_dtype=jnp.float64).apply(cparams, x[0])
        assert out.dtype == h.dtype == jnp.float64
        assert_close(out, ref.numpy(), 1e-10, 1e-10)
        assert_close((h, c), (ref_h.numpy(), ref_c.numpy()), 1e-10, 1e-10)


# ---------------------------------------------------------------------------------------------
# mixed precision


# Bounds in units of the compute dtype's epsilon (bfloat16 2**-7, float16 2**-10): outputs and
# final states within 4 eps absolute (values lie in [-1, 1]); gradients within 8 eps of the
# largest gradient entry. Measured on this grid: outputs <= 0.9 eps, gradients <= 2.9 eps.
OUT_EPS, GRAD_EPS = 4, 8


@pytest.mark.parametrize(
    "mode,dtype",
    [("LSTM", "bfloat16"), ("LSTM", "float16"), ("GRU", "bfloat16"), ("RNN_TANH", "float16")],
)
def test_mixed_precision_against_torch_float32(mode, dtype):
    rng = np.random.default_rng(2)
    compute = jnp.dtype(dtype)
    eps = float(jnp.finfo(compute).eps)
    tmod = torch_layer(mode, IN, H, num_layers=2, bidirectional=True)
    x = rng.standard_normal((T, N, IN)).astype(np.float32)
    h0 = (0.5 * rng.standard_normal((4, N, H))).astype(np.float32)
    hx = (h0, h0.copy()) if mode == "LSTM" else h0
    with torch.no_grad():
        ref_out = tmod(torch.from_numpy(x), jax.tree.map(torch.from_numpy, hx))
    weights = loss_weights(rng, jax.tree.map(lambda t: t.numpy(), ref_out))
    t_outs, t_grads, t_gx, t_ghx = torch_run(tmod, x, hx, weights)
    params = jaxrnn.state_dict_to_params(tmod.state_dict())  # float32
    outs, (g_p, g_x, g_hx) = _jax_run(params, x, hx, weights, mode=mode, dtype=compute)

    for leaf in jax.tree.leaves(outs):  # output, h_n (and c_n) in the compute dtype
        assert leaf.dtype == compute
    for k, g in g_p.items():  # gradients in the parameters' dtype
        assert g.dtype == jnp.float32, k
    out_err = max(
        float(np.max(np.abs(np.asarray(a, np.float32) - b)))
        for a, b in zip(jax.tree.leaves(outs), jax.tree.leaves(t_outs), strict=True)
    )
    grad_err = max(
        float(np.max(np.abs(np.asarray(g_p[k]) - t_grads[k])) / np.max(np.abs(t_grads[k])))
        for k in t_grads
    )
    print(f"{mode}/{dtype}: output error {out_err / eps:.2f} eps, grads {grad_err / eps:.2f} eps")
    assert out_err <= OUT_EPS * eps, f"{mode}/{dtype}: output error {out_err / eps:.2f} eps"
    assert grad_err <= GRAD_EPS * eps, f"{mode}/{dtype}: gradient error {grad_err / eps:.2f} eps"
    # input and hx gradients: the same bound, relative to each one's largest entry
    pairs = [("input", g_x, t_gx)] + [
        (f"hx[{i}]", a, b)
        for i, (a, b) in enumerate(zip(jax.tree.leaves(g_hx), jax.tree.leaves(t_ghx), strict=True))
    ]
    for what, got, want in pairs:
        assert np.shape(got) == np.shape(want), what
        err = float(np.max(np.abs(np.asarray(got, np.float32) - want)) / np.max(np.abs(want)))
        print(f"{mode}/{dtype}: grad {what} error {err / eps:.2f} eps")
        assert err <= GRAD_EPS * eps, f"{mode}/{dtype}: grad {what} error {err / eps:.2f} eps"
    # and it is really computed in the low precision: not float32-accurate
    assert out_err > 1e-5


def test_mixed_precision_modules():
    """NNX and Linen modules with float32 parameters and ``dtype=``: carry and outputs in it."""
    x = jnp.asarray(np.random.default_rng(3).standard_normal((T, N, IN)), jnp.float32)
    xt = torch.from_numpy(np.array(x))

    def within(got, want, dtype, what):  # absolute, in eps of the compute dtype, vs torch f32
        bound = OUT_EPS * float(jnp.finfo(dtype).eps)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            b = b.detach().numpy() if isinstance(b, torch.Tensor) else b
            assert np.shape(a) == np.shape(b), what
            err = float(np.max(np.abs(np.asarray(a, np.float32) - b)))
            assert err <= bound, f"{what}: error {err} > {bound}"

    tlstm = torch_layer("LSTM", IN, H)
    lstm = jaxrnn.from_torch(tlstm, dtype=jnp.bfloat16)
    out, (h, c) = nnx.jit(lambda m, x: m(x))(lstm, x)
    assert lstm.weight_ih_l0[...].dtype == jnp.float32
    assert out.dtype == h.dtype == c.dtype == jnp.bfloat16
    ref, _ = nnx.jit(lambda m, x: m(x))(jaxrnn.from_torch(tlstm), x)
    eps = float(jnp.finfo(jnp.bfloat16).eps)
    assert_close(out.astype(jnp.float32), ref, atol=OUT_EPS * eps, rtol=0)
    with torch.no_grad():
        within((out, h, c), jax.tree.leaves(tlstm(xt)), jnp.bfloat16, "nnx LSTM bf16")

    gru = jrl.GRU(IN, H, dtype=jnp.float16)
    variables = gru.init(jax.random.key(0), x)
    out, h_n = jax.jit(gru.apply)(variables, x, jnp.zeros((1, N, H), jnp.float32))
    assert out.dtype == h_n.dtype == jnp.float16
    assert variables["params"]["weight_ih_l0"].dtype == jnp.float32
    tgru = torch_layer("GRU", IN, H, seed=1)
    t_vars = {"params": jaxrnn.state_dict_to_params(tgru.state_dict())}
    out, h_n = jax.jit(gru.apply)(t_vars, x, jnp.zeros((1, N, H), jnp.float32))
    assert out.dtype == h_n.dtype == jnp.float16
    with torch.no_grad():
        within((out, h_n), tgru(xt, torch.zeros(1, N, H)), jnp.float16, "linen GRU f16")
    cell = jaxrnn.GRUCell(IN, H, rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
    assert cell(x[0], jnp.zeros((N, H))).dtype == jnp.bfloat16
    tcell = torch_cell("GRU", IN, H, seed=2)
    cell = jaxrnn.from_torch(tcell, dtype=jnp.bfloat16)
    h0 = np.random.default_rng(4).standard_normal((N, H)).astype(np.float32) * 0.5
    h1 = cell(x[0], jnp.asarray(h0))
    assert h1.dtype == jnp.bfloat16
    with torch.no_grad():
        within(h1, tcell(xt[0], torch.from_numpy(h0)), jnp.bfloat16, "nnx GRUCell bf16")


def test_low_precision_parameters_promote_with_float32_input():
    """bfloat16 parameters, float32 input, no ``dtype``: computes in the promoted float32."""
    gru = jaxrnn.GRU(IN, H, rngs=nnx.Rngs(0), param_dtype=jnp.bfloat16)
    run = lambda dtype: nnx.eval_shape(lambda m, x: m(x), gru, jnp.ones((T, N, IN), dtype))  # noqa: E731
    out, h_n = run(jnp.float32)  # dtypes are static: abstract evaluation suffices
    assert out.dtype == h_n.dtype == jnp.float32
    out, _ = run(jnp.bfloat16)
    assert out.dtype == jnp.bfloat16
    # a real run: torch float32 with the same (bfloat16-valued) weights
    sd = gru.state_dict()
    assert all(v.dtype == jnp.bfloat16 for v in sd.values())
    tgru = torch.nn.GRU(IN, H)
    tgru.load_state_dict({k: torch.from_numpy(np.array(v, np.float32)) for k, v in sd.items()})
    x = np.random.default_rng(5).standard_normal((T, N, IN)).astype(np.float32)
    out, h_n = nnx.jit(lambda m, x: m(x))(gru, jnp.asarray(x))
    assert out.dtype == h_n.dtype == jnp.float32
    with torch.no_grad():
        want = tgru(torch.from_numpy(x))
    assert_close((out, h_n), (want[0].numpy(), want[1].numpy()), 1e-5, 1e-5)


def test_input_of_another_dtype_promotes_with_float32_parameters():
    """float32 parameters, no ``dtype``: a float64 input (x64) computes in float64 and matches
    torch float64 with the same weights; a bfloat16 input computes in float32 and matches torch
    float32 on the bfloat16-rounded input. torch itself refuses both ("RNN input dtype ... does
    not match weight dtype"); ``dtype=`` fixes the computation dtype instead."""
    tlstm = torch.nn.LSTM(IN, H, 2)
    x = np.random.default_rng(6).standard_normal((T, N, IN))
    with pytest.raises(ValueError, match="does not match weight dtype"):
        tlstm(torch.from_numpy(x))  # what jaxrnn deliberately does not copy
    with jax.enable_x64(True):
        lstm = jaxrnn.from_torch(tlstm)
        assert lstm.weight_ih_l0.dtype == jnp.float32
        out, (h_n, c_n) = lstm(jnp.asarray(x, jnp.float64))
        assert out.dtype == h_n.dtype == c_n.dtype == jnp.float64
        with torch.no_grad():
            want = tlstm.double()(torch.from_numpy(x))
            tlstm.float()
        # float64 compute of float32-valued weights: torch float64 of the same values
        assert_close(
            (out, h_n, c_n), (want[0].numpy(), *(s.numpy() for s in want[1])), 1e-10, 1e-10
        )
        fixed = jaxrnn.from_torch(tlstm, dtype=jnp.float32)(jnp.asarray(x, jnp.float64))[0]
        assert fixed.dtype == jnp.float32
    lstm = jaxrnn.from_torch(tlstm)
    xb = jnp.asarray(x, jnp.bfloat16)
    out, (h_n, _) = lstm(xb)
    assert out.dtype == h_n.dtype == jnp.float32
    with torch.no_grad():
        want = tlstm(torch.from_numpy(np.asarray(xb, np.float32)))
    assert_close((out, h_n), (want[0].numpy(), want[1][0].numpy()), 1e-5, 1e-5)
