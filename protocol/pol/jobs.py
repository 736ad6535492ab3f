"""Compute jobs: what a core asks its shell to run (RunCompute.job) and the results.

Jobs are declarative records so that the same core can be driven by node/compute (torch)
or by the synthetic hash-chain trainer (netsim's big sweeps) without knowing which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from protocol.pol.merkle import CheckpointLeaf
from protocol.pol.messages import MAX_STATE_TENSORS, OpOutputs
from protocol.pol.spec import TaskSpec
from protocol.schema import U8, U16, U32, Hash32, Len

MAX_PROFILE_THREADS = 8


@dataclass(frozen=True, slots=True)
class TrainJob:
    task_id: Hash32
    spec: TaskSpec


@dataclass(frozen=True, slots=True)
class TrainResult:
    task_id: Hash32
    leaves: Annotated[tuple[CheckpointLeaf, ...], Len(1, 4097)]
    root: Hash32


@dataclass(frozen=True, slots=True)
class VerifyJob:
    """Re-execute segment `segment` from `start` and compare with the claimed `end`."""

    task_id: Hash32
    spec: TaskSpec
    segment: U32
    start: CheckpointLeaf
    end: CheckpointLeaf
    threshold: float


@dataclass(frozen=True, slots=True)
class VerifyResult:
    task_id: Hash32
    segment: U32
    passed: bool
    distance: float
    cosine: float
    reproduced_end: Hash32  # state hash the verifier reached (its claim if it disputes)


@dataclass(frozen=True, slots=True)
class ProfileJob:
    task_id: Hash32
    spec: TaskSpec
    stretch_steps: U32
    thread_counts: Annotated[tuple[U16, ...], Len(1, MAX_PROFILE_THREADS)]


@dataclass(frozen=True, slots=True)
class ProfileResult:
    task_id: Hash32
    noise: Annotated[tuple[float, ...], Len(0, 64)]
    signal: Annotated[tuple[float, ...], Len(0, 64)]
    threshold: float


@dataclass(frozen=True, slots=True)
class ClaimJob:
    """A party computes its value for a pinpoint query (state hash or op-chain value)."""

    dispute_id: Hash32
    phase: U8
    round: U16
    index: U32
    step: U32  # global step: the state asked for (step phase), the step bisected (op phase)


@dataclass(frozen=True, slots=True)
class ClaimResult:
    dispute_id: Hash32
    phase: U8
    round: U16
    index: U32
    value: Hash32


@dataclass(frozen=True, slots=True)
class RevealJob:
    dispute_id: Hash32
    step: U32
    op_index: U32


@dataclass(frozen=True, slots=True)
class RevealResult:
    dispute_id: Hash32
    weights: Annotated[tuple[Hash32, ...], Len(1, MAX_STATE_TENSORS)]
    optimizer: Annotated[tuple[Hash32, ...], Len(0, MAX_STATE_TENSORS)]
    prefix: Annotated[tuple[OpOutputs, ...], Len(1, 4096)]


@dataclass(frozen=True, slots=True)
class RefereeJob:
    """Re-execute exactly one op of global step `step` from hash-checked inputs.
    `spec` is None for a crew member's step, whose ops (protocol/pol/crew_ops.py) its
    shell's referee knows from the crew's config."""

    dispute_id: Hash32
    spec: TaskSpec | None
    step: U32
    op_index: U32
    inputs: Annotated[tuple[Hash32, ...], Len(0, MAX_STATE_TENSORS)]  # STATE reads every state tensor
    defender_outputs: OpOutputs
    challenger_outputs: OpOutputs
    tolerance: float


@dataclass(frozen=True, slots=True)
class RefereeResult:
    dispute_id: Hash32
    defender_ok: bool
    challenger_ok: bool
    recomputed: Hash32  # op digest of the referee's own outputs
    defender_distance: float
    challenger_distance: float
