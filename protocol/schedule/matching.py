"""Bottleneck matching between two stage groups (the paper's pipeline pairing).

Two adjacent stage groups must be paired rank by rank; a boundary costs its slowest
pair, so the best pairing minimises the largest pair cost (a bottleneck assignment).
Among the pairings with the least bottleneck we take the one with the least total
(scipy's exact `linear_sum_assignment` on the entries under the bottleneck), so ties
go to the pairing that is better everywhere else too. The bottleneck itself is found
by binary search over the sorted distinct costs: a threshold is achievable exactly
when the assignment restricted to entries at or under it uses none above it.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from protocol.schedule.cost import IntArray


def _assign(w: IntArray, limit: int) -> tuple[IntArray, bool]:
    """Min-sum perfect matching using only entries <= limit, if one exists."""
    allowed = w <= limit
    big = int(w.max()) * w.shape[0] + 1
    masked = np.where(allowed, w, big)
    rows, cols = linear_sum_assignment(masked)
    ok = bool(allowed[rows, cols].all())
    return cols.astype(np.int64), ok


def bottleneck_assignment(w: IntArray) -> tuple[IntArray, int]:
    """(cols, bottleneck): row i is paired with column cols[i]; the largest w[i, cols[i]]
    is as small as any perfect matching allows, and the total is least among those."""
    n = w.shape[0]
    if n == 1:
        return np.zeros(1, dtype=np.int64), int(w[0, 0])
    values = np.unique(w)
    # The bottleneck is at least the largest row minimum and column minimum.
    floor = max(int(w.min(axis=1).max()), int(w.min(axis=0).max()))
    lo = int(np.searchsorted(values, floor))
    hi = len(values) - 1
    best, _ = _assign(w, int(values[hi]))
    while lo < hi:
        mid = (lo + hi) // 2
        cols, ok = _assign(w, int(values[mid]))
        if ok:
            hi, best = mid, cols
        else:
            lo = mid + 1
    cols, ok = _assign(w, int(values[lo]))
    if ok:
        best = cols
    return best, int(w[np.arange(n), best].max())
