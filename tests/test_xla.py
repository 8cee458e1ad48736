"""``jaxrnn.cpu_compiler_options``: what it returns where, and that layers compiled with those
options still compute torch's outputs and gradients."""

from __future__ import annotations

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
from flax import nnx

import jaxrnn
from jaxrnn import _xla
from jaxrnn.functional import _fused

WIDE = {"xla_cpu_prefer_vector_width": 512}


def _cpuinfo(tmp_path, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\n"
        f"flags\t\t: {flags}\nbugs\t\t: sysret_ss_attrs\n\nprocessor\t: 1\n"
    )
    return str(path)


def test_wide_vectors_on_an_avx512_cpu(tmp_path):
    info = _cpuinfo(tmp_path, "fpu sse2 avx2 fma avx512f avx512bw avx512vl")
    assert jaxrnn.cpu_compiler_options("cpu", cpuinfo=info) == WIDE
    assert jaxrnn.cpu_compiler_options("CPU", cpuinfo=info) == WIDE
    options = jaxrnn.cpu_compiler_options("cpu", cpuinfo=info)
    options["xla_cpu_prefer_vector_width"] = 256  # the caller's copy, not the module's
    assert jaxrnn.cpu_compiler_options("cpu", cpuinfo=info) == WIDE


@pytest.mark.parametrize(
    "flags,backend",
    [
        ("fpu sse2 avx2 fma", "cpu"),  # no AVX-512
        ("fpu avx2 avx512bw avx512vl", "cpu"),  # extensions without the foundation
        ("fpu avx2 avx512f", "gpu"),  # another backend
        ("fpu avx2 avx512f", "tpu"),
        (None, "cpu"),  # no /proc/cpuinfo (macOS, Windows)
        ("", "cpu"),  # a cpuinfo without a flags line (ARM's has "Features")
    ],
)
def test_no_options_elsewhere(tmp_path, flags, backend):
    if flags is None:
        info = str(tmp_path / "missing")
    elif flags:
        info = _cpuinfo(tmp_path, flags)
    else:
        info = tmp_path / "cpuinfo"
        info.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm aes avx512f\n")
        info = str(info)
    assert jaxrnn.cpu_compiler_options(backend, cpuinfo=info) == {}


def test_default_backend_is_jax_default(tmp_path, monkeypatch):
    info = _cpuinfo(tmp_path, "avx2 avx512f")
    monkeypatch.setattr(_xla.jax, "default_backend", lambda: "gpu")
    assert jaxrnn.cpu_compiler_options(cpuinfo=info) == {}
    monkeypatch.setattr(_xla.jax, "default_backend", lambda: "cpu")
    assert jaxrnn.cpu_compiler_options(cpuinfo=info) == WIDE


def test_options_are_accepted_by_jax_jit():
    """Whatever this host gets, ``jax.jit`` takes it (an unknown option name would raise)."""
    f = jax.jit(lambda x: jnp.tanh(x) * 2.0, compiler_options=jaxrnn.cpu_compiler_options())
    np.testing.assert_allclose(f(jnp.ones(4)), np.tanh(np.ones(4)) * 2.0, rtol=1e-6)


# The suite compiles at LLVM level 0 (conftest); these programs at XLA's default level, where the
# vector width shapes the generated loops. On a CPU without AVX-512 the width is only a preference
# LLVM cannot take, and the comparison with torch holds all the same.
OPTIMISED_WIDE = {**WIDE, "xla_backend_optimization_level": 3}


@pytest.mark.parametrize(
    "mode,batch,hid,kwargs,fm,groups",
    [
        # feature-major (here from any hidden size), two unit groups, [W_ih, W_hh] @ [x_t; h]
        ("LSTM", 32, 160, {}, True, 2),
        ("LSTM", 8, 64, {"bidirectional": True, "proj_size": 16}, True, 1),
        ("LSTM", 4, 64, {"num_layers": 2, "bidirectional": True}, False, 1),
        # feature-major, bidirectional: the batch-major input gradient (_dx_batch_major)
        ("GRU", 32, 64, {"num_layers": 2, "bidirectional": True}, True, 1),
        ("GRU", 16, 256, {}, False, 2),
        ("RNN_TANH", 32, 64, {"bias": False}, False, 1),
    ],
)
def test_layers_compiled_with_wide_vectors_match_torch(
    mode, batch, hid, kwargs, fm, groups, retraced
):
    """Outputs and gradients (parameters, input, ``hx``) of the training step, and the inference
    forward, compiled with ``jax.jit(..., compiler_options=)`` as the docstring shows, in both
    loop layouts, with and without unit groups (as on two CPUs)."""
    retraced(_fused, "_cpu_count", lambda: 2)
    if fm:
        retraced(_fused, "_FEATURE_MAJOR_MIN_HIDDEN", 1)
    assert _fused.feature_major_default(mode, batch, hid) == fm
    steps, inp = 9, 24
    gates = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    w = {"weight_ih": np.zeros((gates * hid, inp)), "weight_hh": np.zeros((gates * hid, hid))}
    w["weight_hr"] = np.zeros((16, hid)) if kwargs.get("proj_size") else None
    dirs = 2 if kwargs.get("bidirectional") else 1
    assert _fused.unit_groups_default(mode, [w] * dirs, batch, fm) == groups
    tmod = torch_layer(mode, inp, hid, **kwargs)
    rng = np.random.default_rng(0)
    layers = kwargs.get("num_layers", 1)
    x = rng.standard_normal((steps, batch, inp)).astype(np.float32)
    h0 = rng.standard_normal((dirs * layers, batch, kwargs.get("proj_size") or hid))
    h0 = h0.astype(np.float32)
    c0 = rng.standard_normal((dirs * layers, batch, hid)).astype(np.float32)
    hx = (h0, c0) if mode == "LSTM" else h0
    with torch.no_grad():
        outs = tmod(torch.from_numpy(x), tuple_map(torch.from_numpy, hx))
        weights = loss_weights(rng, tuple_map(np.asarray, outs))
    t_outs, t_grads, t_gx, t_ghx = torch_run(tmod, x, hx, weights)

    model = jaxrnn.from_torch(tmod)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params, x, hx):
        outs = nnx.merge(graphdef, params, rest)(x, hx)
        return weighted_sum(outs, weights), outs

    step = jax.jit(
        jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True),
        compiler_options=OPTIMISED_WIDE,
    )
    (_, outs), (g_p, g_x, g_hx) = step(params, x, hx)
    assert_close(outs, t_outs, 1e-5, 1e-5, "outputs")
    g_p = {"/".join(map(str, k)): v[...] for k, v in nnx.to_flat_state(g_p)}
    assert_close(g_p, t_grads, 1e-4, 1e-4, "d params")
    assert_close(g_x, t_gx, 2e-5, 2e-5, "d input")
    assert_close(g_hx, t_ghx, 2e-5, 2e-5, "d hx")

    infer = jax.jit(
        lambda params, x, hx: nnx.merge(graphdef, params, rest)(x, hx),
        compiler_options=OPTIMISED_WIDE,
    )
    assert_close(infer(params, x, hx), t_outs, 1e-5, 1e-5, "inference outputs")
