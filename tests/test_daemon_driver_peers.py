"""The driver's command loop never waits on a peer, and Persist leaves the event loop
without losing its place in the command order."""

from __future__ import annotations

import threading
from typing import Any

import trio
import trio.testing

from node.daemon.driver import CoreDriver
from node.daemon.peerqueue import PeerQueues
from node.metrics import NodeMetrics
from protocol.commands import MessageReceived, Persist, Publish, SendTo, SetTimer, Tick, TimerFired
from protocol.errors import PolnetError
from tests.test_daemon_driver import FakeNetwork, MemStore, ScriptedCore, trio_test

STUCK = b"\x0b" * 32
HONEST = b"\x0c" * 32


class StuckPeerNetwork(FakeNetwork):
    """A direct send to STUCK never completes (a peer that stopped reading)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[bytes, Any]] = []

    async def send_to(self, peer: bytes, msg: Any) -> None:
        if peer == STUCK:
            await trio.sleep_forever()
        self.sent.append((peer, msg))


@trio_test
async def test_a_peer_that_stops_reading_does_not_stall_the_command_loop() -> None:
    # Every event answers with sends to the stuck peer, a send to an honest one, a
    # publish and a timer: before, the first SendTo held the loop for its 10 s timeout.
    script = {
        "Tick": [SetTimer(0, "t1")],
        "MessageReceived": [SendTo(STUCK, "sync"), SendTo(HONEST, "vote"), Publish("polnet/txs/1", "p")],
        "timer:t1": [SendTo(STUCK, "again"), SetTimer(0, "t2")],
    }
    core = ScriptedCore(script)
    net = StuckPeerNetwork()
    driver = CoreDriver(core, net, MemStore(), NodeMetrics(), clock=lambda: 1)
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        with trio.fail_after(2):  # well under any send deadline
            for i in range(40):
                await net.send.send(MessageReceived("polnet/txs/1", b"\x00" * 32, f"m{i}", b"raw"))
            while len(net.published) < 40 or ("timer:t2" not in [f"timer:{e.key}" for e in core.seen
                                                                 if isinstance(e, TimerFired)]):
                await trio.sleep(0.01)
        assert (HONEST, "vote") in net.sent and len([s for s in net.sent if s[0] == HONEST]) == 40
        assert driver.outbox is not None
        # The stuck peer's queue stays bounded: one send in flight, the rest queued or dropped.
        assert driver.outbox.pending(STUCK) <= 16
        assert driver.outbox.counters.dropped_full >= 40 + 1 - 16 - 1
        text = driver.metrics.render().decode()
        assert 'polnet_direct_sends_total{outcome="sent"} 40.0' in text
        assert 'polnet_direct_sends_total{outcome="dropped"}' in text
        nursery.cancel_scope.cancel()


@trio_test
async def test_a_send_past_its_deadline_is_abandoned_and_the_next_one_goes_out() -> None:
    sent: list[Any] = []

    async def send(peer: bytes, msg: Any) -> None:
        if msg == "hangs":
            await trio.sleep_forever()
        if msg == "fails":
            raise PolnetError("peer unavailable")
        sent.append(msg)

    async with trio.open_nursery() as nursery:
        q = PeerQueues(send, nursery, deadline_s=0.05)
        for m in ("hangs", "fails", "ok"):
            assert q.put(HONEST, m)
        with trio.fail_after(2):
            while q.peers:
                await trio.sleep(0.01)
        assert sent == ["ok"]
        assert (q.counters.timed_out, q.counters.failed, q.counters.sent) == (1, 1, 1)


@trio_test
async def test_queues_are_bounded_in_peers_too() -> None:
    async def send(peer: bytes, msg: Any) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        q = PeerQueues(send, nursery, max_peers=3)
        results = [q.put(bytes([i]) * 32, "x") for i in range(5)]
        assert results == [True, True, True, False, False]
        assert q.counters.dropped_peers == 2
        nursery.cancel_scope.cancel()


class ThreadRecordingStore(MemStore):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log
        self.threads: set[int] = set()

    def persist(self, kind: str, key: bytes, value: bytes) -> None:
        self.threads.add(threading.get_ident())
        self.log.append(f"persist {value.decode()}")
        super().persist(kind, key, value)


class OrderRecordingNetwork(FakeNetwork):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    async def publish(self, topic: str, msg: Any) -> None:
        self.log.append(f"publish {msg}")


@trio_test
async def test_persist_runs_in_a_worker_thread_in_order_and_before_the_publish_after_it() -> None:
    log: list[str] = []
    cmds = [Persist("votes", b"k", b"1"), Persist("votes", b"k", b"2"), Publish("t", "vote"),
            Persist("block", b"h", b"3"), Publish("t", "next")]
    store = ThreadRecordingStore(log)
    core = ScriptedCore({"Tick": cmds})
    driver = CoreDriver(core, OrderRecordingNetwork(log), store, NodeMetrics(), clock=lambda: 0)
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert log == ["persist 1", "persist 2", "publish vote", "persist 3", "publish next"]
    assert threading.get_ident() not in store.threads
    assert store.records[("votes", b"k")] == b"2"


@trio_test
async def test_the_event_loop_keeps_running_while_a_persist_is_slow() -> None:
    gate = threading.Event()
    ticks: list[float] = []

    class SlowStore(MemStore):
        def persist(self, kind: str, key: bytes, value: bytes) -> None:
            gate.wait(5)
            super().persist(kind, key, value)

    async def ticker() -> None:
        for _ in range(5):
            ticks.append(trio.current_time())
            await trio.sleep(0.01)
        gate.set()

    core = ScriptedCore({"Tick": [Persist("k", b"1", b"v")]})
    store = SlowStore()
    driver = CoreDriver(core, FakeNetwork(), store, NodeMetrics(), clock=lambda: 0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await nursery.start(driver.run)  # the Tick's Persist blocks in a thread until the ticker is done
        assert len(ticks) == 5 and store.records == {("k", b"1"): b"v"}
        nursery.cancel_scope.cancel()
    assert isinstance(core.seen[0], Tick)
