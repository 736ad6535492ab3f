"""The daemon under attack: block rate and memory of honest validators, attack by attack.

Four validator daemons (separate `polnet node run` processes on loopback) run a chain;
each attack of node/adversary/attacks.py runs for a window from a fresh attacker
process (a stock py-libp2p host with a funded key of its own: a fresh key per attack,
since the previous one is banned by then), with quiet windows before, between and
after. Reported per attack, side by side in the same run: the honest nodes' block rate
(the slowest node's) over that of the quiet windows on either side, and the worst
node's peak RSS over its RSS in the quiet window before. Honest bans (any node banning
an honest node, itself included) are counted and must be zero.

The last line is one JSON object: min_block_rate_vs_baseline, max_rss_vs_baseline,
honest_bans, and the per-attack figures.
Usage: .venv/bin/python bench/adversary.py [--window 60] [--quiet 20] [--attacks a,b]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.adversary.attacks import ATTACKS
from node.adversary.harness import LocalNet, run_suite
from protocol.identity import Keypair

BLOB_BYTES = 32 * 1024 * 1024


def attacker_keys(n: int) -> list[Keypair]:
    return [Keypair.derive(f"bench-adversary/{i}") for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--window", type=float, default=60.0, help="seconds per attack")
    ap.add_argument("--quiet", type=float, default=20.0,
                    help="seconds without attack before, between and after the attacks")
    ap.add_argument("--attacks", default=",".join(ATTACKS))
    ap.add_argument("--block-interval-ms", type=int, default=500)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    names = [a for a in args.attacks.split(",") if a]
    unknown = [a for a in names if a not in ATTACKS]
    if unknown:
        raise SystemExit(f"unknown attacks {unknown}; known: {', '.join(ATTACKS)}")

    root = args.dir or Path(tempfile.mkdtemp(prefix="polnet-adversary-"))
    keys = attacker_keys(len(names))
    blob = bytes(range(256)) * (BLOB_BYTES // 256)
    net = LocalNet(root / "net", args.nodes, block_interval_ms=args.block_interval_ms, attackers=keys,
                   blob=blob)
    with net:
        t0 = time.monotonic()
        net.start()
        net.wait_height(3, 120)
        print(f"{args.nodes} daemons up and at height 3 in {time.monotonic() - t0:.1f} s ({root})")
        assert net.blob_digest is not None
        blob_arg = f"{net.blob_digest.hex()}:{len(blob)}"
        plan = list(zip(names, keys, strict=True))
        quiet, results = run_suite(net, plan, args.window, args.quiet, blob_arg, log_dir=root, report=print)
        bans = net.honest_bans()
        attackers_banned = {k.node_id for k in keys} & {b for d in net.nodes for b in d.banned()}
    q_blocks, q_seconds = sum(w.blocks for w in quiet), sum(w.seconds for w in quiet)
    print(f"quiet windows: {q_blocks} blocks in {q_seconds:.0f} s = {q_blocks / q_seconds:.2f} blocks/s; "
          f"RSS before the first attack {', '.join(str(r // 1024) for r in quiet[0].rss_kb)} MB")
    per_attack: dict[str, dict[str, Any]] = {}
    for r in results:
        per_attack[r.attack] = {"block_rate_vs_baseline": round(r.rate_ratio, 3), "rss_vs_baseline":
                                round(r.rss_ratio, 3), "blocks_per_s": round(r.window.rate, 3),
                                "baseline_blocks_per_s": round(r.baseline_rate, 3),
                                "sent": r.attacker.get("published", 0) + r.attacker.get("direct_sent", 0),
                                "blob_streams": r.attacker.get("blob_streams", 0)}
        print(f"{r.attack:>13}: {r.window.rate:.2f} blocks/s vs {r.baseline_rate:.2f} in the quiet windows "
              f"around it = {r.rate_ratio:.2f}x; peak RSS {r.rss_ratio:.2f}x pre-attack; "
              f"attacker sent {per_attack[r.attack]['sent']}")
    print(f"honest nodes banned: {bans or 'none'}; attackers banned: {len(attackers_banned)}/{len(keys)}")
    print(json.dumps({
        "nodes": args.nodes,
        "window_s": args.window,
        "quiet_s": args.quiet,
        "baseline_blocks_per_s": round(q_blocks / q_seconds, 3),
        "min_block_rate_vs_baseline": round(min(r.rate_ratio for r in results), 3),
        "max_rss_vs_baseline": round(max(r.rss_ratio for r in results), 3),
        "honest_bans": len(bans),
        "attackers_banned": len(attackers_banned),
        "attacks": per_attack,
    }))


if __name__ == "__main__":
    main()
