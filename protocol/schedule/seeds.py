"""Starting layouts read off the link graph.

Networks that training crews run on are clustered: GPUs in one machine, machines in
one data centre, data centres in one region. The good layouts tile the stage x rank
grid with those clusters, and which tiling is best depends on the numbers: a cluster
per pipeline keeps activations local (the data centre cases), a cluster per stage
keeps all-reduces local (two universities), a cluster on a band of consecutive stages
of one pipeline uses a small machine's fast links for the boundaries inside it (the
spot case). Genetic search over stage groups does not find these because they are
far apart in its space; here they are constructed directly.

The clusters come from single-linkage agglomeration (Kruskal on the pair costs, exact
integer weights, ties by index), which also gives a device order in which every
cluster at every level is contiguous and merged clusters meet at their closest ends.
A seed is a band height h dividing S and a cut level: the grid is cut into S/h bands
of h consecutive stages; the level's clusters, largest first, fill the bands rank by
rank, each rank's h cells of a band top to bottom.
"""

from __future__ import annotations

import numpy as np

from protocol.schedule.cost import IntArray, Problem

#: Cut levels tried: the merge heights after which the dendrogram's biggest jumps come.
MAX_LEVELS = 6


def link_weights(problem: Problem) -> IntArray:
    """One symmetric pair cost: an activation message each way plus the gradient share."""
    w: IntArray = problem.fwd + problem.fwd.T + problem.dp_weight[0]
    return w


def single_linkage(w: IntArray) -> tuple[list[int], list[tuple[int, list[int]]]]:
    """(order, merges): a device order keeping every single-linkage cluster contiguous,
    and each merge as (height, members after it)."""
    n = w.shape[0]
    iu, ju = np.triu_indices(n, 1)
    weights = w[iu, ju]
    edges = np.lexsort((ju, iu, weights))
    root = list(range(n))
    chains: dict[int, list[int]] = {i: [i] for i in range(n)}
    merges: list[tuple[int, list[int]]] = []

    def find(x: int) -> int:
        while root[x] != x:
            root[x] = root[root[x]]
            x = root[x]
        return x

    for e in edges:
        u, v = int(iu[e]), int(ju[e])
        ru, rv = find(u), find(v)
        if ru == rv:
            continue
        a, b = chains.pop(ru), chains.pop(rv)
        # Orient the chains so the merge edge's ends meet.
        if a[0] == u or (a[-1] != u and a.index(u) < len(a) // 2):
            a = a[::-1]
        if b[-1] == v or (b[0] != v and b.index(v) >= len(b) // 2):
            b = b[::-1]
        root[rv] = ru
        chains[ru] = a + b
        merges.append((int(weights[e]), chains[ru]))
    (order,) = chains.values()
    return order, merges


def cut_levels(merges: list[tuple[int, list[int]]], n: int) -> list[list[list[int]]]:
    """The clusterings just below the biggest relative jumps in merge height."""
    if n == 1:
        return [[[0]]]
    heights = [h for h, _ in merges]

    def jump(i: int) -> tuple[float, int]:
        return (-(heights[i + 1] - heights[i]) / max(heights[i + 1], 1), i)

    jumps = sorted(range(len(heights) - 1), key=jump)
    out: list[list[list[int]]] = []
    for i in sorted(jumps[:MAX_LEVELS]):
        out.append(_clusters_after(merges[: i + 1], n))
    out.append([[d] for d in range(n)])  # no clusters: the plain order
    return out


def _clusters_after(merges: list[tuple[int, list[int]]], n: int) -> list[list[int]]:
    owner = list(range(n))
    clusters: dict[int, list[int]] = {i: [i] for i in range(n)}
    for _, members in merges:
        head = owner[members[0]]
        for d in members:
            if owner[d] != head and owner[d] in clusters:
                del clusters[owner[d]]
            owner[d] = head
        clusters[head] = list(members)
    return list(clusters.values())


def band_fill(order: list[int], stages: int, dp: int, height: int) -> IntArray:
    """Lay `order` into bands of `height` stages, rank by rank, top to bottom."""
    grid = np.zeros((stages, dp), dtype=np.int64)
    pos = 0
    for band in range(0, stages, height):
        for r in range(dp):
            for k in range(band, band + height):
                grid[k, r] = order[pos]
                pos += 1
    return grid


def seed_grids(problem: Problem) -> list[IntArray]:
    """Every (band height, cut level) seed, without duplicates."""
    s, d = problem.shape.stages, problem.shape.dp_degree
    n = s * d
    order, merges = single_linkage(link_weights(problem))
    rank = {dev: i for i, dev in enumerate(order)}
    out: list[IntArray] = []
    seen: set[bytes] = set()
    for clusters in cut_levels(merges, n):
        clusters = sorted(clusters, key=lambda c: (-len(c), min(rank[x] for x in c)))
        flat = [dev for c in clusters for dev in sorted(c, key=lambda x: rank[x])]
        for height in [h for h in range(1, s + 1) if s % h == 0]:
            grid = band_fill(flat, s, d, height)
            key = grid.tobytes()
            if key not in seen:
                seen.add(key)
                out.append(grid)
    return out
