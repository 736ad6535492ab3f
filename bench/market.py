"""Market benchmark: throughput, verification overhead and latency of the task lifecycle.

Runs netsim/scenarios/market.py (real market rules and role machines, synthetic compute,
block-synchronous chain) at 16, 32 and 64 nodes, honest and with 25% Byzantine workers
plus a lazy verifier and a false challenger, over several seeds each. Side by side:

* tasks settled per simulated hour and per wall minute;
* verification overhead: FLOPs spent by verifiers, whistleblowers and arbiters over the
  solvers' training FLOPs (the network's whole cost of trust);
* submit-to-settle time (median, blocks) over the sum of the stages' minimum durations
  (`min_blocks`; disputes excluded, so the Byzantine ratio shows what disputes add);
* cheats caught, honest stake lost, jackpot payouts.

The last line is one JSON object; its headline figures are the Byzantine run at 32 nodes.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netsim.scenarios.market import MarketReport, MarketScenario, run_market

SEEDS = range(5)
SIZES = (16, 32, 64)


def min_blocks(sc: MarketScenario) -> int:
    """The lifecycle's floor with no dispute: 1 block to place, the fastest solver's training
    (no slack, whole blocks), 1 to elect verifiers after the proof, 1 from commit to reveal,
    then the challenge and forced-reveal windows."""
    p = sc.params
    fastest = 4 * 10**12
    train = -(-sc.gflops * 10**9 * 1_000 // (fastest * sc.block_ms))
    return 1 + train + 1 + 1 + p.challenge_window_blocks + p.forced_reveal_blocks


def summarise(sc: MarketScenario, reports: list[MarketReport]) -> dict[str, float]:
    tasks = sum(r.tasks for r in reports)
    settled = sum(r.settled for r in reports)
    sim_h = sum(r.sim_ms for r in reports) / 3_600_000
    wall_min = sum(r.wall_s for r in reports) / 60
    cheats = sum(r.cheats for r in reports)
    latency = [b for r in reports for b in r.submit_to_settle_blocks]
    return {
        "tasks_settled_fraction": settled / tasks,
        "tasks_per_sim_hour": settled / sim_h,
        "tasks_per_wall_min": settled / wall_min,
        "verify_over_train_flops": sum(r.verify_flops for r in reports)
        / sum(r.solver_flops for r in reports),
        "settle_blocks_median": statistics.median(latency),
        "settle_vs_min_stages": statistics.median(latency) / min_blocks(sc),
        "cheats": cheats,
        "cheats_caught_fraction": sum(r.cheats_caught for r in reports) / cheats if cheats else 1.0,
        "honest_stake_lost": sum(r.honest_stake_lost for r in reports),
        "jackpot_payouts": sum(r.jackpot_payouts for r in reports),
        "forced_errors": sum(r.forced_errors for r in reports),
        "supply_ok": all(r.supply_ok for r in reports),
    }


def main() -> None:
    results: dict[tuple[str, int], dict[str, float]] = {}
    print(f"{'run':<10}{'nodes':>6}{'settled':>9}{'/sim h':>9}{'/wall min':>11}{'verif/train':>12}"
          f"{'settle blk':>11}{'vs min':>8}{'caught':>10}{'honest lost':>12}{'jackpots':>9}")
    for label, byz in (("honest", {}), ("byzantine", {"byzantine_fraction": 0.25, "lazy_verifier": True,
                                                        "false_challenger": True})):
        for n in SIZES:
            sc = MarketScenario(nodes=n, **byz)  # type: ignore[arg-type]
            reports = [run_market(MarketScenario(**{**sc.__dict__, "seed": s})) for s in SEEDS]
            s = summarise(sc, reports)
            results[(label, n)] = s
            print(f"{label:<10}{n:>6}{s['tasks_settled_fraction']:>9.2f}{s['tasks_per_sim_hour']:>9.0f}"
                  f"{s['tasks_per_wall_min']:>11.0f}{s['verify_over_train_flops']:>12.3f}"
                  f"{s['settle_blocks_median']:>11.1f}{s['settle_vs_min_stages']:>8.2f}"
                  f"{s['cheats_caught_fraction']:>6.2f}({s['cheats']:>3}){s['honest_stake_lost']:>12}"
                  f"{s['jackpot_payouts']:>9}")
    head = results[("byzantine", 32)]
    print(json.dumps({
        "tasks_settled_fraction": round(head["tasks_settled_fraction"], 4),
        "cheats_caught_fraction": round(head["cheats_caught_fraction"], 4),
        "honest_stake_lost": head["honest_stake_lost"],
        "tasks_per_wall_min_32": round(head["tasks_per_wall_min"], 1),
        "tasks_per_sim_hour_32": round(head["tasks_per_sim_hour"], 1),
        "verify_over_train_flops_32": round(head["verify_over_train_flops"], 4),
        "settle_vs_min_stages_32": round(head["settle_vs_min_stages"], 3),
        "jackpot_payouts_32": head["jackpot_payouts"],
        "supply_conserved": all(r["supply_ok"] for r in results.values()),
    }))


if __name__ == "__main__":
    main()
