"""Torch's parameter names, shapes and default initialisation, shared by every front-end.

The parameter tree of a jaxrnn layer *is* torch's ``state_dict``: a flat mapping from torch's
names (``weight_ih_l0``, ``bias_hh_l1_reverse``, ``weight_hr_l0``, ...) to arrays of torch's
shapes. This module is the one place that knows those names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp

#: Number of gate blocks stacked in ``weight_ih``/``weight_hh`` per mode (torch's ``gate_size``).
GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}

#: Mode name for each public class (torch's ``mode`` strings).
CLASS_MODES = {"RNN": ("RNN_TANH", "RNN_RELU"), "LSTM": ("LSTM",), "GRU": ("GRU",)}


def rnn_mode(nonlinearity: str) -> str:
    """Torch's mode string for ``nn.RNN`` with the given nonlinearity."""
    return "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"


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


def init_params(
    key: jax.Array,
    shapes: Mapping[str, tuple[int, ...]],
    hidden_size: int,
    dtype=jnp.float32,
) -> dict[str, jax.Array]:
    """Torch's default init: every parameter ~ U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))."""
    bound = 1.0 / math.sqrt(hidden_size)
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
    num_layers = 0
    while params.get(f"weight_ih_l{num_layers}") is not None:
        num_layers += 1
    w_hr = params.get("weight_hr_l0")
    return dict(
        input_size=int(params["weight_ih_l0"].shape[1]),
        hidden_size=int(hidden_size),
        num_layers=num_layers,
        bias=params.get("bias_ih_l0") is not None,
        bidirectional=params.get("weight_ih_l0_reverse") is not None,
        proj_size=0 if w_hr is None else int(w_hr.shape[0]),
    )
