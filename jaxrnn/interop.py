"""Interop with Flax's own recurrent API: cell adapters and weight converters.

Two jobs, both thin:

* **Adapters.** jaxrnn's cells keep torch's call, ``cell(input, hx) -> hx'``. Flax's
  ``flax.linen.RNN`` / ``flax.linen.Bidirectional`` / ``flax.nnx.RNN`` / ``flax.nnx.Bidirectional``
  expect the ``RNNCellBase`` protocol instead: ``cell(carry, x) -> (carry, y)``,
  ``initialize_carry`` and ``num_feature_axes``. :func:`as_flax_cell` wraps a jaxrnn cell (NNX or
  Linen) in :class:`FlaxCellAdapter` (NNX) or :class:`LinenCellAdapter` (Linen), which translate
  between the two. The LSTM carry follows **Flax's order** ``(c, h)`` (torch's ``hx`` is
  ``(h, c)``), so an adapter is a drop-in replacement for ``flax.*.LSTMCell`` and takes the
  same ``initial_carry``. Any number of leading batch axes is accepted, as in Flax.
* **Weight converters.** :func:`from_flax` reads the weights of a Flax built-in cell (linen or
  nnx ``LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell``, ``SimpleCell``) into torch's cell layout
  (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``), which is jaxrnn's; :func:`to_flax`
  goes back. Flax kernels are ``(in, out)``, torch's weights ``(out, in)``; the gate orders agree
  (LSTM i, f, g, o; GRU r, z, n).

How the biases map (``b`` = Flax bias, ``0`` = zeros):

=====================  =================================  ========================================
Flax cell              Flax -> torch (exact*)             torch -> Flax
=====================  =================================  ========================================
LSTM (all four)        ``bias_ih = 0``, ``bias_hh = b_h``  ``b_h = bias_ih + bias_hh`` (folded)
linen ``GRUCell``      ``bias_ih = b_i``,                 ``b_ir, b_iz`` folded, ``b_in = b_in``,
                       ``bias_hh = (0, 0, b_hn)``         ``b_hn = b_hn``
nnx ``GRUCell``        ``bias_ih = b_i``, ``bias_hh = 0``  ``b_r, b_z`` folded; **needs**
                                                          ``b_hn == 0`` (it has no ``b_hn``:
                                                          ``ValueError`` otherwise)
``SimpleCell``         ``bias_ih = b_i``, ``bias_hh = 0``  ``b_i = bias_ih + bias_hh`` (folded)
=====================  =================================  ========================================

``*`` Up to float rounding for ``SimpleCell(residual=True)``
(``h' = act(W_i x + b_i + W_h h + h)``), which maps to ``weight_hh = W_h^T + I`` (both ways).
Folding is exact in real arithmetic, so outputs agree to float rounding; a round trip
torch -> Flax -> torch returns the folded biases (``bias_ih`` zero for LSTM), not the originals.
What cannot be represented raises ``ValueError``: custom ``gate_fn``/``activation_fn`` (jaxrnn
has sigmoid/tanh, and tanh or relu for ``SimpleCell``), an LSTM projection (``weight_hr``),
``b_hn != 0`` into nnx ``GRUCell``.

Example:
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from flax import nnx
    >>> import jaxrnn
    >>> from jaxrnn import interop
    >>> flax_cell = nnx.GRUCell(3, 5, rngs=nnx.Rngs(0))
    >>> cell = interop.cell_from_flax(flax_cell)  # a jaxrnn.GRUCell with the same function
    >>> x, h = jnp.ones((2, 3)), jnp.zeros((2, 5))
    >>> bool(np.allclose(cell(x, h), flax_cell(h, x)[0], atol=1e-6))
    True
    >>> seq = nnx.RNN(interop.as_flax_cell(cell))  # and back inside Flax's own scan
    >>> seq(jnp.ones((2, 7, 3))).shape
    (2, 7, 5)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrnn import _checks, _params, convert
from jaxrnn import linen as _jrl
from jaxrnn import nnx as _jrx

__all__ = [
    "FlaxCellAdapter",
    "LinenCellAdapter",
    "as_flax_cell",
    "cell_from_flax",
    "flax_cell_mode",
    "from_flax",
    "to_flax",
]


# ---------------------------------------------------------------------------------------------
# adapters: torch's cell(input, hx) -> Flax's cell(carry, x) -> (carry, y)


def _flax_step(cell, mode: str, carry, inputs):
    """One step of ``cell`` (torch's call) under Flax's protocol, any number of batch axes.

    ``y`` is in the cell's compute dtype; the new carry keeps the dtype the carry came in with,
    so a scan's carry type never changes (e.g. a float32 carry with ``dtype=jnp.bfloat16``)."""
    batch_shape = inputs.shape[:-1]
    lead = (-1,) if len(batch_shape) > 1 else batch_shape
    flat = lambda a: a.reshape(*lead, a.shape[-1])  # noqa: E731
    unflat = lambda a, like: a.reshape(*batch_shape, a.shape[-1]).astype(like.dtype)  # noqa: E731
    if mode == "LSTM":
        c, h = carry  # Flax's order
        h_new, c_new = cell(flat(inputs), (flat(h), flat(c)))
        y = h_new.reshape(*batch_shape, h_new.shape[-1])
        return (unflat(c_new, c), unflat(h_new, h)), y
    h_new = cell(flat(inputs), flat(carry))
    return unflat(h_new, carry), h_new.reshape(*batch_shape, h_new.shape[-1])


def _zero_carry(mode: str, input_shape, hidden_size: int, dtype, init=None, keys=None):
    shape = tuple(input_shape[:-1]) + (hidden_size,)
    if init is None:
        zeros = jnp.zeros(shape, dtype)
        return (zeros, zeros) if mode == "LSTM" else zeros
    if mode == "LSTM":
        return init(keys(), shape, dtype), init(keys(), shape, dtype)
    return init(keys(), shape, dtype)


def _carry_dtype(cell):
    return cell.dtype if cell.dtype is not None else cell.param_dtype


class FlaxCellAdapter(nnx.RNNCellBase):
    """A jaxrnn NNX cell under Flax NNX's ``RNNCellBase`` protocol, for ``flax.nnx.RNN``.

    The wrapped cell is shared, not copied: training the adapter trains ``cell``.

    Args:
        cell: a :class:`jaxrnn.RNNCell`, :class:`jaxrnn.LSTMCell` or :class:`jaxrnn.GRUCell`.

    Inputs: carry, inputs
        * **carry**: ``h`` ``(*B, H)``; for LSTM ``(c, h)`` in **Flax's order** (torch's is
          ``(h, c)``).
        * **inputs**: ``(*B, H_in)``, any number of batch axes ``B`` (none included).

    Outputs: carry', y
        * **carry'**: like ``carry``, in ``carry``'s dtype (so it scans with any compute dtype);
          **y**: the new ``h`` ``(*B, H)`` in the cell's compute dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> import jaxrnn
        >>> from jaxrnn.interop import FlaxCellAdapter
        >>> rnn = nnx.RNN(FlaxCellAdapter(jaxrnn.LSTMCell(3, 4, rngs=nnx.Rngs(0))))
        >>> rnn(jnp.ones((2, 5, 3))).shape  # (batch, time, features), Flax's default layout
        (2, 5, 4)
    """

    def __init__(self, cell: _jrx.RNNCellBase):
        _checks.check_adapted_cell("FlaxCellAdapter", cell, _jrx.RNNCellBase, "a jaxrnn NNX cell")
        self.cell = cell

    def __call__(self, carry, inputs):
        """One step, as Flax's cells: ``(new_carry, output)`` from ``carry`` and ``inputs``
        ``(*batch, H_in)``; the carry is ``(c, h)`` for an LSTM (Flax's order), else ``h``."""
        return _flax_step(self.cell, self.cell.mode, carry, inputs)

    def initialize_carry(self, input_shape, rngs=None, carry_init=None):
        """Zeros (or ``carry_init(key, shape, dtype)`` draws, keys from ``rngs``) shaped
        ``input_shape[:-1] + (hidden_size,)`` in the cell's ``dtype``, else ``param_dtype``;
        ``(c, h)`` for LSTM."""
        keys = None
        if carry_init is not None:
            keys = rngs.carry if isinstance(rngs, nnx.Rngs) else rngs
            _checks.check_carry_rngs("FlaxCellAdapter.initialize_carry", keys)
        return _zero_carry(
            self.cell.mode,
            input_shape,
            self.cell.hidden_size,
            _carry_dtype(self.cell),
            carry_init,
            keys,
        )

    @property
    def num_feature_axes(self) -> int:
        """1: the last axis of the inputs holds the features (Flax's ``RNNCellBase``)."""
        return 1


class LinenCellAdapter(nn.RNNCellBase):
    """A jaxrnn Linen cell under Flax Linen's ``RNNCellBase`` protocol, for ``flax.linen.RNN``
    and ``flax.linen.Bidirectional``.

    The wrapped cell becomes the child ``'cell'``, so its parameters (torch's names) sit under
    ``params['cell']``; inside ``nn.RNN`` that is ``params['cell']['cell']``.

    Attributes:
        cell: a :class:`jaxrnn.linen.RNNCell`, :class:`jaxrnn.linen.LSTMCell` or
            :class:`jaxrnn.linen.GRUCell`.

    Shapes as :class:`FlaxCellAdapter`: ``carry`` is ``h`` or, for LSTM, ``(c, h)`` in Flax's
    order.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import flax.linen as nn
        >>> from jaxrnn import linen as jrl
        >>> from jaxrnn.interop import LinenCellAdapter
        >>> rnn = nn.RNN(LinenCellAdapter(jrl.GRUCell(3, 4)))
        >>> x = jnp.ones((2, 5, 3))
        >>> variables = rnn.init(jax.random.key(0), x)
        >>> variables['params']['cell']['cell']['weight_ih'].shape, rnn.apply(variables, x).shape
        ((12, 3), (2, 5, 4))
    """

    cell: Any

    def __post_init__(self):
        _checks.check_adapted_cell(
            "LinenCellAdapter", self.cell, _jrl._CellBase, "a jaxrnn.linen cell"
        )
        super().__post_init__()

    def __call__(self, carry, inputs):
        """One step, as Flax's cells: ``(new_carry, output)`` from ``carry`` and ``inputs``
        ``(*batch, H_in)``; the carry is ``(c, h)`` for an LSTM (Flax's order), else ``h``."""
        return _flax_step(self.cell, self.cell._mode(), carry, inputs)

    @nn.nowrap
    def initialize_carry(self, rng, input_shape):
        """Zeros shaped ``input_shape[:-1] + (hidden_size,)`` in the cell's ``dtype``, else
        ``param_dtype``; ``(c, h)`` for LSTM. ``rng`` is unused."""
        del rng
        return _zero_carry(
            self.cell._mode(), input_shape, self.cell.hidden_size, _carry_dtype(self.cell)
        )

    @property
    def num_feature_axes(self) -> int:
        """1: the last axis of the inputs holds the features (Flax's ``RNNCellBase``)."""
        return 1


def as_flax_cell(cell):
    """``cell`` (a jaxrnn NNX or Linen cell) wrapped for Flax's ``RNN``/``Bidirectional``.

    Returns:
        :class:`FlaxCellAdapter` for an NNX cell, :class:`LinenCellAdapter` for a Linen cell.
    """
    if isinstance(cell, _jrl._CellBase):
        return LinenCellAdapter(cell)
    _checks.check_adapted_cell(
        "as_flax_cell", cell, _jrx.RNNCellBase, "a jaxrnn NNX or jaxrnn.linen cell"
    )
    return FlaxCellAdapter(cell)


# ---------------------------------------------------------------------------------------------
# weight converters: Flax built-in cells <-> torch's cell layout

_LSTM_GATES = ("i", "f", "g", "o")
_GRU_GATES = ("r", "z", "n")


class _Kind(NamedTuple):
    """What a Flax built-in cell is, e.g. ``('nnx', 'GRUCell', 'GRU', 'from_flax(nnx.GRUCell)')``."""

    front: str  # 'nnx' or 'linen'
    name: str  # Flax's class name
    mode: str  # torch's mode
    label: str  # the user's call and the cell, to prefix errors


def _kind(caller: str, cell) -> _Kind:
    """The kind of ``cell``, checked once per call; errors name ``caller``."""
    found = None
    for front, mod in (("nnx", nnx), ("linen", nn)):
        for name in ("OptimizedLSTMCell", "LSTMCell", "GRUCell", "SimpleCell"):
            if found is None and isinstance(cell, getattr(mod, name)):
                found = front, name
    front, name = _checks.check_flax_cell_kind(caller, cell, found)
    label = f"{caller}({front}.{name})"
    gate_fn = getattr(cell, "gate_fn", None)  # SimpleCell has none
    mode = _checks.check_flax_activations(label, name, gate_fn, cell.activation_fn)
    return _Kind(front, name, mode, label)


def flax_cell_mode(cell) -> str:
    """Torch's mode (``'LSTM'``, ``'GRU'``, ``'RNN_TANH'``, ``'RNN_RELU'``) of a Flax cell.

    Raises:
        TypeError: ``cell`` is not one of Flax's built-in cells.
        ValueError: its ``gate_fn``/``activation_fn`` has no torch counterpart.
    """
    return _kind("flax_cell_mode", cell).mode


def _linen_tree(params) -> Mapping:
    if isinstance(params, Mapping) and "params" in params and isinstance(params["params"], Mapping):
        return params["params"]
    return params


def _read(kind: _Kind, cell, params) -> dict[str, np.ndarray]:
    """The Flax cell's parameters as a flat ``{'ii/kernel': array, ...}`` dict."""
    if kind.front == "nnx":
        leaves = ((path, var[...]) for path, var in nnx.to_flat_state(nnx.state(cell, nnx.Param)))
    else:
        _checks.check_linen_params(kind.label, params)
        leaves = convert._flat(_linen_tree(params))
    return {"/".join(str(k) for k in path): np.asarray(value) for path, value in leaves}


def _get(flat: Mapping, key: str, label: str) -> np.ndarray:
    _checks.check_params(label, flat, {key: None})
    return flat[key]


def from_flax(cell, params=None, *, suffix: str = "") -> dict[str, np.ndarray]:
    """A Flax built-in cell's weights in torch's (= jaxrnn's) cell layout.

    Exact (a copy), up to float rounding for a residual ``SimpleCell`` (``weight_hh = W_h^T + I``).

    Args:
        cell: ``flax.nnx`` ``LSTMCell``/``OptimizedLSTMCell``/``GRUCell``/``SimpleCell`` (weights
            read off the module), or the ``flax.linen`` cell of the same name.
        params: for a linen cell, its variables (``{'params': {...}}``) or params tree.
        suffix: appended to every name, e.g. ``'_l0'`` or ``'_l1_reverse'`` to assemble a
            multi-layer :func:`jaxrnn.functional.rnn` tree from several Flax cells.

    Returns:
        ``{'weight_ih': (G*H, H_in), 'weight_hh': (G*H, H), 'bias_ih': (G*H,), 'bias_hh':
        (G*H,)}`` as numpy arrays in the Flax parameters' dtype (names with ``suffix``).
        Loads into ``torch.nn.LSTMCell``/``GRUCell``/``RNNCell`` via
        ``load_state_dict(jaxrnn.to_torch_tensors(...))`` (torch's takes tensors, not numpy).

    Raises:
        TypeError: ``cell`` is not a Flax built-in cell, or a linen cell without ``params``.
        ValueError: custom gate/activation functions, or missing parameters.
    """
    return _from_flax(_kind("from_flax", cell), cell, params, suffix)


def _from_flax(kind: _Kind, cell, params, suffix: str = "") -> dict[str, np.ndarray]:
    front, name, mode, label = kind
    flat = _read(kind, cell, params)
    g = lambda key: _get(flat, key, label)  # noqa: E731
    if mode == "LSTM":
        if front == "nnx" and name == "OptimizedLSTMCell":
            w_ih, w_hh, b_hh = g("dense_i/kernel").T, g("dense_h/kernel").T, g("dense_h/bias")
        else:
            gate = lambda gt: "if_" if front == "nnx" and gt == "f" else "i" + gt  # noqa: E731
            w_ih = np.concatenate([g(f"{gate(gt)}/kernel").T for gt in _LSTM_GATES])
            w_hh = np.concatenate([g(f"h{gt}/kernel").T for gt in _LSTM_GATES])
            b_hh = np.concatenate([g(f"h{gt}/bias") for gt in _LSTM_GATES])
        b_ih = np.zeros_like(b_hh)
    elif mode == "GRU":
        if front == "nnx":
            w_ih, w_hh, b_ih = g("dense_i/kernel").T, g("dense_h/kernel").T, g("dense_i/bias")
            b_hh = np.zeros_like(b_ih)
        else:
            w_ih = np.concatenate([g(f"i{gt}/kernel").T for gt in _GRU_GATES])
            w_hh = np.concatenate([g(f"h{gt}/kernel").T for gt in _GRU_GATES])
            b_ih = np.concatenate([g(f"i{gt}/bias") for gt in _GRU_GATES])
            b_hn = g("hn/bias")
            b_hh = np.concatenate([np.zeros_like(b_hn), np.zeros_like(b_hn), b_hn])
    else:
        i, h = ("dense_i", "dense_h") if front == "nnx" else ("i", "h")
        w_ih, w_hh, b_ih = g(f"{i}/kernel").T, g(f"{h}/kernel").T, g(f"{i}/bias")
        if cell.residual:
            w_hh = w_hh + np.eye(w_hh.shape[0], dtype=w_hh.dtype)
        b_hh = np.zeros_like(b_ih)
    out = {"weight_ih": w_ih, "weight_hh": w_hh, "bias_ih": b_ih, "bias_hh": b_hh}
    return {k + suffix: np.array(v, order="C", copy=True) for k, v in out.items()}


def to_flax(torch_params: Mapping, cell, *, suffix: str = ""):
    """Torch-layout cell weights into a Flax built-in cell, folding the biases (see module doc).

    Args:
        torch_params: ``weight_ih``, ``weight_hh`` and optionally ``bias_ih``/``bias_hh`` (torch
            tensors, numpy or JAX arrays): a torch cell's ``state_dict()``, a jaxrnn cell's
            ``torch_params()``, or a layer's tree with ``suffix`` picking one layer-direction.
        cell: the target Flax cell (nnx or linen ``LSTMCell``, ``OptimizedLSTMCell``,
            ``GRUCell``, ``SimpleCell``), whose hidden size must match.
        suffix: e.g. ``'_l0'`` or ``'_l1_reverse'``, to read ``weight_ih_l0`` etc.

    Returns:
        For an nnx cell: ``cell`` itself, its parameters overwritten in place (cast to their
        dtype). For a linen cell: its ``params`` tree, to use as ``cell.apply({'params': p},
        carry, x)``.

    Raises:
        ValueError: a projection (``weight_hr``), ``b_hn != 0`` for nnx ``GRUCell``, a size
            mismatch, a nonlinearity the cell cannot express, or missing weights.
    """
    front, name, mode, label = _kind("to_flax", cell)
    _checks.check_mapping(label, "torch_params", torch_params)
    src = {
        k[: len(k) - len(suffix)] if suffix else k: v
        for k, v in torch_params.items()
        if k.endswith(suffix)
    }
    _checks.check_params(label, src, {"weight_ih": None, "weight_hh": None})
    _checks.check_flax_foldable(label, weight_hr=src.get("weight_hr"))
    w_ih, w_hh = convert.to_numpy(src["weight_ih"]), convert.to_numpy(src["weight_hh"])
    hidden = getattr(cell, "hidden_features", None) or getattr(cell, "features", None)
    in_features = cell.in_features if front == "nnx" else None
    _checks.check_flax_sizes(label, mode, w_ih, w_hh, hidden, in_features)
    zeros = np.zeros(w_ih.shape[0], np.float64)
    b_ih = (
        zeros if src.get("bias_ih") is None else convert.to_numpy(src["bias_ih"]).astype(np.float64)
    )
    b_hh = (
        zeros if src.get("bias_hh") is None else convert.to_numpy(src["bias_hh"]).astype(np.float64)
    )
    dtype = w_ih.dtype
    cast = lambda a: np.asarray(a, dtype)  # noqa: E731
    if mode == "LSTM":
        b = cast(b_ih + b_hh)
        if front == "nnx" and name == "OptimizedLSTMCell":
            tree = {"dense_i": {"kernel": w_ih.T}, "dense_h": {"kernel": w_hh.T, "bias": b}}
        else:
            f_name = "if_" if front == "nnx" else "if"
            ws_i, ws_h, bs = (np.split(a, 4) for a in (w_ih, w_hh, b))
            tree = {}
            for k, gt in enumerate(_LSTM_GATES):
                tree[f_name if gt == "f" else "i" + gt] = {"kernel": ws_i[k].T}
                tree["h" + gt] = {"kernel": ws_h[k].T, "bias": bs[k]}
    elif mode == "GRU":
        bi_r, bi_z, bi_n = np.split(b_ih, 3)
        bh_r, bh_z, bh_n = np.split(b_hh, 3)
        if front == "nnx":
            _checks.check_flax_foldable(label, b_hn=bh_n)
            b = cast(np.concatenate([bi_r + bh_r, bi_z + bh_z, bi_n]))
            tree = {"dense_i": {"kernel": w_ih.T, "bias": b}, "dense_h": {"kernel": w_hh.T}}
        else:
            ws_i, ws_h = np.split(w_ih, 3), np.split(w_hh, 3)
            bs_i = (bi_r + bh_r, bi_z + bh_z, bi_n)
            tree = {}
            for k, gt in enumerate(_GRU_GATES):
                tree["i" + gt] = {"kernel": ws_i[k].T, "bias": cast(bs_i[k])}
                tree["h" + gt] = {"kernel": ws_h[k].T}
            tree["hn"]["bias"] = cast(bh_n)
    else:
        if cell.residual:
            w_hh = cast(w_hh.astype(np.float64) - np.eye(hidden))
        i, h = ("dense_i", "dense_h") if front == "nnx" else ("i", "h")
        tree = {i: {"kernel": w_ih.T, "bias": cast(b_ih + b_hh)}, h: {"kernel": w_hh.T}}
    tree = jax.tree.map(np.ascontiguousarray, tree)
    if front == "linen":
        return tree
    for path, value in convert._flat(tree):
        var = cell
        for key in path:
            var = getattr(var, key)
        var[...] = jnp.asarray(value, var[...].dtype)
    return cell


def cell_from_flax(cell, params=None, *, rngs: nnx.Rngs | None = None, **kwargs):
    """The jaxrnn NNX cell computing what a Flax built-in cell computes, weights converted.

    Args:
        cell: a Flax built-in cell (see :func:`from_flax`); ``params`` for a linen one.
        rngs: for the new module; ``nnx.Rngs(0)`` if omitted (its draws are overwritten).
        **kwargs: JAX extras for the constructor (``dtype``, ``param_dtype``, ``precision``).

    Returns:
        :class:`jaxrnn.LSTMCell`, :class:`jaxrnn.GRUCell` or :class:`jaxrnn.RNNCell`;
        :func:`jaxrnn.to_torch` of it is the torch cell with these weights.
    """
    kind = _kind("cell_from_flax", cell)
    p = _from_flax(kind, cell, params)
    input_size, hidden_size = p["weight_ih"].shape[1], p["weight_hh"].shape[1]
    rngs = nnx.Rngs(0) if rngs is None else rngs
    kwargs.setdefault("param_dtype", p["weight_ih"].dtype)
    cls = next(c for c, modes in _params.CLASS_MODES.items() if kind.mode in modes)
    extra = {"nonlinearity": "tanh" if kind.mode == "RNN_TANH" else "relu"} if cls == "RNN" else {}
    out = getattr(_jrx, cls + "Cell")(input_size, hidden_size, rngs=rngs, **extra, **kwargs)
    out.load_state_dict(p)
    return out
