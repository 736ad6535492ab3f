"""CoreDriver: executes a core's commands with real trio time, and one bad message or
failing command never stops it."""

from __future__ import annotations

import functools
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing

from node.daemon.driver import CoreDriver
from node.metrics import NodeMetrics
from protocol.commands import (
    BlobFetched,
    CancelTimer,
    ComputeDone,
    Fetch,
    MessageReceived,
    Persist,
    Publish,
    RunCompute,
    SetTimer,
    Tick,
    TimerFired,
)
from protocol.errors import BadSignature, BlobError


class ScriptedCore:
    """Answers each event with the commands a test scripted for it, and records it."""

    def __init__(self, script: dict[str, list[Any]]) -> None:
        self.script = script
        self.seen: list[Any] = []

    def handle(self, now: int, event: Any) -> list[Any]:
        self.seen.append(event)
        if isinstance(event, MessageReceived) and event.body == "bad":
            raise BadSignature("forged")
        if isinstance(event, MessageReceived) and event.body == "bug":
            raise ZeroDivisionError("core bug")
        key = type(event).__name__ if not isinstance(event, TimerFired) else f"timer:{event.key}"
        return list(self.script.get(key, []))


class FakeNetwork:
    def __init__(self) -> None:
        self.send, self.recv = trio.open_memory_channel[MessageReceived](16)
        self.published: list[tuple[str, Any]] = []
        self.sealed: list[tuple[str, bytes]] = []

    async def publish(self, topic: str, msg: Any) -> None:
        if msg == "unroutable":
            raise BlobError("no peers")
        self.published.append((topic, msg))

    async def publish_sealed(self, topic: str, raw: bytes) -> None:
        self.sealed.append((topic, raw))

    async def send_to(self, peer: bytes, msg: Any) -> None:
        return None

    async def fetch_blob(self, digest: bytes, max_size: int) -> bytes:
        if digest == b"\x01" * 32:
            return b"blob"
        raise BlobError("nobody has it")

    async def receive(self) -> MessageReceived:
        return await self.recv.receive()

    def peer_count(self) -> int:
        return 0


class MemStore:
    def __init__(self) -> None:
        self.records: dict[tuple[str, bytes], bytes] = {}

    def persist(self, kind: str, key: bytes, value: bytes) -> None:
        self.records[(kind, key)] = value

    def close(self) -> None:
        return None


def trio_test(fn: Callable[[], Awaitable[None]]) -> Callable[[], None]:
    """Run an async test under trio (the project does not use pytest-trio)."""

    @functools.wraps(fn)
    def wrapper() -> None:
        trio.run(fn)

    return wrapper


def msg(body: Any) -> MessageReceived:
    return MessageReceived("polnet/txs/1", b"\x00" * 32, body, b"raw")


async def run_driver(
    core: ScriptedCore, net: FakeNetwork, store: MemStore, body: Any, **kw: Any
) -> NodeMetrics:
    metrics = NodeMetrics()
    clock = [0]
    driver = CoreDriver(core, net, store, metrics, clock=lambda: clock[0], **kw)
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        await body(driver, clock)
        nursery.cancel_scope.cancel()
    return metrics


@trio_test
async def test_timers_fire_in_order_and_cancelled_or_replaced_ones_do_not() -> None:
    core = ScriptedCore(
        {
            "Tick": [
                SetTimer(30, "b"),
                SetTimer(10, "a"),
                SetTimer(20, "gone"),
                CancelTimer("gone"),
                SetTimer(50, "a"),
            ],
        }
    )

    async def body(driver: CoreDriver, clock: list[int]) -> None:
        for t in range(0, 80, 5):
            clock[0] = t
            await trio.sleep(0.02)

    await run_driver(core, FakeNetwork(), MemStore(), body)
    fired = [e.key for e in core.seen if isinstance(e, TimerFired)]
    assert fired == ["b", "a"]


@trio_test
async def test_a_bad_or_bug_triggering_peer_message_is_counted_and_the_loop_goes_on() -> None:
    core = ScriptedCore({"MessageReceived": [Publish("polnet/txs/1", "ok")]})
    net = FakeNetwork()

    async def body(driver: CoreDriver, clock: list[int]) -> None:
        for b in ("bad", "bug", "fine"):
            await net.send.send(msg(b))
        await trio.testing.wait_all_tasks_blocked()

    metrics = await run_driver(core, net, MemStore(), body)
    assert net.published == [("polnet/txs/1", "ok")]
    text = metrics.render().decode()
    assert 'polnet_messages_rejected_total{reason="bad_signature"} 1.0' in text
    assert 'polnet_messages_rejected_total{reason="internal"} 1.0' in text
    assert 'polnet_messages_in_total{topic="polnet/txs/1"} 3.0' in text


@trio_test
async def test_a_failing_publish_is_counted_and_later_commands_still_run() -> None:
    store = MemStore()
    core = ScriptedCore({"Tick": [Publish("polnet/txs/1", "unroutable"), Persist("k", b"1", b"v")]})

    async def body(driver: CoreDriver, clock: list[int]) -> None:
        await trio.testing.wait_all_tasks_blocked()

    metrics = await run_driver(core, FakeNetwork(), store, body)
    assert store.records == {("k", b"1"): b"v"}
    assert 'polnet_command_errors_total{command="Publish"} 1.0' in metrics.render().decode()


@trio_test
async def test_compute_runs_in_a_thread_and_fetches_report_back_even_when_they_fail() -> None:
    core = ScriptedCore(
        {
            "Tick": [
                RunCompute("job-1", {"x": 20}, 1),
                Fetch(b"\x01" * 32, 100),
                Fetch(b"\x02" * 32, 100),
            ]
        }
    )

    def compute(job_id: str, job: Any) -> Any:
        return job["x"] + 1

    async def body(driver: CoreDriver, clock: list[int]) -> None:
        with trio.fail_after(10):
            while sum(isinstance(e, (ComputeDone, BlobFetched)) for e in core.seen) < 3:
                await trio.sleep(0.01)

    await run_driver(core, FakeNetwork(), MemStore(), body, compute=compute)
    assert ComputeDone("job-1", 21) in core.seen
    assert BlobFetched(b"\x01" * 32, b"blob") in core.seen
    assert BlobFetched(b"\x02" * 32, None) in core.seen
    assert isinstance(core.seen[0], Tick)


@trio_test
async def test_an_envelope_the_core_sealed_itself_is_gossiped_unchanged() -> None:
    sealed, plain = Publish("polnet/txs/1", b"sealed-envelope"), Publish("polnet/txs/1", "body")
    core = ScriptedCore({"Tick": [sealed, plain]})
    net = FakeNetwork()

    async def body(driver: CoreDriver, clock: list[int]) -> None:
        await trio.sleep(0.01)

    await run_driver(core, net, MemStore(), body)
    assert net.sealed == [("polnet/txs/1", b"sealed-envelope")]
    assert net.published == [("polnet/txs/1", "body")]


class CrewAndChecks:
    """A runner whose "crew" job blocks until released (as a crew member's job waits on its
    member process) and whose other jobs return at once."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self, job_id: str, job: Any) -> Any:
        if job == "crew":
            assert self.release.wait(10)
        return job


@trio_test
async def test_a_job_that_runs_elsewhere_leaves_the_compute_thread_to_the_others() -> None:
    """With one compute thread, a crew member's run (minutes in its own process) must not
    keep the node from its other duties: the verify job after it finishes first."""
    core = ScriptedCore({"Tick": [RunCompute("crew-1", "crew", 1, own_process=True),
                                  RunCompute("verify-1", "verify", 1)]})
    runner = CrewAndChecks()

    async def body(driver: CoreDriver, clock: list[int]) -> None:
        with trio.fail_after(10):
            while ComputeDone("verify-1", "verify") not in core.seen:
                await trio.sleep(0.01)
        assert ComputeDone("crew-1", "crew") not in core.seen  # still training
        runner.release.set()
        with trio.fail_after(10):
            while ComputeDone("crew-1", "crew") not in core.seen:
                await trio.sleep(0.01)

    await run_driver(core, FakeNetwork(), MemStore(), body, compute=runner, compute_threads=1)
