"""Node lifecycle and the command contract: crash/restart from disk, kill -9 write loss,
pause, timers, compute, blobs, logs, direct sends and the shared verify cache."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from netsim import (
    BLOB_KIND,
    DIRECT_TOPIC,
    ComputeRegistry,
    Crash,
    NetworkConfig,
    Pause,
    Restart,
    Resume,
    Sim,
    SimConfig,
    run,
)
from netsim.disk import Disk
from netsim.toys import COUNTER_KEY, COUNTER_KIND, CounterCore, EchoCore, ScriptCore
from protocol import envelope
from protocol.commands import (
    TOPIC_TXS,
    BlobFetched,
    CancelTimer,
    Command,
    ComputeDone,
    Fetch,
    Log,
    MessageReceived,
    Persist,
    Publish,
    RunCompute,
    SendTo,
    SetTimer,
    TimerFired,
)
from protocol.encoding import sha256
from protocol.identity import Keypair
from protocol.messages import Ping, Pong

NO_JITTER = NetworkConfig(latency_ms=50, jitter_ms=0)


def counter_value(sim: Sim, node: int) -> int:
    stored = sim.disk(node).get(COUNTER_KIND, COUNTER_KEY)
    return int.from_bytes(stored, "big") if stored else 0


def run_counters(config: SimConfig) -> tuple[Sim, list[CounterCore]]:
    built: list[CounterCore] = []
    sims: list[Sim] = []

    def factory(index: int, key: Keypair, disk: Disk) -> CounterCore:
        built.append(CounterCore(disk, interval_ms=100))
        return built[-1]

    run(config, factory, setup=sims.append)
    return sims[0], built


def test_restarted_node_resumes_from_its_persisted_state() -> None:
    faults = (Crash(1_050, 1), Restart(2_050, 1))
    sim, built = run_counters(SimConfig(nodes=2, duration_ms=3_000, faults=faults))
    assert counter_value(sim, 0) == 29  # timers at 100..2900 (ticks at 0 arm the first)
    assert counter_value(sim, 1) == 10 + 9  # 10 before the crash, none while down, 9 after
    assert len(built) == 3  # two nodes + one restart, and the restart started from 10
    assert sim.stats(1).crashes == sim.stats(1).restarts == 1


def test_kill_minus_nine_loses_the_last_unsynced_write() -> None:
    faults = (Crash(1_050, 1, lose_unsynced=True), Restart(1_500, 1))
    sim, _ = run_counters(SimConfig(nodes=2, duration_ms=1_510, faults=faults))
    assert sim.stats(1).lost_writes == 1
    assert counter_value(sim, 1) == 9  # the write of tick 10 was lost; restart at 1500, no tick yet


class _WriteSendWrite:
    """At t=100 persists "before", publishes, persists "after", all in one handle()."""

    def handle(self, now: int, event: object) -> Sequence[Command]:
        if not isinstance(event, TimerFired):
            return [SetTimer(100, "go")] if now == 0 else []
        return [
            Persist("t", b"before", b"1"),
            Publish(TOPIC_TXS, Ping(1)),
            Persist("t", b"after", b"1"),
        ]


@pytest.mark.parametrize("send", ["publish", "send_to"])
def test_kill_minus_nine_keeps_a_write_that_a_message_followed_and_loses_the_one_after(send: str) -> None:
    # The daemon executes Persist inline before the next command, so a write followed by a
    # message is on disk before the message leaves; only writes after the last one can be lost.
    core = _WriteSendWrite()
    if send == "send_to":
        peer = Keypair.derive("netsim/1").public
        core.handle = lambda now, event, _h=core.handle: [  # type: ignore[method-assign]
            SendTo(peer, c.msg) if isinstance(c, Publish) else c for c in _h(now, event)
        ]
    sims: list[Sim] = []
    config = SimConfig(nodes=2, duration_ms=200, faults=(Crash(101, 0, lose_unsynced=True),))
    run(config, lambda i, key, disk: core if i == 0 else ScriptCore(), setup=sims.append)
    disk = sims[0].disk(0)
    assert disk.get("t", b"before") == b"1" and disk.get("t", b"after") is None
    assert sims[0].stats(0).lost_writes == 1


def test_a_clean_crash_keeps_every_write() -> None:
    faults = (Crash(1_050, 1), Restart(1_500, 1))
    sim, _ = run_counters(SimConfig(nodes=2, duration_ms=1_510, faults=faults))
    assert counter_value(sim, 1) == 10 and sim.stats(1).lost_writes == 0


def test_liveness_phase_restarts_crashed_nodes() -> None:
    config = SimConfig(nodes=2, duration_ms=1_000, liveness_ms=1_000, faults=(Crash(500, 1),))
    sim, _ = run_counters(config)
    assert sim.phase == "liveness" and sim.status(1) == "up"
    assert counter_value(sim, 1) == 4 + 9


def scripted(
    nodes: int, scripts: dict[int, Sequence[tuple[int, Command]]], config: SimConfig, **kwargs: object
) -> tuple[Sim, list[ScriptCore]]:
    cores: dict[int, ScriptCore] = {}
    sims: list[Sim] = []

    def factory(index: int, key: Keypair, disk: Disk) -> ScriptCore:
        cores[index] = ScriptCore(scripts.get(index, ()))
        return cores[index]

    run(config.replace(nodes=nodes), factory, setup=sims.append, **kwargs)  # type: ignore[arg-type]
    return sims[0], [cores[i] for i in range(nodes)]


def test_paused_node_queues_input_and_handles_it_on_resume() -> None:
    config = SimConfig(network=NO_JITTER, faults=(Pause(20, 1), Resume(500, 1)))
    _, cores = scripted(2, {0: [(100, Publish(TOPIC_TXS, Ping(7)))]}, config)
    assert [(t, e.body) for t, e in cores[1].received()] == [(500, Ping(7))]


def test_paused_node_in_drop_mode_loses_messages() -> None:
    config = SimConfig(network=NO_JITTER, pause_mode="drop", faults=(Pause(20, 1), Resume(500, 1)))
    sims, cores = scripted(2, {0: [(100, Publish(TOPIC_TXS, Ping(7)))]}, config)
    assert cores[1].received() == []
    assert sims.counters.dropped["paused"] == 1


def test_crashed_node_misses_messages_and_its_timers_die() -> None:
    script = [(100, SetTimer(300, "late"))]
    config = SimConfig(network=NO_JITTER, faults=(Crash(200, 0), Restart(250, 0)))
    _, cores = scripted(1, {0: script}, config)
    assert not any(isinstance(e, TimerFired) and e.key == "late" for _, e in cores[0].events)


def test_set_timer_replaces_and_cancel_timer_cancels() -> None:
    script = [
        (10, SetTimer(100, "a")),
        (20, SetTimer(200, "a")),
        (30, SetTimer(150, "b")),
        (40, CancelTimer("b")),
    ]
    _, cores = scripted(1, {0: script}, SimConfig())
    fired = [
        (t, e.key) for t, e in cores[0].events if isinstance(e, TimerFired) and not e.key.startswith("s")
    ]
    assert fired == [(200, "a")]


def test_send_to_reaches_only_that_peer_on_the_direct_topic() -> None:
    sims: list[Sim] = []
    echoes: list[EchoCore | ScriptCore] = []

    def factory(index: int, key: Keypair, disk: Disk) -> EchoCore | ScriptCore:
        peer = Keypair.derive("netsim/1").public
        echoes.append(ScriptCore([(10, SendTo(peer, Ping(5)))]) if index == 0 else EchoCore())
        return echoes[-1]

    report = run(SimConfig(nodes=3, network=NO_JITTER), factory, setup=sims.append)
    first = echoes[0]
    assert isinstance(first, ScriptCore)
    got = first.received()
    assert [(t, e.topic, e.body) for t, e in got] == [(110, DIRECT_TOPIC, Pong(5))]
    assert report.per_node[2].received == 0
    assert report.counters.direct == 2


def test_send_to_an_unknown_peer_is_dropped_and_counted() -> None:
    sim, _ = scripted(2, {0: [(10, SendTo(b"\x01" * 32, Ping(1)))]}, SimConfig())
    assert sim.counters.dropped["unknown_peer"] == 1


@dataclass(frozen=True)
class Square:
    x: int


def test_compute_runs_the_registered_function_and_charges_flops_time() -> None:
    registry = ComputeRegistry()
    registry.register(Square, lambda job: job.x * job.x)
    script = [(10, RunCompute("j1", Square(3), flops=2_000)), (10, RunCompute("j2", Square(4), flops=1_000))]
    config = SimConfig(nodes=2, node_flops=1_000, flops=(1_000, 4_000))
    _, cores = scripted(2, {0: script, 1: script}, config, executor=registry)
    done = [[(t, e.job_id, e.result) for t, e in c.events if isinstance(e, ComputeDone)] for c in cores]
    assert done[0] == [(2_010, "j1", 9), (3_010, "j2", 16)]  # one device: jobs queue
    assert done[1] == [(510, "j1", 9), (760, "j2", 16)]  # a 4x faster node


def test_a_job_in_its_own_process_runs_beside_the_queue_as_on_a_daemon() -> None:
    """A crew member's run (`own_process`) neither waits for the node's compute queue nor
    holds it: the check after it starts at once (node/daemon/driver.py does the same)."""
    registry = ComputeRegistry()
    registry.register(Square, lambda job: job.x * job.x)
    script = [(10, RunCompute("crew", Square(3), flops=5_000, own_process=True)),
              (10, RunCompute("check", Square(4), flops=1_000))]
    config = SimConfig(nodes=1, node_flops=1_000, flops=(1_000,))
    _, cores = scripted(1, {0: script}, config, executor=registry)
    done = [(t, e.job_id) for t, e in cores[0].events if isinstance(e, ComputeDone)]
    assert done == [(1_010, "check"), (5_010, "crew")]


def test_compute_without_a_registered_function_is_a_reproducible_failure() -> None:
    from netsim import CoreFailure

    with pytest.raises(CoreFailure, match="no compute function registered for job type Square"):
        scripted(1, {0: [(10, RunCompute("j", Square(1), flops=1))]}, SimConfig(seed=77))


def test_fetch_gets_a_blob_from_a_holder_after_latency_plus_transfer_time() -> None:
    data = b"weights" * 1_000
    digest = sha256(data)
    network = NetworkConfig(latency_ms=50, jitter_ms=0, blob_bandwidth_bps=7_000)  # 7 bytes / ms
    script = [
        (10, Fetch(digest, max_size=1 << 20)),
        (20, Fetch(digest, max_size=100)),
        (30, Fetch(b"\0" * 32, 10)),
    ]
    config = SimConfig(network=network)
    sim, cores = scripted(2, {0: [(0, Persist(BLOB_KIND, digest, data))], 1: script}, config)
    got = [(t, e.digest, e.data) for t, e in cores[1].events if isinstance(e, BlobFetched)]
    assert got[0] == (70, digest, None)  # too big for max_size: refused after one latency
    assert got[1] == (10 + 50 + 1_000, digest, data)
    assert got[2] == (30 + network.fetch_timeout_ms, b"\0" * 32, None)  # nobody holds it
    assert sim.blobs.holds(1, digest)  # a fetched blob is served onwards


def test_logs_are_collected_in_the_report() -> None:
    sims: list[Sim] = []

    def factory(index: int, key: Keypair, disk: Disk) -> ScriptCore:
        return ScriptCore([(5, Log("info", "hello", (("n", index),)))])

    report = run(SimConfig(nodes=2), factory, setup=sims.append)
    assert [(r.time, r.node, r.event, r.fields) for r in report.logs] == [
        (5, 0, "hello", (("n", 0),)),
        (5, 1, "hello", (("n", 1),)),
    ]


def test_each_distinct_envelope_is_verified_once_however_many_receive_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    real = envelope.verify

    def counting_verify(*args: bytes) -> bool:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(envelope, "verify", counting_verify)
    script = [(10, Publish(TOPIC_TXS, Ping(1))), (20, Publish(TOPIC_TXS, Ping(2)))]
    _, cores = scripted(30, {0: script}, SimConfig())
    assert all(len(c.received()) == 2 for c in cores[1:])
    assert len(calls) == 2


def test_forged_envelope_bytes_are_rejected_not_delivered() -> None:
    good = envelope.seal(Ping(1), Keypair.derive("x"), "netsim")
    forged = good[:-1] + bytes([good[-1] ^ 1])
    wrong_chain = envelope.seal(Ping(2), Keypair.derive("x"), "other-chain")
    script = [
        (10, Publish(TOPIC_TXS, forged)),
        (10, Publish(TOPIC_TXS, wrong_chain)),
        (10, Publish(TOPIC_TXS, good)),
    ]
    sim, cores = scripted(2, {0: script}, SimConfig())
    assert [e.body for _, e in cores[1].received()] == [Ping(1)]
    assert sim.counters.rejected == 2 and sim.stats(1).rejected == 2


def test_inject_and_call_at_let_a_scenario_drive_nodes() -> None:
    def setup(sim: Sim) -> None:
        event = MessageReceived(TOPIC_TXS, b"\0" * 32, Ping(9), b"")
        sim.call_at(123, lambda s: s.inject(1, event))

    cores: list[ScriptCore] = []

    def factory(index: int, key: Keypair, disk: Disk) -> ScriptCore:
        cores.append(ScriptCore())
        return cores[-1]

    run(SimConfig(nodes=2), factory, setup=setup)
    assert [(t, e.body) for t, e in cores[1].received()] == [(123, Ping(9))]


def test_messages_queued_by_a_paused_node_are_counted_lost_when_it_crashes() -> None:
    config = SimConfig(network=NO_JITTER, faults=(Pause(20, 1), Crash(300, 1)))
    sim, cores = scripted(2, {0: [(100, Publish(TOPIC_TXS, Ping(7)))]}, config)
    assert cores[1].received() == []
    assert sim.counters.dropped == {"crashed": 1}
