"""A crew task through the market's stage table (protocol/market: process, blocks, game,
settle): submit with `stages x data_parallel`, the whole crew elected or nobody, each
member committing its own proof, one verifier per member, a disputed member judged by the
validators' own re-execution, and settlement that pays every member but the convicted,
who alone is slashed. A member that vanishes dissolves the crew: it alone is slashed
(for silence) and the task is placed again with a new crew, or refunded."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from protocol.encoding import sha256
from protocol.market.crews import member_gflops, shape_of
from protocol.market.errors import NotAuthorized, OutOfBounds
from protocol.market.params import DEVNET
from protocol.market.process import task_id_of
from protocol.market.settle import compute_cost
from protocol.market.state import NO_BASE, GameKind, PenaltyKind, Status, Task
from protocol.market.store import freeze_task, thaw_task
from protocol.market.txs import (
    ArbitrationVote,
    Challenge,
    CrewAbort,
    CrewCommit,
    DeviceClass,
    SubmitTask,
    Verdict,
)
from tests.test_market_rules import refused, until
from tests.test_market_world import World

STAGES, REPLICAS = 2, 2
SIZE = STAGES * REPLICAS
STEPS, INTERVAL = 640, 10


def crew_submit(salt: int = 0, **kw: Any) -> SubmitTask:
    base = dict(spec_hash=sha256(b"crew spec"), gflops=4_000, steps=STEPS, checkpoint_interval=INTERVAL,
                ops_per_step=8, device=DeviceClass.CPU, min_memory_mb=1024, reproducible=True,
                max_price_per_gflop=40, salt=salt, base_root=NO_BASE, nonce=0, fee=0,
                stages=STAGES, data_parallel=REPLICAS)
    return SubmitTask(**{**base, **kw})  # type: ignore[arg-type]


@dataclass
class CrewWorld(World):
    """The scripted market world with crew members: each member commits its proof (a
    `cheater` commits one that does not re-execute), an `aborter` says the crew stopped,
    a `silent` member says nothing; verifiers and validators see the truth per member."""

    n_workers: int = 10
    cheaters: set[bytes] = field(default_factory=set)

    def submit_crew(self, **kw: Any) -> bytes:
        tx = crew_submit(**kw)
        err = self.apply(self.submitter, tx)
        assert err is None, err
        return task_id_of(self.submitter, tx)

    def honest(self, task: Task, rank: int) -> bool:
        return task.crew[rank] not in self.cheaters

    def _training(self, task: Task) -> list[tuple[bytes, Any]]:
        if not task.is_crew:
            return super()._training(task)
        out: list[tuple[bytes, Any]] = []
        for rank, member in enumerate(task.crew):
            if task.crew_commits[rank] or member in task.crew_aborts or not self.acts(member):
                continue
            if self.behaviour.get(member) == "aborter" or any(
                    self.behaviour.get(m) == "silent" for m in task.crew):
                out.append((member, CrewAbort(task.task_id, 5, 0, 0)))  # its crew stopped
                continue
            commitment = sha256(b"record" + task.task_id + member)
            out.append((member, CrewCommit(task.task_id, commitment, task.n_segments + 1, 0, 0)))
        return out

    def verdict_for(self, task: Task, pk: bytes, segment: int) -> Verdict:
        if not task.is_crew:
            return super().verdict_for(task, pk, segment)
        truth = self.honest(task, segment)
        kind = self.behaviour.get(pk, "honest")
        accept = {"lazy": True, "false_accuser": False}.get(kind, truth)
        if kind == "honest" and self.forced(task, pk):
            accept = not truth
        return Verdict(accept, segment, 0)

    def _challenge(self, task: Task) -> list[tuple[bytes, Any]]:
        if not task.is_crew:
            return super()._challenge(task)
        from protocol.market.process import challenge_bond

        out: list[tuple[bytes, Any]] = []
        mine = {c.target for c in task.challenges if c.challenger == self.watcher_key}
        for i, slot in enumerate(task.verifiers):
            assert slot.verdict is not None
            if self.watcher and slot.verdict.accept != self.honest(task, slot.segment) and i not in mine:
                bond = challenge_bond(self.state, task, i)
                out.append((self.watcher_key, Challenge(task.task_id, i, slot.segment, bond, 0, 0)))
        return out

    def _arbitration(self, task: Task) -> list[tuple[bytes, Any]]:
        game = task.game
        if not task.is_crew or game is None:
            return super()._arbitration(task)
        assert game.kind == GameKind.CREW  # the validators re-execute the member themselves
        right = self.honest(task, game.segment)
        return [(v, ArbitrationVote(task.task_id, game.round, right, 0, 0))
                for v in self.validators if v not in game.votes]


def paid(w: CrewWorld, task: Task, member: bytes, before: dict[bytes, int]) -> int:
    return w.state.accounts.balance(member) - before[member]


def balances(w: CrewWorld) -> dict[bytes, int]:
    return {k: w.state.accounts.balance(k) for k in w.workers}


def test_an_honest_crew_is_elected_whole_verified_member_by_member_and_each_paid_its_share() -> None:
    w = CrewWorld()
    tid = w.submit_crew()
    until(w, tid, Status.TRAINING)
    task = w.task(tid)
    assert len(task.crew) == SIZE and len(set(task.crew)) == SIZE and task.solver is None
    assert all(w.state.workers[m].jobs == 1 for m in task.crew)
    before = balances(w)
    until(w, tid, Status.COMMIT)
    task = w.task(tid)
    assert sorted(v.segment for v in task.verifiers) == list(range(SIZE))  # one verifier per member
    assert not {v.pubkey for v in task.verifiers} & set(task.crew)
    task = w.run(tid)
    assert task.status == Status.SETTLED and task.outcome == "valid" and not task.convicted
    share = member_gflops(task, shape_of(task))
    for member, price in zip(task.crew, task.crew_prices, strict=True):
        assert paid(w, task, member, before) == share * price
        assert w.state.workers[member].jobs == 0
    assert not [p for p in task.penalties if p.kind == PenaltyKind.SOLVER_CHEAT]
    assert compute_cost(task) == sum(share * p for p in task.crew_prices)


def test_one_cheating_member_alone_is_slashed_and_the_rest_of_its_crew_is_paid() -> None:
    w = CrewWorld()
    tid = w.submit_crew()
    until(w, tid, Status.TRAINING)
    cheat = w.task(tid).crew[1]
    w.cheaters.add(cheat)
    stake = w.stake(cheat)
    before = balances(w)
    task = w.run(tid)
    assert task.status == Status.SETTLED and task.outcome == "invalid"
    assert task.convicted == [cheat]
    slashed = [p for p in task.penalties if p.kind == PenaltyKind.SOLVER_CHEAT]
    assert [p.who for p in slashed] == [cheat] and w.stake(cheat) < stake
    assert paid(w, task, cheat, before) == 0
    share = member_gflops(task, shape_of(task))
    for member, price in zip(task.crew, task.crew_prices, strict=True):
        if member != cheat:
            assert paid(w, task, member, before) == share * price
            assert w.stake(member) == stake


def test_two_cheating_members_are_both_found_each_by_its_own_game() -> None:
    w = CrewWorld()
    tid = w.submit_crew()
    until(w, tid, Status.TRAINING)
    crew = w.task(tid).crew
    w.cheaters |= {crew[0], crew[3]}
    task = w.run(tid)
    assert task.status == Status.SETTLED and sorted(task.convicted) == sorted([crew[0], crew[3]])
    slashed = {p.who for p in task.penalties if p.kind == PenaltyKind.SOLVER_CHEAT}
    assert slashed == {crew[0], crew[3]}


def test_a_lazy_verifier_of_a_cheating_member_is_caught_by_the_watcher_and_slashed() -> None:
    w = CrewWorld()
    tid = w.submit_crew()
    until(w, tid, Status.COMMIT)
    task = w.task(tid)
    cheat = task.crew[2]
    w.cheaters.add(cheat)
    lazy = next(v.pubkey for v in task.verifiers if v.segment == 2)
    w.behaviour[lazy] = "lazy"
    task = w.run(tid)
    assert task.convicted == [cheat]
    assert any(p.who == lazy and p.kind == PenaltyKind.WRONG_VERDICT for p in task.penalties)


def test_a_vanished_member_alone_is_slashed_and_the_task_is_placed_with_a_new_crew() -> None:
    w = CrewWorld(n_workers=14)
    tid = w.submit_crew()
    until(w, tid, Status.TRAINING)
    first = list(w.task(tid).crew)
    gone = first[2]
    w.behaviour[gone] = "silent"
    stakes = {m: w.stake(m) for m in first}
    until(w, tid, Status.OPEN)
    task = w.task(tid)
    assert [p.who for p in task.penalties] == [gone] and task.penalties[0].kind == PenaltyKind.SILENCE
    assert all(w.stake(m) == stakes[m] for m in first if m != gone)
    assert all(w.state.workers[m].jobs == 0 for m in first)
    assert gone in task.excluded and task.crew == []
    del w.behaviour[gone]
    task = w.run(tid)
    assert task.status == Status.SETTLED and task.outcome == "valid" and gone not in task.crew


def test_a_crew_that_keeps_stopping_is_refunded_whole_by_the_rules() -> None:
    w = CrewWorld(n_workers=24)
    escrow_before = w.state.accounts.balance(w.submitter)
    tid = w.submit_crew()
    for _ in range(DEVNET.max_replacements + 1):
        until(w, tid, Status.TRAINING)
        w.behaviour[w.task(tid).crew[0]] = "aborter"
        w.block()  # every member speaks: the crew is dissolved at the next block
        w.block()
    task = w.run(tid)
    assert task.status == Status.REFUNDED and task.outcome == "too many silent parties"
    assert not task.penalties  # members that said the crew stopped are released, not slashed
    tax = task.gflops * task.max_price_per_gflop * DEVNET.jackpot_tax_bps // 10_000
    assert w.state.accounts.balance(w.submitter) == escrow_before - tax


def test_crew_submits_outside_the_rules_are_refused() -> None:
    w = CrewWorld()
    for tx in (crew_submit(stages=1, data_parallel=1), crew_submit(stages=2, data_parallel=0),
               crew_submit(gflops=4_001), crew_submit(reproducible=False),
               crew_submit(key_commit=b"k" * 32), crew_submit(stages=9, data_parallel=8)):
        refused(w, w.submitter, tx, OutOfBounds)


def test_only_a_member_commits_for_its_own_rank_once_with_every_boundary() -> None:
    w = CrewWorld()
    tid = w.submit_crew()
    until(w, tid, Status.TRAINING)
    task = w.task(tid)
    outsider = next(k for k in w.workers if k not in task.crew)
    good = CrewCommit(tid, b"c" * 32, task.n_segments + 1, 0, 0)
    refused(w, outsider, good, NotAuthorized)
    refused(w, task.crew[0], replace(good, n_boundaries=task.n_segments), OutOfBounds)
    refused(w, task.crew[0], CrewAbort(tid, STEPS + 1, 0, 0), OutOfBounds)
    assert w.apply(task.crew[0], good) is None
    refused(w, task.crew[0], good, NotAuthorized)
    refused(w, task.crew[0], CrewAbort(tid, 3, 0, 0), NotAuthorized)


def test_a_crew_task_round_trips_through_its_ledger_record() -> None:
    w = CrewWorld()
    tid = w.submit_crew()
    until(w, tid, Status.COMMIT)
    task = w.task(tid)
    assert thaw_task(tid, freeze_task(task)) == task


@pytest.mark.parametrize("seed", range(4))
def test_every_crew_task_ends_within_its_lifetime_bound_and_supply_holds(seed: int) -> None:
    w = CrewWorld(n_workers=14)
    tid = w.submit_crew(salt=seed)
    until(w, tid, Status.TRAINING)
    crew = w.task(tid).crew
    w.cheaters.add(crew[seed % SIZE])
    if seed % 2:
        w.behaviour[crew[(seed + 1) % SIZE]] = "silent"
    bound = w.bound(tid)
    task = w.run(tid, max_blocks=bound)
    assert task.status in (Status.SETTLED, Status.REFUNDED), f"seed {seed}: {task.status.name}"


def _published(commands: list[Any]) -> list[Any]:
    from protocol.commands import Publish

    return [c.msg for c in commands if isinstance(c, Publish)]


def test_a_crew_verifier_that_committed_first_reveals_only_once_the_reveal_window_opens() -> None:
    """Regression (daemons, where verifiers commit in different blocks): a verifier whose
    commitment landed while the others were still checking revealed at once, in COMMIT;
    the ledger refused the reveal, the role never sent it again, and the verifier was
    slashed for silence at REVEAL's deadline."""
    from protocol.commands import ComputeDone, RunCompute
    from protocol.market.jobs import CrewCheckResult
    from protocol.market.roles import ChainView, VerifierRole
    from protocol.market.txs import VerdictCommit, VerdictReveal
    from tests.test_market_world import secret_of

    w = CrewWorld()
    tid = w.submit_crew()
    until(w, tid, Status.COMMIT)
    task = w.task(tid)
    first = task.verifiers[0]
    role = VerifierRole(first.pubkey, secret=secret_of(first.pubkey))
    (run,) = [c for c in role.handle(0, ChainView(w.state.height, w.state)) if isinstance(c, RunCompute)]
    out = role.handle(0, ComputeDone(run.job_id, CrewCheckResult(tid, first.segment, True)))
    (commit,) = [m for m in _published(out) if isinstance(m, VerdictCommit)]
    w.block([(first.pubkey, commit)], auto=False)
    assert w.task(tid).status == Status.COMMIT  # the other verifiers are still checking
    assert not _published(role.handle(0, ChainView(w.state.height, w.state)))
    w.block()  # the others commit (scripted): REVEAL opens
    assert w.task(tid).status == Status.REVEAL
    (reveal,) = [m for m in _published(role.handle(0, ChainView(w.state.height, w.state)))
                 if isinstance(m, VerdictReveal)]
    assert w.apply(first.pubkey, reveal) is None


def test_a_whistleblower_redraws_one_crew_accept_and_its_challenge_convicts_a_lazily_passed_cheat() -> None:
    """Each crew verdict is its member's only check: the whistleblower role re-checks every
    REJECT and one ACCEPT per task, drawn from a beacon the verifiers did not know. Here
    every verifier is lazy (ACCEPTs unchecked); the member behind the drawn ACCEPT cheated."""
    from protocol.commands import ComputeDone, RunCompute
    from protocol.market.jobs import CrewCheckJob, CrewCheckResult
    from protocol.market.roles import ChainView, WhistleblowerRole

    w = CrewWorld(watcher=False)  # no scripted watcher: the real role is the only one
    tid = w.submit_crew()
    until(w, tid, Status.COMMIT)
    for slot in w.task(tid).verifiers:
        w.behaviour[slot.pubkey] = "lazy"
    until(w, tid, Status.CHALLENGE)
    task = w.task(tid)
    role = WhistleblowerRole(w.watcher_key)
    runs = [c for c in role.handle(0, ChainView(w.state.height, w.state)) if isinstance(c, RunCompute)]
    assert len(runs) == 1, "one ACCEPT of the crew is re-checked, not all of them"
    job = runs[0].job.job
    assert isinstance(job, CrewCheckJob)
    cheat = task.crew[job.rank]
    w.cheaters.add(cheat)  # the member behind the drawn verdict cheated; its verifier never looked
    lazy = next(v.pubkey for v in task.verifiers if v.segment == job.rank)
    found = CrewCheckResult(tid, job.rank, False)
    (challenge,) = _published(role.handle(0, ComputeDone(runs[0].job_id, found)))
    assert w.apply(w.watcher_key, challenge) is None
    before = w.state.accounts.balance(w.watcher_key)
    task = w.run(tid)
    assert task.convicted == [cheat]
    assert any(p.who == lazy and p.kind == PenaltyKind.WRONG_VERDICT for p in task.penalties)
    assert w.state.accounts.balance(w.watcher_key) > before  # its bond back, and the reward share


def test_one_abort_shortens_the_wait_the_others_get_a_grace_and_the_silent_alone_is_slashed() -> None:
    from protocol.market.process import CREW_ABORT_GRACE_BLOCKS

    w = CrewWorld(n_workers=14, params=replace(DEVNET, train_base_blocks=100))  # a long training window
    tid = w.submit_crew()
    until(w, tid, Status.TRAINING)
    crew = list(w.task(tid).crew)
    for m in crew:
        w.behaviour[m] = "silent"
    deadline = w.task(tid).deadline
    w.block([(crew[0], CrewAbort(tid, 4, 0, 0))], auto=False)
    aborted_at = w.state.height
    assert w.task(tid).deadline == aborted_at + CREW_ABORT_GRACE_BLOCKS < deadline
    w.block([(crew[1], CrewAbort(tid, 4, 0, 0))], auto=False)  # a neighbour says so a block later
    assert w.task(tid).deadline == aborted_at + CREW_ABORT_GRACE_BLOCKS  # (never pushed later)
    until(w, tid, Status.OPEN)
    assert w.state.height == aborted_at + CREW_ABORT_GRACE_BLOCKS
    assert sorted(p.who for p in w.task(tid).penalties) == sorted(crew[2:])  # the two that never spoke


def test_a_member_that_restarts_before_its_commit_lands_sends_it_again_instead_of_training() -> None:
    """Its crew has finished: training anew would find nobody to train with. The commitment
    is stored before the CrewCommit leaves, and a restored role sends it again."""
    from protocol.commands import ComputeDone, Persist, RunCompute
    from protocol.market.jobs import CrewTrainJob, CrewTrainResult
    from protocol.market.roles import PERSIST_CREW_COMMIT, ChainView, SolverRole

    w = CrewWorld()
    tid = w.submit_crew()
    until(w, tid, Status.TRAINING)
    task = w.task(tid)
    member = task.crew[1]
    role = SolverRole(member)
    (run,) = [c for c in role.handle(0, ChainView(w.state.height, w.state)) if isinstance(c, RunCompute)]
    assert isinstance(run.job.job, CrewTrainJob) and run.job.job.rank == 1
    done = role.handle(0, ComputeDone(run.job_id, CrewTrainResult(tid, 1, b"r" * 32, task.n_segments + 1)))
    stored = [c for c in done if isinstance(c, Persist)]
    assert [c.kind for c in stored] == [PERSIST_CREW_COMMIT]
    assert done.index(stored[0]) < next(i for i, c in enumerate(done) if c not in stored)  # stored first
    # The node dies before its commit is on the chain; it comes back from its store.
    back = SolverRole(member)
    back.restore(lambda kind: [c.value for c in stored if c.kind == kind])
    out = back.handle(0, ChainView(w.state.height, w.state))
    assert not [c for c in out if isinstance(c, RunCompute)]
    (commit,) = [m for m in _published(out) if isinstance(m, CrewCommit)]
    assert commit.commitment == b"r" * 32 and w.apply(member, commit) is None
    assert not _published(back.handle(0, ChainView(w.state.height, w.state)))  # once
