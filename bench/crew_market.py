"""Crew tasks through the whole market, measured: what verification costs a crew once
every role that checks it has run, and how long a crew task takes to settle.

Run: .venv/bin/python bench/crew_market.py [--seeds N]

Each run is a 16-node netsim market on real crews (`MarketConfig(workload="crew")`: a
2 x 2 crew of member processes, the 64-step crew task of netsim/scenarios/market/crew.py),
every role live: the crew is elected and trains, one verifier per member re-executes the
member's sampled segments, a whistleblower re-checks every REJECT and one drawn ACCEPT,
and disputed members are re-executed by every validator. Counted from the checks' own
results (member-steps each re-executed), not from declared FLOPs:

  crew_market_verify_fraction      member-steps re-executed by the elected verifiers over
                                   member-steps trained. Goal <= 0.05 (issue 14).
  crew_market_watch_fraction       the same for whistleblowers.
  crew_market_game_fraction        the same for the validators' games (each validator
                                   re-executes the disputed member: counted once per
                                   validator, as it is spent).
  crew_market_check_fraction       all three together: what checking a crew costs the
                                   network in all.
  crew_market_check_time_fraction  wall time of every crew check over the crew's training
                                   wall time.
  crew_market_cheats_caught        cheating members convicted over cheating members seated.
  crew_market_honest_slashed       honest parties that lost stake (goal 0).

Half the runs seat a cheating member (a Byzantine worker training its stage frozen).
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netsim.scenarios.market import MarketConfig, run_market

VERIFY_GOAL = 0.05


#: Draws a cheating run may take to seat its cheater.
MAX_DRAWS = 6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=4)
    args = ap.parse_args()
    trained = 0
    checked: dict[str, int] = {}
    train_s = check_s = 0.0
    cheats = caught = honest_slashed = 0
    wall = []
    runs = []
    for seed in range(1, args.seeds + 1):
        byzantine = 0.12 if seed % 2 else 0.0
        # A cheater the draw leaves out tests nothing about catching one: a cheating run
        # draws again (seed + 100, + 200, ...) until the crew seats it, and the runs that
        # did not still count as honest runs below.
        for attempt in range(MAX_DRAWS if byzantine else 1):
            draw = seed + 100 * attempt
            t0 = time.perf_counter()
            r = run_market(MarketConfig(seed=draw, nodes=16, tasks=1, compute="torch", workload="crew",
                                        byzantine_fraction=byzantine))
            wall.append(time.perf_counter() - t0)
            runs.append((draw, r, wall[-1]))
            if not byzantine or r.cheats:
                break
    for seed, r, wall_s in runs:
        trained += r.crew_trained_steps
        for duty, steps in r.crew_checked_steps.items():
            checked[duty] = checked.get(duty, 0) + steps
        train_s += r.crew_train_s
        check_s += sum(r.crew_check_s.values())
        cheats, caught = cheats + r.cheats, caught + r.cheats_caught
        honest_slashed += sum(1 for n in r.nodes if n.role == "worker" and n.slashed)
        (task,) = r.tasks
        print(f"seed {seed}: {task.status} {task.outcome}, {r.crew_trained_steps} member-steps trained, "
              f"checks {r.crew_checked_steps}, cheats {r.cheats_caught}/{r.cheats}, {wall_s:.0f} s wall, "
              f"invariants {'held' if all(r.invariants.values()) else r.invariants}", flush=True)
    frac = {duty: steps / max(1, trained) for duty, steps in checked.items()}
    verify = frac.get("verify", 0.0) + frac.get("recheck", 0.0)
    print(f"verifiers re-executed {verify:.4f} of the crews' member-steps (goal <= {VERIFY_GOAL}); "
          f"whistleblowers {frac.get('check', 0.0):.4f}; validators' games {frac.get('crewgame', 0.0):.4f}; "
          f"check time / train time {check_s / max(1e-9, train_s):.4f}")
    print(json.dumps({
        "crew_market_verify_fraction": round(verify, 4),
        "crew_market_watch_fraction": round(frac.get("check", 0.0), 4),
        "crew_market_game_fraction": round(frac.get("crewgame", 0.0), 4),
        "crew_market_check_fraction": round(sum(frac.values()), 4),
        "crew_market_check_time_fraction": round(check_s / max(1e-9, train_s), 4),
        "crew_market_cheats_caught": f"{caught}/{cheats}",
        "crew_market_honest_slashed": honest_slashed,
        "crew_market_wall_s_per_task": round(sum(wall) / len(wall), 1),
        "seeds": args.seeds,
        "runs": len(runs),
    }))


if __name__ == "__main__":
    main()
