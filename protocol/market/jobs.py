"""The compute contract: the jobs the market roles ask their shell to run, and their results.

One contract for both shells. netsim (synthetic hash-chain training, or torch) and the
daemon (torch on real blobs) implement every job here, and one contract-test suite
(tests/test_compute_contract.py) runs against each implementation: what a role needs
from a result is a field of its type, checked when the result is built (`__post_init__`)
and again when it reaches the role (`conforms`), so a shell that drops something (the
daemon once returned a proof without its checkpoint leaves, and its solvers could not
defend a dispute) fails loudly instead of leaving the role silent.

Jobs name the task by id and carry the chain facts the shell needs (spec hash, proof
root, segment, game positions, the defender's revealed digests); the shell resolves
blobs and does the tensor work. A result of None means "no answer" (the job could not
run: an unknown task, a silent party by design); the roles treat it as silence.

Game positions (see `protocol.market.game`): position `i * ops + j` of a segment is the
state hash at the segment's step i (j = 0) or the op-chain value after op j-1 of that
step. The one disputed operation is the op that takes position `lo` to `lo + 1`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from protocol.errors import KeyWrapError
from protocol.market.state import Task
from protocol.pol.merkle import CheckpointLeaf, leaf_hash, merkle_root

Digests = tuple[bytes, ...]


class ContractViolation(TypeError):
    """A shell returned a result that does not satisfy the compute contract (a shell bug)."""


@dataclass(frozen=True, slots=True)
class TaskFacts:
    """What a job needs to know of its task, frozen from the committed chain when the
    role asked: the shell's compute thread never reads the core's live state."""

    task_id: bytes
    spec_hash: bytes
    submitter: bytes
    solver: bytes | None
    proof_root: bytes | None
    steps: int
    checkpoint_interval: int
    ops_per_step: int
    threshold_ppm: int
    #: A fine-tune's proven base as the ledger checked it (zero root: none): its root, and
    #: that proof's checkpoints and steps, which the spec's named base leaf must match.
    base_root: bytes = b"\x00" * 32
    base_checkpoints: int = 0
    base_steps: int = 0
    #: A private task (`protocol.market.wraps`): its key commitment, and the content key
    #: the role obtained for this job (its blobs are sealed under it; the spec is not).
    #: A shell refuses a private job without the committed key (`check_content_key`).
    key_commit: bytes = b""
    content_key: bytes | None = field(default=None, repr=False)

    @property
    def n_segments(self) -> int:
        return max(1, -(-self.steps // self.checkpoint_interval))

    @property
    def private(self) -> bool:
        return self.key_commit != b""


def facts_of(task: Task, content_key: bytes | None = None) -> TaskFacts:
    return TaskFacts(task.task_id, task.spec_hash, task.submitter, task.solver, task.proof_root, task.steps,
                     task.checkpoint_interval, task.ops_per_step, task.threshold_ppm or 0, task.base_root,
                     task.base_checkpoints, task.base_steps, task.key_commit, content_key)


def check_content_key(facts: TaskFacts) -> bytes | None:
    """The content key a shell seals a job's blobs under: None for a public task; for a
    private one the committed key, else `KeyWrapError` (a shell never touches a private
    task's blobs in the clear, whatever a role hands it)."""
    if not facts.private:
        return None
    from protocol.market.keyring import key_commitment

    if facts.content_key is None or key_commitment(facts.content_key) != facts.key_commit:
        raise KeyWrapError(f"task {facts.task_id.hex()[:16]} is private and the job carries no key "
                           "it committed to")
    return facts.content_key


@dataclass(frozen=True, slots=True)
class MarketWork:
    """What a market role's RunCompute carries: the job, and the facts of its task."""

    task: TaskFacts
    job: Any


@dataclass(frozen=True, slots=True)
class MarketTrainJob:
    task_id: bytes
    spec_hash: bytes


@dataclass(frozen=True, slots=True)
class MarketTrainResult:
    """The proof: its root, and the leaves, which the solver keeps to open any dispute
    with Merkle membership proofs. Leaves are required and must be the root's."""

    task_id: bytes
    merkle_root: bytes
    n_checkpoints: int
    leaves: tuple[CheckpointLeaf, ...]

    def __post_init__(self) -> None:
        if len(self.leaves) != self.n_checkpoints:
            raise ContractViolation(f"{len(self.leaves)} leaves for a proof of {self.n_checkpoints}")
        if merkle_root([leaf_hash(x) for x in self.leaves]) != self.merkle_root:
            raise ContractViolation("the leaves do not hash to the proof root")


@dataclass(frozen=True, slots=True)
class ProfileJob:
    task_id: bytes
    spec_hash: bytes


@dataclass(frozen=True, slots=True)
class ProfileResult:
    task_id: bytes
    threshold_ppm: int
    spec_ok: bool


@dataclass(frozen=True, slots=True)
class SegmentCheckJob:
    """Re-execute one segment against the committed proof (verifiers and whistleblowers)."""

    task_id: bytes
    proof_root: bytes
    segment: int
    threshold_ppm: int


@dataclass(frozen=True, slots=True)
class SegmentCheckResult:
    """`available` False: no peer served the committed segment in time, so nothing was
    checked (`passed` is then False too, but it is not a finding against the solver)."""

    task_id: bytes
    segment: int
    passed: bool
    distance_ppm: int
    available: bool = True


@dataclass(frozen=True, slots=True)
class AvailabilityJob:
    """A validator tries to fetch one committed segment (its two checkpoints, every tensor
    checked against the leaves) from the network: does the solver serve its proof?"""

    task_id: bytes
    proof_root: bytes
    segment: int


@dataclass(frozen=True, slots=True)
class StateHashJob:
    """This party's own digest at one game position of a disputed segment: the
    defender's from the run it committed, the accuser's from an honest re-execution of
    the segment from the committed start checkpoint."""

    task_id: bytes
    segment: int
    position: int
    defender: bool


@dataclass(frozen=True, slots=True)
class StateHashResult:
    task_id: bytes
    position: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class RevealJob:
    """The defender's digests behind the agreed position `position` (the step's state and
    the outputs of the step's ops before the disputed one) and its claim for the disputed
    op's outputs. Before answering, the shell makes the op's input tensors (and the claimed
    outputs) fetchable by digest, so the validators can re-execute the op."""

    task_id: bytes
    segment: int
    position: int


@dataclass(frozen=True, slots=True)
class RevealResult:
    task_id: bytes
    position: int
    weights: Digests
    optimizer: Digests
    prefix: tuple[Digests, ...]
    claimed: Digests

    def __post_init__(self) -> None:
        if not self.weights or not self.claimed or any(not outs for outs in self.prefix):
            raise ContractViolation("a reveal names every tensor: weights, each op's outputs, the claim")


@dataclass(frozen=True, slots=True)
class ArbitrationJob:
    """Re-execute the single operation after `position` from the defender's revealed
    digests (inputs fetched by digest, each hash-checked) and judge the defender's digest
    at the next position (`defender_next`); `threshold_ppm` > 0 allows that much relative
    distance between the claimed outputs and the re-executed ones."""

    task_id: bytes
    segment: int
    position: int
    weights: Digests
    optimizer: Digests
    prefix: tuple[Digests, ...]
    claimed: Digests
    defender_next: bytes
    threshold_ppm: int


@dataclass(frozen=True, slots=True)
class ArbitrationResult:
    """The vote, and what was re-executed (for the log): which op, its FLOPs, the seconds
    spent re-executing it, and the seconds spent fetching and checking its inputs."""

    task_id: bytes
    defender_right: bool
    op: str
    op_index: int
    flops: int
    seconds: float
    reason: str = ""
    fetch_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class CrewTrainJob:
    """Train member `rank` of a crew task together with the rest of its crew (`members`,
    every member's key by rank, stage-major as `Task.crew`). The shell rendezvouses with
    the other members, trains its stage from the task's crew spec (`spec_hash`: a crew
    task file, protocol/pol/crew_spec.py's format) and keeps its proof to serve verifiers."""

    task_id: bytes
    spec_hash: bytes
    rank: int
    members: tuple[bytes, ...]
    stages: int
    data_parallel: int
    #: Which placement of the task this crew is (`Task.replacements`): the same members
    #: re-elected after an abort are another crew, with a tag (and a run) of their own.
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class CrewTrainResult:
    """A member's commitment (`commitment`: the hash of its commitment record, which the
    shell serves by that hash, and `n_boundaries`), or, when the crew stopped before the
    end, `aborted` (why) with the steps it had done and no commitment."""

    task_id: bytes
    rank: int
    commitment: bytes
    n_boundaries: int
    aborted: str = ""
    step: int = 0

    def __post_init__(self) -> None:
        if self.aborted and self.commitment:
            raise ContractViolation("an aborted crew member commits nothing")
        if not self.aborted and (len(self.commitment) != 32 or self.n_boundaries < 2):
            raise ContractViolation("a member that trained commits a 32-byte hash over at least 2 boundaries")


@dataclass(frozen=True, slots=True)
class CrewCheckJob:
    """Re-execute member `rank`'s sampled segments against its committed record (a
    verifier's duty on its slot, and a validator's in a crew game). The sample follows
    from `beacon` (the task's verify beacon) and the member's stage, so every replica of a
    stage is checked on the same segments and every checker of one member agrees."""

    task_id: bytes
    spec_hash: bytes
    rank: int
    members: tuple[bytes, ...]
    stages: int
    data_parallel: int
    commitments: tuple[bytes, ...]  # every member's committed record hash, by rank
    beacon: bytes


@dataclass(frozen=True, slots=True)
class CrewCheckResult:
    """`passed`: the member stands behind its commitment on every sampled segment.
    `available` False: its record or a segment could not be fetched (a member must serve
    its proof, so a crew check counts that against it: `passed` is False). `finding`
    says what differed first."""

    task_id: bytes
    rank: int
    passed: bool
    available: bool = True
    finding: str = ""
    steps_executed: int = 0


#: The result type of each job: the contract in one table.
RESULT_OF: dict[type[Any], type[Any]] = {
    MarketTrainJob: MarketTrainResult,
    ProfileJob: ProfileResult,
    SegmentCheckJob: SegmentCheckResult,
    StateHashJob: StateHashResult,
    RevealJob: RevealResult,
    ArbitrationJob: ArbitrationResult,
    AvailabilityJob: ArbitrationResult,
    CrewTrainJob: CrewTrainResult,
    CrewCheckJob: CrewCheckResult,
}
JOB_TYPES = tuple(RESULT_OF)


def conforms(job: Any, result: Any) -> None:
    """Raise ContractViolation unless `result` answers `job` (None, "no answer", does)."""
    if result is None:
        return
    want = RESULT_OF.get(type(job))
    if want is None:
        raise ContractViolation(f"{type(job).__name__} is not a market compute job")
    if type(result) is not want:
        got = type(result).__name__
        raise ContractViolation(f"{type(job).__name__} answered with {got}, not {want.__name__}")
    if result.task_id != job.task_id:
        raise ContractViolation("the result is for another task")
    position = getattr(job, "position", None)
    if isinstance(result, StateHashResult | RevealResult) and result.position != position:
        raise ContractViolation("the result is for another game position")
    if isinstance(result, SegmentCheckResult) and result.segment != job.segment:
        raise ContractViolation("the result is for another segment")
    if isinstance(result, CrewTrainResult | CrewCheckResult) and result.rank != job.rank:
        raise ContractViolation("the result is for another crew member")
