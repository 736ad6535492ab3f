"""Play one dispute to the end with all roles in one loop, under virtual time.

Tests, the benchmark and netsim's quick paths need a whole dispute without a network;
this wires a `GameMachine` and two `PartyMachine`s together and executes their compute
commands with the callables given (torch, or the synthetic trainer). A side whose
oracle returns None stays silent, so deadlines and "silence loses" are exercised too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from protocol.commands import (
    CancelTimer,
    Command,
    ComputeDone,
    Event,
    MessageReceived,
    Publish,
    RunCompute,
    SendTo,
    SetTimer,
    Tick,
    TimerFired,
)
from protocol.errors import ValidationError
from protocol.pol.jobs import ClaimJob, ClaimResult, RefereeJob, RefereeResult, RevealJob, RevealResult
from protocol.pol.messages import DisputeOpen, DisputeResolved
from protocol.pol.pinpoint import Outcome
from protocol.pol.roles import GameMachine, Geometry, PartyMachine
from protocol.pol.spec import TaskSpec

COORDINATOR = b"\xcc" * 32
#: Far more events than any dispute needs (each round is ~6); a loop guard, not a tuning knob.
MAX_EVENTS = 10_000


class Oracle(Protocol):
    def claim(self, job: ClaimJob) -> ClaimResult | None: ...

    def reveal(self, job: RevealJob) -> RevealResult | None: ...


@dataclass(frozen=True)
class DisputeReport:
    outcome: Outcome
    rounds: int
    bound: int
    step: int
    op_index: int
    reason: str
    referee_calls: int


def play(
    spec: TaskSpec | None,
    opened: DisputeOpen,
    tolerance: float,
    defender: Oracle,
    challenger: Oracle,
    referee: Callable[[RefereeJob], RefereeResult],
    geometry: Geometry | None = None,
) -> DisputeReport:
    """`geometry`: a crew member's step (spec None); a task's comes from its spec."""
    game = GameMachine(spec, opened, tolerance, geometry)
    parties = {
        opened.defender: (PartyMachine(opened, COORDINATOR), defender),
        opened.challenger: (PartyMachine(opened, COORDINATOR), challenger),
    }
    queue: deque[tuple[bytes, Event]] = deque([(COORDINATOR, Tick())])
    timers: dict[str, int] = {}
    now, referee_calls, resolved = 0, 0, None

    def run(target: bytes, commands: Any, oracle: Oracle | None) -> None:
        nonlocal referee_calls, resolved
        for cmd in commands:
            resolved = _execute(cmd, target, oracle, queue, timers, now) or resolved
            if isinstance(cmd, RunCompute) and isinstance(cmd.job, RefereeJob):
                referee_calls += 1
                queue.append((COORDINATOR, ComputeDone(cmd.job_id, referee(cmd.job))))

    for _ in range(MAX_EVENTS):
        if resolved is not None:
            break
        if not queue:
            if not timers:
                raise ValidationError("dispute stalled with nothing pending")
            key, at = min(timers.items(), key=lambda kv: kv[1])
            del timers[key]
            now = max(now, at)
            queue.append((COORDINATOR, TimerFired(key)))
        target, event = queue.popleft()
        now += 1
        if target == COORDINATOR:
            run(COORDINATOR, game.handle(now, event), None)
        else:
            machine, oracle = parties[target]
            run(target, machine.handle(now, event), oracle)
    if resolved is None:
        raise ValidationError("dispute did not finish within the event budget")
    return DisputeReport(
        Outcome(resolved.outcome),
        resolved.rounds,
        game.rounds_bound,
        resolved.step,
        resolved.op_index,
        resolved.reason,
        referee_calls,
    )


def _execute(
    cmd: Command,
    source: bytes,
    oracle: Oracle | None,
    queue: deque[tuple[bytes, Event]],
    timers: dict[str, int],
    now: int,
) -> DisputeResolved | None:
    if isinstance(cmd, SendTo):
        queue.append((cmd.peer, MessageReceived("direct", source, cmd.msg, b"")))
    elif isinstance(cmd, SetTimer):
        timers[cmd.key] = cmd.at
    elif isinstance(cmd, Publish) and isinstance(cmd.msg, DisputeResolved):
        return cmd.msg
    elif isinstance(cmd, RunCompute) and oracle is not None:
        result: Any = None
        if isinstance(cmd.job, ClaimJob):
            result = oracle.claim(cmd.job)
        elif isinstance(cmd.job, RevealJob):
            result = oracle.reveal(cmd.job)
        if result is not None:
            queue.append((source, ComputeDone(cmd.job_id, result)))
    elif isinstance(cmd, CancelTimer):
        timers.pop(cmd.key, None)
    return None
