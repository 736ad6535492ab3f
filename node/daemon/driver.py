"""Drive a sans-IO core with real time: feed it events, execute the commands it returns.

The core is single-threaded by design, so every event reaches it through one bounded
inbox and one loop: messages from the network, fired timers, finished compute jobs and
fetched blobs. Commands that wait (compute, blob fetches) run as their own tasks and
report back through the inbox.

The command loop never awaits a peer. Direct sends (block-sync answers, votes for a
stuck peer) go into bounded per-peer queues with their own tasks and deadlines
(node/daemon/peerqueue.py); blob fetches are bounded in number and in time. Publishing
only waits for the transport's local backpressure, which skips peers that stopped
reading.

Persist ("durably store before acting on it") runs in a worker thread, off the event
loop, so the transport keeps reading and timers keep firing during an fsync; but the
command loop waits for it, and consecutive Persists go in one thread hop in their
order, so a Persist still completes before any command after it in the same list runs
(the core relies on that: its own vote is stored before the Publish that sends it).

Failure policy, because one bad peer must never take the node down: a message the core
refuses with a PolnetError is counted as rejected; any other exception while handling a
*peer's* message is logged as a bug and counted, and the loop goes on. A failing command
(a publish with no peers, a fetch nobody can serve) is logged and counted, never fatal.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import trio

from node.daemon.peerqueue import PeerQueues
from node.daemon.ports import ComputeRunner, Network, Store
from node.metrics import NodeMetrics, reject_reason
from protocol.commands import (
    BlobFetched,
    CancelTimer,
    Command,
    ComputeDone,
    Core,
    Event,
    Fetch,
    Log,
    MessageReceived,
    Persist,
    Publish,
    RunCompute,
    SendTo,
    SetTimer,
    Tick,
    TimerFired,
)
from protocol.errors import PolnetError

log = logging.getLogger("polnet.driver")

#: Events waiting for the core; producers block when it is full (back-pressure).
INBOX_SIZE = 1024
#: Timers a core may hold at once; more is a core bug, refused loudly.
MAX_TIMERS = 4096
#: Concurrent blob fetches; more wait for a slot.
MAX_FETCHES = 8
#: Fetches waiting or running at once; past this a Fetch is answered "unavailable" at
#: once (the core retries what it still needs), so a flood of wanted blobs cannot grow
#: the task count without bound.
MAX_PENDING_FETCHES = 256
#: A fetch (all the peers it tries) that has not delivered by then reports None.
FETCH_DEADLINE_S = 120.0
#: A compute job that has not finished by then is abandoned and reported as None.
COMPUTE_DEADLINE_S = 3600.0
#: Jobs at once whose work runs in another process (crew members' runs: a worker is in at
#: most `max_jobs_per_worker` tasks); they wait beside the compute threads, not in one.
MAX_ELSEWHERE_JOBS = 4


def wall_ms() -> int:
    """The core's clock: wall time in ms, so block times agree across nodes."""
    return time.time_ns() // 1_000_000


class _Call:
    """An event whose sender waits until the core handled it and its commands ran (a
    Persist among them is durable by then), and hears the core's refusal if it refused."""

    def __init__(self, event: Event) -> None:
        self.event = event
        self.done = trio.Event()
        self.error: PolnetError | None = None


class CoreDriver:
    def __init__(
        self,
        core: Core,
        network: Network,
        store: Store,
        metrics: NodeMetrics,
        compute: ComputeRunner | None = None,
        compute_threads: int = 1,
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        self.core = core
        self.network = network
        self.store = store
        self.metrics = metrics
        self.compute = compute
        self.clock = clock
        self._send, self._inbox = trio.open_memory_channel[Event | _Call](INBOX_SIZE)
        self._timers: dict[str, int] = {}
        self._timers_changed = trio.Event()
        self._compute_limiter = trio.CapacityLimiter(compute_threads)
        self._elsewhere_limiter = trio.CapacityLimiter(MAX_ELSEWHERE_JOBS)
        self._fetch_limiter = trio.CapacityLimiter(MAX_FETCHES)
        self._fetches_pending = 0
        self._nursery: trio.Nursery | None = None
        self.outbox: PeerQueues | None = None
        self.events_handled = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.outbox = PeerQueues(self.network.send_to, nursery, report=self.metrics.direct_send)
            nursery.start_soon(self._pump_network)
            nursery.start_soon(self._timer_loop)
            await self._handle(Tick())
            task_status.started()
            async for event in self._inbox:
                if isinstance(event, _Call):
                    await self._answer(event)
                else:
                    await self._handle(event)

    async def submit(self, event: Event) -> None:
        """Hand an event to the core (from the admin endpoint, a local role, a test)."""
        await self._send.send(event)

    async def call(self, event: Event) -> None:
        """Hand an event to the core and wait until its commands have run; a refusal by
        the core (a PolnetError) is raised here, for the operator who asked."""
        call = _Call(event)
        await self._send.send(call)
        await call.done.wait()
        if call.error is not None:
            raise call.error

    async def _answer(self, call: _Call) -> None:
        self.events_handled += 1
        try:
            commands = self.core.handle(self.clock(), call.event)
        except PolnetError as exc:
            call.error = exc
            call.done.set()
            return
        try:
            await self._execute(commands)
        finally:
            call.done.set()

    # --- event side ------------------------------------------------------------------

    async def _handle(self, event: Event) -> None:
        self.events_handled += 1
        try:
            commands = self.core.handle(self.clock(), event)
        except PolnetError as exc:
            self.metrics.rejected(reject_reason(exc))
            log.info("core refused event", extra={"event": type(event).__name__, "error": str(exc)})
            return
        except Exception:
            if not isinstance(event, MessageReceived):
                raise  # our own event broke the core: that is a bug to surface, not hide
            self.metrics.rejected("internal")
            log.exception("core failed on a peer message; message dropped")
            return
        await self._execute(commands)

    async def _pump_network(self) -> None:
        while True:
            msg = await self.network.receive()
            self.metrics.message_in(msg.topic)
            await self._send.send(msg)

    # --- command side ----------------------------------------------------------------

    async def _execute(self, commands: Sequence[Command]) -> None:
        i = 0
        while i < len(commands):
            cmd = commands[i]
            if isinstance(cmd, Persist):  # a run of Persists: one thread hop, in order
                j = i
                while j < len(commands) and isinstance(commands[j], Persist):
                    j += 1
                await self._persist([c for c in commands[i:j] if isinstance(c, Persist)])
                i = j
                continue
            try:
                await self._execute_one(cmd)
            except PolnetError as exc:
                self._command_failed(cmd, exc)
            i += 1

    def _command_failed(self, cmd: Command, exc: PolnetError) -> None:
        self.metrics.command_errors.labels(type(cmd).__name__).inc()
        log.warning("command failed", extra={"command": type(cmd).__name__, "error": str(exc)})

    async def _persist(self, batch: list[Persist]) -> None:
        """Store `batch` in order in a worker thread; the loop waits, the event loop does
        not. A failing record is counted and logged; the ones after it are still tried."""

        def write_all() -> list[tuple[Persist, PolnetError]]:
            failed = []
            for cmd in batch:
                try:
                    self.store.persist(cmd.kind, cmd.key, cmd.value)
                except PolnetError as exc:
                    failed.append((cmd, exc))
            return failed

        for cmd, exc in await trio.to_thread.run_sync(write_all):
            self._command_failed(cmd, exc)

    async def _execute_one(self, cmd: Command) -> None:
        if isinstance(cmd, Publish):
            if isinstance(cmd.msg, bytes):  # an envelope the core sealed itself (MarketNode's txs)
                await self.network.publish_sealed(cmd.topic, cmd.msg)
            else:
                await self.network.publish(cmd.topic, cmd.msg)
            self.metrics.message_out(cmd.topic)
        elif isinstance(cmd, SendTo):
            assert self.outbox is not None
            if not self.outbox.put(cmd.peer, cmd.msg):
                raise PolnetError(f"{self.outbox.peers} peers have direct sends queued; dropped one")
        elif isinstance(cmd, SetTimer):
            self._set_timer(cmd.key, cmd.at)
        elif isinstance(cmd, CancelTimer):
            self._timers.pop(cmd.key, None)
        elif isinstance(cmd, Persist):
            await self._persist([cmd])
        elif isinstance(cmd, RunCompute):
            self._spawn(self._run_compute, cmd)
        elif isinstance(cmd, Fetch):
            if self._fetches_pending >= MAX_PENDING_FETCHES:
                # Never await our own inbox from the loop that drains it: if it is full,
                # the answer is dropped and the core's own retry covers it.
                with contextlib.suppress(trio.WouldBlock):
                    self._send.send_nowait(BlobFetched(cmd.digest, None))
                raise PolnetError(f"{MAX_PENDING_FETCHES} blob fetches pending; answered None")
            self._fetches_pending += 1
            self._spawn(self._fetch, cmd)
        elif isinstance(cmd, Log):
            log.log(logging.getLevelName(cmd.level.upper()), cmd.event, extra=dict(cmd.fields))
        else:
            raise TypeError(f"unknown command {cmd!r}")

    def _spawn(self, fn: Callable[[Any], Any], cmd: Any) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(fn, cmd)

    def _set_timer(self, key: str, at: int) -> None:
        if key not in self._timers and len(self._timers) >= MAX_TIMERS:
            raise PolnetError(f"core holds {MAX_TIMERS} timers; refusing {key!r}")
        self._timers[key] = at
        self._timers_changed.set()

    async def _timer_loop(self) -> None:
        while True:
            self._timers_changed = trio.Event()
            if not self._timers:
                await self._timers_changed.wait()
                continue
            key, at = min(self._timers.items(), key=lambda kv: kv[1])
            delay = (at - self.clock()) / 1000
            if delay > 0:
                with trio.move_on_after(delay):
                    await self._timers_changed.wait()
                    continue  # a timer was set or cancelled: recompute the earliest
            if self._timers.get(key) == at:
                del self._timers[key]
                await self._send.send(TimerFired(key))

    async def _run_compute(self, cmd: RunCompute) -> None:
        result: Any = None
        outcome = "failed"
        if self.compute is not None:
            runner = self.compute
            # A crew member's run trains in its own process for minutes: held in a compute
            # thread, it would keep the node from verifying anything else until it ends
            # (and get the node slashed for silence on those duties).
            limiter = self._elsewhere_limiter if cmd.own_process else self._compute_limiter
            with trio.move_on_after(COMPUTE_DEADLINE_S):
                try:
                    result = await trio.to_thread.run_sync(
                        runner, cmd.job_id, cmd.job, limiter=limiter, abandon_on_cancel=True
                    )
                    outcome = "ok"
                except PolnetError as exc:
                    log.warning("compute job failed", extra={"job": cmd.job_id, "error": str(exc)})
                except Exception:
                    # Compute reads what peers sent (blobs, tensors): whatever it raises, the
                    # node goes on, and the role sees "no answer" (a bug here is logged loudly).
                    outcome = "crashed"
                    log.exception("compute job crashed", extra={"job": cmd.job_id})
        self.metrics.compute_jobs.labels(outcome).inc()
        await self._send.send(ComputeDone(cmd.job_id, result))

    async def _fetch(self, cmd: Fetch) -> None:
        data: bytes | None = None
        try:
            with trio.move_on_after(FETCH_DEADLINE_S):
                async with self._fetch_limiter:
                    try:
                        data = await self.network.fetch_blob(cmd.digest, cmd.max_size)
                    except PolnetError as exc:
                        log.info("blob fetch failed", extra={"digest": cmd.digest.hex(), "error": str(exc)})
        finally:
            self._fetches_pending -= 1
        await self._send.send(BlobFetched(cmd.digest, data))
