"""One whole layer (all its directions) with a hand-written backward: the fast path of the driver.

Autodiff of a ``lax.scan`` accumulates the weight gradients step by step inside the backward loop
(``L`` thin ``(G*H, N) @ (N, H)`` matmuls) and runs each direction of a bidirectional layer as its
own loop. Here, as cuDNN does, the forward loop saves the gate activations; the backward loop runs
the recurrence for the gate gradients only and ``dW_ih``, ``dW_hh``, the biases and ``dx`` are
then large matmuls over all steps at once. Both directions of a layer advance in the same loop
(two independent chains that XLA may run side by side) and each step's recurrent product is one
matmul for all gates. For GRU, the RNN and the batch-major LSTM (small batches, below) the input
projections are computed ahead of the steps, in windows of steps (``_projection_chunk``: an outer
loop computes a window's projections as one GEMM, an inner loop runs its steps), so that they
never take more than a window's memory; a feature-major LSTM step multiplies
``[W_ih, W_hh]`` by ``[x_t; h]`` in one matmul instead, except in the inference forward of a
bidirectional layer (:func:`_joint_step`, from interleaved timings; the backward's large matmuls
are the same either way).

A direction whose per-step product is mid-sized (``_UNIT_GROUPS``) splits its hidden units into
groups (as many as XLA has threads, two here): each group computes all gates of its units from
the whole previous ``h`` with its own rows of the weights (reordered group-major once per call,
:func:`_group_rows`), so a step is two independent products and two independent gate updates,
which XLA runs on two threads; one product of that size ran on one thread, or was split inside
the matmul library with the second thread waking up late every step. The backward mirrors it:
each group multiplies its own gate gradients by its rows of ``W_hh`` (a partial gradient of the
whole previous ``h``), and the groups' partial products are summed.

For LSTM from a batch of 8 and GRU from 32 (``_FEATURE_MAJOR_FROM``) the loops keep the state
feature-major, ``(H, N)``, so that step is ``W @ h`` with torch's weights as stored. Below, and
for the one-gate RNN, they run batch-major, ``(N, H)``, with ``h @ W.T``. Both layouts compute the
same; the choice is from timings (``benchmarks/layouts.py`` times them against each other).
Every dynamic index is declared in range (``allow_negative_indices=False``): no index
normalisation per step. Two XLA:CPU code-generation traps shape the rest: gate nonlinearities on
a dynamic slice that is then sliced again, or feeding a concatenation, compile to scalar code;
so each gate's block of a window's hoisted input projection is read with a ``dynamic_slice`` of
its own per step (never a slice of a step's slice), and feature-major the backward writes the gate gradients of a step gate by gate into a
``(G*H, N)`` scratch, which is then copied into the buffers for all steps (``(G*H, L, N)``, read
as the ``(G*H, L*N)`` operands of the weight-gradient matmuls; for large layers the buffers are
filled as ``(L, G*H, N)`` and transposed once, see ``_STEP_MAJOR_GRADIENTS_FROM``). Those buffers
are the ones in which the forward saved the gate activations (``_GRADIENT_BUFFERS``): the
backward overwrites them step by step, so a training step holds them once, not twice.

The equations are torch's (see :func:`jaxrnn.functional.step_from_gates`); the tests check the
outputs and gradients of this path against torch and against autodiff of the plain scan.

Shapes: ``x (L, N, H_in)``; per direction the weights use torch's cell names; the state is stacked
over directions, ``h (D, N, H_out)`` and ``c (D, N, H_cell)``; ``mask (L, N, 1)`` (bool) marks the
valid steps, where the state moves; on the others it stays as it was (so a reverse direction
starts at each sequence's own last valid step).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
from jax import lax

from jaxrnn import _params

# From these batch sizes the loops of LSTM and GRU run feature-major, ``(H, N)`` states and
# ``W @ h`` per step; below them, and always for the one-gate RNN, batch-major, ``(N, H)`` and
# ``h @ W.T`` (from interleaved timings, ``benchmarks/layouts.py``).
_FEATURE_MAJOR_FROM = {"LSTM": 8, "GRU": 32}

# From this many gate rows (``G*H``) a feature-major backward fills its gate-gradient buffers
# step-major, ``(L, G*H, N)``, one contiguous block per step, and transposes them once to
# ``(G*H, L, N)`` for the weight-gradient matmuls. Below, it writes ``(G*H, L, N)`` directly, a
# strided row per gate row and step, which is cheaper while those rows are few (interleaved A/B:
# the transpose cost 0.5-3% on the H=256 workloads; at LSTM H=512, 2048 rows, the strided writes
# were a tenth of the training step in profiles and step-major was 2.5-3.5% faster).
_STEP_MAJOR_GRADIENTS_FROM = 2048

# The gate-gradient buffers of the backward, per mode, as ``(blocks, first gate, roles)``: the
# per-step blocks a buffer holds, the gate (row block of ``W_ih``/``W_hh``) its first block
# belongs to, and which weights its gradients reach. LSTM and GRU training steps keep four
# activation blocks per step (i, f, g, o; r, z, n, hn) in these same buffers, and the backward
# overwrites each step's activations with its gradients (di, df, dg, do; dr, dz | dn * r | dn):
# one buffer per role, so that every weight-gradient matmul reads a whole buffer (a slice of
# one would be copied first).
# Hidden-unit groups (``layer(unit_groups=...)``): one direction's step split into independent
# products, each computing all gates of a group of units from the whole state, so that XLA runs
# them on separate threads. XLA:CPU runs one mid-sized per-step product on one thread (or hands
# half of it to a second thread that must wake up first, every step); two independent products
# keep both threads busy. On 2 cores, interleaved, forward: LSTM 128,32,128,256 1.7-1.8x, GRU
# 128,32,128,256 1.5-1.9x; no gain below about 3M or above about 40M multiply-adds per step
# (``benchmarks/run.py`` workloads: the B=4 layers lost 5-30%, the H=512 ones were level).
_UNIT_GROUPS = {"max": 2, "macs": (3_000_000, 40_000_000)}

# Steps per loop iteration of a bidirectional layer's inference forward (at least): XLA:CPU's
# thunk executor runs a loop body of at most 8 operations sequentially on one thread, and one
# step of two directions is about that size (GRU: two products, two gate updates, two output
# writes, the counter); with two steps per iteration the directions' products run side by side.
_MIN_UNROLL_BIDIRECTIONAL_INFERENCE = 2

# Columns (steps * batch) of one window of hoisted input projections (see _projection_chunk).
_PROJECTION_COLUMNS = 1024

# Elements of a step's output block up to which feature-major loops transpose it per step (see
# _outputs_batch_major).
_STEP_TRANSPOSE_MAX = 8192

_GRADIENT_BUFFERS = {
    "LSTM": (((0, 1, 2, 3), 0, ("hh", "ih")),),
    "GRU": (((0, 1), 0, ("hh", "ih")), ((2,), 2, ("hh",)), ((3,), 2, ("ih",))),
    "RNN_TANH": (((0,), 0, ("hh", "ih")),),
    "RNN_RELU": (((0,), 0, ("hh", "ih")),),
}


def feature_major_default(mode: str, batch: int) -> bool:
    """The loop layout :func:`layer` picks: feature-major for LSTM from a batch of 8 and for GRU
    from 32 (``_FEATURE_MAJOR_FROM``), batch-major otherwise."""
    return mode in _FEATURE_MAJOR_FROM and batch >= _FEATURE_MAJOR_FROM[mode]


def step_major_gradients_default(gate_rows: int, feature_major: bool) -> bool:
    """Whether a feature-major backward fills its gate-gradient buffers step-major: from
    ``_STEP_MAJOR_GRADIENTS_FROM`` gate rows (``G*H``). Batch-major they are always step-major."""
    return feature_major and gate_rows >= _STEP_MAJOR_GRADIENTS_FROM


def _cpu_count() -> int:
    """The CPUs this process may run on (XLA's thread pool has as many threads)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def unit_groups_default(mode: str, weights, batch: int) -> int:
    """The number of hidden-unit groups :func:`layer` picks (see ``_UNIT_GROUPS``): as many as
    XLA has threads, at most ``_UNIT_GROUPS["max"]``, for one direction without projection whose
    per-step product has between ``_UNIT_GROUPS["macs"]`` multiply-adds; else 1."""
    w = weights[0]
    gate_rows, hidden_out = w["weight_hh"].shape
    cols = hidden_out + (w["weight_ih"].shape[1] if mode == "LSTM" else 0)
    lo, hi = _UNIT_GROUPS["macs"]
    groups = min(_UNIT_GROUPS["max"], _cpu_count())
    hidden = gate_rows // _params.GATES[mode]
    if (
        len(weights) != 1
        or w.get("weight_hr") is not None
        or groups < 2
        or hidden % groups
        or not lo <= gate_rows * cols * batch <= hi
    ):
        return 1
    return groups


def layer(
    mode: str,
    weights,
    x,
    state0,
    mask=None,
    *,
    reverse,
    precision=None,
    unroll: int = 1,
    feature_major: bool | None = None,
    step_major_gradients: bool | None = None,
    unit_groups: int | None = None,
):
    """Run every direction of one layer; returns ``(finals, outputs)``.

    Args:
        mode: ``"RNN_TANH"``, ``"RNN_RELU"``, ``"LSTM"`` or ``"GRU"``.
        weights: one dict per direction with the cell names (``weight_ih``, ``weight_hh``,
            ``bias_ih``, ``bias_hh``, ``weight_hr``; absent ones ``None``).
        x: ``(L, N, H_in)`` time-major input, shared by the directions.
        state0: ``h_0 (D, N, H_out)``, for LSTM ``(h_0, c_0)`` with ``c_0 (D, N, H_cell)``.
        mask: optional bool ``(L, N, 1)``; ``False`` steps keep the state and output zeros.
        reverse: one bool per direction, ``True`` to run it from the last step to the first.
        precision: ``jax.lax.Precision`` of the matmuls.
        unroll: time steps per loop iteration.
        feature_major: the layout of the loops (the same results; ``None``:
            :func:`feature_major_default`).
        step_major_gradients: feature-major only, the layout of the backward's gate-gradient
            buffers while the loop fills them (the same results; ``None``:
            :func:`step_major_gradients_default`).
        unit_groups: split each direction's hidden units into this many groups, each computing
            all gates of its units from the whole state (the same results, independent work for
            XLA's threads; ``None``: :func:`unit_groups_default`). Must divide ``hidden_size``;
            not with ``proj_size``.

    Returns:
        ``finals``: per direction the state after its last step (``h`` or ``(h, c)``);
        ``outputs``: per direction ``(L, N, H_out)``, zero on masked steps.
    """
    weights = tuple({k: w.get(k) for k in _params.RECURRENT_NAMES} for w in weights)
    if feature_major is None:
        feature_major = feature_major_default(mode, x.shape[1])
    if step_major_gradients is None:
        gate_rows = weights[0]["weight_hh"].shape[0]
        step_major_gradients = step_major_gradients_default(gate_rows, feature_major)
    if unit_groups is None:
        unit_groups = unit_groups_default(mode, weights, x.shape[1])
    groups = int(unit_groups)
    if groups > 1:
        if weights[0]["weight_hr"] is not None:
            raise ValueError("unit_groups > 1 does not support proj_size")
        hidden = weights[0]["weight_hh"].shape[0] // _params.GATES[mode]
        if hidden % groups:
            raise ValueError(f"unit_groups={groups} must divide hidden_size={hidden}")
        weights = tuple(_group_rows(w, _params.GATES[mode], groups) for w in weights)
    spec = (
        mode,
        tuple(bool(r) for r in reverse),
        precision,
        int(unroll),
        bool(feature_major),
        bool(feature_major and step_major_gradients),
        groups,
    )
    hs, c_last = _layer_jit(spec, weights, x, state0, mask)
    finals = []
    for d, h in enumerate(hs):
        h_last = h[0] if spec[1][d] else h[-1]
        finals.append((h_last, c_last[d]) if mode == "LSTM" else h_last)
    outputs = hs if mask is None else tuple(jnp.where(mask, h, jnp.zeros((), h.dtype)) for h in hs)
    return finals, list(outputs)


# ----------------------------------------------------------------------------------------------
# helpers (``fm``: the loops are feature-major, per-step arrays ``(features, N)``; else batch-major)


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
    return jnp.zeros(shape, like.dtype)


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


def _projection_chunk(seq_len: int, batch: int) -> int:
    """Steps per window of hoisted input projections (``_PROJECTION_COLUMNS`` columns, ``C*N``):
    the projections of a whole sequence would be ``G*H*L*N`` floats (48 MiB per layer for GRU
    128,64,512), in memory next to the saved activations; a window of them is still one GEMM of
    thousands of columns."""
    return max(1, min(seq_len, -(-_PROJECTION_COLUMNS // max(batch, 1))))


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


# ----------------------------------------------------------------------------------------------
# forward


def _input_projection(w, x, precision, fm):
    """``W_ih @ x_t`` for every step of ``x`` and every gate row, in the rows' order (group-major,
    :func:`_group_rows`), as one GEMM: ``(G*H, L, N)`` feature-major (``x`` given feature-major
    too, ``(H_in, L, N)``, see :func:`_input_windows`), ``(L, N, G*H)`` batch-major. The loop
    reads each gate of each group with its own ``dynamic_slice`` (:func:`_get_block`) and adds
    the biases in its gate arithmetic (:func:`_prepare`): a bias pass over the projections held
    a second window of them (GRU 128,32,128,256's training step, 29 -> 31.7 MiB of
    temporaries).
    One GEMM per gate and group ran at a third to a half of this one's rate on the benchmark's
    shapes."""
    return jnp.einsum(
        "gi,iln->gln" if fm else "gi,lni->lng", w["weight_ih"], x, precision=precision
    )


def _input_windows(x, first, count, chunk):
    """Steps ``first ... first + count*chunk - 1`` of ``x (L, N, H_in)`` feature-major and
    window-major, ``(count, H_in, chunk, N)``: transposed once for all windows, each window's
    projection then reads one contiguous block. XLA transposed each window's slice for the GEMM,
    per direction, at a fraction of the copy rate: interleaved A/B, inference forward 1.06x
    (bidirectional LSTM 128,32,128,256,2), 1.09x (bidirectional GRU), 1.02x (GRU H=512, B=64);
    training steps level."""
    xs = lax.slice_in_dim(x, first, first + count * chunk)
    return jnp.transpose(xs.reshape(count, chunk, *x.shape[1:]), (0, 3, 1, 2))


def _recurrent(w_rec, h, num_gates, fm, precision):
    """The products of every gate: one ``w_rec @ h`` (batch-major ``h @ w_rec``), split by gate
    (``w_rec`` from :func:`_prepare`; for LSTM ``h`` is ``[x_t; h]``)."""
    return jnp.split(_lin(w_rec, h, fm, precision), num_gates, axis=0 if fm else -1)


def _cell(mode, gx, state, h_in, w_rec, b_rec, w_hr, fm, precision, joint):
    """One step of one direction (or of one group of its units): ``(new_state, h_new,
    activations to save)``.

    ``gx``: the step's input-side gates, or ``[x_t]`` where :func:`_joint_step` (then ``w_rec``
    is ``[W_ih, W_hh]``); ``state``: the group's own ``h`` (LSTM ``(h, c)``); ``h_in``: the whole
    ``h`` of the direction, which the recurrent weight multiplies; ``w_rec``, ``b_rec`` and
    ``w_hr`` from :func:`_prepare`.
    """
    if mode == "LSTM":
        h, c = state
        if joint:  # gx is [x_t]
            xh = jnp.concatenate([gx[0], h_in], axis=0)
            pre = _recurrent(w_rec, xh, 4, fm, precision)
        else:
            pre = [g + r for g, r in zip(gx, _recurrent(w_rec, h_in, 4, fm, precision))]
        if b_rec is not None:
            pre = [p + b for p, b in zip(pre, b_rec)]
        i, f, o = (jax.nn.sigmoid(pre[k]) for k in (0, 1, 3))
        g = jnp.tanh(pre[2])
        c_new = f * c + i * g
        h_new = o * jnp.tanh(c_new)
        if w_hr is not None:
            h_new = _lin(w_hr, h_new, fm, precision)
        return (h_new, c_new), h_new, (i, f, g, o)
    h = state
    gh = _recurrent(w_rec, h_in, len(gx), fm, precision)
    if mode == "GRU":
        if b_rec is None:
            r = jax.nn.sigmoid(gx[0] + gh[0])
            z = jax.nn.sigmoid(gx[1] + gh[1])
            hn = gh[2]
            n = jnp.tanh(gx[2] + r * hn)
        else:  # b_ir + b_hr, b_iz + b_hz, b_in, b_hn
            r = jax.nn.sigmoid(gx[0] + gh[0] + b_rec[0])
            z = jax.nn.sigmoid(gx[1] + gh[1] + b_rec[1])
            hn = gh[2] + b_rec[3]
            n = jnp.tanh(gx[2] + b_rec[2] + r * hn)
        h_new = (1.0 - z) * n + z * h
        return h_new, h_new, (r, z, n, hn)
    pre = gx[0] + gh[0] if b_rec is None else gx[0] + gh[0] + b_rec[0]
    h_new = jnp.tanh(pre) if mode == "RNN_TANH" else jax.nn.relu(pre)
    return h_new, h_new, ()


def _joint_step(mode, fm, save=True, num_dirs=1):
    """Whether a step multiplies ``[W_ih, W_hh]`` by ``[x_t; h]`` (the feature-major LSTM, but
    for the inference forward of a bidirectional layer) instead of adding a hoisted input
    projection to ``W_hh``'s product. Interleaved A/B on 2 cores, hoisted projections (in
    windows) against the joint step: the bidirectional LSTM's inference forward 1.20x; one
    direction's 0.97-1.06x; training steps 0.95-1.0x."""
    return mode == "LSTM" and fm and (save or num_dirs == 1)


def _prepare(mode, w, fm, joint):
    """Loop-invariant weights of one direction, as :func:`_lin` takes them: the recurrent
    weight (feature-major LSTM: ``[W_ih, W_hh]``, which multiplies ``[x_t; h]``; otherwise
    ``W_hh``) and ``W_hr``; and the biases the step adds, per gate (columns feature-major):
    ``b_ih + b_hh``, for GRU ``b_ir + b_hr, b_iz + b_hz, b_in, b_hn``. ``joint``:
    :func:`_joint_step`."""
    w_rec = jnp.concatenate([w["weight_ih"], w["weight_hh"]], axis=1) if joint else w["weight_hh"]
    b_rec = None
    if w["bias_ih"] is not None:
        num_gates = _params.GATES[mode]
        b_ih, b_hh = _gates(w["bias_ih"], num_gates), _gates(w["bias_hh"], num_gates)
        b_rec = [i + h for i, h in zip(b_ih, b_hh)]
        if mode == "GRU":
            b_rec = b_rec[:2] + [b_ih[2], b_hh[2]]
        if fm:
            b_rec = [b[:, None] for b in b_rec]
    return _oriented(w_rec, fm), b_rec, _oriented(w["weight_hr"], fm)


def _split_state(mode, state, d, fm, groups=1):
    """Direction ``d`` of a batch-major state stack, in the loop layout, as one state per unit
    group (a list)."""
    parts = [state[0][d], state[1][d]] if mode == "LSTM" else [state[d]]
    parts = [jnp.split(_loop(p, fm), groups, axis=_features(p, fm)) for p in parts]
    return list(zip(*parts)) if mode == "LSTM" else parts[0]


def _join(parts, fm):
    """Per-group ``(F/S, N)`` (batch-major ``(N, F/S)``) arrays as one."""
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=_features(parts[0], fm))


def _forward(spec, weights, x, state0, mask, save):
    mode, rev, precision, unroll, fm, step_major, groups = spec
    seq_len = x.shape[0]
    lstm = mode == "LSTM"
    gw = [[_group(w, s, groups) for s in range(groups)] for w in weights]
    # the input side, read per step: feature-major LSTM ``x_t`` (one matmul with ``h`` in the
    # step), otherwise each gate's input projection, computed for a window of ``chunk`` steps
    # at a time (see _projection_chunk) by an outer loop around the loop over its steps
    joint = _joint_step(mode, fm, save, len(weights))
    chunk = seq_len if joint else _projection_chunk(seq_len, x.shape[1])

    def window_start(d, first, length):
        """The first time of direction ``d``'s steps ``first ... first + length - 1``."""
        return seq_len - first - length if rev[d] else first

    num_chunks, tail = divmod(seq_len, chunk)
    # feature-major inference, the full windows' inputs transposed once (a reverse direction's
    # windows start ``tail`` steps later than a forward one's); a training step keeps the
    # per-window transposes, a window's memory instead of the whole input's (level in time)
    windows = {}
    if fm and not joint and not save:
        for d in range(len(weights)):
            base = tail if rev[d] else 0
            if base not in windows:
                windows[base] = _input_windows(x, base, num_chunks, chunk)

    def project(first, length, index=None):
        """Per direction the input side of its steps ``first ... first + length - 1`` (window
        ``index`` of the full ones, where given), and the time the window starts at."""
        if joint:
            return [_loop(x, fm)] * len(weights), [0] * len(weights)
        starts = [window_start(d, first, length) for d in range(len(weights))]
        out = []
        for d, (w, start) in enumerate(zip(weights, starts)):
            if windows and index is not None:
                k = num_chunks - 1 - index if rev[d] else index
                xs = _at(windows[tail if rev[d] else 0], k)
            else:
                xs = x if length == seq_len else lax.dynamic_slice_in_dim(x, start, length)
                xs = jnp.transpose(xs, (2, 0, 1)) if fm else xs
            out.append(_input_projection(w, xs, precision, fm))
        return out, starts

    num_gates = _params.GATES[mode]

    def gates_in(gx, g, t_local, sub):
        """Group ``g``'s input side of one step: ``[x_t]`` where joint, else each gate's block of
        the window's projection."""
        if joint:
            return [_at(gx, t_local)]
        rows = [(g * num_gates + k) * sub for k in range(num_gates)]
        return [_get_block(gx, row, sub, t_local, fm, False) for row in rows]

    prepared = [[_prepare(mode, g, fm, joint) for g in ws] for ws in gw]
    mask_loop = None if mask is None else _loop(mask, fm)  # (L, 1, N) or (L, N, 1)
    # With ``save``, LSTM and GRU keep four activations per step (i, f, g, o; r, z, n, hn) in the
    # backward's gate-gradient buffers (``_GRADIENT_BUFFERS``, one set per unit group), which it
    # then overwrites step by step: a training step holds one set of them per direction, not two.
    save_gates = save and mode in ("LSTM", "GRU")

    def empty(like, features):
        shape = (seq_len, features, like.shape[-1]) if fm else (seq_len, like.shape[0], features)
        return jnp.zeros(shape, like.dtype)

    init = []
    for d, w in enumerate(weights):
        states = _split_state(mode, state0, d, fm, groups)
        h0 = [st[0] if lstm else st for st in states]
        act_like = states[0][1] if lstm else states[0]
        sub = act_like.shape[_features(act_like, fm)]  # units per group
        width = h0[0].shape[_features(h0[0], fm)]  # h features per group
        out_bm = _outputs_batch_major(fm, groups * width, x.shape[1])
        shape = (x.shape[1], groups * width) if out_bm else (groups * width, x.shape[1])
        bufs = {"h": jnp.zeros((seq_len, *shape), h0[0].dtype)}
        if save_gates:
            bufs["gates"] = [
                [
                    _gate_buffer(seq_len, len(blocks) * sub, act_like, fm, step_major)
                    for blocks, _, _ in _GRADIENT_BUFFERS[mode]
                ]
                for _ in range(groups)
            ]
        if save and lstm:
            bufs["c"] = empty(act_like, groups * sub)
            if w["weight_hr"] is not None:  # o * tanh(c), the projection's input
                bufs["hc"] = empty(act_like, sub)
        init.append((states, bufs))

    def body(carry, s, gxs, starts):
        new_carry = []
        for d, (states, bufs) in enumerate(carry):
            t = seq_len - 1 - s if rev[d] else s
            h_in = _join([st[0] if lstm else st for st in states], fm)
            bufs = dict(bufs)
            gates = [list(g) for g in bufs.get("gates", [])]
            new_states = []
            for g, state in enumerate(states):
                own = state[1] if lstm else state  # the group's units
                gx = gates_in(gxs[d], g, t - starts[d], own.shape[_features(own, fm)])
                new, h_new, acts = _cell(
                    mode, gx, state, h_in, *prepared[d][g], fm, precision, joint
                )
                if mask is not None:
                    m = _at(mask_loop, t)
                    new = jax.tree.map(lambda n, o, m=m: jnp.where(m, n, o), new, state)
                h_g = new[0] if lstm else new
                width = h_g.shape[_features(h_g, fm)]
                bufs["h"] = _put_out(bufs["h"], h_g, t, g * width, fm, out_bm)
                if save_gates:
                    sub = acts[0].shape[_features(acts[0], fm)]
                    for b, (blocks, _, _) in enumerate(_GRADIENT_BUFFERS[mode]):
                        for j, k in enumerate(blocks):
                            gates[g][b] = _put_block(
                                gates[g][b], acts[k], j * sub, t, fm, step_major
                            )
                if "c" in bufs:
                    sub = new[1].shape[_features(new[1], fm)]
                    bufs["c"] = _put_rows(bufs["c"], new[1], t, g * sub, fm)
                if "hc" in bufs:
                    bufs["hc"] = _put(bufs["hc"], acts[3] * jnp.tanh(new[1]), t)
                new_states.append(new)
            if save_gates:
                bufs["gates"] = gates
            new_carry.append((new_states, bufs))
        return new_carry, None

    # XLA:CPU runs a loop body of at most 8 operations one after the other on one thread; an
    # inference step of two directions is about that size, so two steps per iteration let the
    # directions' products run side by side (_MIN_UNROLL_BIDIRECTIONAL_INFERENCE)
    step_unroll = unroll
    if not save and len(weights) > 1:
        step_unroll = max(unroll, _MIN_UNROLL_BIDIRECTIONAL_INFERENCE)

    def steps(carry, first, length, index=None):
        gxs, starts = project(first, length, index)
        run = lambda c, s: body(c, s, gxs, starts)  # noqa: E731
        return lax.scan(run, carry, first + jnp.arange(length), unroll=step_unroll)[0]

    if num_chunks == 1:
        carry = steps(init, 0, chunk, 0)
    else:
        carry = lax.scan(
            lambda c, i: (steps(c, i * chunk, chunk, i), None), init, jnp.arange(num_chunks)
        )[0]
    if tail:
        carry = steps(carry, num_chunks * chunk, tail)
    hs_loop = tuple(bufs["h"] for _, bufs in carry)  # (L, N, H_out) or loop layout
    hs = tuple(h if out_bm else _loop(h, fm) for h in hs_loop)
    c_last = None
    if lstm:
        c_last = jnp.stack([_loop(_join([st[1] for st in states], fm), fm) for states, _ in carry])
    saved = tuple(
        {"gates": bufs.get("gates"), "c": bufs.get("c"), "h": h, "hc": bufs.get("hc")}
        for (_, bufs), h in zip(carry, hs_loop)
    )
    return (hs, c_last), saved


# ----------------------------------------------------------------------------------------------
# backward


def _cell_backward(mode, dh, dc, acts, c_t, c_prev, h_t, h_prev, w_hr_t, fm, precision):
    """Gradients of one step given those reaching the new state (already masked).

    Returns ``(dgates_x, dgates_h, dh_direct, dc_prev)``: per gate the gradients of the input-side
    and the recurrent pre-activations (the same except for GRU's ``n`` gate), the part of the
    gradient of the previous ``h`` that does not go through ``W_hh``, and that of the previous
    ``c``.
    """
    if mode == "LSTM":
        dhc = dh if w_hr_t is None else _lin(w_hr_t, dh, fm, precision)
        i, f, g, o = acts
        tc = jnp.tanh(c_t)
        dc = dc + dhc * o * (1.0 - tc * tc)
        dgates = [
            dc * g * i * (1.0 - i),
            dc * c_prev * f * (1.0 - f),
            dc * i * (1.0 - g * g),
            dhc * tc * o * (1.0 - o),
        ]
        return dgates, dgates, None, dc * f
    if mode == "GRU":
        r, z, n, hn = acts
        dn = dh * (1.0 - z) * (1.0 - n * n)
        dz = dh * (h_prev - n) * z * (1.0 - z)
        dr = dn * hn * r * (1.0 - r)
        return [dr, dz, dn], [dr, dz, dn * r], dh * z, None
    dpre = dh * (1.0 - h_t * h_t) if mode == "RNN_TANH" else jnp.where(h_t > 0, dh, 0.0)
    return [dpre], [dpre], None, None


def _backward(spec, weights, x, state0, mask, out, saved, cts):
    mode, rev, precision, unroll, fm, step_major, groups = spec
    seq_len, batch = x.shape[0], x.shape[1]
    lstm, gru = mode == "LSTM", mode == "GRU"
    num_gates = _params.GATES[mode]
    hs, _ = out
    dhs, dc_last = cts
    h0 = state0[0] if lstm else state0  # batch-major (D, N, H_out)
    mask_loop = None if mask is None else _loop(mask, fm)
    all_gates = "gln" if fm else "lng"  # einsum letters: gate rows, steps, batch
    out_bm = _outputs_batch_major(fm, dhs[0].shape[-1], batch)  # as the forward's

    def before(seq, init, t, row, rows, reverse, out=False):
        """Features ``row ... row + rows - 1`` of the state before step ``t`` (``init`` at the
        direction's first step), from a loop-layout buffer (``out``: a batch-major one)."""
        first = seq_len - 1 if reverse else 0
        prev = jnp.clip(t + 1 if reverse else t - 1, 0, seq_len - 1)
        if out:
            return jnp.where(t == first, init, _get_out(seq, prev, row, rows, fm, out_bm))
        return jnp.where(t == first, init, _get_rows(seq, prev, row, rows, fm))

    # Per direction the loop forms the gradients of the recurrent pre-activations of the current
    # step (``(G*H, N)``, the operand of the recurrent matmul; rows ordered by unit group, see
    # :func:`_group_rows`) and copies them into the buffers for all steps of
    # ``_GRADIENT_BUFFERS``, one set per unit group (:func:`_gate_buffer`, read afterwards as
    # the ``(rows, L*N)`` operands of the weight-gradient matmuls). For LSTM and GRU these are
    # the forward's buffers of saved activations: step t's activations are read from them, then
    # overwritten by step t's gradients. The loop reads each step's activations after writing
    # the previous step's gradients and carries them, so that XLA updates the buffers in place
    # (read in the same step as the write, it copied the whole buffer every step). With unit
    # groups, each group's gate gradients times its rows of ``W_hh`` is a partial gradient of the
    # whole previous ``h``, independent of the other groups'; the partials are then summed
    # (interleaved A/B: 3-8% faster training steps than one product per group of the previous
    # ``h``, which needs every group's gate gradients first).
    # Feature-major, the gates are written one by one into a scratch (in place): fusing a
    # concatenation into the gate arithmetic makes XLA:CPU emit it as scalar code, which only
    # pays off at small batches. The buffers copy from the finished scratch, so that XLA does
    # not compute every gate twice (once per consumer).
    per_gate_writes = fm and num_gates > 1
    layout = _GRADIENT_BUFFERS[mode]
    # With more than one step per loop iteration (``unroll``), XLA copied the buffers every
    # iteration instead of updating them in place (2-3x slower training steps), so then the
    # gradients get buffers of their own.
    in_place = unroll == 1

    def read_acts(bufs, t, sub):
        """LSTM/GRU: one group's four activation blocks of step ``t``."""
        if not (lstm or gru):
            return []
        acts = [None] * 4
        for buf, (blocks, _, _) in zip(bufs, layout):
            for j, k in enumerate(blocks):
                acts[k] = _get_block(buf, j * sub, sub, t, fm, step_major)
        return acts

    def write_grads(bufs, step, dgx_n, t, sub):
        """One group's step ``t`` gradients into its buffers: the blocks of ``step`` (the
        recurrent side's, ``(G*H/S, N)`` or ``(N, G*H/S)``) and, for GRU, the n gate's input
        side."""
        out = []
        for buf, (blocks, _, _) in zip(bufs, layout):
            if blocks[0] >= num_gates:  # GRU's dn
                value = dgx_n
            elif len(blocks) == num_gates:
                value = step
            else:
                lo, hi = blocks[0] * sub, (blocks[-1] + 1) * sub
                value = lax.slice_in_dim(step, lo, hi, axis=0 if fm else 1)
            out.append(_put_block(buf, value, 0, t, fm, step_major))
        return out

    init, loop_in = [], []
    for d, w in enumerate(weights):
        states = _split_state(mode, state0, d, fm, groups)
        cell_like = states[0][1] if lstm else states[0]
        h_like = states[0][0] if lstm else states[0]
        hidden = w["weight_hh"].shape[0] // num_gates
        sub, width = hidden // groups, h_like.shape[_features(h_like, fm)]
        if (lstm or gru) and in_place:
            grads = saved[d]["gates"]
        else:
            grads = [
                [
                    _gate_buffer(seq_len, len(b) * sub, cell_like, fm, step_major)
                    for b, _, _ in layout
                ]
                for _ in range(groups)
            ]
        bufs = {"grads": grads}
        if per_gate_writes:  # one scratch per group
            bufs["step"] = [jnp.zeros((num_gates * sub, batch), cell_like.dtype)] * groups
        if w["weight_hr"] is not None:
            bufs["dh"] = jnp.zeros((seq_len, *h_like.shape), h_like.dtype)
        dc0 = jnp.split(_loop(dc_last[d], fm), groups, axis=0 if fm else 1) if lstm else None
        dc0 = dc0 or [None] * groups
        # the activations of the first step the backward reaches (the last the direction ran)
        first = 0 if rev[d] else seq_len - 1
        acts0 = [read_acts(g, first, sub) for g in (saved[d]["gates"] or grads)]
        init.append(([jnp.zeros_like(h_like)] * groups, dc0, bufs, acts0))
        # the transposed products of the backward, as _lin takes them: per group, its rows of
        # W_hh
        w_hh = w["weight_hh"]
        rows = num_gates * sub
        w_back = [lax.slice_in_dim(w_hh, g * rows, (g + 1) * rows) for g in range(groups)]
        w_back = [wb.T if fm else wb for wb in w_back]
        w_hr_back = None if w["weight_hr"] is None else (w["weight_hr"].T if fm else w["weight_hr"])
        loop_in.append(
            (states, dhs[d] if out_bm else _loop(dhs[d], fm), w_back, w_hr_back, sub, width)
        )

    def body(carry, s):
        new_carry = []
        for d, (dhs_g, dcs_g, bufs, acts_g) in enumerate(carry):
            t = s if rev[d] else seq_len - 1 - s
            cs, hs_saved = saved[d]["c"], saved[d]["h"]  # h batch-major if out_bm
            states, dhs_d, w_back, w_hr_back, sub, width = loop_in[d]
            if mask is not None:
                m = _at(mask_loop, t)
                zero = jnp.zeros((), dhs_g[0].dtype)
            bufs = dict(bufs)
            scratch, grads, acts_next = [], [], []
            handed_on, dh_direct_g, dc_prev_g = [], [], []
            t_next = jnp.clip(t + 1 if rev[d] else t - 1, 0, seq_len - 1)
            for g in range(groups):
                dh = dhs_g[g] + _get_out(dhs_d, t, g * width, width, fm, out_bm)
                dc = dcs_g[g]
                dh_c, dc_c = dh, dc
                if mask is not None:
                    dh_c = jnp.where(m, dh, zero)
                    dc_c = None if dc is None else jnp.where(m, dc, zero)
                dgx, dgh, dh_direct, dc_prev = _cell_backward(
                    mode,
                    dh_c,
                    dc_c,
                    acts_g[g],
                    _get_rows(cs, t, g * sub, sub, fm) if lstm else None,
                    before(cs, states[g][1], t, g * sub, sub, rev[d]) if lstm else None,
                    _get_out(hs_saved, t, g * width, width, fm, out_bm)
                    if not (lstm or gru)
                    else None,
                    before(hs_saved, states[g], t, g * width, width, rev[d], out=True)
                    if gru
                    else None,
                    w_hr_back,
                    fm,
                    precision,
                )
                if mask is not None:  # masked steps hand the gradient on to the kept state
                    handed_on.append(jnp.where(m, zero, dh))
                    if lstm:
                        dc_prev = dc_prev + jnp.where(m, zero, dc)
                if "dh" in bufs:
                    bufs["dh"] = _put(bufs["dh"], dh_c, t)
                # the group's part of the step: written gate by gate into its own scratch, then
                # copied into its buffers, whose next activations are read after that write
                if per_gate_writes:
                    step_g = bufs["step"][g]
                    for k, a in enumerate(dgh):
                        step_g = _put_at(step_g, a, (k * sub, 0))
                else:
                    step_g = jnp.concatenate(dgh, axis=0 if fm else -1)
                scratch.append(step_g)
                grads.append(
                    write_grads(bufs["grads"][g], step_g, dgx[-1] if gru else None, t, sub)
                )
                separate = (lstm or gru) and not in_place  # read from the forward's buffers
                source = saved[d]["gates"][g] if separate else grads[g]
                acts_next.append(read_acts(source, t_next, sub))
                dh_direct_g.append(dh_direct)
                dc_prev_g.append(dc_prev)
            if per_gate_writes:
                bufs["step"] = scratch
            bufs["grads"] = grads
            partials = [_lin(w_back[g], scratch[g], fm, precision) for g in range(groups)]
            dh_prev_g = []
            for r in range(groups):
                dh_prev = sum(
                    lax.slice_in_dim(p, r * width, (r + 1) * width, axis=0 if fm else 1)
                    for p in partials
                )
                if dh_direct_g[r] is not None:
                    dh_prev = dh_prev + dh_direct_g[r]
                if mask is not None:
                    dh_prev = dh_prev + handed_on[r]
                dh_prev_g.append(dh_prev)
            new_carry.append((dh_prev_g, dc_prev_g, bufs, acts_next))
        return new_carry, None

    carry, _ = lax.scan(body, init, jnp.arange(seq_len), unroll=unroll)

    # Everything that does not feed the recurrence: large matmuls over all steps at once.
    def over_steps(spec_, a, b):
        return jnp.einsum(spec_, a, b, precision=precision)

    steps_and_batch = (1, 2) if fm else (0, 1)
    dweights, dx = [], None
    dh0, dc0 = [], []
    for d, (w, (dh0_g, dc0_g, bufs, _)) in enumerate(zip(weights, carry)):
        sub = w["weight_hh"].shape[0] // num_gates // groups
        h_before = _shifted(hs[d], h0[d], rev[d])  # (L, N, H_out)
        parts = {"weight_hh": [], "weight_ih": [], "bias_hh": [], "bias_ih": []}
        for g, group_bufs in enumerate(bufs["grads"]):
            for buf, (blocks, gate, roles) in zip(group_bufs, layout):
                if step_major:  # to (rows, L, N), a real copy (else XLA folds it into the matmuls)
                    buf = lax.optimization_barrier(jnp.transpose(buf, (1, 0, 2)))
                if "hh" in roles:
                    parts["weight_hh"].append(over_steps(f"{all_gates},lnp->gp", buf, h_before))
                if "ih" in roles:
                    parts["weight_ih"].append(over_steps(f"{all_gates},lni->gi", buf, x))
                    row = (g * num_gates + gate) * sub
                    w_ih = lax.slice_in_dim(w["weight_ih"], row, row + len(blocks) * sub)
                    if fm:  # W_ih^T @ dgates as (H_in, L, N) (see _dx_weight), transposed below
                        term = over_steps("ig,gln->iln", _dx_weight(w_ih), buf)
                    else:
                        term = over_steps("lng,gi->lni", buf, w_ih)
                    dx = term if dx is None else dx + term
                if w["bias_ih"] is not None:
                    db = jnp.sum(buf, axis=steps_and_batch)
                    for role in roles:
                        parts[f"bias_{role}"].append(db)
        dw = {k: (jnp.concatenate(v) if v else None) for k, v in parts.items()}
        dw["weight_hr"] = None
        if w["weight_hr"] is not None:
            h_cell = saved[d]["hc"]  # (L, H, N) or (L, N, H)
            dw["weight_hr"] = over_steps("lpn,lhn->ph" if fm else "lnp,lnh->ph", bufs["dh"], h_cell)
        dweights.append(dw)
        dh0.append(_loop(_join(dh0_g, fm), fm))
        dc0.append(None if dc0_g[0] is None else _loop(_join(dc0_g, fm), fm))
    if fm:
        dx = jnp.transpose(dx, (1, 2, 0))
    dstate0 = (jnp.stack(dh0), jnp.stack(dc0)) if lstm else jnp.stack(dh0)
    return tuple(dweights), dx, dstate0, None


def _dx_weight(w_ih):
    """``W_ih^T`` for the feature-major input gradient ``W_ih^T @ dgates``, made a real
    ``(H_in, G*H)`` array (XLA would otherwise fold the transpose into the matmul). On XLA:CPU the
    large ``dx`` GEMM with a transposed operand (that folded form, or ``dgates^T @ W_ih``) ran at
    half to four fifths of the rate of this one, both operands as stored and the ``(H_in, L, N)``
    result transposed after (``benchmarks/matmul_forms.py``)."""
    return lax.optimization_barrier(w_ih.T)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _layer(spec, weights, x, state0, mask):
    out, _ = _forward(spec, weights, x, state0, mask, save=False)
    return out


def _layer_fwd(spec, weights, x, state0, mask):
    out, saved = _forward(spec, weights, x, state0, mask, save=True)
    return out, (weights, x, state0, mask, out, saved)


def _layer_bwd(spec, residuals, cts):
    weights, x, state0, mask, out, saved = residuals
    return _backward(spec, weights, x, state0, mask, out, saved, cts)


_layer.defvjp(_layer_fwd, _layer_bwd)

# jitted so that eager callers (and eager grad) compile a layer once per shape and reuse it; inside
# an outer jit this is inlined.
_layer_jit = jax.jit(_layer, static_argnums=0)
