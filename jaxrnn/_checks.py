"""Argument and shape validation, in one place and in torch's wording.

Every front-end (the functional core, NNX and Linen modules, packed sequences) calls these. They
run in plain Python on static shapes, so under ``jit`` they fire at trace time, before any
computation, and name the module, what was expected and what came.
"""

from __future__ import annotations

import functools
import numbers
import os
import sys
import warnings
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn import _params

_FLOAT_KINDS = "float16, bfloat16, float32 or float64"


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def check_arguments(name: str, **arguments) -> None:
    """Flags and numbers of the packing functions, as torch's argument parser checks them:
    ``argument=(value, position, kind)`` with ``kind`` ``"bool"``, ``"str"`` or ``"float"`` (a
    real number or a 0-d array); a ``TypeError`` in torch's words otherwise."""
    for arg, (value, position, kind) in arguments.items():
        if kind == "bool":
            ok = isinstance(value, (bool, np.bool_))
        elif kind == "str":
            ok = isinstance(value, str)
        else:
            ok = isinstance(value, numbers.Real) or (
                hasattr(value, "dtype") and np.ndim(value) == 0 and value.dtype.kind in "biuf"
            )
        if not ok:
            raise TypeError(
                f"{name}(): argument '{arg}' (position {position}) must be {kind}, "
                f"not {type(value).__name__}"
            )


# C++ names of torch's dtypes, as its overflow error prints them
_TORCH_C_TYPES = {
    "uint8": "uint8_t",
    "int8": "int8_t",
    "int16": "int16_t",
    "int32": "int",
    "int64": "int64_t",
    "float16": "c10::Half",
    "bfloat16": "c10::BFloat16",
    "float32": "float",
    "float64": "double",
}


def check_fill_value(name: str, value, dtype, unsigned_wrap: bool = False):
    """A padding value as torch converts it to ``dtype``: outside an integer dtype's range, or
    finite and beyond a float dtype's largest, it is torch's ``RuntimeError`` ("value cannot be
    converted to type uint8_t without overflow"). ``unsigned_wrap`` (torch's
    ``pad_packed_sequence``, c10's ``overflows``): an unsigned dtype takes negative integers
    (not floats) down to minus its largest, wrapped around. Returns the value to fill with (a
    traced one unchecked)."""
    dtype = jnp.dtype(dtype)
    floating = jnp.issubdtype(dtype, jnp.floating)
    if isinstance(value, jax.core.Tracer) or dtype.name not in _TORCH_C_TYPES:  # bool: any value
        return value
    number = int(value) if isinstance(value, numbers.Integral) else float(value)
    info = jnp.finfo(dtype) if floating else jnp.iinfo(dtype)
    if floating:
        overflow = np.isfinite(number) and abs(number) > float(info.max)
    else:
        overflow = not info.min <= number <= info.max
        wraps = isinstance(number, int) and -int(info.max) <= number < 0
        if overflow and unsigned_wrap and info.min == 0 and wraps:
            return np.array(int(number), np.int64).astype(dtype)
    if overflow:
        raise TorchRuntimeError(
            f"{name}: value cannot be converted to type {_TORCH_C_TYPES[dtype.name]} without "
            f"overflow (padding_value={value!r} for {dtype.name})"
        )
    return value


def user_stacklevel() -> int:
    """The ``stacklevel`` that attributes a warning raised by this module's caller to the first
    frame outside jaxrnn, Flax and generated code (the user's line), however deep the call."""
    import flax

    packages = (__file__, flax.__file__, jax.__file__)  # jaxrnn/_checks.py, flax/__init__.py, ...
    inside = tuple(os.path.dirname(f) + os.sep for f in packages) + ("<",)
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(inside):
        frame, level = frame.f_back, level + 1
    return level


def check_constructor(
    name: str,
    mode: str,
    input_size,
    hidden_size,
    num_layers=1,
    bias=True,
    batch_first=False,
    dropout=0.0,
    bidirectional=False,
    proj_size=0,
    *,
    warn: bool = True,
) -> None:
    """Validate a multi-layer module's constructor arguments as ``torch.nn.RNNBase`` does, in
    its order (dropout, bias, batch_first, sizes, num_layers, proj_size, mode); also the types torch
    leaves unchecked (``num_layers``, ``proj_size``, ``bidirectional``: a bool or an int, as torch
    takes any truthy value)."""
    try:  # torch converts first: float(None) is its TypeError, float("x") its ValueError
        float(dropout)
    except (TypeError, ValueError) as e:
        raise type(e)(
            f"{name}: dropout should be a number in range [0, 1] representing the probability of "
            f"an element being zeroed, got {dropout!r} ({e})"
        ) from None
    if (
        not isinstance(dropout, numbers.Number)
        or isinstance(dropout, bool)
        or not 0 <= dropout <= 1
    ):
        raise ValueError(
            f"{name}: dropout should be a number in range [0, 1] representing the probability of "
            f"an element being zeroed, got {dropout!r}"
        )
    if warn and dropout > 0 and num_layers == 1:
        warnings.warn(
            "dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
            f"expects num_layers greater than 1, but got dropout={dropout} and "
            f"num_layers={num_layers}",
            stacklevel=user_stacklevel(),
        )
    _check_bool(name, "bias", bias)
    _check_bool(name, "batch_first", batch_first)
    _check_sizes(name, input_size, hidden_size)
    if not _is_int(num_layers):
        raise TypeError(
            f"{name}: num_layers should be of type int, got: {type(num_layers).__name__}"
        )
    if num_layers <= 0:
        raise ValueError(f"{name}: num_layers must be greater than zero, got {num_layers}")
    if not isinstance(bidirectional, (bool, np.bool_, numbers.Integral)):
        raise TypeError(
            f"{name}: bidirectional should be of type bool, got: {type(bidirectional).__name__}"
        )
    if not _is_int(proj_size):
        raise TypeError(f"{name}: proj_size should be of type int, got: {type(proj_size).__name__}")
    if proj_size < 0:
        raise ValueError(
            f"{name}: proj_size should be a positive integer or zero to disable projections, "
            f"got {proj_size}"
        )
    if proj_size >= hidden_size:
        raise ValueError(
            f"{name}: proj_size has to be smaller than hidden_size, got proj_size={proj_size} "
            f"and hidden_size={hidden_size}"
        )
    check_mode(name, mode)  # torch's RNNBase checks it here, after the sizes
    if proj_size and mode != "LSTM":
        raise ValueError(f"{name}: {_PROJ_SIZE_ONLY_LSTM}")


_PROJ_SIZE_ONLY_LSTM = "proj_size argument is only supported for LSTM, not RNN or GRU"


def check_no_proj_size(name: str, kwargs) -> None:
    """``RNN`` and ``GRU`` refuse any ``proj_size`` keyword, even 0, as torch's do."""
    if "proj_size" in kwargs:
        raise ValueError(f"{name}: {_PROJ_SIZE_ONLY_LSTM}")


def check_no_unknown_keywords(name: str, unknown) -> None:
    """Python's error for an unknown keyword, naming the class that was called
    (``LSTMCell.__init__() got an unexpected keyword argument 'proj_size'``) as torch's cells do,
    not the base that the keywords are passed on to."""
    if unknown:
        raise TypeError(
            f"{name}.__init__() got an unexpected keyword argument '{next(iter(unknown))}'"
        )


def check_cell_constructor(name: str, input_size, hidden_size, bias=True) -> None:
    """Validate a cell's constructor arguments (torch's cells check none and accept sizes of 0;
    the messages are its layers'). ``bias`` is not checked: as in torch's cells, its truth
    decides (``RNNCell(10, 20, 'relu')`` has biases)."""
    del bias
    _check_sizes(name, input_size, hidden_size, least=0)


def _check_bool(name: str, arg: str, value) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: {arg} should be of type bool, got: {type(value).__name__}")


def check_nonlinearity(name: str, nonlinearity) -> str:
    """Torch's mode string for a layer's ``nonlinearity``, or torch's ``ValueError`` for an
    unknown one (at construction, as ``nn.RNN``)."""
    mode = _params.known_rnn_mode(nonlinearity)
    if mode is None:
        raise ValueError(
            f"{name}: Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'."
        )
    return mode


def check_cell_nonlinearity(name: str, nonlinearity, input, hx) -> str:
    """An RNNCell call's mode string for its ``nonlinearity``, checked where torch's
    ``RNNCell.forward`` checks it: after the dimensions of ``input`` and ``hx``, before their
    sizes, with its ``RuntimeError`` ("Unknown nonlinearity: ..."; the constructor takes any)."""
    mode = _params.known_rnn_mode(nonlinearity)
    if mode is None:
        _cell_arrays(name, "RNN_TANH", input, hx)
        raise TorchRuntimeError(f"{name}: Unknown nonlinearity: {nonlinearity}")
    return mode


def check_mode(name: str, mode) -> str:
    """One of torch's modes; torch's ``ValueError`` ("Unrecognized RNN mode: FOO") otherwise."""
    if mode not in _params.GATES:
        raise ValueError(
            f"{name}: Unrecognized RNN mode: {mode}; expected one of {sorted(_params.GATES)}"
        )
    return mode


def _check_sizes(name, input_size, hidden_size, least: int = 1) -> None:
    for arg, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not _is_int(value):
            raise TypeError(f"{name}: {arg} should be of type int, got: {type(value).__name__}")
        if value < least:
            if least:
                raise ValueError(f"{name}: {arg} must be greater than zero, got {value}")
            # a cell: torch's fails creating the weight, a RuntimeError
            raise TorchRuntimeError(
                f"{name}: {arg} must be non-negative, got {value} (Trying to create tensor with "
                f"negative dimension {value})"
            )


# ---------------------------------------------------------------------------------------------
# call-time checks


def as_array(name: str, what: str, x, floating: bool = True) -> jax.Array:
    """``x`` as a JAX array (or tracer), floating unless ``floating`` is false (then checked
    later, with :func:`check_floating`, in torch's order); TypeError for anything else."""
    if isinstance(x, (jax.Array, np.ndarray, np.generic)):
        arr = x
    elif hasattr(x, "__array__") and hasattr(x, "shape"):  # e.g. a torch tensor
        arr = np.asarray(_from_torch(x))
    else:
        raise TypeError(f"{name}: {what} must be an array, got {type(x).__name__}")
    if floating:
        check_floating(name, what, arr.dtype)
    # a JAX array as it is (jnp.asarray would return it unchanged, at an eager call's cost)
    return arr if isinstance(arr, jax.Array) else jnp.asarray(arr)


def check_floating(name: str, what: str, dtype, weight_dtype=None) -> None:
    """An input or state of a floating dtype (another float dtype than the weights' is promoted
    with them); torch's "RNN input dtype ... does not match weight dtype" where ``weight_dtype``
    is given (a layer's input)."""
    if jnp.issubdtype(dtype, jnp.floating):
        return
    torchs = f"{what} dtype does not match weight dtype"
    if weight_dtype is not None:
        torchs = f"RNN input dtype ({dtype}) does not match weight dtype ({weight_dtype})"
    raise DtypeError(
        f"{name}: {what} must have a floating-point dtype ({_FLOAT_KINDS}), got {dtype} ({torchs})"
    )


class DtypeError(TypeError, ValueError, RuntimeError):
    """A non-floating input or state. A ``TypeError``, a ``ValueError`` as torch's "input dtype
    ... does not match weight dtype" for a layer's input is, and a ``RuntimeError`` as torch's
    error for an integer state or cell input is ("mat1 and mat2 must have the same dtype")."""


class TorchRuntimeTypeError(TypeError, RuntimeError):
    """An argument of the wrong type where torch raises ``RuntimeError``: a ``TypeError`` that is
    also a ``RuntimeError``."""


def _check_lstm_hx(name: str, hx, op: str) -> None:
    """An LSTM's ``hx`` is a pair ``(h_0, c_0)``; a tuple of another length is torch's
    ``RuntimeError`` ("lstm expects two hidden states"), anything else a ``TypeError``."""
    if isinstance(hx, (tuple, list)) and len(hx) != 2:
        raise TorchRuntimeTypeError(
            f"{name}: {op} expects two hidden states: hx must be a tuple (h_0, c_0) of two "
            f"arrays, got {_describe(hx)}"
        )
    if not isinstance(hx, (tuple, list)):
        raise TypeError(f"{name}: hx must be a tuple (h_0, c_0) of two arrays, got {_describe(hx)}")


class TorchRuntimeError(ValueError, RuntimeError):
    """Bad input where torch raises ``RuntimeError`` (sizes of the input and states, lengths of
    packed sequences): a ``ValueError``, jaxrnn's type for bad values, that is also a
    ``RuntimeError``, so code and tests written against torch catch it as they catch torch's."""


def check_params(name: str, params, expected: Mapping[str, tuple[int, ...]]) -> None:
    """Every expected parameter present, with its expected shape."""
    if not isinstance(params, Mapping):
        raise TypeError(
            f"{name}: params must be a mapping from torch's parameter names to arrays, "
            f"got {type(params).__name__}"
        )
    missing = [k for k in expected if params.get(k) is None]
    if missing:
        raise ValueError(f"{name}: missing parameters {missing} (have {sorted(params)})")
    for key, shape in expected.items():
        if not (hasattr(params[key], "shape") and hasattr(params[key], "dtype")):
            raise TypeError(
                f"{name}: parameter {key} must be an array, got {type(params[key]).__name__}"
            )
        if shape is None:
            continue
        got = tuple(np.shape(params[key]))
        if got != tuple(shape):
            raise ValueError(f"{name}: parameter {key} has shape {got}, expected {tuple(shape)}")


def _stray_params(params: Mapping, expected: Mapping, own_kind: bool = False) -> list[str]:
    """The keys of ``params`` named as torch recurrent parameters (unprefixed) that are not in
    ``expected``; with ``own_kind``, only those of ``expected``'s kind: a layer's (``_l<k>``
    suffixes) or a cell's (none)."""
    layer = any(_params.split_recurrent_key(k)[2] for k in expected)
    stray = []
    for k in params:
        parts = _params.split_recurrent_key(k) if isinstance(k, str) else None
        if k in expected or parts is None or parts[0]:
            continue
        if not own_kind or bool(parts[2]) == layer:
            stray.append(k)
    return stray


def check_no_unexpected_params(name: str, params: Mapping, expected: Mapping, what: str) -> None:
    """No key named as a torch recurrent parameter beyond ``expected`` (the parameters of
    ``what``, e.g. ``'LSTM(3, 4)'``): a layer stack with a gap
    (``weight_ih_l1`` missing, ``bias_*_l0`` missing, a stray ``weight_hr_l1``) would otherwise
    run as a different model, as torch's strict ``load_state_dict`` would not let it."""
    unexpected = _stray_params(params, expected)
    if unexpected:
        raise ValueError(
            f"{name}: unexpected parameters {unexpected}: the others describe {what}, whose "
            f"parameters are {list(expected)}; is a parameter of a lower layer, or a bias, "
            "missing?"
        )


def check_linen_own_params(name: str, stored: Mapping, expected: Mapping) -> None:
    """A Linen module's ``params`` hold no torch parameter beyond its own (``expected``).

    Linen's ``apply`` reads the parameters a module declares and ignores the others, so torch
    weights of another configuration (two layers into a one-layer module, a reverse direction,
    biases with ``bias=False``) would run as a different model; torch's strict
    ``load_state_dict`` refuses them (``Unexpected key(s) in state_dict``), as the NNX twins do.
    Only names of the module's own kind count (a layer's ``_l<k>`` ones, a cell's bare ones):
    under ``nn.share_scope`` a layer and a cell may share one ``params`` dict.
    """
    unexpected = _stray_params(stored, expected, own_kind=True)
    if unexpected:
        raise ValueError(
            f"{name}: Unexpected key(s) in params: "
            + ", ".join(f'"{k}"' for k in unexpected)
            + f"; this module's are {list(expected)}: the weights are of another "
            "configuration; build the module with theirs (jaxrnn.find_recurrent_layers reads "
            "it off a state dict)"
        )


def check_matrix_params(name: str, params: Mapping, keys) -> None:
    """Weights the configuration is read from are matrices."""
    for key in keys:
        shape = np.shape(params[key])
        if len(shape) != 2:
            raise ValueError(f"{name}: parameter {key} must be 2-D, got shape {tuple(shape)}")


def check_dropout_rate(name: str, rate) -> None:
    """A dropout probability in ``[0, 1]``: torch's ``F.dropout`` raises ``ValueError``, its
    recurrent layers ``RuntimeError`` (in training mode with more than one layer only, where the
    dropout acts); this is both."""
    if not isinstance(rate, numbers.Number) or isinstance(rate, bool) or not 0 <= rate <= 1:
        raise TorchRuntimeError(
            f"{name}: dropout probability has to be between 0 and 1, but got {rate!r}"
        )


def check_raw_cell(name: str, mode: str, params, hx) -> None:
    """The raw cell steps' arguments: a mapping holding ``weight_ih``/``weight_hh``, and for
    LSTM ``hx = (h, c)``."""
    if not isinstance(params, Mapping) or any(params.get(k) is None for k in _CELL_WEIGHTS):
        have = sorted(params) if isinstance(params, Mapping) else type(params).__name__
        raise ValueError(f"{name}: params must hold weight_ih and weight_hh, got {have}")
    if hx is None:  # the raw step has no default state (cell_forward's hx=None is zeros)
        raise TypeError(
            f"{name}: hx must be "
            + ("a tuple (h, c)" if mode == "LSTM" else "an array (N, H) or (H,)")
            + ", got None; jaxrnn.functional.cell_forward takes hx=None as zeros"
        )
    if mode == "LSTM" and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
        raise TypeError(f"{name}: hx must be a tuple (h, c), got {_describe(hx)}")
    check_matrix_params(name, params, _CELL_WEIGHTS)
    check_gate_rows(name, mode, params)


def check_gate_rows(name: str, mode: str, params: Mapping, suffix: str = "") -> None:
    """``weight_ih`` and ``weight_hh`` (``+ suffix``, e.g. ``'_l0'``) have ``G * hidden_size``
    rows for the mode's ``G`` gates, ``hidden_size`` read from ``weight_hh``'s columns (from
    ``weight_hr``'s with an LSTM's projection), as torch's cells check it: another mode's
    weights (a GRU's given to ``lstm``) are refused naming the gate count, not split unevenly
    or read as a smaller layer. Torch's RuntimeError wording.

    With a ``suffix`` (a layer, whose every shape :func:`check_params` checks next) only
    another class's parameters are refused here, with the class they describe; a single
    mis-shaped weight is left to :func:`check_params`, which names it."""
    w_hh, w_hr = params["weight_hh" + suffix], params.get("weight_hr" + suffix)
    gates = _params.GATES[mode]
    if mode == "LSTM" and w_hr is None:
        missing = _params.missing_projection(
            np.shape(params["weight_ih" + suffix]), np.shape(w_hh), suffix
        )
        if missing:
            raise ValueError(f"{name}: {missing}")
    projected = mode == "LSTM" and w_hr is not None and len(np.shape(w_hr)) == 2
    hidden_size = np.shape(w_hr if projected else w_hh)[-1]
    for key in ("weight_ih", "weight_hh"):
        rows = np.shape(params[key + suffix])[0]
        if rows == gates * hidden_size:
            continue
        other = ""
        if suffix:
            try:
                cls, config = _params.infer_module_config(params)
            except ValueError:
                return  # no recurrent class's shapes: check_params names the odd one out
            if mode in _params.CLASS_MODES[cls]:
                return
            other = f" (the parameters are those of {_params.torch_repr(cls, config)})"
        raise TorchRuntimeError(
            f"{name}: {key + suffix} first dim must be {gates} * hidden_size = "
            f"{gates * hidden_size}, but got {rows}{other}"
        )


_CELL_WEIGHTS = ("weight_ih", "weight_hh")


def unwrapped_params(params: Mapping) -> dict:
    """A parameter dict with Flax variables (``nnx.state(model, nnx.Param)``) as their arrays."""
    return {
        k: v.get_value() if hasattr(v, "get_value") and not isinstance(v, jax.Array) else v
        for k, v in params.items()
    }


def check_projection(name: str, proj_size: int, hidden_size: int) -> None:
    """A projection (``weight_hr``) smaller than the hidden state, as torch's constructor asks."""
    if proj_size >= hidden_size:
        raise ValueError(
            f"{name}: proj_size has to be smaller than hidden_size, got proj_size={proj_size} "
            f"and hidden_size={hidden_size} (from weight_hr_l0's shape)"
        )


def check_no_torch_tensors(name: str, params: Mapping) -> None:
    """The functional core computes on JAX/numpy arrays: a torch tensor (a raw ``state_dict``)
    gets a TypeError that names the conversion."""
    for key, value in params.items():
        if _is_torch_tensor(value):
            raise TypeError(
                f"{name}: parameter {key} must be a JAX or numpy array, got "
                f"{type(value).__name__} (convert a torch state_dict with "
                "jaxrnn.state_dict_to_params)"
            )


def check_layer_rank(name: str, mode: str, ndim: int) -> bool:
    """The rank of a layer's input, torch's first check; returns whether it is batched."""
    if ndim not in (2, 3):
        what = f"{ndim}D tensor" if mode.startswith("RNN") else f"{ndim}D"  # torch's RNN says so
        raise ValueError(f"{name}: Expected input to be 2D or 3D, got {what} instead")
    return ndim == 3


def check_layer_input(name: str, input_shape, dtype, input_size: int, weight_dtype) -> None:
    """A layer's input after the ranks of the input and ``hx``, as torch orders its checks: its
    dtype, then its feature size."""
    check_floating(name, "input", dtype, weight_dtype)
    if input_shape[-1] != input_size:
        raise TorchRuntimeError(
            f"{name}: input.size(-1) must be equal to input_size. "
            f"Expected {input_size}, got {input_shape[-1]}"
        )


# What torch's older reparametrizations keep in a state dict instead of a weight (the first whose
# suffixes are all there), and how to remove one before saving.
_REPARAMETRIZATIONS = (
    (("_orig", "_u", "_v"), "torch.nn.utils.spectral_norm", "torch.nn.utils.remove_spectral_norm"),
    (("_orig", "_mask"), "torch.nn.utils.prune", "torch.nn.utils.prune.remove"),
    (("_g", "_v"), "torch.nn.utils.weight_norm", "torch.nn.utils.remove_weight_norm"),
)


def reparametrized_weights(originals: Mapping[str, str], present, prefix: str = "") -> list[str]:
    """Why a recurrent weight is missing where its reparametrization's originals stand instead.

    ``originals``: candidate keys (relative to the layer's prefix) mapped to the names shown;
    ``present``: the keys the layer has; ``prefix``: the layer's. One sentence per weight (or
    bias) that is not present but stored as weight norm's ``_g``/``_v``, spectral norm's or
    pruning's ``_orig``, a ``parametrizations.<weight>.original*`` or a weight-drop wrapper's
    ``_raw`` (AWD-LSTM), with the way out; ``[]`` where none is.
    """
    present = set(present)
    lines = []
    weights = {}
    for key in originals:
        if not isinstance(key, str):
            continue
        base = key.split(".")[1] if key.startswith("parametrizations.") else key.rpartition("_")[0]
        if base and base not in present:
            parts = _params.split_recurrent_key(base)
            if parts is not None and parts[0] == "":
                weights.setdefault(base, []).append(key)
    convert = "or convert the torch module with jaxrnn.from_torch, which computes the weight"
    for weight, keys in weights.items():
        shown = ", ".join(f'"{originals[k]}"' for k in keys)
        if any(k.startswith("parametrizations.") for k in keys):
            lines.append(
                f"{weight} is stored as {shown}, a torch.nn.utils.parametrizations "
                f"parametrization's originals: remove it in torch before saving "
                f"(torch.nn.utils.parametrize.remove_parametrizations(module, {weight!r})), "
                f"{convert}"
            )
            continue
        suffixes = {k[len(weight) :] for k in keys}
        for needed, what, remove in _REPARAMETRIZATIONS:
            if set(needed) <= suffixes:
                lines.append(
                    f"{weight} is stored as {shown}, the originals of {what}: remove it in "
                    f"torch before saving ({remove}(module, {weight!r})), {convert}"
                )
                break
        else:
            if "_raw" in suffixes:
                lines.append(
                    f"{weight} is stored as {shown}, the weight a weight-drop (DropConnect) "
                    f"wrapper such as AWD-LSTM's keeps; in eval mode it is the layer's "
                    f'{weight}: rename the key to "{prefix}{weight}"'
                )
    return lines


def load_error(name: str, errors: list[str]) -> ValueError:
    """Torch's ``load_state_dict`` error for module class ``name``, one line per problem (a
    RuntimeError, as torch's, and a ValueError)."""
    return TorchRuntimeError(
        f"Error(s) in loading state_dict for {name}:\n\t" + "\n\t".join(errors)
    )


def load_copy_error(name: str, key: str, model_shape, checkpoint_shape, exc) -> ValueError:
    """Torch's error for a checkpoint value that cannot be copied into its parameter."""
    return load_error(
        name,
        [
            f'While copying the parameter named "{key}", whose dimensions in the model are '
            f"{tuple(model_shape)} and whose dimensions in the checkpoint are "
            f"{tuple(checkpoint_shape)}, an exception occurred : {exc}."
        ],
    )


def check_module_rngs(name: str, rngs, dropout: float = 0.0) -> None:
    """A module constructor's ``rngs``: an ``nnx.Rngs`` with a ``params`` stream (NNX falls back
    to ``default``) and, for ``dropout`` between layers, a ``dropout`` stream; checked before
    anything is drawn, so that a refused constructor advances no stream."""
    from flax import nnx

    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(
            f"{name}: rngs must be nnx.Rngs, e.g. rngs=nnx.Rngs(0), got {type(rngs).__name__}"
        )
    needs = {"params": "the weights need", "dropout": f"dropout={dropout} between layers needs"}
    for stream, what in needs.items():
        if stream == "dropout" and dropout == 0:
            continue
        if _stream(rngs, stream) is None:
            bridged = (  # nnx.bridge.to_linen makes the Rngs from the keys of Linen's init
                " (through nnx.bridge.to_linen: init({'params': key, 'dropout': key2}, ...))"
                if stream == "dropout"
                else ""
            )
            raise ValueError(
                f"{name}: {what} a '{stream}' (or 'default') stream in rngs, e.g. nnx.Rngs(0) "
                f"or nnx.Rngs(params=0, dropout=1){bridged}"
            )


def _stream(rngs, name: str):
    """``rngs``' stream ``name`` (NNX falls back to ``default``), ``None`` where it has none."""
    try:
        return rngs[name]
    except (KeyError, AttributeError):
        return None


def dropout_stream(rngs):
    """A fork of the ``dropout`` stream of a module's ``rngs`` (checked by
    :func:`check_module_rngs`), for the dropout between layers; kept with ``dropout=0`` too, so
    that setting ``.dropout`` later works as in torch; ``None`` where ``rngs`` has none."""
    stream = _stream(rngs, "dropout")
    return None if stream is None else stream.fork()


def check_remat_length(name: str, seq_len) -> None:
    """``remat=`` chunks the sequence: its length must be a number, not ``jax.export``'s
    symbolic dimension (a symbolic batch is fine)."""
    if not isinstance(seq_len, numbers.Integral):
        raise ValueError(
            f"{name}: remat needs a concrete sequence length to chunk it, got the symbolic "
            f"length {seq_len!r}; export with a fixed length, or without remat"
        )


def check_training_mode(name: str, mode) -> None:
    """``module.train(mode)``: a bool, as torch's ``Module.train`` checks."""
    if not isinstance(mode, bool):
        raise ValueError(
            f"{name}.train: training mode is expected to be boolean, got {type(mode).__name__}"
        )


def check_dropout_source(name: str, dropout: float, source) -> None:
    """A module in training mode with dropout between layers has randomness to draw from."""
    if source is None:
        raise ValueError(
            f"{name}: dropout={dropout} in training mode needs randomness: the module was built "
            "without a 'dropout' stream in rngs; pass rngs=nnx.Rngs(dropout=...) to the call, "
            "or call .eval() for no dropout"
        )


def check_linen_dropout_rng(name: str, dropout: float, has_rng: bool) -> None:
    """A Linen layer applied with dropout between layers has a ``dropout`` rng (or Flax's
    fallback for it, ``params``, as ``init`` has)."""
    if not has_rng:
        raise ValueError(
            f"{name}: dropout={dropout} with deterministic=False needs a 'dropout' rng: "
            "apply(variables, x, rngs={'dropout': key}), or deterministic=True for no dropout"
        )


def check_loop_options(name: str, unroll, remat) -> None:
    """``unroll``: a positive int (steps per loop iteration) or a bool (``lax.scan``'s: all steps,
    or one); ``remat``: a bool, or a positive int (the chunk length)."""
    if not isinstance(unroll, (bool, np.bool_)) and (not _is_int(unroll) or unroll < 1):
        raise ValueError(f"{name}: unroll should be a positive int or a bool, got {unroll!r}")
    if not isinstance(remat, (bool, np.bool_)) and (not _is_int(remat) or remat < 1):
        raise ValueError(
            f"{name}: remat should be a bool or a positive int (a chunk length), got {remat!r}"
        )


def check_precision(name: str, precision):
    """``precision`` as ``jax.lax.dot_general`` takes it (``None``, a ``jax.lax.Precision`` or its
    name, a pair of them, a ``jax.lax.DotAlgorithmPreset``), returned hashable (a list pair as a
    tuple), since the compiled layers are cached by it; TypeError otherwise."""
    if isinstance(precision, list):
        precision = tuple(precision)
    try:
        valid = _dot_takes(precision)
    except TypeError:  # unhashable
        valid = False
    if not valid:
        raise TypeError(
            f"{name}: precision must be None, a jax.lax.Precision (or its name, e.g. 'highest'), "
            f"a pair of them or a jax.lax.DotAlgorithmPreset, got {precision!r}"
        )
    return precision


@functools.lru_cache(maxsize=64)
def _dot_takes(precision) -> bool:
    """Whether ``jnp.dot`` takes ``precision`` (asked once per value: an abstract trace)."""
    try:
        jax.eval_shape(lambda: jnp.dot(jnp.zeros((1, 1)), jnp.zeros((1, 1)), precision=precision))
    except (TypeError, ValueError, KeyError):
        return False
    return True


def check_seq_len(name: str, seq_len: int) -> None:
    """A layer's input has at least one time step (torch's wording)."""
    if seq_len == 0:
        raise TorchRuntimeError(f"{name}: Expected sequence length to be larger than 0 in RNN")


def _float_dtype(name: str, arg: str, dtype):
    """``dtype`` as a floating JAX dtype: a JAX/numpy dtype, its name, or a torch dtype (read by
    its name, ``torch.float64`` -> float64); TypeError otherwise."""
    shown = dtype
    try:
        resolved = jnp.dtype(_torch_name(dtype))
    except TypeError:
        resolved = None
    if resolved is None or not jnp.issubdtype(resolved, jnp.floating):
        shown = repr(shown) if resolved is None else str(resolved)
        raise TypeError(
            f"{name}: {arg} must be a floating-point dtype ({_FLOAT_KINDS}), got {shown}"
        )
    return resolved


def compute_dtype(name: str, dtype, *operands):
    """The compute dtype: ``dtype`` if given (must be floating), else the operands' promotion."""
    if dtype is None:
        return jnp.result_type(*operands)
    return _float_dtype(name, "dtype", dtype)


def check_dtypes(name: str, dtype, param_dtype, warn: bool = True):
    """A constructor's ``(dtype, param_dtype)``: floating dtypes (torch's read by name), ``dtype``
    may be ``None`` (the operands' promotion). ``warn``: about a torch dtype as ``dtype=``."""
    param_dtype = _float_dtype(name, "param_dtype", param_dtype)
    if dtype is not None:
        if warn and type(dtype).__module__ == "torch":  # torch's dtype= is param_dtype= here
            warnings.warn(
                f"{name}: dtype={dtype} sets the computation dtype (Flax's meaning), the "
                f"parameters stay {param_dtype.name}; torch's dtype= (the parameters') is "
                f"param_dtype= here, e.g. param_dtype={dtype}",
                stacklevel=user_stacklevel(),
            )
        dtype = _float_dtype(name, "dtype", dtype)
    return dtype, param_dtype


def layer_hidden_arrays(name: str, mode: str, hx, *, batched: bool, packed: bool = False):
    """``hx`` (``h_0`` or ``(h_0, c_0)``) as arrays, a tuple for LSTM, of the rank the input
    asks for: torch's second check, after the input's rank (their dtypes and sizes come after
    the input's, :func:`check_layer_hidden`). With ``packed`` input torch checks the size only
    (``Expected hidden size (2, 3, 20), got [2, 20]``), not the rank (``For batched 3-D input,
    hx should also be 3-D ...``)."""
    want = 3 if batched else 2
    kind = "batched 3-D" if batched else "unbatched 2-D"
    if mode == "LSTM":
        _check_lstm_hx(name, hx, "lstm")
        h0 = as_array(name, "h_0", hx[0], floating=False)
        c0 = as_array(name, "c_0", hx[1], floating=False)
        if (h0.ndim != want or c0.ndim != want) and not packed:
            raise TorchRuntimeError(
                f"{name}: For {kind} input, hx and cx should also be {want}-D but got "
                f"({h0.ndim}-D, {c0.ndim}-D) tensors"
            )
        return (h0, c0)
    if isinstance(hx, (tuple, list)):
        raise TypeError(f"{name}: hx must be a single array h_0, got {_describe(hx)}")
    h0 = as_array(name, "hx", hx, floating=False)
    if h0.ndim != want and not packed:
        raise TorchRuntimeError(
            f"{name}: For {kind} input, hx should also be {want}-D but got {h0.ndim}-D tensor"
        )
    return h0


def check_layer_hidden(
    name: str,
    mode: str,
    hx,
    *,
    batched: bool,
    batch_size: int,
    num_layers: int,
    num_directions: int,
    hidden_size: int,
    proj_size: int,
) -> None:
    """The sizes, then the dtypes, of the arrays of :func:`layer_hidden_arrays`."""
    real_hidden = proj_size if proj_size > 0 else hidden_size
    lead = num_layers * num_directions
    batch = (batch_size,) if batched else ()
    if mode == "LSTM":
        h0, c0 = hx
        _check_hidden_size(
            name, h0, (lead, *batch, real_hidden), "Expected hidden[0] size {}, got {}", batched
        )
        _check_hidden_size(
            name, c0, (lead, *batch, hidden_size), "Expected hidden[1] size {}, got {}", batched
        )
        check_floating(name, "h_0", h0.dtype)
        check_floating(name, "c_0", c0.dtype)
        return
    _check_hidden_size(
        name, hx, (lead, *batch, hidden_size), "Expected hidden size {}, got {}", batched
    )
    check_floating(name, "hx", hx.dtype)


def _check_hidden_size(name, h, expected, msg, batched) -> None:
    """Torch's message: expected size as a tuple, the given one as a list; unbatched, both with
    the batch axis of one that torch inserts before it checks."""
    if tuple(h.shape) != tuple(expected):
        want, got = tuple(expected), list(h.shape)
        if not batched:
            want, got = (want[0], 1, *want[1:]), [got[0], 1, *got[1:]]
        raise TorchRuntimeError(f"{name}: " + msg.format(want, got))


def _describe(x) -> str:
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of length {len(x)}"
    return type(x).__name__


def _cell_arrays(name: str, mode: str, input, hx):
    """A cell call's ``input`` and states as arrays, their dimensions checked (torch's first
    checks); returns ``(input, states, batched)``."""
    x = as_array(name, "input", input, floating=False)
    if x.ndim not in (1, 2):
        raise ValueError(f"{name}: Expected input to be 1D or 2D, got {x.ndim}D instead")
    batched = x.ndim == 2
    if hx is None:
        states = []
    elif mode == "LSTM":
        _check_lstm_hx(name, hx, "lstm_cell")
        states = [as_array(name, f"hx[{i}]", h, floating=False) for i, h in enumerate(hx)]
    else:
        if isinstance(hx, (tuple, list)):
            raise TypeError(f"{name}: hx must be a single array, got {_describe(hx)}")
        states = [as_array(name, "hx", hx, floating=False)]
    for i, h in enumerate(states):
        if h.ndim not in (1, 2):
            what = f"hx[{i}]" if mode == "LSTM" else "hidden"
            raise ValueError(f"{name}: Expected {what} to be 1D or 2D, got {h.ndim}D instead")
    return x, states, batched


def check_cell_call(name: str, mode: str, input, hx, input_size: int, hidden_size: int):
    """Validate a cell call in torch's order and wording (the dimensions of ``input`` and of each
    state, then ``input_size``, then each state's batch and size, with unbatched arrays read as
    a batch of one, then the dtypes); returns ``(input, hx_or_None, batched)`` as arrays."""
    x, states, batched = _cell_arrays(name, mode, input, hx)
    if x.shape[-1] != input_size:
        raise TorchRuntimeError(
            f"{name}: input has inconsistent input_size: got {x.shape[-1]} expected {input_size}"
        )
    x_shape = x.shape if batched else (1, *x.shape)
    for i, h in enumerate(states):
        label = f"hidden{i}"
        h_shape = h.shape if batched else (1, *h.shape)
        if h_shape[0] != x_shape[0]:
            raise TorchRuntimeError(
                f"{name}: Input batch size {x_shape[0]} doesn't match {label} batch size "
                f"{h_shape[0]}"
            )
        if len(h_shape) > 1 and h_shape[1] != hidden_size:
            raise TorchRuntimeError(
                f"{name}: {label} has inconsistent hidden_size: got {h_shape[1]}, "
                f"expected {hidden_size}"
            )
        if h.ndim != x.ndim:  # torch fails later, without a message of its own
            raise TorchRuntimeError(
                f"{name}: Expected {label} to be {x.ndim}D like the input, got {h.ndim}D instead"
            )
    # the dtypes last, where torch's matmul refuses them ("mat1 and mat2 must have the same dtype")
    check_floating(name, "input", x.dtype)
    for i, h in enumerate(states):
        check_floating(name, f"hx[{i}]" if mode == "LSTM" else "hx", h.dtype)
    if hx is None:
        return x, None, batched
    return x, (tuple(states) if mode == "LSTM" else states[0]), batched


# torch dtypes that ``Tensor.numpy()`` refuses, as the ``ml_dtypes`` type of the same name (each
# exact in float32, through which they are converted)
ML_DTYPES = frozenset(
    {
        "bfloat16",
        "float8_e4m3fn",
        "float8_e4m3fnuz",
        "float8_e5m2",
        "float8_e5m2fnuz",
        "float8_e8m0fnu",
    }
)


def _from_torch(x):
    """A torch tensor as a numpy array (without importing torch): detached (a tensor that
    requires grad too), on the CPU, bfloat16 and the float8 types as the ``ml_dtypes`` type of
    the same name (which torch's ``numpy()`` refuses; torch's ``load_state_dict`` casts them);
    anything else as it is. The array may share the tensor's memory."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        tensor = x.detach().cpu()
        kind = str(tensor.dtype).removeprefix("torch.")
        if kind in ML_DTYPES:
            import ml_dtypes

            return tensor.float().numpy().astype(getattr(ml_dtypes, kind))
        return tensor.numpy()
    return x


def _list_array(values):
    """A list (or other sequence) of lengths as one array: numpy, or JAX where an item is a JAX
    array or tracer (a list passed through ``jit`` arrives as a list of tracers)."""
    if isinstance(values, (list, tuple)) and any(isinstance(v, jax.Array) for v in values):
        return jnp.asarray(values)
    return np.asarray(values)


def check_seq_lengths(name: str, seq_lengths, batch: int, seq_len: int, batched: bool):
    """``seq_lengths`` as an int32 ``(N,)`` array; range-checked when its values are concrete.

    A length of 0 is allowed (unlike torch's ``pack_padded_sequence``): that sequence gets zero
    outputs and ``h_n = h_0``, so empty slots of a fixed-size batch need no special case. Traced
    lengths cannot be checked: values above ``L`` then act as ``L`` and values below 0 as 0.
    """
    seq_lengths = _from_torch(seq_lengths)
    if not hasattr(seq_lengths, "shape"):
        seq_lengths = _list_array(seq_lengths)
    if not jnp.issubdtype(seq_lengths.dtype, jnp.integer):
        raise TypeError(
            f"{name}: seq_lengths must be an integer array, got dtype {seq_lengths.dtype}"
        )
    want = (batch,) if batched else ((), (1,))
    shape = tuple(seq_lengths.shape)
    if (batched and shape != want) or (not batched and shape not in want):
        raise ValueError(
            f"{name}: seq_lengths must have shape {want if batched else ()} (one length per "
            f"sequence), got {shape}"
        )
    if not isinstance(seq_lengths, jax.core.Tracer):
        values = np.asarray(seq_lengths)
        if values.size and (values.min() < 0 or values.max() > seq_len):
            raise ValueError(
                f"{name}: seq_lengths must lie in [0, {seq_len}] (the input's sequence length), "
                f"got {values.tolist()}"
            )
    return jnp.reshape(jnp.asarray(seq_lengths, jnp.int32), (batch,))


def check_dropout_key(name: str, dropout: float, training: bool, num_layers: int, key) -> None:
    if not _params.dropout_acts(training, dropout, num_layers):
        return
    if key is None:
        raise ValueError(
            f"{name}: dropout={dropout} in training mode needs a PRNG key (dropout_key=...) "
            "for the dropout between layers"
        )
    if not _is_prng_key(key):
        raise TypeError(
            f"{name}: dropout_key must be a JAX PRNG key (jax.random.key(seed) or "
            f"jax.random.PRNGKey(seed)), got {_describe(key)}"
        )


def _is_prng_key(key) -> bool:
    """One key: a typed key array of shape ``()`` or a raw ``uint32`` key of shape ``(2,)``."""
    dtype, shape = getattr(key, "dtype", None), getattr(key, "shape", None)
    if dtype is None or shape is None:
        return False
    if jnp.issubdtype(dtype, jax.dtypes.prng_key):
        return tuple(shape) == ()
    return dtype == jnp.uint32 and tuple(shape) == (2,)


# ---------------------------------------------------------------------------------------------
# packed sequences (jaxrnn.utils.rnn); where torch raises RuntimeError, these raise
# TorchRuntimeError (a ValueError and a RuntimeError)

_UNSORTED = (
    "`lengths` array must be sorted in decreasing order when `enforce_sorted` is True. You can "
    "pass `enforce_sorted=False` to pack_padded_sequence and/or pack_sequence to sidestep this "
    "requirement if you do not need ONNX exportability."
)


def check_pack_input(name: str, x):
    """A padded batch ``(T, B, *)`` to pack: at least 2-D, not empty."""
    if x.ndim < 2:
        raise ValueError(f"{name}: input must have at least 2 dimensions (T x B x *), got {x.ndim}")
    if x.size == 0:
        raise TorchRuntimeError(f"{name}: Cannot pack empty tensors. (got shape {x.shape})")
    return x


def check_pack_lengths(name: str, lengths, batch: int, steps: int, enforce_sorted: bool):
    """``lengths`` for packing, as ``(int32 (B,) array, int64 numpy values or None if traced)``.

    Concrete values are checked as torch does (1-D, one per sequence, all ``> 0``, decreasing
    with ``enforce_sorted``) and against the padded length ``steps`` (torch does not check it
    and reads past its input).
    """
    arr = _from_torch(lengths)
    if not isinstance(arr, (jax.Array, np.ndarray, np.generic)):  # a list or tuple
        arr = _list_array(arr)
        if arr.size == 0:
            arr = arr.astype(np.int64)
    if jnp.issubdtype(arr.dtype, jnp.floating) or arr.dtype == np.bool_:
        # torch casts them to int64 (floats truncated, booleans 0 and 1)
        arr = arr.astype(jnp.int32 if isinstance(arr, jax.Array) else np.int64)
    if not jnp.issubdtype(arr.dtype, jnp.integer):
        raise TypeError(
            f"{name}: 'lengths' argument should be integers, floats or booleans, got dtype "
            f"{arr.dtype}"
        )
    if arr.ndim != 1:
        raise TorchRuntimeError(
            f"{name}: 'lengths' argument should be a 1D array, but got {arr.ndim}D"
        )
    if arr.shape[0] != batch:
        raise TorchRuntimeError(
            f"{name}: Expected `len(lengths)` to be equal to batch_size, but got "
            f"{arr.shape[0]} (batch_size={batch})"
        )
    values = None
    if not isinstance(arr, jax.core.Tracer):
        values = np.asarray(arr).astype(np.int64)
        # torch's order: the last length (the shortest, once sorted) > 0, then the order, then
        # (not checked by torch) at most the padded length
        if values.size and (values[-1] if enforce_sorted else values.min()) <= 0:
            raise TorchRuntimeError(
                f"{name}: Length of all samples has to be greater than 0, but found an element "
                f"in 'lengths' that is <= 0 (got {values.tolist()})"
            )
        if enforce_sorted:
            check_sorted_lengths(name, values)
        if values.size and values.max() > steps:
            raise ValueError(
                f"{name}: Expected all lengths to be at most the padded sequence length "
                f"{steps}, but got {values.tolist()}"
            )
    return jnp.asarray(arr, jnp.int32), values


def check_sorted_lengths(name: str, values: np.ndarray) -> None:
    """Concrete lengths of a PackedSequence without ``sorted_indices`` must be decreasing."""
    if np.any(np.diff(values) > 0):
        raise TorchRuntimeError(f"{name}: {_UNSORTED} (got lengths {values.tolist()})")


def check_total_length(name: str, total_length, longest: int | None, steps: int) -> int:
    """The padded length of ``pad_packed_sequence``'s result.

    ``longest`` is the longest sequence when the lengths are concrete, ``None`` when traced; then
    the static padded length ``steps`` bounds the lengths and ``total_length`` may not cut it.
    """
    if total_length is None:
        return steps if longest is None else longest
    total_length = _from_torch(total_length)
    if (
        isinstance(total_length, (np.ndarray, jax.Array))
        and not isinstance(total_length, jax.core.Tracer)
        and total_length.ndim == 0
        and jnp.issubdtype(total_length.dtype, jnp.integer)
    ):  # a 0-d integer array, as torch's int(total_length)
        total_length = int(total_length)
    if not _is_int(total_length):
        raise TypeError(
            f"{name}: total_length should be an int or None, got {type(total_length).__name__}"
        )
    if longest is not None and total_length < longest:
        raise ValueError(
            f"{name}: Expected total_length to be at least the length of the longest sequence "
            f"in input, but got total_length={total_length} and max sequence length being "
            f"{longest}"
        )
    if longest is None and total_length < steps:
        raise ValueError(
            f"{name}: total_length={total_length} is shorter than the padded length {steps} of "
            "a PackedSequence whose lengths are traced, so it cannot be checked that no sequence "
            "is longer; pass total_length >= the padded length under jit"
        )
    return total_length


def check_pad_sequences(name: str, sequences, padding_side: str, *, convert) -> list:
    """A non-empty list of ``(L_i, *)`` arrays with equal trailing shapes."""
    check_arguments(name, padding_side=(padding_side, 4, "str"))
    if padding_side not in ("left", "right"):
        raise TorchRuntimeError(
            f"{name}: Expected padding_side to be one of left or right, but got {padding_side}."
        )
    try:
        items = list(sequences)
    except TypeError:
        raise TorchRuntimeTypeError(
            f"{name}: Expected iterable for input sequences, but got arg of type: {type(sequences)}"
        ) from None
    if not items:
        raise TorchRuntimeError(f"{name}: received an empty list of sequences")
    arrays = [convert(s) for s in items]
    trailing = arrays[0].shape[1:]
    for i, a in enumerate(arrays):
        if a.ndim == 0:
            raise TorchRuntimeError(f"{name}: sequence {i} is a scalar; expected shape (L, *)")
        if a.shape[1:] != trailing:
            raise TorchRuntimeError(
                f"{name}: all sequences must have the same trailing shape; sequence 0 has "
                f"{tuple(trailing)} and sequence {i} has {tuple(a.shape[1:])}"
            )
    return arrays


def check_unpad_lengths(name: str, values: np.ndarray, padded_shape, batch_first) -> None:
    """A padded batch ``(T, B, *)`` (``(B, T, *)`` with ``batch_first``) and one length per
    sequence (torch zips them strictly)."""
    if len(padded_shape) < 2:
        layout = "(B, T, *)" if batch_first else "(T, B, *)"
        raise ValueError(
            f"{name}: expected padded_sequences of shape {layout}, got shape {tuple(padded_shape)}"
        )
    batch = padded_shape[0 if batch_first else 1]
    if values.ndim != 1 or values.shape[0] != batch:
        raise ValueError(
            f"{name}: expected one length per sequence ({batch}), got lengths of shape "
            f"{values.shape}"
        )


def check_field_names(name: str, fields, allowed) -> None:
    """Keyword names of a namedtuple-style ``_replace``."""
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: Got unexpected field names: {unknown}")


def check_to_arguments(name: str, args, kwargs):
    """``to(dtype)`` / ``to(device)`` / ``to(device, dtype)`` (also as keywords): returns
    ``(dtype or None, device or None)``; a torch dtype is read by its name."""
    # torch's non_blocking and copy change nothing here (JAX transfers are asynchronous and
    # its arrays immutable)
    unknown = sorted(set(kwargs) - {"dtype", "device", "non_blocking", "copy"})
    if unknown or len(args) > 2:
        raise TypeError(f"{name}: expected a dtype and/or a device, got {args} and {kwargs}")
    dtype, device = kwargs.get("dtype"), kwargs.get("device")
    for arg in args:
        if isinstance(arg, (jax.Device, jax.sharding.Sharding)):
            device = arg
        elif isinstance(arg, (jax.Array, np.ndarray)):  # torch's to(other): other's dtype
            dtype = arg.dtype
        elif _is_torch_tensor(arg):  # and a torch tensor's device
            dtype, device = arg.dtype, device or str(arg.device)
        else:
            dtype = arg
    if _is_device_name(_torch_name(dtype)):  # torch's to("cpu"), to(torch.device("cuda", 1))
        dtype, device = None, dtype
    device = check_device(name, device)
    if dtype is not None:
        shown = dtype
        try:
            dtype = jnp.dtype(_torch_name(dtype))
        except TypeError:
            raise TypeError(
                f"{name}: expected a dtype or a JAX device/sharding, got {shown!r}"
            ) from None
    return dtype, device


def check_module_to_dtype(name: str, dtype) -> None:
    """A module's ``to(dtype)`` takes floating dtypes only (torch's message; complex too there,
    not for an RNN here)."""
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{name}: nn.Module.to only accepts floating point or complex dtypes, but got "
            f"desired dtype={dtype}"
        )


def check_current_shapes(name: str, current: Mapping, expected: Mapping) -> None:
    """A module's parameters have the shapes of its configuration before any is written in
    place (``nnx.update`` with another configuration's state can change them)."""
    for key, shape in current.items():
        if tuple(shape) != tuple(expected[key]):
            raise ValueError(
                f"{name}: parameter {key} has shape {tuple(shape)}, but this module's "
                f"configuration gives {tuple(expected[key])} (replaced by nnx.update or an "
                "assignment?); nothing was written"
            )


def check_assigned_dtype(name: str, key: str, shape, value) -> None:
    """``load_state_dict(assign=True)`` keeps the checkpoint's dtype: a floating one only (torch
    refuses integers and bools, which cannot require gradients; complex, which torch takes, is
    not an RNN's dtype here)."""
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise load_copy_error(
            name,
            key,
            shape,
            value.shape,
            f"assign=True keeps the checkpoint's dtype, {value.dtype}, and parameters take "
            "floating point dtypes only",
        )


def check_state_dict_arguments(name: str, args, destination, prefix, keep_vars):
    """``state_dict``'s positional ``(destination, prefix, keep_vars)``, which torch still takes
    with a ``FutureWarning`` (its words); returns the three."""
    if not args:
        return destination, prefix, keep_vars
    if len(args) > 3:
        raise TypeError(f"{name}() takes at most 3 positional arguments, got {len(args)}")
    warnings.warn(
        "Positional args are being deprecated, use kwargs instead. Refer to "
        "https://pytorch.org/docs/main/generated/torch.nn.Module.html#torch.nn.Module.state_dict"
        " for details.",
        FutureWarning,
        stacklevel=user_stacklevel(),
    )
    return (*args, *(destination, prefix, keep_vars)[len(args) :])


def check_device(name: str, device):
    """A constructor's ``device``: ``None``, a JAX device or sharding, or a torch device
    (``'cuda:1'``, ``torch.device``) as the JAX device."""
    if device is None or isinstance(device, (jax.Device, jax.sharding.Sharding)):
        return device
    device = _torch_name(device)
    if _is_device_name(device):
        try:
            return _device_from_name(device)
        except (RuntimeError, IndexError, ValueError) as e:
            raise ValueError(f"{name}: no such device {device!r} here: {e}") from None
    raise TypeError(
        f"{name}: device must be a JAX device or sharding or a torch device string, got {device!r}"
    )


def _torch_name(x):
    """A torch dtype or device by its name (``torch.float16`` -> ``'float16'``,
    ``torch.device('cuda', 1)`` -> ``'cuda:1'``); anything else as it is."""
    return str(x).removeprefix("torch.") if type(x).__module__ == "torch" else x


def _is_torch_tensor(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach") and hasattr(x, "device")


def _is_device_name(x) -> bool:
    return isinstance(x, str) and x.split(":")[0] in ("cpu", "cuda", "gpu", "tpu")


def _device_from_name(name: str):
    """A torch device string as a JAX device: ``'cuda:1'`` -> the second GPU."""
    platform, _, index = name.partition(":")
    return jax.devices("gpu" if platform == "cuda" else platform)[int(index or 0)]


def is_torch_packed(x) -> bool:
    """Whether ``x`` is torch's ``PackedSequence`` (without importing torch)."""
    return type(x).__name__ == "PackedSequence" and type(x).__module__.startswith("torch")


def check_is_packed(name: str, what: str, x, cls) -> None:
    if not isinstance(x, cls):
        raise TypeError(f"{name}: {what} must be a PackedSequence, got {type(x).__name__}")


def check_packed_pair(name: str, data) -> None:
    """Torch's ``PackedSequence((data, batch_sizes))`` spelling."""
    if not (isinstance(data, (list, tuple)) and len(data) == 2):
        raise TypeError(
            f"{name}: expected data and batch_sizes, or a (data, batch_sizes) pair, "
            f"got {_describe(data)} and no batch_sizes"
        )


def check_batch_sizes(name: str, batch_sizes, data_shape) -> np.ndarray:
    """Torch's ``batch_sizes`` as int64 numpy: concrete, positive, non-increasing, summing to
    ``data.shape[0]``."""
    if isinstance(batch_sizes, jax.core.Tracer):
        raise TypeError(
            f"{name}: batch_sizes must be concrete (it fixes the padded shape); under jit, build "
            "the PackedSequence with pack_padded_sequence(padded, lengths) instead"
        )
    sizes = np.asarray(_from_torch(batch_sizes))
    if sizes.ndim != 1 or not (sizes.size == 0 or jnp.issubdtype(sizes.dtype, jnp.integer)):
        raise ValueError(
            f"{name}: batch_sizes must be a 1-D integer array, got shape {sizes.shape} and "
            f"dtype {sizes.dtype}"
        )
    sizes = sizes.astype(np.int64)
    if sizes.size and (sizes.min() <= 0 or np.any(np.diff(sizes) > 0)):
        raise ValueError(
            f"{name}: batch_sizes must be positive and non-increasing, got {sizes.tolist()}"
        )
    if len(data_shape) < 1 or data_shape[0] != sizes.sum():
        raise ValueError(
            f"{name}: data must have sum(batch_sizes) = {int(sizes.sum())} rows, got shape "
            f"{tuple(data_shape)}"
        )
    return sizes


def check_permutation(name: str, what: str, indices, size: int | None = None):
    """Indices of ``size`` sequences (default: as many as given), as a JAX array: 1-D, integer,
    one per sequence and, where concrete (also a list or numpy array under ``jit``), each of
    ``0 ... size-1`` once. Torch checks none of it: it fails later on an index out of bounds, or
    returns sequences duplicated and dropped."""
    raw = indices if isinstance(indices, jax.Array) else _list_array(_from_torch(indices))
    values = None if isinstance(raw, jax.core.Tracer) else np.asarray(raw)
    array = jnp.asarray(raw)
    if array.ndim != 1:
        raise ValueError(f"{name}: {what} must be 1-D, got shape {tuple(array.shape)}")
    if not jnp.issubdtype(array.dtype, jnp.integer):
        raise TypeError(f"{name}: {what} must be an integer array, got dtype {array.dtype}")
    size = array.shape[0] if size is None else size
    if array.shape[0] != size or (
        values is not None and not np.array_equal(np.sort(values), np.arange(size))
    ):
        shown = values.tolist() if values is not None else f"shape {tuple(array.shape)}"
        raise ValueError(f"{name}: {what} must be a permutation of 0 ... {size - 1}, got {shown}")
    return array


def check_batch_not_empty(name: str, lengths_shape) -> None:
    """A packed batch to pad has at least one sequence (torch's message)."""
    if lengths_shape[0] == 0:
        raise TorchRuntimeError(f"{name}: batch_sizes can not be empty")


def check_concrete_lengths(name: str, what: str, concrete: bool) -> None:
    if not concrete:
        raise ValueError(
            f"{name}: {what} depends on the values of the lengths, which are traced here (under "
            "jit); use .padded and .lengths, or pad_packed_sequence, inside jit"
        )


def check_packed_call(name: str, data_ndim: int, seq_lengths) -> None:
    """A recurrent layer called on a PackedSequence."""
    if seq_lengths is not None:
        raise ValueError(
            f"{name}: seq_lengths cannot be combined with a PackedSequence input, which carries "
            "its own lengths; pass either a PackedSequence or a padded input with seq_lengths"
        )
    if data_ndim != 2:
        raise TorchRuntimeError(f"{name}: input must have 2 dimensions, got {data_ndim}")


# ---------------------------------------------------------------------------------------------
# state dicts and checkpoint files (jaxrnn.convert, jaxrnn.io)


def check_no_extra_parameters(name: str, module: str, cls: str, names, named_parameters) -> None:
    """A torch module converted as torch's ``cls`` has no parameters beyond ``names``, torch's,
    other than where a parametrized one comes from (``parametrizations.<name>.original*``,
    pruning's ``<name>_orig``, the old weight norm's ``<name>_g``/``<name>_v``): a subclass's
    extra layers would be dropped."""
    extra = []
    for key, _ in named_parameters:
        stem, _, suffix = key.rpartition("_")
        if key in names or key.startswith("parametrizations."):
            continue
        if stem in names and suffix in ("orig", "g", "v"):
            continue
        extra.append(key)
    if extra:
        raise ValueError(
            f"{name}: {module} has parameters beyond torch.nn.{cls}'s: {', '.join(extra)}; "
            f"only torch.nn.{cls}'s computation converts (its weights: from_torch of a "
            f"torch.nn.{cls} built with the same arguments, after load_state_dict(..., strict="
            "False))"
        )


def check_torch_weight_kind(name: str, cls: str, weight: str, known: bool) -> None:
    """A torch module's weight is a parameter, a parametrization's or a reparametrization
    hook's (``known``), not a plain tensor attribute: a weight-drop wrapper (fastai's AWD-LSTM
    ``WeightDropout``) replaces the LSTM's weight by one that its own forward sets, with
    dropout in training mode, so the attribute is whatever the last forward left."""
    if not known:
        raise ValueError(
            f"{name}: {cls}'s {weight} is a plain tensor attribute, not a parameter: a "
            "weight-drop wrapper (AWD-LSTM's) sets it on each forward, with dropout in training "
            f"mode; convert the wrapper's raw weight instead: its state dict with {weight}_raw "
            f"renamed to the layer's {weight} (jaxrnn.module_from_state_dict)"
        )


def check_scripted_configuration(name: str, cls: str, configured: bool) -> None:
    """A TorchScript module of torch's ``cls`` holds its configuration (scripted), or not
    (traced: only the weights and the traced graph are kept)."""
    if not configured:
        raise TypeError(
            f"{name}: this traced torch.nn.{cls} keeps no configuration (input_size, "
            "hidden_size, ...), only its weights: convert the module before torch.jit.trace, or "
            "its weights with jaxrnn.module_from_state_dict(traced.state_dict())"
        )


def check_stripped_keys(name: str, prefix: str, picked) -> None:
    """Keys stripped of ``prefix`` do not start with a dot: a submodule's prefix ends with its
    own (``'encoder.lstm.'``), and ``'.weight_ih_l0'`` would load nowhere."""
    dotted = [key for key in picked if key.startswith(".")]
    if dotted:
        raise ValueError(
            f"{name}: prefix {prefix!r} leaves keys that start with '.' ({dotted[0]!r}, ...); "
            f"a submodule's prefix ends with its dot: {prefix + '.'!r}"
        )


def check_mapping(name: str, what: str, value) -> None:
    """``value`` (a state dict or parameter tree) is a mapping."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{name}: {what} must be a mapping, got {type(value).__name__}")


def check_load_state_dict_mapping(name: str, state_dict) -> None:
    """``load_state_dict``'s ``state_dict`` is a mapping; torch's ``TypeError`` wording
    (``Expected state_dict to be dict-like, got <class 'list'>.``) after the call's name."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"{name}: Expected state_dict to be dict-like, got {type(state_dict)}.")


def check_prefix(name: str, prefix) -> None:
    if not isinstance(prefix, str):
        raise TypeError(f"{name}: prefix must be a str, got {type(prefix).__name__}")


def check_path(name: str, path) -> str:
    """``path`` as a ``str``; TypeError unless it is a ``str`` or ``os.PathLike``."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name}: path must be a str or os.PathLike, got {type(path).__name__}")
    return os.fspath(path)


def check_untraced_state_dict(name: str, state_dict) -> None:
    """A state dict to copy into a module holds values, not tracers (``load_state_dict`` inside
    ``jax.grad``/``jit`` would leak them into the module)."""
    traced = [k for k, v in state_dict.items() if isinstance(v, jax.core.Tracer)]
    if traced:
        raise TypeError(
            f"{name}: the values of {', '.join(map(repr, traced[:3]))}"
            f"{' ...' if len(traced) > 3 else ''} are traced (load_state_dict inside jax.grad or "
            "jit); load checkpoints outside transformations, and for a function of the "
            "parameters use nnx.split/nnx.merge, or jaxrnn.functional with the parameter dict"
        )


def reraise_forward_mode(name: str, error: TypeError) -> None:
    """JAX's error for forward-mode autodiff through the fused layer's ``custom_vjp``, said for
    the module with the way out; returns for any other ``TypeError``."""
    if "custom_vjp" in str(error) and "forward-mode" in str(error):
        raise TypeError(
            f"{name}: forward-mode autodiff (jax.jvp, jax.jacfwd, jax.linearize) cannot go "
            "through the fast path, whose backward is written by hand (a custom_vjp; forward "
            "over reverse, as jax.hessian, works); pass remat=True (or a chunk length) for the "
            "plain lax.scan, which supports it"
        ) from error


def check_output_folder(name: str, path: str) -> str:
    """The folder a file is to be written in; FileNotFoundError unless it exists."""
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{name}: no such directory {folder!r} for {path!r}")
    return folder


def check_layer_nonlinearity(name: str, cls: str, prefix: str, nonlinearity) -> None:
    """A nonlinearity for the ``cls`` found at ``prefix``: torch's two for RNN/RNNCell; the
    others have none, so only the default ``'tanh'`` passes (code that loads any layer may
    pass it)."""
    check_nonlinearity(name, nonlinearity)
    if cls not in ("RNN", "RNNCell") and nonlinearity != "tanh":
        raise TypeError(
            f"{name}: the layer at prefix {prefix!r} is a {cls}, which has no "
            f"nonlinearity={nonlinearity!r} (only RNN and RNNCell take one)"
        )


def check_init_rngs(name: str, rngs):
    """A JAX key from ``nnx.Rngs`` (its ``params`` stream), a key or an int seed."""
    from flax import nnx

    if isinstance(rngs, nnx.Rngs):
        return rngs.params()
    if _is_int(rngs):
        return jax.random.key(int(rngs))
    if isinstance(rngs, jax.Array):
        return rngs
    raise TypeError(
        f"{name}: rngs must be nnx.Rngs, a JAX key or an int seed, got {type(rngs).__name__}"
    )


def check_numeric_arrays(name: str, state_dict) -> None:
    """Every value of a state dict to save is a numeric (or bfloat16, float8) array."""
    for key, value in state_dict.items():
        if value.dtype.kind not in "biufc" and value.dtype.name not in ML_DTYPES:
            raise TypeError(f"{name}: {key} must be a numeric array, got dtype {value.dtype}")


def check_npz_dtypes(name: str, state_dict) -> None:
    """``.npz`` holds numpy dtypes only: ``np.savez`` would store bfloat16 and float8 (the
    ``ml_dtypes`` types) as opaque bytes."""
    ml = sorted(k for k, v in state_dict.items() if v.dtype.name in ML_DTYPES)
    if ml:
        kinds = sorted({state_dict[k].dtype.name for k in ml})
        raise ValueError(
            f"{name}: .npz cannot hold {', '.join(kinds)} arrays ({', '.join(ml)}); write "
            ".safetensors or .pt, or cast to float32 first"
        )


# ---------------------------------------------------------------------------------------------
# interop with Flax's recurrent cells (jaxrnn.interop)


def check_adapted_cell(name: str, cell, base: type, what: str) -> None:
    """The cell wrapped by a Flax adapter is a jaxrnn cell of the right front-end (a Flax cell
    of the same name, the likely mistake, is told apart by its module)."""
    if not isinstance(cell, base):
        cls = type(cell)
        hint = ""
        if cls.__module__.startswith("flax"):
            hint = "; a Flax cell runs in Flax's RNN as it is (its weights to jaxrnn's: cell_from_flax)"
        raise TypeError(
            f"{name}: expected {what} (RNNCell, LSTMCell or GRUCell), got "
            f"{cls.__module__}.{cls.__qualname__}{hint}"
        )


def check_flax_cell_kind(name: str, cell, kind):
    """``kind`` (front-end, class name) of a Flax built-in cell; TypeError when it is None."""
    if kind is None:
        raise TypeError(
            f"{name}: expected one of Flax's built-in cells (flax.linen or flax.nnx LSTMCell, "
            f"OptimizedLSTMCell, GRUCell, SimpleCell), got {type(cell).__name__}"
        )
    return kind


def check_flax_activations(name: str, cls: str, gate_fn, activation_fn) -> str:
    """Torch's mode of Flax's cell class ``cls`` with these functions.

    ``SimpleCell``: tanh (``'RNN_TANH'``) or relu (``'RNN_RELU'``); ``GRUCell`` (``'GRU'``) and
    the LSTM cells (``'LSTM'``): sigmoid gates and tanh.
    """
    if cls == "SimpleCell":
        if activation_fn is jnp.tanh:
            return "RNN_TANH"
        if activation_fn is jax.nn.relu:
            return "RNN_RELU"
        raise ValueError(
            f"{name}: activation_fn must be tanh or relu to match torch's RNNCell, "
            f"got {getattr(activation_fn, '__name__', activation_fn)!r}"
        )
    for arg, fn, want in (
        ("gate_fn", gate_fn, jax.nn.sigmoid),
        ("activation_fn", activation_fn, jnp.tanh),
    ):
        if fn is not want:
            raise ValueError(
                f"{name}: {arg} must be {want.__name__} to match torch's equations, "
                f"got {getattr(fn, '__name__', fn)!r}"
            )
    return "GRU" if cls == "GRUCell" else "LSTM"


def check_carry_rngs(name: str, keys) -> None:
    """``initialize_carry(carry_init=...)`` draws the carry, so it needs keys."""
    if keys is None:
        raise ValueError(f"{name}: carry_init needs rngs to draw the carry")


def check_linen_params(name: str, params) -> None:
    """A linen cell holds no weights: converting it needs its ``params``."""
    if params is None:
        raise TypeError(f"{name}: a linen cell holds no weights; pass its params too")
    check_mapping(name, "params", params)


def check_flax_sizes(name: str, mode: str, w_ih, w_hh, features: int, in_features=None) -> None:
    """Torch cell weights that fit a Flax cell of hidden size ``features`` and, for an nnx cell,
    input size ``in_features``."""
    rows = _params.GATES[mode] * features
    in_size = np.shape(w_ih)[-1] if np.ndim(w_ih) else 0
    check_params(
        name,
        {"weight_ih": w_ih, "weight_hh": w_hh},
        {"weight_ih": (rows, in_size), "weight_hh": (rows, features)},
    )
    if in_features is not None and in_size != in_features:
        raise ValueError(
            f"{name}: weight_ih has input size {in_size}, the cell's in_features is {in_features}"
        )


def check_flax_foldable(name: str, *, weight_hr=None, b_hn=None) -> None:
    """Torch weights a Flax cell can represent: no projection, and ``b_hn == 0`` where the
    target (nnx ``GRUCell``) has no ``b_hn``."""
    if weight_hr is not None:
        raise ValueError(
            f"{name}: an LSTM with a projection (weight_hr, proj_size > 0) has no Flax "
            "counterpart; Flax's LSTM cells have no projection"
        )
    if b_hn is not None and np.any(np.asarray(b_hn) != 0):
        raise ValueError(
            f"{name}: flax.nnx.GRUCell has no b_hn (the bias inside r * (W_hn h + b_hn)), so "
            f"torch's bias_hh[2*H:] must be zero to convert exactly, got max |b_hn| = "
            f"{float(np.max(np.abs(b_hn))):.3g}; use flax.linen.GRUCell, which has b_hn"
        )
