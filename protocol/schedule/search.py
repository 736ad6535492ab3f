"""Our search: cluster-tiling seeds, exact re-pairing, and local search on the grid.

Three ideas, each aimed at a way the paper's GCMA loses:

1. Seeds from the link graph (`seeds`): layouts that tile the stage x rank grid with
   the network's clusters (a cluster per pipeline, per stage, per band of stages of
   one pipeline). GCMA's moves only exchange devices between stage groups, guided by
   the data-parallel graph, so it keeps clusters together inside stage groups and
   never reaches "a cluster per pipeline", which the data-centre cases need.
2. Exact sub-solvers where the problem has them (`layout`): for fixed stage groups,
   the bottleneck pairing of every pair (scipy's linear_sum_assignment under a
   threshold) and the Held-Karp stage order are optimal, so every local optimum is
   re-paired and re-ordered exactly.
3. Local search on the full assignment with the exact cost, not a proxy: batches of
   random moves (two devices swap; two runs of consecutive stages of two pipelines
   swap, which moves a fast chain of devices intact), best of each batch taken.
   The cost is a sum of maxima, so most moves leave it unchanged; among equal costs
   the search prefers fewer entries at each maximum, weighted concavely so that it
   empties some terms' maxima completely (which is what lowers them) rather than
   thinning all of them. Iterated: a stalled search is kicked from the best layout.

Every comparison is on integers, every random choice comes from the seeded
generator, and the budget counts evaluations, so the result is a function of the
inputs and the seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from protocol.schedule.cost import IntArray, Problem, cost_parts, evaluate
from protocol.schedule.layout import GroupLayout
from protocol.schedule.model import Budget, Cost
from protocol.schedule.result import SearchResult
from protocol.schedule.seeds import seed_grids

#: Concave weight of "k entries at a term's maximum": emptying a maximum is worth more
#: than thinning several.
_CONCAVE_SCALE = 1000


@dataclass(frozen=True, slots=True)
class SearchConfig:
    #: Candidate moves evaluated together (one numpy batch).
    batch: int = 64
    #: Share of moves in a batch that swap runs of stages instead of single devices.
    block_share: float = 0.5
    #: Batches without improvement before a local search stops.
    patience: int = 40
    #: Seeds (besides random ones) kept for a full local search, best first.
    seeds_kept: int = 4
    #: Random swaps in an iterated-local-search kick.
    kick_swaps: int = 3


class _Evaluations:
    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.used = 0

    def left(self) -> int:
        if self.budget.stop is not None and self.budget.stop():
            return 0
        return max(0, self.budget.max_evaluations - self.used)


class _State:
    """The best layout so far and the curve of best totals."""

    def __init__(self) -> None:
        self.grid: IntArray | None = None
        self.cost: Cost | None = None
        self.history: list[int] = []

    def offer(self, grid: IntArray, cost: Cost, evaluations: int) -> None:
        if self.cost is None or cost.key() < self.cost.key():
            self.grid, self.cost = grid.copy(), cost
        assert self.cost is not None
        self.history.extend([self.cost.total_ns] * max(0, evaluations - len(self.history)))


@lru_cache(maxsize=64)
def _concave(n: int) -> IntArray:
    """table[c] = the weight of c entries at a maximum, c = 0..n (integers)."""
    return np.array([int(_CONCAVE_SCALE * math.sqrt(c)) for c in range(n + 1)], dtype=np.int64)


def keys(problem: Problem, grids: IntArray) -> IntArray:
    """[b, 3] ranking keys: (violations, total ns, crowding of the maxima)."""
    p = cost_parts(problem, grids)
    b = grids.shape[0]
    d = grids.shape[2]
    table = _concave(grids.shape[1] * d)
    crowd = np.zeros(b, dtype=np.int64)
    for vals in (p.forward, p.backward):
        if vals.shape[1]:
            top = vals.max(axis=2, keepdims=True)
            crowd += table[(vals == top).sum(axis=2)].sum(axis=1)
    rows = p.rows.reshape(b, -1)
    crowd += table[(rows == rows.max(axis=1, keepdims=True)).sum(axis=1)]
    st = p.stage_time
    crowd += table[(st == st.max(axis=1, keepdims=True)).sum(axis=1)]
    if problem.compute.any():
        times = problem.compute[grids, np.arange(grids.shape[1])[None, :, None]]
        crowd += table[(times == st[:, :, None]).sum(axis=2)].sum(axis=1)
    return np.stack([p.violations, p.total, crowd], axis=1)


def _best(k: IntArray) -> int:
    return int(np.lexsort((k[:, 2], k[:, 1], k[:, 0]))[0])


def _less(a: IntArray, b: IntArray) -> bool:
    return tuple(int(x) for x in a) < tuple(int(x) for x in b)


def _moves(grid: IntArray, rng: np.random.Generator, cfg: SearchConfig) -> IntArray:
    s, d = grid.shape
    n = s * d
    b = cfg.batch
    cands = np.repeat(grid.reshape(1, n), b, axis=0)
    rows = np.arange(b)
    c1 = rng.integers(0, n, size=b)
    c2 = (c1 + rng.integers(1, n, size=b)) % n if n > 1 else c1
    v1, v2 = cands[rows, c1].copy(), cands[rows, c2].copy()
    cands[rows, c1], cands[rows, c2] = v2, v1
    cands = cands.reshape(b, s, d)
    if s > 1:
        blocks = int(b * cfg.block_share)
        for i in range(blocks):
            length = int(rng.integers(2, s + 1))
            r1, r2 = (int(x) for x in rng.integers(0, d, size=2))
            a, c = (int(x) for x in rng.integers(0, s - length + 1, size=2))
            if r1 == r2 and abs(a - c) < length:
                continue
            g = grid.copy()
            g[a : a + length, r1], g[c : c + length, r2] = grid[c : c + length, r2], grid[a : a + length, r1]
            cands[i] = g
    return cands


def _device_sorted(problem: Problem, grid: IntArray) -> list[IntArray]:
    """Variants of a seed whose pipelines keep their devices but, within each band of
    h stages, put the faster (or bigger) devices first: slow devices then share
    stages instead of slowing every stage, and small ones sit late in the pipeline
    where 1F1B keeps fewer micro-batches in flight."""
    s = grid.shape[0]
    out: list[IntArray] = []
    speed = -problem.compute.sum(axis=1)
    room = problem.fits.sum(axis=1)
    for rank_of in ((speed, "compute"), (room, "memory")):
        values, what = rank_of
        if what == "compute" and not problem.compute.any():
            continue
        if what == "memory" and problem.fits.all():
            continue
        for h in [h for h in range(2, s + 1) if s % h == 0]:
            g = grid.copy()
            for band in range(0, s, h):
                seg = g[band : band + h]
                idx = np.argsort(-values[seg], axis=0, kind="stable")
                g[band : band + h] = np.take_along_axis(seg, idx, axis=0)
            out.append(g)
    return out


def local_search(
    problem: Problem,
    grid: IntArray,
    rng: np.random.Generator,
    evals: _Evaluations,
    state: _State,
    layout: GroupLayout,
    cfg: SearchConfig,
) -> IntArray:
    cur = grid.copy()
    cur_key = keys(problem, cur[None])[0]
    stall = 0
    polished = False
    while (left := evals.left()) > 0:
        cands = _moves(cur, rng, cfg)[:left]
        k = keys(problem, cands)
        evals.used += len(cands)
        i = _best(k)
        if _less(k[i], cur_key):
            cur, cur_key, stall, polished = cands[i], k[i], 0, False
            state.offer(cur, evaluate(problem, cur), evals.used)
            continue
        stall += 1
        if stall < cfg.patience:
            continue
        if polished:
            break
        # Stuck: re-pair and re-order the current stage groups exactly.
        polished = True
        stall = 0
        better = layout.grid([np.sort(row) for row in cur])
        bk = keys(problem, better[None])[0]
        evals.used += 1
        if _less(bk, cur_key):
            cur, cur_key = better, bk
            state.offer(cur, evaluate(problem, cur), evals.used)
    state.offer(cur, evaluate(problem, cur), evals.used)
    return cur


def ours(problem: Problem, seed: int, budget: Budget, config: SearchConfig = SearchConfig()) -> SearchResult:
    rng = np.random.Generator(np.random.PCG64(seed))
    evals = _Evaluations(budget)
    state = _State()
    layout = GroupLayout(problem)
    s, d = problem.shape.stages, problem.shape.dp_degree
    # Seeds, each re-paired exactly, ranked by cost.
    starts: list[IntArray] = []
    for g in seed_grids(problem):
        for v in [g, *_device_sorted(problem, g)]:
            starts.append(v)
            starts.append(layout.grid([np.sort(row) for row in v]))
    starts.append(rng.permutation(s * d).reshape(s, d))
    starts = starts[: max(1, evals.left())]
    k = keys(problem, np.stack(starts))
    evals.used += len(starts)
    order = np.lexsort((k[:, 2], k[:, 1], k[:, 0]))
    for i in order:
        state.offer(starts[int(i)], evaluate(problem, starts[int(i)]), evals.used)
    chosen = [starts[int(i)] for i in order[: config.seeds_kept]] + [starts[-1]]
    for g in chosen:
        if evals.left() <= 0:
            break
        local_search(problem, g, rng, evals, state, layout, config)
    # Iterated local search from the best layout until the budget is spent.
    while evals.left() > 0:
        assert state.grid is not None
        kicked = state.grid.copy()
        flat = kicked.reshape(-1)
        for _ in range(config.kick_swaps):
            a, b = (int(x) for x in rng.choice(s * d, size=2, replace=False)) if s * d > 1 else (0, 0)
            flat[a], flat[b] = flat[b], flat[a]
        local_search(problem, kicked, rng, evals, state, layout, config)
    assert state.grid is not None and state.cost is not None
    return SearchResult(state.grid, state.cost, evals.used, tuple(state.history), "ours")
