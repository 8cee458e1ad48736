"""JAX transformations over jaxrnn: jit, grad, vmap (params and inputs), checkpoint/remat,
eval_shape, NNX's lifted transforms, a 100,000-step sequence, and remat's memory growth.

PyTorch is the oracle for values and gradients; ``compiled.memory_analysis()`` (deterministic)
for memory.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _torch_oracle import assert_close, torch_cell, torch_layer
from flax import nnx

import jaxrnn
from jaxrnn import functional as F
from jaxrnn import linen as jrl
from jaxrnn._params import layer_param_shapes

T, N, IN, H = 7, 3, 4, 5


# torch runs on one thread: see tests/conftest.py


def _torch_grads(module, x, hx=None, lengths=None, w_out=None):
    """torch outputs and d(sum(w_out * output) + sum(h_n))/d(params, x) (packed when lengths)."""
    xt = torch.tensor(x, requires_grad=True)
    module.zero_grad()
    inp = xt
    if lengths is not None:
        inp = torch.nn.utils.rnn.pack_padded_sequence(xt, lengths, enforce_sorted=False)
    hxt = None if hx is None else jax.tree.map(torch.from_numpy, hx)
    out, state = module(inp, hxt)
    if lengths is not None:
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=x.shape[0])
    h_n = state[0] if isinstance(state, tuple) else state
    loss = (out * torch.from_numpy(w_out)).sum() + h_n.sum()
    loss.backward()
    grads = {k: p.grad.numpy().copy() for k, p in module.named_parameters()}
    return out.detach().numpy(), h_n.detach().numpy(), grads, xt.grad.numpy()


def _loss(mode, w_out, **kwargs):
    def loss(params, x, hx=None):
        out, state = F.rnn(params, x, hx, mode=mode, **kwargs)
        h_n = state[0] if mode == "LSTM" else state
        return jnp.sum(out * w_out) + jnp.sum(h_n), (out, h_n)

    return loss


# ---------------------------------------------------------------------------------------------
# jit, grad, checkpoint, remat


@pytest.mark.parametrize(
    "mode,remat,checkpoint",
    [
        ("LSTM", True, False),  # sqrt(L) chunks
        ("GRU", 2, False),  # chunks of 2 over L = 7: a ragged tail
        ("RNN_TANH", 3, True),  # and jax.checkpoint around the whole loss
        ("LSTM", False, True),  # jax.checkpoint around the fused path (its custom_vjp)
        ("GRU", False, True),
    ],
)
def test_jit_grad_checkpoint_remat_match_torch(mode, remat, checkpoint):
    """Bidirectional 2-layer, variable lengths: outputs and gradients equal torch's under
    ``jit(grad(...))`` with ``jax.checkpoint`` and/or ``remat`` chunking."""
    rng = np.random.default_rng(0)
    tmod = torch_layer(mode, IN, H, num_layers=2, bidirectional=True)
    x = rng.standard_normal((T, N, IN)).astype(np.float32)
    lengths = np.array([T, 4, 1])
    w_out = rng.standard_normal((T, N, 2 * H)).astype(np.float32)
    t_out, t_hn, t_gp, t_gx = _torch_grads(tmod, x, lengths=lengths, w_out=w_out)

    loss = _loss(mode, w_out, seq_lengths=lengths, remat=remat)
    if checkpoint:
        loss = jax.checkpoint(loss, policy=jax.checkpoint_policies.nothing_saveable)
    params = jaxrnn.state_dict_to_params(tmod.state_dict())
    (_, (out, h_n)), (g_p, g_x) = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(params, x)
    assert_close(out, t_out, what="output")
    assert_close(h_n, t_hn, what="h_n")
    assert_close(g_p, t_gp, 2e-5, 2e-5, what="grad params")
    assert_close(g_x, t_gx, 2e-5, 2e-5, what="grad input")


@pytest.mark.parametrize(
    "mode,remat,hidden,hx",
    [
        ("LSTM", False, H, "sharded"),
        ("GRU", False, H, None),
        ("RNN_TANH", False, H, "replicated"),
        ("LSTM", True, H, None),
        ("GRU", False, 256, "replicated"),  # the feature-major loops, two unit groups
    ],
)
def test_shard_map_matches_torch(mode, remat, hidden, hx):
    """Inside ``jax.shard_map`` (its default ``check_vma``) the loops' carries vary over the
    mesh axis as the sharded batch does, whether ``h_0`` is the default zeros, replicated or
    sharded; the weights' gradients come back summed over the shards, as JAX does for any
    replicated value used with sharded data. One device makes a mesh with the same types (the
    error it raised before, "carry input and carry output must have equal types", needs no
    more). Bidirectional 2-layer, variable lengths, against torch."""
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    rng = np.random.default_rng(1)
    tmod = torch_layer(mode, IN, hidden, num_layers=2, bidirectional=True)
    x = rng.standard_normal((T, N, IN)).astype(np.float32)
    lengths = np.array([T, 4, 1])
    w_out = rng.standard_normal((T, N, 2 * hidden)).astype(np.float32)
    h0 = None
    if hx is not None:
        h0 = rng.standard_normal((4, N, hidden)).astype(np.float32)
        h0 = (h0, np.ones_like(h0)) if mode == "LSTM" else h0
    t_out, t_hn, t_gp, t_gx = _torch_grads(tmod, x, h0, lengths=lengths, w_out=w_out)

    loss = _loss(mode, w_out, seq_lengths=lengths, remat=remat)
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    h_spec = P(None, "data") if hx == "sharded" else P()

    def step(params, x, h0):
        (value, aux), grads = jax.value_and_grad(loss, (0, 1), has_aux=True)(params, x, h0)
        return jax.lax.psum(value, "data"), aux, grads

    sharded = jax.shard_map(
        step,
        mesh=mesh,
        in_specs=(P(), P(None, "data"), h_spec),
        out_specs=(P(), (P(None, "data"), P(None, "data")), (P(), P(None, "data"))),
    )
    params = jaxrnn.state_dict_to_params(tmod.state_dict())
    _, (out, h_n), (g_p, g_x) = jax.jit(sharded)(params, x, h0)
    assert_close(out, t_out, what="output")
    assert_close(h_n, t_hn, what="h_n")
    assert_close(g_p, t_gp, 2e-5, 2e-5, what="grad params")
    assert_close(g_x, t_gx, 2e-5, 2e-5, what="grad input")


@pytest.mark.parametrize("remat", [False, True])
def test_forward_mode_needs_remat(remat):
    """The fused path's backward is a ``custom_vjp``: ``jax.jvp`` raises there (as documented),
    while ``remat=`` gives the plain scan, whose JVP equals torch's directional derivative
    (``torch.autograd.functional.jvp``, by double backward: torch's forward AD does not cover
    its CPU LSTM kernel)."""
    rng = np.random.default_rng(5)
    tmod = torch_layer("LSTM", IN, H)
    params = jaxrnn.state_dict_to_params(tmod.state_dict())
    x = rng.standard_normal((T, N, IN)).astype(np.float32)
    dx = rng.standard_normal(x.shape).astype(np.float32)

    def run(x):
        return F.rnn(params, x, mode="LSTM", remat=remat)[0]

    if not remat:
        with pytest.raises(TypeError, match=r"LSTM: forward-mode autodiff .* pass remat=True"):
            jax.jvp(run, (x,), (dx,))
        module = jaxrnn.from_torch(tmod)  # the modules say so too
        with pytest.raises(TypeError, match=r"LSTM: forward-mode autodiff .*custom_vjp"):
            jax.jvp(lambda x: module(x)[0], (x,), (dx,))
        with pytest.raises(TypeError, match="forward-mode autodiff"):  # JAX's own, under jit
            jax.jit(lambda x: jax.jvp(run, (x,), (dx,)))(x)
        return
    out, tangent = jax.jvp(run, (x,), (dx,))
    t_out, t_tangent = torch.autograd.functional.jvp(
        lambda xt: tmod(xt)[0], torch.from_numpy(x), torch.from_numpy(dx)
    )
    assert_close(out, t_out.detach().numpy(), what="output")
    assert_close(tangent, t_tangent.detach().numpy(), 2e-5, 2e-5, what="jvp")


@pytest.mark.parametrize("unroll", [True, False, 3])
def test_unroll_takes_lax_scans_values_and_nnx_state_params(unroll):
    """``unroll=True``/``False`` mean all steps or one, as ``lax.scan``'s; the functional core
    also takes an NNX parameter state (``nnx.state(model, nnx.Param)``) as its dict."""
    t = torch_layer("GRU", 3, 5, num_layers=2, bidirectional=True)
    model = jaxrnn.from_torch(t)
    x = np.random.default_rng(0).standard_normal((6, 2, 3)).astype(np.float32)
    want = jax.tree.map(lambda a: a.detach().numpy(), t(torch.from_numpy(x)))
    params = nnx.state(model, nnx.Param)
    assert_close(F.gru(params, x, unroll=unroll), want)
    assert_close(jax.jit(lambda p, x: F.gru(p, x, unroll=unroll))(params, x), want)
    grads = jax.grad(lambda p: jnp.sum(F.gru(p, x)[0] ** 2))(params)
    loss = (t(torch.from_numpy(x))[0] ** 2).sum()
    loss.backward()
    for name, p in t.named_parameters():
        np.testing.assert_allclose(grads[name][...], p.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_hessian_goes_through_the_fast_path():
    """Forward over reverse differentiates the fused path's hand-written backward (plain JAX),
    so ``jax.hessian`` works without ``remat`` and equals torch's (double backward), under
    ``jit`` too; only forward mode through the layer itself needs ``remat``."""
    tmod = torch_layer("GRU", 2, 3, bidirectional=True)
    params = jaxrnn.state_dict_to_params(tmod.state_dict())
    x = np.random.default_rng(6).standard_normal((3, 1, 2)).astype(np.float32)

    def loss(x):
        out, h_n = F.gru(params, x)
        return jnp.sum(out**2) + jnp.sum(jnp.tanh(h_n))

    want = torch.autograd.functional.hessian(
        lambda xt: (tmod(xt)[0] ** 2).sum() + torch.tanh(tmod(xt)[1]).sum(), torch.from_numpy(x)
    )
    for got in (jax.hessian(loss)(x), jax.jit(jax.hessian(loss))(x)):
        assert_close(got, want.numpy(), 2e-5, 2e-5, what="hessian")


@pytest.mark.parametrize("mode", ["GRU", "LSTM"])
def test_precision_argument_reaches_the_matmuls(mode):
    """``precision=`` is passed to every matmul of the forward pass and of the training step (the
    fused path's hand-written backward included; visible in the lowered program) and the result
    still equals torch's."""
    tmod = torch_layer(mode, IN, H, num_layers=2)
    params = jaxrnn.state_dict_to_params(tmod.state_dict())
    x = np.random.default_rng(6).standard_normal((T, N, IN)).astype(np.float32)

    def run(params, x, precision):
        return F.rnn(params, x, mode=mode, precision=precision)[0]

    def train(params, x, precision):
        return jax.grad(lambda p, x: jnp.sum(run(p, x, precision)), argnums=(0, 1))(params, x)

    for fn in (run, train):

        def hlo(precision, fn=fn):
            return jax.jit(fn, static_argnums=2).lower(params, x, precision).as_text()

        assert "HIGHEST" not in hlo(None)
        dots = [
            line for line in hlo(jax.lax.Precision.HIGHEST).splitlines() if "dot_general" in line
        ]
        assert dots and all("HIGHEST" in line for line in dots), fn.__name__
    with torch.no_grad():
        want = tmod(torch.from_numpy(x))[0].numpy()
    assert_close(run(params, x, jax.lax.Precision.HIGHEST), want, what="output")


@pytest.mark.parametrize("remat", [False, True])
def test_precision_as_dot_general_takes_it_or_a_clear_error(remat):
    """``precision`` in every form ``lax.dot_general`` takes, a list pair included (which the
    compiled layers' cache could not hash), gives torch's numbers; anything else is a TypeError
    naming the module, not one from inside JAX."""
    tmod = torch_layer("LSTM", IN, H, bidirectional=True)
    m = jaxrnn.from_torch(tmod, remat=remat)
    x = np.random.default_rng(7).standard_normal((T, N, IN)).astype(np.float32)
    with torch.no_grad():
        want = tmod(torch.from_numpy(x))[0].numpy()
    highest = jax.lax.Precision.HIGHEST
    for precision in ["highest", highest, (highest, highest), [highest, highest]]:
        m.precision = precision
        assert_close(m(jnp.asarray(x))[0], want, what=repr(precision))
    for precision in ["fastest-ish", 3, [1, 2], {"a": 1}]:
        m.precision = precision
        with pytest.raises(TypeError, match="LSTM: precision must be None, a jax.lax.Precision"):
            m(jnp.asarray(x))
    with pytest.raises(TypeError, match="LSTMCell: precision must be None, a jax.lax.Precision"):
        jaxrnn.LSTMCell(IN, H, precision="fastest-ish", rngs=nnx.Rngs(0))
    cell = jaxrnn.LSTMCell(IN, H, rngs=nnx.Rngs(0))
    cell.precision = "fastest-ish"  # set afterwards: the call refuses it
    with pytest.raises(TypeError, match="LSTMCell: precision must be None, a jax.lax.Precision"):
        cell(jnp.asarray(x[0]))


def test_jit_traces_once_per_shape():
    tmod = torch_layer("GRU", IN, H)
    params = jaxrnn.state_dict_to_params(tmod.state_dict())

    @jax.jit
    @chex.assert_max_traces(n=2)
    def run(params, x):
        return F.rnn(params, x, mode="GRU")

    rng = np.random.default_rng(1)
    for shape in [(T, N, IN), (T, N, IN), (T + 2, N, IN), (T + 2, N, IN)]:
        x = rng.standard_normal(shape).astype(np.float32)
        with torch.no_grad():
            want = tmod(torch.from_numpy(x))
        assert_close(run(params, x), (want[0].numpy(), want[1].numpy()))


# ---------------------------------------------------------------------------------------------
# vmap


def test_vmap_over_inputs_and_unbatched_equals_batched():
    """vmap over an extra leading input axis; vmap of the unbatched call over N is torch's
    batched call."""
    rng = np.random.default_rng(2)
    tmod = torch_layer("LSTM", IN, H, num_layers=2, proj_size=2)
    params = jaxrnn.state_dict_to_params(tmod.state_dict())
    xs = rng.standard_normal((2, T, N, IN)).astype(np.float32)
    out, (h, c) = jax.jit(jax.vmap(lambda x: F.rnn(params, x, mode="LSTM")))(xs)
    with torch.no_grad():  # the extra axis folded into torch's batch
        t_out, (t_h, t_c) = tmod(torch.from_numpy(xs.transpose(1, 0, 2, 3).reshape(T, 2 * N, IN)))
    assert_close(out, t_out.numpy().reshape(T, 2, N, 2).transpose(1, 0, 2, 3), what="output")
    assert_close(h, t_h.numpy().reshape(2, 2, N, 2).transpose(1, 0, 2, 3), what="h_n")
    assert_close(c, t_c.numpy().reshape(2, 2, N, H).transpose(1, 0, 2, 3), what="c_n")

    # per-sequence unbatched calls (L, H_in) vmapped over N, with per-sequence lengths
    lengths = np.array([T, 2, 5])
    per_seq = jax.vmap(
        lambda x, n: F.rnn(params, x, mode="LSTM", seq_lengths=n), in_axes=(1, 0), out_axes=(1, 1)
    )
    out_v, (h_v, c_v) = per_seq(xs[0], jnp.asarray(lengths))
    out_b, (h_b, _) = F.rnn(params, xs[0], mode="LSTM", seq_lengths=lengths)
    assert_close(out_v, out_b, what="vmapped unbatched output")
    assert_close(h_v, h_b, what="vmapped unbatched h_n")
    # and torch's packed run over the same sequences and lengths
    with torch.no_grad():
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            torch.from_numpy(xs[0]), lengths, enforce_sorted=False
        )
        t_out, (t_h, t_c) = tmod(packed)
        t_out, _ = torch.nn.utils.rnn.pad_packed_sequence(t_out, total_length=T)
    assert_close(out_v, t_out.numpy(), what="vmapped unbatched output vs torch packed")
    assert_close(h_v, t_h.numpy(), what="vmapped unbatched h_n vs torch packed")
    assert_close(c_v, t_c.numpy(), what="vmapped unbatched c_n vs torch packed")


@pytest.mark.parametrize("mode", ["LSTM"])
def test_vmap_over_params_matches_each_torch_model(mode):
    """An ensemble: stacked parameters of K torch models; per-model outputs and gradients."""
    rng = np.random.default_rng(3)
    models = [torch_layer(mode, IN, H, bidirectional=True, seed=s) for s in range(3)]
    stacked = jax.tree.map(
        lambda *a: np.stack(a), *[jaxrnn.state_dict_to_params(m.state_dict()) for m in models]
    )
    x = rng.standard_normal((T, N, IN)).astype(np.float32)
    w_out = rng.standard_normal((T, N, 2 * H)).astype(np.float32)
    loss = _loss(mode, w_out)
    grad_fn = jax.jit(jax.vmap(jax.value_and_grad(loss, has_aux=True), in_axes=(0, None)))
    (_, (out, h_n)), g_p = grad_fn(stacked, x)
    for k, m in enumerate(models):
        t_out, t_hn, t_gp, _ = _torch_grads(m, x, w_out=w_out)
        assert_close(out[k], t_out, what=f"output {k}")
        assert_close(h_n[k], t_hn, what=f"h_n {k}")
        assert_close(jax.tree.map(lambda g, k=k: g[k], g_p), t_gp, 2e-5, 2e-5, f"grads {k}")


def test_nnx_vmap_ensemble_matches_torch():
    """``nnx.vmap`` builds K modules with stacked parameters and runs them on one input."""

    @nnx.split_rngs(splits=3)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make(rngs):
        return jaxrnn.GRU(IN, H, 2, rngs=rngs)

    ensemble = make(nnx.Rngs(0))
    assert ensemble.weight_ih_l0[...].shape == (3, 3 * H, IN)

    @nnx.jit
    @nnx.vmap(in_axes=(0, None))
    def run(m, x):
        return m(x)

    x = np.random.default_rng(4).standard_normal((T, N, IN)).astype(np.float32)
    out, h_n = run(ensemble, x)
    sd = ensemble.state_dict()
    for k in range(3):
        tmod = torch.nn.GRU(IN, H, 2)
        tmod.load_state_dict({n: torch.from_numpy(np.array(v[k])) for n, v in sd.items()})
        with torch.no_grad():
            t_out, t_hn = tmod(torch.from_numpy(x))
        assert_close((out[k], h_n[k]), (t_out.numpy(), t_hn.numpy()), what=f"member {k}")


# ---------------------------------------------------------------------------------------------
# eval_shape


@pytest.mark.parametrize(
    "mode,shape,kwargs",
    [
        ("LSTM", (N, T, IN), dict(batch_first=True, bidirectional=True, proj_size=2, num_layers=2)),
        ("GRU", (T, IN), dict(num_layers=3)),
    ],
)
def test_eval_shape_matches_a_real_run(mode, shape, kwargs):
    tmod = torch_layer(mode, IN, H, **kwargs)
    params = jaxrnn.state_dict_to_params(tmod.state_dict())
    bf = kwargs.get("batch_first", False)

    def run(params, x):
        return F.rnn(params, x, mode=mode, batch_first=bf, remat=True)

    x = np.ones(shape, np.float32)
    abstract = jax.eval_shape(run, params, jax.ShapeDtypeStruct(shape, jnp.bfloat16))
    real = run(params, x.astype(jnp.bfloat16))
    assert jax.tree.map(lambda a: (a.shape, a.dtype), abstract) == jax.tree.map(
        lambda a: (a.shape, a.dtype), real
    )
    with torch.no_grad():
        want = tmod(torch.from_numpy(x))
    assert jax.tree.map(lambda a: a.shape, real) == jax.tree.map(lambda t: tuple(t.shape), want)
    # the real run's values are torch's too (float32), on the ones and on a random input
    real32 = run(params, x)
    assert_close(real32, jax.tree.map(lambda t: t.numpy(), tuple(want)), what="ones input")
    xr = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    with torch.no_grad():
        want_r = tmod(torch.from_numpy(xr))
    assert_close(
        run(params, xr), jax.tree.map(lambda t: t.numpy(), tuple(want_r)), what="random input"
    )


def test_eval_shape_of_module_construction():
    """Abstract init for both front-ends: shapes without allocating or drawing weights."""
    m = nnx.eval_shape(lambda: jaxrnn.LSTM(IN, H, 2, bidirectional=True, rngs=nnx.Rngs(0)))
    assert m.weight_ih_l1_reverse.shape == (4 * H, 2 * H)
    assert all(isinstance(a, jax.ShapeDtypeStruct) for a in jax.tree.leaves(nnx.state(m)))
    x = jax.ShapeDtypeStruct((T, N, IN), jnp.float32)
    variables = jax.eval_shape(jrl.GRU(IN, H).init, jax.random.key(0), x)
    assert variables["params"]["weight_hh_l0"].shape == (3 * H, H)


# ---------------------------------------------------------------------------------------------
# long sequences


def test_100k_step_sequence_forward_and_backward():
    """A 100,000-step sequence through a small LSTM, with remat: values and gradients match
    torch (a sum over 100k steps, so compared relative to its largest entry)."""
    length = 100_000
    tmod = torch_layer("LSTM", 2, 4)
    x = np.random.default_rng(6).standard_normal((length, 1, 2)).astype(np.float32)
    w_out = np.full((length, 1, 4), 1e-3, np.float32)
    t_out, t_hn, t_gp, t_gx = _torch_grads(tmod, x, w_out=w_out)  # one thread: see fixture
    params = jaxrnn.state_dict_to_params(tmod.state_dict())
    loss = _loss("LSTM", w_out, remat=True)
    (_, (out, h_n)), (g_p, g_x) = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(params, x)
    assert out.shape == (length, 1, 4) and np.isfinite(out).all()
    assert_close(out, t_out, 1e-5, 1e-5, "output")
    assert_close(h_n, t_hn, 1e-5, 1e-5, "h_n")
    for k, g in t_gp.items():
        scale = np.max(np.abs(g))
        assert np.max(np.abs(np.asarray(g_p[k]) - g)) <= 1e-4 * scale, k
    assert_close(g_x, t_gx, 1e-5, 1e-5, "grad input")


# ---------------------------------------------------------------------------------------------
# remat memory


def _temp_bytes(length, remat, hidden=16):
    """Compiled temporary memory of d(sum(h_n))/d(params) over a ``length``-step LSTM."""
    shapes = layer_param_shapes("LSTM", 4, hidden)
    params = {k: jax.ShapeDtypeStruct(v, jnp.float32) for k, v in shapes.items()}
    x = jax.ShapeDtypeStruct((length, 1, 4), jnp.float32)

    def loss(params, x):
        return jnp.sum(F.rnn(params, x, mode="LSTM", remat=remat)[1][0])

    compiled = jax.jit(jax.grad(loss)).lower(params, x).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_remat_temporary_memory_grows_sublinearly():
    """16x the length: without remat temporary memory grows ~16x (linear, 10x here: the input
    projections take a constant window, see ``_fused_forward._projection_chunk``), with remat
    well under 8x (chunks of sqrt(L): ~5x)."""
    short, long_ = 256, 4096
    plain = _temp_bytes(long_, False) / _temp_bytes(short, False)
    chunked = _temp_bytes(long_, True) / _temp_bytes(short, True)
    assert plain > 8, plain  # the baseline grows past remat's bound, so the test can tell
    assert chunked < 8, chunked
    assert _temp_bytes(long_, True) < _temp_bytes(long_, False) / 4


@pytest.mark.parametrize("first", [True, 1], ids=["flag_first", "chunk_of_one_first"])
def test_remat_flag_and_a_chunk_of_one_are_compiled_apart(first):
    """``remat=True`` (chunks of ``ceil(sqrt(L))`` steps, checkpointed) and ``remat=1`` (chunks
    of one step: the plain scan, nothing checkpointed) are equal in Python (``True == 1``) but
    not the same program: whichever a process traces first, the other keeps its own. Counted
    in the eager backward's residuals, which remat exists to shrink."""
    params = {k: jnp.full(s, 0.1) for k, s in layer_param_shapes("LSTM", IN, H).items()}
    x = jnp.ones((64, N, IN))

    def saved(remat):
        _, vjp = jax.vjp(lambda p: jnp.sum(F.rnn(p, x, mode="LSTM", remat=remat)[0]), params)
        return sum(leaf.nbytes for leaf in jax.tree.leaves(vjp))

    order = [first, 1 if first is True else True]
    sizes = dict(zip(map(repr, order), map(saved, order)))
    assert sizes["True"] < sizes["1"] / 2, sizes


def test_linen_layers_under_flax_introspection_and_lifted_transforms():
    """Flax's ``tabulate`` and ``capture_intermediates`` work on a model holding a Linen layer;
    ``deterministic`` as a module attribute survives ``nn.vmap`` (which drops call keywords):
    an ensemble's dropout is on in training and off in eval, each member as its torch twin."""
    import flax.linen as nn

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(jrl.LSTM(3, 4, 2)(x)[0])

    x = jnp.ones((5, 2, 3))
    table = Model().tabulate(jax.random.key(0), x)
    assert "LSTM" in table and "weight_ih_l1" in table
    variables = Model().init(jax.random.key(0), x)
    _, state = Model().apply(variables, x, capture_intermediates=True)
    assert "intermediates" in state
    lstm_out = state["intermediates"]["LSTM_0"]["__call__"][0][0]  # the LSTM's own output
    assert lstm_out.shape == (5, 2, 4)
    assert_close(
        nn.Dense(2).apply({"params": variables["params"]["Dense_0"]}, lstm_out),
        Model().apply(variables, x),
    )

    members = 3
    ensemble = nn.vmap(
        jrl.GRU,
        variable_axes={"params": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=0,
    )
    xs = jnp.asarray(np.random.default_rng(0).standard_normal((members, 5, 2, 4)), jnp.float32)
    train = ensemble(4, 6, 2, dropout=0.5, deterministic=False)
    evaluate = ensemble(4, 6, 2, dropout=0.5, deterministic=True)
    variables = train.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, xs)
    dropped = train.apply(variables, xs, rngs={"dropout": jax.random.key(2)})[0]
    kept = evaluate.apply(variables, xs)[0]
    assert not np.allclose(dropped, kept)
    for i in range(members):  # eval: each member is its torch twin
        module = torch_layer("GRU", 4, 6, num_layers=2, dropout=0.5)
        params = jax.tree.map(lambda p, i=i: p[i], variables["params"])
        module.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in params.items()})
        module.eval()
        want = module(torch.tensor(np.asarray(xs[i])))[0].detach().numpy()
        np.testing.assert_allclose(kept[i], want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match='"deterministic" was passed to the constructor and'):
        jrl.GRU(4, 6, 2, deterministic=True).apply(
            {"params": jax.tree.map(lambda p: p[0], variables["params"])},
            xs[0],
            deterministic=False,
        )


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
def test_export_with_symbolic_time_and_batch_matches_torch(mode):
    """``jax.export`` with ``symbolic_shape("t, b, I")``: the fused path's tuning compares sizes,
    so symbolic ones take the plain scan; the exported program, called with other sizes than any
    traced, gives torch's outputs (2-layer bidirectional, variable lengths)."""
    from jax import export

    rng = np.random.default_rng(2)
    tmod = torch_layer(mode, IN, H, num_layers=2, bidirectional=True)
    m = jaxrnn.from_torch(tmod)
    graphdef, params, rest = nnx.split(m, nnx.Param, ...)
    fn = jax.jit(lambda p, x, n: nnx.merge(graphdef, p, rest)(x, seq_lengths=n)[0])
    t, b = export.symbolic_shape("t, b")
    exported = export.export(fn)(
        params,
        jax.ShapeDtypeStruct((t, b, IN), jnp.float32),
        jax.ShapeDtypeStruct((b,), jnp.int32),
    )
    for steps, lengths in ((T, [T, 4, 1]), (4, [2, 4, 4, 1, 3])):
        x = rng.standard_normal((steps, len(lengths), IN)).astype(np.float32)
        w_out = np.zeros((steps, len(lengths), 2 * H), np.float32)
        want = _torch_grads(tmod, x, lengths=np.array(lengths), w_out=w_out)[0]
        assert_close(exported.call(params, x, np.array(lengths, np.int32)), want, what="output")


def test_remat_with_a_symbolic_length_says_so():
    from jax import export

    m = jaxrnn.GRU(IN, H, remat=True, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(m, nnx.Param, ...)
    fn = jax.jit(lambda p, x: nnx.merge(graphdef, p, rest)(x)[0])
    spec = jax.ShapeDtypeStruct(export.symbolic_shape(f"t, b, {IN}"), jnp.float32)
    with pytest.raises(ValueError, match="GRU: remat needs a concrete sequence length"):
        export.export(fn)(params, spec)
    spec = jax.ShapeDtypeStruct(export.symbolic_shape(f"{T}, b, {IN}"), jnp.float32)
    exported = export.export(fn)(params, spec)  # a symbolic batch alone is fine
    t = jaxrnn.to_torch(m)
    x = np.random.default_rng(3).standard_normal((T, 2, IN)).astype(np.float32)
    assert_close(exported.call(params, x), t(torch.from_numpy(x))[0].detach().numpy())


# ---------------------------------------------------------------------------------------------
# strict JAX settings and eager calls


@pytest.mark.parametrize(
    "mode,hidden,batch,kwargs",
    [
        ("RNN_TANH", 256, 32, {}),  # the fused path, batch-major
        ("LSTM", 8, 4, {"bidirectional": True}),  # fused, batch-major, both directions
        ("GRU", 256, 32, {}),  # fused, feature-major
        ("LSTM", 8, 4, {"remat": True, "proj_size": 3}),  # the rematerialised scan
    ],
)
def test_layers_under_rank_promotion_raise_match_torch(mode, hidden, batch, kwargs):
    """``jax_numpy_rank_promotion='raise'`` (set by careful codebases, which Flax's own layers
    pass): no implicit broadcast inside jaxrnn, forward and gradients, layers and cells, and the
    numbers are torch's."""
    remat = kwargs.pop("remat", False)
    rng = np.random.default_rng(0)
    tmod = torch_layer(mode, IN, hidden, **kwargs)
    x = rng.standard_normal((T, batch, IN)).astype(np.float32)
    dirs = 2 if kwargs.get("bidirectional") else 1
    w_out = rng.standard_normal((T, batch, dirs * (kwargs.get("proj_size") or hidden)))
    t_out, t_hn, t_gp, t_gx = _torch_grads(tmod, x, w_out=w_out.astype(np.float32))
    params = jaxrnn.state_dict_to_params(tmod.state_dict())
    loss = _loss(mode, w_out.astype(np.float32), remat=remat, seq_lengths=np.full(batch, T))
    with jax.numpy_rank_promotion("raise"):
        (_, (out, h_n)), (g_p, g_x) = jax.value_and_grad(loss, (0, 1), has_aux=True)(params, x)
        cell = jaxrnn.from_torch(torch_cell(mode, IN, hidden))
        h = cell(jnp.asarray(x[0]))
        lin = jrl.GRUCell(IN, hidden)
        lin.apply(lin.init(jax.random.key(0), x[0]), x[0])
    assert_close(out, t_out, what="output")
    assert_close(h_n, t_hn, what="h_n")
    assert_close(g_p, t_gp, 2e-5, 2e-5, what="grad params")
    assert_close(g_x, t_gx, 2e-5, 2e-5, what="grad input")
    with torch.no_grad():
        assert_close(
            h,
            jax.tree.map(lambda t: t.numpy(), torch_cell(mode, IN, hidden)(torch.from_numpy(x[0]))),
        )


@pytest.mark.parametrize("remat", [False, True])
def test_eager_calls_compile_once(remat):
    """An eager call of the same shapes compiles nothing new, on the fused path and on the
    rematerialised scan (which traced fresh closures, so compiled, on every call)."""
    import logging

    compiles = []

    class Count(logging.Handler):
        def emit(self, record):
            if "Finished XLA compilation" in record.getMessage():
                compiles.append(record)

    tmod = torch_layer("LSTM", IN, H, num_layers=2, bidirectional=True)
    m = jaxrnn.from_torch(tmod, remat=remat)
    x = np.random.default_rng(0).standard_normal((T, N, IN)).astype(np.float32)
    with torch.no_grad():
        want = tmod(torch.from_numpy(x))
    logger, handler = logging.getLogger("jax"), Count()
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            runs = []
            for _ in range(3):
                before = len(compiles)
                out, (h_n, c_n) = m(jnp.asarray(x))
                runs.append(len(compiles) - before)
    finally:
        logger.removeHandler(handler)
    assert runs[0] > 0 and runs[1:] == [0, 0], runs  # the counter sees the first call's
    assert_close((out, h_n, c_n), (want[0].numpy(), want[1][0].numpy(), want[1][1].numpy()))


def test_remat_numpy_true_is_remat_true():
    """``remat=np.True_`` (a numpy bool, which the argument check accepts) rematerialises in
    ``sqrt(L)`` chunks as ``True`` does (``int()`` of it made chunks of one step: no remat)."""
    tmod = torch_layer("GRU", IN, H)
    params = jaxrnn.state_dict_to_params(tmod.state_dict())
    x = np.zeros((16, N, IN), np.float32)

    def program(remat):
        return str(jax.make_jaxpr(lambda p, x: F.rnn(p, x, mode="GRU", remat=remat))(params, x))

    assert program(np.True_) == program(True) != program(False)
