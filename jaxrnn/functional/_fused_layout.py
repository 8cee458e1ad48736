"""The fused layer's loop layouts (see :mod:`jaxrnn.functional._fused`): per-step blocks of the
buffers for all steps, hidden-unit groups, and matmuls in either layout.

``fm``: the loops are feature-major, per-step arrays ``(features, N)``; else batch-major,
``(N, features)``. Every dynamic index is declared in range (``allow_negative_indices=False``): no
index normalisation per step.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

# Elements of a step's output block up to which feature-major loops transpose it per step (see
# _outputs_batch_major).
_STEP_TRANSPOSE_MAX = 8192

# The gate-gradient buffers of the backward, per mode, as ``(blocks, first gate, roles)``: the
# per-step blocks a buffer holds, the gate (row block of ``W_ih``/``W_hh``) its first block
# belongs to, and which weights its gradients reach. LSTM and GRU training steps keep four
# activation blocks per step (i, f, g, o; r, z, n, hn) in these same buffers, and the backward
# overwrites each step's activations with its gradients (di, df, dg, do; dr, dz | dn * r | dn):
# one buffer per role, so that every weight-gradient matmul reads a whole buffer (a slice of
# one would be copied first).
_GRADIENT_BUFFERS = {
    "LSTM": (((0, 1, 2, 3), 0, ("hh", "ih")),),
    "GRU": (((0, 1), 0, ("hh", "ih")), ((2,), 2, ("hh",)), ((3,), 2, ("ih",))),
    "RNN_TANH": (((0,), 0, ("hh", "ih")),),
    "RNN_RELU": (((0,), 0, ("hh", "ih")),),
}


def _at(a, t, axis=0):
    return lax.dynamic_index_in_dim(a, t, axis, keepdims=False, allow_negative_indices=False)


def _put(buf, value, t, axis=0):
    return lax.dynamic_update_index_in_dim(buf, value, t, axis, allow_negative_indices=False)


def _put_at(buf, value, start):
    return lax.dynamic_update_slice(buf, value, start, allow_negative_indices=False)


def _gate_buffer(seq_len, rows, like, fm, step_major):
    """A buffer of per-step gate blocks for all steps: ``(rows, L, N)`` feature-major, ``(L, rows,
    N)`` feature-major and step-major, ``(L, N, rows)`` batch-major (``like``: one step's
    ``(H, N)`` or ``(N, H)`` array, in the loop layout)."""
    batch = like.shape[-1] if fm else like.shape[0]
    if fm:
        shape = (seq_len, rows, batch) if step_major else (rows, seq_len, batch)
    else:
        shape = (seq_len, batch, rows)
    return _zeros(shape, like)


def _zeros(shape, like):
    """Zeros of ``like``'s dtype that vary over the mesh axes ``like`` varies over inside
    ``jax.shard_map`` (a loop's carries must keep their type; ``jnp.zeros`` would not vary)."""
    return lax.full_like(like, 0, shape=shape)


def _block_start(row, t, fm, step_major):
    if fm:
        return (t, row, 0) if step_major else (row, t, 0)
    return (t, 0, row)


def _put_block(buf, value, row, t, fm, step_major):
    """Write one step's ``(rows, N)`` (batch-major ``(N, rows)``) block at gate row ``row`` of
    step ``t`` of a :func:`_gate_buffer`."""
    value = value[:, None] if fm and not step_major else value[None]
    return _put_at(buf, value, _block_start(row, t, fm, step_major))


def _get_block(buf, row, rows, t, fm, step_major):
    """The ``(rows, N)`` (batch-major ``(N, rows)``) block at gate row ``row`` of step ``t``."""
    if fm:
        batch = buf.shape[2]
        sizes = (1, rows, batch) if step_major else (rows, 1, batch)
    else:
        sizes = (1, buf.shape[1], rows)
    start = _block_start(row, t, fm, step_major)
    block = lax.dynamic_slice(buf, start, sizes, allow_negative_indices=False)
    return block.reshape((rows, sizes[2]) if fm else (sizes[1], rows))


def _group_rows(w, num_gates, groups):
    """The gate rows of a direction's weights and biases reordered group-major: group ``s``'s
    rows (gate-major within it, the units ``s*H/S ... (s+1)*H/S - 1`` of every gate) become the
    contiguous block ``s*G*H/S ... (s+1)*G*H/S - 1``. A reshape and a transpose, so gradients
    flow back to torch's order."""
    out = dict(w)
    for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        v = w[k]
        if v is not None:
            rows = v.shape[0]
            v = v.reshape(num_gates, groups, rows // (num_gates * groups), *v.shape[1:])
            out[k] = jnp.swapaxes(v, 0, 1).reshape(rows, *v.shape[3:])
    return out


def _group(w, s, groups):
    """Group ``s``'s rows of weights ordered by :func:`_group_rows` (all of them for one group)."""
    if groups == 1:
        return w
    out = dict(w)
    for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        if w[k] is not None:
            rows = w[k].shape[0] // groups
            out[k] = lax.slice_in_dim(w[k], s * rows, (s + 1) * rows)
    return out


def _features(a, fm):
    """The feature axis of a per-step array: 0 feature-major ``(F, N)``, 1 batch-major."""
    return 0 if fm else a.ndim - 1


def _put_rows(buf, value, t, row, fm):
    """Write step ``t``'s ``value`` (``(F, N)``; batch-major ``(N, F)``) at feature ``row`` of a
    per-step buffer ``(L, H, N)`` (batch-major ``(L, N, H)``)."""
    return _put_at(buf, value[None], (t, row, 0) if fm else (t, 0, row))


def _get_rows(buf, t, row, rows, fm):
    """Features ``row ... row + rows - 1`` of step ``t`` of a per-step buffer."""
    if fm:
        start, sizes = (t, row, 0), (1, rows, buf.shape[2])
    else:
        start, sizes = (t, 0, row), (1, buf.shape[1], rows)
    return lax.dynamic_slice(buf, start, sizes, allow_negative_indices=False)[0]


def _outputs_batch_major(fm, features, batch):
    """Whether the loops keep the layer's output ``h`` (and, in the backward, its gradient)
    batch-major, ``(L, N, H)``, as the layer returns it: always batch-major loops, and
    feature-major ones up to ``_STEP_TRANSPOSE_MAX`` elements per step, which transpose each
    step's block as they write or read it; larger ones keep ``(L, H, N)`` and transpose the
    whole buffer once (interleaved A/B: per-step transposes made the LSTM 128,32,128,256
    training step 1.16x faster, one copy of the buffer less; the 2-layer H=512, B=64 one 0.90x)."""
    return not fm or features * batch <= _STEP_TRANSPOSE_MAX


def _put_out(buf, value, t, row, fm, out_bm):
    """Write step ``t``'s ``value`` (loop layout) at feature ``row`` of a per-step output
    buffer, batch-major ``(L, N, H)`` if ``out_bm`` (see :func:`_outputs_batch_major`), else in
    the loop layout."""
    if fm and out_bm:
        return _put_rows(buf, value.T, t, row, False)
    return _put_rows(buf, value, t, row, fm)


def _get_out(buf, t, row, rows, fm, out_bm):
    """Features ``row ... row + rows - 1`` of step ``t`` of a per-step output buffer (see
    :func:`_put_out`), in the loop layout."""
    if fm and out_bm:
        return _get_rows(buf, t, row, rows, False).T
    return _get_rows(buf, t, row, rows, fm)


def _mm(a, b, precision):
    return jnp.matmul(a, b, precision=precision)


def _loop(a, fm):
    """A batch-major ``(..., N, F)`` array in the loop layout (feature-major: ``(..., F, N)``),
    and back (the same swap)."""
    return jnp.swapaxes(a, -1, -2) if fm else a


def _lin(w, v, fm, precision):
    """``w @ v`` feature-major, ``v @ w`` batch-major (``w`` prepared by :func:`_oriented`)."""
    return _mm(w, v, precision) if fm else _mm(v, w, precision)


def _oriented(w, fm):
    """A torch ``(out, in)`` weight as :func:`_lin` uses it: as stored, or transposed."""
    return None if w is None else (w if fm else w.T)


def _gates(w, num_gates):
    """Split a ``(G*H, ...)`` weight or ``(G*H,)`` bias into its ``G`` gate blocks."""
    return None if w is None else jnp.split(w, num_gates, axis=0)


def _shifted(hs, h0, reverse):
    """The state before each step: ``h0`` then ``hs[:-1]`` (reverse direction: the mirror)."""
    if reverse:
        return jnp.concatenate([hs[1:], h0[None]], axis=0)
    return jnp.concatenate([h0[None], hs[:-1]], axis=0)


def _split_state(mode, state, d, fm, groups=1):
    """Direction ``d`` of a batch-major state stack, in the loop layout, as one state per unit
    group (a list)."""
    parts = [state[0][d], state[1][d]] if mode == "LSTM" else [state[d]]
    parts = [jnp.split(_loop(p, fm), groups, axis=_features(p, fm)) for p in parts]
    return list(zip(*parts)) if mode == "LSTM" else parts[0]


def _join(parts, fm):
    """Per-group ``(F/S, N)`` (batch-major ``(N, F/S)``) arrays as one."""
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=_features(parts[0], fm))
