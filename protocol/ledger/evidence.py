"""Turning consensus evidence into a slash.

The ledger does not know how votes are signed; it asks an `EvidenceVerifier` (by
default the consensus module's) whether some bytes prove an equivocation, and gets back
the offender and the position. The slash is keyed by (offender, height, round, step),
not by the evidence bytes, so two different proofs of the same equivocation (say a
third conflicting vote) still slash once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from protocol.encoding import canonical_hash
from protocol.errors import DecodeError, ValidationError
from protocol.ledger.errors import InvalidEvidence
from protocol.records import decode_record


@dataclass(frozen=True, slots=True)
class Equivocation:
    offender: bytes
    height: int
    round: int
    step: int

    @property
    def key(self) -> bytes:
        """One id per equivocation position: what 'slashed exactly once' counts."""
        return canonical_hash([b"polnet/equivocation/v1", self.offender, self.height, self.round, self.step])


PowersAt = Callable[[int], Mapping[bytes, int]]
"""The validator set (key -> power) of a height; raises StaleEvidence when not kept."""


class EvidenceVerifier(Protocol):
    def __call__(self, chain_id: str, raw: bytes, powers_at: PowersAt) -> Equivocation:
        """Return what `raw` proves, or raise InvalidEvidence (or StaleEvidence)."""
        ...


def consensus_evidence(chain_id: str, raw: bytes, powers_at: PowersAt) -> Equivocation:
    """Verify protocol.consensus DuplicateVoteEvidence against the set of its height."""
    from protocol.consensus.evidence import DuplicateVoteEvidence, verify_evidence

    try:
        ev = decode_record(DuplicateVoteEvidence, raw)
    except DecodeError as exc:
        raise InvalidEvidence(f"evidence does not decode: {exc}") from exc
    powers = powers_at(ev.height)
    try:
        verify_evidence(chain_id, ev, powers)
    except ValidationError as exc:
        raise InvalidEvidence(f"evidence rejected: {exc}") from exc
    vote = ev.vote_a.vote
    return Equivocation(vote.validator, vote.height, vote.round, int(vote.vote_type))
