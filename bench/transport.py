"""Real-network gossip benchmark: a multi-process py-libp2p swarm on loopback.

Measures, side by side in one run:
  * gossip delivery latency p50/p99 in an N-process swarm vs the hop-count bound
    (eccentricity of the publisher in the connection graph x the one-hop p50 measured
    between two processes in the same run);
  * CPU per delivered message (all processes' CPU during the publish phase minus their
    idle CPU, over deliveries) vs the cost of `open_envelope` (decode + verify) alone;
  * messages per second one node sustains receiving from one publisher;
  * the idle RSS of a validator daemon (one `polnet node run` process of a one-node
    chain, IDLE_RSS_WAIT_S after it reports ready).

The last line is one JSON object of headline figures.
Usage: .venv/bin/python bench/transport.py [--nodes 12] [--msgs 20] [--publishers 3]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import networkx as nx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.transport.procswarm import ProcSwarm
from protocol.commands import TOPIC_TXS
from protocol.envelope import open_envelope, seal
from protocol.identity import Keypair
from protocol.messages import Ping

CHAIN = "devnet"
IDLE_WINDOW_S = 3.0
#: A fresh swarm spends seconds of CPU after meshing (imports finishing, dials, peer
#: records, mesh grafts): idle CPU is measured only once two windows in a row agree.
SETTLE_TOLERANCE_CPU_S = 0.02
SETTLE_MAX_S = 60.0
IDLE_RSS_WAIT_S = 10.0


def idle_daemon_rss_mb() -> float:
    """RSS of an idle validator daemon (its own process, committing blocks alone)."""
    import tempfile

    from node.adversary.harness import LocalNet

    with tempfile.TemporaryDirectory(prefix="bench-rss-") as root, LocalNet(Path(root) / "net", 1) as net:
        net.start()
        time.sleep(IDLE_RSS_WAIT_S)
        return net.nodes[0].rss_kb() / 1024


def decode_verify_s(n: int = 3000) -> float:
    """CPU seconds for one open_envelope of a gossip-sized Ping (decode + verify)."""
    raw = seal(Ping(time.time_ns()), Keypair.derive("bench"), CHAIN)
    open_envelope(raw, CHAIN)
    t0 = time.process_time()
    for _ in range(n):
        open_envelope(raw, CHAIN)
    return (time.process_time() - t0) / n


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wait_for_mesh(sw: ProcSwarm, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    for i in range(sw.n):
        while sw.stats(i)["mesh"][TOPIC_TXS] < 1:
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {i} formed no mesh")
            time.sleep(0.2)


def latencies(events: list[dict]) -> list[float]:
    return [(e["at_ns"] - e["nonce"]) / 1e6 for e in events]


def settled_idle_cpu(sw: ProcSwarm) -> tuple[float, list[dict]]:
    """The swarm's idle CPU seconds per second once it has settled, and the last stats.

    Measured right after meshing, the 'idle' CPU is still start-up work (ten times the
    settled figure), and subtracting it made the busy CPU per message negative."""
    deadline = time.monotonic() + SETTLE_MAX_S
    stats = [sw.stats(i) for i in range(sw.n)]
    last = math.inf
    while True:
        time.sleep(IDLE_WINDOW_S)
        now = [sw.stats(i) for i in range(sw.n)]
        rate = sum(b["cpu_s"] - a["cpu_s"] for a, b in zip(stats, now)) / IDLE_WINDOW_S
        stats = now
        if abs(rate - last) <= SETTLE_TOLERANCE_CPU_S or time.monotonic() > deadline:
            return rate, stats
        last = rate


def two_node_phase(rate_msgs: int) -> dict[str, float]:
    """One-hop latency at a gentle rate, then the receive rate under a flood."""
    with ProcSwarm(2, "bench-pair", CHAIN, seeds=1) as sw:
        sw.start(120)
        wait_for_mesh(sw)
        sw.send(0, "publish 40 20")
        one_hop = latencies(sw.collect(1, lambda e: e["event"] == "recv", 40, 60))
        cpu0 = sw.stats(1)["cpu_s"]
        sw.send(0, f"publish {rate_msgs} 5000")
        got = sw.collect(1, lambda e: e["event"] == "recv", rate_msgs, 120)
        cpu1 = sw.stats(1)["cpu_s"]
    span_s = (got[-1]["at_ns"] - got[0]["at_ns"]) / 1e9 if len(got) > 1 else float("inf")
    return {
        "one_hop_p50_ms": statistics.median(one_hop),
        "one_hop_n": len(one_hop),
        "flood_received": len(got),
        "msgs_per_s": (len(got) - 1) / span_s,
        "receiver_cpu_per_msg_ms": 1000 * (cpu1 - cpu0) / max(1, len(got)),
    }


def swarm_phase(n: int, msgs: int, publishers: int, rate: float) -> dict[str, float]:
    with ProcSwarm(n, "bench-swarm", CHAIN) as sw:
        t0 = time.monotonic()
        sw.start(180)
        wait_for_mesh(sw)
        startup_s = time.monotonic() - t0
        idle_cpu_per_s, stats1 = settled_idle_cpu(sw)
        pubs = [round(k * n / publishers) for k in range(publishers)]
        graph = nx.Graph()
        keys = {sw.keys[i].public.hex(): i for i in range(n)}
        for i, st in enumerate(stats1):
            graph.add_edges_from((i, keys[p]) for p in st["peers"] if p in keys)
        hops = max(max(nx.single_source_shortest_path_length(graph, p).values()) for p in pubs)
        t_pub = time.monotonic()
        for p in pubs:
            sw.send(p, f"publish {msgs} {rate}")
        lat: list[float] = []
        delivered = 0
        for i in range(n):
            want = msgs * sum(1 for p in pubs if p != i)
            got = sw.collect(i, lambda e: e["event"] == "recv", want, 120)
            delivered += len(got)
            lat += latencies(got)
        elapsed = time.monotonic() - t_pub
        stats2 = [sw.stats(i) for i in range(n)]
        busy_cpu = sum(b["cpu_s"] - a["cpu_s"] for a, b in zip(stats1, stats2)) - idle_cpu_per_s * elapsed
        expected = msgs * len(pubs) * (n - 1)
    return {
        "nodes": n,
        "startup_s": startup_s,
        "hops": hops,
        "delivered": delivered,
        "expected": expected,
        "p50_ms": statistics.median(lat),
        "p99_ms": pct(lat, 0.99),
        "cpu_per_msg_ms": 1000 * busy_cpu / max(1, delivered),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=12)
    ap.add_argument("--msgs", type=int, default=10, help="messages per publisher in the swarm")
    ap.add_argument("--publishers", type=int, default=3)
    ap.add_argument("--rate", type=float, default=0.5, help="messages/s per publisher: keep the swarm "
                    "below saturation, so latency measures the network rather than CPU queueing")
    ap.add_argument("--flood", type=int, default=500, help="messages in the one-node throughput flood")
    args = ap.parse_args()

    dv_ms = 1000 * decode_verify_s()
    pair = two_node_phase(args.flood)
    swarm = swarm_phase(args.nodes, args.msgs, args.publishers, args.rate)
    hop_bound_ms = swarm["hops"] * pair["one_hop_p50_ms"]
    rss_mb = idle_daemon_rss_mb()

    print(f"decode+verify alone: {dv_ms:.3f} ms CPU")
    print(f"one hop (2 processes): p50 {pair['one_hop_p50_ms']:.1f} ms over {pair['one_hop_n']} msgs")
    print(f"one node receiving a flood: {pair['msgs_per_s']:.0f} msg/s "
          f"({pair['flood_received']}/{args.flood} received), "
          f"{pair['receiver_cpu_per_msg_ms']:.2f} ms CPU/msg = "
          f"{pair['receiver_cpu_per_msg_ms'] / dv_ms:.1f}x decode+verify")
    print(f"swarm: {swarm['nodes']} processes up and meshed in {swarm['startup_s']:.1f} s; "
          f"delivered {swarm['delivered']}/{swarm['expected']}")
    print(f"  latency p50 {swarm['p50_ms']:.1f} ms, p99 {swarm['p99_ms']:.1f} ms; "
          f"hop bound {swarm['hops']} hops x {pair['one_hop_p50_ms']:.1f} ms = {hop_bound_ms:.1f} ms; "
          f"p99/bound = {swarm['p99_ms'] / hop_bound_ms:.2f}")
    print(f"  CPU per delivered message (all processes, idle subtracted) {swarm['cpu_per_msg_ms']:.2f} ms "
          f"= {swarm['cpu_per_msg_ms'] / dv_ms:.1f}x decode+verify")
    print(f"idle validator daemon: RSS {rss_mb:.0f} MB {IDLE_RSS_WAIT_S:.0f} s after ready")
    print(json.dumps({
        "nodes": swarm["nodes"],
        "p50_ms": round(swarm["p50_ms"], 2),
        "p99_ms": round(swarm["p99_ms"], 2),
        "one_hop_p50_ms": round(pair["one_hop_p50_ms"], 2),
        "hops": swarm["hops"],
        "p99_vs_hop_bound": round(swarm["p99_ms"] / hop_bound_ms, 2),
        "cpu_per_msg_ms": round(swarm["cpu_per_msg_ms"], 3),
        "decode_verify_ms": round(dv_ms, 4),
        "cpu_per_msg_vs_decode_verify": round(swarm["cpu_per_msg_ms"] / dv_ms, 1),
        "msgs_per_s_one_node": round(pair["msgs_per_s"], 1),
        "delivery_ratio": round(swarm["delivered"] / swarm["expected"], 4),
        "idle_rss_mb": round(rss_mb, 1),
    }))


if __name__ == "__main__":
    main()
