"""The stage order: an open-loop travelling-salesman path over the stage groups.

The paper orders the stage groups by an open-loop TSP on the coarsened graph (group
to group = their bottleneck pairing cost). Up to `EXACT_PATH_MAX` groups this is the
exact Held-Karp dynamic programme over subsets (any start, any end); above it, the
cheapest greedy path from every start improved by 2-opt. A position-dependent cost
(a group that cannot hold stage k's memory) can be added per (group, position).
Ties break towards the lowest index, so the answer is a function of the inputs.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from protocol.schedule.cost import IntArray

#: Held-Karp holds 2^S x S states; 12 stages is 49k states, well under a millisecond
#: of numpy per layer of the recursion.
EXACT_PATH_MAX = 12


def path_cost(w: IntArray, order: list[int], place: IntArray | None = None) -> int:
    total = sum(int(w[a, b]) for a, b in pairwise(order))
    if place is not None:
        total += sum(int(place[g, k]) for k, g in enumerate(order))
    return total


def best_path(w: IntArray, place: IntArray | None = None) -> list[int]:
    """The order of nodes 0..S-1 minimising the path's edge sum (+ place[node, pos])."""
    s = w.shape[0]
    if s == 1:
        return [0]
    if s <= EXACT_PATH_MAX:
        return _held_karp(w, place)
    return _two_opt(w, place)


def _held_karp(w: IntArray, place: IntArray | None) -> list[int]:
    s = w.shape[0]
    inf = np.iinfo(np.int64).max // 4
    full = 1 << s
    dp = np.full((full, s), inf, dtype=np.int64)
    parent = np.full((full, s), -1, dtype=np.int64)
    for j in range(s):
        dp[1 << j, j] = int(place[j, 0]) if place is not None else 0
    popcount = np.array([bin(m).count("1") for m in range(full)])
    for size in range(1, s):
        masks = np.nonzero(popcount == size)[0]
        for j in range(s):
            bit = 1 << j
            src = masks[(masks & bit) == 0]
            if not len(src):
                continue
            # cand[m, i] = dp[mask m, last i] + w[i, j]
            cand = dp[src] + w[:, j][None, :]
            cand = np.where(dp[src] >= inf, inf, cand)
            arg = np.argmin(cand, axis=1)
            val = cand[np.arange(len(src)), arg]
            if place is not None:
                val = np.where(val >= inf, inf, val + int(place[j, size]))
            dst = src | bit
            dp[dst, j] = val
            parent[dst, j] = arg
    last = int(np.argmin(dp[full - 1]))
    order = [last]
    mask = full - 1
    while len(order) < s:
        prev = int(parent[mask, order[-1]])
        mask &= ~(1 << order[-1])
        order.append(prev)
    order.reverse()
    return order


def _two_opt(w: IntArray, place: IntArray | None) -> list[int]:
    s = w.shape[0]
    best: list[int] | None = None
    best_cost = 0
    for start in range(s):
        order = [start]
        left = set(range(s)) - {start}
        while left:
            here = order[-1]
            nxt = min(left, key=lambda j: (int(w[here, j]), j))
            order.append(nxt)
            left.remove(nxt)
        order = _improve(w, place, order)
        cost = path_cost(w, order, place)
        if best is None or cost < best_cost:
            best, best_cost = order, cost
    assert best is not None
    return best


def _improve(w: IntArray, place: IntArray | None, order: list[int]) -> list[int]:
    cost = path_cost(w, order, place)
    improved = True
    while improved:
        improved = False
        for i in range(len(order) - 1):
            for j in range(i + 1, len(order)):
                cand = order[:i] + order[i : j + 1][::-1] + order[j + 1 :]
                c = path_cost(w, cand, place)
                if c < cost:
                    order, cost, improved = cand, c, True
    return order
