"""Variable-length sequences through the recurrent layers, against torch's packed sequences.

The oracle is torch's ``pack_padded_sequence -> module -> pad_packed_sequence`` with the same
weights and inputs; jaxrnn runs the same pipeline (and the ``seq_lengths=`` spelling) under
``nnx.jit``/``jax.jit`` with traced lengths, and a second call with other lengths must reuse the
compiled function.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.utils.rnn as tr
from flax import nnx

import jaxrnn
import jaxrnn.linen
from jaxrnn import functional as F
from jaxrnn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

T, B, H_IN, H = 5, 4, 3, 4
# unsorted, with length 1, the full length and (second set) a tie
LENGTHS = (np.array([2, 5, 1, 4]), np.array([3, 1, 5, 3]))
TOL = dict(rtol=2e-5, atol=2e-5)

# (mode, proj_size): every mode, and LSTM with a projection
MODES = [("RNN_TANH", 0), ("RNN_RELU", 0), ("LSTM", 0), ("LSTM", 2), ("GRU", 0)]
# (path, batch_first, with hx). Each configuration compiles one program with three variants: two
# packed ones (between them both batch_first values and both with/without hx) and one through
# seq_lengths=; over the four (layers, bidirectional) cases of a mode the packed pipeline meets
# every batch_first x hx combination twice and seq_lengths= each once.
PACKED_PAIRS = [
    [("packed", False, False), ("packed", True, True)],
    [("packed", False, True), ("packed", True, False)],
]
SEQ_LENGTHS = [
    ("seq_lengths", f, h) for f, h in ((False, True), (True, False), (False, False), (True, True))
]


def variants(layers, bidirectional):
    k = 2 * (layers - 1) + int(bidirectional)
    return PACKED_PAIRS[k % 2] + [SEQ_LENGTHS[k]]


def torch_module(mode, proj, layers, bidirectional, seed=0):
    torch.manual_seed(seed)
    kwargs = dict(num_layers=layers, bidirectional=bidirectional)
    if mode.startswith("RNN"):
        return torch.nn.RNN(H_IN, H, nonlinearity=mode[4:].lower(), **kwargs)
    if mode == "LSTM":
        return torch.nn.LSTM(H_IN, H, proj_size=proj, **kwargs)
    return torch.nn.GRU(H_IN, H, **kwargs)


def state_shapes(mode, proj, layers, bidirectional):
    lead = layers * (2 if bidirectional else 1)
    if mode == "LSTM":
        return ((lead, B, proj or H), (lead, B, H))
    return ((lead, B, H),)


def padded_input(rng, lengths):
    """Time-major ``(T, B, H_in)`` with NaN at every padded step (it must not leak)."""
    x = rng.standard_normal((T, B, H_IN)).astype(np.float32)
    x[np.arange(T)[:, None] >= lengths[None, :]] = np.nan
    return x


def layout(a, batch_first):
    return np.swapaxes(a, 0, 1) if batch_first else a


def as_hx(mode, states):
    return tuple(states) if mode == "LSTM" else states[0]


def torch_pipeline(module, mode, x_tm, lengths, hx_states, batch_first, w_out, w_states):
    """Torch: pack -> module -> pad; outputs and gradients of a weighted sum of them."""
    module.batch_first = batch_first
    module.zero_grad()
    x = torch.tensor(layout(x_tm, batch_first), requires_grad=True)
    hx = [torch.tensor(s, requires_grad=True) for s in hx_states] if hx_states else None
    packed = tr.pack_padded_sequence(
        x, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=False
    )
    out, h_n = module(packed, None if hx is None else as_hx(mode, hx))
    padded, out_lengths = tr.pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    states = h_n if mode == "LSTM" else (h_n,)
    loss = (padded * torch.tensor(layout(w_out, batch_first))).sum()
    loss = loss + sum((s * torch.tensor(w)).sum() for s, w in zip(states, w_states, strict=True))
    loss.backward()
    return dict(
        out=padded.detach().numpy(),
        lengths=out_lengths.numpy(),
        states=[s.detach().numpy() for s in states],
        g_x=x.grad.numpy(),
        g_hx=None if hx is None else [h.grad.numpy() for h in hx],
        g_params={k: p.grad.numpy().copy() for k, p in module.named_parameters()},
    )


def jax_variant(model, mode, path, batch_first, x, hx, lengths):
    if path == "packed":
        packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
        out, h_n = model(packed, hx)
        assert isinstance(out, PackedSequence)
        padded, out_lengths = pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    else:
        padded, h_n = model(x, hx, seq_lengths=lengths)
        out_lengths = lengths
    return padded, out_lengths, (h_n if mode == "LSTM" else (h_n,))


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("layers", [1, 2], ids=["l1", "l2"])
@pytest.mark.parametrize("mode,proj", MODES, ids=[f"{m}{'-proj' if p else ''}" for m, p in MODES])
def test_packed_parity_grid(mode, proj, layers, bidirectional):
    """The variants of one configuration in one nnx.jit program, called with two sets of lengths."""
    module = torch_module(mode, proj, layers, bidirectional)
    VARIANTS = variants(layers, bidirectional)
    models = []
    for _, batch_first, _ in VARIANTS:  # one copy per variant so each gets its own gradient
        module.batch_first = batch_first
        models.append(jaxrnn.from_torch(module))
    shapes = state_shapes(mode, proj, layers, bidirectional)
    rng = np.random.default_rng(layers * 10 + bidirectional)
    d_out = (proj or H) * (2 if bidirectional else 1)
    w_out = [rng.standard_normal((T, B, d_out)).astype(np.float32) for _ in VARIANTS]
    w_states = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in VARIANTS]
    traces = []

    @nnx.jit
    def run(models, xs, hxs, lengths):
        traces.append(1)

        def loss(models, xs, hxs):
            total, results = 0.0, []
            for (path, bf, _), model, x, hx, wo, ws in zip(
                VARIANTS, models, xs, hxs, w_out, w_states, strict=True
            ):
                padded, out_lengths, states = jax_variant(model, mode, path, bf, x, hx, lengths)
                total += (padded * layout(wo, bf)).sum()
                total += sum((s * w).sum() for s, w in zip(states, ws, strict=True))
                results.append((padded, out_lengths, states))
            return total, results

        grad = nnx.grad(loss, argnums=(0, 1, 2), has_aux=True)
        return grad(models, xs, hxs)

    for lengths in LENGTHS:
        x_tm = padded_input(rng, lengths)
        hx_states = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        xs = [jnp.asarray(layout(x_tm, bf)) for _, bf, _ in VARIANTS]
        hxs = [as_hx(mode, hx_states) if with_hx else None for _, _, with_hx in VARIANTS]
        (g_models, g_xs, g_hxs), results = run(models, xs, hxs, jnp.asarray(lengths))
        for i, (path, bf, with_hx) in enumerate(VARIANTS):
            ref = torch_pipeline(
                module,
                mode,
                x_tm,
                lengths,
                hx_states if with_hx else None,
                bf,
                w_out[i],
                w_states[i],
            )
            padded, out_lengths, states = results[i]
            where = f"{path} batch_first={bf} hx={with_hx} lengths={lengths.tolist()}"
            np.testing.assert_allclose(padded, ref["out"], **TOL, err_msg=where)
            np.testing.assert_array_equal(out_lengths, ref["lengths"], err_msg=where)
            for s, r in zip(states, ref["states"], strict=True):
                np.testing.assert_allclose(s, r, **TOL, err_msg=where)
            np.testing.assert_allclose(g_xs[i], ref["g_x"], **TOL, err_msg=where)
            grads = nnx.to_pure_dict(g_models[i])
            assert set(grads) == set(ref["g_params"])
            for k, g in ref["g_params"].items():
                np.testing.assert_allclose(grads[k], g, **TOL, err_msg=f"{where} {k}")
            if with_hx:
                g_hx = g_hxs[i] if mode == "LSTM" else (g_hxs[i],)
                for g, r in zip(g_hx, ref["g_hx"], strict=True):
                    np.testing.assert_allclose(g, r, **TOL, err_msg=where)
    assert len(traces) == 1, "a second set of lengths must reuse the compiled function"


@pytest.mark.parametrize(
    "mode,proj,layers,bidirectional", [("LSTM", 2, 2, True), ("GRU", 0, 1, False)]
)
def test_seq_lengths_functional_jax_jit(mode, proj, layers, bidirectional):
    """``functional.rnn(..., seq_lengths=)`` under jax.jit: outputs and gradients, one trace."""
    chex.clear_trace_counter()
    module = torch_module(mode, proj, layers, bidirectional, seed=1)
    params = jaxrnn.from_torch(module).torch_params()
    shapes = state_shapes(mode, proj, layers, bidirectional)
    rng = np.random.default_rng(7)
    d_out = (proj or H) * (2 if bidirectional else 1)
    w_out = rng.standard_normal((T, B, d_out)).astype(np.float32)
    w_states = [rng.standard_normal(s).astype(np.float32) for s in shapes]

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(params, x, hx, lengths):
        def loss(params, x, hx):
            out, h_n = F.rnn(params, x, hx, mode=mode, batch_first=True, seq_lengths=lengths)
            states = h_n if mode == "LSTM" else (h_n,)
            total = (out * layout(w_out, True)).sum()
            return total + sum((s * w).sum() for s, w in zip(states, w_states, strict=True)), (
                out,
                states,
            )

        return jax.grad(loss, argnums=(0, 1, 2), has_aux=True)(params, x, hx)

    for lengths in LENGTHS:
        x_tm = padded_input(rng, lengths)
        hx_states = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        (g_p, g_x, g_hx), (out, states) = run(
            params, jnp.asarray(layout(x_tm, True)), as_hx(mode, hx_states), jnp.asarray(lengths)
        )
        ref = torch_pipeline(module, mode, x_tm, lengths, hx_states, True, w_out, w_states)
        np.testing.assert_allclose(out, ref["out"], **TOL)
        for s, r in zip(states, ref["states"], strict=True):
            np.testing.assert_allclose(s, r, **TOL)
        np.testing.assert_allclose(g_x, ref["g_x"], **TOL)
        for k, g in ref["g_params"].items():
            np.testing.assert_allclose(g_p[k], g, **TOL, err_msg=k)
        for g, r in zip(g_hx if mode == "LSTM" else (g_hx,), ref["g_hx"], strict=True):
            np.testing.assert_allclose(g, r, **TOL)


@pytest.mark.parametrize("enforce_sorted", [False, True])
def test_packed_output_fields_match_torch(enforce_sorted):
    """Outside jit the output PackedSequence has torch's exact data, batch_sizes and indices."""
    module = torch_module("LSTM", 2, 2, True, seed=2)
    model = jaxrnn.from_torch(module)
    rng = np.random.default_rng(3)
    lengths = np.array([5, 4, 2, 1]) if enforce_sorted else LENGTHS[0]
    x = padded_input(rng, lengths)
    ours = pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
    theirs = tr.pack_padded_sequence(torch.tensor(x), lengths, enforce_sorted=enforce_sorted)
    out, (h_n, c_n) = model(ours)
    with torch.no_grad():
        ref, (ref_h, ref_c) = module(theirs)
    np.testing.assert_allclose(out.data, ref.data.numpy(), **TOL)
    np.testing.assert_array_equal(out.batch_sizes, ref.batch_sizes.numpy())
    for mine, torchs in (
        (out.sorted_indices, ref.sorted_indices),
        (out.unsorted_indices, ref.unsorted_indices),
    ):
        if torchs is None:
            assert mine is None
        else:
            np.testing.assert_array_equal(mine, torchs.numpy())
    np.testing.assert_allclose(h_n, ref_h.numpy(), **TOL)
    np.testing.assert_allclose(c_n, ref_c.numpy(), **TOL)


def test_linen_packed_and_seq_lengths():
    """The Linen modules get packed input for free: a bidirectional GRU under jax.jit."""
    module = torch_module("GRU", 0, 2, True, seed=4)
    params = {"params": jaxrnn.from_torch(module).torch_params()}
    model = jaxrnn.linen.GRU(H_IN, H, num_layers=2, bidirectional=True)
    rng = np.random.default_rng(5)
    lengths = LENGTHS[0]
    x = padded_input(rng, lengths)
    h0 = rng.standard_normal((4, B, H)).astype(np.float32)

    @jax.jit
    def run(params, x, h0, lengths):
        out, h_n = model.apply(params, pack_padded_sequence(x, lengths, enforce_sorted=False), h0)
        padded, _ = pad_packed_sequence(out, total_length=T)
        out2, h_n2 = model.apply(params, x, h0, seq_lengths=lengths)
        return padded, h_n, out2, h_n2

    padded, h_n, out2, h_n2 = run(params, x, h0, jnp.asarray(lengths))
    with torch.no_grad():
        packed = tr.pack_padded_sequence(torch.tensor(x), lengths, enforce_sorted=False)
        ref, ref_h = module(packed, torch.tensor(h0))
        ref, _ = tr.pad_packed_sequence(ref, total_length=T)
    for o in (padded, out2):
        np.testing.assert_allclose(o, ref.numpy(), **TOL)
    for h in (h_n, h_n2):
        np.testing.assert_allclose(h, ref_h.numpy(), **TOL)


def test_zero_lengths_give_initial_state():
    """A 0 length (allowed by seq_lengths= and traced packed lengths, not by torch's packing):
    zero outputs and h_n = h_0, gradient identity to h_0; the other sequences match torch."""
    module = torch_module("LSTM", 2, 2, True, seed=6)
    params = jaxrnn.from_torch(module).torch_params()
    rng = np.random.default_rng(8)
    lengths = np.array([3, 0, 5, 1])
    keep = lengths > 0
    x = padded_input(rng, lengths)
    hx = [rng.standard_normal(s).astype(np.float32) for s in state_shapes("LSTM", 2, 2, True)]
    w_states = [rng.standard_normal(h.shape).astype(np.float32) for h in hx]

    @jax.jit
    def run(params, x, hx, lengths):
        def loss(hx, packed):
            if packed:
                out, states = F.lstm(
                    params, pack_padded_sequence(x, lengths, enforce_sorted=False), hx
                )
                out, _ = pad_packed_sequence(out, total_length=T)
            else:
                out, states = F.lstm(params, x, hx, seq_lengths=lengths)
            return sum((s * w).sum() for s, w in zip(states, w_states, strict=True)), (out, states)

        return [jax.grad(loss, has_aux=True)(hx, packed) for packed in (False, True)]

    with torch.no_grad():
        sub = tr.pack_padded_sequence(torch.tensor(x[:, keep]), lengths[keep], enforce_sorted=False)
        ref, ref_states = module(sub, tuple(torch.tensor(h[:, keep]) for h in hx))
        ref, _ = tr.pad_packed_sequence(ref, total_length=T)
    # torch's gradient of the same loss with respect to the kept sequences' initial states
    hx_keep = tuple(torch.tensor(h[:, keep], requires_grad=True) for h in hx)
    sub = tr.pack_padded_sequence(torch.tensor(x[:, keep]), lengths[keep], enforce_sorted=False)
    _, states_keep = module(sub, hx_keep)
    sum(
        (s * torch.tensor(w[:, keep])).sum() for s, w in zip(states_keep, w_states, strict=True)
    ).backward()
    ref_g = [h.grad.numpy() for h in hx_keep]
    for g_hx, (out, states) in run(params, x, tuple(hx), jnp.asarray(lengths)):
        np.testing.assert_allclose(out[:, keep], ref.numpy(), **TOL)
        np.testing.assert_array_equal(out[:, ~keep], 0.0)
        for s, r, h, g, w in zip(states, ref_states, hx, g_hx, w_states, strict=True):
            np.testing.assert_allclose(s[:, keep], r.numpy(), **TOL)
            np.testing.assert_array_equal(s[:, ~keep], h[:, ~keep])
            np.testing.assert_array_equal(g[:, ~keep], w[:, ~keep])
        for g, r in zip(g_hx, ref_g, strict=True):
            np.testing.assert_allclose(g[:, keep], r, **TOL)


def _torch_message(fn):
    with pytest.raises(Exception) as info:
        fn()
    return str(info.value)


def test_layer_errors_on_packed_input():
    module = torch.nn.GRU(H_IN, 2)
    model = jaxrnn.from_torch(module)
    x = np.zeros((T, B, H_IN), np.float32)
    packed = pack_padded_sequence(x, [5, 3, 2, 1])
    with pytest.raises(ValueError, match="seq_lengths cannot be combined with a PackedSequence"):
        model(packed, seq_lengths=jnp.array([5, 3, 2, 1]))
    for bad_x, torch_x in (
        (np.zeros((T, B, 7), np.float32), torch.zeros(T, B, 7)),
        (np.zeros((T, B, H_IN, 1), np.float32), torch.zeros(T, B, H_IN, 1)),
    ):
        theirs = _torch_message(lambda t=torch_x: module(tr.pack_padded_sequence(t, [5, 3, 2, 1])))
        with pytest.raises(ValueError) as info:
            model(pack_padded_sequence(bad_x, [5, 3, 2, 1]))
        assert theirs in str(info.value)
    theirs = _torch_message(
        lambda: module(tr.pack_padded_sequence(torch.tensor(x), [5, 3, 2, 1]), torch.zeros(1, 3, 2))
    )
    with pytest.raises(ValueError) as info:
        model(packed, jnp.zeros((1, 3, 2)))
    assert theirs in str(info.value)


def test_seq_lengths_as_a_torch_tensor():
    """The lengths tensor a torch pipeline already has works as ``seq_lengths=`` (as for
    ``pack_padded_sequence``), with torch's packed results."""
    torch.manual_seed(0)
    module = torch.nn.GRU(3, 4, batch_first=True)
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    lengths = torch.tensor([5, 2])
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.tensor(x), lengths, batch_first=True)
    out_t, h_t = module(packed)
    out_t, _ = torch.nn.utils.rnn.pad_packed_sequence(out_t, batch_first=True)
    out, h_n = jaxrnn.from_torch(module)(jnp.asarray(x), seq_lengths=lengths)
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_n, h_t.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_lengths_as_a_list_through_jit():
    """A list of lengths passed into ``nnx.jit`` arrives as a list of tracers: seq_lengths= and
    pack_padded_sequence take it as eagerly, with torch's results."""
    torch.manual_seed(0)
    module = torch.nn.GRU(3, 4)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.tensor(x), [2, 5], enforce_sorted=False)
    out_t, _ = torch.nn.utils.rnn.pad_packed_sequence(module(packed)[0], total_length=5)
    ours = jaxrnn.from_torch(module)

    @nnx.jit
    def both(m, x, lengths):
        padded = m(x, seq_lengths=lengths)[0]
        out = m(pack_padded_sequence(x, lengths, enforce_sorted=False))[0]
        return padded, pad_packed_sequence(out, total_length=5)[0]

    for got in both(ours, jnp.asarray(x), [2, 5]):
        np.testing.assert_allclose(got, out_t.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_torchs_own_packed_sequence_is_taken():
    """A torch PackedSequence (an equivalence test packs once for both libraries) runs through
    the modules and pad_packed_sequence by its fields: torch's results, jaxrnn's PackedSequence."""
    torch.manual_seed(0)
    module = torch.nn.LSTM(3, 4, 2, bidirectional=True)
    x = torch.randn(5, 3, 3)
    packed = tr.pack_padded_sequence(x, [3, 5, 2], enforce_sorted=False)
    out_t, (h_t, c_t) = module(packed)
    out, (h_n, c_n) = jaxrnn.from_torch(module)(packed)
    assert isinstance(out, PackedSequence)
    np.testing.assert_allclose(out.data, out_t.data.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_n, h_t.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c_n, c_t.detach().numpy(), rtol=1e-5, atol=1e-6)
    padded, lengths = pad_packed_sequence(out_t)
    want, want_lengths = tr.pad_packed_sequence(out_t)
    np.testing.assert_allclose(padded, want.detach().numpy(), rtol=1e-6)
    np.testing.assert_array_equal(lengths, want_lengths.numpy())
