"""The task lifecycle as one table: what each status accepts, where it may go, and the
one `enter()` through which every status change passes.

Why one table (h11's `_state.py` is the model): a task's status used to be written in
five modules, each with its own idea of which transitions exist, so nothing but reading
all of them told whether, say, a REVEAL task could go back to PROVED. Here every status
names the transactions it accepts, the parameter that sets its usual deadline, and the
statuses it may move to; `enter()` refuses any other move, records the height it
happened at (`stage_since`) and sets the deadline, and it is the only code that writes
`Task.status` (a test walks the source tree to keep it so). The block step that runs at
each status's deadline is registered here by `protocol.market.blocks` (`on_block`), so
this table is where a reader finds the whole machine; a test checks every non-terminal
status has exactly one.

`docs/market.md`'s "Stages and deadlines" table is checked against this one by a test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from protocol.market.errors import IllegalTransition, UnknownTask, WrongStage
from protocol.market.state import TERMINAL, MarketState, Status, Task
from protocol.market.txs import (
    ArbitrationVote,
    BisectClaim,
    BisectReply,
    CancelTask,
    Challenge,
    CrewAbort,
    CrewCommit,
    ForcedErrorReveal,
    GameOpen,
    GameReveal,
    KeyWrap,
    KeyWrapFault,
    ProfileReport,
    ProveCommit,
    VerdictCommit,
    VerdictReveal,
)

S = Status
#: A private task's key moves in every open status (a party elected at any stage needs it).
_KEYS = (KeyWrap, KeyWrapFault)


@dataclass(frozen=True, slots=True)
class Stage:
    """One status of a task: the txs it accepts, the `MarketParams` field that sets its
    usual deadline (None where the deadline is computed, or for a terminal status), and
    the statuses it may move to."""

    accepts: tuple[type[Any], ...]
    window: str | None
    successors: frozenset[Status]
    doc: str


def _to(*statuses: Status) -> frozenset[Status]:
    return frozenset(statuses)


STAGES: Mapping[Status, Stage] = {
    S.OPEN: Stage((CancelTask, *_KEYS), "placement_blocks", _to(S.TRAINING, S.REFUNDED),
                  "fee escrowed; waiting for a solver (and profilers) to be elected"),
    S.TRAINING: Stage((ProfileReport, ProveCommit, CrewCommit, CrewAbort, *_KEYS), None,
                      _to(S.PROVED, S.OPEN, S.REFUNDED),
                      "the solver (or each crew member) trains; profilers set the distance threshold"),
    S.PROVED: Stage(_KEYS, "placement_blocks", _to(S.COMMIT, S.REFUNDED),
                    "proof committed and profiled; verifiers are elected at a later block"),
    S.COMMIT: Stage((VerdictCommit, *_KEYS), "commit_blocks", _to(S.COMMIT, S.REVEAL, S.REFUNDED),
                    "verifiers commit H(verdict, salt)"),
    S.REVEAL: Stage((VerdictReveal, *_KEYS), "reveal_blocks", _to(S.CHALLENGE, S.PROVED, S.REFUNDED),
                    "verifiers reveal their verdicts"),
    S.CHALLENGE: Stage((Challenge, *_KEYS), "challenge_window_blocks", _to(S.FORCED_REVEAL),
                       "any staked node may challenge a verdict"),
    S.FORCED_REVEAL: Stage((ForcedErrorReveal, *_KEYS), "forced_reveal_blocks",
                           _to(S.DISPUTE, S.ARBITRATION, S.SETTLED, S.PROVED),
                           "verifiers reveal their duty secrets; accusers are queued"),
    S.DISPUTE: Stage((GameOpen, BisectClaim, BisectReply, *_KEYS), "move_blocks",
                     _to(S.DISPUTE, S.ARBITRATION, S.SETTLED),
                     "the defender and one accuser bisect to one operation"),
    # ARBITRATION -> ARBITRATION: the next game is an availability vote.
    S.ARBITRATION: Stage((GameReveal, ArbitrationVote, *_KEYS), "arbitration_blocks",
                         _to(S.DISPUTE, S.ARBITRATION, S.SETTLED, S.REFUNDED),
                         "the defender reveals the operation's inputs; validators re-execute it and vote "
                         "(or, for a verifier that could not fetch its segment, try to fetch it and vote)"),
    S.SETTLED: Stage((), None, _to(), "judged, paid, slashed, refunded"),
    S.REFUNDED: Stage((), None, _to(), "ended without judging anyone; escrow returned"),
}

#: The block step that runs for a task in each non-terminal status (see `on_block`).
Step = Callable[[MarketState, Task], None]
_STEPS: dict[Status, Step] = {}


def on_block(status: Status) -> Callable[[Step], Step]:
    """Register the end-of-block step of `status` (its deadline handler)."""

    def register(fn: Step) -> Step:
        if status in _STEPS or status in TERMINAL:
            raise ValueError(f"a block step for {status.name} is already registered, or it is terminal")
        _STEPS[status] = fn
        return fn

    return register


def block_step(status: Status) -> Step:
    return _STEPS[status]


def registered_steps() -> dict[Status, Step]:
    return dict(_STEPS)


# --- transitions -------------------------------------------------------------------------------


def create(state: MarketState, task: Task) -> None:
    """A new task starts OPEN, with the placement deadline."""
    task.status = Status.OPEN
    task.stage_since = state.height
    task.deadline = state.height + state.params.placement_blocks


def enter(state: MarketState, task: Task, status: Status, blocks: int) -> None:
    """Move `task` to `status` with a deadline `blocks` from now (0 for a terminal status).

    The only writer of `Task.status`."""
    # Rule: only the transitions the table lists exist.
    if status not in STAGES[task.status].successors:
        raise IllegalTransition(f"task {task.task_id.hex()[:16]}: {task.status.name} -> {status.name}")
    task.status = status
    task.stage_since = state.height
    task.deadline = state.height + blocks


def extend(state: MarketState, task: Task, blocks: int) -> None:
    """A move inside a stage (a bisection move, a crew member's abort) sets its deadline
    anew, status unchanged."""
    task.deadline = state.height + blocks


def window(state: MarketState, status: Status) -> int:
    """The usual deadline of `status`, in blocks, from the chain's parameters."""
    name = STAGES[status].window
    if name is None:
        raise ValueError(f"{status.name} has no fixed window")
    return int(getattr(state.params, name))


def task_for(state: MarketState, task_id: bytes, tx: Any) -> Task:
    """The task a tx names, if its status accepts that tx."""
    task = state.tasks.get(task_id)
    # Rule: the task exists (or has not been pruned yet).
    if task is None:
        raise UnknownTask(f"no task {task_id.hex()[:16]}")
    # Rule: the task's status accepts this kind of tx.
    if type(tx) not in STAGES[task.status].accepts:
        wanted = [s.name for s, stage in STAGES.items() if type(tx) in stage.accepts]
        raise WrongStage(f"task is {task.status.name}, {type(tx).__name__} needs {'/'.join(wanted)}")
    return task
