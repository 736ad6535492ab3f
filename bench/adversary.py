"""The daemon under attack: block rate and memory of honest validators, attack by attack.

Four validator daemons (separate `polnet node run` processes on loopback) run a chain;
after a baseline window without any attack, each attack of node/adversary/attacks.py
runs for a window from a fresh attacker process (a stock py-libp2p host with a funded
key of its own: a fresh key per attack, since the previous one is banned by then),
side by side in the same run. Reported per attack: the honest nodes' block rate (the
slowest node's) over the baseline's, and each node's peak RSS over its RSS right
before the attacks. Honest bans (any node banning an honest node, itself included)
are counted and must be zero.

The last line is one JSON object: min_block_rate_vs_baseline, max_rss_vs_baseline,
honest_bans, and the per-attack figures.
Usage: .venv/bin/python bench/adversary.py [--window 60] [--baseline 60] [--attacks a,b]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.adversary.attacks import ATTACKS
from node.adversary.harness import AttackerProc, LocalNet, measure
from protocol.identity import Keypair

BLOB_BYTES = 32 * 1024 * 1024


def attacker_keys(n: int) -> list[Keypair]:
    return [Keypair.derive(f"bench-adversary/{i}") for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--window", type=float, default=60.0, help="seconds per attack")
    ap.add_argument("--baseline", type=float, default=60.0, help="seconds without attack")
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
    results: dict[str, dict[str, float]] = {}
    with net:
        t0 = time.monotonic()
        net.start()
        net.wait_height(3, 120)
        print(f"{args.nodes} daemons up and at height 3 in {time.monotonic() - t0:.1f} s ({root})")
        base = measure(net, "baseline", args.baseline)
        pre_rss = [max(1, r) for r in base.rss_kb]
        print(f"baseline: {base.blocks} blocks in {base.seconds:.1f} s = {base.rate:.2f} blocks/s; "
              f"RSS {', '.join(f'{r // 1024}' for r in pre_rss)} MB")
        assert net.blob_digest is not None
        blob_arg = f"{net.blob_digest.hex()}:{len(blob)}"
        for name, key in zip(names, keys, strict=True):
            log = root / f"attacker-{name}.log"
            with AttackerProc(key, net.chain_id, net.addrs(), blob_arg, log=log) as a:
                w = measure(net, name, args.window, during=lambda a=a, name=name: a.run(name, args.window))
                done = a.finished(args.window + 30)
            rss_ratio = max(r / p for r, p in zip(w.rss_kb, pre_rss, strict=True))
            results[name] = {"block_rate_vs_baseline": round(w.rate / base.rate, 3) if base.rate else 0.0,
                             "rss_vs_baseline": round(rss_ratio, 3), "blocks": w.blocks,
                             "sent": done.get("published", 0) + done.get("direct_sent", 0)}
            print(f"{name:>13}: {w.blocks} blocks in {w.seconds:.1f} s = {w.rate:.2f} blocks/s "
                  f"({results[name]['block_rate_vs_baseline']:.2f}x baseline); peak RSS "
                  f"{rss_ratio:.2f}x pre-attack; attacker sent {results[name]['sent']:.0f}")
        bans = net.honest_bans()
        attackers_banned = {k.node_id for k in keys} & {b for d in net.nodes for b in d.banned()}
    print(f"honest nodes banned: {bans or 'none'}; attackers banned: {len(attackers_banned)}/{len(keys)}")
    print(json.dumps({
        "nodes": args.nodes,
        "window_s": args.window,
        "baseline_blocks_per_s": round(base.rate, 3),
        "min_block_rate_vs_baseline": min(r["block_rate_vs_baseline"] for r in results.values()),
        "max_rss_vs_baseline": max(r["rss_vs_baseline"] for r in results.values()),
        "honest_bans": len(bans),
        "attackers_banned": len(attackers_banned),
        "attacks": results,
    }))


if __name__ == "__main__":
    main()
