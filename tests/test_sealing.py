"""Sealing for private tasks (protocol/sealing.py): content keys wrapped to elected parties,
deterministic sealed blobs that open only whole, in order, under the right key and digest."""

from __future__ import annotations

import hashlib
import io
import struct
import types

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import sealing
from protocol.errors import BlobError, KeyWrapError, PolnetError, SealedBlobError, SealError
from protocol.sealing import (
    CONTENT_KEY_LEN,
    ENC_KEY_LEN,
    MAX_GENERATION,
    SEAL_CHUNK,
    SEAL_HEADER_LEN,
    TAG_LEN,
    WRAP_LEN,
    BlobOpener,
    enc_private_key,
    enc_public_key,
    open_blob,
    open_pieces,
    seal_blob,
    seal_pieces,
    seal_stream,
    sealed_locator,
    sealed_piece_sizes,
    sealed_size,
    unwrap_content_key,
    wrap_content_key,
)

KEY = bytes([0x11]) * CONTENT_KEY_LEN
OTHER_KEY = bytes([0x12]) * CONTENT_KEY_LEN
CHAIN = "polnet-test"
TASK = bytes([0x22]) * 32
SMALL = 64  # a small chunk size, so multi-chunk blobs stay small

lengths = st.integers(min_value=0, max_value=5 * SMALL + 3)
chunks = st.sampled_from([1, 7, SMALL, 1000, SEAL_CHUNK])
keys32 = st.binary(min_size=32, max_size=32)


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def payload(n: int, salt: int = 0) -> bytes:
    return bytes((i * 31 + salt) % 251 for i in range(n))


def split_chunks(sealed: bytes, plain_len: int, chunk: int) -> tuple[bytes, list[bytes]]:
    n = max(1, -(-plain_len // chunk))
    out, pos = [], SEAL_HEADER_LEN
    for i in range(n):
        end = pos + min(chunk, plain_len - i * chunk) + TAG_LEN
        out.append(sealed[pos:end])
        pos = end
    assert pos == len(sealed)
    return sealed[:SEAL_HEADER_LEN], out


def documented_derive(content_key: bytes, *fields: bytes) -> bytes:
    """A key or name derived from a content key as the module docstring documents it, with
    `cryptography`'s own HKDF-Expand (not the module's HMAC): PRK = the content key, info =
    frame(*fields) with the domain string first, L = 32."""
    info = b"".join(len(p).to_bytes(4, "big") + p for p in fields)
    return HKDFExpand(hashes.SHA256(), 32, info).derive(content_key)


def reference_seal(key: bytes, plain: bytes, chunk: int) -> bytes:
    """seal_blob written from the module docstring's format alone, with raw `cryptography`."""
    header = struct.pack(">4sBIQ", b"PLSB", 1, chunk, len(plain))
    aead = AESGCM(documented_derive(key, b"polnet sealed blob key v1", header, sha(plain)))
    n = max(1, -(-len(plain) // chunk))
    return header + b"".join(
        aead.encrypt(i.to_bytes(11, "big") + bytes([i == n - 1]), plain[i * chunk : (i + 1) * chunk], header)
        for i in range(n)
    )


def opener_open(key: bytes, digest: bytes, sealed: bytes, max_plain: int, piece: int = 13) -> bytes:
    opener = BlobOpener(key, digest, max_plain)
    out = b"".join(opener.feed(sealed[i : i + piece]) for i in range(0, len(sealed), piece))
    opener.finish()
    return out


def both_reject(key: bytes, digest: bytes, sealed: bytes, max_plain: int = 1 << 20) -> None:
    """open_blob and the streaming opener (fed in odd pieces) both raise SealedBlobError."""
    with pytest.raises(SealedBlobError):
        open_blob(key, digest, sealed, max_plain)
    with pytest.raises(SealedBlobError):
        opener_open(key, digest, sealed, max_plain)


# --- round trips -------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(lengths, chunks, st.integers(0, 250))
def test_any_plaintext_round_trips_at_any_chunk_size(n: int, chunk: int, salt: int) -> None:
    plain = payload(n, salt)
    sealed = seal_blob(KEY, plain, chunk)
    assert len(sealed) == sealed_size(n, chunk)
    assert open_blob(KEY, sha(plain), sealed, n) == plain


BOUNDARIES = [0, 1, SMALL - 1, SMALL, SMALL + 1, 2 * SMALL - 1, 2 * SMALL, 2 * SMALL + 1, 3 * SMALL]


@pytest.mark.parametrize("n", BOUNDARIES)
def test_lengths_at_chunk_boundaries_round_trip_with_one_tag_per_chunk(n: int) -> None:
    plain = payload(n)
    sealed = seal_blob(KEY, plain, SMALL)
    n_chunks = max(1, -(-n // SMALL))
    assert len(sealed) == SEAL_HEADER_LEN + n + TAG_LEN * n_chunks == sealed_size(n, SMALL)
    assert open_blob(KEY, sha(plain), sealed, n) == plain
    assert opener_open(KEY, sha(plain), sealed, n) == plain


def test_empty_plaintext_seals_to_one_empty_final_chunk() -> None:
    sealed = seal_blob(KEY, b"")
    assert len(sealed) == SEAL_HEADER_LEN + TAG_LEN == sealed_size(0)
    assert open_blob(KEY, sha(b""), sealed, 0) == b""


def test_a_multi_megabyte_blob_round_trips_at_the_default_chunk_size() -> None:
    plain = payload(2 * SEAL_CHUNK + 12345)
    sealed = seal_blob(KEY, plain)
    assert len(sealed) == sealed_size(len(plain)) == SEAL_HEADER_LEN + len(plain) + 3 * TAG_LEN
    assert open_blob(KEY, sha(plain), sealed, len(plain)) == plain


# --- determinism and what an observer learns ------------------------------------------------------


def test_sealing_is_deterministic() -> None:
    plain = payload(3 * SMALL + 5)
    assert seal_blob(KEY, plain, SMALL) == seal_blob(KEY, plain, SMALL)


def test_identical_plaintexts_under_one_key_give_identical_blobs_and_locators_only() -> None:
    a, b = payload(200, 1), payload(200, 2)
    assert seal_blob(KEY, a) != seal_blob(KEY, b)
    assert sealed_locator(KEY, sha(a)) == sealed_locator(KEY, sha(a)) != sealed_locator(KEY, sha(b))
    # Under another content key, the same plaintext is unrelated (apart from its size).
    sa, so = seal_blob(KEY, a), seal_blob(OTHER_KEY, a)
    assert sa[:SEAL_HEADER_LEN] == so[:SEAL_HEADER_LEN]
    assert sa[SEAL_HEADER_LEN:] != so[SEAL_HEADER_LEN:]
    assert sealed_locator(KEY, sha(a)) != sealed_locator(OTHER_KEY, sha(a))


def test_the_locator_does_not_reveal_the_plaintext_digest() -> None:
    digest = sha(b"weights")
    locator = sealed_locator(KEY, digest)
    assert len(locator) == 32 and locator != digest


def test_every_blob_has_its_own_key_so_equal_prefixes_do_not_share_keystream() -> None:
    # Two plaintexts with the same first chunk: same nonce 0, but different blob keys.
    a = b"A" * SMALL + b"x"
    b = b"A" * SMALL + b"y"
    first = slice(SEAL_HEADER_LEN, SEAL_HEADER_LEN + SMALL)
    assert seal_blob(KEY, a, SMALL)[first] != seal_blob(KEY, b, SMALL)[first]


def test_the_chunk_size_is_bound_into_the_blob_key() -> None:
    # The same plaintext under two chunk layouts must not reuse (key, nonce) on other data.
    plain = payload(4 * SMALL)
    small = seal_blob(KEY, plain, SMALL)
    big = seal_blob(KEY, plain, 2 * SMALL)
    assert small[SEAL_HEADER_LEN : SEAL_HEADER_LEN + SMALL] != big[SEAL_HEADER_LEN : SEAL_HEADER_LEN + SMALL]


# --- streaming ----------------------------------------------------------------------------------


def dribble(data: bytes, piece: int) -> io.BytesIO:
    """A reader that returns at most `piece` bytes per read (like a socket or a pipe)."""

    class Dribble(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            return super().read(piece if n is None or n < 0 else min(n, piece))

    return Dribble(data)


@settings(max_examples=60, deadline=None)
@given(lengths, chunks, st.integers(1, 100))
def test_seal_stream_writes_exactly_what_seal_blob_returns(n: int, chunk: int, piece: int) -> None:
    plain = payload(n)
    out = io.BytesIO()
    seal_stream(KEY, sha(plain), n, dribble(plain, piece).read, out.write, chunk)
    assert out.getvalue() == seal_blob(KEY, plain, chunk)


@settings(max_examples=60, deadline=None)
@given(lengths, chunks, st.integers(0, 250))
def test_sealed_pieces_join_to_seal_blob_and_open_piece_by_piece(n: int, chunk: int, salt: int) -> None:
    plain = payload(n, salt)
    pieces = list(seal_pieces(KEY, plain, sha(plain), chunk))
    assert b"".join(pieces) == seal_blob(KEY, plain, chunk)
    assert [len(p) for p in pieces[1:]] == sealed_piece_sizes(pieces[0], n)
    assert b"".join(open_pieces(KEY, sha(plain), pieces, n)) == plain


def test_a_big_blob_seals_and_opens_as_pieces_of_one_chunk_each() -> None:
    plain = payload(3 * SEAL_CHUNK + 5)
    pieces = list(seal_pieces(KEY, plain, sha(plain)))
    assert [len(p) for p in pieces] == [SEAL_HEADER_LEN] + [SEAL_CHUNK + TAG_LEN] * 3 + [5 + TAG_LEN]
    assert [len(p) for p in open_pieces(KEY, sha(plain), pieces, len(plain))] == [SEAL_CHUNK] * 3 + [5]


def test_seal_pieces_checks_its_arguments_before_the_first_piece() -> None:
    with pytest.raises(SealError):
        seal_pieces(KEY[:31], b"x", sha(b"x"))
    with pytest.raises(SealError):
        seal_pieces(KEY, b"x", sha(b"x")[:31])


def _open_all(pieces: list[bytes], digest: bytes, max_plain: int = 1 << 20, key: bytes = KEY) -> bytes:
    return b"".join(open_pieces(key, digest, pieces, max_plain))


def test_opening_pieces_rejects_what_open_blob_rejects() -> None:
    plain = payload(3 * SMALL + 10)
    digest = sha(plain)
    pieces = list(seal_pieces(KEY, plain, digest, SMALL))
    tampered = [*pieces[:2], bytes([pieces[2][0] ^ 1]) + pieces[2][1:], *pieces[3:]]
    cases = {
        "tampered chunk": (tampered, digest, KEY),
        "reordered": ([pieces[0], pieces[2], pieces[1], *pieces[3:]], digest, KEY),
        "last chunk dropped": (pieces[:-1], digest, KEY),
        "trailing piece": ([*pieces, b"x"], digest, KEY),
        "no header": (pieces[1:], digest, KEY),
        "empty": ([], digest, KEY),
        "misaligned": ([pieces[0], pieces[1] + pieces[2], *pieces[3:]], digest, KEY),
        "wrong key": (pieces, digest, OTHER_KEY),
        "wrong digest": (pieces, sha(b"other"), KEY),
    }
    for name, (ps, d, key) in cases.items():
        with pytest.raises(SealedBlobError):
            _open_all(ps, d, key=key)
            pytest.fail(f"{name}: opened")
    with pytest.raises(SealedBlobError):  # announced length over max_plain: from the header alone
        _open_all(pieces, digest, max_plain=len(plain) - 1)


def test_opening_pieces_under_a_digest_the_plaintext_lacks_fails_after_the_last_chunk() -> None:
    plain = payload(2 * SMALL)
    lie = sha(b"not this plaintext")
    pieces = list(seal_pieces(KEY, plain, lie, SMALL))  # a key holder sealing other bytes under a digest
    out = open_pieces(KEY, lie, pieces, len(plain))
    released = [next(out), next(out)]  # each chunk authenticates: provisional plaintext
    assert b"".join(released) == plain
    with pytest.raises(SealedBlobError, match="does not match its digest"):
        next(out)


def test_seal_stream_reads_exactly_size_bytes() -> None:
    plain = payload(100)
    src = io.BytesIO(plain + b"trailing bytes belong to someone else")
    out = io.BytesIO()
    seal_stream(KEY, sha(plain), 100, src.read, out.write, SMALL)
    assert src.tell() == 100
    assert out.getvalue() == seal_blob(KEY, plain, SMALL)


def test_seal_stream_rejects_input_shorter_than_its_size() -> None:
    plain = payload(100)
    with pytest.raises(SealError):
        seal_stream(KEY, sha(plain), 101, io.BytesIO(plain).read, io.BytesIO().write, SMALL)


def test_seal_stream_rejects_input_that_changed_since_it_was_hashed() -> None:
    plain = payload(100)
    changed = b"!" + plain[1:]
    with pytest.raises(SealError):
        seal_stream(KEY, sha(plain), 100, io.BytesIO(changed).read, io.BytesIO().write, SMALL)


@settings(max_examples=60, deadline=None)
@given(lengths, chunks, st.lists(st.integers(1, 97), min_size=1, max_size=8))
def test_the_streaming_opener_fed_in_odd_pieces_equals_open_blob(
    n: int, chunk: int, sizes: list[int]
) -> None:
    plain = payload(n, 7)
    sealed = seal_blob(KEY, plain, chunk)
    opener = BlobOpener(KEY, sha(plain), n)
    out, pos, i = [], 0, 0
    while pos < len(sealed):
        step = sizes[i % len(sizes)]
        out.append(opener.feed(sealed[pos : pos + step]))
        pos, i = pos + step, i + 1
    opener.finish()
    assert b"".join(out) == open_blob(KEY, sha(plain), sealed, n) == plain


def test_the_streaming_opener_releases_only_whole_authenticated_chunks() -> None:
    plain = payload(3 * SMALL)
    sealed = seal_blob(KEY, plain, SMALL)
    opener = BlobOpener(KEY, sha(plain), len(plain))
    first_end = SEAL_HEADER_LEN + SMALL + TAG_LEN
    assert opener.feed(sealed[: first_end - 1]) == b""
    assert opener.feed(sealed[first_end - 1 : first_end]) == plain[:SMALL]
    assert opener.feed(sealed[first_end:]) == plain[SMALL:]
    opener.finish()


def test_the_streaming_opener_is_dead_after_a_failure() -> None:
    plain = payload(2 * SMALL)
    sealed = bytearray(seal_blob(KEY, plain, SMALL))
    sealed[SEAL_HEADER_LEN] ^= 1
    opener = BlobOpener(KEY, sha(plain), len(plain))
    with pytest.raises(SealedBlobError):
        opener.feed(bytes(sealed))
    with pytest.raises(SealedBlobError):
        opener.feed(b"")
    with pytest.raises(SealedBlobError):
        opener.finish()


# --- tampering: every case is a SealedBlobError -----------------------------------------------------


PLAIN = payload(3 * SMALL + 10)
SEALED = seal_blob(KEY, PLAIN, SMALL)
DIGEST = sha(PLAIN)


@pytest.mark.parametrize("chunk_index", range(4))
def test_a_flipped_byte_in_any_chunk_is_rejected(chunk_index: int) -> None:
    header, parts = split_chunks(SEALED, len(PLAIN), SMALL)
    for offset in (0, len(parts[chunk_index]) // 2, len(parts[chunk_index]) - 1):  # data and tag
        bad = [bytearray(p) for p in parts]
        bad[chunk_index][offset] ^= 0x80
        both_reject(KEY, DIGEST, header + b"".join(bad))


@pytest.mark.parametrize("offset", range(SEAL_HEADER_LEN))
def test_a_flipped_byte_in_the_header_is_rejected(offset: int) -> None:
    bad = bytearray(SEALED)
    bad[offset] ^= 0x01
    both_reject(KEY, DIGEST, bytes(bad))


def test_every_truncation_is_rejected() -> None:
    for cut in range(len(SEALED)):
        with pytest.raises(SealedBlobError):
            open_blob(KEY, DIGEST, SEALED[:cut], len(PLAIN))
        opener = BlobOpener(KEY, DIGEST, len(PLAIN))
        with pytest.raises(SealedBlobError):
            opener.feed(SEALED[:cut])
            opener.finish()


def test_dropping_the_last_chunk_is_rejected_even_with_the_length_rewritten() -> None:
    header, parts = split_chunks(SEALED, len(PLAIN), SMALL)
    both_reject(KEY, DIGEST, header + b"".join(parts[:-1]))
    # Rewrite the header to announce the shorter length: the chunks were bound to the old one.
    magic, version, chunk, _ = struct.unpack(">4sBIQ", header)
    shorter = struct.pack(">4sBIQ", magic, version, chunk, 3 * SMALL)
    both_reject(KEY, DIGEST, shorter + b"".join(parts[:-1]))
    both_reject(KEY, sha(PLAIN[: 3 * SMALL]), shorter + b"".join(parts[:-1]))


def test_a_full_chunk_ending_early_is_rejected_by_its_final_flag() -> None:
    # Exactly 3 full chunks: the third is final. Sealed as 4 chunks' worth, its 3rd is not.
    plain = payload(4 * SMALL)
    header, parts = split_chunks(seal_blob(KEY, plain, SMALL), len(plain), SMALL)
    magic, version, chunk, _ = struct.unpack(">4sBIQ", header)
    shorter = struct.pack(">4sBIQ", magic, version, chunk, 3 * SMALL)
    both_reject(KEY, sha(plain[: 3 * SMALL]), shorter + b"".join(parts[:3]))


def test_reordered_chunks_are_rejected() -> None:
    header, parts = split_chunks(SEALED, len(PLAIN), SMALL)
    both_reject(KEY, DIGEST, header + parts[1] + parts[0] + parts[2] + parts[3])
    both_reject(KEY, DIGEST, header + parts[0] + parts[2] + parts[1] + parts[3])


def test_a_chunk_spliced_from_another_blob_is_rejected() -> None:
    other = payload(len(PLAIN), 99)
    header, parts = split_chunks(SEALED, len(PLAIN), SMALL)
    _, other_parts = split_chunks(seal_blob(KEY, other, SMALL), len(other), SMALL)
    for i in range(len(parts)):
        spliced = [*parts[:i], other_parts[i], *parts[i + 1 :]]
        both_reject(KEY, DIGEST, header + b"".join(spliced))


def test_trailing_bytes_after_the_final_chunk_are_rejected() -> None:
    both_reject(KEY, DIGEST, SEALED + b"\x00")


def test_the_wrong_content_key_is_rejected() -> None:
    both_reject(OTHER_KEY, DIGEST, SEALED)


def test_the_wrong_digest_is_rejected() -> None:
    both_reject(KEY, sha(b"something else"), SEALED)


def test_a_blob_sealed_under_a_digest_its_plaintext_does_not_have_is_rejected() -> None:
    # A content-key holder forges a blob for digest D with other content: the hash check catches it.
    forged = io.BytesIO()
    fake = payload(len(PLAIN), 5)
    with pytest.raises(SealError):
        seal_stream(KEY, DIGEST, len(fake), io.BytesIO(fake).read, forged.write, SMALL)
    both_reject(KEY, DIGEST, forged.getvalue())


def test_an_announced_length_over_max_plain_is_rejected_from_the_header_alone() -> None:
    header = struct.pack(">4sBIQ", b"PLSB", 1, SEAL_CHUNK, 1 << 40)
    with pytest.raises(SealedBlobError, match="over the limit"):
        open_blob(KEY, DIGEST, header + bytes(TAG_LEN), 1 << 20)
    opener = BlobOpener(KEY, DIGEST, 1 << 20)
    with pytest.raises(SealedBlobError, match="over the limit"):
        opener.feed(header)
    # A real blob one byte over the caller's limit, too.
    both_reject(KEY, DIGEST, SEALED, len(PLAIN) - 1)


@pytest.mark.parametrize(
    "header",
    [
        struct.pack(">4sBIQ", b"PLSX", 1, SMALL, 0),
        struct.pack(">4sBIQ", b"PLSB", 2, SMALL, 0),
        struct.pack(">4sBIQ", b"PLSB", 1, 0, 0),
        struct.pack(">4sBIQ", b"PLSB", 1, (1 << 24) + 1, 0),
    ],
    ids=["bad-magic", "unknown-version", "zero-chunk", "oversized-chunk"],
)
def test_a_bad_header_is_rejected(header: bytes) -> None:
    both_reject(KEY, sha(b""), header + bytes(TAG_LEN))


def test_a_sealed_blob_error_is_a_blob_error_but_a_bad_argument_is_not() -> None:
    assert issubclass(SealedBlobError, BlobError) and issubclass(SealedBlobError, SealError)
    assert issubclass(KeyWrapError, SealError) and issubclass(SealError, PolnetError)
    # A caller's bad argument says nothing about the blob, so it is not a BlobError.
    for call in (
        lambda: open_blob(KEY[:31], DIGEST, SEALED, 1 << 20),
        lambda: open_blob(KEY, DIGEST[:31], SEALED, 1 << 20),
        lambda: BlobOpener(KEY, DIGEST, -1),
        lambda: seal_blob(KEY[:31], PLAIN),
        lambda: seal_blob(KEY, PLAIN, 0),
        lambda: sealed_locator(KEY, DIGEST[:31]),
    ):
        with pytest.raises(SealError) as info:
            call()
        assert not isinstance(info.value, BlobError)


# --- known digests and the two output paths ------------------------------------------------------

HAS_INTO = sealing._HAS_INTO


@pytest.fixture(params=["join", "into"])
def output_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test through each way of building sealed and opened blobs: concatenating
    per-chunk results (older `cryptography`, small blobs) and writing into one buffer with
    encrypt_into/decrypt_into (big blobs, where the installed version has them)."""
    if request.param == "join":
        monkeypatch.setattr(sealing, "_HAS_INTO", False)
    else:
        if not HAS_INTO:
            pytest.skip("the installed cryptography has no encrypt_into/decrypt_into")
        monkeypatch.setattr(sealing, "_SMALL_BLOB", 0)  # every blob, however small
    return str(request.param)


@settings(max_examples=60, deadline=None)
@given(lengths, chunks, st.integers(0, 250))
def test_seal_blob_with_its_digest_given_is_byte_identical(n: int, chunk: int, salt: int) -> None:
    plain = payload(n, salt)
    assert seal_blob(KEY, plain, chunk, digest=sha(plain)) == seal_blob(KEY, plain, chunk)


def test_a_big_blob_with_its_digest_given_is_byte_identical() -> None:
    plain = payload(2 * SEAL_CHUNK + 12345, 3)
    assert seal_blob(KEY, plain, digest=sha(plain)) == seal_blob(KEY, plain)
    assert seal_blob(KEY, plain, 1000, sha(plain)) == seal_blob(KEY, plain, 1000)
    assert seal_blob(KEY, plain, 1000) == reference_seal(KEY, plain, 1000)


def test_with_a_digest_given_seal_blob_does_not_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = payload(3 * SMALL + 5)
    digest, want = sha(plain), seal_blob(KEY, plain, SMALL)

    def no_hashing(*_: object) -> object:
        raise AssertionError("seal_blob hashed a plaintext whose digest it was given")

    monkeypatch.setattr(sealing, "hashlib", types.SimpleNamespace(sha256=no_hashing))
    assert seal_blob(KEY, plain, SMALL, digest=digest) == want


def test_open_blob_hashes_the_plaintext_once_as_it_decrypts(
    monkeypatch: pytest.MonkeyPatch, output_path: str
) -> None:
    plain = payload(5 * SMALL + 9)
    sealed = seal_blob(KEY, plain, SMALL)
    fed: list[int] = []

    class Counting:
        def __init__(self) -> None:
            self._h = hashlib.sha256()

        def update(self, data: bytes) -> None:
            fed.append(len(data))
            self._h.update(data)

        def digest(self) -> bytes:
            return self._h.digest()

    monkeypatch.setattr(sealing, "hashlib", types.SimpleNamespace(sha256=Counting))
    assert open_blob(KEY, sha(plain), sealed, len(plain)) == plain
    assert fed == [SMALL] * 5 + [9]  # chunk by chunk, every byte once


@pytest.mark.parametrize("n", [0, 1, SMALL, 3 * SMALL + 10])
def test_a_wrong_given_digest_gives_a_blob_that_opens_under_no_digest(n: int, output_path: str) -> None:
    plain = payload(n, 4)
    wrong = sha(b"not this plaintext")
    bad = seal_blob(KEY, plain, SMALL, digest=wrong)
    assert len(bad) == sealed_size(n, SMALL) and bad != seal_blob(KEY, plain, SMALL)
    both_reject(KEY, wrong, bad)  # opens, but the plaintext does not hash to `wrong`
    both_reject(KEY, sha(plain), bad)  # the blob key came from `wrong`: no chunk authenticates
    with pytest.raises(SealedBlobError, match="does not match its digest"):
        open_blob(KEY, wrong, bad, n)


def test_a_given_digest_of_the_wrong_length_is_a_seal_error_not_a_blob_error() -> None:
    for digest in (b"", DIGEST[:31], DIGEST + b"\x00"):
        with pytest.raises(SealError) as info:
            seal_blob(KEY, PLAIN, SMALL, digest=digest)
        assert not isinstance(info.value, BlobError)


@pytest.mark.parametrize("n", BOUNDARIES)
def test_both_output_paths_seal_and_open_the_same_bytes(n: int, output_path: str) -> None:
    plain = payload(n, 6)
    sealed = seal_blob(KEY, plain, SMALL, sha(plain))
    assert sealed == reference_seal(KEY, plain, SMALL)
    opened = open_blob(KEY, sha(plain), sealed, n)
    assert type(opened) is bytes and type(sealed) is bytes
    assert opened == plain
    assert opener_open(KEY, sha(plain), sealed, n) == plain


def test_both_output_paths_match_the_known_answer(output_path: str) -> None:
    sealed = seal_blob(KEY, KAT_PLAIN, SMALL, sha(KAT_PLAIN))
    assert hashlib.sha256(sealed).hexdigest() == KAT_SEALED_SHA256
    assert open_blob(KEY, sha(KAT_PLAIN), sealed, len(KAT_PLAIN)) == KAT_PLAIN


def test_tampering_is_rejected_on_both_output_paths(output_path: str) -> None:
    header, parts = split_chunks(SEALED, len(PLAIN), SMALL)
    for i in range(len(parts)):
        bad = [bytearray(p) for p in parts]
        bad[i][len(bad[i]) // 2] ^= 0x40
        both_reject(KEY, DIGEST, header + b"".join(bad))
    both_reject(KEY, DIGEST, header + parts[1] + parts[0] + parts[2] + parts[3])
    both_reject(KEY, DIGEST, header + b"".join(parts[:-1]))
    both_reject(KEY, DIGEST, SEALED + b"\x00")
    both_reject(KEY, DIGEST, SEALED[:-1])
    both_reject(OTHER_KEY, DIGEST, SEALED)
    both_reject(KEY, sha(b"something else"), SEALED)
    assert open_blob(KEY, DIGEST, SEALED, len(PLAIN)) == PLAIN


def test_buffers_other_than_bytes_are_accepted(output_path: str) -> None:
    sealed = seal_blob(KEY, bytearray(PLAIN), SMALL)
    assert sealed == SEALED == seal_blob(KEY, memoryview(PLAIN), SMALL, DIGEST)
    assert open_blob(KEY, DIGEST, bytearray(SEALED), len(PLAIN)) == PLAIN
    assert open_blob(KEY, DIGEST, memoryview(SEALED), len(PLAIN)) == PLAIN
    # A buffer of wider items is sealed as its bytes.
    words = memoryview(bytearray(PLAIN[:192])).cast("I")
    assert seal_blob(KEY, words, SMALL) == seal_blob(KEY, PLAIN[:192], SMALL)


# --- node keys and key wraps -----------------------------------------------------------------------

SEED = bytes(range(32))
PRIV = enc_private_key(SEED, 0)
PUB = enc_public_key(PRIV)


def test_the_node_key_is_a_valid_x25519_key_derived_from_the_seed() -> None:
    assert len(PRIV) == len(PUB) == ENC_KEY_LEN
    assert enc_private_key(SEED, 0) == PRIV
    assert X25519PrivateKey.from_private_bytes(PRIV).public_key().public_bytes_raw() == PUB
    assert enc_private_key(bytes(32), 0) != PRIV
    assert PRIV != SEED


def test_a_wrap_opens_with_the_recipients_key_and_is_deterministic() -> None:
    wrap = wrap_content_key(KEY, PUB, CHAIN, TASK)
    assert len(wrap) == WRAP_LEN
    assert wrap == wrap_content_key(KEY, PUB, CHAIN, TASK)
    assert unwrap_content_key(wrap, PRIV, CHAIN, TASK) == KEY


@settings(max_examples=30, deadline=None)
@given(keys32, keys32, st.integers(0, MAX_GENERATION))
def test_any_content_key_round_trips_to_any_node_key(
    content_key: bytes, seed: bytes, generation: int
) -> None:
    priv = enc_private_key(seed, generation)
    wrap = wrap_content_key(content_key, enc_public_key(priv), CHAIN, TASK)
    assert unwrap_content_key(wrap, priv, CHAIN, TASK) == content_key


def test_six_recipients_get_six_different_wraps_that_each_open_only_for_their_owner() -> None:
    privs = [enc_private_key(bytes([i]) * 32, 0) for i in range(6)]
    wraps = [wrap_content_key(KEY, enc_public_key(p), CHAIN, TASK) for p in privs]
    assert len(set(wraps)) == 6
    for i, wrap in enumerate(wraps):
        for j, priv in enumerate(privs):
            if i == j:
                assert unwrap_content_key(wrap, priv, CHAIN, TASK) == KEY
            else:
                with pytest.raises(KeyWrapError):
                    unwrap_content_key(wrap, priv, CHAIN, TASK)


def test_a_wrap_does_not_open_for_another_chain_or_task() -> None:
    wrap = wrap_content_key(KEY, PUB, CHAIN, TASK)
    with pytest.raises(KeyWrapError):
        unwrap_content_key(wrap, PRIV, "polnet-other", TASK)
    with pytest.raises(KeyWrapError):
        unwrap_content_key(wrap, PRIV, CHAIN, bytes([0x23]) * 32)
    with pytest.raises(KeyWrapError):
        unwrap_content_key(wrap, PRIV, CHAIN, TASK[:31])


def test_a_tampered_wrap_is_rejected_at_every_byte() -> None:
    wrap = wrap_content_key(KEY, PUB, CHAIN, TASK)
    for i in range(WRAP_LEN):
        bad = bytearray(wrap)
        bad[i] ^= 0x04
        with pytest.raises(KeyWrapError):
            unwrap_content_key(bytes(bad), PRIV, CHAIN, TASK)


@pytest.mark.parametrize("n", [0, 1, WRAP_LEN - 1, WRAP_LEN + 1, 2 * WRAP_LEN])
def test_a_wrap_of_the_wrong_length_is_rejected(n: int) -> None:
    wrap = (wrap_content_key(KEY, PUB, CHAIN, TASK) * 2)[:n]
    with pytest.raises(KeyWrapError):
        unwrap_content_key(wrap, PRIV, CHAIN, TASK)


def test_a_low_order_point_is_rejected_as_recipient_and_as_ephemeral() -> None:
    with pytest.raises(KeyWrapError):
        wrap_content_key(KEY, bytes(ENC_KEY_LEN), CHAIN, TASK)
    wrap = wrap_content_key(KEY, PUB, CHAIN, TASK)
    with pytest.raises(KeyWrapError):
        unwrap_content_key(bytes(ENC_KEY_LEN) + wrap[ENC_KEY_LEN:], PRIV, CHAIN, TASK)


def test_a_valid_but_non_canonical_wrap_is_rejected() -> None:
    # Same construction, but with an ephemeral key that is not the one derived from the content key.
    eph = X25519PrivateKey.from_private_bytes(bytes([0x33]) * 32)
    epk = eph.public_key().public_bytes_raw()
    shared = eph.exchange(X25519PrivateKey.from_private_bytes(PRIV).public_key())
    chain = CHAIN.encode()
    kek = sealing._kek(shared, chain, TASK, epk, PUB)
    body = ChaCha20Poly1305(kek).encrypt(bytes(12), KEY, sealing._frame(sealing.WRAP_AAD, chain, TASK))
    with pytest.raises(KeyWrapError, match="canonical"):
        unwrap_content_key(epk + body, PRIV, CHAIN, TASK)


def test_wrap_arguments_of_the_wrong_length_are_key_wrap_errors() -> None:
    with pytest.raises(KeyWrapError):
        wrap_content_key(KEY[:31], PUB, CHAIN, TASK)
    with pytest.raises(KeyWrapError):
        wrap_content_key(KEY, PUB[:31], CHAIN, TASK)
    with pytest.raises(KeyWrapError):
        unwrap_content_key(wrap_content_key(KEY, PUB, CHAIN, TASK), PRIV[:31], CHAIN, TASK)
    with pytest.raises(KeyWrapError):
        wrap_content_key(KEY, PUB, CHAIN, bytes(257))


def test_rotating_the_generation_gives_a_new_key_that_cannot_open_the_old_wraps() -> None:
    gen1 = enc_private_key(SEED, 1)
    assert gen1 != PRIV and enc_public_key(gen1) != PUB
    assert len({enc_private_key(SEED, g) for g in range(MAX_GENERATION + 1)}) == MAX_GENERATION + 1
    wrap = wrap_content_key(KEY, PUB, CHAIN, TASK)
    with pytest.raises(KeyWrapError):
        unwrap_content_key(wrap, gen1, CHAIN, TASK)
    new_wrap = wrap_content_key(KEY, enc_public_key(gen1), CHAIN, TASK)
    assert unwrap_content_key(new_wrap, gen1, CHAIN, TASK) == KEY


@pytest.mark.parametrize("generation", [-1, MAX_GENERATION + 1])
def test_a_generation_out_of_range_is_refused(generation: int) -> None:
    with pytest.raises(SealError):
        enc_private_key(SEED, generation)


def test_a_seed_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(SealError):
        enc_private_key(SEED[:31], 0)
    with pytest.raises(SealError):
        enc_public_key(PRIV[:31])


# --- pinned format ------------------------------------------------------------------------------------

KAT_PLAIN = b"polnet sealed blob known answer " * 5  # 160 bytes: 2 full 64-byte chunks and a 32-byte one
KAT_CHAIN = "polnet-kat"

# Re-pinned 2026-12-02 when the content-key derivations became one HKDF-Expand block each
# (no extract; the locator an expand of its own): the wrap, the locator and the sealed bytes
# changed. The node key, still the full HKDF, did not (PRIV and PUB are the old values).
KAT_SEALED_SHA256 = "10b6909a4e0583162f7129649c7fe86455762aa9dac1016cabd6bc630f314f2b"


def test_known_answer_vector_pins_the_key_wrap_and_sealed_formats() -> None:
    """Fails on any accidental change of a derivation, domain string, layout or algorithm."""
    assert PRIV.hex() == "20b8b658c0976567f52f42300f28f4806d53e6bb316cac9008c8eaf2a03f68d0"
    assert PUB.hex() == "30fb9f6976cc97a7af4f8aa3778cfcf718b4a7907f16e81cc816580ee9721315"
    assert wrap_content_key(KEY, PUB, KAT_CHAIN, TASK).hex() == (
        "355c1900bee41dba2f47f7a912e75c5b413afd5b8234652236f82295c870d001"
        "0837f9906dfc7ecc9f8ca7aeb8a930c7cbc0afe622cb5df87beb1dfaba54e585"
        "54bfeaaf36b60a918655c090f1646e1a"
    )
    assert sealed_locator(KEY, sha(KAT_PLAIN)).hex() == (
        "b2c811774dd9c112c2ab5951b7e1da8a976e57c45cc32131044c9bff8e005f78"
    )
    sealed = seal_blob(KEY, KAT_PLAIN, SMALL)
    assert len(sealed) == 225
    assert sealed[:48].hex() == (
        "504c5342010000004000000000000000a0"  # b"PLSB" | v1 | chunk 64 | length 160
        "b457b64575c150f274b9cfc9ed3924fad762b7896e62ffb9feb829ba4c47a2"
    )
    assert hashlib.sha256(sealed).hexdigest() == KAT_SEALED_SHA256


def test_the_sealed_format_is_the_documented_one() -> None:
    """Open the KAT blob with raw `cryptography`, following only the module docstring's format:
    blob key, locator and wrap ephemeral are cryptography's HKDF-Expand under the content key."""
    sealed = seal_blob(KEY, KAT_PLAIN, SMALL)
    header = sealed[:SEAL_HEADER_LEN]
    assert struct.unpack(">4sBIQ", header) == (b"PLSB", 1, SMALL, len(KAT_PLAIN))
    blob_key = documented_derive(KEY, b"polnet sealed blob key v1", header, sha(KAT_PLAIN))
    _, parts = split_chunks(sealed, len(KAT_PLAIN), SMALL)
    plain = b""
    for i, part in enumerate(parts):
        nonce = i.to_bytes(11, "big") + bytes([i == len(parts) - 1])
        plain += AESGCM(blob_key).decrypt(nonce, part, header)
    assert plain == KAT_PLAIN
    locator = documented_derive(KEY, b"polnet sealed locator v1", sha(KAT_PLAIN))
    assert sealed_locator(KEY, sha(KAT_PLAIN)) == locator
    ephemeral = documented_derive(KEY, b"polnet key wrap ephemeral v1", KAT_CHAIN.encode(), TASK, PUB)
    epk = X25519PrivateKey.from_private_bytes(ephemeral).public_key().public_bytes_raw()
    assert wrap_content_key(KEY, PUB, KAT_CHAIN, TASK)[:ENC_KEY_LEN] == epk


def test_the_public_locator_is_domain_separated_from_the_secret_blob_key() -> None:
    # The same digest goes into the locator (published) and into every blob key (secret):
    # only the domain strings keep them apart.
    digest = sha(KAT_PLAIN)
    locator = sealed_locator(KEY, digest)
    header = seal_blob(KEY, KAT_PLAIN, SMALL)[:SEAL_HEADER_LEN]
    blob_key = documented_derive(KEY, b"polnet sealed blob key v1", header, digest)
    assert locator != blob_key
    assert locator != documented_derive(KEY, b"polnet sealed blob key v1", digest)
    assert locator != documented_derive(KEY, b"polnet key wrap ephemeral v1", digest)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=80), st.binary(max_size=80), st.binary(max_size=200))
def test_the_stdlib_hkdf_is_cryptographys_hkdf(ikm: bytes, salt: bytes, info: bytes) -> None:
    # HKDF-Expand of one 32-byte block is HMAC(PRK, info | 0x01); extract is HMAC(salt, IKM).
    assert sealing._expand(ikm, info) == HKDFExpand(hashes.SHA256(), 32, info).derive(ikm)
    assert sealing._hkdf(ikm, salt, info) == HKDF(hashes.SHA256(), 32, salt, info).derive(ikm)


def test_each_per_blob_derivation_is_one_hmac(monkeypatch: pytest.MonkeyPatch) -> None:
    """seal_blob, open_blob and sealed_locator each key one HMAC with the content key and
    nothing else (no extract step, no HKDF object per blob)."""
    plain = payload(3 * SMALL + 5)
    digest = sha(plain)
    sealed, locator = seal_blob(KEY, plain, SMALL, digest), sealed_locator(KEY, digest)
    keys: list[bytes] = []
    real_new = sealing.hmac.new

    def counting_new(key: bytes, msg: bytes, digestmod: object) -> object:
        keys.append(key)
        return real_new(key, msg, hashlib.sha256)

    monkeypatch.setattr(sealing, "hmac", types.SimpleNamespace(new=counting_new))
    assert seal_blob(KEY, plain, SMALL, digest) == sealed
    assert keys == [KEY]
    assert open_blob(KEY, digest, sealed, len(plain)) == plain
    assert opener_open(KEY, digest, sealed, len(plain)) == plain
    assert sealed_locator(KEY, digest) == locator
    assert keys == [KEY] * 4
