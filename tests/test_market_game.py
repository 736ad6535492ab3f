"""The ledger's bisection game played on real digests: pol's synthetic trainer and torch.

Each case trains a solver (honest or a catalog cheat) with the market scenario's compute
shell, then plays the ledger rules of `protocol.market.game` between the solver and an
accuser: the defender opens with Merkle membership proofs of the segment's committed
checkpoints, both sides post the digests of their own traces, and a validator re-executes
the one operation left. The game must end on one operation within
ceil(log2 k) + ceil(log2 ops_per_step) rounds, and the referee must side with the truth.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from netsim.scenarios.market import MarketConfig, build_tasks
from netsim.scenarios.market.compute import BISECTION_ATTACKS, SYNTHETIC_ATTACKS, MarketCompute
from protocol.encoding import sha256
from protocol.market.errors import BadProof, NotAuthorized
from protocol.market.game import (
    apply_claim,
    apply_open,
    apply_reply,
    apply_reveal,
    max_rounds,
    start_next_game,
)
from protocol.market.jobs import (
    ArbitrationJob,
    MarketTrainJob,
    MarketTrainResult,
    RevealJob,
    SegmentCheckJob,
    StateHashJob,
    facts_of,
)
from protocol.market.state import MarketState, Status, Task
from protocol.market.txs import GameOpen, GameReveal, SubmitTask
from protocol.pol.merkle import inclusion_proof, leaf_hash
from protocol.pol.messages import OpOutputs
from protocol.pol.pinpoint import round_bound

SOLVER, ACCUSER, VALIDATOR = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32


def ask(compute: MarketCompute, who: bytes, task: Task, job: object) -> Any:
    return compute.engine_of(who).run(facts_of(task), job)


Setup = tuple[MarketCompute, MarketState, Task, MarketTrainResult]


def setup(mode: str, attack: str | None, index: int = 0) -> Setup:
    cfg = MarketConfig(tasks=index + 1, compute=mode, steps=40, interval=10)
    submits, specs = build_tasks(cfg)
    tx: SubmitTask = submits[index]
    compute = MarketCompute({SOLVER: attack} if attack else {}, mode, specs, seed=1)
    task = Task(sha256(b"task" + bytes([index])), b"\x09" * 32, tx.spec_hash, tx.gflops, tx.steps,
                tx.checkpoint_interval, tx.ops_per_step, tx.device, 1, True, tx.max_price_per_gflop, 0, 0,
                solver=SOLVER)
    trained = ask(compute, SOLVER, task, MarketTrainJob(task.task_id, task.spec_hash))
    task.proof_root = trained.merkle_root
    state = MarketState()
    state.tasks[task.task_id] = task
    return compute, state, task, trained


def open_tx(task: Task, trained: MarketTrainResult, segment: int) -> GameOpen:
    hashes = [leaf_hash(x) for x in trained.leaves]
    return GameOpen(task.task_id, trained.leaves[segment], inclusion_proof(hashes, segment),
                    trained.leaves[segment + 1], inclusion_proof(hashes, segment + 1), 0, 0)


def play(compute: MarketCompute, state: MarketState, task: Task, trained: MarketTrainResult,
         segment: int, lying_accuser: bool = False) -> tuple[bool, int]:
    """Play one game to arbitration; returns (the referee's verdict for the defender, rounds)."""
    task.status, task.accusers = Status.FORCED_REVEAL, [ACCUSER]
    assert start_next_game(state, task) and task.game is not None
    task.game.segment = segment
    apply_open(state, task, SOLVER, open_tx(task, trained, segment))
    while task.status == Status.DISPUTE:
        game = task.game
        mid = (game.lo + game.hi) // 2
        mine = ask(compute, SOLVER, task, StateHashJob(task.task_id, segment, mid, True))
        apply_claim(state, task, SOLVER, game.round, mine.digest)
        theirs = ask(compute, ACCUSER, task, StateHashJob(task.task_id, segment, mid, False)).digest
        apply_reply(state, task, ACCUSER, game.round, sha256(theirs) if lying_accuser else theirs)
    game = task.game
    assert task.status == Status.ARBITRATION and game is not None and game.hi - game.lo == 1
    # The defender reveals the digests behind the agreed position; the ledger checks them.
    r = ask(compute, SOLVER, task, RevealJob(task.task_id, segment, game.lo))
    prefix = tuple(OpOutputs(o) for o in r.prefix)
    reveal = GameReveal(task.task_id, game.round, r.weights, r.optimizer, prefix, OpOutputs(r.claimed), 0, 0)
    apply_reveal(state, task, SOLVER, reveal)
    assert game.reveal is not None
    job = ArbitrationJob(task.task_id, segment, game.lo, game.reveal.weights, game.reveal.optimizer,
                         game.reveal.prefix, game.reveal.claimed, game.hi_hash, 0)
    return ask(compute, VALIDATOR, task, job).defender_right, game.round


def segment_ok(compute: MarketCompute, task: Task, segment: int) -> bool:
    assert task.proof_root is not None
    job = SegmentCheckJob(task.task_id, task.proof_root, segment, 0)
    return bool(ask(compute, ACCUSER, task, job).passed)


def first_bad_segment(compute: MarketCompute, task: Task) -> int:
    return next(s for s in range(task.n_segments) if not segment_ok(compute, task, s))


CHEATS = sorted(set(SYNTHETIC_ATTACKS) - set(BISECTION_ATTACKS))


@pytest.mark.parametrize("attack", CHEATS)
def test_synthetic_cheat_is_pinned_to_one_operation_and_loses_arbitration(attack: str) -> None:
    compute, state, task, trained = setup("synthetic", attack)
    defender_right, rounds = play(compute, state, task, trained, first_bad_segment(compute, task))
    assert not defender_right
    assert rounds <= max_rounds(task) <= round_bound(task.checkpoint_interval, task.ops_per_step)


def test_honest_solver_beats_an_accuser_who_posts_false_digests() -> None:
    compute, state, task, trained = setup("synthetic", None)
    assert all(segment_ok(compute, task, s) for s in range(task.n_segments))
    defender_right, rounds = play(compute, state, task, trained, 2, lying_accuser=True)
    assert defender_right and rounds <= round_bound(task.checkpoint_interval, task.ops_per_step)


def test_open_with_a_checkpoint_outside_the_committed_proof_is_refused() -> None:
    _, state, task, trained = setup("synthetic", None)
    task.status, task.accusers = Status.FORCED_REVEAL, [ACCUSER]
    start_next_game(state, task)
    good = open_tx(task, trained, 0)
    forged = replace(good, end=replace(good.end, weights_hash=b"\x07" * 32))
    with pytest.raises(BadProof):
        apply_open(state, task, SOLVER, forged)
    with pytest.raises(BadProof):  # right leaves, wrong segment
        apply_open(state, task, SOLVER, open_tx(task, trained, 1))
    with pytest.raises(NotAuthorized):
        apply_open(state, task, ACCUSER, good)
    apply_open(state, task, SOLVER, good)
    assert task.game is not None and task.game.opened


@pytest.mark.parametrize("attack", ["skipped_steps", "interpolated", "noisy_weights"])
def test_torch_cheat_is_pinned_on_real_tensor_digests(attack: str) -> None:
    compute, state, task, trained = setup("torch", attack)
    defender_right, rounds = play(compute, state, task, trained, first_bad_segment(compute, task))
    assert not defender_right
    assert rounds <= round_bound(task.checkpoint_interval, task.ops_per_step)
