"""The fused layer's forward loop (see :mod:`jaxrnn.functional._fused`): input projections in
windows of steps, one matmul per step for all gates (per unit group), the gate activations saved
for the backward in its gate-gradient buffers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxrnn import _params
from jaxrnn.functional._cells import relu
from jaxrnn.functional._fused_layout import (
    _GRADIENT_BUFFERS,
    _at,
    _features,
    _gate_buffer,
    _gates,
    _get_block,
    _group,
    _join,
    _lin,
    _loop,
    _oriented,
    _outputs_batch_major,
    _put,
    _put_block,
    _put_out,
    _put_rows,
    _split_state,
    _zeros,
)

# Steps per loop iteration of a bidirectional layer's inference forward (at least): XLA:CPU's
# thunk executor runs a loop body of at most 8 operations sequentially on one thread, and one
# step of two directions is about that size (GRU: two products, two gate updates, two output
# writes, the counter); with two steps per iteration the directions' products run side by side.
_MIN_UNROLL_BIDIRECTIONAL_INFERENCE = 2

# Columns (steps * batch) of one window of hoisted input projections (see _projection_chunk).
_PROJECTION_COLUMNS = 1024
# An inference forward's windows (see _projection_chunk): the widest of 4096, 2048, ... columns,
# down to the smallest below, for which one window of all directions' projections stays within
# _INFERENCE_PROJECTION_BYTES. Against 1024 columns (``benchmarks/variants.py
# inference-windows``, three runs, results/2026-12-07-amd-epyc-2-cores-variants-run2.md and
# -run3.md): wide windows for small layers, one instead of two, forwards RNN 512,4,64,128
# 1.06-1.13x, GRU 1.05-1.09x, LSTM 1.03-1.06x; narrow ones for large layers, 2-layer
# 128,64,256,512 GRU 1.02-1.05x, LSTM 1.05-1.06x (level once); bidirectional 128,32,128,256
# 0.97-1.01x. XLA:CPU allocates a program's temporaries as one block per call, and glibc serves
# a block above 32 MiB (its largest mmap threshold) from fresh pages, which then fault on first
# touch every call (about 0.3 ms per MiB here); a smaller block it can serve from its heap,
# where there is room (the A/B prints page faults per call): 512-column windows (4 MiB) keep the
# 2-layer H=512 forwards' temporaries at 28-29 MiB (1024 columns: 31.3 and 33.5 MiB).
_INFERENCE_PROJECTION_COLUMNS = 4096
_INFERENCE_PROJECTION_MIN_COLUMNS = 512
_INFERENCE_PROJECTION_BYTES = 4 * 2**20

# Whether a one-direction joint LSTM's training step computes its activations as one block (see
# _activation_block; ``benchmarks/variants.py activation-block`` times it against the gate-wise
# form).
_ACTIVATION_BLOCK = True


def _projection_chunk(seq_len: int, batch: int, window_bytes: int | None = None) -> int:
    """Steps per window of hoisted input projections (``_PROJECTION_COLUMNS`` columns, ``C*N``):
    the projections of a whole sequence would be ``G*H*L*N`` floats (48 MiB per layer for GRU
    128,64,512), in memory next to the saved activations; a window of them is still one GEMM of
    thousands of columns. An inference forward (``window_bytes``: the bytes of one column of
    every direction's projections) takes the widest of ``_INFERENCE_PROJECTION_COLUMNS``, half
    of it, ... down to ``_INFERENCE_PROJECTION_MIN_COLUMNS`` whose window stays within
    ``_INFERENCE_PROJECTION_BYTES`` (the narrowest if none does)."""
    columns = _PROJECTION_COLUMNS
    if window_bytes is not None:
        columns = _INFERENCE_PROJECTION_COLUMNS
        while (
            columns > _INFERENCE_PROJECTION_MIN_COLUMNS
            and columns * window_bytes > _INFERENCE_PROJECTION_BYTES
        ):
            columns //= 2
        columns = max(columns, _INFERENCE_PROJECTION_MIN_COLUMNS)
    return max(1, min(seq_len, -(-columns // max(batch, 1))))


def _input_projection(w, x, precision, fm):
    """``W_ih @ x_t`` for every step of ``x`` and every gate row, in the rows' order (group-major,
    ``_fused_layout._group_rows``), as one GEMM: ``(G*H, L, N)`` feature-major (``x`` given
    feature-major too, ``(H_in, L, N)``, see :func:`_input_windows`), ``(L, N, G*H)`` batch-major.
    The loop reads each gate of each group with its own ``dynamic_slice`` (:func:`_get_block`) and
    adds the biases in its gate arithmetic (:func:`_prepare`): a bias pass over the projections held
    a second window of them (GRU 128,32,128,256's training step, 29 -> 31.7 MiB of temporaries).
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
    (bidirectional LSTM 128,32,128,256,2), 1.09x (bidirectional GRU), 1.02x (GRU H=512, B=64,
    before its second layer read its input feature-major, see _fused.input_feature_major, which
    skips these windows); training steps level. XLA builds them in two passes (a copy in the
    transpose's own layout, then the windows), which a per-window form was not faster than."""
    xs = lax.slice_in_dim(x, first, first + count * chunk)
    return jnp.transpose(xs.reshape(count, chunk, *x.shape[1:]), (0, 3, 1, 2))


def _recurrent(w_rec, h, num_gates, fm, precision):
    """The products of every gate: one ``w_rec @ h`` (batch-major ``h @ w_rec``), split by gate
    (``w_rec`` from :func:`_prepare`; where :func:`_joint_step`, ``h`` is ``[x_t; h]``)."""
    return jnp.split(_lin(w_rec, h, fm, precision), num_gates, axis=0 if fm else -1)


def _cell(mode, gx, state, h_in, w_rec, b_rec, w_hr, fm, precision, joint, block=False):
    """One step of one direction (or of one group of its units): ``(new_state, h_new,
    activations to save, their block)``.

    ``gx``: the step's input-side gates, or ``[x_t]`` where :func:`_joint_step` (then ``w_rec``
    is ``[W_ih, W_hh]``); ``state``: the group's own ``h`` (LSTM ``(h, c)``); ``h_in``: the whole
    ``h`` of the direction, which the recurrent weight multiplies; ``w_rec``, ``b_rec`` and
    ``w_hr`` from :func:`_prepare`. ``block`` (joint LSTM only, see :func:`_activation_block`):
    the four activations are computed as one ``(4*H, N)`` block, also returned (else ``None``).
    """

    def biased(a, k):
        """``a`` plus the step's ``k``-th bias (from :func:`_prepare`), where the layer has any."""
        return a if b_rec is None else a + b_rec[k]

    if mode == "LSTM":
        h, c = state
        acts_block = None
        if joint:  # gx is [x_t]
            xh = jnp.concatenate([gx[0], h_in], axis=0)
            if block:
                acts_block = _activation_block(biased(_lin(w_rec, xh, fm, precision), 0))
                i, f, g, o = jnp.split(acts_block, 4, axis=0)
            else:
                pre = _recurrent(w_rec, xh, 4, fm, precision)
        else:
            pre = [g + r for g, r in zip(gx, _recurrent(w_rec, h_in, 4, fm, precision))]
        if acts_block is None:
            pre = [biased(p, k) for k, p in enumerate(pre)]
            i, f, o = (jax.nn.sigmoid(pre[k]) for k in (0, 1, 3))
            g = jnp.tanh(pre[2])
        c_new = f * c + i * g
        h_new = o * jnp.tanh(c_new)
        if w_hr is not None:
            h_new = _lin(w_hr, h_new, fm, precision)
        return (h_new, c_new), h_new, (i, f, g, o), acts_block
    h = state
    gh = _recurrent(w_rec, h_in, len(gx), fm, precision)
    if mode == "GRU":  # biases b_ir + b_hr, b_iz + b_hz, b_in, b_hn
        r = jax.nn.sigmoid(biased(gx[0] + gh[0], 0))
        z = jax.nn.sigmoid(biased(gx[1] + gh[1], 1))
        hn = biased(gh[2], 3)
        n = jnp.tanh(biased(gx[2], 2) + r * hn)
        h_new = (1.0 - z) * n + z * h
        return h_new, h_new, (r, z, n, hn), None
    pre = biased(gx[0] + gh[0], 0)
    h_new = jnp.tanh(pre) if mode == "RNN_TANH" else relu(pre)
    return h_new, h_new, (), None


def _activation_block(pre):
    """An LSTM step's four activations from its ``(4*H, N)`` pre-activations (feature-major, gates
    ``i, f, g, o``) as one block and one elementwise pass: ``tanh`` of the ``g`` rows and the
    sigmoid of the others as ``(1 + tanh(x/2)) / 2``, so that a training step writes them to its
    saved-activation buffer with one copy instead of four (``benchmarks/variants.py
    activation-block``, training steps: LSTM 128,32,128,256 1.12x, 128,16,128,256 1.15x, 2-layer
    128,64,256,512 level). In interleaved A/Bs outside it a bidirectional layer's training step
    was 0.91-0.93x and the inference forward, which saves nothing, 0.89-1.0x this way: they keep
    :func:`jax.nn.sigmoid` (``_ACTIVATION_BLOCK``).

    Precision: this sigmoid is exact to about 3e-8 absolute, not relative: below a
    pre-activation of about -17 it is exactly 0 (torch's about 1e-8), so a saturated gate's
    tiny outputs and gradients differ from torch's in relative terms (the README's "Dtypes").
    Exact forms cost more than they saved (interleaved, LSTM 128,32 and 128,16,128,256 training
    steps: a select between ``tanh`` and :func:`jax.nn.sigmoid` 1.26-1.46x slower, an ``exp``
    and an ``expm1`` per element 1.06-1.07x, one ``exp`` with a series for small ``tanh``
    arguments 1.12-1.19x)."""
    rows = pre.shape[0] // 4
    per_gate = jnp.asarray([0.5, 0.5, 1.0, 0.5], pre.dtype)
    scale = jnp.repeat(per_gate, rows)[:, None]
    shift = jnp.repeat(jnp.asarray([0.5, 0.5, 0.0, 0.5], pre.dtype), rows)[:, None]
    return jnp.tanh(pre * scale) * scale + shift


# Up to this many multiply-adds per step (``G*H * (H_in + H_out) * N``), a one-direction LSTM's
# inference forward takes the joint step too (see _joint_step).
_JOINT_INFERENCE_MAX_MACS = 40_000_000


def _joint_step(mode, fm, save=True, num_dirs=1, step_macs=0):
    """Whether a step multiplies ``[W_ih, W_hh]`` by ``[x_t; h]`` (``step_macs`` multiply-adds)
    instead of adding a hoisted input projection to ``W_hh``'s product: the feature-major LSTM's
    training step, and its inference forward for one direction up to
    ``_JOINT_INFERENCE_MAX_MACS``. Interleaved A/Bs on 2 cores, hoisted projections (in windows)
    against the joint step: training steps 0.95-1.0x; the bidirectional LSTM's inference
    forward 1.20x; one direction's (``benchmarks/variants.py joint-inference``, three runs), LSTM
    128,32,128,256 level, 128,16,128,256 level to 0.92x (the joint step faster there), 2-layer
    128,64,256,512 1.06-1.09x: there the joint step copies ``[W_ih, W_hh]`` (8 MiB) and ``x``
    every call, which took the forward's temporaries from 29 to 39 MiB, above glibc's 32 MiB
    mmap threshold (see ``_INFERENCE_PROJECTION_COLUMNS``)."""
    if mode != "LSTM" or not fm:
        return False
    return save or (num_dirs == 1 and step_macs <= _JOINT_INFERENCE_MAX_MACS)


def _prepare(mode, w, fm, joint, block=False):
    """Loop-invariant weights of one direction, as :func:`_lin` takes them: the recurrent
    weight (where ``joint``, the feature-major LSTM: ``[W_ih, W_hh]``, which multiplies
    ``[x_t; h]``; otherwise ``W_hh``) and ``W_hr``; and the biases the step adds, per gate
    (columns feature-major): ``b_ih + b_hh``, for GRU ``b_ir + b_hr, b_iz + b_hz, b_in, b_hn``;
    with ``block`` (see :func:`_cell`) one ``(4*H, 1)`` column for all gates.
    ``joint``: :func:`_joint_step`."""
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
        if block:
            b_rec = [jnp.concatenate(b_rec, axis=0)]
        if not fm:  # (1, G) against the step's (N, G): no implicit rank promotion
            b_rec = [b[None, :] for b in b_rec]
    return _oriented(w_rec, fm), b_rec, _oriented(w["weight_hr"], fm)


def _forward(spec, weights, x, state0, mask, save):
    mode, rev, precision, unroll, fm, step_major, groups, x_fm = spec
    seq_len = x.shape[0]
    lstm = mode == "LSTM"
    gw = [[_group(w, s, groups) for s in range(groups)] for w in weights]
    # the input side, read per step: feature-major LSTM ``x_t`` (one matmul with ``h`` in the
    # step), otherwise each gate's input projection, computed for a window of ``chunk`` steps
    # at a time (see _projection_chunk) by an outer loop around the loop over its steps
    w0 = weights[0]["weight_hh"]
    step_macs = w0.shape[0] * (x.shape[2] + w0.shape[1]) * x.shape[1]
    joint = _joint_step(mode, fm, save, len(weights), step_macs)
    window_bytes = None
    if not save:
        window_bytes = x.dtype.itemsize * sum(w["weight_ih"].shape[0] for w in weights)
    chunk = seq_len if joint else _projection_chunk(seq_len, x.shape[1], window_bytes)

    def window_start(d, first, length):
        """The first time of direction ``d``'s steps ``first ... first + length - 1``."""
        return seq_len - first - length if rev[d] else first

    num_chunks, tail = divmod(seq_len, chunk)
    # feature-major inference, the full windows' inputs transposed once (a reverse direction's
    # windows start ``tail`` steps later than a forward one's); a training step keeps the
    # per-window transposes, a window's memory instead of the whole input's (level in time).
    # Where the input is a feature-major output of the layer below (``x_fm``, see
    # _fused.input_feature_major), each window is a slice of it, transposed as it is read.
    windows = {}
    if fm and not joint and not save and not x_fm:
        for d in range(len(weights)):
            base = tail if rev[d] else 0
            if base not in windows:
                windows[base] = _input_windows(x, base, num_chunks, chunk)

    x_loop = _loop(x, fm) if x_fm and not joint else None

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
            elif x_loop is not None:
                xs = (
                    x_loop if length == seq_len else lax.dynamic_slice_in_dim(x_loop, start, length)
                )
                xs = jnp.swapaxes(xs, 0, 1)
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

    # a training step's joint LSTM computes its four activations as one block, saved with one
    # copy; one direction only (see _activation_block)
    block = _ACTIVATION_BLOCK and joint and save and len(weights) == 1
    prepared = [[_prepare(mode, g, fm, joint, block) for g in ws] for ws in gw]
    mask_loop = None if mask is None else _loop(mask, fm)  # (L, 1, N) or (L, N, 1)
    # With ``save``, LSTM and GRU keep four activations per step (i, f, g, o; r, z, n, hn) in the
    # backward's gate-gradient buffers (``_GRADIENT_BUFFERS``, one set per unit group), which it
    # then overwrites step by step: a training step holds one set of them per direction, not two.
    save_gates = save and mode in ("LSTM", "GRU")

    def empty(like, features):
        shape = (seq_len, features, like.shape[-1]) if fm else (seq_len, like.shape[0], features)
        return _zeros(shape, like)

    init = []
    for d, w in enumerate(weights):
        states = _split_state(mode, state0, d, fm, groups)
        h0 = [st[0] if lstm else st for st in states]
        act_like = states[0][1] if lstm else states[0]
        sub = act_like.shape[_features(act_like, fm)]  # units per group
        width = h0[0].shape[_features(h0[0], fm)]  # h features per group
        out_bm = _outputs_batch_major(fm, groups * width, x.shape[1])
        shape = (x.shape[1], groups * width) if out_bm else (groups * width, x.shape[1])
        bufs = {"h": _zeros((seq_len, *shape), h0[0])}
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
                new, h_new, acts, acts_block = _cell(
                    mode, gx, state, h_in, *prepared[d][g], fm, precision, joint, block
                )
                if mask is not None:
                    m = _at(mask_loop, t)
                    new = jax.tree.map(lambda n, o, m=m: jnp.where(m, n, o), new, state)
                h_g = new[0] if lstm else new
                width = h_g.shape[_features(h_g, fm)]
                bufs["h"] = _put_out(bufs["h"], h_g, t, g * width, fm, out_bm)
                if acts_block is not None:  # the LSTM's one buffer holds all four, in order
                    gates[g][0] = _put_block(gates[g][0], acts_block, 0, t, fm, step_major)
                elif save_gates:
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
