"""The simulator's central promise: same seed and config, same trace hash."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from netsim import Clog, Crash, NemesisConfig, NetworkConfig, Partition, Restart, SimConfig, run
from netsim.disk import Disk
from netsim.nemesis import generate
from netsim.toys import CounterCore, FloodCore
from protocol.identity import Keypair


def mixed_factory(index: int, key: Keypair, disk: Disk) -> FloodCore | CounterCore:
    return CounterCore(disk) if index % 3 == 0 else FloodCore(index, interval_ms=40, count=20)


def busy_config(seed: int) -> SimConfig:
    return SimConfig(
        seed=seed,
        nodes=7,
        duration_ms=4_000,
        liveness_ms=1_000,
        network=NetworkConfig(latency_ms=20, jitter_ms=30, loss=0.05, duplicate=0.05, bandwidth_bps=200_000),
        faults=(
            Partition(300, ((0, 1, 2), (3, 4))),
            Clog(900, 200, node=1),
            Crash(1_200, 3),
            Restart(1_700, 3),
        ),
        nemesis=NemesisConfig(mean_gap_ms=200, min_fault_ms=50, max_fault_ms=400),
    )


def test_same_seed_and_config_give_the_same_trace_hash() -> None:
    first = run(busy_config(11), mixed_factory)
    second = run(busy_config(11), mixed_factory)
    assert first.trace_hash == second.trace_hash
    assert first.counters == second.counters
    assert first.per_node == second.per_node
    assert first.faults_applied > 4  # the plan and the nemesis really acted


def test_a_different_seed_changes_the_trace_hash() -> None:
    assert run(busy_config(11), mixed_factory).trace_hash != run(busy_config(12), mixed_factory).trace_hash


def test_nemesis_plan_depends_only_on_seed_and_config() -> None:
    assert generate(busy_config(5)) == generate(busy_config(5))
    assert generate(busy_config(5)) != generate(busy_config(6))


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    nodes=st.integers(1, 6),
    loss=st.floats(0, 0.5),
    dup=st.floats(0, 0.5),
    jitter=st.integers(0, 50),
    relay=st.booleans(),
)
def test_any_config_replays_identically(
    seed: int, nodes: int, loss: float, dup: float, jitter: int, relay: bool
) -> None:
    network = NetworkConfig(
        jitter_ms=jitter, loss=loss, duplicate=dup, gossip="relay" if relay else "direct", gossip_degree=2
    )
    config = SimConfig(
        seed=seed,
        nodes=nodes,
        duration_ms=1_500,
        network=network,
        nemesis=NemesisConfig(mean_gap_ms=100, min_fault_ms=20, max_fault_ms=200),
    )
    assert run(config, mixed_factory).trace_hash == run(config, mixed_factory).trace_hash


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32), pause_mode=st.sampled_from(["queue", "drop"]), relay=st.booleans())
def test_every_message_copy_is_delivered_or_dropped_for_a_named_reason(
    seed: int, pause_mode: str, relay: bool
) -> None:
    network = NetworkConfig(
        jitter_ms=40, loss=0.1, duplicate=0.1, gossip="relay" if relay else "direct", gossip_degree=2
    )
    config = SimConfig(
        seed=seed,
        nodes=6,
        duration_ms=2_000,
        liveness_ms=2_000,  # the flood stops at 1.2 s, so nothing is still in flight at the end
        network=network,
        pause_mode=pause_mode,
        nemesis=NemesisConfig(mean_gap_ms=50, min_fault_ms=20, max_fault_ms=300, max_faulty=2),
    )
    c = run(config, lambda i, k, d: FloodCore(i, interval_ms=100, count=12)).counters
    assert c.copies > 0
    assert c.delivered + sum(c.dropped.values()) == c.copies + c.duplicated
