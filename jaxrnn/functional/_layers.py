"""The scan driver: layers, directions, variable lengths and dropout over a pure cell step."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import export as _export
from jax import lax

from jaxrnn import _checks, _params
from jaxrnn.functional import _cells, _fused
from jaxrnn.functional._cells import linear, step_from_gates
from jaxrnn.utils import rnn as _packing


def scan_direction(
    mode: str,
    p: Mapping,
    x,
    state0,
    mask=None,
    *,
    reverse: bool = False,
    precision=None,
    unroll: int = 1,
    remat: bool | int = False,
):
    """Run one direction of one layer over time-major ``x (L, N, H_in)``.

    ``p`` holds the cell names (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``,
    ``weight_hr``; absent ones ``None``). ``mask (L, N, 1)`` marks valid steps: the state does not
    move and the output is zero on invalid ones, so a reverse scan starts at each sequence's own
    last valid step. Returns ``(final_state, outputs (L, N, H_out))``.
    """
    w_hh, b_hh, w_hr = p["weight_hh"], p.get("bias_hh"), p.get("weight_hr")

    def project(xs):  # the input projection, for all steps at once (or one remat chunk)
        x_, m_ = xs  # m_ is None without a mask: an empty pytree, which scans as nothing
        return linear(x_, p["weight_ih"], p.get("bias_ih"), precision), m_

    def step(state, xs):
        gx_t, m_t = xs
        new, out = step_from_gates(mode, gx_t, state, w_hh, b_hh, w_hr, precision)
        if m_t is not None:
            new = jax.tree.map(lambda n, o: jnp.where(m_t, n, o), new, state)
            out = jnp.where(m_t, out, jnp.zeros((), out.dtype))
        return new, out

    return time_scan(
        step, state0, (x, mask), reverse=reverse, unroll=unroll, remat=remat, prologue=project
    )


# compiled once per configuration and shapes, as the fused path's layer: an eager call would
# otherwise trace and compile its fresh closures' scans anew every time
_scan_direction_jit = jax.jit(
    scan_direction, static_argnums=0, static_argnames=("reverse", "precision", "unroll", "remat")
)


def _mesh_axes(a) -> frozenset:
    """The mesh axes ``a`` varies over inside ``jax.shard_map`` (none outside, or for ``None``)."""
    if a is None:
        return frozenset()
    t = jax.typeof(a)
    axes = getattr(t, "vma", None)  # newer JAX
    if axes is None:
        axes = getattr(getattr(t, "manual_axis_type", None), "varying", frozenset())
    return frozenset(axes)


def _varying_as(state, *refs):
    """``state`` cast to vary over every mesh axis that any of ``refs`` varies over: inside
    ``jax.shard_map`` a loop's carry must have the same type before and after a step, and the
    step makes it vary as the input, the weights, the mask and the dropout key do (zeros or a
    replicated ``h_0`` would not). Outside ``shard_map``: ``state`` unchanged."""
    axes = frozenset().union(*(_mesh_axes(r) for r in refs))

    def cast(s):
        missing = tuple(sorted(axes - _mesh_axes(s)))
        return lax.pcast(s, missing, to="varying") if missing else s

    return jax.tree.map(cast, state) if axes else state


def run_layer(
    mode: str,
    ps,
    x,
    state0,
    mask=None,
    *,
    precision=None,
    unroll=1,
    remat=False,
    stacked=False,
    name: str = "RNN",
):
    """Every direction of one layer: ``ps`` holds one cell-named dict per direction (the second
    runs in reverse), ``state0`` is stacked over directions. Returns ``(finals, outputs)``, one
    entry per direction.

    Without ``remat`` this is the fused whole-layer path (:mod:`jaxrnn.functional._fused`: both
    directions in one loop, weight and input gradients as matmuls over all steps); with it, one
    rematerialised :func:`scan_direction` per direction. Symbolic sizes (``jax.export`` with
    ``symbolic_shape``), which the fused path's tuning cannot compare, take the plain
    :func:`scan_direction` too (``remat`` then needs a concrete sequence length). ``stacked``:
    ``x`` is the output of the layer below (see :func:`jaxrnn.functional._fused.layer`).
    ``name`` names the module in errors.
    """
    symbolic = any(_export.is_symbolic_dim(d) for d in x.shape)
    if symbolic and remat:
        _checks.check_remat_length(name, x.shape[0])
    if not remat and not symbolic:
        reverse = [d == 1 for d in range(len(ps))]
        return _fused.layer(
            mode,
            ps,
            x,
            state0,
            mask,
            reverse=reverse,
            precision=precision,
            unroll=unroll,
            stacked=stacked,
        )
    finals, outs = [], []
    for d, p in enumerate(ps):
        s0 = jax.tree.map(lambda s, d=d: s[d], state0)
        final, out = _scan_direction_jit(
            mode, p, x, s0, mask, reverse=d == 1, precision=precision, unroll=unroll, remat=remat
        )
        finals.append(final)
        outs.append(out)
    return finals, outs


def time_scan(step, init, xs, *, reverse=False, unroll=1, remat=False, prologue=None):
    """``lax.scan`` over time, optionally rematerialised in chunks.

    ``prologue`` (optional) maps a time slice of ``xs`` to what ``step`` consumes (e.g. the input
    projection); it runs once over all steps, or once per chunk inside the rematerialised region.

    With ``remat`` (``True`` for chunks of ``ceil(sqrt(L))`` steps, or an int chunk length) the
    backward pass stores the carry only at chunk boundaries and recomputes each chunk (its
    prologue included), so the saved activations grow as ``O(L / chunk + chunk)``
    (``O(sqrt(L))``) instead of ``O(L)``.
    """
    prologue = prologue or (lambda a: a)
    length = jax.tree.leaves(xs)[0].shape[0]
    chunk = remat_chunk(remat, length)
    if chunk <= 1 or chunk >= length:
        return lax.scan(step, init, prologue(xs), reverse=reverse, unroll=unroll)
    n = length // chunk
    main = n * chunk
    head = jax.tree.map(lambda a: a[:main].reshape(n, chunk, *a.shape[1:]), xs)
    tail = jax.tree.map(lambda a: a[main:], xs)

    @jax.checkpoint
    def inner(carry, x_chunk):
        return lax.scan(step, carry, prologue(x_chunk), reverse=reverse, unroll=unroll)

    if not reverse:
        carry, ys_head = lax.scan(inner, init, head)
        carry, ys_tail = lax.scan(step, carry, prologue(tail), unroll=unroll)
    else:
        carry, ys_tail = lax.scan(step, init, prologue(tail), reverse=True, unroll=unroll)
        carry, ys_head = lax.scan(inner, carry, head, reverse=True)
    ys = jax.tree.map(
        lambda h, t: jnp.concatenate([h.reshape(main, *h.shape[2:]), t], axis=0), ys_head, ys_tail
    )
    return carry, ys


def remat_chunk(remat, length: int) -> int:
    """``remat=`` as a chunk length for ``length`` steps: ``True`` is ``ceil(sqrt(length))``,
    ``False`` 0 (none), an int itself. (``True == 1`` in Python, yet a chunk of 1 step is no
    checkpoint at all: compiled programs are cached by this number, never by the flag.)"""
    if isinstance(remat, (bool, np.bool_)):  # numpy's True too (int() of it is a chunk of 1)
        return (math.isqrt(max(length - 1, 0)) + 1) if remat else 0
    return int(remat or 0)


def rnn(
    params: Mapping,
    input,
    hx=None,
    *,
    mode: str,
    batch_first: bool = False,
    dropout: float = 0.0,
    training: bool = False,
    dropout_key=None,
    seq_lengths=None,
    dtype=None,
    precision=None,
    unroll: int = 1,
    remat: bool | int = False,
    name: str | None = None,
):
    """Multi-layer, optionally bidirectional RNN/LSTM/GRU over torch's parameter tree.

    The configuration (``input_size``, ``hidden_size``, ``num_layers``, ``bias``,
    ``bidirectional``, ``proj_size``) is read off the parameter names and shapes.

    Inputs: input, hx
        * **input**: ``(L, N, H_in)``, ``(N, L, H_in)`` with ``batch_first=True``, or ``(L, H_in)``
          unbatched; or a :class:`jaxrnn.utils.rnn.PackedSequence` (then ``output`` is one too,
          ``hx``/``h_n`` are in the caller's batch order and ``batch_first`` does not apply).
        * **hx**: ``h_0 (D*num_layers, N, H_out)`` (LSTM: ``(h_0, c_0)`` with ``c_0
          (D*num_layers, N, H_cell)``), or without ``N`` for unbatched input; zeros if ``None``.
        * **seq_lengths**: optional int ``(N,)``; steps at ``t >= seq_lengths[n]`` are padding.
          A length of 0 gives zero outputs and ``h_n = h_0`` for that sequence.

    Outputs: output, h_n
        * **output**: ``(L, N, D*H_out)`` (``(N, L, D*H_out)`` with ``batch_first``), zero at
          padded steps.
        * **h_n**: ``(D*num_layers, N, H_out)``, each sequence's state after its last valid step
          (LSTM: ``(h_n, c_n)``), ordered layer 0 forward, layer 0 reverse, layer 1 forward, ...

    where ``N`` = batch size, ``L`` = sequence length, ``D`` = 2 if bidirectional else 1,
    ``H_in`` = input_size, ``H_cell`` = hidden_size, ``H_out`` = proj_size or hidden_size.

    ``remat`` trades recompute for memory on long sequences: ``True`` for chunks of
    ``ceil(sqrt(L))`` steps, or an int chunk length; the backward pass then keeps the carry at
    chunk boundaries and recomputes each chunk, ``O(sqrt(L))`` saved activations instead of
    ``O(L)``.

    Dtypes: everything runs in one compute dtype, ``dtype`` if given, else the promoted dtype
    of ``input`` and ``weight_ih_l0``. Input, ``hx`` and parameters are cast to it (so float32
    parameters with ``dtype=jnp.bfloat16`` give bfloat16 matmuls), the carry (``h`` and the LSTM
    cell state ``c``) stays in it through the scan, and ``output``/``h_n`` come back in it.
    Gradients reach the parameters in their own dtype. No float32 copy of ``c`` is kept.

    Dropout with probability ``dropout`` is applied to the outputs of every layer but the last
    when ``training`` is true (needs ``dropout_key``).
    """
    _checks.check_mode(name or "rnn", mode)
    name = name or {"RNN_TANH": "RNN", "RNN_RELU": "RNN"}.get(mode, mode)
    options = dict(
        mode=mode,
        dropout=dropout,
        training=training,
        dropout_key=dropout_key,
        dtype=dtype,
        precision=precision,
        unroll=unroll,
        remat=remat,
        name=name,
    )
    if _checks.is_torch_packed(input):  # torch's own, from its fields (see PackedSequence)
        input = _packing.PackedSequence(*input)
    if isinstance(input, _packing.PackedSequence):  # runs its padded view; see jaxrnn.utils.rnn
        forward = functools.partial(_rnn, params, packed=True, **options)
        return _packing.rnn_packed(forward, input, hx, seq_lengths, name)
    return _rnn(params, input, hx, batch_first=batch_first, seq_lengths=seq_lengths, **options)


def _rnn(
    params,
    input,
    hx,
    *,
    mode,
    batch_first=False,
    dropout,
    training,
    dropout_key,
    seq_lengths=None,
    dtype,
    precision,
    unroll,
    remat,
    name,
    packed=False,
):
    """:func:`rnn` on an array ``input`` (``packed``: the padded view of a packed sequence, whose
    ``hx`` torch checks for its size only, not first for its rank; :func:`rnn` checked ``mode``)."""
    _checks.check_params(name, params, {"weight_ih_l0": None, "weight_hh_l0": None})
    _checks.check_no_torch_tensors(name, params)
    params = _checks.unwrapped_params(params)
    _checks.check_matrix_params(name, params, ("weight_ih_l0", "weight_hh_l0"))
    _checks.check_gate_rows(name, mode, params, "_l0")
    _checks.check_loop_options(name, unroll, remat)
    precision = _checks.check_precision(name, precision)
    cfg = _params.infer_layer_config(mode, params)
    _checks.check_projection(name, cfg["proj_size"], cfg["hidden_size"])
    expected = _params.layer_param_shapes(
        mode,
        cfg["input_size"],
        cfg["hidden_size"],
        cfg["num_layers"],
        cfg["bias"],
        cfg["bidirectional"],
        cfg["proj_size"],
    )
    _checks.check_params(name, params, expected)
    what = _params.torch_repr(_params.torch_class(mode), cfg)
    _checks.check_no_unexpected_params(name, params, expected, what)
    # torch's order: the ranks of the input and hx, the input's dtype and size, hx's sizes and
    # dtypes, the sequence length
    x = _checks.as_array(name, "input", input, floating=False)
    batched = packed or _checks.check_layer_rank(name, mode, x.ndim)
    if hx is not None:
        hx = _checks.layer_hidden_arrays(name, mode, hx, batched=batched, packed=packed)
    _checks.check_layer_input(
        name, x.shape, x.dtype, cfg["input_size"], params["weight_ih_l0"].dtype
    )
    num_layers, hidden_size, proj_size = cfg["num_layers"], cfg["hidden_size"], cfg["proj_size"]
    num_directions = 2 if cfg["bidirectional"] else 1
    if training and num_layers > 1:  # as torch's, only where dropout acts
        _checks.check_dropout_rate(name, dropout)
    _checks.check_dropout_key(name, dropout, training, num_layers, dropout_key)

    if not batched:
        seq_len, batch = x.shape[0], 1
    else:
        seq_len, batch = (x.shape[1], x.shape[0]) if batch_first else x.shape[:2]
    if hx is not None:
        _checks.check_layer_hidden(
            name,
            mode,
            hx,
            batched=batched,
            batch_size=batch,
            num_layers=num_layers,
            num_directions=num_directions,
            hidden_size=hidden_size,
            proj_size=proj_size,
        )
    _checks.check_seq_len(name, seq_len)
    lengths = None
    if seq_lengths is not None:
        lengths = _checks.check_seq_lengths(name, seq_lengths, batch, seq_len, batched)
    if isinstance(unroll, (bool, np.bool_)):  # lax.scan's meaning: all steps, or one
        unroll = seq_len if unroll else 1
    if isinstance(seq_len, int):  # (a symbolic length with remat is refused in run_layer)
        remat = remat_chunk(remat, seq_len)
    drops = _params.dropout_acts(training, dropout, num_layers)
    spec = _LayersSpec(
        mode=mode,
        batched=batched,
        batch_first=bool(batch_first),
        compute=_checks.compute_dtype(name, dtype, x, params["weight_ih_l0"]),
        num_layers=num_layers,
        num_directions=num_directions,
        out_size=proj_size or hidden_size,
        hidden_size=hidden_size,
        dropout=float(dropout) if drops else 0.0,
        precision=precision,
        unroll=unroll,
        remat=remat,
        name=name,
    )
    try:
        # the parameters the layers take (another entry, of another module, is not an argument)
        params = {k: params[k] for k in expected}
        return _layers_jit(spec, params, x, hx, lengths, dropout_key if drops else None)
    except TypeError as e:  # raised where JAX differentiates the compiled program, not inside
        _checks.reraise_forward_mode(name, e)
        raise


class _LayersSpec(NamedTuple):
    """What :func:`_layers` is compiled for besides its arrays' shapes (checked by :func:`_rnn`;
    hashable, a static argument)."""

    mode: str
    batched: bool
    batch_first: bool
    compute: Any  # the compute dtype
    num_layers: int
    num_directions: int
    out_size: int  # H_out
    hidden_size: int  # H_cell
    dropout: float  # 0 unless dropout acts (training, more than one layer)
    precision: Any
    unroll: int
    remat: bool | int  # a chunk length (remat_chunk); the flag only with a symbolic length
    name: str


def _layers(spec: _LayersSpec, params, x, hx, lengths, dropout_key):
    """The computation of :func:`_rnn` on checked arguments: ``x`` as given (batch-first or
    unbatched as the caller's), ``hx`` ``None`` or checked arrays, ``lengths`` ``None`` or int32
    ``(N,)``, ``dropout_key`` ``None`` unless dropout acts."""
    mode, compute, num_directions = spec.mode, spec.compute, spec.num_directions
    if not spec.batched:
        x = x[:, None]
    elif spec.batch_first:
        x = jnp.swapaxes(x, 0, 1)
    seq_len, batch = x.shape[0], x.shape[1]
    lead = spec.num_layers * num_directions
    if hx is None:
        h0 = jnp.zeros((lead, batch, spec.out_size), compute)
        state = (h0, jnp.zeros((lead, batch, spec.hidden_size), compute)) if mode == "LSTM" else h0
    else:
        state = hx if spec.batched else jax.tree.map(lambda s: s[:, None], hx)

    mask = None
    if lengths is not None:
        mask = (jnp.arange(seq_len)[:, None] < lengths[None, :])[..., None]

    x = x.astype(compute)
    state = jax.tree.map(lambda s: s.astype(compute), state)
    # inside shard_map, everything the loops carry or differentiate varies as the step does (the
    # weights too: their cotangents from the fused backward vary, and JAX sums them back where
    # a weight came in replicated, as for any replicated value used with sharded data)
    refs = (x, mask, dropout_key, *params.values(), *jax.tree.leaves(state))
    state, params, x = _varying_as((state, dict(params), x), *refs)
    if mask is not None:  # padding never reaches the cell, so NaN there cannot leak anywhere
        x = jnp.where(mask, x, jnp.zeros((), compute))

    finals = []
    layer_input = x
    for layer in range(spec.num_layers):
        ps = [
            {
                k: (None if v is None else jnp.asarray(v).astype(compute))
                for k, v in _params.split_layer(params, layer, direction).items()
            }
            for direction in range(num_directions)
        ]
        lo = layer * num_directions
        s0 = jax.tree.map(lambda s, lo=lo: s[lo : lo + num_directions], state)
        layer_finals, outs = run_layer(
            mode,
            ps,
            layer_input,
            s0,
            mask,
            precision=spec.precision,
            unroll=spec.unroll,
            remat=spec.remat,
            stacked=layer > 0,
            name=spec.name,
        )
        finals.extend(layer_finals)
        layer_input = outs[0] if num_directions == 1 else jnp.concatenate(outs, axis=-1)
        if spec.dropout > 0 and layer < spec.num_layers - 1:
            dropout_key, sub = jax.random.split(dropout_key)
            layer_input = dropout_layer(sub, layer_input, spec.dropout)

    output = layer_input
    if mode == "LSTM":
        h_n = (jnp.stack([f[0] for f in finals]), jnp.stack([f[1] for f in finals]))
    else:
        h_n = jnp.stack(finals)
    if not spec.batched:
        output = output[:, 0]
        h_n = jax.tree.map(lambda s: s[:, 0], h_n)
    elif spec.batch_first:
        output = jnp.swapaxes(output, 0, 1)
    return output, h_n


# one compiled program per configuration and shapes: an eager call is one dispatch (its checks
# aside) instead of dozens of operations, each dispatched on its own; inside an outer jit (or
# grad, vmap, shard_map) it is traced once per shapes and inlined
_layers_jit = jax.jit(_layers, static_argnums=0)


def dropout_layer(key, x, rate: float):
    """Inverted dropout as ``torch.nn.functional.dropout``: ``x`` times a mask of ``1/(1-rate)``
    and zeros (``rate == 1``: ``x * 0``), so that NaN and inf stay NaN where dropped, as torch's.

    The scale is torch's to the bit: its CPU dropout divides a mask of ones by ``1 - p`` (``p`` a
    double), in float32 for float32, float16 and bfloat16 input (rounded to the input's dtype
    after) and in float64 for float64."""
    _checks.check_dropout_rate("dropout_layer", rate)
    if rate >= 1.0:
        return x * jnp.zeros((), x.dtype)
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    opmath = jnp.promote_types(x.dtype, jnp.float32)
    scale = (jnp.ones((), opmath) / jnp.asarray(1.0 - float(rate), opmath)).astype(x.dtype)
    return x * jnp.where(keep, scale, jnp.zeros((), x.dtype))


def rnn_tanh(params, input, hx=None, **kwargs):
    """:func:`rnn` with ``mode='RNN_TANH'`` (``torch.nn.RNN``)."""
    return rnn(params, input, hx, mode="RNN_TANH", **kwargs)


def rnn_relu(params, input, hx=None, **kwargs):
    """:func:`rnn` with ``mode='RNN_RELU'`` (``torch.nn.RNN(nonlinearity='relu')``)."""
    return rnn(params, input, hx, mode="RNN_RELU", **kwargs)


def lstm(params, input, hx=None, **kwargs):
    """:func:`rnn` with ``mode='LSTM'`` (``torch.nn.LSTM``); returns ``output, (h_n, c_n)``."""
    return rnn(params, input, hx, mode="LSTM", **kwargs)


def gru(params, input, hx=None, **kwargs):
    """:func:`rnn` with ``mode='GRU'`` (``torch.nn.GRU``)."""
    return rnn(params, input, hx, mode="GRU", **kwargs)


def cell_forward(
    mode: str,
    params: Mapping,
    input,
    hx=None,
    *,
    dtype=None,
    precision=None,
    name: str | None = None,
):
    """A torch cell call with torch's checks: batched ``(N, H_in)`` or unbatched ``(H_in,)``
    input, ``hx`` defaulting to zeros; returns ``h'`` (LSTM: ``(h', c')``) shaped like ``hx``.

    Input, ``hx`` and parameters are cast to the compute dtype (``dtype``, else the promoted
    dtype of ``input`` and ``weight_ih``); the new state comes back in it, as in :func:`rnn`."""
    _checks.check_mode(name or "cell_forward", mode)
    name = name or ("LSTMCell" if mode == "LSTM" else "GRUCell" if mode == "GRU" else "RNNCell")
    _checks.check_params(name, params, {"weight_ih": None, "weight_hh": None})
    _checks.check_no_torch_tensors(name, params)
    _checks.check_matrix_params(name, params, ("weight_ih", "weight_hh"))
    hidden_size = params["weight_hh"].shape[1]
    input_size = params["weight_ih"].shape[1]
    bias = any(params.get(k) is not None for k in ("bias_ih", "bias_hh"))
    expected = _params.cell_param_shapes(mode, input_size, hidden_size, bias)
    _checks.check_params(name, params, expected)
    config = dict(input_size=input_size, hidden_size=hidden_size, bias=bias)
    what = _params.torch_repr(_params.torch_class(mode, cell=True), config)
    _checks.check_no_unexpected_params(name, params, expected, what)
    x, state, batched = _checks.check_cell_call(name, mode, input, hx, input_size, hidden_size)
    compute = _checks.compute_dtype(name, dtype, x, params["weight_ih"])
    precision = _checks.check_precision(name, precision)
    spec = (mode, batched, compute, hidden_size, precision)
    return _cell_step_jit(spec, {k: params[k] for k in expected}, x, state)


def _cell_step(spec, params, x, state):
    """The computation of :func:`cell_forward` on checked arguments (``state`` ``None`` for
    zeros)."""
    mode, batched, compute, hidden_size, precision = spec
    if not batched:
        x = x[None]
        state = None if state is None else jax.tree.map(lambda s: s[None], state)
    if state is None:
        zeros = jnp.zeros((x.shape[0], hidden_size), compute)
        state = (zeros, zeros) if mode == "LSTM" else zeros
    p = {k: (None if v is None else jnp.asarray(v).astype(compute)) for k, v in params.items()}
    new = _cells.cell(
        mode, p, x.astype(compute), jax.tree.map(lambda s: s.astype(compute), state), precision
    )
    return new if batched else jax.tree.map(lambda s: s[0], new)


# as _layers_jit: an eager step is one dispatch
_cell_step_jit = jax.jit(_cell_step, static_argnums=0)
