"""Pure cell steps: the only place where the recurrent equations are written.

Shapes follow torch: ``x (N, H_in)`` or ``(H_in,)``, ``h (N, H_out)``, ``c (N, H_cell)``;
``weight_ih (G*H_cell, H_in)``, ``weight_hh (G*H_cell, H_out)``, ``bias_* (G*H_cell,)``,
``weight_hr (H_out, H_cell)`` where ``G`` is 1 (RNN), 4 (LSTM: i, f, g, o) or 3 (GRU: r, z, n).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from jaxrnn import _checks


def linear(x, w, b=None, precision=None):
    """``x @ w.T + b`` over the last axis of ``x`` (torch's ``F.linear``)."""
    y = jnp.einsum("...i,gi->...g", x, w, precision=precision)
    # the bias broadcast over the leading axes explicitly (jax_numpy_rank_promotion='raise')
    return y if b is None else y + jnp.reshape(b, (1,) * (y.ndim - 1) + jnp.shape(b))


def step_from_gates(mode: str, gx, state, weight_hh, bias_hh=None, weight_hr=None, precision=None):
    """One recurrent step given the input-side pre-activations ``gx = x @ W_ih.T + b_ih``.

    Returns ``(new_state, output)``; ``state`` is ``h`` for RNN/GRU and ``(h, c)`` for LSTM, the
    output is the new ``h``.

    Equations (torch's):

    * RNN: ``h' = act(gx + h W_hh^T + b_hh)`` with ``act`` tanh or relu.
    * LSTM: ``i, f, g, o = split(gx + h W_hh^T + b_hh)``; ``c' = σ(f) c + σ(i) tanh(g)``;
      ``h' = σ(o) tanh(c')``; with a projection ``h' = h' W_hr^T``.
    * GRU: ``r = σ(gx_r + gh_r)``, ``z = σ(gx_z + gh_z)``, ``n = tanh(gx_n + r * gh_n)``,
      ``h' = (1 - z) n + z h`` where ``gh = h W_hh^T + b_hh`` (so ``b_hn`` sits inside ``r * (...)``).
    """
    if mode == "LSTM":
        h, c = state
        gates = gx + linear(h, weight_hh, bias_hh, precision)
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        c_new = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
        if weight_hr is not None:
            h_new = linear(h_new, weight_hr, None, precision)
        return (h_new, c_new), h_new
    h = state
    gh = linear(h, weight_hh, bias_hh, precision)
    if mode == "GRU":
        xr, xz, xn = jnp.split(gx, 3, axis=-1)
        hr, hz, hn = jnp.split(gh, 3, axis=-1)
        r = jax.nn.sigmoid(xr + hr)
        z = jax.nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + r * hn)
        h_new = (1.0 - z) * n + z * h
    elif mode == "RNN_TANH":
        h_new = jnp.tanh(gx + gh)
    elif mode == "RNN_RELU":
        h_new = relu(gx + gh)
    else:
        raise ValueError(f"Unrecognized RNN mode: {mode!r}")
    return h_new, h_new


def relu(x):
    """torch's ``relu``: ``x`` where it is not ``<= 0`` (NaN stays NaN), else 0. Its gradient, by
    autodiff of the ``where``, passes where the result is not ``<= 0``, as torch's
    ``threshold_backward`` (NaN included: ``jax.nn.relu``'s stops there, which changed finite
    gradients of the steps before)."""
    return jnp.where(x <= 0, jnp.zeros((), x.dtype), x)


def cell(mode: str, params: Mapping, input, hx, precision=None):
    """One step of a torch cell: ``params`` holds ``weight_ih``, ``weight_hh`` and optionally
    ``bias_ih``, ``bias_hh`` (and ``weight_hr`` for a projected LSTM). Returns the new state.

    A raw step: its arguments' structure is checked (``hx = (h, c)`` for LSTM; ``hx`` is
    required), not their shapes; :func:`jaxrnn.functional.cell_forward` is the call with all of
    torch's checks and ``hx=None`` as zeros."""
    _checks.check_raw_cell(f"{mode} cell", mode, params, hx)
    gx = linear(input, params["weight_ih"], params.get("bias_ih"), precision)
    new_state, _ = step_from_gates(
        mode, gx, hx, params["weight_hh"], params.get("bias_hh"), params.get("weight_hr"), precision
    )
    return new_state


def rnn_tanh_cell(params: Mapping, input, hx, precision=None):
    """``h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)`` (``torch.nn.RNNCell``)."""
    return cell("RNN_TANH", params, input, hx, precision)


def rnn_relu_cell(params: Mapping, input, hx, precision=None):
    """``h' = relu(x W_ih^T + b_ih + h W_hh^T + b_hh)`` (``torch.nn.RNNCell(nonlinearity='relu')``)."""
    return cell("RNN_RELU", params, input, hx, precision)


def lstm_cell(params: Mapping, input, hx, precision=None):
    """``(h', c')`` of ``torch.nn.LSTMCell``; ``hx = (h, c)``."""
    return cell("LSTM", params, input, hx, precision)


def gru_cell(params: Mapping, input, hx, precision=None):
    """``h'`` of ``torch.nn.GRUCell``."""
    return cell("GRU", params, input, hx, precision)
