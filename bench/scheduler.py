"""Scheduler benchmark: our search vs the paper's GCMA on the six DT-FM scenarios.

Run: .venv/bin/python bench/scheduler.py [--quick]

* Communication only (the paper's model, the scenarios' matrices and workload and
  nothing else): per scenario, the iteration time of our schedule, of GCMA (population
  100, 4900 offspring: the DT-FM code's budget; --quick: 900), and the mean of 1000
  uniformly random assignments, with the wall time of each search measured side by
  side in this run. GCMA's convergence (the evaluation at which it found its final
  best) shows the budget is not what limits it.
* Heterogeneous compute: each scenario's devices get a seeded mix of speeds (half
  100, a quarter 50, a quarter 25 TFLOP/s; memory ample) and 8-sequence micro-batches;
  our search is run once with the communication-only model and once compute-aware,
  and both schedules are evaluated with compute.
* Heterogeneous memory: the same mix with 80 / 32 / 16 GiB; a 16 GiB device cannot
  hold the early stages (1F1B keeps more micro-batches in flight there). Counted: how
  many communication-only schedules put a device on a stage it cannot hold, and
  whether the compute+memory-aware ones all fit.
* The last line is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocol.schedule.cost import build_problem, evaluate, grid_of, total_keys
from protocol.schedule.driver import DEFAULT_EVALUATIONS, schedule
from protocol.schedule.gcma import GcmaConfig, gcma
from protocol.schedule.model import Budget, Device
from protocol.schedule.scenario import scenario_from_doc

SCENARIOS = Path(__file__).resolve().parents[2] / "shared" / "scenarios" / "dtfm"
SEED = 1
RANDOM_SAMPLES = 1000
GIB = 2**30
#: (TFLOP/s, GiB, share) of the heterogeneous mix.
MIX = ((100e12, 80, 0.5), (50e12, 32, 0.25), (25e12, 16, 0.25))
MICRO_BATCH_SEQS = 8.0


def mixed_devices(n: int, seed: int, memory: bool) -> list[Device]:
    rng = np.random.default_rng(seed)
    kinds = rng.choice(len(MIX), size=n, p=[m[2] for m in MIX])
    return [Device(MIX[k][0], (MIX[k][1] if memory else 80) * GIB) for k in kinds]


def timed(fn: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def communication(sc: Any, offspring: int) -> dict[str, Any]:
    p = build_problem(sc.devices, sc.links, sc.workload, sc.shape, compute=False, memory=False)
    mine, wall_o, cpu_o = timed(
        lambda: schedule(sc.devices, sc.links, sc.workload, sc.shape, SEED, compute=False, memory=False)
    )
    theirs, wall_g, cpu_g = timed(lambda: gcma(p, SEED, Budget(10**9), GcmaConfig(offspring=offspring)))
    rng = np.random.default_rng(SEED)
    grids = np.stack(
        [
            rng.permutation(sc.shape.size).reshape(sc.shape.stages, sc.shape.dp_degree)
            for _ in range(RANDOM_SAMPLES)
        ]
    )
    (_, totals), wall_r, _ = timed(lambda: total_keys(p, grids))
    final = theirs.cost.total_ns
    converged = next(i for i, h in enumerate(theirs.history) if h == final) + 1
    return {
        "ours_s": mine.cost.seconds,
        "gcma_s": theirs.cost.seconds,
        "random_mean_s": float(np.mean(totals)) / 1e9,
        "ours_vs_gcma": mine.cost.total_ns / final,
        "ours_wall_s": wall_o,
        "ours_cpu_s": cpu_o,
        "gcma_wall_s": wall_g,
        "gcma_cpu_s": cpu_g,
        "random_wall_s": wall_r,
        "ours_evaluations": mine.evaluations,
        "gcma_evaluations": theirs.evaluations,
        "gcma_converged_at": converged,
        "ours_parts_s": [mine.cost.dp_ns / 1e9, (mine.cost.pp_forward_ns + mine.cost.pp_backward_ns) / 1e9],
        "gcma_parts_s": [
            theirs.cost.dp_ns / 1e9,
            (theirs.cost.pp_forward_ns + theirs.cost.pp_backward_ns) / 1e9,
        ],
    }


def heterogeneous(sc: Any, memory: bool) -> dict[str, Any]:
    devices = mixed_devices(sc.shape.size, SEED + sc.shape.size, memory)
    work = replace(sc.workload, micro_batch_seqs=MICRO_BATCH_SEQS)
    full = build_problem(devices, sc.links, work, sc.shape)
    comm_only = schedule(devices, sc.links, work, sc.shape, SEED, compute=False, memory=False)
    aware = schedule(devices, sc.links, work, sc.shape, SEED)
    a = evaluate(full, grid_of(comm_only.placement, sc.shape))
    b = evaluate(full, grid_of(aware.placement, sc.shape))
    return {
        "comm_only_s": a.seconds,
        "aware_s": b.seconds,
        "ratio": b.total_ns / a.total_ns,
        "comm_only_violations": a.violations,
        "aware_violations": b.violations,
        "comm_only_compute_s": a.compute_ns / 1e9,
        "aware_compute_s": b.compute_ns / 1e9,
        "aware_communication_s": b.communication_ns / 1e9,
        "comm_only_communication_s": a.communication_ns / 1e9,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="GCMA with 900 offspring instead of 4900")
    args = ap.parse_args()
    offspring = 900 if args.quick else 4900
    files = sorted(SCENARIOS.glob("case*.json"))
    scenarios = [scenario_from_doc(json.loads(f.read_text())) for f in files]
    print(
        f"six DT-FM scenarios, seed {SEED}; ours: {DEFAULT_EVALUATIONS} evaluations; "
        f"GCMA: population 100 + {offspring} offspring; random: mean of {RANDOM_SAMPLES}"
    )
    print(
        f"{'scenario':30s} {'ours s':>8s} {'gcma s':>8s} {'random s':>9s} {'ours/gcma':>9s} "
        f"{'ours wall':>9s} {'gcma wall':>9s} {'gcma conv':>9s}"
    )
    comm = []
    for f, sc in zip(files, scenarios, strict=True):
        r = communication(sc, offspring)
        comm.append(r)
        print(
            f"{f.stem:30s} {r['ours_s']:8.3f} {r['gcma_s']:8.3f} {r['random_mean_s']:9.3f} "
            f"{r['ours_vs_gcma']:9.3f} {r['ours_wall_s']:8.2f}s {r['gcma_wall_s']:8.2f}s "
            f"{r['gcma_converged_at']:9d}",
            flush=True,
        )
    print("\nheterogeneous compute (speeds 100/50/25 TFLOP/s, 50/25/25%), micro-batch 8 sequences:")
    print(
        f"{'scenario':30s} {'comm-only':>9s} {'aware':>8s} {'ratio':>6s}  "
        f"{'compute: comm-only -> aware':>28s}"
    )
    het = []
    for f, sc in zip(files, scenarios, strict=True):
        r = heterogeneous(sc, memory=False)
        het.append(r)
        print(
            f"{f.stem:30s} {r['comm_only_s']:8.3f}s {r['aware_s']:7.3f}s {r['ratio']:6.3f}  "
            f"{r['comm_only_compute_s']:12.3f}s -> {r['aware_compute_s']:.3f}s",
            flush=True,
        )
    print("\nheterogeneous memory (80/32/16 GiB with those speeds): devices on a stage they cannot hold")
    mem = []
    for f, sc in zip(files, scenarios, strict=True):
        r = heterogeneous(sc, memory=True)
        mem.append(r)
        print(
            f"{f.stem:30s} comm-only schedule: {r['comm_only_violations']:2d}"
            f"   aware: {r['aware_violations']:2d}"
            f"   aware {r['aware_s']:.3f}s",
            flush=True,
        )
    ratios = [r["ours_vs_gcma"] for r in comm]
    het_ratios = [r["ratio"] for r in het]
    headline = {
        "cost_vs_gcma_max": round(max(ratios), 4),
        "cost_vs_gcma_case1": round(ratios[1], 4),
        "cost_vs_gcma_geomean": round(statistics.geometric_mean(ratios), 4),
        "wall_s_max": round(max(r["ours_wall_s"] for r in comm), 3),
        "gcma_wall_s_max": round(max(r["gcma_wall_s"] for r in comm), 3),
        "ours_vs_gcma_wall_max": round(max(r["ours_wall_s"] / r["gcma_wall_s"] for r in comm), 4),
        "with_compute_vs_comm_only": round(statistics.fmean(het_ratios), 4),
        "with_compute_vs_comm_only_max": round(max(het_ratios), 4),
        "memory_comm_only_infeasible": sum(r["comm_only_violations"] > 0 for r in mem),
        "memory_aware_infeasible": sum(r["aware_violations"] > 0 for r in mem),
        "per_scenario": {
            f.stem: {
                k: round(v, 4) if isinstance(v, float) else v
                for k, v in r.items()
                if not k.endswith("parts_s")
            }
            for f, r in zip(files, comm, strict=True)
        },
    }
    print(json.dumps(headline, sort_keys=True))


if __name__ == "__main__":
    main()
