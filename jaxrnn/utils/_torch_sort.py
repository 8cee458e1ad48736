"""The order ``torch.sort(values, descending=True)`` gives on CPU, ties included.

``pack_padded_sequence(..., enforce_sorted=False)`` sorts the lengths with ``torch.sort``, which
is not stable: on CPU it is ``std::sort`` (libstdc++'s introsort) over ``(value, index)`` pairs
compared by value alone. Up to 16 sequences that is an insertion sort, so equal lengths keep their
order; from 17 on, the quicksort partitions move them. A stable sort would give other
``sorted_indices`` (and packed ``data``) than torch's for most batches of 17 or more with repeated
lengths, so this module runs the same algorithm, step for step, on concrete lengths.
"""

from __future__ import annotations

import numpy as np

_THRESHOLD = 16  # libstdc++'s _S_threshold


def sort_descending_indices(values) -> np.ndarray:
    """Indices that sort 1-D ``values`` in descending order exactly as torch's CPU sort does."""
    keys = np.asarray(values).tolist()
    items = list(range(len(keys)))  # positions; compared by their keys

    def comp(a, b):  # torch's KeyValueCompDesc (no NaN among lengths): the greater key first
        return keys[a] > keys[b]

    n = len(items)
    if n > 1:
        _introsort_loop(items, 0, n, 2 * (n.bit_length() - 1), comp)
        _final_insertion_sort(items, 0, n, comp)
    return np.asarray(items, np.int64)


def _introsort_loop(a, first, last, depth_limit, comp):
    while last - first > _THRESHOLD:
        if depth_limit == 0:
            _heap_sort(a, first, last, comp)
            return
        depth_limit -= 1
        cut = _unguarded_partition_pivot(a, first, last, comp)
        _introsort_loop(a, cut, last, depth_limit, comp)
        last = cut


def _unguarded_partition_pivot(a, first, last, comp):
    mid = first + (last - first) // 2
    _move_median_to_first(a, first, first + 1, mid, last - 1, comp)
    return _unguarded_partition(a, first + 1, last, first, comp)


def _move_median_to_first(a, result, i, j, k, comp):
    if comp(a[i], a[j]):
        if comp(a[j], a[k]):
            pick = j
        elif comp(a[i], a[k]):
            pick = k
        else:
            pick = i
    elif comp(a[i], a[k]):
        pick = i
    elif comp(a[j], a[k]):
        pick = k
    else:
        pick = j
    a[result], a[pick] = a[pick], a[result]


def _unguarded_partition(a, first, last, pivot, comp):
    while True:
        while comp(a[first], a[pivot]):
            first += 1
        last -= 1
        while comp(a[pivot], a[last]):
            last -= 1
        if not first < last:
            return first
        a[first], a[last] = a[last], a[first]
        first += 1


def _final_insertion_sort(a, first, last, comp):
    if last - first > _THRESHOLD:
        _insertion_sort(a, first, first + _THRESHOLD, comp)
        for i in range(first + _THRESHOLD, last):
            _unguarded_linear_insert(a, i, comp)
    else:
        _insertion_sort(a, first, last, comp)


def _insertion_sort(a, first, last, comp):
    for i in range(first + 1, last):
        if comp(a[i], a[first]):
            val = a[i]
            a[first + 1 : i + 1] = a[first:i]
            a[first] = val
        else:
            _unguarded_linear_insert(a, i, comp)


def _unguarded_linear_insert(a, last, comp):
    val = a[last]
    nxt = last - 1
    while comp(val, a[nxt]):
        a[last] = a[nxt]
        last = nxt
        nxt -= 1
    a[last] = val


def _heap_sort(a, first, last, comp):
    """libstdc++'s ``__partial_sort(first, last, last)``: make_heap, then sort_heap."""
    n = last - first
    for parent in range((n - 2) // 2, -1, -1):
        _adjust_heap(a, first, parent, n, a[first + parent], comp)
    while last - first > 1:
        last -= 1
        val = a[last]
        a[last] = a[first]
        _adjust_heap(a, first, 0, last - first, val, comp)


def _adjust_heap(a, first, hole, length, value, comp):
    top = hole
    child = hole
    while child < (length - 1) // 2:
        child = 2 * (child + 1)
        if comp(a[first + child], a[first + child - 1]):
            child -= 1
        a[first + hole] = a[first + child]
        hole = child
    if length % 2 == 0 and child == (length - 2) // 2:
        child = 2 * (child + 1)
        a[first + hole] = a[first + child - 1]
        hole = child - 1
    parent = (hole - 1) // 2  # __push_heap
    while hole > top and comp(a[first + parent], value):
        a[first + hole] = a[first + parent]
        hole = parent
        parent = (hole - 1) // 2
    a[first + hole] = value
