"""Votes, commit certificates, equivocation evidence and block hashing."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.consensus.block import ZERO_HASH, Block, BlockHeader, block_hash, merkle_root
from protocol.consensus.evidence import (
    EvidencePool,
    InvalidEvidence,
    evidence_id,
    make_evidence,
    verify_evidence,
)
from protocol.consensus.votes import (
    CommitCertificate,
    CommitSig,
    InvalidCertificate,
    SignedVote,
    Vote,
    VoteType,
    make_certificate,
    sign_vote,
    verify_certificate,
    verify_vote,
)
from protocol.envelope import open_envelope, seal
from protocol.identity import Keypair
from protocol.records import decode_record, encode_record

CHAIN = "polnet-test"
KEYS = [Keypair.derive(f"consensus-records/{i}") for i in range(4)]
POWERS = {k.public: 1 for k in KEYS}
H1, H2 = b"\x01" * 32, b"\x02" * 32


def signed(i: int, h: bytes | None = H1, round_: int = 0, t: VoteType = VoteType.PRECOMMIT) -> SignedVote:
    return sign_vote(CHAIN, Vote(5, round_, t, h, KEYS[i].public), KEYS[i].sign)


def test_the_envelope_signature_of_a_gossiped_vote_is_the_votes_own_signature() -> None:
    vote = Vote(5, 0, VoteType.PREVOTE, H1, KEYS[0].public)
    env = open_envelope(seal(vote, KEYS[0], CHAIN), CHAIN)
    assert verify_vote(CHAIN, SignedVote(vote, env.signature))
    assert env.signature == sign_vote(CHAIN, vote, KEYS[0].sign).signature


def test_a_vote_signature_does_not_verify_on_another_chain_or_for_another_vote() -> None:
    sv = signed(0)
    assert verify_vote(CHAIN, sv)
    assert not verify_vote("other-chain", sv)
    assert not verify_vote(CHAIN, dataclasses.replace(sv, vote=dataclasses.replace(sv.vote, round=1)))


def test_certificate_with_more_than_two_thirds_verifies() -> None:
    cert = make_certificate(5, 0, H1, [signed(0), signed(1), signed(2)])
    verify_certificate(CHAIN, cert, POWERS)
    assert decode_record(type(cert), encode_record(cert)) == cert


def _swap_last(cert: CommitCertificate, sig: CommitSig) -> CommitCertificate:
    return dataclasses.replace(cert, sigs=(*cert.sigs[:2], sig))


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda c: dataclasses.replace(c, sigs=c.sigs[:2]), "below quorum"),
        (lambda c: dataclasses.replace(c, sigs=(c.sigs[0], c.sigs[0], c.sigs[1])), "twice"),
        (lambda c: dataclasses.replace(c, block_hash=H2), "signature"),
        (lambda c: dataclasses.replace(c, round=1), "signature"),
        (
            lambda c: dataclasses.replace(
                c, sigs=(*c.sigs[:2], CommitSig(b"\x09" * 32, c.sigs[2].signature))
            ),
            "non-validator",
        ),
        (
            lambda c: dataclasses.replace(
                c, sigs=(*c.sigs[:2], CommitSig(c.sigs[2].validator, b"\x00" * 64))
            ),
            "signature",
        ),
    ],
)
def test_certificate_that_does_not_prove_a_commit_is_rejected(mutate: object, why: str) -> None:
    cert = make_certificate(5, 0, H1, [signed(0), signed(1), signed(2)])
    with pytest.raises(InvalidCertificate, match=why):
        verify_certificate(CHAIN, mutate(cert), POWERS)  # type: ignore[operator]


def test_certificate_quorum_is_by_stake_not_by_count() -> None:
    heavy = {KEYS[0].public: 10, KEYS[1].public: 1, KEYS[2].public: 1, KEYS[3].public: 1}
    verify_certificate(CHAIN, make_certificate(5, 0, H1, [signed(0)]), heavy)
    with pytest.raises(InvalidCertificate):
        verify_certificate(CHAIN, make_certificate(5, 0, H1, [signed(1), signed(2), signed(3)]), heavy)


def test_evidence_of_two_different_votes_at_one_position_verifies_standalone() -> None:
    ev = make_evidence(signed(1, H1), signed(1, H2))
    raw = encode_record(ev)
    verify_evidence(CHAIN, decode_record(type(ev), raw), POWERS)
    assert make_evidence(signed(1, H2), signed(1, H1)) == ev  # canonical regardless of order
    # A nil vote conflicts with a block vote too.
    verify_evidence(CHAIN, make_evidence(signed(1, None), signed(1, H2)), POWERS)


@pytest.mark.parametrize(
    ("a", "b", "why"),
    [
        (lambda: signed(1, H1), lambda: signed(1, H1), "identical"),
        (lambda: signed(1, H1), lambda: signed(2, H2), "different validators"),
        (lambda: signed(1, H1, round_=0), lambda: signed(1, H2, round_=1), "different positions"),
        (lambda: signed(1, H1), lambda: signed(1, H2, t=VoteType.PREVOTE), "different positions"),
    ],
)
def test_evidence_that_proves_no_equivocation_is_rejected(a: object, b: object, why: str) -> None:
    ev = make_evidence(a(), b())  # type: ignore[operator]
    with pytest.raises(InvalidEvidence, match=why):
        verify_evidence(CHAIN, ev, POWERS)


def test_evidence_with_a_forged_signature_or_wrong_order_or_outsider_is_rejected() -> None:
    ev = make_evidence(signed(1, H1), signed(1, H2))
    forged = dataclasses.replace(ev, vote_b=dataclasses.replace(ev.vote_b, signature=b"\x01" * 64))
    with pytest.raises(InvalidEvidence, match="signature"):
        verify_evidence(CHAIN, forged, POWERS)
    with pytest.raises(InvalidEvidence, match="order"):
        verify_evidence(CHAIN, dataclasses.replace(ev, vote_a=ev.vote_b, vote_b=ev.vote_a), POWERS)
    with pytest.raises(InvalidEvidence, match="not a validator"):
        verify_evidence(CHAIN, ev, {KEYS[0].public: 1})


def test_one_equivocation_position_has_one_evidence_id_whatever_the_pair() -> None:
    h3 = b"\x03" * 32
    first = make_evidence(signed(1, H1), signed(1, H2))
    third = make_evidence(signed(1, H1), signed(1, h3))
    assert evidence_id(first) == evidence_id(third)
    pool = EvidencePool()
    assert pool.add(first, current_height=6)
    assert not pool.add(third, current_height=6)  # same fault, not a second slash
    pool.mark_committed((first,), height=7)
    assert pool.is_committed(third) and pool.pending(10) == []
    assert not pool.add(first, current_height=7)


def test_evidence_pool_refuses_stale_evidence_and_is_bounded() -> None:
    pool = EvidencePool(capacity=2, max_age=10)
    assert not pool.add(make_evidence(signed(1, H1), signed(1, H2)), current_height=100)
    for i in range(3):
        pool.add(make_evidence(signed(i, H1, round_=50), signed(i, H2, round_=50)), current_height=6)
    assert len(pool.pending(10)) == 2


def _header(**changes: object) -> BlockHeader:
    base = BlockHeader(1, 0, KEYS[0].public, ZERO_HASH, ZERO_HASH, ZERO_HASH, ZERO_HASH, ZERO_HASH)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        {"height": 2},
        {"time": 1},
        {"proposer": KEYS[1].public},
        {"prev_hash": H1},
        {"tx_root": H1},
        {"evidence_root": H1},
        {"app_hash": H1},
        {"last_commit_hash": H1},
    ],
)
def test_every_header_field_changes_the_block_hash(change: dict[str, object]) -> None:
    assert block_hash(Block(_header(), (), (), None)) != block_hash(Block(_header(**change), (), (), None))


@given(st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=12))
def test_merkle_root_commits_to_leaf_order_and_content(leaves: list[bytes]) -> None:
    root = merkle_root(leaves)
    assert merkle_root(list(leaves)) == root
    if len(set(leaves)) > 1:
        assert merkle_root(list(reversed(leaves))) != root or leaves == list(reversed(leaves))
    assert merkle_root([*leaves, b"x"]) != root


def test_merkle_leaf_cannot_pose_as_an_inner_node() -> None:
    a, b = b"a", b"b"
    from protocol.encoding import sha256

    inner = sha256(b"\x00" + a) + sha256(b"\x00" + b)
    assert merkle_root([a, b]) != merkle_root([inner])
