"""Reusable throughput measurements of the simulator itself.

Other benches (consensus, market) report simulated seconds per wall second for their
own cores; this module gives the floor they sit on: a flood core that does nothing but
gossip, and the raw costs it is compared against (a bare heap push+pop, a bare ed25519
verify), measured in the same process so the ratios survive a noisy machine.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass

from netsim.config import NetworkConfig, SimConfig
from netsim.sim import run
from netsim.toys import flood_factory
from protocol.envelope import seal
from protocol.identity import Keypair, verify
from protocol.messages import Ping


@dataclass(frozen=True, slots=True)
class FloodResult:
    nodes: int
    sim_s: float
    wall_s: float
    events: int
    delivered: int

    @property
    def sim_s_per_wall_s(self) -> float:
        return self.sim_s / self.wall_s

    @property
    def us_per_event(self) -> float:
        return self.wall_s / self.events * 1e6

    @property
    def deliveries_per_wall_s(self) -> float:
        return self.delivered / self.wall_s


def flood(nodes: int, sim_ms: int, interval_ms: int = 1_000, seed: int = 1) -> FloodResult:
    """Every node gossips one signed Ping per `interval_ms` to every other node."""
    config = SimConfig(
        seed=seed, nodes=nodes, duration_ms=sim_ms, network=NetworkConfig(latency_ms=50, jitter_ms=20)
    )
    report = run(config, flood_factory(interval_ms=interval_ms, count=sim_ms // interval_ms + 1))
    return FloodResult(nodes, sim_ms / 1000, report.wall_s, report.events, report.counters.delivered)


def raw_heap_us(n: int = 200_000) -> float:
    """Microseconds for one push and one pop of a 5-tuple: the floor of any heap DES."""
    heap: list[tuple[int, int, int, int, None]] = []
    start = time.perf_counter()
    for i in range(n):
        heapq.heappush(heap, ((i * 7919) % 100_003, i, 1, 2, None))
    while heap:
        heapq.heappop(heap)
    return (time.perf_counter() - start) / n * 1e6


def raw_verify_per_s(n: int = 2_000) -> float:
    """ed25519 verifies per second of one signing root (what every delivery would cost uncached)."""
    key = Keypair.derive("bench")
    data = seal(Ping(1), key, "bench")
    sig = key.sign(data)
    start = time.perf_counter()
    for _ in range(n):
        verify(key.public, sig, data)
    return n / (time.perf_counter() - start)
