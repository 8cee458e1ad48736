"""Flax NNX front-end: ``jaxrnn.RNN``, ``LSTM``, ``GRU`` and their cells, torch's API.

These modules only create parameters (attributes named as torch's), check arguments and call
:mod:`jaxrnn.functional`; no equation lives here.
"""

from __future__ import annotations

from collections import OrderedDict, namedtuple
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrnn import _checks, _params, convert
from jaxrnn import functional as F


class _IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    """What ``load_state_dict`` returns, as torch's (named and printed as torch's)."""

    __slots__ = ()

    def __repr__(self) -> str:
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()

    __str__ = __repr__


IncompatibleKeys = _IncompatibleKeys


class _TorchParams(nnx.Module):
    """Parameter storage under torch's names, plus torch's ``state_dict`` methods."""

    # torch's parameter names and shapes, in torch's order: a tuple of pairs, hashable, because
    # NNX keeps plain attributes in the module's graphdef, which jax.jit(static_argnums=) hashes
    _shape_items: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def _shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._shape_items)

    def _create_params(self, shapes, hidden_size, rngs: nnx.Rngs, param_dtype, device) -> None:
        self._shape_items = tuple((k, tuple(v)) for k, v in shapes.items())
        values = _params.init_params(rngs.params(), shapes, hidden_size, param_dtype)
        if device is not None:
            values = jax.device_put(values, device)
        for key, value in values.items():
            setattr(self, key, nnx.Param(value))

    def reset_parameters(self, rngs: nnx.Rngs | jax.Array | int | None = None) -> None:
        """Torch's ``reset_parameters``: every parameter drawn again from torch's default
        ``U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))``, in place, keeping its dtype.

        Args:
            rngs: where to draw from: ``nnx.Rngs`` (its ``params`` stream), a JAX key or an int
                seed. Omitted, a seed is drawn from numpy's global generator (torch draws from
                its own global generator; ``np.random.seed`` makes this call reproducible).
        """
        if rngs is None:
            rngs = int(np.random.randint(0, 2**31 - 1))
        key = _checks.check_init_rngs(f"{type(self).__name__}.reset_parameters", rngs)
        dtype = getattr(self, next(iter(self._shapes)))[...].dtype  # the module's param_dtype
        self._check_current_shapes(f"{type(self).__name__}.reset_parameters", self._shapes)
        values = _params.init_params(key, self._shapes, self.hidden_size, dtype)
        for k, value in values.items():
            getattr(self, k)[...] = value

    def _check_current_shapes(self, name: str, keys) -> None:
        """The parameters ``keys`` still have the shapes of the configuration, so that writing
        them in place cannot fail half-way."""
        _checks.check_current_shapes(
            name, {k: getattr(self, k)[...].shape for k in keys}, self._shapes
        )

    def extra_repr(self) -> str:
        """Torch's ``extra_repr``: the constructor arguments that differ from the defaults."""
        return _params.torch_extra_repr(type(self).__name__, self._config())

    def __repr__(self) -> str:
        """Torch's repr, e.g. ``LSTM(10, 20, num_layers=2)``; the state: ``nnx.state(module)``, or
        ``nnx.display`` where treescope renders it (IPython)."""
        return _params.torch_repr(type(self).__name__, self._config())

    def __str__(self) -> str:  # print(module), as torch's
        return repr(self)

    def _config(self) -> dict[str, Any]:
        names = ("input_size", "hidden_size", "bias", "nonlinearity", "num_layers")
        names += ("batch_first", "dropout", "bidirectional", "proj_size")
        return {k: getattr(self, k) for k in names if hasattr(self, k)}

    @property
    def _flat_weights_names(self) -> list[str]:
        """Torch's parameter names in order (its ``_flat_weights_names``)."""
        return list(self._shapes)

    @property
    def _all_weights(self) -> list[list[str]]:
        """Torch's ``_all_weights``: the parameter names of each layer and direction (cells: one
        group)."""
        groups: dict[str, list[str]] = {}
        for key in self._shapes:
            parts = _params.split_recurrent_key(key)
            groups.setdefault("" if parts is None else parts[2], []).append(key)
        return list(groups.values())

    @property
    def all_weights(self) -> list[list[jax.Array]]:
        """Torch's ``all_weights``: the parameter values grouped as :attr:`_all_weights`."""
        return [[getattr(self, k)[...] for k in names] for names in self._all_weights]

    @property
    def _flat_weights(self) -> list[jax.Array]:
        """Torch's ``_flat_weights``: the parameter values in :attr:`_flat_weights_names` order."""
        return [getattr(self, k)[...] for k in self._shapes]

    def torch_params(self) -> dict[str, jax.Array]:
        """The current parameters as a flat dict keyed by torch's names (the functional tree)."""
        return {key: getattr(self, key)[...] for key in self._shapes}

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate=True):
        """Torch's ``named_parameters``: ``(name, array)`` pairs in torch's order, names after
        ``prefix + "."`` when a prefix is given (as torch's)."""
        del recurse, remove_duplicate  # no submodules, no shared parameters
        _checks.check_prefix(f"{type(self).__name__}.named_parameters", prefix)
        lead = prefix + "." if prefix else ""
        return ((lead + key, getattr(self, key)[...]) for key in self._shapes)

    def parameters(self, recurse: bool = True):
        """Torch's ``parameters``: the arrays in torch's order."""
        return (value for _, value in self.named_parameters(recurse=recurse))

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        """Torch's ``state_dict``: an ``OrderedDict`` (as torch's) of ``{prefix + name: numpy
        array}`` in torch's key order (added to ``destination`` and returned, if given;
        ``keep_vars`` changes nothing: the values are copies either way). Keywords, as torch's
        documented signature; positional ``(destination, prefix, keep_vars)`` with torch's
        ``FutureWarning``."""
        destination, prefix, keep_vars = _checks.check_state_dict_arguments(
            f"{type(self).__name__}.state_dict", args, destination, prefix, keep_vars
        )
        del keep_vars
        _checks.check_prefix(f"{type(self).__name__}.state_dict", prefix)
        values = convert.params_to_state_dict(self.torch_params(), prefix)
        if destination is None:
            return OrderedDict(values)
        destination.update(values)
        return destination

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Copy parameters from a torch ``state_dict`` (tensors or numpy arrays).

        With ``strict``, missing, unexpected or mis-shaped keys raise torch's error (a
        ``ValueError`` that is also a ``RuntimeError``) naming each; with ``strict=False`` the
        matching keys load and the rest are reported. Values are cast to each parameter's dtype;
        with ``assign=True`` they keep the checkpoint's dtype, as torch's ``assign``. A failed
        load changes nothing.

        Returns:
            ``_IncompatibleKeys(missing_keys, unexpected_keys)`` as torch's.
        """
        name = type(self).__name__
        loaded = convert.match_state_dict(name, state_dict, self._shapes, strict)
        values = {}
        kept = {}  # assign: the checkpoint's dtypes (float64 without x64: float32, one warning)
        for key, value in loaded.items():  # every value cast before any is assigned
            dtype = getattr(self, key)[...].dtype
            if assign:
                _checks.check_assigned_dtype(name, key, self._shapes[key], value)
                if value.dtype.name not in kept:
                    what = f"{name}.load_state_dict: the state dict"
                    kept[value.dtype.name] = convert.jax_param_dtype(value.dtype.name, what)
                dtype = kept[value.dtype.name]
            try:
                values[key] = jnp.array(value, dtype=dtype)
            except (TypeError, ValueError) as e:
                raise _checks.load_copy_error(name, key, self._shapes[key], value.shape, e) from e
        if not assign:  # written in place: every one must still have its configured shape
            self._check_current_shapes(f"{name}.load_state_dict", values)
        for key, value in values.items():
            if assign:
                setattr(self, key, nnx.Param(value))
            else:
                getattr(self, key)[...] = value
        missing = [k for k in self._shapes if k not in loaded]
        unexpected = [k for k in state_dict if k not in self._shapes]
        return _IncompatibleKeys(missing, unexpected)

    def to(self, *args, **kwargs):
        """Torch's ``to``: ``to(dtype)`` casts every parameter, in place, to a floating dtype (a
        JAX/numpy dtype, its name or a torch dtype; float64 needs ``jax_enable_x64``, else
        float32 with a warning); ``to(device)`` places them on a JAX device or sharding (or a
        torch device string, ``'cpu'``, ``'cuda:0'``); ``to(other)`` takes an array's dtype.
        Returns the module, as torch's. A computation ``dtype=`` given at construction stays."""
        name = f"{type(self).__name__}.to"
        dtype, device = _checks.check_to_arguments(name, args, kwargs)
        if dtype is not None:
            _checks.check_module_to_dtype(name, dtype)
            dtype = convert.jax_param_dtype(dtype.name, f"{name}: the dtype")
        values = {}  # every value cast and placed before any is assigned
        for key in self._shapes:
            value = getattr(self, key)[...]
            value = value if dtype is None else value.astype(dtype)
            values[key] = value if device is None else jax.device_put(value, device)
        for key, value in values.items():  # the same Param objects, as torch keeps its own
            getattr(self, key).set_value(value)
        if dtype is not None:
            self.param_dtype = dtype
        return self

    def double(self):
        """Torch's ``double``: :meth:`to` float64 (needs ``jax_enable_x64``)."""
        return self.to(jnp.float64)

    def float(self):
        """Torch's ``float``: :meth:`to` float32."""
        return self.to(jnp.float32)

    def half(self):
        """Torch's ``half``: :meth:`to` float16."""
        return self.to(jnp.float16)

    def bfloat16(self):
        """Torch's ``bfloat16``: :meth:`to` bfloat16."""
        return self.to(jnp.bfloat16)

    def cpu(self):
        """Torch's ``cpu``: the parameters on the first CPU device."""
        return self.to(jax.devices("cpu")[0])

    def forward(self, *args, **kwargs):
        """Torch's ``forward``: the same as calling the module."""
        return self(*args, **kwargs)

    @property
    def training(self) -> bool:
        """Torch's flag: ``True`` in training mode (dropout active), see :meth:`eval`; assigning
        it (``module.training = False``) is ``module.train(False)``."""
        return not self.deterministic

    @training.setter
    def training(self, mode: bool) -> None:
        self.train(mode)

    def train(self, mode: bool = True, **attributes):
        """Training mode (dropout between layers active), as torch's ``module.train(mode)``;
        returns the module."""
        _checks.check_training_mode(type(self).__name__, mode)
        if mode:
            super().train(**attributes)
        else:
            super().eval(**attributes)
        return self

    def eval(self, **attributes):
        """Evaluation mode (no dropout), as torch's ``module.eval()``; returns the module."""
        super().eval(**attributes)
        return self

    def set_view(self, deterministic: bool | None = None):
        """Used by ``nnx.view`` (Flax 0.12): ``nnx.view(model, deterministic=True)`` gives a view
        in evaluation mode (no dropout between layers), as for ``nnx.Dropout``.

        Args:
          deterministic: if True, disables the dropout between layers.
        """
        if deterministic is not None:
            self.deterministic = bool(deterministic)


class RNNBase(_TorchParams):
    """The base of :class:`RNN`, :class:`LSTM` and :class:`GRU`, as ``torch.nn.RNNBase``
    (``isinstance(m, jaxrnn.RNNBase)``); its constructor takes the ``mode`` first
    (``'LSTM'``, ``'GRU'``, ``'RNN_TANH'`` or ``'RNN_RELU'``), as torch's."""

    mode: str

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        *,
        rngs: nnx.Rngs,
        dtype=None,
        param_dtype=jnp.float32,
        precision=None,
        unroll: int = 1,
        remat: bool | int = False,
        device=None,
    ):
        name = type(self).__name__
        _checks.check_constructor(
            name,
            mode,
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            proj_size,
        )
        dtype, param_dtype = _checks.check_dtypes(name, dtype, param_dtype)
        _checks.check_loop_options(name, unroll, remat)  # at construction, not the first call
        precision = _checks.check_precision(name, precision)
        device = _checks.check_device(name, device)
        _checks.check_module_rngs(name, rngs, float(dropout) if num_layers > 1 else 0.0)
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.unroll = unroll
        self.remat = remat
        self.deterministic = False  # torch modules start in training mode; see .eval()
        shapes = _params.layer_param_shapes(
            mode, input_size, hidden_size, num_layers, bias, bidirectional, proj_size
        )
        self._create_params(shapes, hidden_size, rngs, param_dtype, device)
        self.rngs = _checks.dropout_stream(rngs) if num_layers > 1 else None

    def flatten_parameters(self) -> None:
        """A no-op, for code written for torch's cuDNN weight packing."""

    def __call__(
        self,
        input,
        hx=None,
        *,
        seq_lengths=None,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
    ):
        """Run the layer; see the class docstring for shapes.

        Args:
            input: ``(L, N, H_in)`` (``(N, L, H_in)`` with ``batch_first``) or ``(L, H_in)``.
            hx: initial state, zeros if omitted.
            seq_lengths: optional int ``(N,)`` valid lengths of a padded batch.
            deterministic: overrides the module's mode (``.train()``/``.eval()``) for this call.
            rngs: overrides the dropout randomness for this call.
        """
        deterministic = self.deterministic if deterministic is None else deterministic
        training = not deterministic
        key, stream = None, None
        if _params.dropout_acts(training, self.dropout, self.num_layers):
            source = self.rngs if rngs is None else rngs
            _checks.check_dropout_source(type(self).__name__, self.dropout, source)
            if isinstance(source, nnx.Rngs):
                stream = source["dropout"]
            elif isinstance(source, nnx.RngStream):
                stream = source
            else:
                key = source
        count = None if stream is None else stream.count[...]
        try:
            if stream is not None:
                key = stream()
            return F.rnn(
                self.torch_params(),
                input,
                hx,
                mode=self.mode,
                batch_first=self.batch_first,
                dropout=self.dropout,
                training=training,
                dropout_key=key,
                seq_lengths=seq_lengths,
                dtype=self.dtype,
                precision=self.precision,
                unroll=self.unroll,
                remat=self.remat,
                name=type(self).__name__,
            )
        except Exception:
            if stream is not None:  # a failed call draws no randomness, as in torch
                stream.count[...] = count
            raise


_LAYER_DOC = """

    Inputs: input, {hx}
        * **input**: ``(L, N, H_in)``, ``(N, L, H_in)`` when ``batch_first=True``, or ``(L, H_in)``
          unbatched; or a :class:`jaxrnn.utils.rnn.PackedSequence` (torch's own is taken too, by
          its fields; ``output`` is then jaxrnn's).
        * **{hx}**: {hx_shape} Defaults to zeros.

    Outputs: output, {hn}
        * **output**: ``(L, N, D * H_out)`` (``(N, L, D * H_out)`` with ``batch_first``), the last
          layer's ``h_t`` for every ``t``; ``(L, D * H_out)`` for unbatched input.
        * **{hn}**: {hn_shape}

    where ``N`` = batch size, ``L`` = sequence length, ``D`` = 2 if bidirectional else 1,
    ``H_in`` = input_size, ``H_cell`` = hidden_size, ``H_out`` = {h_out}.

    Attributes:
        weight_ih_l[k]: ``(G*H_cell, H_in)`` for ``k = 0``, else ``(G*H_cell, D*H_out)``.
        weight_hh_l[k]: ``(G*H_cell, H_out)``.
        bias_ih_l[k], bias_hh_l[k]: ``(G*H_cell,)``.{extra_attr}
        Suffix ``_reverse`` for the backward direction. All initialised from
        ``U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))`` as in torch.

    Extra keyword-only arguments (JAX):
        rngs: ``nnx.Rngs``; ``params`` initialises the weights, ``dropout`` drives dropout.
        dtype: computation dtype (default: the promoted input/parameter dtype). Input, ``hx``
            and parameters are cast to it, the carry (``h`` and LSTM ``c``) stays in it and the
            outputs come back in it, e.g. float32 parameters with ``dtype=jnp.bfloat16``.
        param_dtype: parameter dtype (default float32).
        precision: ``jax.lax.Precision`` for the matmuls.
        unroll: time steps unrolled per ``lax.scan`` iteration (``True``: all, as ``lax.scan``'s).
        remat: recompute activations in chunks in the backward pass (``True`` for
            ``sqrt(L)``-step chunks, or an int chunk length) to save memory on long sequences.
        device: torch's factory argument: where the parameters are placed, a JAX device or
            sharding, or a torch device (``'cpu'``, ``'cuda:0'``, ``torch.device``); default
            JAX's default device.

    Dropout acts in training mode (the default, as in torch); call ``.eval()`` to turn it off
    and ``.train()`` to turn it back on.
"""


class RNN(RNNBase):
    """Elman RNN, ``torch.nn.RNN``: ``h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``
    (``relu`` with ``nonlinearity='relu'``).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> import jaxrnn
        >>> rnn = jaxrnn.RNN(10, 20, 2, rngs=nnx.Rngs(0))
        >>> output, h_n = rnn(jnp.ones((5, 3, 10)))
        >>> output.shape, h_n.shape
        ((5, 3, 20), (2, 3, 20))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        rngs: nnx.Rngs,
        **kwargs,
    ):
        _checks.check_no_proj_size(type(self).__name__, kwargs)
        mode = _checks.check_nonlinearity(type(self).__name__, nonlinearity)
        self.nonlinearity = nonlinearity
        super().__init__(
            mode,
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            rngs=rngs,
            **kwargs,
        )


class LSTM(RNNBase):
    """Long short-term memory, ``torch.nn.LSTM``.

    ``i, f, g, o = σ, σ, tanh, σ (x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)`` (gate order
    i, f, g, o), ``c_t = f * c_{t-1} + i * g``, ``h_t = o * tanh(c_t)``; with ``proj_size > 0``,
    ``h_t = h_t W_hr^T``.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> import jaxrnn
        >>> lstm = jaxrnn.LSTM(10, 20, 2, bidirectional=True, rngs=nnx.Rngs(0))
        >>> output, (h_n, c_n) = lstm(jnp.ones((5, 3, 10)))
        >>> output.shape, h_n.shape, c_n.shape
        ((5, 3, 40), (4, 3, 20), (4, 3, 20))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        *,
        rngs: nnx.Rngs,
        **kwargs,
    ):
        super().__init__(
            "LSTM",
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            proj_size,
            rngs=rngs,
            **kwargs,
        )


class GRU(RNNBase):
    """Gated recurrent unit, ``torch.nn.GRU``.

    ``r = σ(x W_ir^T + b_ir + h W_hr^T + b_hr)``, ``z = σ(x W_iz^T + b_iz + h W_hz^T + b_hz)``,
    ``n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))``, ``h' = (1 - z) * n + z * h``
    (gate order r, z, n).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> import jaxrnn
        >>> gru = jaxrnn.GRU(3, 2, rngs=nnx.Rngs(0))
        >>> output, h_n = gru(jnp.ones((9, 5, 3)))
        >>> output.shape, h_n.shape
        ((9, 5, 2), (1, 5, 2))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        rngs: nnx.Rngs,
        **kwargs,
    ):
        _checks.check_no_proj_size(type(self).__name__, kwargs)
        super().__init__(
            "GRU",
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            rngs=rngs,
            **kwargs,
        )


_H = "``(D * num_layers, N, H_out)`` (``(D * num_layers, H_out)`` unbatched)"
for _cls in (RNN, GRU):
    _cls.__doc__ += _LAYER_DOC.format(
        hx="h_0",
        hx_shape=_H + ".",
        hn="h_n",
        hn_shape=_H + ", the final hidden state; with "
        "a padded/packed input, each sequence's state after its own last valid step.",
        h_out="hidden_size",
        extra_attr="",
    )
_C = "``(D * num_layers, N, H_cell)`` (``(D * num_layers, H_cell)`` unbatched)"
LSTM.__doc__ += _LAYER_DOC.format(
    hx="(h_0, c_0)",
    hx_shape="``h_0`` " + _H + " and ``c_0`` " + _C + ".",
    hn="(h_n, c_n)",
    hn_shape="final hidden state " + _H + " and cell state " + _C + "; with a padded/packed "
    "input, each sequence's states after its own last valid step.",
    h_out="proj_size if proj_size > 0 else hidden_size",
    extra_attr="\n        weight_hr_l[k]: ``(H_out, H_cell)``, only when ``proj_size > 0``.",
)


class RNNCellBase(_TorchParams):
    """The base of :class:`RNNCell`, :class:`LSTMCell` and :class:`GRUCell`, as
    ``torch.nn.RNNCellBase`` (``isinstance(m, jaxrnn.RNNCellBase)``); unlike torch's
    ``(input_size, hidden_size, bias, num_chunks)``, its constructor takes the ``mode``
    (``'LSTM'``, ``'GRU'``, ``'RNN_TANH'``, ``'RNN_RELU'``) first."""

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        rngs: nnx.Rngs,
        dtype=None,
        param_dtype=jnp.float32,
        precision=None,
        device=None,
        **unknown,
    ):
        _checks.check_no_unknown_keywords(type(self).__name__, unknown)
        _checks.check_mode(type(self).__name__, mode)
        _checks.check_cell_constructor(type(self).__name__, input_size, hidden_size, bias)
        dtype, param_dtype = _checks.check_dtypes(type(self).__name__, dtype, param_dtype)
        precision = _checks.check_precision(type(self).__name__, precision)
        device = _checks.check_device(type(self).__name__, device)
        _checks.check_module_rngs(type(self).__name__, rngs)
        self._cell_mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.deterministic = False  # torch's cells have training mode too (nothing depends on it)
        shapes = _params.cell_param_shapes(mode, input_size, hidden_size, bias)
        self._create_params(shapes, hidden_size, rngs, param_dtype, device)
        if not bias:  # torch registers them as None (its layers have no bias_*_l* at all)
            self.bias_ih = self.bias_hh = None

    @property
    def mode(self) -> str:
        """Torch's mode string: ``'LSTM'``, ``'GRU'``, ``'RNN_TANH'`` or ``'RNN_RELU'``."""
        return self._cell_mode

    def __call__(self, input, hx=None):
        """One step: ``input (N, H_in)`` or ``(H_in,)``; returns the new state like ``hx``."""
        return self._step(self.mode, input, hx)

    def _step(self, mode: str, input, hx):
        return F.cell_forward(
            mode,
            self.torch_params(),
            input,
            hx,
            dtype=self.dtype,
            precision=self.precision,
            name=type(self).__name__,
        )


_CELL_DOC = """

    Inputs: input, {hx}
        * **input**: ``(N, H_in)`` or ``(H_in,)``.
        * **{hx}**: {hx_shape} Defaults to zeros.

    Outputs: {out}
        * {out_shape}

    Attributes:
        weight_ih: ``(G*hidden_size, input_size)``; weight_hh: ``(G*hidden_size, hidden_size)``;
        bias_ih, bias_hh: ``(G*hidden_size,)``, ``None`` with ``bias=False`` (as torch's); all
        ``U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))``.

    Extra keyword-only arguments (JAX): ``rngs``, ``dtype``, ``param_dtype``, ``precision`` and
    ``device``, as on the layers.
"""


class RNNCell(RNNCellBase):
    """``torch.nn.RNNCell``: ``h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)`` (or relu).

    As torch's, the constructor takes any ``nonlinearity`` and the call reads it (torch's
    ``RuntimeError`` "Unknown nonlinearity: ..." for one other than ``'tanh'``/``'relu'``).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> import jaxrnn
        >>> cell = jaxrnn.RNNCell(10, 20, rngs=nnx.Rngs(0))
        >>> cell(jnp.ones((3, 10))).shape
        (3, 20)
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        *,
        rngs: nnx.Rngs,
        **kwargs,
    ):
        # torch's RNNCell takes any nonlinearity here and refuses an unknown one in its forward
        self.nonlinearity = nonlinearity
        super().__init__(
            _params.rnn_mode(nonlinearity), input_size, hidden_size, bias, rngs=rngs, **kwargs
        )

    @property
    def mode(self) -> str | None:
        """``'RNN_TANH'`` or ``'RNN_RELU'`` as the nonlinearity is now (the call reads it, as
        torch's); ``None`` for an unknown one, which the call refuses."""
        return _params.known_rnn_mode(self.nonlinearity)

    def __call__(self, input, hx=None):
        """One step: ``input (N, H_in)`` or ``(H_in,)``; returns ``h' (N, H)`` or ``(H,)``."""
        mode = _checks.check_cell_nonlinearity(type(self).__name__, self.nonlinearity, input, hx)
        return self._step(mode, input, hx)


class LSTMCell(RNNCellBase):
    """``torch.nn.LSTMCell``: one LSTM step, gate order i, f, g, o.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> import jaxrnn
        >>> cell = jaxrnn.LSTMCell(10, 20, rngs=nnx.Rngs(0))
        >>> h, c = cell(jnp.ones((3, 10)))
        >>> h.shape, c.shape
        ((3, 20), (3, 20))
    """

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, *, rngs: nnx.Rngs, **kwargs
    ):
        super().__init__("LSTM", input_size, hidden_size, bias, rngs=rngs, **kwargs)


class GRUCell(RNNCellBase):
    """``torch.nn.GRUCell``: one GRU step, gate order r, z, n, ``b_hn`` inside ``r * (...)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> import jaxrnn
        >>> cell = jaxrnn.GRUCell(10, 20, rngs=nnx.Rngs(0))
        >>> cell(jnp.ones((3, 10))).shape
        (3, 20)
    """

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, *, rngs: nnx.Rngs, **kwargs
    ):
        super().__init__("GRU", input_size, hidden_size, bias, rngs=rngs, **kwargs)


_HC = "``(N, H)`` or ``(H,)``"
for _cls in (RNNCell, GRUCell):
    _cls.__doc__ += _CELL_DOC.format(
        hx="hx", hx_shape=_HC + ".", out="h'", out_shape="**h'**: " + _HC + "."
    )
LSTMCell.__doc__ += _CELL_DOC.format(
    hx="(h_0, c_0)",
    hx_shape="each " + _HC + ".",
    out="(h', c')",
    out_shape="**h', c'**: each " + _HC + ".",
)
