"""The market roles as sans-IO machines: solver, verifier (and profiler), whistleblower,
arbiter (validator) and submitter.

Each machine reads the committed market state after every block (`ChainView`), asks its
shell for compute (`RunCompute` with a job from `protocol.market.jobs`) and publishes
transactions (`Publish` on the txs topic). A node runs the roles it holds, combined in
`NodeRoles`; being elected needs no message because elections are computed from the
chain. Every machine acts at most once per (task, duty, round), remembers only open
tasks, and caps its jobs in flight, so a flood of tasks cannot grow its memory.

What a role must still know after a crash (the solver's checkpoint leaves, a verifier's
committed verdict, the tasks a submitter already published) it writes with `Persist`
*before* the command that relies on it, and `NodeRoles.restore` reads it back when the
shell rebuilds the node: otherwise an honest node that restarts at the wrong moment
cannot defend its proof or reveal its verdict and is slashed as if it had cheated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, TypeVar

from protocol.commands import TOPIC_TXS, Command, ComputeDone, Event, Log, Persist, Publish, RunCompute
from protocol.encoding import sha256
from protocol.errors import DecodeError
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.market import crews, elections
from protocol.market.errors import OutOfBounds
from protocol.market.jobs import (
    ArbitrationJob,
    ArbitrationResult,
    AvailabilityJob,
    ContractViolation,
    CrewCheckJob,
    CrewCheckResult,
    CrewTrainJob,
    CrewTrainResult,
    MarketTrainJob,
    MarketTrainResult,
    MarketWork,
    ProfileJob,
    ProfileResult,
    RevealJob,
    RevealResult,
    SegmentCheckJob,
    SegmentCheckResult,
    StateHashJob,
    StateHashResult,
    conforms,
    facts_of,
)
from protocol.market.keyring import Keyring, key_commitment
from protocol.market.params import GFLOP
from protocol.market.process import challenge_bond, task_id_of
from protocol.market.state import TERMINAL, GameKind, MarketState, Status, Task, Turn, VerifierSlot
from protocol.market.txs import (
    ArbitrationVote,
    BisectClaim,
    BisectReply,
    Challenge,
    CrewAbort,
    CrewCommit,
    ForcedErrorReveal,
    GameOpen,
    GameReveal,
    ProfileReport,
    ProveCommit,
    RegisterWorker,
    SubmitTask,
    Verdict,
    VerdictCommit,
    VerdictReveal,
)
from protocol.pol.merkle import CheckpointLeaf, inclusion_proof, leaf_hash
from protocol.pol.messages import OpOutputs
from protocol.pol.spec import MAX_CHECKPOINTS
from protocol.records import decode_record, encode_record
from protocol.schema import U16, U32, U64, Hash32, Len, Trailing

#: Jobs one role keeps in flight; more tasks wait for the next block.
MAX_PENDING_JOBS = 64
#: One state hash or one arbitrated operation: tiny next to a training step.
OP_FLOPS = 10**6


# --- role state that survives a crash ----------------------------------------------------------

#: Persist kinds of the role state (the shell hands them back to `NodeRoles.restore`).
PERSIST_SOLVER_PROOF = "market/solver-proof"
PERSIST_VERDICT = "market/verdict"
PERSIST_SUBMITTED = "market/submitted"
PERSIST_CREW_COMMIT = "market/crew-commit"
ROLE_KINDS = (PERSIST_SOLVER_PROOF, PERSIST_VERDICT, PERSIST_SUBMITTED, PERSIST_CREW_COMMIT)
#: Record keys per kind. Persist cannot delete, so a role reuses the key of an ended
#: task: what one node stores stays bounded (a worker holds a handful of tasks at once).
DURABLE_SLOTS = 64
#: Published task ids a submitter remembers across a restart (the oldest go first).
MAX_SUBMITTED = 1024
#: Tasks waiting in a submitter's queue, at most (accepted, not yet published).
MAX_QUEUE = 1024
#: A stored proof holds one leaf per checkpoint boundary, past the default array limit.
_PROOF_LIMITS = Limits(max_array_len=MAX_CHECKPOINTS + 1)
_SUBMITTER_LIMITS = Limits(max_bytes=MAX_QUEUE * 1024 + MAX_SUBMITTED * 64 + MAX_SUBMITTED * 80)

_T = TypeVar("_T")

#: Reads back every stored record of one kind (netsim's Disk, the daemon's sqlite store).
Loader = Callable[[str], Iterable[bytes]]


@dataclass(frozen=True, slots=True)
class SavedProof:
    slot: U16
    task_id: Hash32
    leaves: Annotated[tuple[CheckpointLeaf, ...], Len(0, MAX_CHECKPOINTS + 1)]


@dataclass(frozen=True, slots=True)
class SavedVerdict:
    slot: U16
    task_id: Hash32
    verdict: Verdict
    salt: Hash32


@dataclass(frozen=True, slots=True)
class SavedCrewCommit:
    """A crew member's commitment, stored before its CrewCommit leaves: a member that
    restarts before the commit is on the chain sends it again instead of training anew
    (which its crew, finished, could no longer do with it)."""

    slot: U16
    task_id: Hash32
    attempt: U16
    commitment: Hash32
    n_boundaries: U32


@dataclass(frozen=True, slots=True)
class SavedSubmit:
    task_id: Hash32
    height: U64  # the committed height when it was published


@dataclass(frozen=True, slots=True)
class SavedKey:
    task_id: Hash32
    key: Hash32


@dataclass(frozen=True, slots=True)
class SavedSubmits:
    """A submitter's durable state: what it published (and when), and the submits it still
    owes the chain: those accepted and not yet sent, and those sent but not yet seen on
    the chain (their tx may die with the node, so a restart sends them again)."""

    submits: Annotated[tuple[SavedSubmit, ...], Len(0, MAX_SUBMITTED)]
    queue: Annotated[tuple[SubmitTask, ...], Len(0, MAX_QUEUE)]
    #: The content keys of this node's private tasks (it wraps them to the elected parties).
    keys: Annotated[tuple[SavedKey, ...], Len(0, MAX_SUBMITTED + MAX_QUEUE), Trailing()] = ()


def _load(load: Loader, kind: str, cls: type[_T], limits: Limits = DEFAULT_LIMITS) -> list[_T]:
    """Decode what was stored; a corrupt record is dropped, as if its write was lost."""
    out: list[_T] = []
    for raw in load(kind):
        try:
            out.append(decode_record(cls, raw, limits))
        except DecodeError:
            continue
    return out


@dataclass
class _Slots:
    """Which record key holds which open task's state."""

    kind: str
    of: dict[bytes, int] = field(default_factory=dict)

    def take(self, task_id: bytes) -> int | None:
        if task_id in self.of:
            return self.of[task_id]
        used = set(self.of.values())
        slot = next((i for i in range(DURABLE_SLOTS) if i not in used), None)
        if slot is not None:
            self.of[task_id] = slot
        return slot

    def keep(self, live: Callable[[bytes], bool]) -> None:
        self.of = {t: s for t, s in self.of.items() if live(t)}

    def persist(self, task_id: bytes, record: Callable[[int], Any]) -> list[Command]:
        slot = self.take(task_id)
        if slot is None:
            return [Log("warning", "market.role_state_full", (("kind", self.kind),))]
        return [Persist(self.kind, slot.to_bytes(2, "big"), encode_record(record(slot)))]


def _segment_flops(task: Task) -> int:
    """A verification re-runs one segment: its share of the declared training FLOPs."""
    return task.gflops * GFLOP // task.n_segments


#: Share of a member's work a crew check re-executes, about (proof.DEFAULT_SAMPLE_FRACTION
#: and at least one segment): what the shell's clock is charged for it.
CREW_CHECK_SHARE = 20


def _member_flops(task: Task) -> int:
    return crews.member_gflops(task, crews.shape_of(task)) * GFLOP


def _member_check_flops(task: Task) -> int:
    return _member_flops(task) // CREW_CHECK_SHARE


def crew_check_job(task: Task, rank: int) -> CrewCheckJob:
    """What a verifier of member `rank` and the validators of its game re-execute: the
    same job, so the same sample (crews.crew_sample_seed) and the same answer."""
    return CrewCheckJob(task.task_id, task.spec_hash, rank, tuple(task.crew), task.stages, task.data_parallel,
                        tuple(task.crew_commits), task.verify_beacon)


@dataclass(frozen=True, slots=True)
class ChainView:
    """The market state right after a committed block; roles only read it."""

    height: int
    market: MarketState


def _live(market: MarketState, task_id: bytes) -> bool:
    task = market.tasks.get(task_id)
    return task is not None and task.status not in TERMINAL


@dataclass
class Role:
    """One market role of one node. Its transactions leave unstamped: `MarketNode`
    stamps each with the account's next nonce and the fee, so nonces have one owner."""

    me: bytes
    market: MarketState | None = None
    done: set[tuple[bytes, str, int]] = field(default_factory=set)
    pending: dict[str, tuple[bytes, str, int, Any]] = field(default_factory=dict)
    #: The node's keys for private tasks (`MarketNode` hands every role the same one).
    keyring: Keyring | None = None

    def handle(self, now: int, event: Event | ChainView) -> list[Command]:
        if isinstance(event, ChainView):
            self.market = event.market
            self._forget_closed(event.market)
            return self.on_view(event.market)
        if isinstance(event, ComputeDone) and event.job_id in self.pending and self.market is not None:
            tid, duty, rnd, job = self.pending.pop(event.job_id)
            try:
                conforms(job, event.result)
            except ContractViolation as exc:
                # The shell broke the compute contract: say so loudly, act as if silent.
                return [Log("error", "market.compute_contract", (("job", event.job_id), ("error", str(exc))))]
            task = self.market.tasks.get(tid)
            return self.on_done(task, duty, rnd, event.result) if task else []
        return []

    def on_view(self, market: MarketState) -> list[Command]:
        return []

    def on_done(self, task: Task, duty: str, rnd: int, result: Any) -> list[Command]:
        return []

    def restore(self, load: Loader) -> None:
        """Read back what this role persisted before a crash (most roles keep nothing)."""

    # --- helpers -----------------------------------------------------------------------------------

    def _run(self, task: Task, duty: str, rnd: int, job: Any, flops: int) -> list[Command]:
        """Start a job once per (task, duty, round), within the in-flight cap."""
        key = (task.task_id, duty, rnd)
        if key in self.done or len(self.pending) >= MAX_PENDING_JOBS:
            return []
        content_key = None
        if task.private:  # no key yet: wait (the courier role reports a wrap that fails)
            content_key = self.keyring.content_key(task, self.me) if self.keyring is not None else None
            if content_key is None:
                return []
        self.done.add(key)
        job_id = f"{duty}:{task.task_id.hex()}:{rnd}"
        self.pending[job_id] = (*key, job)
        # A crew member trains in its own member process (the shell's crew engine).
        return [RunCompute(job_id, MarketWork(facts_of(task, content_key), job), flops,
                           own_process=isinstance(job, CrewTrainJob))]

    def _once(self, task: Task, duty: str, tx: Any) -> list[Command]:
        """Publish a tx that needs no compute, once per (task, duty)."""
        key = (task.task_id, duty, 0)
        if key in self.done:
            return []
        self.done.add(key)
        return self._publish(tx)

    def _publish(self, tx: Any) -> list[Command]:
        return [Publish(TOPIC_TXS, tx)]

    def _forget_closed(self, market: MarketState) -> None:
        def live(tid: bytes) -> bool:
            task = market.tasks.get(tid)
            return task is not None and task.status not in TERMINAL

        self.done = {k for k in self.done if live(k[0])}
        self.pending = {j: k for j, k in self.pending.items() if live(k[0])}

    # --- playing the bisection game (as defender or accuser) -------------------------------------

    def _plays(self, task: Task, defending: bool) -> bool:
        """Whether this role plays this side of the task's game (one role per side, so a
        node holding several roles moves once)."""
        return False

    def _play(self, market: MarketState) -> list[Command]:
        out: list[Command] = []
        for task in market.open_tasks():
            game = task.game
            if task.status != Status.DISPUTE or game is None or not game.opened:
                continue
            defending = game.turn == Turn.DEFENDER
            if not self._plays(task, defending):
                continue
            job = StateHashJob(task.task_id, game.segment, (game.lo + game.hi) // 2, defending)
            out += self._run(task, f"hash:{game.accuser.hex()}", game.round, job, OP_FLOPS)
        return out

    def _move(self, task: Task, rnd: int, result: Any) -> list[Command]:
        game = task.game
        if not isinstance(result, StateHashResult):  # the shell had no answer (a silent party)
            return []
        if task.status != Status.DISPUTE or game is None or game.round != rnd:
            return []
        if game.turn == Turn.DEFENDER and task.solver == self.me:
            return self._publish(BisectClaim(task.task_id, rnd, result.digest, 0, 0))
        if game.turn == Turn.ACCUSER and game.accuser == self.me:
            return self._publish(BisectReply(task.task_id, rnd, result.digest, 0, 0))
        return []


@dataclass
class SolverRole(Role):
    """Trains, commits the proof, keeps its leaves, and defends: it opens each game with
    the disputed segment's checkpoints and their Merkle proofs, then posts its digests."""

    leaves: dict[bytes, tuple[CheckpointLeaf, ...]] = field(default_factory=dict)
    saved: _Slots = field(default_factory=lambda: _Slots(PERSIST_SOLVER_PROOF))
    crew_commits: dict[bytes, SavedCrewCommit] = field(default_factory=dict)
    crew_saved: _Slots = field(default_factory=lambda: _Slots(PERSIST_CREW_COMMIT))

    def _plays(self, task: Task, defending: bool) -> bool:
        return defending and task.solver == self.me

    def restore(self, load: Loader) -> None:
        for rec in _load(load, PERSIST_SOLVER_PROOF, SavedProof, _PROOF_LIMITS):
            self.leaves[rec.task_id] = rec.leaves
            self.saved.of[rec.task_id] = rec.slot
        for crew in _load(load, PERSIST_CREW_COMMIT, SavedCrewCommit):
            self.crew_commits[crew.task_id] = crew
            self.crew_saved.of[crew.task_id] = crew.slot

    def on_view(self, market: MarketState) -> list[Command]:
        out = self._play(market)
        self.leaves = {t: v for t, v in self.leaves.items() if _live(market, t)}
        self.saved.keep(lambda t: _live(market, t))
        self.crew_commits = {t: v for t, v in self.crew_commits.items() if _live(market, t)}
        self.crew_saved.keep(lambda t: _live(market, t))
        for task in market.open_tasks():
            if task.status == Status.TRAINING and task.solver == self.me and task.proof_root is None:
                job = MarketTrainJob(task.task_id, task.spec_hash)
                out += self._run(task, "train", 0, job, task.gflops * GFLOP)
            out += self._member(task) + self._open(task) + self._reveal(task)
        return out

    def _member(self, task: Task) -> list[Command]:
        """A crew member trains its rank with the rest of the crew (once per placement:
        a re-placed crew is a new round)."""
        if task.status != Status.TRAINING or self.me not in task.crew:
            return []
        rank = task.crew.index(self.me)
        if task.crew_commits[rank] or self.me in task.crew_aborts:
            return []
        saved = self.crew_commits.get(task.task_id)
        if saved is not None and saved.attempt == task.replacements:  # trained before a restart
            tx = CrewCommit(task.task_id, saved.commitment, saved.n_boundaries, 0, 0)
            return self._once(task, f"crewcommit:{saved.attempt}", tx)
        job = CrewTrainJob(task.task_id, task.spec_hash, rank, tuple(task.crew), task.stages,
                           task.data_parallel, task.replacements)
        return self._run(task, "crew", task.replacements, job, _member_flops(task))

    def _open(self, task: Task) -> list[Command]:
        game, leaves = task.game, self.leaves.get(task.task_id, ())
        if task.status != Status.DISPUTE or game is None or game.opened or task.solver != self.me:
            return []
        if len(leaves) != task.n_segments + 1:
            # Only a lost proof gets here (the contract makes a shell return the leaves).
            return [Log("error", "market.solver_lost_its_proof", (("task", task.task_id.hex()[:16]),))]
        hashes = [leaf_hash(x) for x in leaves]
        s = game.segment
        tx = GameOpen(task.task_id, leaves[s], inclusion_proof(hashes, s), leaves[s + 1],
                      inclusion_proof(hashes, s + 1), 0, 0)
        return self._once(task, f"open:{game.accuser.hex()}", tx)

    def _reveal(self, task: Task) -> list[Command]:
        """One operation is left: reveal the digests behind it (the shell first makes the
        op's input tensors fetchable, so validators can re-execute it)."""
        game = task.game
        if task.status != Status.ARBITRATION or game is None or game.reveal is not None:
            return []
        if task.solver != self.me:
            return []
        job = RevealJob(task.task_id, game.segment, game.lo)
        return self._run(task, f"reveal:{game.accuser.hex()}", game.round, job, OP_FLOPS)

    def on_done(self, task: Task, duty: str, rnd: int, result: Any) -> list[Command]:
        if duty.startswith("hash"):
            return self._move(task, rnd, result)
        if duty.startswith("reveal"):
            game = task.game
            if not isinstance(result, RevealResult) or game is None or game.round != rnd:
                return []
            if task.status != Status.ARBITRATION or game.reveal is not None:
                return []
            return self._publish(GameReveal(task.task_id, rnd, result.weights, result.optimizer,
                                            tuple(OpOutputs(o) for o in result.prefix),
                                            OpOutputs(result.claimed), 0, 0))
        if isinstance(result, CrewTrainResult):
            return self._member_done(task, rnd, result)
        mine = task.status == Status.TRAINING and task.solver == self.me
        if isinstance(result, MarketTrainResult) and mine:
            # The leaves are stored before the commit leaves: a solver that comes back after
            # a crash must still be able to open a dispute against its proof.
            self.leaves[task.task_id] = result.leaves
            tid = task.task_id
            saved = self.saved.persist(tid, lambda slot: SavedProof(slot, tid, result.leaves))
            return saved + self._publish(ProveCommit(tid, result.merkle_root, result.n_checkpoints, 0, 0))
        return []


    def _member_done(self, task: Task, rnd: int, result: CrewTrainResult) -> list[Command]:
        """Commit the member's proof, or say the crew stopped (a member that says nothing is
        slashed for silence at the deadline; one that aborts is only released)."""
        if task.status != Status.TRAINING or self.me not in task.crew or rnd != task.replacements:
            return []
        if task.crew.index(self.me) != result.rank:
            return []
        if result.aborted:
            fields = (("task", task.task_id.hex()[:16]), ("rank", result.rank), ("why", result.aborted[:200]))
            log = Log("warning", "market.crew_aborted", fields)
            return [log, *self._publish(CrewAbort(task.task_id, min(result.step, task.steps), 0, 0))]
        tid, attempt = task.task_id, task.replacements
        record = SavedCrewCommit(0, tid, attempt, result.commitment, result.n_boundaries)
        self.crew_commits[tid] = record
        saved = self.crew_saved.persist(tid, lambda slot: replace(record, slot=slot))
        self.done.add((tid, f"crewcommit:{attempt}", 0))
        return saved + self._publish(CrewCommit(tid, result.commitment, result.n_boundaries, 0, 0))


@dataclass
class VerifierRole(Role):
    """Profiles, verifies (commit then reveal, flipping the verdict when forced), reveals
    its duty secret after the challenge window, and plays accuser when it rejected."""

    secret: bytes = b""  # seed of the duty secrets whose tree root it registered
    verdicts: dict[bytes, tuple[Verdict, bytes]] = field(default_factory=dict)
    saved: _Slots = field(default_factory=lambda: _Slots(PERSIST_VERDICT))

    def _plays(self, task: Task, defending: bool) -> bool:
        """A verifier plays the games its own verdict started."""
        game = task.game
        mine = game is not None and game.accuser == self.me
        return not defending and mine and self._slot(task) is not None

    def restore(self, load: Loader) -> None:
        for rec in _load(load, PERSIST_VERDICT, SavedVerdict):
            self.verdicts[rec.task_id] = (rec.verdict, rec.salt)
            self.saved.of[rec.task_id] = rec.slot

    def on_view(self, market: MarketState) -> list[Command]:
        out = self._play(market)
        self.verdicts = {t: v for t, v in self.verdicts.items() if _live(market, t)}
        self.saved.keep(lambda t: _live(market, t))
        for task in market.open_tasks():
            out += self._profile(task) + self._verify(task)
        return out

    def _slot(self, task: Task) -> VerifierSlot | None:
        return next((v for v in task.verifiers if v.pubkey == self.me), None)

    def _profile(self, task: Task) -> list[Command]:
        reported = any(r.profiler == self.me for r in task.profile_reports)
        if task.status == Status.TRAINING and self.me in task.profilers and not reported:
            return self._run(task, "profile", 0, ProfileJob(task.task_id, task.spec_hash), OP_FLOPS)
        return []

    def _verify(self, task: Task) -> list[Command]:
        slot = self._slot(task)
        if slot is None:
            return []
        if task.is_crew and task.status in (Status.COMMIT, Status.REVEAL):
            return self._verify_member(task, slot)
        if task.status == Status.COMMIT and slot.commitment is None and task.proof_root is not None:
            job = SegmentCheckJob(task.task_id, task.proof_root, slot.segment, task.threshold_ppm or 0)
            return self._run(task, "verify", 0, job, _segment_flops(task))
        if task.status == Status.REVEAL and slot.verdict is None and task.task_id in self.verdicts:
            verdict, salt = self.verdicts[task.task_id]
            return self._once(task, "reveal", VerdictReveal(task.task_id, verdict, salt, 0, 0))
        root = task.proof_root
        if task.status == Status.REVEAL and slot.verdict is None and slot.commitment is not None and root:
            # Committed, but the stored verdict is gone (lost with an unsynced write): the
            # check is deterministic, so run it again and reveal if it opens the commitment.
            job = SegmentCheckJob(task.task_id, root, slot.segment, task.threshold_ppm or 0)
            return self._run(task, "recheck", 0, job, _segment_flops(task))
        if task.status == Status.FORCED_REVEAL and not slot.secret_revealed and slot.verdict is not None:
            secret, proof = elections.duty_reveal(self.secret, slot.secret_index)
            return self._once(task, "forced", ForcedErrorReveal(task.task_id, secret, proof, 0, 0))
        return []

    def _verify_member(self, task: Task, slot: VerifierSlot) -> list[Command]:
        """The crew path of `_verify`: the slot names a member's rank, checked with
        `crew_check_job` (commit, reveal, and a recheck when the stored verdict is gone)."""
        job = crew_check_job(task, slot.segment)
        if task.status == Status.COMMIT and slot.commitment is None:
            return self._run(task, "verify", 0, job, _member_check_flops(task))
        if task.status != Status.REVEAL or slot.verdict is not None or slot.commitment is None:
            return []  # (committed, and the others have not: a reveal now would be refused)
        if task.task_id in self.verdicts:
            verdict, salt = self.verdicts[task.task_id]
            return self._once(task, "reveal", VerdictReveal(task.task_id, verdict, salt, 0, 0))
        return self._run(task, "recheck", 0, job, _member_check_flops(task))

    def _forced(self, task: Task, slot: VerifierSlot) -> bool:
        assert self.market is not None
        ppm = self.market.params.forced_error_ppm
        secret = elections.duty_secret(self.secret, slot.secret_index)
        return elections.is_forced(secret, slot.beacon, task.task_id, ppm)

    def _verdict(self, task: Task, slot: VerifierSlot,
                 result: SegmentCheckResult | CrewCheckResult) -> tuple[Verdict, bytes]:
        """The verdict (flipped when forced) and its salt: both follow from the check. A
        segment nobody served is reported as such, never as a REJECT (nor forced)."""
        salt = sha256(self.secret + task.task_id + b"verdict-salt")
        distance = result.distance_ppm if isinstance(result, SegmentCheckResult) else 0
        if not result.available:
            return Verdict(False, slot.segment, distance, available=False), salt
        accept = result.passed != self._forced(task, slot)
        return Verdict(accept, slot.segment, distance), salt

    def on_done(self, task: Task, duty: str, rnd: int, result: Any) -> list[Command]:
        if duty.startswith("hash"):
            return self._move(task, rnd, result)
        if isinstance(result, ProfileResult) and task.status == Status.TRAINING:
            return self._publish(ProfileReport(task.task_id, result.threshold_ppm, result.spec_ok, 0, 0))
        slot = self._slot(task)
        if not isinstance(result, SegmentCheckResult | CrewCheckResult) or slot is None:
            return []
        verdict, salt = self._verdict(task, slot, result)
        commitment = elections.verdict_commitment(task.task_id, self.me, verdict, salt)
        if duty == "recheck" and task.status == Status.REVEAL and commitment == slot.commitment:
            self.verdicts[task.task_id] = (verdict, salt)
            return self._once(task, "reveal", VerdictReveal(task.task_id, verdict, salt, 0, 0))
        if duty == "verify" and task.status == Status.COMMIT:
            # Stored before the commitment leaves, or a restart before the reveal window
            # would leave a commitment this node can no longer open (a silence slash).
            self.verdicts[task.task_id] = (verdict, salt)
            saved = self.saved.persist(task.task_id, lambda s: SavedVerdict(s, task.task_id, verdict, salt))
            return saved + self._publish(VerdictCommit(task.task_id, commitment, 0, 0))
        return []


#: Share of the *other* ACCEPT verdicts a whistleblower re-checks. It always re-checks
#: every REJECT (in an honest network those are the forced errors, which pay the jackpot)
#: and the final segment's verdict (where every catalog attack shows, so a lazy or
#: bribed final verifier is the one hole worth watching): 1/64 of training; random
#: ACCEPTs beyond that would push the network past 5% (see protocol/market/params.py).
ACCEPT_CHECK_PPM = 0


@dataclass
class WhistleblowerRole(Role):
    """Re-checks revealed verdicts during the challenge window and challenges wrong ones:
    every REJECT, the final segment's verdict, and a beacon-drawn share of the other
    ACCEPTs (unpredictable to the verifiers, whose verdicts are fixed before the draw's
    beacon is known)."""

    checks_per_block: int = 8
    accept_check_ppm: int = ACCEPT_CHECK_PPM
    #: A worker's whistleblower: it watches only the private tasks it is elected to watch
    #: (nobody else can read them); an open whistleblower watches every public task.
    private_only: bool = False

    def _watches(self, task: Task) -> bool:
        return self.me in task.watchers if task.private else not self.private_only

    def _plays(self, task: Task, defending: bool) -> bool:
        """A whistleblower plays the games its challenges started (not as a verifier)."""
        game = task.game
        mine = game is not None and game.accuser == self.me
        return not defending and mine and all(v.pubkey != self.me for v in task.verifiers)

    def _wants(self, market: MarketState, task: Task, index: int, accept: bool) -> bool:
        if task.is_crew:
            return self._wants_member(market, task, index, accept)
        if not accept or task.verifiers[index].segment == task.n_segments - 1:
            return True
        seed = sha256(b"whistle" + market.beacon + task.task_id + self.me + bytes([index]))
        return int.from_bytes(seed[:8], "big") % 1_000_000 < self.accept_check_ppm

    def _wants_member(self, market: MarketState, task: Task, index: int, accept: bool) -> bool:
        """On a crew every verdict is the only check of its member, so a lazy ACCEPT of a
        cheating member would pass unseen: besides every REJECT, a whistleblower re-checks
        one ACCEPT per crew task, drawn from a beacon the verifiers could not know when
        they committed (so each verifier's laziness is found with probability 1 / members
        per watcher, at about one member check's cost)."""
        if not accept:
            return True
        accepts = [i for i, v in enumerate(task.verifiers) if v.verdict is not None and v.verdict.accept]
        seed = sha256(b"whistle-crew" + market.beacon + task.task_id + self.me)
        return bool(accepts) and accepts[int.from_bytes(seed[:8], "big") % len(accepts)] == index

    def on_view(self, market: MarketState) -> list[Command]:
        out = self._play(market)
        budget = self.checks_per_block
        for task in market.open_tasks():
            if task.status != Status.CHALLENGE or self.me == task.solver:
                continue
            if task.proof_root is None and not task.is_crew:
                continue
            if not self._watches(task):
                continue
            for index, slot in enumerate(task.verifiers):
                if budget <= 0 or slot.pubkey == self.me or slot.verdict is None:
                    continue
                if not slot.verdict.available:
                    continue  # the validators settle whether the segment is served
                if (task.task_id, "check", index) in self.done:
                    continue
                if not self._wants(market, task, index, slot.verdict.accept):
                    self.done.add((task.task_id, "check", index))  # drawn once, not every block
                    continue
                if task.is_crew:  # the slot's segment is the member's rank
                    if task.crew[slot.segment] == self.me:
                        continue  # (nobody challenges a verdict about itself)
                    check: Any = crew_check_job(task, slot.segment)
                    flops = _member_check_flops(task)
                else:
                    assert task.proof_root is not None
                    threshold = task.threshold_ppm or 0
                    check = SegmentCheckJob(task.task_id, task.proof_root, slot.segment, threshold)
                    flops = _segment_flops(task)
                started = self._run(task, "check", index, check, flops)
                budget -= len(started)
                out += started
        return out

    def on_done(self, task: Task, duty: str, rnd: int, result: Any) -> list[Command]:
        if duty.startswith("hash"):
            return self._move(task, rnd, result)
        if not isinstance(result, SegmentCheckResult | CrewCheckResult) or task.status != Status.CHALLENGE:
            return []
        verdict = task.verifiers[rnd].verdict if rnd < len(task.verifiers) else None
        if verdict is None or verdict.accept == result.passed or self.market is None:
            return []
        bond = challenge_bond(self.market, task, rnd)
        segment = result.segment if isinstance(result, SegmentCheckResult) else result.rank
        return self._publish(Challenge(task.task_id, rnd, segment, bond, 0, 0))


@dataclass
class ArbiterRole(Role):
    """A validator re-executes the one pinpointed operation, from the defender's revealed
    digests, and votes; what it ran (the op, its FLOPs, the time) goes to the log."""

    def on_view(self, market: MarketState) -> list[Command]:
        out: list[Command] = []
        if self.me not in market.validators:
            return out
        for task in market.open_tasks():
            game = task.game
            if task.status != Status.ARBITRATION or game is None or self.me in game.votes:
                continue
            if game.kind == GameKind.CREW:
                member = crew_check_job(task, game.segment)
                flops = _member_check_flops(task)
                out += self._run(task, f"crewgame:{game.accuser.hex()}", game.round, member, flops)
                continue
            if game.kind == GameKind.AVAILABILITY and task.proof_root is not None:
                check = AvailabilityJob(task.task_id, task.proof_root, game.segment)
                out += self._run(task, f"available:{game.accuser.hex()}", game.round, check, OP_FLOPS)
                continue
            if game.reveal is None:
                continue
            r = game.reveal
            job = ArbitrationJob(task.task_id, game.segment, game.lo, r.weights, r.optimizer, r.prefix,
                                 r.claimed, game.hi_hash, task.threshold_ppm or 0)
            out += self._run(task, f"arbitrate:{game.accuser.hex()}", game.round, job, OP_FLOPS)
        return out

    def on_done(self, task: Task, duty: str, rnd: int, result: Any) -> list[Command]:
        if isinstance(result, CrewCheckResult) and task.status == Status.ARBITRATION:
            log = Log("info", "market.crew_arbitrated", (
                ("task", task.task_id.hex()[:16]), ("rank", result.rank), ("passed", result.passed),
                ("steps", result.steps_executed), ("finding", result.finding[:200])))
            return [log, *self._publish(ArbitrationVote(task.task_id, rnd, result.passed, 0, 0))]
        if not isinstance(result, ArbitrationResult) or task.status != Status.ARBITRATION:
            return []
        log = Log("info", "market.arbitrated", (
            ("task", task.task_id.hex()[:16]), ("op", result.op), ("op_index", result.op_index),
            ("flops", result.flops), ("seconds", round(result.seconds, 4)),
            ("fetch_seconds", round(result.fetch_seconds, 4)),
            ("defender_right", result.defender_right), ("reason", result.reason)))
        return [log, *self._publish(ArbitrationVote(task.task_id, rnd, result.defender_right, 0, 0))]


@dataclass
class SubmitterRole(Role):
    """Publishes its queued tasks, at most `max_in_flight` open at a time, and records outcomes.

    It remembers (durably) which tasks it published and when, so that a restart with the
    same queue does not publish them again: one the chain holds or has had time to end
    and prune is skipped; one sent too recently to have ended is sent again, since its
    tx may have died with the node."""

    queue: list[SubmitTask] = field(default_factory=list)
    max_in_flight: int = 4
    mine: list[bytes] = field(default_factory=list)
    outcomes: dict[bytes, str] = field(default_factory=dict)
    published: dict[bytes, int] = field(default_factory=dict)  # task id -> height sent at
    unconfirmed: dict[bytes, SubmitTask] = field(default_factory=dict)  # sent, not yet on the chain
    #: Private tasks' content keys by task id (the keyring reads this very dict).
    content_keys: dict[bytes, bytes] = field(default_factory=dict)

    def restore(self, load: Loader) -> None:
        for rec in _load(load, PERSIST_SUBMITTED, SavedSubmits, _SUBMITTER_LIMITS):
            self.published = {s.task_id: s.height for s in rec.submits}
            self.queue = list(rec.queue)  # what it still owes the chain replaces the given queue
            self.content_keys.clear()
            self.content_keys.update({k.task_id: k.key for k in rec.keys})
        self.mine = list(self.published)

    def accept(self, tx: SubmitTask, content_key: bytes | None = None) -> list[Command]:
        """Queue a task the node's operator submitted; it is stored before this returns
        (the shell answers the operator only after executing the Persist). A private
        task comes with its content key, which must be the one it commits to."""
        if len(self.queue) >= MAX_QUEUE:
            raise OutOfBounds(f"{MAX_QUEUE} tasks already wait in this node's queue")
        tid = task_id_of(self.me, tx)
        if any(task_id_of(self.me, q) == tid for q in self.queue) or tid in self.mine:
            raise OutOfBounds("this task is already queued or published (change its salt)")
        if tx.key_commit and (content_key is None or key_commitment(content_key) != tx.key_commit):
            raise OutOfBounds("a private task needs the content key its key_commit commits to")
        if content_key is not None and tx.key_commit:
            self.content_keys[tid] = content_key
        self.queue.append(tx)
        return self._save()

    def queued(self) -> list[bytes]:
        return [task_id_of(self.me, tx) for tx in self.queue]

    def _gone(self, market: MarketState, tid: bytes) -> bool:
        """Published long enough ago that, being off the chain, it has ended and been pruned."""
        sent = self.published.get(tid)
        retention = market.params.ended_retention_blocks
        return tid not in market.tasks and sent is not None and market.height - sent >= retention

    def on_view(self, market: MarketState) -> list[Command]:
        for tid in self.mine:
            task = market.tasks.get(tid)
            if task is not None and task.status in TERMINAL:
                self.outcomes[tid] = task.outcome
            elif tid not in self.outcomes and self._gone(market, tid):
                self.outcomes[tid] = "pruned"
        confirmed = [t for t in self.unconfirmed if t in market.tasks or self._gone(market, t)]
        for tid in confirmed:
            del self.unconfirmed[tid]
        open_now = sum(1 for t in self.mine if t not in self.outcomes)
        sent: list[Command] = []
        popped = False
        while self.queue and open_now < self.max_in_flight:
            tx = self.queue.pop(0)
            popped = True
            tid = task_id_of(self.me, tx)
            if tid in self.published and (tid in market.tasks or self._gone(market, tid)):
                continue  # published before a restart and already on (or through) the chain
            self.published.pop(tid, None)
            self.published[tid] = market.height
            self.unconfirmed[tid] = tx
            if tid not in self.mine:
                self.mine.append(tid)
                open_now += 1
            sent.append(Publish(TOPIC_TXS, tx))
        if not popped and not confirmed:
            return []
        return self._save() + sent

    def _save(self) -> list[Command]:
        """Stored before the submits leave, so a crash right after neither repeats one that
        landed nor loses one that did not."""
        while len(self.published) > MAX_SUBMITTED:
            del self.published[next(iter(self.published))]
        owed = [*self.unconfirmed.values(), *self.queue][:MAX_QUEUE]
        live = set(self.published) | {task_id_of(self.me, tx) for tx in owed}
        for tid in [t for t in self.content_keys if t not in live]:
            del self.content_keys[tid]
        keys = tuple(SavedKey(t, k) for t, k in sorted(self.content_keys.items()))
        rec = SavedSubmits(tuple(SavedSubmit(t, h) for t, h in self.published.items()), tuple(owed), keys)
        return [Persist(PERSIST_SUBMITTED, b"", encode_record(rec))]


#: A registered worker re-registers (stake 0: an update) when its shell's measured
#: capacity moved by more than this share from the registered figure; smaller moves are
#: measurement noise and not worth a transaction.
CAPACITY_UPDATE_PCT = 25


@dataclass
class RegistrarRole(Role):
    """Registers this node as a worker by transaction (capacity as its shell measured it,
    price, stake, duty-secret commitment), and again whenever it is not registered (a
    tx lost before inclusion is re-sent after a few blocks). When the shell re-measures
    its capacity (`registration.flops`) far from the registered figure, it sends the
    registration again with no stake, which updates the capacity on the ledger."""

    registration: RegisterWorker | None = None
    retry_blocks: int = 5
    sent_at: int = -1_000_000

    def on_view(self, market: MarketState) -> list[Command]:
        worker = market.workers.get(self.me)
        if self.registration is None or (worker is not None and not self._moved(worker.flops)):
            return []
        if market.height - self.sent_at < self.retry_blocks:
            return []
        self.sent_at = market.height
        return self._publish(self.registration if worker is None else replace(self.registration, stake=0))

    def _moved(self, registered_flops: int) -> bool:
        assert self.registration is not None
        return abs(self.registration.flops - registered_flops) * 100 > CAPACITY_UPDATE_PCT * registered_flops


@dataclass
class NodeRoles:
    """All the roles one node holds, driven as one core."""

    roles: Sequence[Role]

    def handle(self, now: int, event: Event | ChainView) -> list[Command]:
        out: list[Command] = []
        for role in self.roles:
            out += role.handle(now, event)
        return out

    def restore(self, load: Loader) -> None:
        for role in self.roles:
            role.restore(load)

