"""Consensus liveness under Byzantine validators, measured against the same validators crashed.

Run: .venv/bin/python bench/byzantine.py [--seeds N] [--duration-ms MS] [--quick]

For n = 4, 7, 10 equal validators with f = (n-1)//3 Byzantine (the same f, drawn by the
seed, in every run of that seed), on a 40 +- 20 ms network (20 ms + uniform 0..40 ms)
without loss and with 2% loss, every strategy of netsim/byzantine/ runs on the same
seeds as the crash reference (the same f validators crashed before the run). A run
commits for `duration_ms` of virtual time; its liveness is the height the slowest
honest validator reached, and each strategy's ratio is that height over the crash
reference's on the same (n, loss, seed), side by side in this process.

The last line is one JSON object: `byzantine_liveness_vs_crash_min` (the worst ratio of
any strategy on any n, loss and seed), `forks` and `honest_slashed` (totals over every
run), and the run's shape. netsim/scenarios/byzantine_sweep.py holds the pieces the slow
test suite uses too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netsim.scenarios.byzantine_sweep import LOSSES, SIZES, STRATEGIES, TARGET, Ratio, sweep

#: Default shape: 4 seeds x 2 losses x 3 sizes x 8 runs = 192 runs of 15 virtual seconds,
#: about 7 minutes of CPU (--quick: 2 seeds of 10 s, about 2 minutes).
SEEDS, DURATION_MS = 4, 15_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=SEEDS)
    ap.add_argument("--duration-ms", type=int, default=DURATION_MS)
    ap.add_argument("--quick", action="store_true", help="2 seeds of 10 s (a smoke run)")
    args = ap.parse_args()
    seeds, duration = (2, 10_000) if args.quick else (args.seeds, args.duration_ms)
    print(f"n = {list(SIZES)}, f = (n-1)//3, losses {list(LOSSES)}, seeds 0..{seeds - 1}, "
          f"{duration / 1000:.0f} s of virtual time per run, network 40 +- 20 ms")
    t0 = time.perf_counter()
    ratios: list[Ratio] = []
    for n in SIZES:
        for loss in LOSSES:
            rows = sweep((n,), range(seeds), (loss,), STRATEGIES, duration)
            ratios += rows
            _table(n, loss, rows)
    wall = time.perf_counter() - t0
    worst = min(ratios, key=lambda r: r.value)
    agg: dict[tuple[int, float, str], list[Ratio]] = defaultdict(list)
    for r in ratios:
        agg[(r.case.n, r.case.loss, r.case.strategy)].append(r)
    pooled = {k: sum(r.case.heights for r in v) / max(1, sum(r.reference.heights for r in v))
              for k, v in agg.items()}
    per_n = {n: round(min(r.value for r in ratios if r.case.n == n), 3) for n in SIZES}
    cases = [r.case for r in ratios] + list({id(r.reference): r.reference for r in ratios}.values())
    forks = sum(c.forks for c in cases)
    slashed = sum(c.honest_slashed for c in cases)
    forged = sum(c.forged_committed for c in cases)
    print(f"worst: {worst.case.strategy} at n={worst.case.n} loss={worst.case.loss} seed={worst.case.seed}: "
          f"{worst.case.heights} heights vs {worst.reference.heights} crashed = {worst.value:.3f} "
          f"(target >= {TARGET}); pooled over seeds the worst is "
          f"{min(pooled.values()):.3f} ({min(pooled, key=pooled.__getitem__)})")
    print(f"{len(cases)} runs in {wall:.0f} s wall; forks {forks}, honest validators slashed {slashed}, "
          f"forged invalid blocks committed {forged}")
    print(json.dumps({
        "byzantine_liveness_vs_crash_min": round(worst.value, 3),
        "forks": forks,
        "honest_slashed": slashed,
        "forged_blocks_committed": forged,
        "worst_strategy": worst.case.strategy,
        "liveness_vs_crash_min_by_n": {str(n): v for n, v in per_n.items()},
        "liveness_vs_crash_pooled_min": round(min(pooled.values()), 3),
        "seeds": seeds,
        "duration_ms": duration,
        "runs": len(cases),
        "wall_s": round(wall, 1),
    }))


def _table(n: int, loss: float, rows: list[Ratio]) -> None:
    by: dict[str, list[Ratio]] = defaultdict(list)
    for r in rows:
        by[r.case.strategy].append(r)
    ref = statistics.fmean(r.reference.heights for r in rows)
    print(f"\nn={n} loss={loss:.0%}: crash reference {ref:.1f} heights on average")
    head = ("strategy", "heights", "min x crash", "mean x crash", "forks", "slashed")
    print("  {:<15} {:>8} {:>12} {:>13} {:>6} {:>8}".format(*head))
    for s, rs in by.items():
        print(f"  {s:<15} {statistics.fmean(r.case.heights for r in rs):>8.1f} "
              f"{min(r.value for r in rs):>12.3f} {statistics.fmean(r.value for r in rs):>13.3f} "
              f"{sum(r.case.forks for r in rs):>6} {sum(r.case.honest_slashed for r in rs):>8}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
