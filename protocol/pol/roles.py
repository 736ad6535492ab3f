"""The pinpoint game as sans-IO cores: the coordinator and the two parties.

`GameMachine` drives the `process_*` rules from messages and timers and asks its shell
to re-execute the final op (RunCompute(RefereeJob)). `PartyMachine` answers queries by
asking its shell for the value (RunCompute(ClaimJob)/RevealJob) and sending it back. The
tensor work behind a ClaimJob (honest or an attack's strategy) lives in the shell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from protocol.commands import (
    CancelTimer,
    Command,
    ComputeDone,
    Event,
    Log,
    MessageReceived,
    Publish,
    RunCompute,
    SendTo,
    SetTimer,
    Tick,
    TimerFired,
)
from protocol.errors import PolnetError
from protocol.pol.jobs import ClaimJob, ClaimResult, RefereeJob, RefereeResult, RevealJob, RevealResult
from protocol.pol.messages import (
    DisputeOpen,
    DisputeResolved,
    OpOutputs,
    OpReveal,
    PinpointClaim,
    PinpointQuery,
)
from protocol.pol.ops import OpDesc, state_slots_per_param, step_ops
from protocol.pol.pinpoint import (
    Dispute,
    Phase,
    Side,
    claimed_outputs,
    diverging_op,
    op_inputs,
    open_dispute,
    process_claim,
    process_referee_result,
    process_reveal,
    process_timeout,
    round_bound,
)
from protocol.pol.spec import TaskSpec, param_shapes

TOPIC_DISPUTES = "polnet/disputes/1"
#: Referee FLOPs charged for one op: a generous fixed price (one op is tiny vs a step).
REFEREE_FLOPS = 10**6


@dataclass(frozen=True)
class Geometry:
    """What the game bisects over: one step's ops, and how many of the state's tensors
    are weights and how many the rest. A task's comes from its spec (`spec_geometry`); a
    crew member's from its stage's layout (protocol/pol/crew_ops.py)."""

    ops: tuple[OpDesc, ...]
    n_weights: int
    n_optimizer: int


def spec_geometry(spec: TaskSpec) -> Geometry:
    n = len(param_shapes(spec))
    return Geometry(tuple(step_ops(spec)), n, n * state_slots_per_param(spec))


class GameMachine:
    """Coordinates one dispute; in the market the ledger plays this role. `spec` is None
    for a crew member's step, whose `geometry` is then required."""

    def __init__(
        self, spec: TaskSpec | None, opened: DisputeOpen, tolerance: float, geometry: Geometry | None = None
    ) -> None:
        if geometry is None:
            if spec is None:
                raise ValueError("a game without a spec needs its geometry")
            geometry = spec_geometry(spec)
        self.spec, self.opened, self.tolerance, self.geometry = spec, opened, tolerance, geometry
        self.dispute: Dispute | None = None
        self._asked = (0, 0)

    def _timer_key(self) -> str:
        return f"pinpoint/{self.opened.dispute_id.hex()}"

    def handle(self, now: int, event: Event) -> Sequence[Command]:
        try:
            return self._handle(now, event)
        except PolnetError as exc:  # a bad move is refused, never fatal
            return [Log("warning", "pinpoint.rejected", (("error", str(exc)),))]

    def _handle(self, now: int, event: Event) -> list[Command]:
        if isinstance(event, Tick) and self.dispute is None:
            g = self.geometry
            self.dispute = open_dispute(self.opened, list(g.ops), g.n_weights, g.n_optimizer, now)
            return self._next(now)
        d = self.dispute
        if d is None:
            return []
        if isinstance(event, TimerFired) and event.key == self._timer_key():
            process_timeout(d, now)
        elif isinstance(event, MessageReceived):
            side = self._side(event.sender)
            if side is None:
                return []
            if isinstance(event.body, PinpointClaim):
                process_claim(d, side, event.body, now)
            elif isinstance(event.body, OpReveal):
                process_reveal(d, side, event.body, now)
        elif isinstance(event, ComputeDone) and isinstance(event.result, RefereeResult):
            process_referee_result(d, event.result.defender_ok, event.result.challenger_ok)
        return self._next(now)

    def _side(self, sender: bytes) -> Side | None:
        if sender == self.opened.defender:
            return Side.DEFENDER
        if sender == self.opened.challenger:
            return Side.CHALLENGER
        return None

    def _next(self, now: int) -> list[Command]:
        """Commands for whatever the dispute now waits on (each asked once)."""
        d = self.dispute
        assert d is not None
        key = (int(d.phase), d.round)
        if key == self._asked:
            return []
        self._asked = key
        if d.phase is Phase.DONE:
            return [CancelTimer(self._timer_key()), Publish(TOPIC_DISPUTES, self.resolution())]
        if d.phase is Phase.REFEREE:
            return [
                CancelTimer(self._timer_key()),
                RunCompute(f"referee/{d.opened.dispute_id.hex()}", self.referee_job(), REFEREE_FLOPS),
            ]
        index = diverging_op(d) if d.phase is Phase.REVEAL else d.query_index
        step = d.opened.start_step + index if d.phase is Phase.STEP else d.global_step
        query = PinpointQuery(d.opened.dispute_id, int(d.phase), d.round, index, step, d.deadline)
        return [
            SetTimer(d.deadline + 1, self._timer_key()),
            SendTo(self.opened.defender, query),
            SendTo(self.opened.challenger, query),
        ]

    def referee_job(self) -> RefereeJob:
        d = self.dispute
        assert d is not None
        return RefereeJob(
            d.opened.dispute_id,
            self.spec,
            d.global_step,
            diverging_op(d),
            op_inputs(d),
            OpOutputs(claimed_outputs(d, Side.DEFENDER)),
            OpOutputs(claimed_outputs(d, Side.CHALLENGER)),
            self.tolerance,
        )

    def resolution(self) -> DisputeResolved:
        d = self.dispute
        assert d is not None
        return DisputeResolved(
            d.opened.dispute_id, int(d.outcome), d.global_step, max(d.hi, 0), d.rounds, d.reason[:256]
        )

    @property
    def rounds_bound(self) -> int:
        return round_bound(self.opened.interval, len(self.geometry.ops))


class PartyMachine:
    """One side of a dispute: turns queries into compute jobs and results into moves."""

    def __init__(self, opened: DisputeOpen, coordinator: bytes) -> None:
        self.opened, self.coordinator = opened, coordinator

    def handle(self, now: int, event: Event) -> Sequence[Command]:
        if isinstance(event, MessageReceived) and isinstance(event.body, PinpointQuery):
            return self._on_query(event.body)
        if isinstance(event, ComputeDone) and isinstance(event.result, ClaimResult):
            r = event.result
            return [SendTo(self.coordinator, PinpointClaim(r.dispute_id, r.phase, r.round, r.index, r.value))]
        if isinstance(event, ComputeDone) and isinstance(event.result, RevealResult):
            r2 = event.result
            return [SendTo(self.coordinator, OpReveal(r2.dispute_id, r2.weights, r2.optimizer, r2.prefix))]
        return []

    def _on_query(self, q: PinpointQuery) -> list[Command]:
        if q.dispute_id != self.opened.dispute_id:
            return []
        job_id = f"pinpoint/{q.dispute_id.hex()}/{q.round}"
        if q.phase == Phase.REVEAL:
            return [RunCompute(job_id, RevealJob(q.dispute_id, q.step, q.index), 0)]
        return [RunCompute(job_id, ClaimJob(q.dispute_id, q.phase, q.round, q.index, q.step), 0)]
