"""The discrete-event engine: virtual time, one heap, sans-IO cores, commands executed.

Every scheduled thing is a heap entry `(time_ms, seq, kind, node, payload)`; `seq` is a
global counter, so entries at the same millisecond run in the order they were
scheduled and the heap never compares payloads. Nothing here reads the wall clock
(except to report how long the run took), iterates a set or a str-keyed dict to make a
decision, or uses randomness other than the seeded substreams of netsim.rng. That is
the whole of the determinism argument: the same seed and config give the same trace.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

from netsim import faults as F
from netsim.blobs import BLOB_KIND, BlobStore
from netsim.byzantine import Coalition
from netsim.checks import Check, CheckFn, as_check
from netsim.compute import ComputeRegistry, Executor
from netsim.config import SimConfig
from netsim.disk import Disk
from netsim.errors import CoreFailure, InvariantViolation, NetsimError, ReproducibleFailure
from netsim.nemesis import generate
from netsim.network import Network
from netsim.report import Counters, LogRecord, NodeStats, Report
from netsim.rng import substream
from netsim.trace import Trace
from protocol.commands import (
    BlobFetched,
    CancelTimer,
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
from protocol.encoding import sha256
from protocol.envelope import open_envelope, seal
from protocol.errors import PolnetError
from protocol.identity import Keypair
from protocol.limits import MAX_MESSAGE_BYTES

Factory = Callable[[int, Keypair, Disk], Core]

# Heap entry kinds; the same numbers label trace records (netsim.trace.KIND_NAMES).
K_TICK, K_MSG, K_TIMER, K_COMPUTE, K_BLOB, K_FAULT, K_PHASE, K_CALL, K_REJECT = range(9)

UP, CRASHED, PAUSED = "up", "crashed", "paused"

#: Topic a SendTo arrives on (a direct stream has no gossip topic).
DIRECT_TOPIC = "polnet/direct/1"
#: Bounds on what one node may hold in the simulator.
MAX_TIMERS_PER_NODE = 100_000
MAX_COMPUTE_BACKLOG_MS = 10 * 24 * 3600 * 1000
MAX_LOGS = 200_000
VERIFY_CACHE_SIZE = 1 << 16
SEEN_CACHE_SIZE = 1 << 14


def node_keys(config: SimConfig) -> list[Keypair]:
    """The nodes' keys, known before the run (scenarios build their genesis from them)."""
    return [Keypair.derive(f"{config.key_prefix}/{i}") for i in range(config.nodes)]


class _Node:
    __slots__ = (
        "compute_free",
        "core",
        "disk",
        "incarnation",
        "index",
        "key",
        "queue",
        "seen",
        "stats",
        "status",
        "timers",
    )

    def __init__(self, index: int, key: Keypair, disk: Disk) -> None:
        self.index = index
        self.key = key
        self.disk = disk
        self.core: Core | None = None
        self.status = CRASHED
        self.incarnation = 0
        self.timers: dict[str, int] = {}
        self.queue: deque[tuple[int, Any]] = deque()
        self.compute_free = 0
        self.seen: dict[bytes, None] = {}
        self.stats = NodeStats()


class Sim:
    """One run. Checkers and `call_at` callbacks receive this object to inspect it."""

    def __init__(
        self,
        config: SimConfig,
        factory: Factory,
        checks: Iterable[Check | CheckFn] = (),
        *,
        executor: Executor | None = None,
    ) -> None:
        self.config = config
        self.now = 0
        self.phase = "safety"
        self.n = config.nodes
        self.keys = node_keys(config)
        self.index_of = {k.public: i for i, k in enumerate(self.keys)}
        self.blobs = BlobStore()
        self.network = Network(config.nodes, config.network, substream(config.seed, "network"))
        self.counters = Counters()
        self.trace = Trace(config.trace_tail)
        self.logs: list[LogRecord] = []
        self.logs_dropped = 0
        self.events = 0
        self.faults_applied = 0
        self._factory = factory
        self._executor: Executor = executor or ComputeRegistry()
        all_checks = [as_check(c) for c in checks]
        self._checks = [c for c in all_checks if not c.final]
        self._final_checks = [c for c in all_checks if c.final]
        self._nodes = [_Node(i, k, Disk(config.disk_limit_bytes)) for i, k in enumerate(self.keys)]
        self._heap: list[tuple[int, int, int, int, Any]] = []
        self._seq = 0
        self._opened: dict[tuple[bytes, str], tuple[MessageReceived | None, bytes]] = {}
        self._blob_rng = substream(config.seed, "blobs")
        self._relay = config.network.gossip == "relay"
        #: The Byzantine coalition of config.byzantine (None: every node honest).
        self.coalition = Coalition(config, self.keys) if config.byzantine is not None else None
        self.mesh = _build_mesh(config) if self._relay else []
        self._handlers: list[Callable[[int, Any], None]] = [
            self._on_tick,
            self._on_msg,
            self._on_timer,
            self._on_compute,
            self._on_blob,
            self._on_fault,
            self._on_phase,
            self._on_call,
        ]
        self._commands: dict[type[Any], Callable[[_Node, Any], None]] = {
            Publish: self._cmd_publish,
            SendTo: self._cmd_send,
            SetTimer: self._cmd_set_timer,
            CancelTimer: self._cmd_cancel_timer,
            RunCompute: self._cmd_compute,
            Persist: self._cmd_persist,
            Fetch: self._cmd_fetch,
            Log: self._cmd_log,
        }
        self._started = False

    # --- inspection (for checkers and scenario callbacks) ------------------------------------

    def core(self, node: int) -> Core | None:
        """The node's current core, or None while it is crashed."""
        return self._nodes[node].core

    def status(self, node: int) -> str:
        return self._nodes[node].status

    def byzantine_nodes(self) -> frozenset[int]:
        """The nodes config.byzantine makes Byzantine (checkers judge only the others)."""
        return frozenset() if self.config.byzantine is None else frozenset(self.config.byzantine.nodes)

    def up_nodes(self) -> list[int]:
        return [n.index for n in self._nodes if n.status == UP]

    def disk(self, node: int) -> Disk:
        return self._nodes[node].disk

    def stats(self, node: int) -> NodeStats:
        return self._nodes[node].stats

    # --- scenario hooks -------------------------------------------------------------------

    def call_at(self, at: int, fn: Callable[[Sim], None]) -> None:
        """Run `fn(sim)` at virtual time `at` (inject client transactions, probe state)."""
        self._push(max(at, self.now), K_CALL, -1, fn)

    def stop(self) -> None:
        """End the run after the current event (a scenario reached its goal early)."""
        self._heap.clear()

    def inject(self, node: int, event: Event) -> None:
        """Hand `event` to a node's core now, as a local client or operator would."""
        slot = self._nodes[node]
        if slot.status == UP:
            self._deliver(slot, event, K_CALL, type(event).__name__.encode())

    def publish_raw(self, src: int, topic: str, raw: bytes) -> None:
        """Gossip already-sealed envelope bytes from `src` (client txs, replays, forgeries)."""
        self._gossip(self._nodes[src], topic, raw)

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> Report:
        if self._started:
            raise NetsimError("a Sim runs once; build a new one for another run")
        self._started = True
        wall0 = time.perf_counter()
        self._schedule_start()
        self._loop()
        self.now = self.config.end_ms
        for check in self._final_checks:
            self._run_check(check)
        return self._report(time.perf_counter() - wall0)

    def _loop(self) -> None:
        heap, pop, handlers = self._heap, heapq.heappop, self._handlers
        end, max_events, max_pending = self.config.end_ms, self.config.max_events, self.config.max_pending
        checks = self._checks
        while heap:
            if heap[0][0] >= end:
                break
            t, _, kind, node, payload = pop(heap)
            self.now = t
            handlers[kind](node, payload)
            self.events += 1
            if checks:
                for check in checks:
                    if self.events % check.every == 0:
                        self._run_check(check)
            if self.events >= max_events or len(heap) > max_pending:
                self._fail(NetsimError, f"event bound hit ({self.events} events, {len(heap)} pending)")

    def _schedule_start(self) -> None:
        for slot in self._nodes:
            self._boot(slot)
        plan = sorted((*self.config.faults, *generate(self.config)), key=lambda a: a.at)
        for action in plan:
            self._push(action.at, K_FAULT, -1, action)
        if self.config.liveness_ms:
            self._push(self.config.duration_ms, K_PHASE, -1, None)

    def _push(self, at: int, kind: int, node: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, kind, node, payload))

    # --- delivering events to cores ---------------------------------------------------------

    def _deliver(self, slot: _Node, event: Event, kind: int, ident: bytes) -> None:
        core = slot.core
        assert core is not None
        self.trace.record(self.now, slot.index, kind, ident)
        slot.stats.handled += 1
        slot.disk.sync()
        try:
            commands = core.handle(self.now, event)
        except Exception as exc:
            self._fail(CoreFailure, f"node {slot.index} raised {type(exc).__name__}: {exc}", exc)
        for cmd in commands:
            execute = self._commands.get(type(cmd))
            if execute is None:
                self._fail(CoreFailure, f"node {slot.index} returned a non-command {cmd!r:.200}")
            execute(slot, cmd)

    def _held(self, slot: _Node, kind: int, payload: Any, is_message: bool = False) -> bool:
        """True when the node cannot take the event now (crashed, or paused: queued/dropped)."""
        if slot.status == UP:
            return False
        if slot.status == CRASHED:
            if is_message:
                self.counters.drop("crashed")
            return True
        if is_message and self.config.pause_mode == "drop":
            self.counters.drop("paused")
        elif len(slot.queue) < self.config.pause_queue_limit:
            slot.queue.append((kind, payload))
        else:
            self.counters.drop("pause_queue_full")
        return True

    def _on_tick(self, node: int, incarnation: int) -> None:
        slot = self._nodes[node]
        if incarnation == slot.incarnation and not self._held(slot, K_TICK, incarnation):
            self._deliver(slot, Tick(), K_TICK, b"")

    def _on_msg(self, node: int, payload: tuple[bytes, str, int]) -> None:
        slot = self._nodes[node]
        raw, topic, src = payload
        if slot.status != UP and self._held(slot, K_MSG, payload, is_message=True):
            return
        if self.network.group[src] != self.network.group[node]:
            self.counters.drop("partition_in_flight")
            return
        event, msg_id = self._open(raw, topic)
        if event is None:
            self.counters.rejected += 1
            slot.stats.rejected += 1
            self.trace.record(self.now, node, K_REJECT, msg_id)
            return
        if self._relay and topic != DIRECT_TOPIC:
            if msg_id in slot.seen:
                self.counters.drop("relay_seen")
                return
            self._remember(slot, msg_id)
            self._fan_out(node, self.mesh[node], (*payload[:2], node), exclude=src)
        self.counters.delivered += 1
        slot.stats.received += 1
        self._deliver(slot, event, K_MSG, msg_id)

    def _open(self, raw: bytes, topic: str) -> tuple[MessageReceived | None, bytes]:
        """Decode and verify once per distinct envelope, however many nodes receive it.

        The event itself is shared too: MessageReceived is frozen, so every receiver of
        the same bytes on the same topic can be handed the same object.
        """
        key = (raw, topic)
        hit = self._opened.get(key)
        if hit is None:
            try:
                env = open_envelope(raw, self.config.chain_id)
                event: MessageReceived | None = MessageReceived(topic, env.sender, env.body, raw)
            except PolnetError:
                event = None
            hit = (event, sha256(raw))
            if len(self._opened) >= VERIFY_CACHE_SIZE:
                del self._opened[next(iter(self._opened))]
            self._opened[key] = hit
        return hit

    def _on_timer(self, node: int, payload: tuple[str, int]) -> None:
        slot = self._nodes[node]
        key, token = payload
        if slot.timers.get(key) != token or self._held(slot, K_TIMER, payload):
            return
        del slot.timers[key]
        slot.stats.timers_fired += 1
        self._deliver(slot, TimerFired(key), K_TIMER, key.encode())

    def _on_compute(self, node: int, payload: tuple[int, str, Any]) -> None:
        slot = self._nodes[node]
        incarnation, job_id, result = payload
        if incarnation == slot.incarnation and not self._held(slot, K_COMPUTE, payload):
            self._deliver(slot, ComputeDone(job_id, result), K_COMPUTE, job_id.encode())

    def _on_blob(self, node: int, payload: tuple[int, bytes, bytes | None]) -> None:
        slot = self._nodes[node]
        incarnation, digest, data = payload
        if incarnation != slot.incarnation or self._held(slot, K_BLOB, payload):
            return
        if data is not None:
            self.blobs.add(node, data)
        self._deliver(slot, BlobFetched(digest, data), K_BLOB, digest + (b"+" if data is not None else b"-"))

    def _on_call(self, node: int, fn: Callable[[Sim], None]) -> None:
        fn(self)

    # --- commands -----------------------------------------------------------------------------

    def _cmd_publish(self, slot: _Node, cmd: Publish) -> None:
        slot.disk.sync()  # a write that precedes a message is durable before it leaves
        raw = self._seal(slot, cmd.msg)
        slot.stats.published += 1
        self._gossip(slot, cmd.topic, raw)

    def _seal(self, slot: _Node, msg: Any) -> bytes:
        """Envelope bytes for a message a core sends (bytes pass through: pre-sealed)."""
        if type(msg) is bytes:
            return msg
        try:
            return seal(msg, slot.key, self.config.chain_id)
        except (PolnetError, AttributeError, TypeError) as exc:
            self._fail(CoreFailure, f"node {slot.index} sent an unencodable message {msg!r:.200}: {exc}", exc)

    def _gossip(self, slot: _Node, topic: str, raw: bytes) -> None:
        if len(raw) > MAX_MESSAGE_BYTES:
            self.counters.drop("oversize")
            return
        self.counters.published += 1
        if self._relay:
            self._remember(slot, sha256(raw))
            peers: Sequence[int] = self.mesh[slot.index]
        else:
            peers = range(self.n)
        self._fan_out(slot.index, peers, (raw, topic, slot.index))

    def _remember(self, slot: _Node, msg_id: bytes) -> None:
        if len(slot.seen) >= SEEN_CACHE_SIZE:
            del slot.seen[next(iter(slot.seen))]
        slot.seen[msg_id] = None

    def _fan_out(
        self, src: int, peers: Sequence[int], payload: tuple[bytes, str, int], exclude: int = -1
    ) -> None:
        """Put one copy per peer on the network: the hot loop of every gossip."""
        transmit, now, size = self.network.transmit, self.now, len(payload[0])
        heap, push, seq = self._heap, heapq.heappush, self._seq
        copies = duplicated = 0
        for dst in peers:
            if dst in (src, exclude):
                continue
            copies += 1
            arrivals = transmit(now, src, dst, size)
            if len(arrivals) > 1:
                duplicated += 1
            for at in arrivals:
                seq += 1
                push(heap, (at, seq, K_MSG, dst, payload))
        self._seq = seq
        self.counters.copies += copies
        self.counters.duplicated += duplicated

    def _cmd_send(self, slot: _Node, cmd: SendTo) -> None:
        slot.disk.sync()  # as for Publish: what was persisted before a message is durable
        dst = self.index_of.get(cmd.peer)
        if dst is None or dst == slot.index:
            self.counters.drop("unknown_peer")
            return
        raw = self._seal(slot, cmd.msg)
        if len(raw) > MAX_MESSAGE_BYTES:
            self.counters.drop("oversize")
            return
        self.counters.direct += 1
        slot.stats.sent_direct += 1
        self._fan_out(slot.index, (dst,), (raw, DIRECT_TOPIC, slot.index))

    def _cmd_set_timer(self, slot: _Node, cmd: SetTimer) -> None:
        if cmd.key not in slot.timers and len(slot.timers) >= MAX_TIMERS_PER_NODE:
            self._fail(CoreFailure, f"node {slot.index} holds more than {MAX_TIMERS_PER_NODE} timers")
        token = self._seq + 1  # the seq _push is about to use: unique per SetTimer
        slot.timers[cmd.key] = token
        self._push(max(cmd.at, self.now), K_TIMER, slot.index, (cmd.key, token))

    def _cmd_cancel_timer(self, slot: _Node, cmd: CancelTimer) -> None:
        slot.timers.pop(cmd.key, None)

    def _cmd_compute(self, slot: _Node, cmd: RunCompute) -> None:
        try:
            duration, result = self._executor.execute(slot.index, cmd, self.config.flops_of(slot.index))
        except Exception as exc:
            self._fail(CoreFailure, f"compute job {cmd.job_id!r} on node {slot.index} failed: {exc}", exc)
        slot.stats.computes += 1
        slot.stats.compute_ms += duration
        if cmd.own_process:  # its own process: it runs beside the node's queue, as on a daemon
            self._push(self.now + duration, K_COMPUTE, slot.index, (slot.incarnation, cmd.job_id, result))
            return
        start = max(self.now, slot.compute_free)
        if start + duration - self.now > MAX_COMPUTE_BACKLOG_MS:
            self._fail(CoreFailure, f"node {slot.index} queued more compute than {MAX_COMPUTE_BACKLOG_MS} ms")
        slot.compute_free = start + duration
        self._push(slot.compute_free, K_COMPUTE, slot.index, (slot.incarnation, cmd.job_id, result))

    def _cmd_persist(self, slot: _Node, cmd: Persist) -> None:
        try:
            slot.disk.write(cmd.kind, cmd.key, cmd.value)
        except NetsimError as exc:
            self._fail(CoreFailure, f"node {slot.index}: {exc}")
        slot.stats.persists += 1
        if cmd.kind == BLOB_KIND:
            self.blobs.add(slot.index, cmd.value)

    def _cmd_fetch(self, slot: _Node, cmd: Fetch) -> None:
        slot.stats.fetches += 1
        me = slot.index
        data = self.blobs.get(cmd.digest)
        if self.blobs.holds(me, cmd.digest):
            self._push(self.now, K_BLOB, me, (slot.incarnation, cmd.digest, data))
            return
        holders = [h for h in self.blobs.holders(cmd.digest) if self._can_serve(h, me)]
        if not holders or data is None:
            at, data = self.now + self.config.network.fetch_timeout_ms, None
        else:
            holder = holders[self._blob_rng.randrange(len(holders))]
            at = self.now + self.network.latency(holder, me)
            if len(data) > cmd.max_size:
                data = None
            elif self.config.network.blob_bandwidth_bps:
                at += -(-len(data) * 1000 // self.config.network.blob_bandwidth_bps)
        self._push(at, K_BLOB, me, (slot.incarnation, cmd.digest, data))

    def _can_serve(self, holder: int, me: int) -> bool:
        return holder != me and self._nodes[holder].status == UP and self.network.connected(holder, me)

    def _cmd_log(self, slot: _Node, cmd: Log) -> None:
        if len(self.logs) >= MAX_LOGS:
            self.logs_dropped += 1
            return
        self.logs.append(LogRecord(self.now, slot.index, cmd.level, cmd.event, cmd.fields))

    # --- faults and phases ---------------------------------------------------------------

    def _on_fault(self, node: int, action: F.FaultAction) -> None:
        self.faults_applied += 1
        target = getattr(action, "node", None)
        self.trace.record(self.now, -1 if target is None else target, K_FAULT, F.action_name(action).encode())
        if isinstance(action, F.Partition):
            self.network.partition(action.groups)
        elif isinstance(action, F.Isolate):
            self.network.isolate(action.node)
        elif isinstance(action, F.Heal):
            self.network.heal()
        elif isinstance(action, F.Clog):
            self.network.clog(self.now + action.duration_ms, action.node, action.link)
        elif isinstance(action, F.SetLoss):
            self.network.set_loss(action.loss, action.link)
        elif isinstance(action, F.Crash):
            self.crash(action.node, lose_unsynced=action.lose_unsynced)
        elif isinstance(action, F.Restart):
            self.restart(action.node)
        elif isinstance(action, F.Pause):
            self.pause(action.node)
        else:
            self.resume(action.node)

    def crash(self, node: int, *, lose_unsynced: bool = False) -> None:
        """Stop a node now; its in-flight timers, compute and fetches die with it."""
        slot = self._nodes[node]
        if slot.status == CRASHED:
            return
        slot.core = None
        slot.status = CRASHED
        slot.incarnation += 1
        slot.timers.clear()
        for kind, _ in slot.queue:
            if kind == K_MSG:
                self.counters.drop("crashed")
        slot.queue.clear()
        slot.seen.clear()
        slot.compute_free = self.now
        slot.stats.crashes += 1
        slot.stats.lost_writes += slot.disk.lose_unsynced() if lose_unsynced else 0
        slot.disk.sync()

    def restart(self, node: int) -> None:
        """Build a new core from the node's disk and send it Tick (no-op unless crashed)."""
        slot = self._nodes[node]
        if slot.status != CRASHED:
            return
        slot.stats.restarts += 1
        self._boot(slot)

    def _boot(self, slot: _Node) -> None:
        try:
            slot.core = self._factory(slot.index, slot.key, slot.disk)
            if self.coalition is not None:
                slot.core = self.coalition.wrap(slot.index, slot.core, slot.key)
        except Exception as exc:
            self._fail(CoreFailure, f"factory failed for node {slot.index}: {exc}", exc)
        slot.status = UP
        self._push(self.now, K_TICK, slot.index, slot.incarnation)

    def pause(self, node: int) -> None:
        slot = self._nodes[node]
        if slot.status == UP:
            slot.status = PAUSED

    def resume(self, node: int) -> None:
        """Unfreeze a node and replay what it queued while paused, in arrival order."""
        slot = self._nodes[node]
        if slot.status != PAUSED:
            return
        slot.status = UP
        while slot.queue:
            kind, payload = slot.queue.popleft()
            self._push(self.now, kind, slot.index, payload)

    def _on_phase(self, node: int, payload: None) -> None:
        """Start of the liveness phase: every fault is healed, every node brought back."""
        self.phase = "liveness"
        self.trace.record(self.now, -1, K_PHASE, b"liveness")
        self.network.heal()
        self.network.restore_loss()
        for slot in self._nodes:
            self.resume(slot.index)
            self.restart(slot.index)

    # --- checks, failures, report ---------------------------------------------------------------

    def _run_check(self, check: Check) -> None:
        try:
            check.fn(self)
        except Exception as exc:
            detail = str(exc) or type(exc).__name__
            self._fail(InvariantViolation, f"invariant {check.label!r} failed: {detail}", exc)

    def _fail(
        self,
        kind: type[ReproducibleFailure] | type[NetsimError],
        what: str,
        cause: BaseException | None = None,
    ) -> NoReturn:
        headline = f"{what} (t={self.now}ms, event #{self.events}, phase {self.phase})"
        if not issubclass(kind, ReproducibleFailure):
            kind = ReproducibleFailure
        raise kind(
            headline,
            seed=self.config.seed,
            config_json=self.config.to_json(),
            scenario=self.config.scenario,
            recent=self.trace.format_recent(),
        ) from cause

    def _report(self, wall_s: float) -> Report:
        c = self.counters
        net = self.network
        for reason, count in (("loss", net.dropped_loss), ("partition", net.dropped_partition)):
            if count:
                c.dropped[reason] = c.dropped.get(reason, 0) + count
        return Report(
            seed=self.config.seed,
            nodes=self.n,
            virtual_ms=self.now,
            wall_s=wall_s,
            events=self.events,
            trace_hash=self.trace.hexdigest(),
            counters=c,
            per_node=tuple(n.stats for n in self._nodes),
            faults_applied=self.faults_applied,
            logs=tuple(self.logs),
            logs_dropped=self.logs_dropped,
        )


def _build_mesh(config: SimConfig) -> list[list[int]]:
    """A symmetric random overlay where each node has at least `gossip_degree` peers."""
    rng = substream(config.seed, "topology")
    n, degree = config.nodes, min(config.network.gossip_degree, config.nodes - 1)
    peers: list[set[int]] = [set() for _ in range(n)]
    for i in range(n):
        others = [j for j in range(n) if j != i]
        rng.shuffle(others)
        for j in others:
            if len(peers[i]) >= degree:
                break
            peers[i].add(j)
            peers[j].add(i)
    return [sorted(p) for p in peers]


def run(
    config: SimConfig,
    factory: Factory,
    checks: Sequence[Check | CheckFn] = (),
    *,
    executor: Executor | None = None,
    setup: Callable[[Sim], None] | None = None,
) -> Report:
    """Run one simulation; raises InvariantViolation/CoreFailure with a reproduction line."""
    sim = Sim(config, factory, checks, executor=executor)
    if setup is not None:
        setup(sim)
    return sim.run()
