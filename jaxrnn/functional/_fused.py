"""One whole layer (all its directions) with a hand-written backward: the fast path of the driver.

Autodiff of a ``lax.scan`` accumulates the weight gradients step by step inside the backward loop
(``L`` thin ``(G*H, N) @ (N, H)`` matmuls) and runs each direction of a bidirectional layer as its
own loop. Here, as cuDNN does, the forward loop saves the gate activations; the backward loop runs
the recurrence for the gate gradients only and ``dW_ih``, ``dW_hh``, the biases and ``dx`` are
then large matmuls over all steps at once. Both directions of a layer advance in the same loop
(two independent chains that XLA may run side by side), the input projection of every step is
one matmul before the loop, and the recurrent weights are sliced and transposed once, outside it.

Every gate is its own array (``G`` matmuls of width ``H`` rather than one of width ``G*H``):
XLA:CPU compiles the gate nonlinearities of sliced operands to slow scalar code, so this layout
is several times faster there.

The equations are torch's (see :func:`jaxrnn.functional.step_from_gates`); the tests check the
outputs and gradients of this path against torch and against autodiff of the plain scan.

Shapes: ``x (L, N, H_in)``; per direction the weights use torch's cell names; the state is stacked
over directions, ``h (D, N, H_out)`` and ``c (D, N, H_cell)``; ``mask (L, N, 1)`` (bool) marks the
valid steps, where the state moves; on the others it stays as it was (so a reverse direction
starts at each sequence's own last valid step).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from jaxrnn import _params

_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")


def layer(mode: str, weights, x, state0, mask=None, *, reverse, precision=None, unroll: int = 1):
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

    Returns:
        ``finals``: per direction the state after its last step (``h`` or ``(h, c)``);
        ``outputs``: per direction ``(L, N, H_out)``, zero on masked steps.
    """
    weights = tuple({k: w.get(k) for k in _WEIGHTS} for w in weights)
    spec = (mode, tuple(bool(r) for r in reverse), precision, int(unroll))
    hs, c_last = _layer_jit(spec, weights, x, state0, mask)
    finals = []
    for d, h in enumerate(hs):
        h_last = h[0] if spec[1][d] else h[-1]
        finals.append((h_last, c_last[d]) if mode == "LSTM" else h_last)
    outputs = hs if mask is None else tuple(jnp.where(mask, h, jnp.zeros((), h.dtype)) for h in hs)
    return finals, list(outputs)


# ----------------------------------------------------------------------------------------------
# helpers


def _at(a, t):
    return lax.dynamic_index_in_dim(a, t, 0, keepdims=False)


def _put(buf, value, t):
    return lax.dynamic_update_index_in_dim(buf, value, t, 0)


def _mm(a, b, precision):
    return jnp.matmul(a, b, precision=precision)


def _gates(w, num_gates):
    """Split a ``(G*H, ...)`` weight or ``(G*H,)`` bias into its ``G`` gate blocks."""
    return None if w is None else jnp.split(w, num_gates, axis=0)


def _shifted(hs, h0, reverse):
    """The state before each step: ``h0`` then ``hs[:-1]`` (reverse direction: the mirror)."""
    if reverse:
        return jnp.concatenate([hs[1:], h0[None]], axis=0)
    return jnp.concatenate([h0[None], hs[:-1]], axis=0)


def _sum_over_steps(a):
    return jnp.sum(a, axis=tuple(range(a.ndim - 1)))


# ----------------------------------------------------------------------------------------------
# forward


def _input_gates(mode, w, x, precision):
    """Per gate ``x @ W_ih_k.T + b_ih_k`` for every step (plus ``b_hh_k`` where it simply adds)."""
    num_gates = _params.GATES[mode]
    w_ih, b_ih, b_hh = (_gates(w[k], num_gates) for k in ("weight_ih", "bias_ih", "bias_hh"))
    out = []
    for k in range(num_gates):
        gx = jnp.einsum("lni,hi->lnh", x, w_ih[k], precision=precision)
        if b_ih is not None:
            gx = gx + (b_ih[k] if mode == "GRU" and k == 2 else b_ih[k] + b_hh[k])
        out.append(gx)
    return out


def _cell(mode, gx, state, w_hh_t, b_hn, w_hr_t, precision):
    """One step of one direction: ``(new_state, h_new, activations to save)``."""
    if mode == "LSTM":
        h, c = state
        pre = [g + _mm(h, w, precision) for g, w in zip(gx, w_hh_t)]
        i, f, o = (jax.nn.sigmoid(pre[k]) for k in (0, 1, 3))
        g = jnp.tanh(pre[2])
        c_new = f * c + i * g
        h_new = o * jnp.tanh(c_new)
        if w_hr_t is not None:
            h_new = _mm(h_new, w_hr_t, precision)
        return (h_new, c_new), h_new, (i, f, g, o)
    h = state
    gh = [_mm(h, w, precision) for w in w_hh_t]
    if mode == "GRU":
        hn = gh[2] if b_hn is None else gh[2] + b_hn
        r = jax.nn.sigmoid(gx[0] + gh[0])
        z = jax.nn.sigmoid(gx[1] + gh[1])
        n = jnp.tanh(gx[2] + r * hn)
        h_new = (1.0 - z) * n + z * h
        return h_new, h_new, (r, z, n, hn)
    pre = gx[0] + gh[0]
    h_new = jnp.tanh(pre) if mode == "RNN_TANH" else jax.nn.relu(pre)
    return h_new, h_new, ()


def _prepare(mode, w):
    """Loop-invariant weights of one direction: per-gate ``W_hh_k.T``, ``b_hn``, ``W_hr.T``."""
    num_gates = _params.GATES[mode]
    w_hh_t = [blk.T for blk in _gates(w["weight_hh"], num_gates)]
    b_hn = None
    if mode == "GRU" and w["bias_hh"] is not None:
        b_hn = _gates(w["bias_hh"], 3)[2]
    w_hr_t = None if w["weight_hr"] is None else w["weight_hr"].T
    return w_hh_t, b_hn, w_hr_t


def _split_state(mode, state, d):
    return (state[0][d], state[1][d]) if mode == "LSTM" else state[d]


def _forward(spec, weights, x, state0, mask, save):
    mode, rev, precision, unroll = spec
    seq_len = x.shape[0]
    lstm = mode == "LSTM"
    gxs = [_input_gates(mode, w, x, precision) for w in weights]
    prepared = [_prepare(mode, w) for w in weights]
    h0 = state0[0] if lstm else state0
    num_saved = 4 if save and mode in ("LSTM", "GRU") else 0

    def empty(like):
        return jnp.zeros((seq_len, *like.shape), like.dtype)

    init = []
    for d in range(len(weights)):
        s0 = _split_state(mode, state0, d)
        act_like = s0[1] if lstm else s0
        bufs = {"h": empty(h0[d]), "act": [empty(act_like) for _ in range(num_saved)]}
        if save and lstm:
            bufs["c"] = empty(s0[1])
        init.append((s0, bufs))

    def body(carry, s):
        new_carry = []
        for d, (state, bufs) in enumerate(carry):
            t = seq_len - 1 - s if rev[d] else s
            gx = [_at(g, t) for g in gxs[d]]
            new, h_new, acts = _cell(mode, gx, state, *prepared[d], precision)
            if mask is not None:
                m = _at(mask, t)
                new = jax.tree.map(lambda n, o, m=m: jnp.where(m, n, o), new, state)
            bufs = dict(bufs)
            bufs["h"] = _put(bufs["h"], new[0] if lstm else new, t)
            bufs["act"] = [_put(b, a, t) for b, a in zip(bufs["act"], acts)]
            if "c" in bufs:
                bufs["c"] = _put(bufs["c"], new[1], t)
            new_carry.append((new, bufs))
        return new_carry, None

    carry, _ = lax.scan(body, init, jnp.arange(seq_len), unroll=unroll)
    hs = tuple(bufs["h"] for _, bufs in carry)
    c_last = jnp.stack([state[1] for state, _ in carry]) if lstm else None
    saved = tuple((bufs["act"], bufs.get("c")) for _, bufs in carry)
    return (hs, c_last), saved


# ----------------------------------------------------------------------------------------------
# backward


def _cell_backward(mode, dh, dc, acts, c_t, c_prev, h_t, h_prev, w_hr, precision):
    """Gradients of one step given those reaching the new state (already masked).

    Returns ``(dgates_x, dgates_h, dh_direct, dc_prev)``: per gate the gradients of the input-side
    and the recurrent pre-activations (the same except for GRU's ``n`` gate), the part of the
    gradient of the previous ``h`` that does not go through ``W_hh``, and that of the previous
    ``c``.
    """
    if mode == "LSTM":
        dhc = dh if w_hr is None else _mm(dh, w_hr, precision)
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
    mode, rev, precision, unroll = spec
    seq_len = x.shape[0]
    lstm, gru = mode == "LSTM", mode == "GRU"
    num_gates = _params.GATES[mode]
    hs, _ = out
    dhs, dc_last = cts
    h0 = state0[0] if lstm else state0
    c0 = state0[1] if lstm else None

    def empty(like):
        return jnp.zeros((seq_len, *like.shape), like.dtype)

    def before(seq, init, t, reverse):
        """The state before step ``t`` (``init`` at the direction's first step)."""
        first = seq_len - 1 if reverse else 0
        prev = jnp.clip(t + 1 if reverse else t - 1, 0, seq_len - 1)
        return jnp.where(t == first, init, _at(seq, prev))

    init = []
    for d, w in enumerate(weights):
        cell_like = c0[d] if lstm else h0[d]
        bufs = {"dgx": [empty(cell_like) for _ in range(num_gates)]}
        if gru:
            bufs["dgh_n"] = empty(cell_like)
        if w["weight_hr"] is not None:
            bufs["dh"] = empty(h0[d])
        init.append((jnp.zeros_like(h0[d]), dc_last[d] if lstm else None, bufs))

    def body(carry, s):
        new_carry = []
        for d, (dh, dc, bufs) in enumerate(carry):
            t = s if rev[d] else seq_len - 1 - s
            acts, cs = saved[d]
            dh = dh + _at(dhs[d], t)
            dh_c, dc_c = dh, dc
            if mask is not None:
                m = _at(mask, t)
                zero = jnp.zeros((), dh.dtype)
                dh_c = jnp.where(m, dh, zero)
                dc_c = None if dc is None else jnp.where(m, dc, zero)
            dgx, dgh, dh_direct, dc_prev = _cell_backward(
                mode,
                dh_c,
                dc_c,
                [_at(a, t) for a in acts],
                _at(cs, t) if lstm else None,
                before(cs, c0[d], t, rev[d]) if lstm else None,
                _at(hs[d], t) if not (lstm or gru) else None,
                before(hs[d], h0[d], t, rev[d]) if gru else None,
                weights[d]["weight_hr"],
                precision,
            )
            dh_prev = _mm(jnp.concatenate(dgh, axis=-1), weights[d]["weight_hh"], precision)
            if dh_direct is not None:
                dh_prev = dh_prev + dh_direct
            if mask is not None:  # masked steps hand the gradient on to the kept state
                dh_prev = dh_prev + jnp.where(m, zero, dh)
                if lstm:
                    dc_prev = dc_prev + jnp.where(m, zero, dc)
            bufs = dict(bufs)
            bufs["dgx"] = [_put(b, g, t) for b, g in zip(bufs["dgx"], dgx)]
            if gru:
                bufs["dgh_n"] = _put(bufs["dgh_n"], dgh[2], t)
            if "dh" in bufs:
                bufs["dh"] = _put(bufs["dh"], dh_c, t)
            new_carry.append((dh_prev, dc_prev, bufs))
        return new_carry, None

    carry, _ = lax.scan(body, init, jnp.arange(seq_len), unroll=unroll)

    # Everything that does not feed the recurrence: large matmuls over all steps at once.
    def over_steps(spec_, a, b):
        return jnp.einsum(spec_, a, b, precision=precision)

    dweights, dx = [], None
    dh0, dc0 = [], []
    for d, (w, (dh0_d, dc0_d, bufs)) in enumerate(zip(weights, carry)):
        dgx = bufs["dgx"]
        dgh = dgx[:2] + [bufs["dgh_n"]] if gru else dgx
        h_before = _shifted(hs[d], h0[d], rev[d])
        w_ih = _gates(w["weight_ih"], num_gates)
        dw = {
            "weight_ih": jnp.concatenate([over_steps("lnh,lni->hi", g, x) for g in dgx]),
            "weight_hh": jnp.concatenate([over_steps("lnh,lnp->hp", g, h_before) for g in dgh]),
            "bias_ih": None,
            "bias_hh": None,
            "weight_hr": None,
        }
        if w["bias_ih"] is not None:
            dw["bias_ih"] = jnp.concatenate([_sum_over_steps(g) for g in dgx])
            dw["bias_hh"] = jnp.concatenate([_sum_over_steps(g) for g in dgh])
        if w["weight_hr"] is not None:
            acts, cs = saved[d]
            h_cell = acts[3] * jnp.tanh(cs)
            dw["weight_hr"] = over_steps("lnp,lnh->ph", bufs["dh"], h_cell)
        for g, wk in zip(dgx, w_ih):
            term = over_steps("lnh,hi->lni", g, wk)
            dx = term if dx is None else dx + term
        dweights.append(dw)
        dh0.append(dh0_d)
        dc0.append(dc0_d)
    dstate0 = (jnp.stack(dh0), jnp.stack(dc0)) if lstm else jnp.stack(dh0)
    return tuple(dweights), dx, dstate0, None


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
