"""Wire records of proofs and disputes (tags 0x80-0x9f).

Moves in the pinpoint game are small (one 32-byte hash each); the reveal at the end is
the largest message (the digests of one step's tensors, a few tens of KiB at the spec
limits), still far below the envelope cap: tensors themselves travel as blobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from protocol.pol.ops import MAX_OP_OUTPUTS
from protocol.pol.spec import MAX_LAYERS, MAX_NODES_PER_LAYER, MAX_PARAMS_PER_LAYER
from protocol.schema import U8, U16, U32, U64, Hash32, Len, PubKey, Text, message

#: Upper bound on ops per step: 3 + 2 * nodes + parameter tensors (a transformer block
#: is 12 nodes with 12 parameter tensors).
MAX_OPS_PER_STEP = 3 + 2 * MAX_NODES_PER_LAYER * MAX_LAYERS + MAX_PARAMS_PER_LAYER * MAX_LAYERS
#: Parameters and optimizer state (at most two slots each).
MAX_STATE_TENSORS = MAX_PARAMS_PER_LAYER * MAX_LAYERS * 3


@message(0x80)
@dataclass(frozen=True, slots=True)
class ProofCommit:
    """The solver's commitment: after this, segments to check are drawn from the beacon."""

    task_id: Hash32
    root: Hash32
    num_checkpoints: U32
    final_weights_hash: Hash32


@message(0x81)
@dataclass(frozen=True, slots=True)
class SegmentVerdict:
    task_id: Hash32
    segment: U32
    passed: bool
    distance: float
    cosine: float


@message(0x82)
@dataclass(frozen=True, slots=True)
class DisputeOpen:
    """Both parties agree on the segment's start state and disagree on its end."""

    dispute_id: Hash32
    task_id: Hash32
    segment: U32
    start_step: U32
    interval: U32
    start_hash: Hash32
    defender_end: Hash32
    challenger_end: Hash32
    defender: PubKey
    challenger: PubKey


@message(0x83)
@dataclass(frozen=True, slots=True)
class PinpointQuery:
    """The coordinator asks both parties for their value at `index` by `deadline`."""

    dispute_id: Hash32
    phase: U8
    round: U16
    index: U32
    step: U32  # global step: the state asked for (step phase), the step bisected (op phase)
    deadline: U64


@message(0x84)
@dataclass(frozen=True, slots=True)
class PinpointClaim:
    """A party's state hash (step phase) or op-chain value (op phase) at `index`."""

    dispute_id: Hash32
    phase: U8
    round: U16
    index: U32
    value: Hash32


@dataclass(frozen=True, slots=True)
class OpOutputs:
    digests: Annotated[tuple[Hash32, ...], Len(1, MAX_OP_OUTPUTS)]


@message(0x85)
@dataclass(frozen=True, slots=True)
class OpReveal:
    """The tensor digests behind a party's chain up to the diverging op, inclusive."""

    dispute_id: Hash32
    weights: Annotated[tuple[Hash32, ...], Len(1, MAX_STATE_TENSORS)]
    optimizer: Annotated[tuple[Hash32, ...], Len(0, MAX_STATE_TENSORS)]
    prefix: Annotated[tuple[OpOutputs, ...], Len(1, MAX_OPS_PER_STEP)]


@message(0x86)
@dataclass(frozen=True, slots=True)
class RefereeVote:
    dispute_id: Hash32
    op_index: U32
    outcome: U8
    recomputed: Hash32


@message(0x87)
@dataclass(frozen=True, slots=True)
class DisputeResolved:
    dispute_id: Hash32
    outcome: U8
    step: U32
    op_index: U32
    rounds: U16
    reason: Text
