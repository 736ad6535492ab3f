"""Consensus benchmark in netsim: commit latency vs the 3-delay ideal, committed tx/s
with signature verification vs raw ed25519 verify, simulated seconds per wall second.

Run: .venv/bin/python bench/consensus.py [--quick]

* Latency: 4, 16 and 64 equal validators, no faults, every link 50 ms + 0..4 ms uniform
  jitter. Tendermint needs three one-way delays per block (proposal, prevote, precommit),
  so the ideal block time is 3 x the mean one-way delay (52 ms). The measured figure is
  the steady-state time between consecutive commits at each node (the next proposer
  proposes the moment it commits, so this is the commit latency of every block).
* Throughput: 4 validators running the real ledger; pre-signed Transfer envelopes are
  gossiped into the mempools. Every node verifies every tx signature itself (ledger
  check_tx; the simulator also opens each envelope once). All nodes share one core here,
  so one node's rate is committed tx / (wall time / nodes); that is compared with the
  raw ed25519 verify rate measured in the same run.
* The last line is one JSON object with the headline figures.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netsim import NetworkConfig, Sim
from netsim.scenarios.consensus import (
    GENESIS_BALANCE,
    STAKE_UNIT,
    ConsensusScenario,
    Observations,
    run_scenario,
)
from protocol.chain_params import chain_preset
from protocol.commands import TOPIC_TXS, MessageReceived
from protocol.consensus.tendermint import TimeoutConfig
from protocol.envelope import seal
from protocol.identity import Keypair, verify
from protocol.ledger.genesis import Genesis, GenesisAccount
from protocol.ledger.ledger import Ledger
from protocol.ledger.txs import Transfer

LATENCY_MS, JITTER_MS = 50, 4
IDEAL_MS = 3 * (LATENCY_MS + JITTER_MS / 2)
#: Generous timeouts: on the happy path no timeout ever fires, so they cost nothing.
TIMEOUTS = TimeoutConfig(propose_ms=1000, prevote_ms=1000, precommit_ms=1000, delta_ms=500, max_ms=10_000)


def raw_verify_rate(seconds: float = 1.0) -> float:
    key = Keypair.derive("bench/raw")
    msg = b"\x42" * 32
    sig = key.sign(msg)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(200):
            verify(key.public, sig, msg)
        n += 200
    return n / (time.perf_counter() - t0)


def block_interval_ms(obs: Observations, nodes: int, skip: int = 2) -> float:
    """Mean steady-state time between consecutive commits, over nodes and heights."""
    gaps: list[int] = []
    heights = sorted(obs.commit_times)
    for h in heights[skip:]:
        prev = obs.commit_times.get(h - 1, {})
        for node, t in obs.commit_times[h].items():
            if node in prev:
                gaps.append(t - prev[node])
    return statistics.fmean(gaps)


def latency_row(n: int, duration_ms: int) -> dict[str, Any]:
    sc = ConsensusScenario(
        seed=1,
        powers=(1,) * n,
        duration_ms=duration_ms,
        network=NetworkConfig(latency_ms=LATENCY_MS, jitter_ms=JITTER_MS),
        timeouts=TIMEOUTS,
        rebroadcast_ms=5_000,
    )
    t0 = time.perf_counter()
    report, obs = run_scenario(sc)
    wall = time.perf_counter() - t0
    interval = block_interval_ms(obs, n)
    return {
        "validators": n,
        "heights": max(obs.height_of(i) for i in range(n)),
        "block_ms": interval,
        "vs_ideal": interval / IDEAL_MS,
        "sim_s_per_wall_s": report.virtual_ms / 1000 / wall,
        "wall_s": wall,
    }


def throughput(
    n: int = 4, senders: int = 200, per_sender: int = 12, duration_ms: int = 3_000
) -> dict[str, Any]:
    sc = ConsensusScenario(
        seed=2,
        powers=(1,) * n,
        duration_ms=duration_ms,
        network=NetworkConfig(latency_ms=LATENCY_MS, jitter_ms=JITTER_MS),
        timeouts=TIMEOUTS,
        rebroadcast_ms=5_000,
        app="ledger",
    )
    clients = [Keypair.derive(f"bench/client/{i}") for i in range(senders)]
    from netsim import node_keys

    keys = node_keys(sc.sim_config())
    params = chain_preset("devnet").ledger.replace(epoch_length=sc.epoch_length)
    accounts = tuple(GenesisAccount(k.public, GENESIS_BALANCE, STAKE_UNIT) for k in keys) + tuple(
        GenesisAccount(c.public, GENESIS_BALANCE, 0) for c in clients
    )
    genesis = Genesis(sc.sim_config().chain_id, params, 0, accounts)
    chain = sc.sim_config().chain_id
    txs = [
        seal(Transfer(keys[0].public, 1, nonce, params.base_fee), c, chain)
        for nonce in range(per_sender)
        for c in clients
    ]

    obs = Observations()
    done_wall: list[float] = []
    t0 = time.perf_counter()

    def inject(sim: Sim) -> None:
        for raw in txs:
            sim.publish_raw(0, TOPIC_TXS, raw)
            sim.inject(0, MessageReceived(TOPIC_TXS, b"", None, raw))

    def probe(sim: Sim) -> None:
        """Stop the clock when every node has committed every offered tx."""
        if all(obs.tx_counts.get(i, 0) >= len(txs) for i in range(n)):
            done_wall.append(time.perf_counter() - t0)
        else:
            sim.call_at(sim.now + 10, probe)

    def setup(sim: Sim) -> None:
        sim.call_at(1, inject)
        sim.call_at(2, probe)

    report, _ = run_scenario(sc, app_factory=lambda vals: Ledger.from_genesis(genesis), setup=setup, obs=obs)
    wall = done_wall[0] if done_wall else time.perf_counter() - t0
    committed = min(obs.tx_counts.get(i, 0) for i in range(n))
    return {
        "offered": len(txs),
        "committed": committed,
        "wall_s": wall,
        "tx_per_s_sim": committed / wall,
        "tx_per_s_per_node": committed / (wall / n),
        "virtual_s": report.virtual_ms / 1000,
    }


def main() -> None:
    quick = "--quick" in sys.argv
    raw = raw_verify_rate(0.5 if quick else 1.0)
    print(f"raw ed25519 verify: {raw:,.0f}/s; ideal block time 3 x {IDEAL_MS / 3:.0f} ms = {IDEAL_MS:.0f} ms")
    head = ("validators", "heights", "block ms", "x ideal", "sim-s/wall-s", "wall s")
    print("{:>10} {:>8} {:>9} {:>8} {:>13} {:>7}".format(*head))
    rows = {}
    for n, dur in ((4, 3_000), (16, 2_000), (64, 800 if quick else 1_200)):
        r = latency_row(n, dur)
        rows[n] = r
        print(
            f"{n:>10} {r['heights']:>8} {r['block_ms']:>9.1f} {r['vs_ideal']:>8.3f} "
            f"{r['sim_s_per_wall_s']:>13.2f} {r['wall_s']:>7.2f}"
        )
    tp = throughput(per_sender=4 if quick else 12)
    ratio = tp["tx_per_s_per_node"] / raw
    print(
        f"throughput (4 validators, real ledger): {tp['committed']}/{tp['offered']} txs committed by every "
        f"node after {tp['wall_s']:.2f} wall s; per node {tp['tx_per_s_per_node']:,.0f} tx/s "
        f"= {ratio:.3f} x raw verify"
    )
    print(
        json.dumps(
            {
                "commit_latency_vs_ideal_4": round(rows[4]["vs_ideal"], 3),
                "commit_latency_vs_ideal_16": round(rows[16]["vs_ideal"], 3),
                "commit_latency_vs_ideal_64": round(rows[64]["vs_ideal"], 3),
                "tx_per_s_vs_raw_verify": round(ratio, 3),
                "tx_per_s_per_node": round(tp["tx_per_s_per_node"], 1),
                "sim_s_per_wall_s": round(rows[16]["sim_s_per_wall_s"], 3),
                "sim_s_per_wall_s_64": round(rows[64]["sim_s_per_wall_s"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
