"""``jaxrnn.utils.rnn`` against ``torch.nn.utils.rnn``: same inputs, same results, same errors."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.utils.rnn as tr
from flax import nnx

import jaxrnn
from jaxrnn.utils import rnn as jr

RNG = np.random.default_rng(0)


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def assert_same_packed(ours, theirs):
    """Torch's four fields, exactly."""
    np.testing.assert_array_equal(ours.data, theirs.data.numpy())
    np.testing.assert_array_equal(ours.batch_sizes, theirs.batch_sizes.numpy())
    assert ours.batch_sizes.dtype == np.int64
    for mine, torchs in (
        (ours.sorted_indices, theirs.sorted_indices),
        (ours.unsorted_indices, theirs.unsorted_indices),
    ):
        assert (mine is None) == (torchs is None)
        if torchs is not None:
            np.testing.assert_array_equal(mine, torchs.numpy())


def torch_error(fn) -> Exception:
    with pytest.raises((RuntimeError, ValueError, TypeError, IndexError)) as info:
        fn()
    return info.value


def assert_raises_as_torch(theirs: Exception, fn, name: str):
    """``fn`` raises torch's message behind ``name: ``, as an instance of torch's exception type
    (torch's RuntimeErrors are TorchRuntimeErrors here, also ValueErrors)."""
    with pytest.raises(type(theirs)) as info:
        fn()
    assert str(theirs) in str(info.value)
    assert str(info.value).startswith(f"{name}: ")
    assert isinstance(info.value, (ValueError, TypeError))


# (lengths, enforce_sorted): unsorted with ties, 1 and the full length; sorted with ties
CASES = [
    ([2, 5, 1, 4, 5], False),
    ([3, 3, 1, 5, 3], False),
    ([5, 4, 4, 2, 1], True),
    ([5, 5, 5, 5, 5], False),
]


@pytest.mark.parametrize("feature", [(), (3,), (2, 3)], ids=["0d", "1d", "2d"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("lengths,enforce_sorted", CASES)
def test_pack_pad_roundtrip_matches_torch(lengths, enforce_sorted, batch_first, feature):
    shape = ((len(lengths), 6) if batch_first else (6, len(lengths))) + feature
    x = randn(*shape)  # padded to 6 > max length: torch's data drops the extra step too
    for lens in (lengths, np.array(lengths), jnp.array(lengths), torch.tensor(lengths)):
        ours = jr.pack_padded_sequence(x, lens, batch_first, enforce_sorted)
        theirs = tr.pack_padded_sequence(
            torch.tensor(x), torch.tensor(lengths), batch_first, enforce_sorted
        )
        assert_same_packed(ours, theirs)
    totals = ((0.0, None), (-7.5, 8), (1.0, torch.tensor(7)), (2.0, np.int64(9)))
    for padding_value, total_length in totals:  # a 0-d tensor too, as torch's int(total_length)
        padded, out_lengths = jr.pad_packed_sequence(ours, batch_first, padding_value, total_length)
        ref, ref_lengths = tr.pad_packed_sequence(theirs, batch_first, padding_value, total_length)
        np.testing.assert_array_equal(padded, ref.numpy())
        np.testing.assert_array_equal(out_lengths, ref_lengths.numpy())


def test_pack_pad_under_jit_with_traced_lengths():
    """One compilation for every set of lengths; results as torch's (with total_length)."""
    x = randn(6, 4, 3)
    traces = []

    @jax.jit
    def roundtrip(x, lengths):
        traces.append(1)
        packed = jr.pack_padded_sequence(x, lengths, enforce_sorted=False)
        with pytest.raises(ValueError, match="traced"):
            packed.data  # noqa: B018 - needs concrete lengths
        return packed, jr.pad_packed_sequence(packed, padding_value=-1.0, total_length=7)

    for lengths in ([2, 6, 1, 4], [3, 3, 5, 1]):
        packed, (padded, out_lengths) = roundtrip(x, jnp.array(lengths))
        theirs = tr.pack_padded_sequence(torch.tensor(x), lengths, enforce_sorted=False)
        ref, ref_lengths = tr.pad_packed_sequence(theirs, padding_value=-1.0, total_length=7)
        np.testing.assert_array_equal(padded, ref.numpy())
        np.testing.assert_array_equal(out_lengths, ref_lengths.numpy())
        # the PackedSequence returned from jit has concrete lengths again: torch's fields
        assert_same_packed(packed, theirs)
        padded, _ = jr.pad_packed_sequence(packed)  # trimmed to the longest, as torch
        np.testing.assert_array_equal(padded, tr.pad_packed_sequence(theirs)[0].numpy())
    assert len(traces) == 1


def test_pack_pad_gradients_match_torch():
    x = randn(5, 4, 3)
    w = randn(4, 6, 3)
    lengths = [2, 5, 1, 4]

    def ours(x):
        packed = jr.pack_padded_sequence(x, lengths, enforce_sorted=False)
        padded, _ = jr.pad_packed_sequence(packed, batch_first=True, total_length=6)
        return (padded * w).sum() + (packed.data**2).sum()

    xt = torch.tensor(x, requires_grad=True)
    packed = tr.pack_padded_sequence(xt, lengths, enforce_sorted=False)
    padded, _ = tr.pad_packed_sequence(packed, batch_first=True, total_length=6)
    ((padded * torch.tensor(w)).sum() + (packed.data**2).sum()).backward()
    np.testing.assert_allclose(jax.grad(ours)(x), xt.grad.numpy(), rtol=1e-6, atol=1e-6)


def test_packed_sequence_from_torch_fields():
    x = randn(5, 4, 2)
    for lengths, enforce_sorted in (([2, 5, 1, 4], False), ([5, 3, 3, 1], True)):
        theirs = tr.pack_padded_sequence(torch.tensor(x), lengths, enforce_sorted=enforce_sorted)
        fields = [theirs.data, theirs.batch_sizes, theirs.sorted_indices, theirs.unsorted_indices]
        for ours in (
            jr.PackedSequence(*fields),
            jr.PackedSequence(*fields[:3]),  # unsorted_indices computed, as torch does
            jr.PackedSequence((fields[0], fields[1]), sorted_indices=fields[2]),
            jr.PackedSequence(*(None if f is None else f.numpy() for f in fields)),
        ):
            assert_same_packed(ours, theirs)
            np.testing.assert_array_equal(ours.lengths, lengths)
            padded, _ = jr.pad_packed_sequence(ours)
            np.testing.assert_array_equal(padded, tr.pad_packed_sequence(theirs)[0].numpy())


def test_packed_sequence_with_only_unsorted_indices():
    """Torch keeps ``sorted_indices=None`` then and gives ``data`` as it was given."""
    x = randn(5, 4, 2)
    theirs = tr.pack_padded_sequence(torch.tensor(x), [2, 5, 1, 4], enforce_sorted=False)
    theirs = tr.PackedSequence(theirs.data, theirs.batch_sizes, None, theirs.unsorted_indices)
    ours = jr.PackedSequence(*(None if f is None else f.numpy() for f in theirs))
    assert theirs.sorted_indices is None and ours.sorted_indices is None
    np.testing.assert_array_equal(ours.data, theirs.data.numpy())
    np.testing.assert_array_equal(ours.unsorted_indices, theirs.unsorted_indices.numpy())
    padded, lengths = jr.pad_packed_sequence(ours)
    padded_t, lengths_t = tr.pad_packed_sequence(theirs)
    np.testing.assert_array_equal(padded, padded_t.numpy())
    np.testing.assert_array_equal(lengths, lengths_t.numpy())


def test_data_under_jit_from_constant_lengths():
    """Lengths known when tracing (a Python list) leave ``data`` and ``batch_sizes`` available
    inside ``jit``, e.g. for a loss on ``packed.data``."""
    x = randn(5, 3, 2)
    theirs = tr.pack_padded_sequence(torch.tensor(x), [3, 5, 1], enforce_sorted=False)
    data = jax.jit(lambda a: jr.pack_padded_sequence(a, [3, 5, 1], enforce_sorted=False).data)(x)
    np.testing.assert_array_equal(data, theirs.data.numpy())

    def sizes(a):
        packed = jr.pack_padded_sequence(a, np.array([3, 5, 1]), enforce_sorted=False)
        assert packed.batch_sizes.tolist() == theirs.batch_sizes.tolist()
        return packed.data.sum()

    np.testing.assert_allclose(jax.jit(sizes)(x), theirs.data.sum().item(), rtol=1e-6)
    with pytest.raises(ValueError, match="traced"):  # traced lengths still cannot give them
        jax.jit(lambda a, n: jr.pack_padded_sequence(a, n, enforce_sorted=False).data)(
            x, jnp.array([3, 5, 1])
        )


def test_packed_sequence_is_a_pytree():
    x = randn(4, 3, 2)
    packed = jr.pack_padded_sequence(x, [1, 4, 2], enforce_sorted=False)
    leaves, treedef = jax.tree.flatten(packed)
    assert len(leaves) == 4
    again = jax.tree.unflatten(treedef, leaves)
    assert_same_packed(
        again, tr.pack_padded_sequence(torch.tensor(x), [1, 4, 2], enforce_sorted=False)
    )
    doubled = jax.tree.map(lambda a: a * 2 if a.dtype == jnp.float32 else a, packed)
    np.testing.assert_array_equal(doubled.data, packed.data * 2)
    sorted_packed = jr.pack_padded_sequence(randn(4, 3, 2), [4, 2, 1])
    assert len(jax.tree.leaves(sorted_packed)) == 2  # no indices when enforce_sorted
    assert "batch_sizes=array([3, 2, 1, 1])" in repr(sorted_packed)


def test_invert_permutation():
    perm = torch.tensor([2, 0, 3, 1])
    np.testing.assert_array_equal(
        jr.invert_permutation(perm.numpy()), tr.invert_permutation(perm).numpy()
    )
    assert jr.invert_permutation(None) is None


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_pad_sequence_matches_torch(batch_first, padding_side):
    seqs = [randn(3, 2, 2), randn(5, 2, 2), randn(1, 2, 2)]
    ref = tr.pad_sequence([torch.tensor(s) for s in seqs], batch_first, 1.5, padding_side)
    ours = jr.pad_sequence(seqs, batch_first, 1.5, padding_side)
    np.testing.assert_array_equal(ours, ref.numpy())
    jitted = jax.jit(lambda s: jr.pad_sequence(s, batch_first, 1.5, padding_side))(seqs)
    np.testing.assert_array_equal(jitted, ref.numpy())
    # an array is a sequence of its rows, as a torch tensor is
    stacked = randn(2, 4)
    np.testing.assert_array_equal(
        jr.pad_sequence(stacked, batch_first), tr.pad_sequence(torch.tensor(stacked), batch_first)
    )


@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_pack_unpack_sequence_match_torch(enforce_sorted):
    seqs = [randn(4, 3), randn(3, 3), randn(3, 3), randn(1, 3)]
    if not enforce_sorted:
        seqs = [seqs[2], seqs[3], seqs[0], seqs[1]]
    ours = jr.pack_sequence(seqs, enforce_sorted)
    theirs = tr.pack_sequence([torch.tensor(s) for s in seqs], enforce_sorted)
    assert_same_packed(ours, theirs)
    for a, b in zip(jr.unpack_sequence(ours), tr.unpack_sequence(theirs), strict=True):
        np.testing.assert_array_equal(a, b.numpy())
    padded = tr.pad_sequence([torch.tensor(s) for s in seqs])
    for a, b in zip(
        jr.unpad_sequence(padded.numpy(), ours.lengths),
        tr.unpad_sequence(padded, torch.tensor([len(s) for s in seqs])),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b.numpy())


# ------------------------------------------------------------------------------------------
# errors: torch's wording and type where torch has one (torch's RuntimeErrors are
# TorchRuntimeErrors here, a ValueError and a RuntimeError)

X = randn(5, 4, 3)


@pytest.mark.parametrize(
    "lengths,enforce_sorted,kind",
    [
        ([5, 3, 2, 0], True, "zero"),
        ([5, 0, 2, 1], False, "zero"),
        ([5, 3, 2, -1], False, "zero"),
        ([3, 5, 2, 1], True, "unsorted"),
        ([5, 3, 2], True, "batch"),
        ([5, 3, 2, 1, 1], True, "batch"),
        ([0, 3, 2, 1], True, "unsorted before zero"),  # torch checks the last length, then order
        ([2, 5, 1, 6], True, "unsorted before too long"),
    ],
)
def test_pack_padded_sequence_errors_as_torch(lengths, enforce_sorted, kind):
    theirs = torch_error(
        lambda: tr.pack_padded_sequence(torch.tensor(X), lengths, enforce_sorted=enforce_sorted)
    )
    assert_raises_as_torch(
        theirs,
        lambda: jr.pack_padded_sequence(X, lengths, enforce_sorted=enforce_sorted),
        "pack_padded_sequence",
    )


def test_packing_an_empty_batch_fails_as_torch():
    empty = np.zeros((5, 0, 3), np.float32)
    theirs = torch_error(lambda: tr.pack_padded_sequence(torch.tensor(empty), []))
    assert_raises_as_torch(
        theirs, lambda: jr.pack_padded_sequence(empty, []), "pack_padded_sequence"
    )


def test_boolean_lengths_are_ones_as_torchs():
    x = torch.tensor(randn(2, 3, 1))
    lengths = torch.tensor([True, True, True])  # torch casts to int64: all 1
    want = tr.pack_padded_sequence(x, lengths)
    got = jr.pack_padded_sequence(x, lengths)
    np.testing.assert_array_equal(np.asarray(got.data), want.data.numpy())
    np.testing.assert_array_equal(got.batch_sizes, want.batch_sizes.numpy())


def test_pack_errors_torch_does_not_raise():
    # torch reads past the input for a length above T, and with enforce_sorted=False drops the
    # sequences that have no length; we refuse both
    with pytest.raises(ValueError, match=r"Expected `len\(lengths\)` to be equal to batch_size"):
        jr.pack_padded_sequence(X, [5, 3, 2], enforce_sorted=False)
    with pytest.raises(ValueError, match="at most the padded sequence length 5"):
        jr.pack_padded_sequence(X, [6, 3, 2, 1])
    with pytest.raises(ValueError, match="should be a 1D array, but got 2D"):
        jr.pack_padded_sequence(X, [[5, 3], [2, 1]])
    with pytest.raises(
        TypeError, match="should be integers, floats or booleans, got dtype complex"
    ):
        jr.pack_padded_sequence(X, np.array([5, 3, 2, 1], np.complex64))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        jr.pack_padded_sequence(X[:, 0, 0], [5])


def test_traced_lengths_are_not_checked_but_documented():
    """Under jit a length above T acts as T, and enforce_sorted is not verified."""

    @jax.jit
    def run(lengths):
        packed = jr.pack_padded_sequence(X, lengths)
        return packed, jr.pad_packed_sequence(packed, total_length=5)

    packed, (padded, _) = run(jnp.array([5, 1, 3, 2]))
    np.testing.assert_array_equal(padded[:, 0], X[:, 0])
    np.testing.assert_array_equal(padded[3:, 2], 0.0)
    with pytest.raises(ValueError, match="must be sorted in decreasing order"):
        packed.data  # noqa: B018 - torch's layout needs sorted lengths (or sorted_indices)
    _, (padded, _) = run(jnp.array([9, 5, 3, 2]))
    np.testing.assert_array_equal(padded[:, 0], X[:, 0])


def test_pad_packed_sequence_errors():
    packed = jr.pack_padded_sequence(X, [5, 3, 2, 1])
    theirs = torch_error(
        lambda: tr.pad_packed_sequence(
            tr.pack_padded_sequence(torch.tensor(X), [5, 3, 2, 1]), total_length=3
        )
    )
    assert_raises_as_torch(
        theirs, lambda: jr.pad_packed_sequence(packed, total_length=3), "pad_packed_sequence"
    )
    with pytest.raises(ValueError, match="traced"):
        jax.jit(lambda p: jr.pad_packed_sequence(p, total_length=4))(packed)
    with pytest.raises(TypeError, match="must be a PackedSequence"):
        jr.pad_packed_sequence(X)


def test_pad_and_pack_sequence_errors_as_torch():
    cases = [
        ([], "pad"),
        ([randn(2, 3), randn(3, 4)], None),
        (3, "pad"),
        ([randn(2), randn(0)], "pack"),
        ([randn(2), randn(3)], "pack"),
    ]
    for seqs, compare in cases:
        t_seqs = seqs if isinstance(seqs, int) else [torch.tensor(s) for s in seqs]
        fn = tr.pad_sequence if compare == "pad" else tr.pack_sequence
        theirs = torch_error(lambda fn=fn, t=t_seqs: fn(t))
        ours_fn = jr.pad_sequence if compare == "pad" else jr.pack_sequence
        if isinstance(seqs, int):  # not iterable: a TypeError here, and torch's RuntimeError
            with pytest.raises(type(theirs), match=re.escape(str(theirs))) as info:
                ours_fn(seqs)
            assert isinstance(info.value, TypeError)
            continue
        with pytest.raises(type(theirs)) as info:
            ours_fn(seqs)
        assert isinstance(info.value, ValueError)
        if compare is not None:
            assert str(theirs) in str(info.value)
        else:
            assert "same trailing shape" in str(info.value)
    theirs = torch_error(lambda: tr.pad_sequence([torch.ones(2)], padding_side="middle"))
    assert_raises_as_torch(
        theirs, lambda: jr.pad_sequence([np.ones(2)], padding_side="middle"), "pad_sequence"
    )


def test_packed_sequence_constructor_errors():
    with pytest.raises(ValueError, match="sum\\(batch_sizes\\) = 6 rows"):
        jr.PackedSequence(randn(5, 2), np.array([3, 2, 1]))
    with pytest.raises(ValueError, match="positive and non-increasing"):
        jr.PackedSequence(randn(6, 2), np.array([1, 2, 3]))
    with pytest.raises(TypeError, match="batch_sizes"):
        jr.PackedSequence(randn(6, 2))


@pytest.mark.parametrize("lengths", [[5.0, 3.0, 2.0, 1.0], np.array([5.7, 3.2, 2.9, 1.1])])
def test_float_lengths_are_truncated_as_torch(lengths):
    ours = jr.pack_padded_sequence(X, lengths)
    theirs = tr.pack_padded_sequence(torch.tensor(X), torch.as_tensor(lengths))
    np.testing.assert_array_equal(ours.batch_sizes, theirs.batch_sizes.numpy())
    np.testing.assert_array_equal(ours.data, theirs.data.numpy())


def test_packed_sequence_unpacks_and_indexes_like_torchs_namedtuple():
    ours = jr.pack_padded_sequence(X, [5, 2, 3, 1], enforce_sorted=False)
    theirs = tr.pack_padded_sequence(torch.tensor(X), [5, 2, 3, 1], enforce_sorted=False)
    assert len(ours) == len(theirs) == 4
    for a, b in zip(ours, theirs, strict=True):  # data, batch_sizes, sorted/unsorted indices
        np.testing.assert_array_equal(np.asarray(a), b.numpy())
    data, batch_sizes, _, unsorted = ours
    np.testing.assert_array_equal(ours[0], data)
    np.testing.assert_array_equal(ours[-1], unsorted)
    np.testing.assert_array_equal(ours[1], batch_sizes)
    again = jr.PackedSequence._make(tuple(theirs))  # the namedtuple's constructor from fields
    rebuilt = tr.PackedSequence._make(tuple(theirs))
    assert_same_packed(again, rebuilt)


def test_packed_sequence_replace_asdict_and_casts_as_torch():
    lengths = [5, 2, 3, 1]
    ours = jr.pack_padded_sequence(X, lengths, enforce_sorted=False)
    theirs = tr.pack_padded_sequence(torch.tensor(X), lengths, enforce_sorted=False)
    assert list(ours._asdict()) == list(theirs._asdict())
    assert_same_packed(ours._replace(data=ours.data * 2), theirs._replace(data=theirs.data * 2))
    with pytest.raises(ValueError, match="unexpected field names"):
        ours._replace(lengths=None)
    # a dtype casts the data only (the indices keep theirs), the same dtype returns the object
    cases = [
        (lambda p: p.half(), lambda p: p.half()),
        (lambda p: p.to(jnp.float16), lambda p: p.to(torch.float16)),
        (lambda p: p.to(torch.float16), lambda p: p.to(torch.float16)),
        (lambda p: p.to(dtype="bfloat16"), lambda p: p.to(dtype=torch.bfloat16)),
        (lambda p: p.int(), lambda p: p.int()),
        (lambda p: p.byte(), lambda p: p.byte()),
    ]
    positive = jr.pack_padded_sequence(np.abs(X) * 9, lengths, enforce_sorted=False)
    positive_t = tr.pack_padded_sequence(torch.tensor(np.abs(X) * 9), lengths, enforce_sorted=False)
    for cast, cast_t in cases:
        mine, ref = cast(positive), cast_t(positive_t)
        assert str(mine.data.dtype) == str(ref.data.dtype).removeprefix("torch.")
        np.testing.assert_array_equal(np.asarray(mine.data, np.float32), ref.data.float().numpy())
        assert mine.sorted_indices.dtype == positive.sorted_indices.dtype
        assert_same_packed(mine.float(), ref.float())
    # nothing to change: the object itself, as torch's (which also takes device strings)
    cpu = jax.devices("cpu")[0]
    assert ours.to(jnp.float32) is ours and ours.float() is ours
    assert ours.cpu() is ours and ours.to("cpu") is ours and ours.to(cpu, jnp.float32) is ours
    assert theirs.cpu() is theirs and theirs.to("cpu", dtype=torch.float32) is theirs
    moved = ours.to(jax.sharding.SingleDeviceSharding(cpu), dtype=jnp.float16)
    assert moved.data.devices() == {cpu} and moved.data.dtype == jnp.float16
    assert_same_packed(moved.float(), theirs.half().float())
    with pytest.raises(TypeError, match="PackedSequence.to: expected a dtype"):
        ours.to("not a dtype")
    # torch's other spellings: a torch.device, non_blocking and copy
    assert ours.to(torch.device("cpu")) is ours and ours.to(device=torch.device("cpu")) is ours
    assert ours.to("cpu", non_blocking=True) is ours and ours.to(device="cpu") is ours
    assert theirs.to(torch.device("cpu"), non_blocking=True) is theirs
    assert ours.is_cuda is theirs.is_cuda is False

    def under_jit(x):  # traced data: the default backend answers
        packed = jr.pack_padded_sequence(x, lengths, enforce_sorted=False)
        assert packed.is_cuda is (jax.default_backend() == "gpu")
        return packed.padded

    jax.jit(under_jit)(X)
    assert ours.is_pinned() is theirs.is_pinned() is False
    # torch's to(other): the other's dtype (and a torch tensor's device)
    other = torch.zeros(1, dtype=torch.float16)
    for mine in (other, other.numpy(), jnp.zeros(1, jnp.float16)):  # numpy, JAX: their dtype
        assert_same_packed(ours.to(mine).float(), theirs.to(other).float())
    assert ours.pin_memory() is ours  # torch pins host memory for an accelerator; JAX has none
    if not any(d.platform == "gpu" for d in jax.devices()):
        with pytest.raises(ValueError, match="PackedSequence.to: no such device 'cuda:0'"):
            ours.cuda()


def test_derived_packed_sequences_keep_data_under_jit():
    """A layer's packed output, a cast and ``_replace`` of a PackedSequence built inside ``jit``
    from constant lengths keep ``data``, as the input does: torch's ``loss(out.data)`` step."""
    lengths = [2, 5, 3]
    x = randn(5, 3, 2)
    gru = torch.nn.GRU(2, 4)
    out_t, _ = gru(tr.pack_padded_sequence(torch.tensor(x), lengths, enforce_sorted=False))
    model = jaxrnn.from_torch(gru)

    def step(m, a):
        out, _ = m(jr.pack_padded_sequence(a, lengths, enforce_sorted=False))
        return out.data, out.half().data, out._replace(data=out.data * 2).data, out.batch_sizes

    data, half, doubled, sizes = nnx.jit(step)(model, x)
    np.testing.assert_allclose(data, out_t.data.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(half, out_t.data.detach().half().numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(doubled, 2 * out_t.data.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(sizes, out_t.batch_sizes.numpy())


def test_unpad_and_unpack_under_jit_from_constant_lengths():
    x = randn(5, 3, 2)
    theirs = tr.unpad_sequence(torch.tensor(x), torch.tensor([2, 5, 3]))
    for lengths in ([2, 5, 3], np.array([2, 5, 3])):
        ours = jax.jit(lambda a, n=lengths: jr.unpad_sequence(a, n))(x)
        assert len(ours) == len(theirs)
        for mine, ref in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(mine, ref.numpy())
    seqs = [x[:2, 0], x[:5, 1], x[:3, 2]]
    theirs = tr.unpack_sequence(
        tr.pack_sequence([torch.tensor(s) for s in seqs], enforce_sorted=False)
    )
    ours = jax.jit(lambda a, b, c: jr.unpack_sequence(jr.pack_sequence([a, b, c], False)))(*seqs)
    for mine, ref in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(mine, ref.numpy())
    with pytest.raises(ValueError, match="traced"):  # traced lengths cannot give a list
        jax.jit(jr.unpad_sequence)(x, jnp.array([2, 5, 3]))


def test_indices_that_are_not_a_permutation_are_refused():
    """Torch checks none of these: it fails later on an index out of bounds, or gives sequences
    duplicated and dropped."""
    data, sizes = np.arange(3.0), np.array([2, 1])
    valid = jr.PackedSequence(data, sizes, np.array([1, 0]))
    assert_same_packed(
        valid, tr.PackedSequence(torch.tensor(data), torch.tensor(sizes), torch.tensor([1, 0]))
    )
    for bad in ([0, 0], [0, 5], [0], [-1, 0]):
        for field in ("sorted_indices", "unsorted_indices"):
            with pytest.raises(ValueError, match=f"PackedSequence: {field} must be a permutation"):
                jr.PackedSequence(data, sizes, **{field: np.array(bad)})
    with pytest.raises(TypeError, match="sorted_indices must be an integer array"):
        jr.PackedSequence(data, sizes, np.array([1.0, 0.0]))
    for bad in ([3, 0, 1], [-1, 0], [0, 0]):
        with pytest.raises(ValueError, match="invert_permutation: permutation must be a perm"):
            jr.invert_permutation(np.array(bad))
    with pytest.raises(ValueError, match="must be 1-D"):
        jr.invert_permutation(np.array([[1, 0]]))
    with pytest.raises(TypeError, match="must be an integer array, got dtype float32"):
        jr.invert_permutation(np.array([1.0, 0.0], np.float32))
    traced = jax.jit(jr.invert_permutation)(jnp.array([2, 0, 1]))  # unchecked, still right
    np.testing.assert_array_equal(traced, tr.invert_permutation(torch.tensor([2, 0, 1])).numpy())
    assert jr.invert_permutation(np.array([2, 0, 1], np.int16)).dtype == np.int16  # its dtype


def test_pad_packed_sequence_of_an_empty_batch_and_padding_side_type_as_torch():
    empty_t = tr.PackedSequence(torch.zeros(0), torch.zeros(0, dtype=torch.int64))
    theirs = torch_error(lambda: tr.pad_packed_sequence(empty_t))
    empty = jr.PackedSequence(np.zeros(0, np.float32), np.zeros(0, np.int64))
    assert_raises_as_torch(theirs, lambda: jr.pad_packed_sequence(empty), "pad_packed_sequence")
    theirs = torch_error(lambda: tr.pad_sequence([torch.ones(2)], padding_side=None))
    with pytest.raises(TypeError) as info:
        jr.pad_sequence([np.ones(2)], padding_side=None)
    assert str(info.value) == str(theirs)


def test_mixed_dtypes_take_the_first_sequences_as_torch():
    for first, second in [
        (np.array([1, 2, 3]), np.array([4.5, 5.0])),
        (np.array([1.5, 2.0, 3.0], np.float16), np.array([4.25, 5.0], np.float32)),
        (np.array([True, False]), np.array([0.0, 2.0])),
    ]:
        ref = tr.pad_sequence([torch.tensor(first), torch.tensor(second)])
        ours = jr.pad_sequence([first, second])
        assert str(ours.dtype) == str(ref.dtype).removeprefix("torch.").replace("int64", "int32")
        np.testing.assert_array_equal(np.asarray(ours), ref.numpy())
        packed = jr.pack_sequence([first, second])
        packed_t = tr.pack_sequence([torch.tensor(first), torch.tensor(second)])
        np.testing.assert_array_equal(np.asarray(packed.data), packed_t.data.numpy())


def test_unpad_sequence_keeps_the_steps_torchs_mask_keeps():
    padded = randn(3, 2)  # (T, B)
    for lengths in ([-1, 2], [2.5, 0], [3, 1]):
        ref = tr.unpad_sequence(torch.tensor(padded), torch.tensor(lengths))
        ours = jr.unpad_sequence(padded, np.array(lengths))
        for a, b in zip(ours, ref, strict=True):
            np.testing.assert_array_equal(a, b.numpy())
    theirs = torch_error(lambda: tr.unpad_sequence(torch.tensor(padded), torch.tensor([1, 2, 3])))
    assert isinstance(theirs, ValueError)
    with pytest.raises(ValueError, match="unpad_sequence: expected one length per sequence"):
        jr.unpad_sequence(padded, np.array([1, 2, 3]))
    with pytest.raises(ValueError, match=r"expected padded_sequences of shape \(T, B, \*\), got"):
        jr.unpad_sequence(randn(3), [1])  # torch: an IndexError from inside


def test_unpad_sequence_reads_batch_first_by_its_truth_as_torchs():
    padded = randn(2, 3)  # (B, T)
    ref = tr.unpad_sequence(torch.tensor(padded), torch.tensor([3, 1]), batch_first=1)
    ours = jr.unpad_sequence(padded, [3, 1], batch_first=1)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_array_equal(a, b.numpy())


@pytest.mark.parametrize(
    "dtype,value",
    [
        (torch.uint8, -1),
        (torch.uint8, -255),
        (torch.uint8, -256),
        (torch.uint8, -0.5),
        (torch.uint8, 255.5),
        (torch.int8, 300),
        (torch.int32, 2**40),
        (torch.float16, 1e6),
        (torch.bfloat16, 1e39),
        (torch.float32, 1e39),
        (torch.float16, float("inf")),  # not an overflow: inf is a float16
        (torch.uint8, 2.5),
        (torch.bool, 2),
        (torch.float32, torch.tensor(-3.0)),  # a 0-d torch tensor
    ],
)
def test_padding_values_convert_as_torchs(dtype, value):
    """A padding value outside the dtype's range: pad_sequence raises torch's overflow error;
    pad_packed_sequence too, except that an unsigned dtype takes a negative integer down to
    minus its largest, wrapped around, as in torch."""
    seqs = [torch.ones(2, dtype=dtype), torch.ones(1, dtype=dtype)]
    packed_t = tr.pack_padded_sequence(torch.ones(2, 2, dtype=dtype), [2, 1])
    packed = jr.pack_padded_sequence(torch.ones(2, 2, dtype=dtype), [2, 1])
    for ours, theirs in (
        (
            lambda: jr.pad_sequence(seqs, padding_value=value),
            lambda: tr.pad_sequence(seqs, padding_value=value),
        ),
        (
            lambda: jr.pad_packed_sequence(packed, padding_value=value)[0],
            lambda: tr.pad_packed_sequence(packed_t, padding_value=value)[0],
        ),
    ):
        try:
            want = theirs().float().numpy()
        except RuntimeError as e:
            with pytest.raises(RuntimeError, match="value cannot be converted to type") as got:
                ours()
            assert str(e) in str(got.value)
            continue
        np.testing.assert_array_equal(np.asarray(ours()).astype(np.float32), want)


@pytest.mark.parametrize("batch", [16, 17, 20, 33, 40, 97])
def test_equal_lengths_sort_as_torchs_unstable_sort(batch):
    """torch sorts the lengths with its CPU sort, which is not stable from 17 items on: the
    order of equal lengths (sorted_indices, data) follows it, through a module too."""
    rng = np.random.default_rng(batch)
    lengths = rng.integers(1, 5, batch)
    x = rng.standard_normal((4, batch, 2)).astype(np.float32)
    theirs = tr.pack_padded_sequence(torch.tensor(x), torch.tensor(lengths), enforce_sorted=False)
    ours = jr.pack_padded_sequence(x, lengths, enforce_sorted=False)
    np.testing.assert_array_equal(ours.sorted_indices, theirs.sorted_indices.numpy())
    np.testing.assert_array_equal(ours.unsorted_indices, theirs.unsorted_indices.numpy())
    np.testing.assert_array_equal(ours.data, theirs.data.numpy())
    t = torch.nn.GRU(2, 3)
    out_t, _ = t(theirs)
    out_j, _ = jaxrnn.from_torch(t)(ours)
    np.testing.assert_allclose(out_j.data, out_t.data.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_torch_sort_order_matches_torch_on_many_inputs():
    from jaxrnn.utils._torch_sort import sort_descending_indices

    rng = np.random.default_rng(0)
    for n in [*range(1, 70), 128, 1000]:
        for values in (rng.integers(1, 4, n), rng.integers(1, n + 1, n), np.full(n, 2)):
            expected = torch.sort(torch.tensor(values), descending=True)[1].numpy()
            np.testing.assert_array_equal(sort_descending_indices(values), expected)


def _packing_calls(lib, arrays):
    x = arrays(4, 3, 2)
    packed = lib.pack_padded_sequence(x, [4, 2, 1])
    return {
        "pack-batch_first": lambda v: lib.pack_padded_sequence(x, [4, 2, 1], batch_first=v),
        "pad_packed-batch_first": lambda v: lib.pad_packed_sequence(packed, batch_first=v),
        "pad_packed-padding_value": lambda v: lib.pad_packed_sequence(packed, padding_value=v),
        "pad-batch_first": lambda v: lib.pad_sequence([arrays(3, 2)], batch_first=v),
        "pad-padding_value": lambda v: lib.pad_sequence([arrays(3, 2)], padding_value=v),
    }


@pytest.mark.parametrize("bad", ["x", None])
@pytest.mark.parametrize(
    "call",
    [
        "pack-batch_first",
        "pad_packed-batch_first",
        "pad_packed-padding_value",
        "pad-batch_first",
        "pad-padding_value",
    ],
)
def test_packing_arguments_are_type_checked_as_torchs(call, bad):
    """torch's argument parser refuses a non-bool ``batch_first`` and a non-number
    ``padding_value`` with a ``TypeError`` naming the argument (its internal function names
    aside); ours names the public function. A truthy string was taken as ``True`` before."""
    with pytest.raises(TypeError) as theirs:
        _packing_calls(tr, torch.zeros)[call](bad)
    with pytest.raises(TypeError) as ours:
        _packing_calls(jr, lambda *s: jnp.zeros(s))[call](bad)
    arg = re.search(r"argument '\w+' \(position \d\) must be \w+, not \w+", str(theirs.value))
    assert arg is not None
    arg_name = arg.group(0).split("'")[1]
    assert f"argument '{arg_name}'" in str(ours.value)
    assert str(ours.value).endswith(f"not {type(bad).__name__}")
    assert str(ours.value).split("(")[0] in (
        "pack_padded_sequence",
        "pad_packed_sequence",
        "pad_sequence",
    )


def test_packing_arguments_take_numpy_and_zero_d_values():
    x = jnp.ones((3, 2, 1))
    packed = jr.pack_padded_sequence(x, [3, 1], batch_first=np.bool_(False))
    padded, _ = jr.pad_packed_sequence(packed, padding_value=jnp.asarray(-1.0))
    assert padded[2, 1, 0] == -1.0
    assert jr.pad_sequence([jnp.ones(2), jnp.ones(1)], padding_value=np.int64(5))[1, 1] == 5
