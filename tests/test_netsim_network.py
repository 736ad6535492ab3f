"""Each network fault does what the model says: loss, duplication, reordering,
bandwidth, partitions (send time and in flight), isolation, clogging, relay gossip."""

from __future__ import annotations

from collections.abc import Sequence

from netsim import (
    Clog,
    Heal,
    Isolate,
    LinkOverride,
    NetworkConfig,
    Partition,
    SetLoss,
    Sim,
    SimConfig,
    run,
)
from netsim.disk import Disk
from netsim.toys import FloodCore, ScriptCore, flood_factory
from protocol.commands import TOPIC_TXS, Command, Publish
from protocol.identity import Keypair
from protocol.messages import Hello, Ping

NO_JITTER = NetworkConfig(latency_ms=50, jitter_ms=0)


def scripted(
    nodes: int, scripts: dict[int, Sequence[tuple[int, Command]]], config: SimConfig
) -> list[ScriptCore]:
    cores: list[ScriptCore] = []

    def factory(index: int, key: Keypair, disk: Disk) -> ScriptCore:
        core = ScriptCore(scripts.get(index, ()))
        cores.append(core)
        return core

    run(config.replace(nodes=nodes), factory)
    return cores


def pings(core: ScriptCore) -> list[tuple[int, int]]:
    return [(t, e.body.nonce) for t, e in core.received() if isinstance(e.body, Ping)]


def test_publish_reaches_every_other_node_after_the_link_latency() -> None:
    cores = scripted(4, {0: [(10, Publish(TOPIC_TXS, Ping(1)))]}, SimConfig(network=NO_JITTER))
    assert pings(cores[0]) == []  # gossip is not echoed back to the publisher
    assert [pings(c) for c in cores[1:]] == [[(60, 1)]] * 3
    sender = cores[1].received()[0][1].sender
    assert sender == Keypair.derive("netsim/0").public


def test_total_loss_delivers_nothing_and_counts_the_drops() -> None:
    report = run(SimConfig(nodes=4, duration_ms=2_000, network=NetworkConfig(loss=1.0)), flood_factory())
    assert report.counters.delivered == 0
    assert report.counters.dropped["loss"] == report.counters.copies > 0


def test_duplication_delivers_each_copy_twice() -> None:
    report = run(SimConfig(nodes=3, duration_ms=2_000, network=NetworkConfig(duplicate=1.0)), flood_factory())
    assert report.counters.delivered == 2 * report.counters.copies > 0
    assert report.counters.duplicated == report.counters.copies


def test_jitter_reorders_messages_on_one_link() -> None:
    script = [(10 + i, Publish(TOPIC_TXS, Ping(i))) for i in range(40)]
    cores = scripted(2, {0: script}, SimConfig(network=NetworkConfig(latency_ms=10, jitter_ms=100)))
    order = [nonce for _, nonce in pings(cores[1])]
    assert sorted(order) == list(range(40))
    assert order != sorted(order)


def test_bandwidth_serialises_messages_by_size() -> None:
    big = Hello("x" * 200, 1, b"\0" * 32, 1)  # about 340 bytes sealed
    script = [(10, Publish(TOPIC_TXS, big)), (10, Publish(TOPIC_TXS, big))]
    network = NetworkConfig(latency_ms=5, jitter_ms=0, bandwidth_bps=1_000)  # 1 byte per ms
    cores = scripted(2, {0: script}, SimConfig(network=network))
    (t1, e1), (t2, _) = cores[1].received()
    size = len(e1.raw)
    assert t1 == 10 + size + 5
    assert t2 == 10 + 2 * size + 5  # the second waits for the first to leave the link


def test_partition_blocks_only_cross_group_links_until_heal() -> None:
    script = [(100, Publish(TOPIC_TXS, Ping(1))), (600, Publish(TOPIC_TXS, Ping(2)))]
    faults = (Partition(50, ((0, 1), (2, 3))), Heal(500))
    cores = scripted(4, {0: script}, SimConfig(network=NO_JITTER, faults=faults))
    assert [n for _, n in pings(cores[1])] == [1, 2]
    assert [n for _, n in pings(cores[2])] == [2]
    assert [n for _, n in pings(cores[3])] == [2]


def test_partition_drops_messages_already_in_flight() -> None:
    faults = (Partition(30, ((0,), (1,))),)
    sim_config = SimConfig(network=NO_JITTER, faults=faults)
    cores = scripted(2, {0: [(10, Publish(TOPIC_TXS, Ping(1)))]}, sim_config)
    assert pings(cores[1]) == []


def test_isolate_cuts_one_node_and_keeps_the_rest_connected() -> None:
    cores = scripted(
        3,
        {0: [(10, Publish(TOPIC_TXS, Ping(1)))], 1: [(10, Publish(TOPIC_TXS, Ping(2)))]},
        SimConfig(network=NO_JITTER, faults=(Isolate(5, 2),)),
    )
    assert [n for _, n in pings(cores[0])] == [2]
    assert pings(cores[2]) == []


def test_clog_holds_messages_until_it_ends() -> None:
    script = [(100, Publish(TOPIC_TXS, Ping(1)))]
    cores = scripted(3, {0: script}, SimConfig(network=NO_JITTER, faults=(Clog(50, 1_000, link=(0, 1)),)))
    assert pings(cores[1]) == [(1_050, 1)]
    assert pings(cores[2]) == [(150, 1)]  # other links are not clogged


def test_set_loss_on_one_link_and_liveness_phase_restores_it() -> None:
    script = [(100, Publish(TOPIC_TXS, Ping(1))), (1_100, Publish(TOPIC_TXS, Ping(2)))]
    config = SimConfig(
        network=NO_JITTER, duration_ms=1_000, liveness_ms=1_000, faults=(SetLoss(10, 1.0, link=(0, 1)),)
    )
    cores = scripted(3, {0: script}, config)
    assert [n for _, n in pings(cores[1])] == [2]
    assert [n for _, n in pings(cores[2])] == [1, 2]


def test_link_override_makes_one_path_slow() -> None:
    network = NetworkConfig(
        latency_ms=10, jitter_ms=0, links=(LinkOverride(0, 2, latency_ms=300, jitter_ms=0),)
    )
    cores = scripted(3, {0: [(0, Publish(TOPIC_TXS, Ping(1)))]}, SimConfig(network=network))
    assert pings(cores[1]) == [(10, 1)]
    assert pings(cores[2]) == [(300, 1)]


def test_relay_gossip_reaches_everyone_exactly_once_over_a_sparse_mesh() -> None:
    cores: list[FloodCore] = []

    def factory(index: int, key: Keypair, disk: Disk) -> FloodCore:
        cores.append(FloodCore(index, interval_ms=100, count=3))
        return cores[-1]

    network = NetworkConfig(latency_ms=10, jitter_ms=0, gossip="relay", gossip_degree=2)
    sims: list[Sim] = []
    report = run(SimConfig(nodes=20, duration_ms=3_000, network=network), factory, setup=sims.append)
    assert all(len(c.received) == 3 * 19 for c in cores)  # each delivered exactly once
    assert max(len(p) for p in sims[0].mesh) < 19  # really sparse
    assert report.counters.dropped["relay_seen"] > 0
