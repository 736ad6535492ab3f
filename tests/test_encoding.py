"""Canonical msgpack: one value, one byte string; strict, bounded decoding of plain values.

The corpus below is hand-written hostile input, each entry with the error class it must
raise. Every entry is checked to raise exactly a DecodeError subclass and nothing else.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.encoding import canonical_hash, pack, pack_plain, sha256, unpack
from protocol.errors import DecodeError, LimitExceeded, Malformed, MessageTooLarge, NonCanonical
from protocol.limits import MAX_DEPTH, MAX_MESSAGE_BYTES, Limits

# Plain values the encoder accepts: scalars in range, lists, string/int-keyed maps.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False).map(lambda f: f if f != 0.0 else 0.0)
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
plain_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=8) | st.integers(-1000, 1000), inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(plain_values)
def test_pack_then_unpack_round_trips_and_reencodes_identically(value: Any) -> None:
    data = pack(value)
    back = unpack(data)
    assert pack(back) == data


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=6), st.integers(-(2**63), 2**64 - 1), max_size=8))
def test_map_bytes_do_not_depend_on_insertion_order(d: dict[str, int]) -> None:
    reversed_order = dict(reversed(list(d.items())))
    assert pack(d) == pack(reversed_order)


def test_tuples_and_lists_encode_the_same() -> None:
    assert pack((1, "a", b"b")) == pack([1, "a", b"b"])


def test_negative_zero_and_zero_share_one_encoding() -> None:
    assert pack(-0.0) == pack(0.0)
    with pytest.raises(NonCanonical):
        unpack(msgpack.packb(-0.0))


def test_canonical_hash_is_sha256_of_the_canonical_bytes() -> None:
    assert canonical_hash({"b": 1, "a": 2}) == sha256(pack({"a": 2, "b": 1}))


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (math.nan, Malformed),
        (math.inf, Malformed),
        (2**64, LimitExceeded),
        (-(2**63) - 1, LimitExceeded),
        (object(), Malformed),
        ({1, 2}, Malformed),
        ("\ud800", Malformed),
    ],
    ids=["nan", "inf", "u64-overflow", "i64-underflow", "object", "set", "lone-surrogate"],
)
def test_values_that_have_no_canonical_encoding_are_refused(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        pack(value)


# --- the bad-input corpus -----------------------------------------------------------------------


def _nested(depth: int) -> bytes:
    return b"\x91" * depth + b"\x00"


CORPUS: list[tuple[str, bytes, type[DecodeError]]] = [
    ("empty", b"", Malformed),
    ("oversized", b"\xc4" + b"\x00" * MAX_MESSAGE_BYTES, MessageTooLarge),
    ("deep-nesting-past-limit", _nested(MAX_DEPTH + 1), LimitExceeded),
    ("deep-nesting-past-c-stack", _nested(5000), LimitExceeded),
    ("deep-map-nesting", b"\x81\x00" * (MAX_DEPTH + 1) + b"\x00", LimitExceeded),
    ("array32-claims-4-billion", b"\xdd\xff\xff\xff\xff", LimitExceeded),
    ("map32-claims-4-billion", b"\xdf\xff\xff\xff\xff", LimitExceeded),
    ("str32-claims-4-gib", b"\xdb\xff\xff\xff\xff" + b"a" * 16, Malformed),
    ("bin32-claims-4-gib", b"\xc6\xff\xff\xff\xff" + b"a" * 16, Malformed),
    ("array16-over-limit", b"\xdc\xff\xff" + b"\x00" * 0xFFFF, LimitExceeded),
    ("truncated-array", b"\x93\x01\x02", Malformed),
    ("truncated-uint64", b"\xcf\x00\x00", Malformed),
    ("trailing-bytes", b"\x01\x02", Malformed),
    ("reserved-byte-0xc1", b"\xc1", Malformed),
    ("duplicate-map-keys", b"\x82\xa1a\x01\xa1a\x02", Malformed),
    ("unhashable-map-key", b"\x81\x90\x01", Malformed),
    ("fixext1", b"\xd4\x05\x00", Malformed),
    ("ext8-empty", b"\xc7\x00\x05", Malformed),
    ("timestamp-ext", b"\xd6\xff\x00\x00\x00\x01", Malformed),
    ("non-utf8-string", b"\xa2\xff\xfe", Malformed),
    ("utf8-encoded-surrogate", b"\xa3\xed\xa0\x80", Malformed),
    ("overlong-utf8", b"\xa2\xc0\xaf", Malformed),
    ("nan-float64", b"\xcb" + struct.pack(">d", math.nan), Malformed),
    ("inf-float64", b"\xcb" + struct.pack(">d", math.inf), Malformed),
    ("nan-inside-array", b"\x91\xcb" + struct.pack(">d", math.nan), Malformed),
    ("float32", b"\xca" + struct.pack(">f", 1.5), NonCanonical),
    ("non-shortest-uint", b"\xcd\x00\x05", NonCanonical),
    ("non-shortest-negative", b"\xd1\xff\xff", NonCanonical),
    ("str8-for-fixstr", b"\xd9\x01a", NonCanonical),
    ("array16-for-fixarray", b"\xdc\x00\x01\x00", NonCanonical),
    ("unsorted-map-keys", b"\x82\xa1b\x01\xa1a\x02", NonCanonical),
    ("negative-zero", b"\xcb" + struct.pack(">d", -0.0), NonCanonical),
]


@pytest.mark.parametrize(("data", "error"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_corpus_input_is_rejected_with_its_expected_error(data: bytes, error: type[DecodeError]) -> None:
    with pytest.raises(error):
        unpack(data)


def test_headers_claiming_gigabytes_allocate_nothing_big() -> None:
    import tracemalloc

    tracemalloc.start()
    try:
        for _, data, _ in CORPUS:
            if b"\xff\xff\xff\xff" in data[:5]:
                with pytest.raises(DecodeError):
                    unpack(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def test_a_tighter_limit_bundle_is_honoured() -> None:
    small = Limits(max_bytes=16, max_str_len=4, max_depth=2)
    with pytest.raises(MessageTooLarge):
        unpack(pack("x" * 20), small)
    with pytest.raises(LimitExceeded):
        unpack(pack("hello"), small)
    with pytest.raises(LimitExceeded):
        unpack(pack([[[1]]]), small)
    assert unpack(pack([[1]]), small) == [[1]]


def test_non_bytes_input_is_malformed() -> None:
    with pytest.raises(Malformed):
        unpack("not bytes")  # type: ignore[arg-type]


def test_bytearray_and_memoryview_decode_like_bytes() -> None:
    data = pack([1, "a"])
    assert unpack(bytearray(data)) == unpack(memoryview(data)) == [1, "a"]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_decode_errors(data: bytes) -> None:
    try:
        value = unpack(data)
    except DecodeError:
        return
    # Anything accepted is the one canonical encoding of what it decoded to.
    assert pack(value) == data


def test_a_failed_encode_leaves_the_shared_packer_clean() -> None:
    with pytest.raises(Malformed):
        pack_plain([b"written first", "\ud800"])
    assert pack_plain([1]) == b"\x91\x01"


def test_the_shared_packer_gives_each_thread_its_own_bytes() -> None:
    from concurrent.futures import ThreadPoolExecutor

    values = [[i, "x" * (i % 50), bytes(i % 300)] for i in range(2000)]
    expected = [msgpack.packb(v, use_bin_type=True) for v in values]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(pack_plain, values, chunksize=1))
    assert got == expected
