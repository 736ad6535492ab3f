"""Market transactions (tags 0x50-0x5f): the eight task stages as signed ledger txs.

The signer of the envelope is the actor (worker, submitter, verifier, challenger,
validator); no transaction names its own sender, so none can act for someone else.
Every body ends with `nonce` and `fee`, which the ledger's ante handler consumes before
the market rule runs (the market rules never read them).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from protocol.pol.merkle import CheckpointLeaf, MerkleProof
from protocol.schema import U8, U16, U32, U64, Hash32, message


class DeviceClass(IntEnum):
    """Coarse capacity classes: a task runs only where its reproducibility profile holds."""

    CPU = 0
    CUDA = 1


@dataclass(frozen=True, slots=True)
class Verdict:
    """A verifier's finding on its sampled segment (distance against the profiled threshold)."""

    accept: bool
    segment: U32
    distance_ppm: U32



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
    nonce: U64
    fee: U64


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
)
