"""From stage groups to a full assignment: the paper's coarsened-graph evaluation.

Given which devices form each stage group (a balanced partition), the rest is solved
exactly: every pair of groups gets its bottleneck pairing (`matching`), the groups
are ordered by the open-loop path through those pairing costs (`paths`), and the
pipelines are read off by following the pairings from the first stage to the last.
A boundary's cost depends only on the pairing across it, so chaining the pairwise
optima is optimal for the order chosen; for symmetric links the order is optimal too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from protocol.schedule.cost import IntArray, Problem
from protocol.schedule.matching import bottleneck_assignment
from protocol.schedule.paths import best_path

#: Path penalty per device that cannot hold the stage it would get: larger than any
#: sum of S capped transfer times, so the path avoids infeasible positions first.
VIOLATION_PENALTY_NS = 2**54


class GroupLayout:
    """Pairing costs between stage groups, cached by group contents (a search that
    changes two groups re-pairs only the pairs that involve them)."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.edge = problem.fwd + problem.fwd.T
        self._pairs: dict[tuple[bytes, bytes], tuple[IntArray, int]] = {}
        self.pairings = 0

    def pair(self, a: IntArray, b: IntArray) -> tuple[IntArray, int]:
        key = (a.tobytes(), b.tobytes())
        hit = self._pairs.get(key)
        if hit is None:
            hit = bottleneck_assignment(self.edge[np.ix_(a, b)])
            self.pairings += 1
            if len(self._pairs) > 200_000:
                self._pairs.clear()
            self._pairs[key] = hit
        return hit

    def grid(self, groups: Sequence[IntArray]) -> IntArray:
        """The best full assignment whose stage groups are `groups` (each of size D)."""
        s = len(groups)
        d = len(groups[0])
        if s == 1:
            return np.asarray(groups[0], dtype=np.int64).reshape(1, d)
        w = np.zeros((s, s), dtype=np.int64)
        for a in range(s):
            for b in range(a + 1, s):
                _, bn = self.pair(groups[a], groups[b])
                w[a, b] = w[b, a] = bn
        place = np.zeros((s, s), dtype=np.int64)
        fits = self.problem.fits
        for g in range(s):
            place[g] = (~fits[groups[g]]).sum(axis=0) * VIOLATION_PENALTY_NS
        order = best_path(w, place if place.any() else None)
        grid = np.zeros((s, d), dtype=np.int64)
        grid[0] = groups[order[0]]
        for k in range(s - 1):
            a, b = order[k], order[k + 1]
            if a < b:
                cols, _ = self.pair(groups[a], groups[b])
                partner = {int(groups[a][i]): int(groups[b][cols[i]]) for i in range(d)}
            else:
                cols, _ = self.pair(groups[b], groups[a])
                partner = {int(groups[a][cols[i]]): int(groups[b][i]) for i in range(d)}
            grid[k + 1] = [partner[int(x)] for x in grid[k]]
        return grid


def groups_of(labels: IntArray, stages: int) -> list[IntArray]:
    """Stage groups from a label per device (each label used dp_degree times), each
    group's devices in ascending order so equal groups compare equal."""
    return [np.sort(np.nonzero(labels == g)[0]).astype(np.int64) for g in range(stages)]
