"""The signed envelope: round-trips for every message type, and every way of tampering
with one (bit flips, truncation, re-signing, cross-type and cross-chain replays) is
rejected with its typed error, cheap checks before the signature."""

from __future__ import annotations

import math
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import protocol.envelope as envelope_mod
from protocol.encoding import sha256
from protocol.envelope import PROTOCOL_VERSION, open_envelope, seal, signing_root
from protocol.errors import (
    BadSignature,
    DecodeError,
    LimitExceeded,
    Malformed,
    MessageTooLarge,
    NonCanonical,
    ReplayError,
    UnknownType,
    UnsupportedVersion,
    WrongChain,
)
from protocol.identity import Keypair
from protocol.ledger.txs import Transfer
from protocol.limits import MAX_MESSAGE_BYTES, Limits
from protocol.messages import Hello, Ping, Pong
from protocol.records import encode_record
from protocol.replay import SeenCache, check_nonce
from tests.wire_strategies import any_message, message_classes, record_strategy

CHAIN = "devnet"
ALICE = Keypair.derive("alice")
MALLORY = Keypair.derive("mallory")
HELLO = Hello("polnet/test", 7, b"\x11" * 32, 4001)
CLASSES = message_classes()
IDS = [f"{cls.TYPE_TAG:#04x}-{cls.__name__}" for cls in CLASSES]
PER_TYPE = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def envelope_bytes(
    fields: list[Any], *, signer: Keypair = ALICE, sign_chain: str | None = None, sign_tag: int | None = None
) -> bytes:
    """An envelope with arbitrary outer fields, signed by `signer` over the given (or
    the envelope's own) chain and tag: the tool for hand-made hostile inputs."""
    version, chain, tag, sender, body = fields
    try:
        sig = signer.sign(signing_root(sign_chain or chain, sign_tag or tag, sender, body))
    except (DecodeError, TypeError):
        sig = b"\x00" * 64  # fields no honest signer could sign; rejected before the signature
    return msgpack.packb([version, chain, tag, sender, body, sig], use_bin_type=True)


def hello_fields(**changes: Any) -> list[Any]:
    base = {
        "version": PROTOCOL_VERSION,
        "chain": CHAIN,
        "tag": Hello.TYPE_TAG,
        "sender": ALICE.public,
        "body": encode_record(HELLO),
    }
    base.update(changes)
    return list(base.values())


# --- round trips ---------------------------------------------------------------------------------


def test_a_sealed_hello_opens_to_the_same_message_and_sender() -> None:
    raw = seal(HELLO, ALICE, CHAIN)
    env = open_envelope(raw, CHAIN)
    assert (env.body, env.sender, env.chain_id, env.version) == (HELLO, ALICE.public, CHAIN, PROTOCOL_VERSION)
    assert env.raw == raw
    assert env.message_id == sha256(raw)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_every_message_type_survives_seal_and_open(cls: type[Any]) -> None:
    @PER_TYPE
    @given(record_strategy(cls))
    def check(msg: Any) -> None:
        raw = seal(msg, ALICE, CHAIN)
        env = open_envelope(raw, CHAIN)
        assert env.body == msg and type(env.body) is cls
        assert seal(env.body, ALICE, CHAIN) == raw  # ed25519 is deterministic: same bytes

    check()


# --- tampering --------------------------------------------------------------------------------------


def test_every_single_bit_flip_of_an_envelope_is_rejected() -> None:
    raw = seal(HELLO, ALICE, CHAIN)
    for i in range(len(raw) * 8):
        flipped = bytearray(raw)
        flipped[i // 8] ^= 1 << (i % 8)
        with pytest.raises(DecodeError):
            open_envelope(bytes(flipped), CHAIN)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_message(), st.data())
def test_a_bit_flip_anywhere_in_any_message_type_is_rejected(msg: Any, data: st.DataObject) -> None:
    raw = seal(msg, ALICE, CHAIN)
    bit = data.draw(st.integers(0, len(raw) * 8 - 1), label="bit")
    flipped = bytearray(raw)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(DecodeError):
        open_envelope(bytes(flipped), CHAIN)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_truncation_at_every_offset_is_rejected(cls: type[Any]) -> None:
    @settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(record_strategy(cls))
    def check(msg: Any) -> None:
        raw = seal(msg, ALICE, CHAIN)
        for cut in range(len(raw)):
            with pytest.raises(Malformed):
                open_envelope(raw[:cut], CHAIN)

    check()


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_decode_errors(data: bytes) -> None:
    with pytest.raises(DecodeError):
        open_envelope(data, CHAIN)


# --- the hand-written corpus --------------------------------------------------------------------------


def _nan_ping_body() -> bytes:
    return b"\x91\xcb" + struct.pack(">d", math.nan)


CORPUS: list[tuple[str, bytes, type[DecodeError]]] = [
    ("oversized", b"\x96" + b"\x00" * MAX_MESSAGE_BYTES, MessageTooLarge),
    ("deep-nesting", b"\x91" * 5000, LimitExceeded),
    ("map32-header-claims-gigabytes", b"\xdf\xff\xff\xff\xff", LimitExceeded),
    ("str32-header-claims-gigabytes", b"\x96\x01\xdb\xff\xff\xff\xff", Malformed),
    ("not-an-array", msgpack.packb({"version": 1}), Malformed),
    ("five-fields", msgpack.packb(hello_fields()), Malformed),
    ("seven-fields", msgpack.packb([*hello_fields(), b"\x00" * 64, 0]), Malformed),
    ("unknown-ext-type", b"\x96\xd4\x05\x00" + b"\x00" * 5, Malformed),
    ("non-utf8-chain-id", b"\x96\x01\xa2\xff\xfe" + b"\x00" * 4, Malformed),
    ("version-is-a-string", envelope_bytes(hello_fields(version="1")), Malformed),
    ("tag-is-negative", envelope_bytes(hello_fields(tag=-1)), Malformed),
    ("sender-31-bytes", envelope_bytes(hello_fields(sender=ALICE.public[:31])), Malformed),
    ("body-is-a-string", envelope_bytes(hello_fields(body="hi")), Malformed),
    ("chain-id-too-long", envelope_bytes(hello_fields(chain="x" * 65), sign_chain="x" * 64), Malformed),
    ("unsupported-version", envelope_bytes(hello_fields(version=2)), UnsupportedVersion),
    ("wrong-chain-id", envelope_bytes(hello_fields(chain="mainnet")), WrongChain),
    ("unknown-type", envelope_bytes(hello_fields(tag=0xBEEF)), UnknownType),
    ("body-of-another-schema", envelope_bytes(hello_fields(body=encode_record(Ping(1)))), Malformed),
    ("body-trailing-bytes", envelope_bytes(hello_fields(body=encode_record(HELLO) + b"\x00")), Malformed),
    ("body-field-out-of-range", envelope_bytes(hello_fields(body=b"\x94\xa0\x01\xc4\x20" + b"\x11" * 32 + b"\xce\x00\x01\x00\x00")), LimitExceeded),  # noqa: E501
    ("body-nan", envelope_bytes(hello_fields(tag=Ping.TYPE_TAG, body=_nan_ping_body())), Malformed),
    ("body-non-canonical-int", envelope_bytes(hello_fields(tag=Ping.TYPE_TAG, body=b"\x91\xcd\x00\x05")), NonCanonical),  # noqa: E501
    ("outer-non-canonical-version", envelope_bytes(hello_fields())[:1] + b"\xcc" + envelope_bytes(hello_fields())[1:], NonCanonical),  # noqa: E501
    ("valid-signature-by-another-key", envelope_bytes(hello_fields(), signer=MALLORY), BadSignature),
    ("signature-for-another-chain", envelope_bytes(hello_fields(), sign_chain="testnet"), BadSignature),
    (
        "signature-over-another-types-domain",
        envelope_bytes(hello_fields(tag=Ping.TYPE_TAG, body=encode_record(Ping(9))), sign_tag=Pong.TYPE_TAG),
        BadSignature,
    ),
    ("sender-not-a-curve-point", envelope_bytes(hello_fields(sender=b"\xff" * 32)), BadSignature),
    ("all-zero-signature", msgpack.packb([*hello_fields(), b"\x00" * 64], use_bin_type=True), BadSignature),
]


@pytest.mark.parametrize(("data", "error"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_corpus_envelope_is_rejected_with_its_expected_error(data: bytes, error: type[DecodeError]) -> None:
    with pytest.raises(error):
        open_envelope(data, CHAIN)


def test_the_untampered_corpus_base_is_valid() -> None:
    """Guards the corpus: its entries fail because of their one change, not the base."""
    assert open_envelope(envelope_bytes(hello_fields()), CHAIN).body == HELLO


def test_same_body_bytes_under_another_type_tag_do_not_verify() -> None:
    # Ping and Pong share a schema: without the tag in the signing root, a Ping could
    # be replayed as a Pong.
    ping = seal(Ping(42), ALICE, CHAIN)
    fields = msgpack.unpackb(ping)
    fields[2] = Pong.TYPE_TAG
    with pytest.raises(BadSignature):
        open_envelope(msgpack.packb(fields, use_bin_type=True), CHAIN)


def test_a_replayed_transaction_nonce_is_refused_after_decoding() -> None:
    tx = Transfer(to=MALLORY.public, amount=5, nonce=3, fee=1)
    env = open_envelope(seal(tx, ALICE, CHAIN), CHAIN)
    check_nonce(expected=3, got=env.body.nonce)  # first use: accepted
    with pytest.raises(ReplayError):
        check_nonce(expected=4, got=env.body.nonce)  # same envelope again


def test_a_replayed_envelope_is_caught_by_the_seen_cache() -> None:
    cache = SeenCache(capacity=8, ttl=1_000)
    env = open_envelope(seal(HELLO, ALICE, CHAIN), CHAIN)
    assert cache.add(env.message_id, now=0)
    assert not cache.add(open_envelope(env.raw, CHAIN).message_id, now=10)


def test_cheap_checks_reject_before_any_signature_is_verified(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []

    def counting_verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
        calls.append(data)
        return True

    monkeypatch.setattr(envelope_mod, "verify", counting_verify)
    cheap = [data for _, data, error in CORPUS if error is not BadSignature]
    for data in cheap:
        with pytest.raises(DecodeError):
            open_envelope(data, CHAIN)
    assert calls == []


def test_the_decoder_honours_a_tighter_size_cap() -> None:
    raw = seal(HELLO, ALICE, CHAIN)
    with pytest.raises(MessageTooLarge):
        open_envelope(raw, CHAIN, Limits(max_bytes=len(raw) - 1))
    assert open_envelope(raw, CHAIN, Limits(max_bytes=len(raw))).body == HELLO


# --- the signing root -----------------------------------------------------------------------------------


def test_the_signing_root_separates_chain_type_sender_and_body() -> None:
    base = ("devnet", 1, ALICE.public, b"body")
    variants = [
        ("devnet2", 1, ALICE.public, b"body"),
        ("devnet", 2, ALICE.public, b"body"),
        ("devnet", 1, MALLORY.public, b"body"),
        ("devnet", 1, ALICE.public, b"bodz"),
    ]
    roots = {signing_root(*v) for v in [base, *variants]}
    assert len(roots) == 5


def test_the_chain_id_is_length_prefixed_so_boundaries_cannot_shift() -> None:
    # Without the length byte, chain "a" + tag 0x6101 and chain "aa" + tag 0x01.. could collide.
    assert signing_root("a", 0x6101, ALICE.public, b"") != signing_root("aa", 0x0101, ALICE.public, b"")


@pytest.mark.parametrize("chain", ["", "é" * 33, "x" * 65])
def test_sealing_for_an_unrepresentable_chain_id_is_refused(chain: str) -> None:
    with pytest.raises(Malformed):
        seal(HELLO, ALICE, chain)


def test_a_64_byte_multibyte_chain_id_round_trips() -> None:
    chain = "é" * 32
    assert open_envelope(seal(HELLO, ALICE, chain), chain).chain_id == chain
