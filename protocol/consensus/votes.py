"""Signed votes and commit certificates.

A vote is signed over the same domain-separated root the envelope uses
(`protocol.envelope.signing_root` with the Vote type tag and the voter as sender), so
the signature on the gossiped envelope of a vote *is* the vote's signature: a node
verifies each vote once, on arrival, and can still hand the (vote, signature) pair to
anyone inside a commit certificate or equivocation evidence, where it verifies
standalone, without the envelope.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated

from protocol.envelope import signing_root
from protocol.errors import ValidationError
from protocol.identity import verify
from protocol.records import encode_record
from protocol.schema import U32, U64, Hash32, Len, PubKey, Signature, message

from .limits import MAX_VALIDATORS

Verifier = Callable[[bytes, bytes, bytes], bool]
"""(public key, signature, signing root) -> valid; injectable so a simulator can share one
bounded cache across the hundreds of nodes it runs in one process."""


class VerifyCache:
    """A bounded memo of signatures already known to be valid.

    The precommits in a certificate are, almost always, votes this node already received
    in verified envelopes; remembering those makes checking a certificate nearly free
    instead of n ed25519 verifies per block. Only successes are cached, keyed by
    everything the signature covers, so a cache hit can never accept anything new.
    """

    def __init__(self, capacity: int = 8192, inner: Verifier = verify) -> None:
        self._ok: OrderedDict[tuple[bytes, bytes, bytes], None] = OrderedDict()
        self._votes: OrderedDict[tuple[bytes, bytes], Vote] = OrderedDict()
        self._capacity = capacity
        self._inner = inner

    def remember(self, public_key: bytes, signature: bytes, root: bytes) -> None:
        self._ok[(public_key, signature, root)] = None
        if len(self._ok) > self._capacity:
            self._ok.popitem(last=False)

    def remember_vote(self, signed: SignedVote) -> None:
        """`signed` arrived in an envelope the shell verified (same signature, same root):
        remember it without recomputing its root, which costs an encode and a hash."""
        self._votes[(signed.vote.validator, signed.signature)] = signed.vote
        if len(self._votes) > self._capacity:
            self._votes.popitem(last=False)

    def knows_vote(self, signed: SignedVote) -> bool:
        return self._votes.get((signed.vote.validator, signed.signature)) == signed.vote

    def __call__(self, public_key: bytes, signature: bytes, root: bytes) -> bool:
        if (public_key, signature, root) in self._ok:
            return True
        if not self._inner(public_key, signature, root):
            return False
        self.remember(public_key, signature, root)
        return True


class VoteType(IntEnum):
    PREVOTE = 1
    PRECOMMIT = 2


@message(0x11)
@dataclass(frozen=True, slots=True)
class Vote:
    """A prevote or precommit; `block_hash` None is a vote for nil."""

    height: U64
    round: U32
    vote_type: VoteType
    block_hash: Hash32 | None
    validator: PubKey


@dataclass(frozen=True, slots=True)
class SignedVote:
    vote: Vote
    signature: Signature


@dataclass(frozen=True, slots=True)
class CommitSig:
    """One precommit inside a certificate; the vote itself is implied by the certificate."""

    validator: PubKey
    signature: Signature


@message(0x12)
@dataclass(frozen=True, slots=True)
class CommitCertificate:
    """Precommits of more than 2/3 of the voting power for one block at one round."""

    height: U64
    round: U32
    block_hash: Hash32
    sigs: Annotated[tuple[CommitSig, ...], Len(1, MAX_VALIDATORS)]


class InvalidCertificate(ValidationError):
    """A commit certificate that does not prove a >2/3 commit of the block it names."""


def vote_root(chain_id: str, vote: Vote) -> bytes:
    """The signing root of a vote: identical to its envelope's when sealed by the voter."""
    return signing_root(chain_id, Vote.TYPE_TAG, vote.validator, encode_record(vote))  # type: ignore[attr-defined]


def verify_vote(chain_id: str, signed: SignedVote, verifier: Verifier = verify) -> bool:
    if isinstance(verifier, VerifyCache) and verifier.knows_vote(signed):
        return True
    return verifier(signed.vote.validator, signed.signature, vote_root(chain_id, signed.vote))


def sign_vote(chain_id: str, vote: Vote, sign: Callable[[bytes], bytes]) -> SignedVote:
    return SignedVote(vote, sign(vote_root(chain_id, vote)))


def quorum(total_power: int) -> int:
    """Smallest power that is more than 2/3 of `total_power` (Tendermint's 2f+1)."""
    return total_power * 2 // 3 + 1


def one_third_plus(total_power: int) -> int:
    """Smallest power that is more than 1/3 of `total_power` (f+1: one honest among them)."""
    return total_power // 3 + 1


def certificate_votes(cert: CommitCertificate) -> list[SignedVote]:
    return [
        SignedVote(
            Vote(cert.height, cert.round, VoteType.PRECOMMIT, cert.block_hash, s.validator), s.signature
        )
        for s in cert.sigs
    ]


def verify_certificate(
    chain_id: str,
    cert: CommitCertificate,
    powers: Mapping[bytes, int],
    verifier: Verifier = verify,
) -> None:
    """Raise InvalidCertificate unless `cert` carries valid precommits of >2/3 of `powers`."""
    total = sum(powers.values())
    seen: set[bytes] = set()
    power = 0
    for signed in certificate_votes(cert):
        who = signed.vote.validator
        # Rule: each validator signs a certificate at most once.
        if who in seen:
            raise InvalidCertificate("validator appears twice in the certificate")
        seen.add(who)
        # Rule: only members of the height's validator set count.
        if who not in powers:
            raise InvalidCertificate("certificate signed by a non-validator")
        power += powers[who]
    # Rule: more than 2/3 of the voting power (checked before the signatures: cheap first).
    if power < quorum(total):
        raise InvalidCertificate(f"certificate power {power} below quorum {quorum(total)} of {total}")
    # Rule: every signature is a valid precommit for exactly this block and round.
    for signed in certificate_votes(cert):
        if not verify_vote(chain_id, signed, verifier):
            raise InvalidCertificate("bad precommit signature in certificate")


def make_certificate(
    height: int, round_: int, block_hash: bytes, votes: list[SignedVote]
) -> CommitCertificate:
    """Build a certificate from precommits, in a canonical order (by validator key)."""
    sigs = sorted((CommitSig(v.vote.validator, v.signature) for v in votes), key=lambda s: s.validator)
    return CommitCertificate(height, round_, block_hash, tuple(sigs))
