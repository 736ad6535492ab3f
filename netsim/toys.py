"""Small cores for tests, benchmarks and examples of how to drive netsim.

They use only the foundation messages (Ping/Pong) so they work before any subsystem
lands, and each exercises one part of the command contract: FloodCore gossip and
timers, EchoCore direct sends, CounterCore persistence across crash/restart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from netsim.disk import Disk
from protocol.commands import (
    TOPIC_TXS,
    Command,
    Event,
    MessageReceived,
    Persist,
    Publish,
    SendTo,
    SetTimer,
    Tick,
    TimerFired,
)
from protocol.identity import Keypair
from protocol.messages import Ping, Pong

PING_TIMER = "ping"
COUNTER_KIND = "counter"
COUNTER_KEY = b"value"


class FloodCore:
    """Gossips a Ping every `interval_ms` for `count` rounds; remembers what it received."""

    def __init__(self, index: int, interval_ms: int = 100, count: int = 10) -> None:
        self.index = index
        self.interval_ms = interval_ms
        self.count = count
        self.sent = 0
        self.received: list[tuple[bytes, int]] = []

    def handle(self, now: int, event: Event) -> Sequence[Command]:
        if isinstance(event, Tick):
            return [SetTimer(now + self.interval_ms, PING_TIMER)]
        if isinstance(event, TimerFired) and self.sent < self.count:
            self.sent += 1
            nonce = self.index * 1_000_000 + self.sent
            return [Publish(TOPIC_TXS, Ping(nonce)), SetTimer(now + self.interval_ms, PING_TIMER)]
        if isinstance(event, MessageReceived) and isinstance(event.body, Ping):
            self.received.append((event.sender, event.body.nonce))
        return []


class EchoCore:
    """Answers every Ping it receives with a direct Pong to the sender."""

    def __init__(self) -> None:
        self.pongs: list[int] = []

    def handle(self, now: int, event: Event) -> Sequence[Command]:
        if isinstance(event, MessageReceived):
            if isinstance(event.body, Ping):
                return [SendTo(event.sender, Pong(event.body.nonce))]
            if isinstance(event.body, Pong):
                self.pongs.append(event.body.nonce)
        return []


class CounterCore:
    """Counts timer ticks and persists the count, so a restart resumes where it stopped."""

    def __init__(self, disk: Disk, interval_ms: int = 100) -> None:
        stored = disk.get(COUNTER_KIND, COUNTER_KEY)
        self.value = int.from_bytes(stored, "big") if stored else 0
        self.interval_ms = interval_ms

    def handle(self, now: int, event: Event) -> Sequence[Command]:
        if isinstance(event, (Tick, TimerFired)):
            commands: list[Command] = [SetTimer(now + self.interval_ms, PING_TIMER)]
            if isinstance(event, TimerFired):
                self.value += 1
                commands.append(Persist(COUNTER_KIND, COUNTER_KEY, self.value.to_bytes(8, "big")))
            return commands
        return []


def flood_factory(interval_ms: int = 100, count: int = 10) -> Callable[[int, Keypair, Disk], FloodCore]:
    """A netsim factory building FloodCores (keys and disk unused: the toy is stateless)."""

    def factory(index: int, key: Keypair, disk: Disk) -> FloodCore:
        return FloodCore(index, interval_ms, count)

    return factory


class ScriptCore:
    """Issues scripted commands at given times and records every event it handles.

    The test double for the simulator itself: a test states "node 0 publishes at t=10"
    and then asserts on what each node's `events` list saw and when.
    """

    def __init__(self, script: Sequence[tuple[int, Command]] = ()) -> None:
        self.script = list(script)
        self.events: list[tuple[int, Event]] = []

    def handle(self, now: int, event: Event) -> Sequence[Command]:
        self.events.append((now, event))
        if isinstance(event, Tick):
            return [SetTimer(at, f"script/{i}") for i, (at, _) in enumerate(self.script) if at >= now]
        if isinstance(event, TimerFired) and event.key.startswith("script/"):
            return [self.script[int(event.key.split("/", 1)[1])][1]]
        return []

    def received(self) -> list[tuple[int, MessageReceived]]:
        return [(t, e) for t, e in self.events if isinstance(e, MessageReceived)]
