"""The fused layer's backward (see :mod:`jaxrnn.functional._fused`): a loop that runs the
recurrence for the gate gradients only, then ``dW_ih``, ``dW_hh``, the biases and ``dx`` as large
matmuls over all steps."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from jaxrnn import _params
from jaxrnn.functional._fused_layout import (
    _GRADIENT_BUFFERS,
    _at,
    _features,
    _gate_buffer,
    _get_block,
    _get_out,
    _get_rows,
    _join,
    _lin,
    _loop,
    _outputs_batch_major,
    _put,
    _put_at,
    _put_block,
    _shifted,
    _split_state,
    _zeros,
)

# Each bias gradient as a matrix-vector product of the gate-gradient buffer with ones rather than
# a sum over steps and batch, for which XLA:CPU copied the whole buffer (64 MiB for LSTM H=512,
# B=64, T=128). ``python benchmarks/variants.py bias-gradient`` times both forms and prints the
# training step's temporary memory: the 2-layer H=512 LSTM's 321 -> 257 MiB, its step 1.02x, the
# smaller layers level.
_BIAS_GRADIENT_AS_PRODUCT = True

# Whether each backward step starts with the recurrent products of the step before (``W_hh^T``
# times the gate gradients it carried over) instead of ending with them (see _backward).
# Interleaved A/B, training steps (``benchmarks/variants.py products-first``,
# results/2026-12-07-amd-epyc-2-cores-variants-products-first.md): GRU 128,32,128,256 1.17x,
# bidirectional 2-layer 1.05x, LSTM 128,32,128,256 1.06x, 128,16,128,256 1.08-1.11x in three runs
# (0.88x in one taken while the VM ran 1.6x slower), 2-layer H=512 and B=4 level; the
# bidirectional 2-layer LSTM 128,32,128,256 0.97-0.98x in five runs (its one-layer form 1.05x,
# the 2-layer one at B=16 1.12x and B=64 1.04x; not explained).
_PRODUCTS_FIRST = True


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
    # relu's as torch's threshold_backward: zero where the result is <= 0, else (NaN too) passed
    dpre = dh * (1.0 - h_t * h_t) if mode == "RNN_TANH" else jnp.where(h_t <= 0, 0.0, dh)
    return [dpre], [dpre], None, None


def _backward(spec, weights, x, state0, mask, out, saved, cts):
    mode, rev, precision, unroll, fm, step_major, groups, _ = spec
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
    # ``_fused_layout._group_rows``) and copies them into the buffers for all steps of
    # ``_GRADIENT_BUFFERS``, one set per unit group (:func:`_gate_buffer`, read afterwards as
    # the ``(rows, L*N)`` operands of the weight-gradient matmuls). For LSTM and GRU these are
    # the forward's buffers of saved activations: step t's activations are read from them, then
    # overwritten by step t's gradients. The loop reads each step's activations after writing
    # the previous step's gradients and carries them, so that XLA updates the buffers in place
    # (read in the same step as the write, it copied the whole buffer every step). The gate
    # gradients times ``W_hh`` (the gradient of the previous ``h``) start the next step
    # (``_PRODUCTS_FIRST``, see below).
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

    # A step that ends with its recurrent products runs on one thread from its start to its
    # products: XLA:CPU starts each iteration of a loop on one thread and hands work to another
    # only behind a matmul (or when more than 8 operations are ready at once), so two directions'
    # (or unit groups') gate arithmetic ran one after the other (profiles: about 60 us per step
    # of a bidirectional H=256, B=32 layer on one thread while the other waited). Starting each
    # step with the products of the step before (its gate gradients carried over) puts every
    # direction's chain behind a matmul of its own, as the forward's steps are. With unit groups
    # the products are then one per group, of its columns of W_hh with all groups' gate
    # gradients ("joined"), so that no sum over the groups stands between a product and its
    # group's arithmetic; ending the step with them, each group's rows of W_hh times its own
    # gate gradients, summed, was 3-8% faster than the joined form (a join either way). A/B
    # (``benchmarks/variants.py products-first``): see ``_PRODUCTS_FIRST``.
    has_extra = gru or mask is not None  # dh_direct, or the gradient masked steps hand on
    joined = _PRODUCTS_FIRST and groups > 1

    def recurrent_dh(w_back, width, rec, extra):
        """Per group the gradient of the previous ``h``: the products of ``W_hh`` with the gate
        gradients ``rec`` (per group), plus ``extra`` (per group, or None)."""
        if joined:
            all_gates = jnp.concatenate(rec, axis=0 if fm else -1)
            out = [_lin(w_back[r], all_gates, fm, precision) for r in range(groups)]
        else:
            partials = [_lin(w_back[g], rec[g], fm, precision) for g in range(groups)]
            out = [
                sum(
                    lax.slice_in_dim(p, r * width, (r + 1) * width, axis=0 if fm else 1)
                    for p in partials
                )
                for r in range(groups)
            ]
        return out if extra is None else [o + e for o, e in zip(out, extra)]

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
            bufs["step"] = [_zeros((num_gates * sub, batch), cell_like)] * groups
        if w["weight_hr"] is not None:
            bufs["dh"] = _zeros((seq_len, *h_like.shape), h_like)
        dc0 = jnp.split(_loop(dc_last[d], fm), groups, axis=0 if fm else 1) if lstm else None
        dc0 = dc0 or [None] * groups
        # the activations of the first step the backward reaches (the last the direction ran)
        first = 0 if rev[d] else seq_len - 1
        acts0 = [read_acts(g, first, sub) for g in (saved[d]["gates"] or grads)]
        if _PRODUCTS_FIRST:  # the gate gradients of the step before (none yet) and the rest
            step_shape = (num_gates * sub, batch) if fm else (batch, num_gates * sub)
            rec0 = None if per_gate_writes else [_zeros(step_shape, cell_like)] * groups
            extra0 = [jnp.zeros_like(h_like)] * groups if has_extra else None
            init.append(((rec0, extra0), dc0, bufs, acts0))
        else:
            init.append(([jnp.zeros_like(h_like)] * groups, dc0, bufs, acts0))
        # the transposed products of the backward, as _lin takes them: per group, its rows of
        # W_hh (joined: its columns, which multiply all groups' gate gradients)
        w_hh = w["weight_hh"]
        rows = num_gates * sub
        if joined:
            w_back = [
                lax.slice_in_dim(w_hh, g * width, (g + 1) * width, axis=1) for g in range(groups)
            ]
        else:
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
            if _PRODUCTS_FIRST:
                rec, extra = dhs_g
                dhs_g = recurrent_dh(w_back, width, bufs["step"] if rec is None else rec, extra)
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
            # the gradient of the previous h that does not go through W_hh
            terms = [dh_direct_g] if dh_direct_g[0] is not None else []
            terms += [handed_on] if mask is not None else []
            extra = [sum(parts) for parts in zip(*terms)] if has_extra else None
            if _PRODUCTS_FIRST:  # the products start the next step
                rec = None if per_gate_writes else scratch
                new_carry.append(((rec, extra), dc_prev_g, bufs, acts_next))
            else:
                dh_prev_g = recurrent_dh(w_back, width, scratch, extra)
                new_carry.append((dh_prev_g, dc_prev_g, bufs, acts_next))
        return new_carry, None

    carry, _ = lax.scan(body, init, jnp.arange(seq_len), unroll=unroll)

    # Everything that does not feed the recurrence: large matmuls over all steps at once.
    def over_steps(spec_, a, b):
        return jnp.einsum(spec_, a, b, precision=precision)

    input_terms = len(weights) * groups * sum("ih" in roles for _, _, roles in layout)
    dx_batch_major = _dx_batch_major(fm, input_terms, len(weights))
    dweights, dx = [], None
    dh0, dc0 = [], []
    for d, (w, (dh0_g, dc0_g, bufs, _)) in enumerate(zip(weights, carry)):
        if _PRODUCTS_FIRST:  # the products of the last step reached (the first in time)
            rec, extra = dh0_g
            _, _, w_back, _, _, width = loop_in[d]
            dh0_g = recurrent_dh(w_back, width, bufs["step"] if rec is None else rec, extra)
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
                    if not fm:
                        term = over_steps("lng,gi->lni", buf, w_ih)
                    elif dx_batch_major:  # dgates^T @ W_ih as (L, N, H_in), see _dx_batch_major
                        term = over_steps("gln,gi->lni", buf, w_ih)
                    else:  # W_ih^T @ dgates as (H_in, L, N) (see _dx_weight), transposed below
                        term = over_steps("ig,gln->iln", _dx_weight(w_ih), buf)
                    dx = term if dx is None else dx + term
                if w["bias_ih"] is not None:
                    if _BIAS_GRADIENT_AS_PRODUCT:
                        ones = jnp.ones((seq_len, batch), buf.dtype)
                        db = over_steps(f"{all_gates},ln->g", buf, ones)
                    else:
                        db = jnp.sum(buf, axis=(1, 2) if fm else (0, 1))
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
    if fm and not dx_batch_major:
        dx = jnp.transpose(dx, (1, 2, 0))
    dstate0 = (jnp.stack(dh0), jnp.stack(dc0)) if lstm else jnp.stack(dh0)
    return tuple(dweights), dx, dstate0, None


def _dx_batch_major(fm, terms, num_dirs):
    """Whether a feature-major backward forms the input gradient batch-major, ``dgates^T @ W_ih``
    per term into ``(L, N, H_in)``, rather than ``W_ih^T @ dgates`` into ``(H_in, L, N)`` and one
    transpose of the sum (see :func:`_dx_weight`): for a bidirectional layer whose input gradient
    sums more than two matmuls (GRU: ``dr, dz`` and ``dn`` per direction). The layer below takes
    that gradient as two slices, one per direction, and XLA:CPU fuses the sum and the transpose
    into each slice's copy, which then reads every term element by element a page apart (the
    bidirectional GRU 128,32,128,256,2: 23 of 205 ms in a profile). Interleaved A/B, batch-major
    against transposed: bidirectional GRU training step 1.07-1.13x; level or slower elsewhere
    (bidirectional LSTM, two terms, 0.94x; GRU 2-layer one direction with two unit groups, four
    terms, 0.99x; GRU and LSTM H=512 2-layer 0.97-0.98x)."""
    return fm and num_dirs > 1 and terms > 2


def _dx_weight(w_ih):
    """``W_ih^T`` for the feature-major input gradient ``W_ih^T @ dgates``, made a real
    ``(H_in, G*H)`` array (XLA would otherwise fold the transpose into the matmul). On XLA:CPU the
    large ``dx`` GEMM with a transposed operand (that folded form, or ``dgates^T @ W_ih``) ran at
    half to four fifths of the rate of this one, both operands as stored and the ``(H_in, L, N)``
    result transposed after (``benchmarks/matmul_forms.py``); :func:`_dx_batch_major` names the
    layers where the transpose after cost more than that."""
    return lax.optimization_barrier(w_ih.T)
