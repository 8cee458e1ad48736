"""Flax Linen front-end: the same six modules as :mod:`jaxrnn` (NNX), as ``flax.linen`` modules.

``variables = m.init(key, input)`` creates a ``params`` collection that is a flat dict keyed by
torch's names; ``m.apply(variables, input, hx=None, deterministic=True)`` runs the functional
core. ``dtype``/``param_dtype`` mean what they mean on the NNX twins: a call computes, carries
its state and returns in one compute dtype. Dropout between layers: ``deterministic=False``
(in the call or as the module's attribute, as Flax's ``nn.Dropout``) with
``rngs={'dropout': key}``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxrnn import linen as jrl
    >>> lstm = jrl.LSTM(10, 20, 2)
    >>> x = jnp.ones((5, 3, 10))
    >>> variables = lstm.init(jax.random.key(0), x)
    >>> output, (h_n, c_n) = lstm.apply(variables, x)
    >>> variables['params']['weight_ih_l0'].shape, output.shape
    ((80, 10), (5, 3, 20))
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import Scope

from jaxrnn import _checks, _params
from jaxrnn import functional as F


class _NoProjection(int):
    """The ``proj_size`` of a Linen ``RNN``/``GRU`` nobody gave: 0, as torch's ``nn.GRU().proj_size``.

    Its own type tells it from a ``proj_size=0`` given in the constructor, which torch refuses
    for these modes (a dataclass field cannot tell a default from an explicit equal value).
    """

    __slots__ = ()


_NO_PROJECTION = _NoProjection(0)


def _uniform(bound: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class _LinenBase(nn.Module):
    """Shared machinery: parameters under torch's names, the call into the functional core."""

    @property
    def mode(self) -> str:
        """Torch's mode string: ``'LSTM'``, ``'GRU'``, ``'RNN_TANH'`` or ``'RNN_RELU'``."""
        return self._mode()

    @nn.nowrap
    def _check_dtypes(self):
        """The dtypes and ``precision``, at construction as the NNX twins check them (warning
        about a torch dtype as ``dtype=`` once, not for every clone Flax makes in
        ``init``/``apply``)."""
        warn = not isinstance(self.parent, Scope)
        _checks.check_dtypes(type(self).__name__, self.dtype, self.param_dtype, warn=warn)
        _checks.check_precision(type(self).__name__, self.precision)

    def _torch_params(self, shapes) -> dict[str, jax.Array]:
        init = _uniform(_params.init_bound(self.hidden_size))
        _, param_dtype = _checks.check_dtypes(
            type(self).__name__, self.dtype, self.param_dtype, warn=False
        )
        params = {k: self.param(k, init, shape, param_dtype) for k, shape in shapes.items()}
        _checks.check_linen_own_params(
            type(self).__name__, self.variables.get("params", {}), shapes
        )
        return params


class _LayerBase(_LinenBase):
    @nn.nowrap
    def _mode(self) -> str:
        raise NotImplementedError

    def __post_init__(self):
        if self._mode() != "LSTM" and type(self.proj_size) is not _NoProjection:
            _checks.check_no_proj_size(type(self).__name__, {"proj_size": self.proj_size})
        self._check_dtypes()
        _checks.check_constructor(
            type(self).__name__,
            self._mode(),
            self.input_size,
            self.hidden_size,
            self.num_layers,
            self.bias,
            self.batch_first,
            self.dropout,
            self.bidirectional,
            self.proj_size,  # RNN/GRU: the sentinel, an int 0
            warn=not isinstance(self.parent, Scope),  # torch's warning once, not per clone
        )
        _checks.check_loop_options(type(self).__name__, self.unroll, self.remat)
        super().__post_init__()

    @nn.compact
    def __call__(self, input, hx=None, *, seq_lengths=None, deterministic: bool | None = None):
        """See the NNX twin (:class:`jaxrnn.LSTM` etc.) for the ``Inputs:``/``Outputs:`` shapes.

        ``deterministic`` (no dropout between layers) may be given here or as the module's
        attribute, as for Flax's ``nn.Dropout`` (the attribute survives ``nn.vmap``/``nn.scan``,
        which drop keyword arguments), not both; neither: ``True``.
        """
        mode = self._mode()
        params = self._torch_params(
            _params.layer_param_shapes(
                mode,
                self.input_size,
                self.hidden_size,
                self.num_layers,
                self.bias,
                self.bidirectional,
                self.proj_size,
            )
        )
        if deterministic is None and self.deterministic is None:
            deterministic = True
        else:
            deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        training = not deterministic
        key = None
        if _params.dropout_acts(training, self.dropout, self.num_layers):
            _checks.check_linen_dropout_rng(  # make_rng falls back to 'params', as for nn.Dropout
                type(self).__name__, self.dropout, self.has_rng("dropout") or self.has_rng("params")
            )
            key = self.make_rng("dropout")
        return F.rnn(
            params,
            input,
            hx,
            mode=mode,
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


class RNN(_LayerBase):
    """``torch.nn.RNN`` as a Linen module; shapes as :class:`jaxrnn.RNN`."""

    input_size: int
    hidden_size: int
    num_layers: int = 1
    nonlinearity: str = "tanh"
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    unroll: int = 1
    remat: bool | int = False
    deterministic: bool | None = None
    proj_size: int = _NO_PROJECTION  # 0; refused if given (any value), as torch's: LSTM only

    @nn.nowrap
    def _mode(self) -> str:
        return _checks.check_nonlinearity(type(self).__name__, self.nonlinearity)


class LSTM(_LayerBase):
    """``torch.nn.LSTM`` as a Linen module; shapes as :class:`jaxrnn.LSTM`."""

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False
    proj_size: int = 0
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    unroll: int = 1
    remat: bool | int = False
    deterministic: bool | None = None

    @nn.nowrap
    def _mode(self) -> str:
        return "LSTM"


class GRU(_LayerBase):
    """``torch.nn.GRU`` as a Linen module; shapes as :class:`jaxrnn.GRU`."""

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    unroll: int = 1
    remat: bool | int = False
    deterministic: bool | None = None
    proj_size: int = _NO_PROJECTION  # 0; refused if given (any value), as torch's: LSTM only

    @nn.nowrap
    def _mode(self) -> str:
        return "GRU"


class _CellBase(_LinenBase):
    @nn.nowrap
    def _mode(self) -> str:
        raise NotImplementedError

    @nn.nowrap
    def _call_mode(self, input, hx) -> str:
        return self._mode()

    def __post_init__(self):
        _checks.check_cell_constructor(
            type(self).__name__, self.input_size, self.hidden_size, self.bias
        )
        self._check_dtypes()
        super().__post_init__()

    @nn.compact
    def __call__(self, input, hx=None):
        """One step; shapes as the NNX twin (:class:`jaxrnn.LSTMCell` etc.)."""
        mode = self._call_mode(input, hx)
        params = self._torch_params(
            _params.cell_param_shapes(mode, self.input_size, self.hidden_size, self.bias)
        )
        return F.cell_forward(
            mode,
            params,
            input,
            hx,
            dtype=self.dtype,
            precision=self.precision,
            name=type(self).__name__,
        )


class RNNCell(_CellBase):
    """``torch.nn.RNNCell`` as a Linen module."""

    input_size: int
    hidden_size: int
    bias: bool = True
    nonlinearity: str = "tanh"
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None

    @nn.nowrap
    def _mode(self) -> str | None:
        return _params.known_rnn_mode(self.nonlinearity)

    @nn.nowrap
    def _call_mode(self, input, hx) -> str:
        # torch's RNNCell takes any nonlinearity at construction and refuses it in its forward
        return _checks.check_cell_nonlinearity(type(self).__name__, self.nonlinearity, input, hx)


class LSTMCell(_CellBase):
    """``torch.nn.LSTMCell`` as a Linen module."""

    input_size: int
    hidden_size: int
    bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None

    @nn.nowrap
    def _mode(self) -> str:
        return "LSTM"


class GRUCell(_CellBase):
    """``torch.nn.GRUCell`` as a Linen module."""

    input_size: int
    hidden_size: int
    bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None

    @nn.nowrap
    def _mode(self) -> str:
        return "GRU"
