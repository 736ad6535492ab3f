"""Restart benchmark on real daemons: how fast the chain resumes after restarts, how fast
discovery finds every node, and whether a restart's ready time grows with the chain.

Run: .venv/bin/python bench/restart.py [--quick]

* worst_resume_s: a network of 4 validator daemons (separate processes, each told of one
  other only) goes through every order of a full restart (24 orders, kill -9 and
  SIGTERM alternating, the nodes started 2 s apart); resume is the time from the last
  start until every node has committed 5 blocks past the height before the stop. Printed
  beside the 30 s bound. `--quick`: 4 orders instead of 24.
* discovery_s: 12 transport processes (`python -m node.transport.peer`), every one told
  of node 0 only; the time from all of them listening until every node knows every other
  (connected or in its peer book). Beside it, the time until each is *connected* to all
  11 others when its target peer count allows that many.
* restart_ready_ratio_500_vs_50: one validator daemon runs to height 50 and another to
  height 500; each is killed with -9 and restarted, interleaved, and the time from spawn
  to "ready" (endpoints written) is compared. Beside it the in-process chain restore
  time (snapshot + blocks after it) against a replay from genesis of the same database.

The last line is one JSON object with the three headline keys (and the side figures).
`measure_restart_ready_ratio()` (a float) is importable for bench/disputes.py;
`measure_restart_ready()` returns it with its parts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cli.swarm_restarts import LocalNet, every_order, run_plan
from node.daemon.chain import Chain, read_genesis
from node.daemon.keyfile import load_key_file
from node.daemon.layout import layout_localnet
from node.datadir import DataDir
from node.transport.procswarm import ProcSwarm

RESUME_BOUND_S = 30.0
STAGGER_S = 2.0
DISCOVERY_NODES = 12
READY_TRIALS = 3
SHORT, LONG = 50, 500


# --- resume after restarts -------------------------------------------------------------------------


def measure_worst_resume(orders: int | None = None, stagger_s: float = STAGGER_S) -> dict[str, Any]:
    """Every (or the first `orders`) restart order of 4 validators, one network."""
    root = Path(tempfile.mkdtemp(prefix="bench-restart-"))
    dirs = layout_localnet(root / "net", 4, chain_id="bench-restart", block_interval_ms=500,
                           bootstrap_one=True)
    net = LocalNet(dirs)
    plans = every_order(4, stagger_s)[: orders or None]
    results = []
    try:
        net.start_all()
        net.wait_ready()
        mesh_s = net.wait_for(lambda: all((n.status() or {}).get("peers") == 3 for n in net.nodes), 90,
                              "a full mesh")
        net.wait_height(3)
        for plan in plans:
            r = run_plan(net, plan, timeout=RESUME_BOUND_S * 4)
            print(f"  {r.label:14s} resume {r.resume_s:6.2f} s  (restart took {r.restart_s:5.2f} s)",
                  flush=True)
            results.append(r.resume_s)
    finally:
        net.close()
        shutil.rmtree(root, ignore_errors=True)
    return {
        "worst_resume_s": max(results),
        "median_resume_s": round(statistics.median(results), 2),
        "orders": len(results),
        "mesh_s": round(mesh_s, 2),
    }


# --- discovery ---------------------------------------------------------------------------------------


def _until_all(sw: ProcSwarm, pred: Any, timeout_s: float) -> float:
    t0 = time.monotonic()
    pending = set(range(sw.n))
    while pending:
        for i in sorted(pending):
            if pred(sw.stats(i)):
                pending.discard(i)
        if pending and time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"nodes {sorted(pending)} did not get there in {timeout_s} s")
        if pending:
            time.sleep(0.2)
    return time.monotonic() - t0


def measure_discovery(n: int = DISCOVERY_NODES) -> dict[str, Any]:
    others = n - 1
    with ProcSwarm(n, label="bench-disc", hub=True) as sw:
        sw.start(timeout_s=180)
        known_s = _until_all(sw, lambda st: st["known"] >= others, 120)
    with ProcSwarm(n, label="bench-mesh", hub=True, target_peers=others) as sw:
        sw.start(timeout_s=180)
        mesh_s = _until_all(sw, lambda st: len(st["peers"]) >= others, 120)
    return {"discovery_s": round(known_s, 2), "full_mesh_s": round(mesh_s, 2), "discovery_nodes": n}


# --- ready time after kill -9 -------------------------------------------------------------------------


def _grow(net: LocalNet, height: int) -> int:
    net.start(0)
    net.wait_ready([0])
    net.wait_for(lambda: net.heights()[0] >= height, 600, f"height {height}")
    net.stop(0, signal.SIGKILL)
    return height


def _ready_s(net: LocalNet) -> tuple[float, int]:
    t0 = time.monotonic()
    net.start(0)
    net.wait_ready([0])
    ready = time.monotonic() - t0
    height = net.heights()[0]
    net.stop(0, signal.SIGKILL)
    return ready, height


def _restore_s(dd: DataDir, from_genesis: bool) -> float:
    """Chain.open on a copy of the node's database (optionally without its snapshots)."""
    work = Path(tempfile.mkdtemp(prefix="bench-restore-"))
    try:
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(dd.chain_db) + suffix)
            if src.exists():
                shutil.copy(src, work / f"chain.sqlite{suffix}")
        if from_genesis:
            db = sqlite3.connect(work / "chain.sqlite")
            with db:
                db.execute("DELETE FROM consensus_snapshots")
            db.close()
        genesis, key = read_genesis(dd.genesis), load_key_file(dd.node_key)
        t0 = time.monotonic()
        chain = Chain.open(genesis, key, work / "chain.sqlite", 500)
        took = time.monotonic() - t0
        chain.store.close()
        return took
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure_restart_ready_ratio(trials: int = READY_TRIALS) -> float:
    """restart_ready_ratio_500_vs_50: ready time after kill -9 of a daemon at height 500
    over one at height 50 (medians of interleaved trials). Goal: <= 1.5."""
    ratio: float = measure_restart_ready(trials)["restart_ready_ratio_500_vs_50"]
    return ratio


def measure_restart_ready(trials: int = READY_TRIALS, short: int = SHORT, long: int = LONG) -> dict[str, Any]:
    """The ratio with its parts: ready times, heights, and the in-process restore times
    (from the snapshot, and a replay from genesis of the same database) beside it."""
    root = Path(tempfile.mkdtemp(prefix="bench-ready-"))
    try:
        a = LocalNet(layout_localnet(root / "short", 1, chain_id="bench-ready", block_interval_ms=1))
        b = LocalNet(layout_localnet(root / "long", 1, chain_id="bench-ready", block_interval_ms=1))
        try:
            _grow(a, short)
            _grow(b, long)
            ready: dict[str, list[float]] = {"short": [], "long": []}
            heights: dict[str, int] = {}
            for _ in range(trials):
                for name, net in (("short", a), ("long", b)):
                    took, heights[name] = _ready_s(net)
                    ready[name].append(took)
        finally:
            a.close()
            b.close()
        r_short, r_long = statistics.median(ready["short"]), statistics.median(ready["long"])
        restore_short = _restore_s(a.nodes[0].datadir, from_genesis=False)
        restore_long = _restore_s(b.nodes[0].datadir, from_genesis=False)
        replay_long = _restore_s(b.nodes[0].datadir, from_genesis=True)
        return {
            "restart_ready_ratio_500_vs_50": round(r_long / r_short, 3),
            "ready_s_50": round(r_short, 2),
            "ready_s_500": round(r_long, 2),
            "heights": [heights["short"], heights["long"]],
            "restore_s_50": round(restore_short, 3),
            "restore_s_500": round(restore_long, 3),
            "replay_from_genesis_s_500": round(replay_long, 3),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 restart orders instead of 24, 1 ready trial")
    args = ap.parse_args()
    out: dict[str, Any] = {}

    print("ready time after kill -9 (one validator daemon), medians of interleaved trials:", flush=True)
    ready = measure_restart_ready(trials=1 if args.quick else READY_TRIALS)
    print(f"  height {ready['heights'][0]:4d}: ready {ready['ready_s_50']:6.2f} s, "
          f"chain restore {ready['restore_s_50']:.3f} s")
    print(f"  height {ready['heights'][1]:4d}: ready {ready['ready_s_500']:6.2f} s, "
          f"chain restore {ready['restore_s_500']:.3f} s "
          f"(replay from genesis: {ready['replay_from_genesis_s_500']:.3f} s)")
    print(f"  ready ratio 500 / 50: {ready['restart_ready_ratio_500_vs_50']:.3f} (goal <= 1.5); "
          f"restore from snapshot / replay from genesis at 500: "
          f"{ready['restore_s_500'] / max(ready['replay_from_genesis_s_500'], 1e-9):.3f}")
    out.update(ready)

    print(f"discovery: {DISCOVERY_NODES} transport processes, each told of node 0 only:", flush=True)
    disc = measure_discovery()
    print(f"  every node knows every other after {disc['discovery_s']:.2f} s; connected to all "
          f"{DISCOVERY_NODES - 1} (target {DISCOVERY_NODES - 1}) after {disc['full_mesh_s']:.2f} s")
    out.update(disc)

    print("restart orders of 4 validator daemons (each told of one other), staggered 2 s:", flush=True)
    res = measure_worst_resume(orders=4 if args.quick else None)
    print(f"  worst resume {res['worst_resume_s']:.2f} s over {res['orders']} orders "
          f"(median {res['median_resume_s']:.2f} s); bound {RESUME_BOUND_S:.0f} s: "
          f"worst / bound = {res['worst_resume_s'] / RESUME_BOUND_S:.3f}")
    out.update(res)
    out["worst_resume_vs_bound"] = round(res["worst_resume_s"] / RESUME_BOUND_S, 3)
    print(json.dumps(out, sort_keys=False))


if __name__ == "__main__":
    main()
