"""Cutting a batch into parts whose bodies fit the endpoint. Plain Python, no Ray.

A batch whose JSON body would pass ``max_body_bytes`` is cut before it is sent, greedily in
frozen order, so the same elements always give the same parts (resume and replay send what
the first run did). A part answered 413 is halved, down to one contact. A part is contacts
``lo .. hi - 1`` of its batch, always counted from the batch's first element (a half of a
half too), and its key is the batch's key with that range: ``<key>.<lo>-<hi>``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# '[' + ']' around the list, and a ',' between elements.
_LIST_BYTES = 2
_SEPARATOR_BYTES = 1


def part_key(batch_key: str, lo: int, hi: int) -> str:
    """The Idempotency-Key of contacts ``lo .. hi - 1`` of the batch keyed ``batch_key``."""
    return f"{batch_key}.{lo}-{hi}"


def body_bytes(element_bytes: Sequence[int] | np.ndarray) -> int:
    """The size of the JSON list of elements of these sizes."""
    n = len(element_bytes)
    return _LIST_BYTES + int(np.sum(element_bytes)) + _SEPARATOR_BYTES * max(0, n - 1)


def cut_to_fit(
    element_bytes: Sequence[int] | np.ndarray, max_body_bytes: int
) -> list[tuple[int, int]]:
    """Consecutive ranges covering every element, each as long as fits ``max_body_bytes``
    (an element too large on its own gets a range of its own)."""
    sizes = np.asarray(element_bytes, dtype=np.int64)
    ranges: list[tuple[int, int]] = []
    lo = 0
    while lo < len(sizes):
        # The list of elements lo..hi-1 takes 2 + sum + (hi - lo - 1) bytes.
        cumulative = np.cumsum(sizes[lo:] + _SEPARATOR_BYTES) - _SEPARATOR_BYTES + _LIST_BYTES
        fits = int(np.searchsorted(cumulative, max_body_bytes, side="right"))
        hi = lo + max(1, fits)
        ranges.append((lo, hi))
        lo = hi
    return ranges


def halves(lo: int, hi: int) -> list[tuple[int, int]]:
    """Contacts ``lo .. hi - 1`` in two (the first half the larger); one contact stays."""
    if hi - lo < 2:
        return [(lo, hi)]
    mid = lo + -(-(hi - lo) // 2)
    return [(lo, mid), (mid, hi)]
