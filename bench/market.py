"""Market benchmark on the real stack: throughput, cost of trust, latency of the lifecycle.

Runs netsim/scenarios/market.py (`run_market`): every node a `MarketNode` (Tendermint
consensus over netsim's network model, the ledger with the market installed, the role
machines), synthetic compute so that 64 nodes fit in minutes. Rows: the honest network at
32 nodes, and 25% Byzantine workers (attack catalog) plus a lazy verifier and a false
challenger at 16, 32 and 64 nodes. Side by side:

* tasks settled per simulated hour and per wall minute;
* verification overhead: FLOPs of verifiers and whistleblowers (re-execution) over the
  solvers' training FLOPs, and disputes (bisection hashes + arbitration) separately,
  against issue 4's 5% goal;
* submit-to-end time (median, blocks) over the sum of the stages' minimum durations
  (`min_blocks`; no dispute), so the Byzantine ratio shows what disputes add;
* cheats caught, honest stake lost, jackpot payouts, invariants.

Usage: `.venv/bin/python bench/market.py [seeds-per-row]` (default 1). The last line is one
JSON object; its headline figures are the Byzantine run at 32 nodes.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netsim.scenarios.market import MarketConfig, MarketReport, run_market

BYZANTINE = {"byzantine_fraction": 0.25, "lazy_verifier": True, "false_challenger": True}
ROWS = (("honest", 32, {}), ("byzantine", 16, BYZANTINE), ("byzantine", 32, BYZANTINE),
        ("byzantine", 64, BYZANTINE))
GOAL_VERIFY_FRACTION = 0.05


def min_blocks(cfg: MarketConfig) -> int:
    """The lifecycle's floor with no dispute: 1 block to place, the fastest solver's training
    (no slack, whole blocks), 1 to elect verifiers after the proof, 1 from commit to reveal,
    then the challenge and forced-reveal windows."""
    p = cfg.params
    fastest = 4 * 10**12
    train = -(-cfg.gflops * 10**9 * 1_000 // (fastest * p.block_time_ms))
    return 1 + train + 1 + 1 + p.challenge_window_blocks + p.forced_reveal_blocks


def summarise(cfg: MarketConfig, reports: list[MarketReport]) -> dict[str, float]:
    tasks = sum(len(r.tasks) for r in reports)
    settled = sum(r.settled for r in reports)
    sim_h = sum(r.sim_ms for r in reports) / 3_600_000
    wall_min = sum(r.wall_s for r in reports) / 60
    cheats = sum(r.cheats for r in reports)
    latency = [t.submit_to_end_blocks for r in reports for t in r.tasks]
    train = sum(r.solver_flops for r in reports)
    return {
        "tasks_settled_fraction": settled / tasks,
        "tasks_per_sim_hour": settled / sim_h,
        "tasks_per_wall_min": settled / wall_min,
        "verify_over_train_flops": sum(r.verify_flops for r in reports) / train,
        "dispute_over_train_flops": sum(r.dispute_flops for r in reports) / train,
        "settle_blocks_median": statistics.median(latency),
        "settle_vs_min_stages": statistics.median(latency) / min_blocks(cfg),
        "cheats": cheats,
        "cheats_caught_fraction": sum(r.cheats_caught for r in reports) / cheats if cheats else 1.0,
        "honest_stake_lost": sum(r.honest_stake_lost for r in reports),
        "jackpot_payouts": sum(r.jackpot_payouts for r in reports),
        "forced_errors": sum(r.forced_errors for r in reports),
        "invariants_held": all(r.ok for r in reports),
        "wall_s": sum(r.wall_s for r in reports),
    }


def main() -> None:
    seeds = range(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
    results: dict[tuple[str, int], dict[str, float]] = {}
    print(f"{'run':<10}{'nodes':>6}{'settled':>9}{'/sim h':>9}{'/wall min':>11}{'verif/train':>12}"
          f"{'goal':>6}{'disp/train':>11}{'end blk':>9}{'vs min':>8}{'caught':>11}{'honest lost':>12}"
          f"{'jackpots':>9}{'ok':>4}{'wall s':>8}")
    for label, n, extra in ROWS:
        cfg = MarketConfig(nodes=n, tasks=20, **extra)  # type: ignore[arg-type]
        reports = [run_market(MarketConfig(**{**cfg.__dict__, "seed": s})) for s in seeds]
        s = summarise(cfg, reports)
        results[(label, n)] = s
        print(f"{label:<10}{n:>6}{s['tasks_settled_fraction']:>9.2f}{s['tasks_per_sim_hour']:>9.0f}"
              f"{s['tasks_per_wall_min']:>11.1f}{s['verify_over_train_flops']:>12.3f}"
              f"{GOAL_VERIFY_FRACTION:>6.2f}{s['dispute_over_train_flops']:>11.4f}"
              f"{s['settle_blocks_median']:>9.1f}{s['settle_vs_min_stages']:>8.2f}"
              f"{s['cheats_caught_fraction']:>6.2f}({s['cheats']:>3}){s['honest_stake_lost']:>12}"
              f"{s['jackpot_payouts']:>9}{'y' if s['invariants_held'] else 'N':>4}{s['wall_s']:>8.1f}",
              flush=True)
    head = results[("byzantine", 32)]
    print(json.dumps({
        "tasks_settled_fraction": round(head["tasks_settled_fraction"], 4),
        "cheats_caught_fraction": round(head["cheats_caught_fraction"], 4),
        "honest_stake_lost": head["honest_stake_lost"],
        "tasks_per_wall_min_32": round(head["tasks_per_wall_min"], 2),
        "tasks_per_sim_hour_32": round(head["tasks_per_sim_hour"], 1),
        "verify_over_train_flops_32": round(head["verify_over_train_flops"], 4),
        "verify_goal": GOAL_VERIFY_FRACTION,
        "settle_vs_min_stages_32": round(head["settle_vs_min_stages"], 3),
        "jackpot_payouts_32": head["jackpot_payouts"],
        "invariants_held": all(bool(r["invariants_held"]) for r in results.values()),
    }))


if __name__ == "__main__":
    main()
