"""The placement part of bench/crew.py (run it there: `bench/crew.py --schedule-only`).

Does the scheduler's placement (protocol/schedule, docs/schedule.md) make a real crew
faster than a random one? Eight members, 4 stages x 2 replicas, one process each on this
box; every pair of members talks over an emulated link (channels.EmulatedLinks) taken from
the first 8 devices of DT-FM's world-wide scenario (case 4: 8 cities on 3 continents),
scaled to the box: every time in the scenario is multiplied by TIME_SCALE, and since our
model is far smaller than its GPT-3 XL, every bandwidth is also multiplied by our
gradient bytes per stage over the scenario's, so a gradient exchange takes the same share
of an iteration as there. The scheduler is given exactly those links and this crew's own
workload (fp32 boundaries and gradients, communication-only cost model: the members are
identical), and places the crew; the baseline is RANDOM seeded random placements.

  scheduled_vs_random_iter_time  the scheduled crew's iteration time over the mean of the
                                 random crews' (median step after the first 2, slowest
                                 member). Goal < 1. Beside it, the cost model's predicted ratio.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np

from node.compute import datasets
from node.compute.crew.channels import Link
from node.compute.crew.launch import run_local_crew
from node.compute.crew.model import ModelShape
from node.compute.crew.pipeline import CrewConfig
from protocol.schedule.cost import build_problem, evaluate, grid_of
from protocol.schedule.driver import schedule
from protocol.schedule.model import Budget, Links, Shape, Workload
from protocol.schedule.scenario import PLACEHOLDER_DEVICE, scenario_from_doc

SCENARIO = Path(__file__).resolve().parents[2] / "shared" / "scenarios" / "dtfm" / "case4_worldwide_geo.json"
TIME_SCALE = 0.25
RANDOM = 3
WARMUP_STEPS = 2
CREW = CrewConfig(stages=4, data_parallel=2, shape=ModelShape(blocks=4, width=64, heads=4, context=64),
                  micro_batch=4, micro_batches=4, epochs=2, n_train=128, n_val=8, lr=1e-3, seed=2,
                  bits=None, grad_bits=None)


def workload(cfg: CrewConfig) -> Workload:
    """This crew's model as the scheduler sees it (fp32 on the wire both ways)."""
    w = cfg.shape.width
    return Workload(num_layers=cfg.shape.blocks, hidden_size=w, seq_len=cfg.shape.context,
                    global_batch_seqs=float(cfg.batch), micro_batch_seqs=float(cfg.micro_batch),
                    num_params=float(12 * cfg.shape.blocks * w * w), vocab_size=256,
                    gradient_bytes_per_param=4, activation_bytes_per_elem=4)


def scaled_links(cfg: CrewConfig) -> Links:
    """The scenario's first world() devices, every time scaled by TIME_SCALE (see above)."""
    doc = json.loads(SCENARIO.read_text())
    sc = scenario_from_doc(doc)
    n = cfg.world
    ours = 4 * 12 * cfg.shape.width ** 2 * cfg.shape.blocks / cfg.stages  # gradient bytes of one stage
    theirs = float(doc["workload"]["gradient_gb"]) * 1e9
    factor = ours / theirs / TIME_SCALE
    delay = tuple(tuple(sc.links.delay_ms[i][j] * TIME_SCALE for j in range(n)) for i in range(n))
    bw = tuple(tuple(sc.links.bandwidth_gbps[i][j] * factor for j in range(n)) for i in range(n))
    return Links(delay, bw)


Placement = tuple[tuple[int, int], ...]


def crew_links(cfg: CrewConfig, links: Links, placement: Placement) -> dict[tuple[int, int], Link]:
    """Device i runs (stage, replica) = placement[i]: each pair of crew ranks gets its devices' link."""
    device = {cfg.rank(stage, rep): i for i, (stage, rep) in enumerate(placement)}
    return {(a, b): Link(delay_s=links.delay_ms[device[a]][device[b]] / 1e3,
                         bits_per_s=links.bandwidth_gbps[device[a]][device[b]] * 1e9)
            for a in range(cfg.world) for b in range(cfg.world) if a != b}


def iteration_time(cfg: CrewConfig, links: dict[tuple[int, int], Link]) -> float:
    results = run_local_crew(cfg, datasets.corpus().tokens, links=links, deadline_s=1800)
    return max(statistics.median(r.step_seconds[WARMUP_STEPS:]) for r in results)


def main_part(quick: bool = False) -> dict[str, float]:
    cfg = replace(CREW, epochs=1) if quick else CREW
    links, shape = scaled_links(cfg), Shape(cfg.stages, cfg.data_parallel)
    devices = [PLACEHOLDER_DEVICE] * cfg.world
    scheduled = schedule(devices, links, workload(cfg), shape=shape, seed=1,
                         budget=Budget(max_evaluations=20_000), compute=False, memory=False)
    problem = build_problem(devices, links, workload(cfg), shape, compute=False, memory=False)
    rng = np.random.default_rng(7)
    randoms = []
    for _ in range(RANDOM):
        order = rng.permutation(cfg.world)
        randoms.append(tuple((int(d) // cfg.data_parallel, int(d) % cfg.data_parallel) for d in order))
    predicted = [evaluate(problem, grid_of(p, shape)).total_ns / 1e9 for p in (scheduled.placement, *randoms)]
    print(f"placement: {cfg.stages} x {cfg.data_parallel} crew, {cfg.shape}, links of {SCENARIO.stem} "
          f"(first {cfg.world} devices) scaled by {TIME_SCALE}; scheduler grid {scheduled.grid()}",
          flush=True)
    t_sched = iteration_time(cfg, crew_links(cfg, links, scheduled.placement))
    print(f"  scheduled: {t_sched:.3f} s a step (predicted {predicted[0]:.3f} s)", flush=True)
    t_rand = []
    for i, p in enumerate(randoms):
        t_rand.append(iteration_time(cfg, crew_links(cfg, links, p)))
        print(f"  random {i}: {t_rand[-1]:.3f} s a step (predicted {predicted[i + 1]:.3f} s)", flush=True)
    ratio = t_sched / statistics.mean(t_rand)
    model_ratio = predicted[0] / statistics.mean(predicted[1:])
    print(f"scheduled / random iteration time {ratio:.3f} (goal < 1); the cost model predicted "
          f"{model_ratio:.3f}", flush=True)
    return {"scheduled_vs_random_iter_time": round(ratio, 4),
            "scheduled_vs_random_predicted": round(model_ratio, 4)}
