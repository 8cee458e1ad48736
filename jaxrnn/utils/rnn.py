"""Packed sequences as ``torch.nn.utils.rnn``, in a form that also works under ``jit``.

Torch packs a batch of variable-length sequences into a ragged ``data`` of shape
``(sum(lengths), *)`` plus ``batch_sizes``: shapes that depend on the lengths' values, which
``jit`` cannot trace. A :class:`PackedSequence` here therefore stores a static-shape view of the
same thing: the time-major padded batch ``padded (T, N, *)`` in the caller's batch order (zero
past each sequence's length), the ``lengths (N,)``, and torch's ``sorted_indices`` /
``unsorted_indices``. It is a pytree whose leaves may all be traced, so a jitted function that
takes one (or builds one from traced lengths) compiles once for every set of lengths. Where the
lengths are concrete, torch's exact ``data`` and ``batch_sizes`` are available as properties.

Every recurrent layer (:func:`jaxrnn.functional.rnn` and hence the NNX and Linen modules)
accepts a :class:`PackedSequence` and returns one, with ``hx``/``h_n`` in the caller's batch
order as torch does with ``enforce_sorted=False``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn import _checks
from jaxrnn.utils import _torch_sort

__all__ = [
    "PackedSequence",
    "invert_permutation",
    "pack_padded_sequence",
    "pad_packed_sequence",
    "pad_sequence",
    "unpad_sequence",
    "pack_sequence",
    "unpack_sequence",
]


def _to_array(x):
    """A JAX array (or tracer) from a JAX/numpy array, a torch tensor or a nested list."""
    if isinstance(x, jax.Array):
        return x
    return jnp.asarray(_checks._from_torch(x))


def _placed(a, device):
    """``a`` on ``device`` (a JAX device or sharding); ``a`` itself if it is there already."""
    sharding = getattr(a, "sharding", None)
    if isinstance(device, jax.Device) and isinstance(sharding, jax.sharding.SingleDeviceSharding):
        if sharding.device_set == {device}:
            return a
    elif sharding is not None and sharding == device:
        return a
    return jax.device_put(a, device)


def _concrete(x) -> np.ndarray | None:
    """``x`` as a numpy array when its values are known at trace time, else ``None``."""
    if x is None or isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def _batch_sizes(lengths: np.ndarray) -> np.ndarray:
    """Torch's ``batch_sizes`` of concrete ``lengths``: how many sequences reach each step."""
    steps = int(lengths.max()) if lengths.size else 0
    return (lengths[None, :] > np.arange(steps)[:, None]).sum(1).astype(np.int64)


def _time_mask(lengths, steps: int, ndim: int):
    """``(T, N, 1, ...)`` boolean mask of the valid steps, broadcastable to ``(T, N, *)``."""
    mask = jnp.arange(steps)[:, None] < lengths[None, :]
    return mask.reshape(mask.shape + (1,) * (ndim - 2))


@jax.tree_util.register_pytree_node_class
class PackedSequence:
    """A batch of variable-length sequences, as ``torch.nn.utils.rnn.PackedSequence``.

    Build one with :func:`pack_padded_sequence` or :func:`pack_sequence` (or from torch's own
    fields, ``PackedSequence(data, batch_sizes, sorted_indices, unsorted_indices)``, with
    concrete ``batch_sizes``); pass it to any jaxrnn recurrent layer; read it back with
    :func:`pad_packed_sequence`.

    Attributes:
        padded: ``(T, N, *)`` time-major padded batch in the caller's batch order, zero at
            ``t >= lengths[n]``. ``T`` is the longest length when the lengths were concrete at
            packing time, else the padded input's length.
        lengths: int32 ``(N,)``, each sequence's length, in the caller's batch order.
        sorted_indices: int32 ``(N,)`` or ``None``, torch's: position ``i`` of the
            length-sorted batch holds caller sequence ``sorted_indices[i]``.
        unsorted_indices: int32 ``(N,)`` or ``None``, the inverse permutation.
        data: torch's packed ``(sum(lengths), *)``, time step by time step, each step in sorted
            order (concrete lengths only).
        batch_sizes: torch's int64 ``(max(lengths),)`` (a numpy array; when a jitted function
            builds the PackedSequence and returns it, a JAX int32 array unless x64 is on), the
            number of sequences longer than each step (concrete lengths only).

    Like torch's namedtuple it unpacks and indexes as ``(data, batch_sizes, sorted_indices,
    unsorted_indices)`` and has ``_asdict``/``_replace``; like torch's, ``to(dtype)``,
    ``half()``, ``float()``, ``double()``, ``int()``, ``long()``, ... cast the data only, and
    ``to(device)``/``cpu()`` move every array (to a JAX device or sharding).

    Under ``jit`` with traced lengths the pytree leaves ``padded``, ``lengths``,
    ``sorted_indices`` and ``unsorted_indices`` are all there is; ``data`` and
    ``batch_sizes`` need values that are only known at run time and raise ``ValueError``.
    The integer leaves are leaves too: a cast over the whole pytree (``jax.tree.map(lambda a:
    a.astype(jnp.bfloat16), packed)``) casts the lengths (257 becomes 256); cast with
    :meth:`to`, which casts the data only.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxrnn.utils.rnn import pack_padded_sequence
        >>> seq = jnp.array([[1.0, 2, 0], [3, 0, 0], [4, 5, 6]])
        >>> packed = pack_padded_sequence(seq, [2, 1, 3], batch_first=True, enforce_sorted=False)
        >>> packed.data.tolist(), packed.batch_sizes.tolist(), packed.sorted_indices.tolist()
        ([4.0, 1.0, 3.0, 5.0, 2.0, 6.0], [3, 2, 1], [2, 0, 1])
    """

    padded: jax.Array
    lengths: jax.Array
    sorted_indices: jax.Array | None
    unsorted_indices: jax.Array | None

    def __init__(self, data, batch_sizes=None, sorted_indices=None, unsorted_indices=None):
        if batch_sizes is None:  # torch's PackedSequence((data, batch_sizes), ...) spelling
            _checks.check_packed_pair("PackedSequence", data)
            data, batch_sizes = data
        data = _to_array(data)
        sizes = _checks.check_batch_sizes("PackedSequence", batch_sizes, data.shape)
        batch = int(sizes[0]) if len(sizes) else 0
        valid = np.arange(batch)[None, :] < sizes[:, None]  # (T, N) in sorted order
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        index = np.where(valid, offsets[:, None] + np.arange(batch)[None, :], 0)
        mask = valid.reshape(valid.shape + (1,) * (data.ndim - 1))
        padded = jnp.where(mask, data[index], jnp.zeros((), data.dtype))
        lengths = jnp.asarray(valid.sum(0), jnp.int32)
        if sorted_indices is not None:
            sorted_indices = _indices("PackedSequence", "sorted_indices", sorted_indices, batch)
            if unsorted_indices is None:
                unsorted_indices = invert_permutation(sorted_indices)
        values = np.asarray(valid.sum(0), np.int64)
        if unsorted_indices is not None:
            unsorted_indices = _indices(
                "PackedSequence", "unsorted_indices", unsorted_indices, batch
            )
            padded, lengths = padded[:, unsorted_indices], lengths[unsorted_indices]
            order = _concrete(unsorted_indices)
            values = None if order is None else values[order]
        self._set(padded, lengths, sorted_indices, unsorted_indices, values)

    def _set(self, padded, lengths, sorted_indices, unsorted_indices, values=None) -> None:
        self.padded = padded
        self.lengths = lengths
        self.sorted_indices = sorted_indices
        self.unsorted_indices = unsorted_indices
        # the lengths' values where they were concrete when this object was made (numpy, in the
        # caller's order): ``data`` and ``batch_sizes`` work from them even where ``lengths``
        # became a tracer (made inside ``jit`` from constant lengths). Not a pytree leaf: an
        # object rebuilt from leaves (passed into a jitted function) has only ``lengths``.
        self._values = values

    @classmethod
    def from_padded(cls, padded, lengths, sorted_indices=None, unsorted_indices=None):
        """Wrap the static-shape fields as they are (no checks, no copies): the pytree view."""
        obj = object.__new__(cls)
        obj._set(padded, lengths, sorted_indices, unsorted_indices)
        return obj

    def _derived(self, padded, *indices) -> PackedSequence:
        """A PackedSequence of the same sequences (lengths and order) holding ``padded``, with
        ``indices`` (the lengths and both index arrays, moved) if given: it keeps this one's
        known lengths, so that ``data`` works on it where it works on this one (under ``jit``
        from constant lengths: a layer's output, a cast)."""
        leaves = indices or (self.lengths, self.sorted_indices, self.unsorted_indices)
        obj = type(self).from_padded(padded, *leaves)
        obj._values = getattr(self, "_values", None)
        return obj

    def tree_flatten(self):
        """JAX pytree children: the padded data, lengths and both permutations."""
        return (self.padded, self.lengths, self.sorted_indices, self.unsorted_indices), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls.from_padded(*children)

    def _known_lengths(self) -> np.ndarray | None:
        """The lengths' values (numpy, the caller's order) where they are known at trace time:
        concrete, or concrete when this object (or the one it derives from) was made."""
        values = getattr(self, "_values", None)
        return values if values is not None else _concrete(self.lengths)

    def _concrete_lengths(self, what: str) -> np.ndarray:
        values = self._known_lengths()
        _checks.check_concrete_lengths("PackedSequence", what, values is not None)
        return values

    @property
    def batch_sizes(self) -> np.ndarray:
        """Torch's ``batch_sizes`` (int64 numpy), for concrete lengths."""
        return _batch_sizes(self._concrete_lengths("batch_sizes"))

    @property
    def data(self) -> jax.Array:
        """Torch's packed ``data (sum(lengths), *)``, for concrete lengths."""
        lengths = self._concrete_lengths("data")
        sizes = _batch_sizes(lengths)
        step, slot = np.nonzero(np.arange(self.padded.shape[1])[None, :] < sizes[:, None])
        order = self.sorted_indices
        if order is None and self.unsorted_indices is not None:  # built with only the inverse
            order = invert_permutation(self.unsorted_indices)
        if order is None:  # packed with enforce_sorted under jit, where it could not be checked
            _checks.check_sorted_lengths("PackedSequence", lengths)
        return self.padded[step, slot if order is None else order[slot]]

    # torch's PackedSequence is a namedtuple of these four: it unpacks and indexes the same way
    _fields = ("data", "batch_sizes", "sorted_indices", "unsorted_indices")

    def __iter__(self):
        return (getattr(self, f) for f in self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __getitem__(self, index):
        return tuple(self)[index]

    @classmethod
    def _make(cls, fields) -> PackedSequence:
        """From an iterable of torch's four fields, as the namedtuple's."""
        return cls(*fields)

    def _asdict(self) -> dict:
        """The four fields by name, as the namedtuple's."""
        return dict(zip(self._fields, self, strict=True))

    def _replace(self, **fields) -> PackedSequence:
        """A new PackedSequence with some of torch's four fields replaced, as the namedtuple's
        (e.g. ``packed._replace(data=f(packed.data))``; concrete lengths)."""
        _checks.check_field_names("PackedSequence._replace", fields, self._fields)
        out = type(self)(**{**self._asdict(), **fields})
        if out._values is None and not {"batch_sizes", "sorted_indices", "unsorted_indices"} & set(
            fields
        ):  # the same sequences in the same order: their lengths are still known
            out._values = getattr(self, "_values", None)
        return out

    # torch's tensor-like methods: a dtype casts the data (the lengths and indices keep theirs)

    def to(self, *args, **kwargs) -> PackedSequence:
        """``to(dtype)``: the data cast to ``dtype`` (a JAX/numpy dtype, its name, or a torch
        dtype); ``to(device)``: every array placed on a JAX device or sharding (or a torch device
        string: ``'cpu'``, ``'cuda:0'``). ``self`` when nothing changes, as torch's."""
        dtype, device = _checks.check_to_arguments("PackedSequence.to", args, kwargs)
        padded = self.padded
        if dtype is not None and padded.dtype != dtype:
            padded = padded.astype(dtype)
        leaves = (padded, self.lengths, self.sorted_indices, self.unsorted_indices)
        if device is not None:
            leaves = tuple(None if a is None else _placed(a, device) for a in leaves)
        if all(a is b for a, b in zip(leaves, tuple(self.tree_flatten()[0]), strict=True)):
            return self
        return self._derived(*leaves)

    def cpu(self) -> PackedSequence:
        """Every array on the first CPU device."""
        return self.to(jax.devices("cpu")[0])

    def cuda(self, device=None) -> PackedSequence:
        """Every array on a GPU, as torch's: ``device`` its index (default the first), a JAX
        device or a torch device; ``ValueError`` where JAX has no GPU."""
        return self.to(
            f"cuda:{device or 0}" if device is None or isinstance(device, int) else device
        )

    def pin_memory(self) -> PackedSequence:
        """``self``: JAX has no pinned host memory for arrays like torch's (see
        :meth:`is_pinned`)."""
        return self

    def float(self) -> PackedSequence:
        """``data`` as float32, as torch's ``float()``."""
        return self.to(jnp.float32)

    def double(self) -> PackedSequence:
        """``data`` as float64, as torch's ``double()``."""
        return self.to(jnp.float64)

    def half(self) -> PackedSequence:
        """``data`` as float16, as torch's ``half()``."""
        return self.to(jnp.float16)

    def long(self) -> PackedSequence:
        """``data`` as int64, as torch's ``long()``."""
        return self.to(jnp.int64)

    def int(self) -> PackedSequence:
        """``data`` as int32, as torch's ``int()``."""
        return self.to(jnp.int32)

    def short(self) -> PackedSequence:
        """``data`` as int16, as torch's ``short()``."""
        return self.to(jnp.int16)

    def char(self) -> PackedSequence:
        """``data`` as int8, as torch's ``char()``."""
        return self.to(jnp.int8)

    def byte(self) -> PackedSequence:
        """``data`` as uint8, as torch's ``byte()``."""
        return self.to(jnp.uint8)

    @property
    def is_cuda(self) -> bool:
        """Whether the data is on a GPU, as torch's (under ``jit``: whether JAX's default backend
        is one, where a traced array will run)."""
        if isinstance(self.padded, jax.core.Tracer):
            return jax.default_backend() == "gpu"
        return any(d.platform == "gpu" for d in self.padded.devices())

    def is_pinned(self) -> bool:
        """``False``: JAX has no pinned host memory for arrays like torch's."""
        return False

    def __repr__(self) -> str:
        if self._known_lengths() is not None:
            return (
                f"PackedSequence(data={self.data!r}, batch_sizes={self.batch_sizes!r}, "
                f"sorted_indices={self.sorted_indices!r}, "
                f"unsorted_indices={self.unsorted_indices!r})"
            )
        return (
            f"PackedSequence(padded={self.padded!r}, lengths={self.lengths!r}, "
            f"sorted_indices={self.sorted_indices!r}, unsorted_indices={self.unsorted_indices!r})"
        )


def invert_permutation(permutation):
    """The inverse of a 1-D integer permutation (``None`` for ``None``), in its dtype, as torch's.

    A concrete ``permutation`` must hold each of ``0 ... n-1`` once (``ValueError`` otherwise,
    where torch fails on an index out of bounds or returns a wrong inverse); a traced one cannot
    be checked."""
    if permutation is None:
        return None
    permutation = _checks.check_permutation("invert_permutation", "permutation", permutation)
    n = permutation.shape[0]
    inverse = jnp.zeros((n,), permutation.dtype)
    return inverse.at[permutation].set(jnp.arange(n, dtype=permutation.dtype))


def _indices(name: str, what: str, indices, batch: int) -> jax.Array:
    """A PackedSequence's ``sorted_indices``/``unsorted_indices`` as int32, checked to be a
    permutation of its ``batch`` sequences where concrete."""
    return jnp.asarray(_checks.check_permutation(name, what, indices, batch), jnp.int32)


def pack_padded_sequence(
    input, lengths, batch_first: bool = False, enforce_sorted: bool = True
) -> PackedSequence:
    """Packs a padded batch of variable-length sequences, as torch's.

    Args:
        input: ``(T, B, *)`` padded batch (``(B, T, *)`` with ``batch_first``).
        lengths: int ``(B,)`` (list, numpy, JAX or torch), each sequence's length. May be traced
            under ``jit``.
        batch_first: whether ``input`` is ``(B, T, *)``.
        enforce_sorted: if ``True``, the lengths must be in decreasing order (checked when they
            are concrete); if ``False`` they are sorted here and the order is recorded in
            ``sorted_indices``/``unsorted_indices``: concrete lengths in torch's order, equal
            lengths included (its CPU sort is not stable from 17 sequences on); traced ones
            with equal lengths in batch order.

    Returns:
        A :class:`PackedSequence`.

    Concrete lengths are checked as torch checks them (``0 < length``, decreasing when
    ``enforce_sorted``) and, unlike torch, against ``T`` (torch reads past the input); then
    ``padded`` is cut to the longest length, as torch's ``data`` is. Traced lengths cannot be
    checked: a length above ``T`` then acts as ``T``, and one of 0 or below gives an empty
    sequence (zero outputs, ``h_n = h_0``), and ``enforce_sorted`` is not verified.

    Example:
        >>> import jax.numpy as jnp
        >>> packed = pack_padded_sequence(jnp.ones((4, 2, 3)), [4, 2])
        >>> packed.batch_sizes.tolist(), packed.data.shape
        ([2, 2, 1, 1], (6, 3))
    """
    name = "pack_padded_sequence"
    _checks.check_arguments(name, batch_first=(batch_first, 3, "bool"))
    x = _checks.check_pack_input(name, _to_array(input))
    if batch_first:
        x = jnp.swapaxes(x, 0, 1)
    lengths, values = _checks.check_pack_lengths(
        name, lengths, x.shape[1], x.shape[0], enforce_sorted
    )
    sorted_indices = unsorted_indices = None
    if values is not None:
        x = x[: int(values.max())] if values.size else x[:0]
        if not enforce_sorted:
            order = _torch_sort.sort_descending_indices(values)  # torch's order of ties
            sorted_indices = jnp.asarray(order, jnp.int32)
            unsorted_indices = jnp.asarray(np.argsort(order), jnp.int32)
    elif not enforce_sorted:  # traced: ties keep their order (torch's differ from 17 sequences)
        sorted_indices = jnp.argsort(-lengths, stable=True).astype(jnp.int32)
        unsorted_indices = invert_permutation(sorted_indices)
    padded = jnp.where(_time_mask(lengths, x.shape[0], x.ndim), x, jnp.zeros((), x.dtype))
    packed = PackedSequence.from_padded(padded, lengths, sorted_indices, unsorted_indices)
    packed._values = values
    return packed


def pad_packed_sequence(
    sequence: PackedSequence,
    batch_first: bool = False,
    padding_value: float = 0.0,
    total_length: int | None = None,
):
    """Pads a packed batch back to a tensor, as torch's; the inverse of :func:`pack_padded_sequence`.

    Args:
        sequence: a :class:`PackedSequence` (or torch's, read from its fields).
        batch_first: return ``(B, T, *)`` instead of ``(T, B, *)``.
        padding_value: the value at padded positions.
        total_length: pad to this length (``ValueError`` if a sequence is longer).

    Returns:
        ``(padded, lengths)`` in the caller's original batch order; ``lengths`` is int32 ``(B,)``.
        ``T`` is ``total_length`` if given, else the longest length when the lengths are
        concrete (torch's result), else (traced lengths) the static length of
        ``sequence.padded``; pass ``total_length`` under ``jit`` for a fixed shape.

    Example:
        >>> import jax.numpy as jnp
        >>> packed = pack_padded_sequence(jnp.ones((2, 4, 1)), [3, 1], batch_first=True)
        >>> padded, lengths = pad_packed_sequence(packed, batch_first=True, padding_value=-1.0)
        >>> padded[..., 0].tolist(), lengths.tolist()
        ([[1.0, 1.0, 1.0], [1.0, -1.0, -1.0]], [3, 1])
    """
    name = "pad_packed_sequence"
    padding_value = _checks._from_torch(padding_value)
    _checks.check_arguments(
        name, batch_first=(batch_first, 2, "bool"), padding_value=(padding_value, 3, "float")
    )
    if _checks.is_torch_packed(sequence):  # torch's own, from its fields
        sequence = PackedSequence(*sequence)
    _checks.check_is_packed(name, "sequence", sequence, PackedSequence)
    padded, lengths = sequence.padded, sequence.lengths
    steps = padded.shape[0]
    values = sequence._known_lengths()
    _checks.check_batch_not_empty(name, lengths.shape)
    longest = (int(values.max()) if values.size else 0) if values is not None else None
    target = _checks.check_total_length(name, total_length, longest, steps)
    if target <= steps:
        padded = padded[:target]
    else:
        widths = [(0, target - steps)] + [(0, 0)] * (padded.ndim - 1)
        padded = jnp.pad(padded, widths)
    mask = _time_mask(lengths, target, padded.ndim)
    fill = _checks.check_fill_value(name, padding_value, padded.dtype, unsigned_wrap=True)
    padded = jnp.where(mask, padded, jnp.asarray(fill, padded.dtype))
    if batch_first:
        padded = jnp.swapaxes(padded, 0, 1)
    return padded, lengths


def pad_sequence(
    sequences,
    batch_first: bool = False,
    padding_value: float = 0.0,
    padding_side: str = "right",
) -> jax.Array:
    """Pads a list of ``(L_i, *)`` sequences into ``(T, B, *)`` (``(B, T, *)``), as torch's.

    ``T`` is the longest ``L_i``; shapes are static, so this works under ``jit``. The result has
    the first sequence's dtype, the others cast to it (as torch's).

    Example:
        >>> import jax.numpy as jnp
        >>> pad_sequence([jnp.ones(3), jnp.ones(1)], batch_first=True).tolist()
        [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]
    """
    padding_value = _checks._from_torch(padding_value)
    _checks.check_arguments(
        "pad_sequence",
        batch_first=(batch_first, 2, "bool"),
        padding_value=(padding_value, 3, "float"),
    )
    arrays = _checks.check_pad_sequences("pad_sequence", sequences, padding_side, convert=_to_array)
    steps = max(a.shape[0] for a in arrays)
    dtype = arrays[0].dtype
    padding_value = _checks.check_fill_value("pad_sequence", padding_value, dtype)
    rows = []
    for a in arrays:
        gap = steps - a.shape[0]
        width = (0, gap) if padding_side == "right" else (gap, 0)
        rows.append(
            jnp.pad(
                a.astype(dtype), [width] + [(0, 0)] * (a.ndim - 1), constant_values=padding_value
            )
        )
    return jnp.stack(rows, axis=0 if batch_first else 1)


def unpad_sequence(padded_sequences, lengths, batch_first: bool = False) -> list[jax.Array]:
    """Splits a padded batch into a list of ``(L_i, *)`` arrays, as torch's (concrete lengths).

    Sequence ``i`` keeps the steps ``t < lengths[i]``, as torch's mask does (so a negative length
    gives an empty sequence and ``2.5`` three steps); one length per sequence. ``batch_first`` is
    read by its truth, as torch's (plain Python there, unlike the other functions' argument
    parser).
    """
    name = "unpad_sequence"
    padded = _to_array(padded_sequences)
    if not isinstance(lengths, jax.Array):  # a list or numpy: known under jit too (not jnp)
        lengths = _checks._list_array(_checks._from_torch(lengths))
    values = _concrete(lengths)
    _checks.check_concrete_lengths(name, "a list of sequences", values is not None)
    _checks.check_unpad_lengths(name, values, padded.shape, batch_first)
    if not batch_first:
        padded = jnp.swapaxes(padded, 0, 1)
    steps = np.clip(np.ceil(values), 0, padded.shape[1]).astype(np.int64)
    return [padded[i, : int(n)] for i, n in enumerate(steps)]


def pack_sequence(sequences: Sequence, enforce_sorted: bool = True) -> PackedSequence:
    """Packs a list of ``(L_i, *)`` sequences: :func:`pad_sequence` then
    :func:`pack_padded_sequence`, as torch's.

    Example:
        >>> import jax.numpy as jnp
        >>> packed = pack_sequence([jnp.array([1.0, 2, 3]), jnp.array([4.0, 5]), jnp.array([6.0])])
        >>> packed.data.tolist(), packed.batch_sizes.tolist()
        ([1.0, 4.0, 6.0, 2.0, 5.0, 3.0], [3, 2, 1])
    """
    arrays = _checks.check_pad_sequences("pack_sequence", sequences, "right", convert=_to_array)
    lengths = [a.shape[0] for a in arrays]
    return pack_padded_sequence(pad_sequence(arrays), lengths, enforce_sorted=enforce_sorted)


def unpack_sequence(packed_sequences: PackedSequence) -> list[jax.Array]:
    """The list of ``(L_i, *)`` sequences in a :class:`PackedSequence`, as torch's."""
    padded, lengths = pad_packed_sequence(packed_sequences, batch_first=True)
    known = (
        packed_sequences._known_lengths() if isinstance(packed_sequences, PackedSequence) else None
    )
    return unpad_sequence(padded, lengths if known is None else known, batch_first=True)


def rnn_packed(forward: Callable, packed: PackedSequence, hx, seq_lengths, name: str):
    """A recurrent layer on a :class:`PackedSequence`: ``forward`` runs the padded batch.

    ``forward(padded, hx, seq_lengths=, batch_first=False)`` is the layer on a padded time-major
    input (:func:`jaxrnn.functional.rnn` with the layer's parameters). Because ``padded`` is in
    the caller's batch order, ``hx`` and the returned ``h_n`` are too, as torch's layers give them
    after undoing ``sorted_indices``. Returns ``(PackedSequence output, h_n)``.
    """
    _checks.check_packed_call(name, packed.padded.ndim - 1, seq_lengths)
    output, h_n = forward(packed.padded, hx, seq_lengths=packed.lengths, batch_first=False)
    return packed._derived(output), h_n
