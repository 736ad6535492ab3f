"""The pinpoint game: narrow a disputed segment to one step, then to one operation.

Two parties (the defender, whose checkpoint is disputed, and the challenger) agree on
the state at the start of a segment and disagree on its end. The coordinator (the
ledger in the market; a plain machine in tests) asks both for their value at the
midpoint and keeps the half where they first disagree:

1. Step phase, over steps [0, k] of the segment: values are state hashes. After
   ceil(log2 k) rounds: agreed state at step s, disagreement at s+1.
2. Op phase, over the ops of step s (see `protocol.pol.ops`): values are op-chain
   hashes. After ceil(log2 ops) rounds: agreed chain up to op j-1, disagreement at j.
3. Reveal: each party shows the digests behind its chain. Anything inconsistent with
   its own earlier answers loses.
4. Referee: op j is re-executed from the (now hash-checked) agreed inputs; the claim that
   matches the re-execution wins.

Every query carries a deadline; a party that has not answered by then loses (silence
loses). Rules are written as `process_*` functions over a `Dispute` so the ledger can
apply them as transactions; `GameMachine` wraps them as a sans-IO core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

from protocol.errors import ValidationError
from protocol.pol.messages import DisputeOpen, OpReveal, PinpointClaim
from protocol.pol.ops import (
    START,
    OpDesc,
    OpKind,
    chain_start,
    chain_values,
    group_hash,
    op_digest,
    state_hash,
)

#: Time a party has to answer one query (compute of up to k/2 steps plus transport).
MOVE_TIMEOUT_MS = 60_000


class Phase(IntEnum):
    STEP = 1
    OP = 2
    REVEAL = 3
    REFEREE = 4
    DONE = 5


class Side(IntEnum):
    DEFENDER = 0
    CHALLENGER = 1


class Outcome(IntEnum):
    PENDING = 0
    DEFENDER_WINS = 1
    CHALLENGER_WINS = 2
    BOTH_WRONG = 3


def round_bound(interval: int, ops_per_step: int) -> int:
    """The most bisection rounds a dispute can take: ceil(log2 k) + ceil(log2 ops)."""
    return math.ceil(math.log2(interval)) + math.ceil(math.log2(ops_per_step))


@dataclass
class Dispute:
    """Everything the coordinator knows about one dispute (ledger state)."""

    opened: DisputeOpen
    ops: list[OpDesc]
    n_weights: int
    n_optimizer: int
    phase: Phase = Phase.STEP
    lo: int = 0
    hi: int = 0
    lo_value: bytes = b""
    #: each side's value at `hi` in the current phase
    hi_values: list[bytes] = field(default_factory=list)
    step: int = 0  # segment-relative step found by the step phase
    step_start: bytes = b""
    step_end: list[bytes] = field(default_factory=list)
    round: int = 0
    rounds: int = 0
    deadline: int = 0
    answers: list[bytes | None] = field(default_factory=lambda: [None, None])
    op_answers: list[dict[int, bytes]] = field(default_factory=lambda: [{}, {}])
    reveals: list[OpReveal | None] = field(default_factory=lambda: [None, None])
    outcome: Outcome = Outcome.PENDING
    reason: str = ""

    @property
    def query_index(self) -> int:
        return (self.lo + self.hi) // 2

    @property
    def global_step(self) -> int:
        return self.opened.start_step + self.step


# --- rules ------------------------------------------------------------------------------------


def open_dispute(
    opened: DisputeOpen, ops: list[OpDesc], n_weights: int, n_optimizer: int, now: int
) -> Dispute:
    # Rule: a dispute needs an actual disagreement about the segment's end.
    if opened.defender_end == opened.challenger_end:
        raise ValidationError("defender and challenger claim the same end state")
    # Rule: the parties must be two different keys.
    if opened.defender == opened.challenger:
        raise ValidationError("a party cannot dispute itself")
    # Rule: a segment has at least one step.
    if opened.interval < 1 or not ops or ops[-1].kind is not OpKind.STATE:
        raise ValidationError("malformed dispute geometry")
    d = Dispute(opened, ops, n_weights, n_optimizer)
    d.lo, d.hi, d.lo_value = 0, opened.interval, opened.start_hash
    d.hi_values = [opened.defender_end, opened.challenger_end]
    _advance(d, now)
    return d


def _finish(d: Dispute, outcome: Outcome, reason: str) -> None:
    d.phase, d.outcome, d.reason = Phase.DONE, outcome, reason


def _loser_outcome(losers: list[Side]) -> Outcome:
    if len(losers) == 2:
        return Outcome.BOTH_WRONG
    return Outcome.CHALLENGER_WINS if losers[0] is Side.DEFENDER else Outcome.DEFENDER_WINS


def _begin_op_phase(d: Dispute) -> None:
    d.step, d.step_start, d.step_end = d.lo, d.lo_value, list(d.hi_values)
    d.phase = Phase.OP
    # Op -1 is the agreed start state; the last op (STATE) yields each side's end hash.
    d.lo, d.hi, d.lo_value = START, len(d.ops) - 1, chain_start(d.step_start)
    d.hi_values = [b"", b""]


def _advance(d: Dispute, now: int) -> None:
    """Move to the next query, the next phase, or the reveal."""
    if d.phase is Phase.STEP and d.hi - d.lo <= 1:
        _begin_op_phase(d)
    if d.phase is Phase.OP and d.hi - d.lo <= 1:
        d.phase = Phase.REVEAL
    if d.phase in (Phase.STEP, Phase.OP):
        d.rounds += 1
    d.round += 1
    d.answers = [None, None]
    d.deadline = now + MOVE_TIMEOUT_MS


def process_claim(d: Dispute, side: Side, claim: PinpointClaim, now: int) -> None:
    """Apply one party's answer to the current query."""
    # Rule: moves are only accepted while bisecting.
    if d.phase not in (Phase.STEP, Phase.OP):
        raise ValidationError(f"no bisection query open (phase {d.phase.name})")
    # Rule: the claim must answer exactly the open query.
    if (claim.dispute_id, claim.phase, claim.round, claim.index) != (
        d.opened.dispute_id,
        int(d.phase),
        d.round,
        d.query_index,
    ):
        raise ValidationError("claim does not answer the open query")
    # Rule: answers after the deadline do not count (the timeout rule decides instead).
    if now > d.deadline:
        raise ValidationError("claim after the deadline")
    previous = d.answers[side]
    # Rule: a second, different answer to the same query is equivocation and loses.
    if previous is not None:
        if previous != claim.value:
            _finish(d, _loser_outcome([side]), f"{side.name.lower()} equivocated at round {d.round}")
        return
    d.answers[side] = claim.value
    if d.phase is Phase.OP:
        d.op_answers[side][claim.index] = claim.value
    if d.answers[0] is not None and d.answers[1] is not None:
        _settle_round(d, now)


def _settle_round(d: Dispute, now: int) -> None:
    a, b = d.answers
    assert a is not None and b is not None
    mid = d.query_index
    if a == b:
        d.lo, d.lo_value = mid, a
    else:
        d.hi, d.hi_values = mid, [a, b]
    _advance(d, now)


def process_timeout(d: Dispute, now: int) -> None:
    """Silence loses: whoever has not answered the open query by its deadline."""
    # Rule: only a passed deadline of a phase that waits on the parties can end a dispute.
    if now < d.deadline or d.phase not in (Phase.STEP, Phase.OP, Phase.REVEAL):
        return
    silent = [
        s for s in Side if (d.answers[s] is None if d.phase is not Phase.REVEAL else d.reveals[s] is None)
    ]
    if silent:
        _finish(d, _loser_outcome(silent), "silent: " + ", ".join(s.name.lower() for s in silent))


# --- reveal -------------------------------------------------------------------------------------


def diverging_op(d: Dispute) -> int:
    """The op both parties disagree on first (valid from the reveal on)."""
    return d.hi


def _reveal_problem(d: Dispute, side: Side, rv: OpReveal) -> str | None:
    """Why a reveal is inconsistent with its author's earlier answers, or None."""
    j = diverging_op(d)
    ops = d.ops
    # Rule: the revealed start state is the agreed one, with the right tensor counts.
    if len(rv.weights) != d.n_weights or len(rv.optimizer) != d.n_optimizer:
        return "wrong number of state tensors"
    if state_hash(group_hash(rv.weights), group_hash(rv.optimizer)) != d.step_start:
        return "start state does not hash to the agreed state"
    # Rule: one output list per op up to j, each with the op's output count.
    if len(rv.prefix) != j + 1:
        return f"prefix has {len(rv.prefix)} ops, expected {j + 1}"
    if any(len(o.digests) != ops[i].n_outputs for i, o in enumerate(rv.prefix)):
        return "an op has the wrong number of outputs"
    chain = chain_values(d.step_start, [o.digests for o in rv.prefix])
    # Rule: the chain must reproduce every value this side claimed during the op phase.
    for idx, value in d.op_answers[side].items():
        if idx <= j and chain[idx] != value:
            return f"chain differs from its own claim at op {idx}"
    # Rule: up to j-1 the chain is the agreed one.
    if j >= 1 and chain[j - 1] != d.lo_value:
        return "prefix does not reach the agreed chain value"
    # Rule: the last op's output is the side's claimed end-of-step state.
    if j == len(ops) - 1 and op_digest(rv.prefix[j].digests) != d.step_end[side]:
        return "final state differs from its step-phase claim"
    return None


def process_reveal(d: Dispute, side: Side, rv: OpReveal, now: int) -> None:
    # Rule: reveals only in the reveal phase, before the deadline, once per side.
    if d.phase is not Phase.REVEAL or rv.dispute_id != d.opened.dispute_id:
        raise ValidationError("no reveal expected")
    if now > d.deadline:
        raise ValidationError("reveal after the deadline")
    if d.reveals[side] is not None:
        return
    d.reveals[side] = rv
    if d.reveals[0] is None or d.reveals[1] is None:
        return
    problems = [s for s in Side if _reveal_problem(d, s, d.reveals[s]) is not None]  # type: ignore[arg-type]
    if problems:
        _finish(
            d, _loser_outcome(problems), "inconsistent reveal: " + ", ".join(s.name.lower() for s in problems)
        )
        return
    d.phase = Phase.REFEREE
    if d.ops[diverging_op(d)].kind is OpKind.STATE:
        _referee_state_op(d)


def op_inputs(d: Dispute) -> tuple[bytes, ...]:
    """Digests of the diverging op's inputs, from the (agreed) revealed prefix."""
    rv = d.reveals[Side.DEFENDER]
    assert rv is not None
    start = (*rv.weights, *rv.optimizer)
    return tuple(
        start[r.slot] if r.op == START else rv.prefix[r.op].digests[r.slot]
        for r in d.ops[diverging_op(d)].inputs
    )


def claimed_outputs(d: Dispute, side: Side) -> tuple[bytes, ...]:
    rv = d.reveals[side]
    assert rv is not None
    return rv.prefix[diverging_op(d)].digests


def _referee_state_op(d: Dispute) -> None:
    """The STATE op is pure hashing: decide without any tensor work."""
    inputs = op_inputs(d)
    n = d.n_weights
    truth = (group_hash(inputs[:n]), group_hash(inputs[n:]))
    process_referee_result(
        d, claimed_outputs(d, Side.DEFENDER) == truth, claimed_outputs(d, Side.CHALLENGER) == truth
    )


def process_referee_result(d: Dispute, defender_ok: bool, challenger_ok: bool) -> None:
    """Decide from the re-executed op. The defender's work stands if it is right, even
    when the challenger is right too (a difference within tolerance is no fault)."""
    # Rule: only a dispute waiting on the referee can be decided by it.
    if d.phase is not Phase.REFEREE:
        raise ValidationError("no referee decision expected")
    op = d.ops[diverging_op(d)]
    where = f"op {diverging_op(d)} ({op.kind.name} {op.index}) of step {d.global_step}"
    if defender_ok:
        _finish(d, Outcome.DEFENDER_WINS, f"defender's output matches at {where}")
    elif challenger_ok:
        _finish(d, Outcome.CHALLENGER_WINS, f"challenger's output matches at {where}")
    else:
        _finish(d, Outcome.BOTH_WRONG, f"neither output matches at {where}")
