"""The entry point: `schedule(devices, links, workload, shape, seed, budget)`.

A crew is placed by every node from committed data (the members' link reports and
capacity, the task's workload and shape, a seed from the beacon), so the result must
be a function of those inputs: the search is seeded, compares only integers, and is
bounded by a count of evaluations. A shell that wants a wall-clock limit instead (the
CLI) adds a `stop` callable to the budget; that result is then only as reproducible
as the clock.

With no shape given, every stages x dp shape that uses all devices and splits the
layers evenly is searched with an equal share of the budget, and the cheapest wins
(ties: fewer stages).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from protocol.schedule.cost import Problem, build_problem, placement_of
from protocol.schedule.errors import Infeasible, ScheduleError
from protocol.schedule.gcma import gcma
from protocol.schedule.model import DEFAULT_EVALUATIONS, Assignment, Budget, Device, Links, Shape, Workload
from protocol.schedule.result import SearchResult
from protocol.schedule.search import ours

Search = Callable[[Problem, int, Budget], SearchResult]
SEARCHES: dict[str, Search] = {"ours": ours, "gcma": gcma}


def memory_feasible(problem: Problem) -> bool:
    """Whether some assignment gives every device a stage it can hold. The devices
    that fit a stage are nested (a stage needing more memory fits a subset), so Hall's
    condition reduces to: the t hardest stages are fitted by at least t * D devices."""
    d = problem.shape.dp_degree
    fitting = sorted(int(x) for x in problem.fits.sum(axis=0))
    return all(fitting[t] >= (t + 1) * d for t in range(len(fitting)))


def schedule(
    devices: Sequence[Device],
    links: Links,
    workload: Workload,
    shape: Shape | None = None,
    seed: int = 0,
    budget: Budget | None = None,
    *,
    compute: bool = True,
    memory: bool = True,
    method: str = "ours",
) -> Assignment:
    """Each device's (stage, dp_rank) and the predicted iteration time.

    `compute=False, memory=False` is the paper's communication-only model. Raises
    ScheduleError for bad inputs and Infeasible when no layout fits in memory.
    """
    if method not in SEARCHES:
        raise ScheduleError(f"unknown search {method!r}; one of {sorted(SEARCHES)}")
    if not 0 <= seed < 2**64:
        raise ScheduleError("seed must be a u64")
    budget = budget or Budget(DEFAULT_EVALUATIONS)
    shapes = [shape] if shape is not None else workload.shapes_for(links.n)
    if not shapes:
        layers = workload.num_layers
        raise ScheduleError(f"no stages x dp shape places {links.n} devices and splits {layers} layers")
    share = max(1, budget.max_evaluations // len(shapes))
    best: Assignment | None = None
    for sh in shapes:
        problem = build_problem(devices, links, workload, sh, compute=compute, memory=memory)
        if not memory_feasible(problem):
            continue
        result = SEARCHES[method](problem, seed, Budget(share, budget.stop))
        found = Assignment(sh, placement_of(result.grid), result.cost, result.evaluations, method)
        if best is None or found.cost.key() < best.cost.key():
            best = found
    if best is None or not best.cost.feasible:
        what = f"shape {shape.stages}x{shape.dp_degree}" if shape is not None else "any shape"
        raise Infeasible(f"no assignment for {what} lets every device hold its stage")
    return best
