"""The scheduler's cost model against hand-computed cases and the paper's formula."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from protocol.schedule.cost import build_problem, evaluate, grid_of, placement_of, stage_sizes
from protocol.schedule.errors import ScheduleError
from protocol.schedule.model import Device, Links, PinnedSizes, Shape, Workload
from protocol.schedule.scenario import scenario_from_doc

SCENARIOS = Path(__file__).resolve().parents[2] / "shared" / "scenarios" / "dtfm"
SHAPE = Shape(2, 2)
#: Pinned sizes make the hand arithmetic round: 1 GB activations, 2 GB gradients
#: (each of the 2 ranks exchanges 1 GB with the other).
WORK = Workload(2, 10, 1, 4.0, pinned=PinnedSizes(SHAPE, 10**9, 2 * 10**9))
ANY = [Device(1e12, 2**40)] * 4


def links(delay: float = 1.0, bw: float = 8.0, **edges: tuple[float, float]) -> Links:
    """4 devices, `delay` ms and `bw` Gbit/s everywhere except edges 'ij' = (delay, bw)
    (one direction i -> j only)."""
    d = [[0.0 if i == j else delay for j in range(4)] for i in range(4)]
    b = [[1.0 if i == j else bw for j in range(4)] for i in range(4)]
    for key, (dl, bl) in edges.items():
        i, j = int(key[1]), int(key[2])
        d[i][j], b[i][j] = dl, bl
    return Links.from_rows(d, b)


def sym(**edges: tuple[float, float]) -> dict[str, tuple[float, float]]:
    out = dict(edges)
    for key, v in edges.items():
        out[f"e{key[2]}{key[1]}"] = v
    return out


def test_communication_cost_matches_a_hand_computed_two_by_two() -> None:
    # 8 Gbit/s moves 1 GB in 1 s; the 0-1 link is 10x faster and 2-3 has 10 ms delay.
    lk = links(**sym(e01=(1.0, 80.0), e23=(10.0, 8.0)))
    p = build_problem(ANY, lk, WORK, SHAPE, compute=False, memory=False)
    cost = evaluate(p, np.array([[0, 1], [2, 3]]))
    # DP: group {2,3} is slowest: 2 x (10 ms + 1 s) = 2.02 s; group {0,1}: 2 x 0.101 s.
    assert cost.dp_ns == 2_020_000_000
    # PP: pipelines 0->2 and 1->3, 1 ms + 1 s each, forward and back.
    assert cost.pp_forward_ns == cost.pp_backward_ns == 1_001_000_000
    assert cost.compute_ns == 0 and cost.violations == 0
    assert cost.total_ns == 4_022_000_000
    # Swapping the groups' roles: DP groups {0,2},{1,3} at 2 x 1.001 s; boundary pairs
    # 0->1 (0.101 s) and 2->3 (1.010 s) take the slower.
    other = evaluate(p, np.array([[0, 2], [1, 3]]))
    assert (other.dp_ns, other.pp_forward_ns) == (2_002_000_000, 1_010_000_000)


def test_asymmetric_links_charge_each_direction_with_its_own_entry() -> None:
    lk = links(e02=(1.0, 4.0))  # only 0 -> 2 is slow: 2 s for 1 GB
    p = build_problem(ANY, lk, WORK, SHAPE, compute=False, memory=False)
    cost = evaluate(p, np.array([[0, 1], [2, 3]]))
    assert cost.pp_forward_ns == 2_001_000_000  # activations 0 -> 2
    assert cost.pp_backward_ns == 1_001_000_000  # gradients 2 -> 0 use the fast direction
    # DP pairs a device's send and receive: 0 with 1 is 2 x 1.001 s.
    assert cost.dp_ns == 2_002_000_000


def test_compute_takes_each_stages_slowest_device_and_pipelines_micro_batches() -> None:
    # hidden 10, seq 1, 2 layers -> 1 layer a stage: 24*100 + 4*10 = 2440 FLOP a token
    # forward, x3 for training, x2 tokens a rank = 14640 FLOP per stage per iteration.
    work = Workload(2, 10, 1, 4.0, micro_batch_seqs=1.0)
    sizes = stage_sizes(work, SHAPE)
    assert sizes.flops == (14640.0, 14640.0) and sizes.micro_batches == 2
    devices = [Device(14640.0, 2**30), Device(7320.0, 2**30), Device(14640.0, 2**30), Device(14640.0, 2**30)]
    p = build_problem(devices, links(), work, SHAPE, memory=False)
    cost = evaluate(p, np.array([[0, 1], [2, 3]]))
    # Stage 0 waits for its slow device (2 s), stage 1 takes 1 s; two micro-batches
    # pipeline: (2 + 1 + (2 - 1) * 2) / 2 = 2.5 s.
    assert cost.compute_ns == 2_500_000_000
    # The same devices with the slow one in stage 1: the same bottleneck, same time.
    assert evaluate(p, np.array([[0, 2], [1, 3]])).compute_ns == 2_500_000_000


def test_memory_need_falls_along_the_pipeline_and_a_device_that_cannot_hold_its_stage_is_a_violation() -> (
    None
):
    work = Workload(2, 10, 1, 4.0, micro_batch_seqs=1.0)
    sizes = stage_sizes(work, SHAPE)
    # 12 * 2 * 10^2 / 2 = 1200 parameters a stage at 16 bytes, plus 34 * 10 bytes of
    # activations per micro-batch in flight: min(2, 2 - k) under 1F1B.
    assert sizes.memory_bytes == (1200 * 16 + 2 * 340, 1200 * 16 + 340)
    small = 1200 * 16 + 400  # holds stage 1 only
    devices = [Device(1e12, small), Device(1e12, 2**30), Device(1e12, 2**30), Device(1e12, 2**30)]
    p = build_problem(devices, links(), work, SHAPE)
    assert evaluate(p, np.array([[0, 1], [2, 3]])).violations == 1
    assert evaluate(p, np.array([[2, 1], [0, 3]])).violations == 0
    assert not evaluate(p, np.array([[0, 1], [2, 3]])).feasible


def test_a_vocabulary_makes_the_first_and_last_stages_heavier() -> None:
    work = Workload(4, 16, 8, 8.0, vocab_size=1000)
    sizes = stage_sizes(work, Shape(4, 1))
    assert (
        sizes.gradient_bytes[0]
        == sizes.gradient_bytes[3]
        > sizes.gradient_bytes[1]
        == sizes.gradient_bytes[2]
    )
    assert sizes.flops[3] > sizes.flops[0] == sizes.flops[1]


def paper_cost(doc: dict, stage_of: list[int], rank_of: list[int]) -> float:
    """DT-FM's formula, written the way the README states it, in floats."""
    d, b = doc["delay_ms"], doc["bandwidth_gbps"]
    a, g = doc["workload"]["activation_gb"], doc["workload"]["gradient_gb"]
    s, dp = doc["num_stages"], doc["dp_degree"]
    grid = [[0] * dp for _ in range(s)]
    for dev, (k, r) in enumerate(zip(stage_of, rank_of)):
        grid[k][r] = dev
    dp_cost = max(
        sum(2 * (d[i][j] / 1e3 + 8 * g / (b[i][j] * dp)) for j in group if j != i)
        for group in grid
        for i in group
    )
    pp = sum(max(d[u][v] / 1e3 + 8 * a / b[u][v] for u, v in zip(grid[k], grid[k + 1])) for k in range(s - 1))
    return dp_cost + 2 * pp


@pytest.mark.parametrize("case", ["case3_regional_geo", "case4_worldwide_geo"])
def test_integer_cost_equals_the_papers_formula_on_a_dtfm_scenario(case: str) -> None:
    doc = json.loads((SCENARIOS / f"{case}.json").read_text())
    sc = scenario_from_doc(doc)
    p = build_problem(sc.devices, sc.links, sc.workload, sc.shape, compute=False, memory=False)
    rng = np.random.default_rng(3)
    for _ in range(5):
        grid = rng.permutation(64).reshape(8, 8)
        placement = placement_of(grid)
        expected = paper_cost(doc, [k for k, _ in placement], [r for _, r in placement])
        assert math.isclose(evaluate(p, grid).seconds, expected, rel_tol=1e-8)


def test_placements_and_grids_are_inverse_and_non_bijections_are_refused() -> None:
    grid = np.array([[3, 0], [1, 2]])
    assert (grid_of(placement_of(grid), SHAPE) == grid).all()
    with pytest.raises(ScheduleError, match="given to devices"):
        grid_of([(0, 0), (0, 0), (1, 0), (1, 1)], SHAPE)
    with pytest.raises(ScheduleError, match="outside the shape"):
        grid_of([(0, 0), (0, 1), (1, 0), (2, 1)], SHAPE)
    with pytest.raises(ScheduleError, match="3 placements"):
        grid_of([(0, 0), (0, 1), (1, 0)], SHAPE)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Links.from_rows([[0, float("nan")], [1, 0]], [[1, 1], [1, 1]]),
        lambda: Links.from_rows([[0, 1], [1, 0]], [[1, 0.0], [1, 1]]),
        lambda: Links.from_rows([[0, 1], [1, 0]], [[1, 1]]),
        lambda: Device(float("inf"), 1),
        lambda: Device(1e12, -1),
        lambda: Shape(0, 4),
        lambda: Shape(64, 64),
        lambda: Workload(0, 1, 1, 1.0),
        lambda: Workload(2, 1, 1, float("nan")),
    ],
)
def test_out_of_range_inputs_are_refused_with_a_schedule_error(build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ScheduleError):
        build()


def test_layers_that_do_not_split_evenly_are_refused() -> None:
    with pytest.raises(ScheduleError, match="do not split"):
        stage_sizes(Workload(3, 4, 4, 4.0), SHAPE)
