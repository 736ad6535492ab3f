"""Market transactions (tags 0x50-0x5f, 0x61, 0x64-0x66, 0x68): the eight task stages as
signed ledger txs, the private tasks' key txs (SetEncKey, KeyWrap, KeyWrapFault), a crew
member's commit or abort (CrewCommit, CrewAbort), and a worker's measured links
(CommitLinks), which crew placement reads.

The signer of the envelope is the actor (worker, submitter, verifier, challenger,
validator); no transaction names its own sender, so none can act for someone else.
Every body ends with `nonce` and `fee`, which the ledger's ante handler consumes before
the market rule runs (the market rules never read them).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated

from protocol.pol.merkle import CheckpointLeaf, MerkleProof
from protocol.pol.messages import OpOutputs
from protocol.schedule.links import MAX_LINKS_PER_ADVERT, LinkReport
from protocol.schema import U8, U16, U32, U64, Hash32, Len, PubKey, Trailing, message

#: Most tensor digests one side of a reveal may list (the decoder's array cap); a step's
#: state and its op outputs are far fewer for any spec the limits allow.
MAX_REVEAL_TENSORS = 4096
#: Most ops before the disputed one a reveal may list (protocol.pol.ops bounds a step).
MAX_REVEAL_OPS = 4095
#: A raw X25519 public key, or a private task's key commitment (protocol.sealing).
KEY_BYTES = 32
#: A key wrap (protocol.sealing.WRAP_LEN: ephemeral public key, encrypted key, tag).
WRAP_BYTES = 80
#: An optional key: absent (b"") or exactly KEY_BYTES (the rule checks which).
OptKey = Annotated[bytes, Len(0, KEY_BYTES)]


class DeviceClass(IntEnum):
    """Coarse capacity classes: a task runs only where its reproducibility profile holds."""

    CPU = 0
    CUDA = 1


@dataclass(frozen=True, slots=True)
class Verdict:
    """A verifier's finding on its sampled segment (distance against the profiled threshold).

    `available` False: the verifier could not fetch the committed segment at all, so it
    checked nothing; it accuses no one of cheating, and the validators settle whether the
    solver serves its proof (`protocol.market.game`, availability games)."""

    accept: bool
    segment: U32
    distance_ppm: U32
    available: bool = True



@message(0x50)
@dataclass(frozen=True, slots=True)
class RegisterWorker:
    """Offer capacity; again later to add stake, reprice, or commit a fresh forced-error secret."""

    device: DeviceClass
    memory_mb: U32
    flops: U64
    price_per_gflop: U64
    stake: U64
    secret_commit: Hash32
    nonce: U64
    fee: U64
    #: The worker's X25519 public key for private tasks (protocol.sealing); the envelope's
    #: ed25519 signature binds it to the worker's identity. Empty: keep the one on record.
    enc_key: Annotated[OptKey, Trailing()] = b""


@message(0x51)
@dataclass(frozen=True, slots=True)
class DeregisterWorker:
    """Leave the market; the stake returns once no duty is open."""

    reason: U8
    nonce: U64
    fee: U64


@message(0x52)
@dataclass(frozen=True, slots=True)
class SubmitTask:
    spec_hash: Hash32
    gflops: U64
    steps: U32
    checkpoint_interval: U32
    ops_per_step: U16
    device: DeviceClass
    min_memory_mb: U32
    reproducible: bool
    max_price_per_gflop: U64
    salt: U64
    #: A fine-tuning task's base: the proof root of an earlier task that settled valid
    #: (the ledger checks it is one), or zero (from scratch, or an uploaded base blob).
    base_root: Hash32
    nonce: U64
    fee: U64
    #: A private task: the commitment to its content key (protocol.sealing.key_commitment),
    #: so every elected party can tell the key it unwrapped is the task's. Empty: a public task.
    key_commit: Annotated[OptKey, Trailing()] = b""
    #: A crew task (docs/parallel.md): trained by `stages x data_parallel` elected members
    #: together, each verified on its own; both 0 for a task one solver trains.
    stages: Annotated[U8, Trailing()] = 0
    data_parallel: Annotated[U8, Trailing()] = 0
    #: A crew task's model as the placement's cost model reads it (protocol/schedule's
    #: `Workload`: byte-level transformer blocks, width, context, and the sequences of one
    #: micro-batch and micro-batches per replica and step). All 0: ranks follow the draw.
    model_blocks: Annotated[U16, Trailing()] = 0
    model_width: Annotated[U16, Trailing()] = 0
    model_context: Annotated[U16, Trailing()] = 0
    micro_batch: Annotated[U16, Trailing()] = 0
    micro_batches: Annotated[U16, Trailing()] = 0


@message(0x53)
@dataclass(frozen=True, slots=True)
class ProfileReport:
    task_id: Hash32
    threshold_ppm: U32
    spec_ok: bool
    nonce: U64
    fee: U64


@message(0x54)
@dataclass(frozen=True, slots=True)
class ProveCommit:
    task_id: Hash32
    merkle_root: Hash32
    n_checkpoints: U32
    nonce: U64
    fee: U64


@message(0x55)
@dataclass(frozen=True, slots=True)
class VerdictCommit:
    task_id: Hash32
    commitment: Hash32
    nonce: U64
    fee: U64


@message(0x56)
@dataclass(frozen=True, slots=True)
class VerdictReveal:
    task_id: Hash32
    verdict: Verdict
    salt: Hash32
    nonce: U64
    fee: U64


@message(0x57)
@dataclass(frozen=True, slots=True)
class Challenge:
    """Claim that verifier `target`'s verdict is wrong; `segment` is where (for an ACCEPT)."""

    task_id: Hash32
    target: U8
    segment: U32
    bond: U64
    nonce: U64
    fee: U64


@message(0x58)
@dataclass(frozen=True, slots=True)
class ForcedErrorReveal:
    """Every verifier reveals its duty secret after the challenge window (with its proof
    against the commitment in force at its election): the ledger then knows which verdicts
    were forced, excuses those, and catches a forced verifier that ignored its forcing."""

    task_id: Hash32
    secret: Hash32
    proof: MerkleProof
    nonce: U64
    fee: U64


@message(0x59)
@dataclass(frozen=True, slots=True)
class BisectClaim:
    """Defender's move: the state hash at the midpoint of the disputed interval."""

    task_id: Hash32
    round: U16
    digest: Hash32
    nonce: U64
    fee: U64


@message(0x5A)
@dataclass(frozen=True, slots=True)
class BisectReply:
    """Accuser's move: its own digest at the midpoint. The ledger compares it with the
    defender's, so both sides are bound to a value at every position they were asked."""

    task_id: Hash32
    round: U16
    digest: Hash32
    nonce: U64
    fee: U64


@message(0x5B)
@dataclass(frozen=True, slots=True)
class ArbitrationVote:
    """A validator's result of re-executing the single pinpointed operation."""

    task_id: Hash32
    round: U16
    defender_right: bool
    nonce: U64
    fee: U64


@message(0x5C)
@dataclass(frozen=True, slots=True)
class GameOpen:
    """Defender's first move of a game: the disputed segment's two checkpoint leaves with
    their Merkle membership proofs against the committed root. The game's ends are then
    the committed states, not values the defender picks after the accusation."""

    task_id: Hash32
    start: CheckpointLeaf
    start_proof: MerkleProof
    end: CheckpointLeaf
    end_proof: MerkleProof
    nonce: U64
    fee: U64


@message(0x5D)
@dataclass(frozen=True, slots=True)
class GameReveal:
    """Defender's last move, once bisection has left one operation: the tensor digests
    behind the agreed position (the step's state, then the outputs of every op of the
    step before the disputed one) and the disputed op's outputs as the defender claims
    them. The ledger checks the digests open the agreed hash and chain to the defender's
    own claim at the next position (pure hashing); validators then fetch the op's input
    tensors by these digests (each hash-checked), re-execute that one op, and vote."""

    task_id: Hash32
    round: U16
    weights: Annotated[tuple[Hash32, ...], Len(1, MAX_REVEAL_TENSORS)]
    optimizer: Annotated[tuple[Hash32, ...], Len(0, MAX_REVEAL_TENSORS)]
    prefix: Annotated[tuple[OpOutputs, ...], Len(0, MAX_REVEAL_OPS)]
    claimed: OpOutputs
    nonce: U64
    fee: U64


@message(0x5E)
@dataclass(frozen=True, slots=True)
class CancelTask:
    """The submitter withdraws a task nobody was elected for yet: the escrow comes back whole."""

    task_id: Hash32
    nonce: U64
    fee: U64


@message(0x5F)
@dataclass(frozen=True, slots=True)
class SetEncKey:
    """Publish or rotate the sender's X25519 public key (validators, who never register as
    workers, need one to arbitrate private tasks). Wraps already made keep the key they
    were made to."""

    enc_key: Annotated[bytes, Len(KEY_BYTES, KEY_BYTES)]
    nonce: U64
    fee: U64


@message(0x61)
@dataclass(frozen=True, slots=True)
class KeyWrap:
    """A private task's content key, wrapped to `recipient`'s registered X25519 key.

    Posted by the submitter, or by any party already holding a wrap for the task (the
    solver re-wraps for verifiers elected after it, a defender for the arbitrating
    validators), so replacements and arbitration get their keys without the submitter."""

    task_id: Hash32
    recipient: PubKey
    wrap: Annotated[bytes, Len(WRAP_BYTES, WRAP_BYTES)]
    nonce: U64
    fee: U64


@message(0x64)
@dataclass(frozen=True, slots=True)
class KeyWrapFault:
    """An elected party says no wrap addressed to it opens to the task's key (or none came):
    its silence is then excused, not slashed, and its stage's deadline replaces it like a
    silent party (unless a fresh wrap lets it do the duty first); the ledger cannot tell a
    bad wrap from a false report, so nobody is slashed for it either."""

    task_id: Hash32
    nonce: U64
    fee: U64


@message(0x65)
@dataclass(frozen=True, slots=True)
class CrewCommit:
    """A crew member's proof of its own stage: the hash of its commitment record (its
    boundary state digests and the hashes of every tensor it sent, received and all-
    reduced; the member serves the record and its segments to verifiers), and how many
    boundaries it holds. The sender's rank is where it sits in `Task.crew`."""

    task_id: Hash32
    commitment: Hash32
    n_boundaries: U32
    nonce: U64
    fee: U64


@message(0x66)
@dataclass(frozen=True, slots=True)
class CrewAbort:
    """A crew member says the crew stopped before the end (a member vanished or refused
    its messages) after `step` steps: it is released without pay and without a slash,
    while a member that says nothing by the deadline is slashed for silence."""

    task_id: Hash32
    step: U32
    nonce: U64
    fee: U64


@message(0x68)
@dataclass(frozen=True, slots=True)
class CommitLinks:
    """A worker's latest measurements of its links to peers (the figures it gossips in
    its `LinkAdvert`), committed so every node places a crew from the same matrix. Each
    commit replaces the sender's previous one; a link counts only where both ends
    committed figures that agree (protocol/schedule/book.py)."""

    reports: Annotated[tuple[LinkReport, ...], Len(1, MAX_LINKS_PER_ADVERT)]
    nonce: U64
    fee: U64


MarketTx = (
    RegisterWorker
    | DeregisterWorker
    | SubmitTask
    | ProfileReport
    | ProveCommit
    | VerdictCommit
    | VerdictReveal
    | Challenge
    | ForcedErrorReveal
    | BisectClaim
    | BisectReply
    | ArbitrationVote
    | GameOpen
    | GameReveal
    | CancelTask
    | SetEncKey
    | KeyWrap
    | KeyWrapFault
    | CrewCommit
    | CrewAbort
    | CommitLinks
)
