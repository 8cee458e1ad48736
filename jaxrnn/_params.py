"""Torch's parameter names, shapes and default initialisation, shared by every front-end.

The parameter tree of a jaxrnn layer *is* torch's ``state_dict``: a flat mapping from torch's
names (``weight_ih_l0``, ``bias_hh_l1_reverse``, ``weight_hr_l0``, ...) to arrays of torch's
shapes. This module is the one place that knows those names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import jax
import jax.numpy as jnp

#: Number of gate blocks stacked in ``weight_ih``/``weight_hh`` per mode (torch's ``gate_size``).
GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}

#: Mode name for each public class (torch's ``mode`` strings).
CLASS_MODES = {"RNN": ("RNN_TANH", "RNN_RELU"), "LSTM": ("LSTM",), "GRU": ("GRU",)}


def torch_class(mode: str, cell: bool = False) -> str:
    """Torch's class for a mode: ``'RNN_RELU'`` -> ``'RNN'``, with ``cell`` ``'RNNCell'``."""
    cls = next(c for c, modes in CLASS_MODES.items() if mode in modes)
    return cls + "Cell" if cell else cls


def rnn_mode(nonlinearity: str) -> str:
    """Torch's mode string for ``nn.RNN`` with the given nonlinearity."""
    return "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"


def rnn_nonlinearity(mode: str) -> str | None:
    """The nonlinearity of an RNN mode string (``'RNN_RELU'`` -> ``'relu'``); ``None`` for
    another mode."""
    return {"RNN_TANH": "tanh", "RNN_RELU": "relu"}.get(mode)


def dropout_acts(training, dropout, num_layers: int) -> bool:
    """Whether dropout between layers acts: in training mode, with more than one layer and a
    positive rate (compared only then: a one-layer stack never reads it, as torch's)."""
    return bool(training) and num_layers > 1 and dropout > 0


def known_rnn_mode(nonlinearity) -> str | None:
    """The mode string for ``nonlinearity``; ``None`` for one other than tanh and relu (torch's
    RNNCell takes any at construction and refuses it in its forward)."""
    return rnn_mode(nonlinearity) if nonlinearity in ("tanh", "relu") else None


def suffix(layer: int, direction: int) -> str:
    """Torch's name suffix: ``_l{layer}`` plus ``_reverse`` for the backward direction."""
    return f"_l{layer}" + ("_reverse" if direction == 1 else "")


def layer_param_shapes(
    mode: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bias: bool = True,
    bidirectional: bool = False,
    proj_size: int = 0,
) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a multi-layer module's parameters, in torch's ``state_dict`` order."""
    gate_size = GATES[mode] * hidden_size
    real_hidden = proj_size if proj_size > 0 else hidden_size
    num_directions = 2 if bidirectional else 1
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in range(num_layers):
        layer_input = input_size if layer == 0 else real_hidden * num_directions
        for direction in range(num_directions):
            s = suffix(layer, direction)
            shapes["weight_ih" + s] = (gate_size, layer_input)
            shapes["weight_hh" + s] = (gate_size, real_hidden)
            if bias:
                shapes["bias_ih" + s] = (gate_size,)
                shapes["bias_hh" + s] = (gate_size,)
            if proj_size > 0:
                shapes["weight_hr" + s] = (proj_size, hidden_size)
    return shapes


def cell_param_shapes(
    mode: str, input_size: int, hidden_size: int, bias: bool = True
) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a cell's parameters, in torch's ``state_dict`` order."""
    gate_size = GATES[mode] * hidden_size
    shapes = {"weight_ih": (gate_size, input_size), "weight_hh": (gate_size, hidden_size)}
    if bias:
        shapes["bias_ih"] = (gate_size,)
        shapes["bias_hh"] = (gate_size,)
    return shapes


def init_bound(hidden_size: int) -> float:
    """Torch's init bound ``1/sqrt(hidden_size)`` (0 for the empty parameters of size-0 cells)."""
    return 1.0 / math.sqrt(hidden_size) if hidden_size > 0 else 0.0


def init_params(
    key: jax.Array,
    shapes: Mapping[str, tuple[int, ...]],
    hidden_size: int,
    dtype=jnp.float32,
) -> dict[str, jax.Array]:
    """Torch's default init: every parameter ~ U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))."""
    bound = init_bound(hidden_size)
    keys = jax.random.split(key, len(shapes))
    return {
        name: jax.random.uniform(k, shape, dtype, -bound, bound)
        for k, (name, shape) in zip(keys, shapes.items())
    }


def split_layer(params: Mapping[str, jax.Array], layer: int, direction: int) -> dict:
    """One layer-direction's parameters under the cell names (``weight_ih``, ...); absent -> None."""
    s = suffix(layer, direction)
    return {
        name: params.get(name + s)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
    }


def infer_layer_config(mode: str, params: Mapping[str, jax.Array]) -> dict:
    """Constructor arguments of the multi-layer module whose parameters are ``params``.

    Raises ``ValueError`` naming the missing key when ``weight_ih_l0``/``weight_hh_l0`` are absent.
    """
    for key in ("weight_ih_l0", "weight_hh_l0"):
        if params.get(key) is None:
            raise ValueError(f"missing parameter {key} (have {sorted(params)})")
    hidden_size = params["weight_ih_l0"].shape[0] // GATES[mode]
    # layers (0, 1, ... while any parameter names the next) and directions from every
    # parameter's name, so that a layer or direction lacking one weight is reported missing it,
    # not as unexpected keys (a stray layer after a gap still is)
    named = [re.fullmatch(r"(?:weight|bias)_(?:ih|hh|hr)_l(\d+)(_reverse)?", k) for k in params]
    named = [m for m in named if m is not None and params[m.string] is not None]
    layers = {int(m.group(1)) for m in named}
    num_layers = 1
    while num_layers in layers:
        num_layers += 1
    w_hr = params.get("weight_hr_l0") if mode == "LSTM" else None  # else an unexpected key
    return dict(
        input_size=int(params["weight_ih_l0"].shape[1]),
        hidden_size=int(hidden_size),
        num_layers=num_layers,
        # either bias present means bias=True: a missing other one is then reported by the checks
        bias=any(params.get(k) is not None for k in ("bias_ih_l0", "bias_hh_l0")),
        bidirectional=any(m.group(2) for m in named),
        proj_size=0 if w_hr is None else int(w_hr.shape[0]),
    )


# the constructor arguments torch's ``extra_repr`` shows when they differ from these defaults
_REPR_DEFAULTS = {
    "layer": {
        "proj_size": 0,
        "num_layers": 1,
        "bias": True,
        "batch_first": False,
        "dropout": 0,
        "bidirectional": False,
    },
    "cell": {"bias": True, "nonlinearity": "tanh"},
}


def torch_extra_repr(cls_name: str, config: Mapping) -> str:
    """Torch's ``extra_repr`` of a module of class ``cls_name`` with these constructor arguments,
    e.g. ``'10, 20, num_layers=2, batch_first=True'`` (``RNNBase.extra_repr``'s rules; cells:
    ``RNNCellBase``'s). Arguments absent from ``config`` are left out."""
    defaults = _REPR_DEFAULTS["cell" if cls_name.endswith("Cell") else "layer"]
    args = [str(config["input_size"]), str(config["hidden_size"])]
    args += [
        f"{k}={config[k]}" for k, d in defaults.items() if k in config and _differs(config[k], d)
    ]
    return ", ".join(args)


def _differs(value, default) -> bool:
    """Torch's test in ``extra_repr``: ``is not`` for the bool defaults (a cell's ``bias=1``
    shows), ``!=`` for the numbers and strings."""
    return value is not default if isinstance(default, bool) else value != default


def torch_repr(cls_name: str, config: Mapping) -> str:
    """Torch's repr, e.g. ``'LSTM(10, 20, num_layers=2, batch_first=True)'``."""
    return f"{cls_name}({torch_extra_repr(cls_name, config)})"


#: Torch's recurrent class for each number of gate blocks in ``weight_ih``. An RNN's
#: nonlinearity (tanh or relu) is not recorded in its weights, nor are ``batch_first`` and
#: ``dropout``: those must come from elsewhere.
GATE_CLASSES = {1: "RNN", 3: "GRU", 4: "LSTM"}

#: The parameter names of a recurrent layer or cell, without the ``_l{k}[_reverse]`` suffix.
RECURRENT_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")

_RECURRENT_KEY = re.compile(
    r"^(?:(?P<prefix>.*)\.)?(?P<name>weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)"
    r"(?P<suffix>_l\d+(?:_reverse)?)?$"
)


def split_recurrent_key(key: str) -> tuple[str, str, str] | None:
    """``(prefix, name, suffix)`` of a key named as a torch recurrent parameter, else ``None``.

    ``'encoder.lstm.weight_hh_l1_reverse'`` -> ``('encoder.lstm.', 'weight_hh', '_l1_reverse')``;
    a cell's ``'rnn.weight_ih'`` -> ``('rnn.', 'weight_ih', '')``. The prefix ends with a dot.
    """
    m = _RECURRENT_KEY.match(key)
    if m is None:
        return None
    prefix = m.group("prefix")
    return ("" if prefix is None else prefix + "."), m.group("name"), m.group("suffix") or ""


def torch_key_order(keys) -> list[str]:
    """``keys`` in torch's order when all are recurrent parameter names (per prefix: layer by
    layer, forward before reverse, ``weight_ih, weight_hh, bias_ih, bias_hh, weight_hr``), e.g.
    after a ``jax.tree.map`` that sorted them; otherwise as given."""
    keys = list(keys)
    parts = [split_recurrent_key(k) for k in keys]
    if any(p is None for p in parts):
        return keys
    prefixes = list(dict.fromkeys(p[0] for p in parts))

    def rank(item):
        (prefix, name, suffix), key = item
        layer = re.match(r"(?:_l(\d+))?(_reverse)?$", suffix)
        return (
            prefixes.index(prefix),
            int(layer.group(1) or 0),
            layer.group(2) is not None,
            RECURRENT_NAMES.index(name),
        )

    return [key for _, key in sorted(zip(parts, keys, strict=True), key=rank)]


def missing_projection(w_ih: tuple, w_hh: tuple, suffix: str = "_l0") -> str | None:
    """Why an LSTM layer's weights without ``weight_hr`` lack it, from the shapes of
    ``weight_ih``/``weight_hh`` (``+ suffix``): as many rows, ``4*H`` of them, and fewer than
    ``H`` columns, as a projection to ``proj_size`` columns has; ``None`` otherwise."""
    rows, cols = w_hh
    if not (w_ih[0] == rows and rows % 4 == 0 and 0 < cols < rows // 4):
        return None
    return (
        f"missing parameter weight_hr{suffix}: weight_hh{suffix} {tuple(w_hh)} has fewer columns "
        f"than the layer has hidden units, as an LSTM with a projection has (proj_size={cols}, "
        f"hidden_size={rows // 4}); its weight_hr{suffix} (projection) is not in the state dict"
    )


def infer_module_config(params: Mapping) -> tuple[str, dict]:
    """Torch's class name and constructor arguments for a recurrent module's parameters.

    Layer parameters (``weight_ih_l0``, ...) give ``'RNN'``, ``'LSTM'`` or ``'GRU'`` with
    ``input_size, hidden_size, num_layers, bias, bidirectional`` (and ``proj_size`` for LSTM);
    cell parameters (``weight_ih``, ...) give ``'RNNCell'``, ``'LSTMCell'`` or ``'GRUCell'`` with
    ``input_size, hidden_size, bias``. ``weight_ih`` has ``G * hidden_size`` rows; ``hidden_size``
    is ``weight_hh``'s column count (``weight_hr_l0``'s with a projection), so the gate count
    ``G`` and hence the class follow from the shapes. Only names and the shapes of layer 0 are
    read: whether every key is then present with its shape is for the caller to check against
    :func:`layer_param_shapes`/:func:`cell_param_shapes`.

    Raises ``ValueError`` when ``weight_ih``/``weight_hh`` are absent or their shapes fit no
    recurrent class.
    """
    layered = "weight_ih_l0" in params or "weight_hh_l0" in params
    s = "_l0" if layered else ""
    ih, hh = "weight_ih" + s, "weight_hh" + s
    for key in (ih, hh):
        if params.get(key) is None:
            raise ValueError(f"missing parameter {key} (have {sorted(params)})")
    w_ih, w_hh = tuple(params[ih].shape), tuple(params[hh].shape)
    if len(w_ih) != 2 or len(w_hh) != 2:
        raise ValueError(f"{ih} and {hh} must be 2-D, got shapes {w_ih} and {w_hh}")
    w_hr = params.get("weight_hr_l0") if layered else None
    if w_hr is not None and len(w_hr.shape) != 2:
        raise ValueError(f"weight_hr_l0 must be 2-D, got shape {tuple(w_hr.shape)}")
    if w_hr is not None and w_hh[1] != w_hr.shape[0]:  # a projection feeds weight_hh_l0
        raise ValueError(
            f"weight_hr_l0 {tuple(w_hr.shape)} does not fit {hh} {w_hh}: an LSTM's projection to "
            f"proj_size P has shape (P, hidden_size) and {hh} then has P columns (a stray "
            "weight_hr_l0 in the state dict?)"
        )
    hidden_size = int(w_hr.shape[1] if w_hr is not None else w_hh[1])
    gates, rest = divmod(w_ih[0], hidden_size) if hidden_size else (0, 1)
    cls = GATE_CLASSES.get(gates) if rest == 0 else None
    missing = missing_projection(w_ih, w_hh, s) if layered and w_hr is None else None
    if cls is None and missing:
        raise ValueError(missing)
    if cls is None:
        source = f"weight_hr_l0 {tuple(w_hr.shape)}" if w_hr is not None else f"{hh} {w_hh}"
        raise ValueError(
            f"{ih} has {w_ih[0]} rows, expected 1, 3 or 4 (RNN, GRU, LSTM) times hidden_size "
            f"{hidden_size} (from {source})"
        )
    if not layered:
        bias = any(params.get(k) is not None for k in ("bias_ih", "bias_hh"))
        return cls + "Cell", dict(input_size=int(w_ih[1]), hidden_size=hidden_size, bias=bias)
    mode = CLASS_MODES[cls][0]  # an RNN's shapes: tanh's = relu's
    config = infer_layer_config(mode, params)
    if cls != "LSTM":
        if w_hr is not None:
            raise ValueError(f"weight_hr_l0 (a projection) is only supported for LSTM, not {cls}")
        del config["proj_size"]
    return cls, config
