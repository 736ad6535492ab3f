"""Market transaction rules, one `process_x(state, sender, tx)` per transaction.

Each function runs every check before it changes anything (and a debit, which can fail,
is the first change), so a refused transaction leaves the state exactly as it was.
`sender` is the envelope's verified signer. Block-boundary transitions (elections,
deadlines, settlement) are in `protocol.market.blocks`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from protocol.errors import ValidationError
from protocol.market import elections
from protocol.market.crews import CrewShape, model_of, workload_of
from protocol.market.errors import (
    BadProof,
    BadReveal,
    InsufficientFunds,
    NotAuthorized,
    OutOfBounds,
    WrongStage,
)
from protocol.market.game import apply_claim, apply_open, apply_reply, apply_reveal, apply_vote
from protocol.market.params import BPS
from protocol.market.settle import refund
from protocol.market.stages import create, enter, extend, task_for
from protocol.market.state import (
    MAX_CREW,
    NO_BASE,
    ChallengeRec,
    CommittedLinks,
    MarketState,
    ProfileRec,
    Status,
    Task,
    VerifierSlot,
    Worker,
)
from protocol.market.txs import (
    ArbitrationVote,
    BisectClaim,
    BisectReply,
    CancelTask,
    Challenge,
    CommitLinks,
    CrewAbort,
    CrewCommit,
    DeregisterWorker,
    ForcedErrorReveal,
    GameOpen,
    GameReveal,
    KeyWrap,
    KeyWrapFault,
    ProfileReport,
    ProveCommit,
    RegisterWorker,
    SetEncKey,
    SubmitTask,
    VerdictCommit,
    VerdictReveal,
)
from protocol.market.wraps import check_enc_key, process_key_wrap, process_key_wrap_fault, process_set_enc_key
from protocol.pol.merkle import verify_inclusion
from protocol.pol.messages import MAX_OPS_PER_STEP
from protocol.records import record_hash
from protocol.schedule.errors import LinkReportError
from protocol.schedule.links import check_report

#: Biggest declared work a task may carry (1e18 FLOPs): bounds escrow arithmetic and the
#: training deadline; the spec's own FLOPs estimate is checked against it off-ledger.
MAX_TASK_GFLOPS = 10**9
#: Longest training run and checkpoint interval a task may declare.
MAX_STEPS = 10**7
#: Blocks a crew's other members have, after one says the crew stopped, to say so too
#: (a member whose connection broke a moment later is not silent); then the crew is
#: dissolved without waiting out the training deadline.
CREW_ABORT_GRACE_BLOCKS = 20
# MAX_OPS_PER_STEP (protocol/pol/messages.py) is the one bound on a task's ops per step:
# what a reveal's prefix can carry, so a task declaring more could never be arbitrated.


def task_id_of(sender: bytes, tx: SubmitTask) -> bytes:
    """Task ids bind the submitter, so nobody can squat another's id. Nonce and fee are left
    out so a wallet may re-stamp a submit (after a nonce gap) without changing its id."""
    return record_hash(replace(tx, nonce=0, fee=0))[:16] + sender[:16]


def _slot(task: Task, sender: bytes) -> VerifierSlot:
    for slot in task.verifiers:
        if slot.pubkey == sender:
            return slot
    raise NotAuthorized("sender is not a verifier of this task")


# --- workers ---------------------------------------------------------------------------------


def process_register_worker(state: MarketState, sender: bytes, tx: RegisterWorker) -> None:
    p = state.params
    existing = state.workers.get(sender)
    # Rule: the worker table is bounded.
    if existing is None and len(state.workers) >= p.max_workers:
        raise OutOfBounds("worker table is full")
    # Rule: a worker advertises real capacity (measured FLOPS, some memory).
    if tx.flops == 0 or tx.memory_mb == 0:
        raise OutOfBounds("capacity must be positive")
    # Rule: the total stake reaches the minimum.
    if (existing.stake if existing else 0) + tx.stake < p.min_worker_stake:
        raise OutOfBounds(f"stake below minimum {p.min_worker_stake}")
    check_enc_key(tx.enc_key)
    state.accounts.debit(sender, tx.stake)
    if tx.enc_key:
        state.enc_keys[sender] = tx.enc_key
    if existing is None:
        state.workers[sender] = Worker(sender, tx.device, tx.memory_mb, tx.flops, tx.price_per_gflop,
                                       tx.stake, tx.secret_commit, state.height)
        return
    if existing.secret_commit != tx.secret_commit:  # a fresh tree: its duty secrets start over
        existing.secret_height, existing.duty_index = state.height, 0
    existing.device, existing.memory_mb, existing.flops = tx.device, tx.memory_mb, tx.flops
    existing.price_per_gflop, existing.secret_commit = tx.price_per_gflop, tx.secret_commit
    existing.stake += tx.stake


def process_deregister_worker(state: MarketState, sender: bytes, tx: DeregisterWorker) -> None:
    worker = state.workers.get(sender)
    # Rule: only a registered worker can leave.
    if worker is None:
        raise NotAuthorized("not a registered worker")
    # Rule: stake stays while any duty is open (it backs that duty).
    if worker.jobs > 0:
        raise WrongStage(f"{worker.jobs} duties still open")
    del state.workers[sender]
    state.links.pop(sender, None)
    state.accounts.credit(sender, worker.stake)


def process_commit_links(state: MarketState, sender: bytes, tx: CommitLinks) -> None:
    # Rule: only a registered worker commits links (only workers are placed in crews, and
    # the table stays bounded by the workers, each of whom paid to register).
    if sender not in state.workers:
        raise NotAuthorized("not a registered worker")
    # Rule: one report per peer, each sound (no self-link, delay and bandwidth in range,
    # at least one measurement); the ledger has no clock, so `measured_at` is the
    # reporter's own and is not compared with anything here.
    peers = [r.peer for r in tx.reports]
    if len(set(peers)) != len(peers):
        raise OutOfBounds("one peer reported twice")
    try:
        for report in tx.reports:
            check_report(report, sender, report.measured_at)
    except LinkReportError as exc:
        raise OutOfBounds(str(exc)) from exc
    # The latest commit replaces the last; sorted by peer, one encoding per content.
    state.links[sender] = CommittedLinks(state.height, tuple(sorted(tx.reports, key=lambda r: r.peer)))


# --- stage 1: submit --------------------------------------------------------------------------


def check_submit(state: MarketState, sender: bytes, tx: SubmitTask) -> int:
    """Every rule a SubmitTask must pass, without changing anything; returns its escrow.
    The admin endpoint runs it before accepting a task, so nothing it accepts is dropped."""
    p = state.params
    task_id = task_id_of(sender, tx)
    # Rule: the id is new.
    if task_id in state.tasks:
        raise OutOfBounds("task id already used (change the salt)")
    # Rule: open tasks are bounded.
    if sum(1 for _ in state.open_tasks()) >= p.max_open_tasks:
        raise OutOfBounds("too many open tasks")
    # Rule: the work is declared, positive and within limits (cost known before it runs).
    if not 0 < tx.gflops <= MAX_TASK_GFLOPS or not 0 < tx.steps <= MAX_STEPS:
        raise OutOfBounds("declared work out of range")
    # Rule: a checkpoint interval within the run, and a bounded op sequence per step.
    if not 0 < tx.checkpoint_interval <= tx.steps or not 0 < tx.ops_per_step <= MAX_OPS_PER_STEP:
        raise OutOfBounds("checkpoint interval or ops per step out of range")
    # Rule: enough segments that one verifier's check is at most sampling_bps of the work.
    if -(-tx.steps // tx.checkpoint_interval) < p.min_segments:
        raise OutOfBounds(f"fewer than {p.min_segments} segments (steps / checkpoint interval)")
    # Rule: the offered price clears the protocol floor.
    if tx.max_price_per_gflop < p.min_price_per_gflop:
        raise OutOfBounds(f"price {tx.max_price_per_gflop} per GFLOP below the floor {p.min_price_per_gflop}")
    # Rule: a private task's key commitment is a 32-byte hash (or absent: a public task).
    if tx.key_commit and len(tx.key_commit) != 32:
        raise OutOfBounds("a key commitment is 32 bytes")
    # Rule: a fine-tuning base named by proof root is the proof of a task that settled valid.
    if tx.base_root != NO_BASE and tx.base_root not in state.proven:
        raise BadProof("the base names no accepted proof (a task that settled valid, recently enough)")
    if tx.stages or tx.data_parallel:
        check_crew_submit(tx)
    escrow = budget(state, tx.gflops, tx.max_price_per_gflop)
    # Rule: the submitter can pay the escrow.
    if state.accounts.balance(sender) < escrow:
        raise InsufficientFunds(f"escrow {escrow} exceeds the balance {state.accounts.balance(sender)}")
    return escrow


def check_crew_submit(tx: SubmitTask) -> None:
    """The rules a crew task adds (docs/parallel.md, "Through the market")."""
    # Rule: a crew has at least one stage and one replica, two members at least (one
    # member is a task for one solver), and at most MAX_CREW.
    if not tx.stages or not tx.data_parallel or not 2 <= tx.stages * tx.data_parallel <= MAX_CREW:
        raise OutOfBounds(f"a crew of {tx.stages} x {tx.data_parallel} is outside 2..{MAX_CREW} members")
    shape = CrewShape(tx.stages, tx.data_parallel)
    # Rule: the work divides evenly among the members (each member's share is its pay).
    if tx.gflops % shape.size:
        raise OutOfBounds(f"{tx.gflops} GFLOPs do not divide among {shape.size} members")
    # Rule: crew members are verified bit for bit (AQ-SGD's rounding admits no tolerance).
    if not tx.reproducible:
        raise OutOfBounds("a crew task must be reproducible: its members are re-executed bit for bit")
    # Rule: not yet private, nor a fine-tune of a proven base (neither is built for crews).
    if tx.key_commit or tx.base_root != NO_BASE:
        raise OutOfBounds("a crew task cannot be private or fine-tune a proven base (not built)")
    # Rule: the model, if declared, is one the placement's cost model takes and has a
    # block for every stage (undeclared: all zero, and ranks follow the draw).
    model = model_of(tx)
    if any(model):
        try:
            workload_of(model, shape)
        except ValidationError as exc:
            raise OutOfBounds(f"crew model: {exc}") from exc
        if model[0] < shape.stages:
            raise OutOfBounds(f"{model[0]} blocks cannot be cut into {shape.stages} stages")


def process_submit_task(state: MarketState, sender: bytes, tx: SubmitTask) -> bytes:
    escrow = check_submit(state, sender, tx)
    task_id = task_id_of(sender, tx)
    state.accounts.debit(sender, escrow)
    task = Task(
        task_id, sender, tx.spec_hash, tx.gflops, tx.steps, tx.checkpoint_interval, tx.ops_per_step,
        tx.device, tx.min_memory_mb, tx.reproducible, tx.max_price_per_gflop, escrow, state.height,
        key_commit=tx.key_commit, stages=tx.stages, data_parallel=tx.data_parallel,
        model=model_of(tx) if any(model_of(tx)) else (),
    )
    if tx.base_root != NO_BASE:
        proof = state.proven[tx.base_root]
        task.base_root = tx.base_root
        task.base_checkpoints, task.base_steps = proof.n_checkpoints, proof.steps
    create(state, task)
    state.tasks[task_id] = task
    return task_id


def process_cancel_task(state: MarketState, sender: bytes, tx: CancelTask) -> None:
    task = task_for(state, tx.task_id, tx)
    # Rule: only the submitter withdraws its own task.
    if sender != task.submitter:
        raise NotAuthorized("only the submitter may cancel a task")
    # Rule: only before anyone was elected for it (nothing is owed to anyone yet).
    if task.solver is not None or task.profilers or task.crew or task.taxed:
        raise WrongStage("a party is already elected for this task")
    refund(state, task, "cancelled")


def budget(state: MarketState, gflops: int, price: int) -> int:
    """Escrow = work budget + verifier budget + jackpot tax, all at the offered price."""
    work = gflops * price
    p = state.params
    return work + work * p.verifier_pay_bps // 10_000 + work * p.jackpot_tax_bps // 10_000


# --- stages 2-4: profile, train, prove ---------------------------------------------------------


def process_profile_report(state: MarketState, sender: bytes, tx: ProfileReport) -> None:
    task = task_for(state, tx.task_id, tx)
    # Rule: only an elected profiler reports, once, while the profile is undecided.
    reported = {r.profiler for r in task.profile_reports}
    if sender not in task.profilers or sender in reported or task.threshold_ppm is not None:
        raise NotAuthorized("not this task's profiler, or already reported")
    task.profile_reports.append(ProfileRec(sender, tx.threshold_ppm, tx.spec_ok))
    if len(task.profile_reports) == len(task.profilers):
        decide_profile(state, task)


def decide_profile(state: MarketState, task: Task) -> None:
    """The majority of the reports decides the spec; the median accepting report sets the
    threshold (one profiler alone can neither refuse a spec nor inflate the threshold)."""
    accepting = sorted(r.threshold_ppm for r in task.profile_reports if r.spec_ok)
    if 2 * len(accepting) <= len(task.profile_reports):
        refund(state, task, "spec refused by the profilers")
        return
    task.threshold_ppm = accepting[(len(accepting) - 1) // 2]
    _maybe_proved(state, task)


def process_prove_commit(state: MarketState, sender: bytes, tx: ProveCommit) -> None:
    task = task_for(state, tx.task_id, tx)
    # Rule: only the elected solver commits, once.
    if sender != task.solver or task.proof_root is not None:
        raise NotAuthorized("not this task's solver, or already committed")
    # Rule: one leaf per checkpoint, as the spec's interval implies.
    if tx.n_checkpoints != task.n_segments + 1:
        raise OutOfBounds(f"expected {task.n_segments + 1} checkpoints")
    task.proof_root = tx.merkle_root
    _maybe_proved(state, task)


def _member_rank(task: Task, sender: bytes) -> int:
    # Rule: only a member of the task's crew speaks for a rank, and only for its own.
    if sender not in task.crew:
        raise NotAuthorized("not a member of this task's crew")
    rank = task.crew.index(sender)
    # Rule: a member commits or aborts once.
    if task.crew_commits[rank] or sender in task.crew_aborts:
        raise NotAuthorized("this member already committed or aborted")
    return rank


def process_crew_commit(state: MarketState, sender: bytes, tx: CrewCommit) -> None:
    task = task_for(state, tx.task_id, tx)
    rank = _member_rank(task, sender)
    # Rule: one boundary per checkpoint, as the task's interval implies.
    if tx.n_boundaries != task.n_segments + 1:
        raise OutOfBounds(f"expected {task.n_segments + 1} boundaries")
    task.crew_commits[rank] = tx.commitment
    # Rule: the crew's proof is complete when every member committed its own.
    if all(task.crew_commits):
        enter(state, task, Status.PROVED, state.params.placement_blocks)


def process_crew_abort(state: MarketState, sender: bytes, tx: CrewAbort) -> None:
    task = task_for(state, tx.task_id, tx)
    _member_rank(task, sender)
    # Rule: the step is one the run has (the crew is dissolved at the next block once
    # every member has spoken, or at the training deadline: blocks.py).
    if tx.step > task.steps:
        raise OutOfBounds(f"step {tx.step} is past the task's {task.steps}")
    task.crew_aborts.append(sender)
    # Rule: one abort means the crew cannot finish; the others have CREW_ABORT_GRACE_BLOCKS
    # to say so too before the crew is dissolved (sooner than the training deadline).
    if state.height + CREW_ABORT_GRACE_BLOCKS < task.deadline:
        extend(state, task, CREW_ABORT_GRACE_BLOCKS)


def _maybe_proved(state: MarketState, task: Task) -> None:
    if task.proof_root is not None and task.threshold_ppm is not None:
        enter(state, task, Status.PROVED, state.params.placement_blocks)


# --- stage 5: verify (commit, then reveal) ----------------------------------------------------------


def process_verdict_commit(state: MarketState, sender: bytes, tx: VerdictCommit) -> None:
    task = task_for(state, tx.task_id, tx)
    slot = _slot(task, sender)
    # Rule: one commitment per verifier.
    if slot.commitment is not None:
        raise NotAuthorized("already committed")
    slot.commitment = tx.commitment
    if all(v.commitment is not None for v in task.verifiers):
        enter(state, task, Status.REVEAL, state.params.reveal_blocks)


def process_verdict_reveal(state: MarketState, sender: bytes, tx: VerdictReveal) -> None:
    task = task_for(state, tx.task_id, tx)
    slot = _slot(task, sender)
    # Rule: one reveal per verifier, after its commitment.
    if slot.commitment is None or slot.verdict is not None:
        raise NotAuthorized("no commitment, or already revealed")
    # Rule: the reveal opens the commitment.
    if elections.verdict_commitment(task.task_id, sender, tx.verdict, tx.salt) != slot.commitment:
        raise BadReveal("verdict does not match the commitment")
    # Rule: the verdict is about the segment the beacon assigned.
    if tx.verdict.segment != slot.segment:
        raise BadReveal(f"verdict on segment {tx.verdict.segment}, assigned {slot.segment}")
    slot.verdict = tx.verdict
    if all(v.verdict is not None for v in task.verifiers):
        enter(state, task, Status.CHALLENGE, state.params.challenge_window_blocks)


# --- stage 6: challenge, forced errors ----------------------------------------------------------------


def challenge_bond(state: MarketState, task: Task, target: int) -> int:
    """The least bond a challenge of verdict `target` must post: the minimum, or
    `challenge_bond_bps` of what the accused party stands to lose if the challenge wins
    (the solver's slash when an ACCEPT is disputed, the verifier's for a REJECT)."""
    p = state.params
    slot = task.verifiers[target]
    accept = slot.verdict is not None and slot.verdict.accept
    defender = task.crew[slot.segment] if task.is_crew else task.solver  # a crew slot names a rank
    accused = defender if accept else slot.pubkey
    worker = state.workers.get(accused) if accused is not None else None
    slash_bps = p.solver_slash_bps if accept else p.verifier_slash_bps
    at_risk = worker.stake * slash_bps // BPS if worker is not None else 0
    return max(p.min_challenge_bond, -(-at_risk * p.challenge_bond_bps // BPS))


def is_staked(state: MarketState, who: bytes) -> bool:
    """A registered worker with stake, or an account with stake bonded in the ledger
    (validators included): someone with something at stake and a cost to re-create."""
    worker = state.workers.get(who)
    return (worker is not None and worker.stake > 0) or state.accounts.bonded(who) > 0


def process_challenge(state: MarketState, sender: bytes, tx: Challenge) -> None:
    p = state.params
    task = task_for(state, tx.task_id, tx)
    # Rule: the target is a verifier with a revealed verdict.
    if tx.target >= len(task.verifiers) or task.verifiers[tx.target].verdict is None:
        raise OutOfBounds("no revealed verdict at that index")
    # Rule: only a staked account challenges (a worker with stake, or bonded in the ledger).
    if not is_staked(state, sender):
        raise NotAuthorized("only a staked account (a worker, or bonded in the ledger) may challenge")
    # Rule: the bond scales with what the challenge can make the accused party lose.
    need = challenge_bond(state, task, tx.target)
    if tx.bond < need:
        raise OutOfBounds(f"bond {tx.bond} below the {need} this challenge requires")
    # Rule: the solver (on a crew, the member the verdict is about) and the target cannot
    # challenge (no self-dealing with the jackpot).
    slot = task.verifiers[tx.target]
    defender = task.crew[slot.segment] if task.is_crew else task.solver
    if sender in (defender, slot.pubkey):
        raise NotAuthorized("parties to the verdict cannot challenge it")
    # Rule: one challenge per challenger and target; bounded per task.
    if any(c.challenger == sender and c.target == tx.target for c in task.challenges):
        raise OutOfBounds("already challenged this verdict")
    if len(task.challenges) >= p.max_challenges_per_task:
        raise OutOfBounds("challenge list full")
    verdict = task.verifiers[tx.target].verdict
    assert verdict is not None
    # Rule: a verdict that says its segment could not be fetched is settled by the validators.
    if not verdict.available:
        raise OutOfBounds("an unavailable-segment verdict is settled by the validators, not challenged")
    # Rule: a challenge disputes the verdict's own segment (it is judged on that segment,
    # so a challenger cannot win on one segment by naming another verifier's verdict).
    if tx.segment != verdict.segment:
        raise OutOfBounds(f"challenge names segment {tx.segment}, the verdict is on {verdict.segment}")
    state.accounts.debit(sender, tx.bond)
    task.challenges.append(ChallengeRec(sender, tx.target, not verdict.accept, tx.segment, tx.bond, tx.bond))


def process_forced_error_reveal(state: MarketState, sender: bytes, tx: ForcedErrorReveal) -> None:
    task = task_for(state, tx.task_id, tx)
    slot = _slot(task, sender)
    # Rule: once.
    if slot.secret_revealed:
        raise BadReveal("already revealed")
    # Rule: the secret is this duty's leaf of the commitment in force at the election.
    if tx.proof.index != slot.secret_index or not verify_inclusion(
            slot.secret_commit, elections.duty_leaf(tx.secret), tx.proof):
        raise BadReveal("secret is not this duty's leaf of the registered commitment")
    slot.secret_revealed = True
    slot.forced_revealed = elections.is_forced(tx.secret, slot.beacon, task.task_id,
                                               state.params.forced_error_ppm)


# --- stage 7: dispute and arbitration ----------------------------------------------------------------


def process_game_open(state: MarketState, sender: bytes, tx: GameOpen) -> None:
    task = task_for(state, tx.task_id, tx)
    apply_open(state, task, sender, tx)


def process_bisect_claim(state: MarketState, sender: bytes, tx: BisectClaim) -> None:
    task = task_for(state, tx.task_id, tx)
    apply_claim(state, task, sender, tx.round, tx.digest)


def process_bisect_reply(state: MarketState, sender: bytes, tx: BisectReply) -> None:
    task = task_for(state, tx.task_id, tx)
    apply_reply(state, task, sender, tx.round, tx.digest)


def process_game_reveal(state: MarketState, sender: bytes, tx: GameReveal) -> None:
    task = task_for(state, tx.task_id, tx)
    apply_reveal(state, task, sender, tx)


def process_arbitration_vote(state: MarketState, sender: bytes, tx: ArbitrationVote) -> None:
    task = task_for(state, tx.task_id, tx)
    apply_vote(state, task, sender, tx.round, tx.defender_right)


_RULES: dict[type[Any], Callable[[MarketState, bytes, Any], Any]] = {
    RegisterWorker: process_register_worker,
    DeregisterWorker: process_deregister_worker,
    SubmitTask: process_submit_task,
    ProfileReport: process_profile_report,
    ProveCommit: process_prove_commit,
    VerdictCommit: process_verdict_commit,
    VerdictReveal: process_verdict_reveal,
    Challenge: process_challenge,
    ForcedErrorReveal: process_forced_error_reveal,
    BisectClaim: process_bisect_claim,
    BisectReply: process_bisect_reply,
    ArbitrationVote: process_arbitration_vote,
    GameOpen: process_game_open,
    GameReveal: process_game_reveal,
    CancelTask: process_cancel_task,
    SetEncKey: process_set_enc_key,
    KeyWrap: process_key_wrap,
    KeyWrapFault: process_key_wrap_fault,
    CrewCommit: process_crew_commit,
    CrewAbort: process_crew_abort,
    CommitLinks: process_commit_links,
}


def process_tx(state: MarketState, sender: bytes, tx: Any) -> None:
    """Apply one market transaction (the ledger's registry entry point)."""
    rule = _RULES.get(type(tx))
    if rule is None:
        raise OutOfBounds(f"{type(tx).__name__} is not a market transaction")
    rule(state, sender, tx)


MARKET_TX_TYPES = tuple(_RULES)
