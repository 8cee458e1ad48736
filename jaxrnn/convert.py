"""Torch state dicts <-> jaxrnn parameter dicts, and torch modules -> jaxrnn modules.

Because jaxrnn's parameter tree uses torch's names and shapes, conversion is naming only: pick
the keys under a prefix, copy the arrays. torch is imported lazily and only by
:func:`from_torch`; everything else takes torch tensors or numpy arrays alike.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from jaxrnn import _checks, _params


def to_numpy(value) -> np.ndarray:
    """A private numpy copy of a torch tensor, numpy array or JAX array.

    The copy matters: ``tensor.numpy()`` shares memory with the tensor, so a torch model that
    keeps training in place would otherwise change the converted weights.
    """
    return np.array(_checks._from_torch(value), copy=True)


def _flat(tree: Mapping, path: tuple = (), sequences: bool = False) -> Iterator[tuple[tuple, Any]]:
    """``(key path, leaf)`` for every leaf of nested mappings, depth first, each mapping in its
    iteration order; with ``sequences``, lists and tuples are walked too, their items keyed by
    index (a loaded torch file's ``{'models': [sd0, sd1]}``).

    ``{'a': {'b': 1}, 'c': 2}`` gives ``(('a', 'b'), 1)`` then ``(('c',), 2)``; callers join the
    path as their format needs (``'.'`` for torch's names, ``'/'`` for Flax's).
    """
    items = enumerate(tree) if isinstance(tree, (list, tuple)) else tree.items()
    for key, value in items:
        if isinstance(value, Mapping) or (sequences and isinstance(value, (list, tuple))):
            yield from _flat(value, path + (key,), sequences)
        else:
            yield path + (key,), value


def _dotted_leaves(name: str, tree: Mapping) -> dict:
    """The leaves of nested mappings (and lists and tuples, items by index) named by key path
    joined with dots, as a torch state dict names them and as the files' reader flattens a
    loaded object; two leaves under one name (``{'a.b': x, 'a': {'b': y}}``) are a
    ``ValueError``."""
    flat = {}
    for path, value in _flat(tree, sequences=True):
        key = ".".join(str(k) for k in path)
        if key in flat:
            raise ValueError(f"{name}: two values are named {key!r} once flattened with dots")
        flat[key] = value
    return flat


def state_dict_to_params(state_dict: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    """The parameters under ``prefix`` of a torch ``state_dict``, as a dict of numpy arrays.

    Args:
        state_dict: torch's ``module.state_dict()`` (tensors) or any mapping of arrays; nested
            mappings are flattened with dots first.
        prefix: keep only keys starting with it and strip it, e.g. ``'encoder.gru.'`` to pick one
            recurrent layer out of a bigger model's state dict.

    Returns:
        ``{'weight_ih_l0': array, ...}``, private copies.

    Example:
        >>> params = state_dict_to_params({'rnn.weight_ih_l0': np.zeros((4, 3))}, prefix='rnn.')
        >>> sorted(params)
        ['weight_ih_l0']
    """
    _checks.check_mapping("state_dict_to_params", "state_dict", state_dict)
    _checks.check_prefix("state_dict_to_params", prefix)
    picked = _picked("state_dict_to_params", state_dict, prefix)
    _checks.check_stripped_keys("state_dict_to_params", prefix, picked)
    return picked


def _picked(name: str, state_dict: Mapping, prefix: str) -> dict[str, np.ndarray]:
    """The arrays under ``prefix`` with it stripped (nested mappings flattened with dots)."""
    flat = _dotted_leaves(name, state_dict)
    return {key[len(prefix) :]: to_numpy(v) for key, v in flat.items() if key.startswith(prefix)}


def params_to_state_dict(params: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    """A jaxrnn parameter dict as a torch-loadable state dict of numpy arrays (keys ``prefix+name``,
    in torch's order even if ``params`` came sorted out of a ``jax.tree`` function).

    ``torch_module.load_state_dict(to_torch_tensors(sd))`` accepts it (:func:`to_torch_tensors`
    also converts bfloat16 and float8 arrays, which ``torch.from_numpy`` cannot take). Nested
    mappings (a Linen ``variables['params']`` of several layers) are flattened with dots first:
    ``{'gru': {'weight_ih_l0': ...}}`` gives ``'gru.weight_ih_l0'``.
    """
    return _state_dict("params_to_state_dict", params, prefix)


def _state_dict(name: str, params: Mapping, prefix: str) -> dict[str, np.ndarray]:
    """:func:`params_to_state_dict` for the call ``name`` (its messages name it)."""
    _checks.check_mapping(name, "params", params)
    _checks.check_prefix(name, prefix)
    flat = _dotted_leaves(name, params)
    return {prefix + key: to_numpy(flat[key]) for key in _params.torch_key_order(flat)}


def to_torch_tensors(state_dict: Mapping) -> dict:
    """A state dict of arrays (numpy, JAX) as ``torch.Tensor`` copies, for
    ``torch.nn.Module.load_state_dict`` or ``torch.save``; bfloat16 and float8 arrays
    (``ml_dtypes``, which ``torch.from_numpy`` does not take) become torch's tensors of those
    dtypes. Needs torch.

    Example:
        >>> import numpy as np
        >>> sd = to_torch_tensors({'weight_ih': np.ones((4, 2), np.float32)})
        >>> type(sd['weight_ih']).__name__, tuple(sd['weight_ih'].shape)
        ('Tensor', (4, 2))
    """
    import torch

    _checks.check_mapping("to_torch_tensors", "state_dict", state_dict)

    def tensor(value):
        v = to_numpy(value)
        if v.dtype.name in _checks.ML_DTYPES:  # numpy has no bfloat16, float8: through the bits
            bits = np.uint16 if v.dtype.itemsize == 2 else np.uint8
            return torch.from_numpy(v.view(bits).copy()).view(getattr(torch, v.dtype.name))
        return torch.from_numpy(np.ascontiguousarray(v).reshape(v.shape))

    return {key: tensor(value) for key, value in state_dict.items()}


def _size(shape) -> str:
    """A shape as torch prints it: ``torch.Size([16, 5])``."""
    return f"torch.Size([{', '.join(str(int(d)) for d in shape)}])"


def match_state_dict(
    name: str,
    state_dict: Mapping,
    expected: Mapping[str, tuple[int, ...]],
    strict: bool = True,
) -> dict[str, np.ndarray]:
    """The entries of ``state_dict`` that load into parameters of shapes ``expected``.

    With ``strict``, missing, unexpected and mis-shaped keys raise one ``ValueError`` naming each
    (torch's ``Error(s) in loading state_dict``); without, mis-shaped keys still raise (as in
    torch) and the others are skipped. Nothing is assigned here, so a failed load changes nothing.
    """
    _checks.check_load_state_dict_mapping(f"{name}.load_state_dict", state_dict)
    _checks.check_untraced_state_dict(f"{name}.load_state_dict", state_dict)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    errors = []
    loaded = {}
    for key, shape in expected.items():
        if key not in state_dict:
            continue
        raw = state_dict[key]
        # an array (torch, numpy, JAX) of numbers; not a list, a number, None, a string, ...
        value = to_numpy(raw) if hasattr(raw, "shape") and hasattr(raw, "dtype") else None
        if value is None or (
            value.dtype.kind not in "biufc" and value.dtype.name not in _checks.ML_DTYPES
        ):
            errors.append(
                f'While copying the parameter named "{key}", expected torch.Tensor or '
                f"Tensor-like object from checkpoint but received {type(raw)}"
            )
            continue
        if tuple(value.shape) != tuple(shape):
            errors.append(
                f"size mismatch for {key}: copying a param with shape {_size(value.shape)} from "
                f"checkpoint, the shape in current model is {_size(shape)}."
            )
        loaded[key] = value
    if strict and unexpected:
        errors.insert(
            0, "Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ". "
        )
    if strict and missing:
        errors.insert(
            0, "Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ". "
        )
        errors += _checks.reparametrized_weights({k: k for k in unexpected}, state_dict)
    if errors:
        raise _checks.load_error(name, errors)
    return loaded


_TORCH_CLASSES = ("RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell")


def _param_dtype(module):
    """The JAX dtype of a torch module's parameters (see :func:`jax_param_dtype`)."""
    name = str(next(module.parameters()).dtype).split(".")[-1]
    return jax_param_dtype(name, "from_torch: the torch module")


def jax_param_dtype(name: str, what: str):
    """The JAX dtype for parameters stored as ``name`` (``'float32'``, ``'bfloat16'``, ...);
    float32, with a warning that starts with ``what``, for float64 while ``jax_enable_x64`` is off,
    as JAX itself would truncate."""
    import jax
    import jax.numpy as jnp

    dtype = jnp.dtype(name)
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        warnings.warn(
            f"{what} is float64 but jax_enable_x64 is off; its parameters are loaded as float32",
            stacklevel=_checks.user_stacklevel(),
        )
        return jnp.dtype(jnp.float32)
    return dtype


def from_torch(module, *, rngs=None, **kwargs):
    """The jaxrnn NNX module equivalent to a ``torch.nn`` RNN/LSTM/GRU or cell, weights copied.

    Args:
        module: an instance of ``torch.nn.RNN``, ``LSTM``, ``GRU``, ``RNNCell``, ``LSTMCell`` or
            ``GRUCell`` (or a subclass with no parameters of its own), also wrapped by
            ``torch.compile``, ``nn.DataParallel`` or ``DistributedDataParallel``, or compiled
            by ``torch.jit.script``.
        rngs: ``nnx.Rngs`` for the new module (its dropout stream); ``nnx.Rngs(0)`` if omitted.
        **kwargs: JAX extras passed to the constructor (``dtype``, ``precision``, ...);
            ``param_dtype`` defaults to the torch module's parameter dtype (float64 needs
            ``jax_enable_x64``, as any float64 array in JAX).

    Returns:
        The jaxrnn module, in the same training/eval mode as ``module``.
    """
    import torch
    from flax import nnx

    import jaxrnn

    module = _unwrapped(module)
    cls_name = next(
        (c for c in _TORCH_CLASSES if type(module) is getattr(torch.nn, c)),
        None,
    )
    if cls_name is None:
        for c in _TORCH_CLASSES:  # subclasses of torch's classes
            if isinstance(module, getattr(torch.nn, c)):
                cls_name = c
                break
    scripted = getattr(module, "original_name", None)
    if (
        cls_name is None
        and isinstance(module, torch.jit.ScriptModule)
        and scripted in _TORCH_CLASSES
    ):
        # torch.jit.script keeps the configuration as attributes; torch.jit.trace does not
        _checks.check_scripted_configuration("from_torch", scripted, hasattr(module, "hidden_size"))
        cls_name = scripted
    if cls_name is None:
        raise TypeError(
            "from_torch expects a torch.nn.RNN, LSTM, GRU, RNNCell, LSTMCell or GRUCell, "
            f"got {type(module).__module__}.{type(module).__qualname__}"
        )
    rngs = nnx.Rngs(0) if rngs is None else rngs
    if cls_name.endswith("Cell"):
        args = dict(input_size=module.input_size, hidden_size=module.hidden_size, bias=module.bias)
        if cls_name == "RNNCell":
            args["nonlinearity"] = module.nonlinearity
    else:
        args = dict(
            input_size=module.input_size,
            hidden_size=module.hidden_size,
            num_layers=module.num_layers,
            bias=module.bias,
            batch_first=module.batch_first,
            dropout=float(module.dropout),
            bidirectional=module.bidirectional,
        )
        if cls_name == "RNN":
            args["nonlinearity"] = _layer_nonlinearity(module)
        if cls_name == "LSTM":
            args["proj_size"] = module.proj_size
    if "param_dtype" not in kwargs:
        args["param_dtype"] = _param_dtype(module)
    args.update(kwargs)
    with _converted_dropout_warning():
        out = getattr(jaxrnn, cls_name)(**args, rngs=rngs)
    names = out._flat_weights_names  # torch's parameter names for this configuration
    _checks.check_no_extra_parameters(
        "from_torch", type(module).__name__, cls_name, names, module.named_parameters()
    )
    out.load_state_dict(_computed_weights(module, names))
    if not module.training:
        out.eval()
    return out


def _layer_nonlinearity(module) -> str:
    """The nonlinearity an RNN layer (torch's or jaxrnn's) computes with: its ``mode``, fixed
    at construction, which its call reads; a ``nonlinearity`` assigned afterwards changes the
    attribute only, in torch and here."""
    return _params.rnn_nonlinearity(getattr(module, "mode", None)) or module.nonlinearity


def _computed_weights(module, names) -> dict:
    """The weights ``names`` of a torch module as it computes them, where its state dict holds
    a parametrization's originals instead (weight norm, spectral norm, pruning's mask), read in
    eval mode so that nothing changes (spectral norm's training mode steps its power iteration
    on every read), each submodule's mode restored after.

    ``torch.nn.utils.parametrizations`` compute a weight when it is read. The older hooks
    (``torch.nn.utils.weight_norm``, ``spectral_norm``, ``prune``) keep it as an attribute that
    their forward pre-hook recomputes, stale after ``load_state_dict`` or an optimizer step until
    the next forward: those are computed here from their originals, as that forward would."""
    import torch

    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            hooked = _pre_hook_weights(module)
            for name in names:
                _checks.check_torch_weight_kind(
                    "from_torch",
                    type(module).__name__,
                    name,
                    name in hooked
                    or name in module._parameters
                    or torch.nn.utils.parametrize.is_parametrized(module, name),
                )
            return {
                name: hooked[name]() if name in hooked else getattr(module, name) for name in names
            }
    finally:
        for m, training in modes:
            m.training = training


def _pre_hook_weights(module) -> dict:
    """``{name: compute}`` for the weights that torch's older reparametrizations recompute in a
    forward pre-hook, each computed without writing anything to the module (spectral norm
    without a power-iteration step, as in eval mode)."""
    from torch.nn.utils.prune import BasePruningMethod
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    computes = {}
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, WeightNorm):
            computes[hook.name] = functools.partial(hook.compute_weight, module)
        elif isinstance(hook, SpectralNorm):
            computes[hook.name] = functools.partial(hook.compute_weight, module, False)
        elif isinstance(hook, BasePruningMethod):
            computes[hook._tensor_name] = functools.partial(hook.apply_mask, module)
    return computes


def _unwrapped(module):
    """The module inside torch's wrappers: ``torch.compile``'s ``OptimizedModule`` (its
    ``_orig_mod``, whose attributes it forwards) and ``nn.DataParallel``/``DistributedDataParallel``
    (their ``module``), which a torch user passes for the RNN they wrap."""
    import torch

    wrappers = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)
    while True:
        if isinstance(module, wrappers):
            module = module.module
        elif type(module).__name__ == "OptimizedModule" and hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module


@contextlib.contextmanager
def _converted_dropout_warning():
    """Silences the "dropout option adds dropout after all but last recurrent layer" warning
    while a converted copy is built: the original's construction gave it already."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="dropout option adds dropout after all but last")
        yield


def to_torch(module):
    """The ``torch.nn`` module equivalent to a jaxrnn NNX RNN/LSTM/GRU or cell, weights copied:
    the inverse of :func:`from_torch`.

    Args:
        module: a ``jaxrnn.RNN``, ``LSTM``, ``GRU``, ``RNNCell``, ``LSTMCell`` or ``GRUCell``.

    Returns:
        A new ``torch.nn`` module of the same class and configuration, with the parameters'
        dtype (bfloat16 included) and values, in the same training/eval mode. JAX-only options
        (``dtype``, ``precision``, ``unroll``, ``remat``) have no torch counterpart and are
        left out.

    Example:
        >>> from flax import nnx
        >>> import jaxrnn
        >>> torch_gru = to_torch(jaxrnn.GRU(3, 4, 2, bidirectional=True, rngs=nnx.Rngs(0)))
        >>> torch_gru
        GRU(3, 4, num_layers=2, bidirectional=True)
    """
    import torch

    import jaxrnn

    cls_name = next((c for c in _TORCH_CLASSES if isinstance(module, getattr(jaxrnn, c))), None)
    if cls_name is None:
        linen = type(module).__module__ == "jaxrnn.linen"  # its weights live in variables
        raise TypeError(
            "to_torch expects a jaxrnn.RNN, LSTM, GRU, RNNCell, LSTMCell or GRUCell, "
            f"got {type(module).__module__}.{type(module).__name__}"
            + (
                " (a Linen module holds no weights: load "
                "jaxrnn.to_torch_tensors(jaxrnn.params_to_state_dict(variables['params'])) into "
                "the torch module with load_state_dict)"
                if linen
                else ""
            )
        )
    state_dict = to_torch_tensors(module.state_dict())
    args = dict(input_size=module.input_size, hidden_size=module.hidden_size, bias=module.bias)
    if not cls_name.endswith("Cell"):
        args.update(
            num_layers=module.num_layers,
            batch_first=module.batch_first,
            dropout=module.dropout,
            bidirectional=module.bidirectional,
        )
        if cls_name == "LSTM":
            args["proj_size"] = module.proj_size
    if cls_name == "RNN":
        args["nonlinearity"] = _layer_nonlinearity(module)
    if cls_name == "RNNCell":  # a cell reads its nonlinearity at every call, in both
        args["nonlinearity"] = module.nonlinearity
    dtype = next(iter(state_dict.values())).dtype
    with _converted_dropout_warning():
        out = getattr(torch.nn, cls_name)(**args, dtype=dtype)
    out.load_state_dict(state_dict)
    out.train(module.training)
    return out
