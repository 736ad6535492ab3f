"""Equivocation: two different signed votes by one validator at one (height, round, type).

The evidence carries both signed votes, so anyone holding the chain id can check it
without trusting the reporter. The pair is stored in a canonical order (by vote hash) so
the same equivocation always yields the same evidence bytes, which is what lets the
chain and the ledger slash it exactly once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from protocol.encoding import canonical_hash
from protocol.errors import ValidationError
from protocol.identity import verify
from protocol.records import record_hash
from protocol.schema import message

from .limits import MAX_EVIDENCE_AGE, MAX_PENDING_EVIDENCE
from .votes import SignedVote, Verifier, verify_vote


@message(0x13)
@dataclass(frozen=True, slots=True)
class DuplicateVoteEvidence:
    vote_a: SignedVote
    vote_b: SignedVote

    @property
    def validator(self) -> bytes:
        return self.vote_a.vote.validator

    @property
    def height(self) -> int:
        return self.vote_a.vote.height


class InvalidEvidence(ValidationError):
    """Evidence that does not prove an equivocation."""


def make_evidence(a: SignedVote, b: SignedVote) -> DuplicateVoteEvidence:
    """Canonical evidence for two conflicting votes (order-independent)."""
    if record_hash(a) > record_hash(b):
        a, b = b, a
    return DuplicateVoteEvidence(a, b)


def evidence_id(ev: DuplicateVoteEvidence) -> bytes:
    """One id per equivocation *position* (validator, height, round, type), not per proof:
    a third conflicting vote must not make a second piece of evidence for the same fault."""
    v = ev.vote_a.vote
    return canonical_hash([b"polnet/equivocation/v1", v.validator, v.height, v.round, int(v.vote_type)])


def verify_evidence(
    chain_id: str,
    ev: DuplicateVoteEvidence,
    powers: Mapping[bytes, int] | None = None,
    verifier: Verifier = verify,
) -> None:
    """Raise InvalidEvidence unless `ev` proves that one validator signed two different
    votes for the same position. `powers`, when given, is the validator set of that height."""
    a, b = ev.vote_a.vote, ev.vote_b.vote
    # Rule: both votes are by the same validator.
    if a.validator != b.validator:
        raise InvalidEvidence("votes are by different validators")
    # Rule: both votes are for the same height, round and vote type.
    if (a.height, a.round, a.vote_type) != (b.height, b.round, b.vote_type):
        raise InvalidEvidence("votes are for different positions")
    # Rule: the votes differ in what they vote for (otherwise it is a duplicate, not a fault).
    if a.block_hash == b.block_hash:
        raise InvalidEvidence("votes are identical")
    # Rule: canonical order, so one equivocation has exactly one evidence id.
    if record_hash(ev.vote_a) >= record_hash(ev.vote_b):
        raise InvalidEvidence("votes not in canonical order")
    # Rule: the validator was in the set for that height.
    if powers is not None and a.validator not in powers:
        raise InvalidEvidence("equivocator is not a validator at that height")
    # Rule, last because it is the expensive one: both signatures verify.
    if not (verify_vote(chain_id, ev.vote_a, verifier) and verify_vote(chain_id, ev.vote_b, verifier)):
        raise InvalidEvidence("a vote signature does not verify")


class EvidencePool:
    """Evidence waiting for a block, plus the ids already committed (so none is included
    twice). Both are bounded: pending by count, committed by age in heights."""

    def __init__(self, capacity: int = MAX_PENDING_EVIDENCE, max_age: int = MAX_EVIDENCE_AGE) -> None:
        self._pending: OrderedDict[bytes, DuplicateVoteEvidence] = OrderedDict()
        self._committed: OrderedDict[bytes, int] = OrderedDict()
        self._capacity = capacity
        self._max_age = max_age

    def add(self, ev: DuplicateVoteEvidence, current_height: int) -> bool:
        """Queue evidence (already verified); False when known, committed, stale or full."""
        eid = evidence_id(ev)
        if eid in self._pending or eid in self._committed:
            return False
        if ev.height + self._max_age < current_height or len(self._pending) >= self._capacity:
            return False
        self._pending[eid] = ev
        return True

    def pending(self, limit: int) -> list[DuplicateVoteEvidence]:
        return list(self._pending.values())[:limit]

    def is_committed(self, ev: DuplicateVoteEvidence) -> bool:
        return evidence_id(ev) in self._committed

    def is_stale(self, ev: DuplicateVoteEvidence, current_height: int) -> bool:
        return ev.height + self._max_age < current_height

    def committed(self) -> list[tuple[bytes, int]]:
        """(evidence id, height) of the committed evidence still inside the horizon."""
        return list(self._committed.items())

    def restore_committed(self, items: list[tuple[bytes, int]], height: int) -> None:
        """Reload `committed()` from a snapshot (oldest first); what is past the horizon goes."""
        for eid, ev_height in items:
            if ev_height + self._max_age >= height:
                self._committed[eid] = ev_height

    def mark_committed(self, evs: tuple[DuplicateVoteEvidence, ...], height: int) -> None:
        for ev in evs:
            eid = evidence_id(ev)
            self._pending.pop(eid, None)
            self._committed[eid] = ev.height
        while self._committed:
            oldest_id, ev_height = next(iter(self._committed.items()))
            if ev_height + self._max_age >= height:
                break
            del self._committed[oldest_id]
