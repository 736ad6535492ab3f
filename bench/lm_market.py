"""The issue's character transformer trained through the market, end to end in netsim.

Run: .venv/bin/python bench/lm_market.py [--size full|small] [--png PATH]

A 10-node netsim market (Tendermint, the ledger with the market, every role) on real
torch: one task, the 4-block, d_model 128, context 128 byte-level transformer on the
built-in corpus (Python's own documentation), 1024 steps in 64 segments. It is elected,
trained by the solver's engine, proven, verified segment by segment, and settled; then
the final checkpoint is read back from the committed proof (every tensor checked against
the root) and evaluated on the held-out split. Prints held-out bits per byte against the
split's unigram entropy (the goal: at least 40% below), the verification FLOPs against
training, wall time, and two samples. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# The repository's netsim package, not bench/netsim.py beside this script.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netsim.scenarios.market import MarketConfig, run_market
from netsim.scenarios.market.lm import write_curve


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="full", choices=("full", "small"))
    ap.add_argument("--png", type=Path, default=None, help="write the loss curve here")
    args = ap.parse_args()
    t0 = time.perf_counter()
    r = run_market(MarketConfig(seed=1, nodes=10, tasks=1, compute="torch", workload="lm", lm_size=args.size))
    wall = time.perf_counter() - t0
    (outcome,) = r.lm
    if args.png is not None and outcome.settled_valid:
        write_curve(outcome, args.png)
    for prompt, text in outcome.samples.items():
        print(f"--- sampled from {prompt!r}:\n{text}\n")
    print(f"task {r.tasks[0].status} {r.tasks[0].outcome}; held-out {outcome.val_bits_per_byte} bits/byte vs "
          f"unigram {outcome.unigram_bits_per_byte}; {wall:.0f} s wall")
    print(json.dumps({
        "lm_market_settled_valid": outcome.settled_valid,
        "lm_market_val_bits_per_byte": outcome.val_bits_per_byte,
        "lm_market_unigram_bits_per_byte": outcome.unigram_bits_per_byte,
        "lm_market_below_unigram": outcome.below_unigram,
        "lm_market_verify_vs_train_flops": round(r.verify_flops / max(1, r.solver_flops), 4),
        "lm_market_wall_s": round(wall, 1),
        "invariants_held": r.ok,
    }))


if __name__ == "__main__":
    main()
