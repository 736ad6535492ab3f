"""Compute jobs the market's role machines ask their shell to run, and their results.

They name the task by id and the chain facts the shell needs (spec hash, proof root,
segment, positions); the shell resolves blobs and does the tensor work with torch
(node/compute) or with protocol/pol's synthetic hash-chain trainer (netsim sweeps).
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.pol.merkle import CheckpointLeaf
from protocol.schema import U32, Hash32


@dataclass(frozen=True, slots=True)
class MarketTrainJob:
    task_id: Hash32
    spec_hash: Hash32


@dataclass(frozen=True, slots=True)
class MarketTrainResult:
    """The proof: its root, and the leaves, which the solver keeps to open any dispute
    with Merkle membership proofs (a shell that leaves them out cannot defend)."""

    task_id: Hash32
    merkle_root: Hash32
    n_checkpoints: U32
    leaves: tuple[CheckpointLeaf, ...] = ()


@dataclass(frozen=True, slots=True)
class ProfileJob:
    task_id: Hash32
    spec_hash: Hash32


@dataclass(frozen=True, slots=True)
class ProfileResult:
    task_id: Hash32
    threshold_ppm: U32
    spec_ok: bool


@dataclass(frozen=True, slots=True)
class SegmentCheckJob:
    """Re-execute one segment against the committed proof (verifiers and whistleblowers)."""

    task_id: Hash32
    proof_root: Hash32
    segment: U32
    threshold_ppm: U32


@dataclass(frozen=True, slots=True)
class SegmentCheckResult:
    task_id: Hash32
    segment: U32
    passed: bool
    distance_ppm: U32


@dataclass(frozen=True, slots=True)
class StateHashJob:
    """This party's own digest at one (step x op) position of a disputed segment: at
    `step * ops_per_step + j`, the state hash of the step (j = 0) or the op-chain value
    after op j-1 of that step (see `protocol.market.game`)."""

    task_id: Hash32
    segment: U32
    position: U32


@dataclass(frozen=True, slots=True)
class StateHashResult:
    task_id: Hash32
    position: U32
    digest: Hash32


@dataclass(frozen=True, slots=True)
class ArbitrationJob:
    """Re-execute the single operation at `position` from the agreed input digest and
    judge the defender's output digest (the accuser's own is given for the record)."""

    task_id: Hash32
    segment: U32
    position: U32
    input_hash: bytes
    defender_output: bytes
    accuser_output: bytes = b""


@dataclass(frozen=True, slots=True)
class ArbitrationResult:
    task_id: Hash32
    defender_right: bool
