"""Consensus snapshots: what a node needs to start at height h+1 without replaying 1..h.

Why: a restarted daemon used to replay every block from genesis through the ledger, so
its ready time grew with the chain (issue 9 item 5). Every `snapshot_every` heights the
core persists, in the same step that commits the block, its own consensus state after
that block together with the application's state:

- the committed block and its certificate (what the next block must extend),
- the validator set with its proposer priorities for the next height and the set that
  committed the block (priorities accumulate over every height, so they cannot be
  recomputed from the ledger's stakes alone),
- the validator powers of the heights still inside the evidence horizon, and the
  evidence ids committed inside it (so evidence is judged exactly as by a node that
  never stopped),
- the application's snapshot bytes (opaque here; the ledger's `State.export()`).

A node restored from one replays only the blocks after it. The snapshot is checked on
the way in: it decodes strictly, the application restored from it has the state root
the snapshot names, and the first stored block after it must name that root in its
header and carry a certificate of the snapshot's validator set (so the root and the set
are the ones the chain's validators certified, not only what this node wrote).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from protocol.app import Validator
from protocol.errors import Malformed
from protocol.limits import Limits, MiB
from protocol.records import decode_record, encode_record
from protocol.schema import I64, U64, Hash32, Len, PubKey

from .limits import MAX_VALIDATORS
from .messages import CommittedBlock
from .validators import ValidatorSet

#: First byte of a snapshot value: its format version.
SNAPSHOT_FORMAT = 1
#: The consensus part: a block (<= 1 MiB), two validator sets and the evidence horizon.
MAX_CHECKPOINT_BYTES = 4 * MiB
#: The application's state; far above devnet sizes (node/storage caps the row the same way).
MAX_APP_STATE_BYTES = 512 * MiB
#: Runs of identical validator powers kept (powers change only at epochs).
MAX_POWER_SPANS = 1024
#: Committed evidence ids inside the horizon (32 per block x the horizon, with room).
MAX_COMMITTED_EVIDENCE = 4096
_LEN_BYTES = 4
CHECKPOINT_LIMITS = Limits(max_bytes=MAX_CHECKPOINT_BYTES, max_array_len=max(MAX_COMMITTED_EVIDENCE, 4096))


class BadSnapshot(Malformed):
    """A snapshot that does not decode or does not fit the chain it claims to continue."""


@dataclass(frozen=True, slots=True)
class Member:
    pubkey: PubKey
    power: U64
    priority: I64


@dataclass(frozen=True, slots=True)
class PowerSpan:
    """Heights first..last (inclusive) all had these validator powers."""

    first: U64
    last: U64
    members: Annotated[tuple[Member, ...], Len(1, MAX_VALIDATORS)]  # priority unused (0)


@dataclass(frozen=True, slots=True)
class CommittedEvidence:
    evidence_id: Hash32
    height: U64


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The consensus state right after `last` was committed."""

    last: CommittedBlock
    app_hash: Hash32  # the application's root after `last` (what block height+1 names)
    vset: Annotated[tuple[Member, ...], Len(1, MAX_VALIDATORS)]  # of height+1
    prev_vset: Annotated[tuple[Member, ...], Len(1, MAX_VALIDATORS)]  # committed `last`
    powers: Annotated[tuple[PowerSpan, ...], Len(0, MAX_POWER_SPANS)]
    committed_evidence: Annotated[tuple[CommittedEvidence, ...], Len(0, MAX_COMMITTED_EVIDENCE)]

    @property
    def height(self) -> int:
        return self.last.block.height


def members_of(vset: ValidatorSet) -> tuple[Member, ...]:
    return tuple(Member(v.pubkey, v.power, p) for v, p in zip(vset.validators, vset.priorities, strict=True))


def vset_of(members: tuple[Member, ...]) -> ValidatorSet:
    """The validator set a checkpoint names (re-checked: sorted, unique, positive power)."""
    keys = [m.pubkey for m in members]
    # Rule: members are sorted by key without duplicates, as a ValidatorSet keeps them.
    if keys != sorted(set(keys)):
        raise BadSnapshot("snapshot validator set is not sorted by key or has duplicates")
    # Rule: every member has voting power.
    if any(m.power <= 0 for m in members):
        raise BadSnapshot("snapshot validator without power")
    validators = tuple(Validator(m.pubkey, m.power) for m in members)
    return ValidatorSet(validators, tuple(m.priority for m in members))


def power_spans(powers_at: dict[int, dict[bytes, int]]) -> tuple[PowerSpan, ...]:
    """Compress height -> powers (consecutive heights mostly share one dict) into runs."""
    spans: list[PowerSpan] = []
    for height in sorted(powers_at):
        members = tuple(Member(k, p, 0) for k, p in sorted(powers_at[height].items()))
        if spans and spans[-1].last + 1 == height and spans[-1].members == members:
            spans[-1] = PowerSpan(spans[-1].first, height, members)
        else:
            spans.append(PowerSpan(height, height, members))
    return tuple(spans)


def powers_of_spans(spans: tuple[PowerSpan, ...]) -> dict[int, dict[bytes, int]]:
    out: dict[int, dict[bytes, int]] = {}
    for span in spans:
        # Rule: spans are ordered, non-empty and do not overlap.
        if span.first > span.last or (out and span.first <= max(out)):
            raise BadSnapshot("snapshot power spans overlap or are out of order")
        powers = {m.pubkey: m.power for m in span.members}
        for h in range(span.first, span.last + 1):
            out[h] = powers  # shared, as the live node shares them within an epoch
    return out


def encode_snapshot(checkpoint: Checkpoint, app_state: bytes) -> bytes:
    """version (1 byte) | checkpoint length (4 bytes) | checkpoint record | app state."""
    cp = encode_record(checkpoint)
    if len(cp) > MAX_CHECKPOINT_BYTES or len(app_state) > MAX_APP_STATE_BYTES:
        raise BadSnapshot("snapshot over its size limit")
    return bytes([SNAPSHOT_FORMAT]) + len(cp).to_bytes(_LEN_BYTES, "big") + cp + app_state


def decode_snapshot(data: bytes) -> tuple[Checkpoint, bytes]:
    """Inverse of `encode_snapshot`; raises BadSnapshot (a DecodeError) on any fault."""
    head = 1 + _LEN_BYTES
    # Rule: a known format version and a length that fits the data and its cap.
    if len(data) < head or data[0] != SNAPSHOT_FORMAT:
        raise BadSnapshot("not a consensus snapshot of a known format")
    n = int.from_bytes(data[1:head], "big")
    if n > MAX_CHECKPOINT_BYTES or head + n > len(data) or len(data) - head - n > MAX_APP_STATE_BYTES:
        raise BadSnapshot("snapshot lengths do not fit")
    checkpoint = decode_record(Checkpoint, bytes(data[head : head + n]), CHECKPOINT_LIMITS)
    # Rule: the stored certificate is for the stored block.
    last = checkpoint.last
    if last.commit.height != last.block.height:
        raise BadSnapshot("snapshot certificate is for another height")
    return checkpoint, bytes(data[head + n :])
