"""Schema records: every registered message round-trips, encodes uniquely, and rejects
values outside its declared shape with the expected typed error."""

from __future__ import annotations

import contextlib
import enum
import math
import typing
from dataclasses import FrozenInstanceError, dataclass, fields, replace
from typing import Annotated, Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.encoding import pack
from protocol.errors import DecodeError, LimitExceeded, Malformed, NonCanonical, PolnetError
from protocol.messages import Hello, Ping
from protocol.records import decode_record, encode_record, record_hash
from protocol.schema import (
    I64,
    MAX_SCHEMA_DEPTH,
    U8,
    U64,
    Hash32,
    Len,
    Text,
    Trailing,
    _codec_for,
    _same_wire,
    from_wire,
    frozen_constructor,
    message,
    message_type,
    registered_messages,
    to_wire,
)
from tests.wire_strategies import message_classes, record_strategy

CLASSES = message_classes()
IDS = [f"{cls.TYPE_TAG:#04x}-{cls.__name__}" for cls in CLASSES]
PER_TYPE = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Colour(enum.IntEnum):
    RED = 1
    GREEN = 2


@dataclass(frozen=True, slots=True)
class Inner:
    a: U8
    b: Hash32 | None


@dataclass(frozen=True, slots=True)
class Sample:
    """One field of every schema kind, for targeted bad-input tests."""

    n: U64
    s: I64
    text: Text
    flag: bool
    ratio: float
    colour: Colour
    items: Annotated[tuple[Inner, ...], Len(0, 3)]
    pair: tuple[U8, Text]


@dataclass(frozen=True, slots=True)
class Positive:
    value: U64

    def __post_init__(self) -> None:
        if self.value == 0:
            raise ValueError("value must be positive")


@dataclass(frozen=True, slots=True)
class Tree:
    """Self-referencing: only the decoder's depth bound stops hostile nesting."""

    kids: Annotated[tuple[Tree, ...], Len(0, 1)]


def _sample() -> Sample:
    return Sample(7, -3, "hi", True, 0.5, Colour.GREEN, (Inner(1, None), Inner(2, b"\x01" * 32)), (9, "x"))


def _wire_with(field_index: int, value: Any) -> list[Any]:
    wire: list[Any] = to_wire(_sample())
    wire[field_index] = value
    return wire


# --- every registered message type ------------------------------------------------------------


def test_the_registry_covers_every_message_module() -> None:
    assert len(CLASSES) == len(registered_messages()) >= 3
    assert {Hello, Ping} <= set(CLASSES)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_every_message_type_round_trips_through_its_canonical_bytes(cls: type[Any]) -> None:
    @PER_TYPE
    @given(record_strategy(cls))
    def check(msg: Any) -> None:
        data = encode_record(msg)
        back = decode_record(cls, data)
        assert back == msg
        assert encode_record(back) == data

    check()


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_equal_values_and_only_equal_values_share_bytes(cls: type[Any]) -> None:
    @PER_TYPE
    @given(record_strategy(cls), record_strategy(cls))
    def check(a: Any, b: Any) -> None:
        assert (a == b) == (encode_record(a) == encode_record(b))
        # A structurally equal copy built separately encodes identically.
        assert encode_record(replace(a)) == encode_record(a)
        assert record_hash(replace(a)) == record_hash(a)

    check()


def test_message_tags_are_stable_and_unique() -> None:
    assert message_type(0x01) is Hello and Hello.TYPE_TAG == 0x01
    with pytest.raises(ValueError, match="already used"):
        message(0x01)(Sample)


def test_registering_a_mutable_dataclass_is_refused() -> None:
    @dataclass
    class Mutable:
        x: U8

    with pytest.raises(TypeError, match="frozen"):
        message(0xFFF0)(Mutable)


# --- bad values: each with the error it must produce --------------------------------------------

BAD_FIELDS = [
    pytest.param(0, -1, LimitExceeded, id="u64-negative"),
    pytest.param(0, 2**64, LimitExceeded, id="u64-overflow"),
    pytest.param(0, True, Malformed, id="bool-for-int"),
    pytest.param(0, 1.0, Malformed, id="float-for-int"),
    pytest.param(1, 2**63, LimitExceeded, id="i64-overflow"),
    pytest.param(2, b"hi", Malformed, id="bytes-for-str"),
    pytest.param(2, "é" * 129, LimitExceeded, id="text-over-256-utf8-bytes"),
    pytest.param(3, 1, Malformed, id="int-for-bool"),
    pytest.param(4, math.nan, Malformed, id="nan"),
    pytest.param(4, math.inf, Malformed, id="inf"),
    pytest.param(4, -math.inf, Malformed, id="minus-inf"),
    pytest.param(4, -0.0, NonCanonical, id="negative-zero"),
    pytest.param(4, 1, Malformed, id="int-for-float"),
    pytest.param(5, 3, Malformed, id="enum-value-unknown"),
    pytest.param(6, [[1, None]] * 4, LimitExceeded, id="tuple-over-its-len"),
    pytest.param(6, [[1]], Malformed, id="nested-record-missing-field"),
    pytest.param(6, [[1, b"\x00" * 31]], LimitExceeded, id="hash32-short"),
    pytest.param(6, [[1, None, 0]], Malformed, id="nested-record-extra-field"),
    pytest.param(6, {"a": 1}, Malformed, id="map-for-array"),
    pytest.param(7, [1], Malformed, id="fixed-tuple-short"),
    pytest.param(7, [1, "x", 2], Malformed, id="fixed-tuple-long"),
]


@pytest.mark.parametrize(("index", "value", "error"), BAD_FIELDS)
def test_a_field_outside_its_schema_is_rejected_with_its_error(
    index: int, value: Any, error: type[DecodeError]
) -> None:
    with pytest.raises(error):
        from_wire(Sample, _wire_with(index, value))


def test_non_ascii_text_is_measured_in_utf8_bytes_not_characters() -> None:
    ok = from_wire(Sample, _wire_with(2, "é" * 128))  # 256 bytes exactly
    assert ok.text == "é" * 128


def test_missing_and_extra_fields_are_rejected() -> None:
    wire = to_wire(_sample())
    with pytest.raises(Malformed, match="expected 8 fields"):
        from_wire(Sample, wire[:-1])
    with pytest.raises(Malformed, match="expected 8 fields"):
        from_wire(Sample, [*wire, 0])


def test_post_init_rejections_surface_as_malformed() -> None:
    with pytest.raises(Malformed, match="positive"):
        from_wire(Positive, [0])
    assert from_wire(Positive, [5]) == Positive(5)


def test_encoding_refuses_values_outside_the_schema() -> None:
    with pytest.raises(LimitExceeded):
        to_wire(Ping(-1))
    with pytest.raises(Malformed):
        to_wire(replace(_sample(), ratio=math.nan))
    with pytest.raises(Malformed, match="UTF-8"):
        to_wire(replace(_sample(), text="\ud800"))
    with pytest.raises(Malformed, match="expected Inner, got Sample"):
        to_wire(replace(_sample(), items=(_sample(),)))


def test_negative_zero_encodes_as_positive_zero() -> None:
    assert encode_record(replace(_sample(), ratio=-0.0)) == encode_record(replace(_sample(), ratio=0.0))


def test_deeply_self_nested_values_stop_at_the_schema_depth() -> None:
    value: list[Any] = [[]]
    for _ in range(40):
        value = [[value]]
    with pytest.raises(LimitExceeded):
        from_wire(Tree, value)


# --- the canonical check at the record level -------------------------------------------------------


def test_a_non_shortest_integer_encoding_is_not_canonical() -> None:
    wide = b"\x91\xcd\x00\x05"  # [5] with a uint16 header where a fixint would do
    with pytest.raises(NonCanonical):
        decode_record(Ping, wide)
    assert decode_record(Ping, b"\x91\x05") == Ping(5)


def test_a_float32_encoding_is_not_canonical() -> None:
    wire = to_wire(_sample())
    narrow = msgpack.packb(wire, use_bin_type=True, use_single_float=True)
    with pytest.raises(NonCanonical):
        decode_record(Sample, narrow)
    assert decode_record(Sample, pack(wire)) == _sample()


def test_a_str8_header_on_a_short_string_is_not_canonical() -> None:
    hello = Hello("ab", 1, b"\x00" * 32, 2)
    data = encode_record(hello)
    padded = data.replace(b"\xa2ab", b"\xd9\x02ab", 1)
    with pytest.raises(NonCanonical):
        decode_record(Hello, padded)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_only_raise_decode_errors_for_every_type(data: bytes) -> None:
    for cls in CLASSES:
        with contextlib.suppress(DecodeError):
            decode_record(cls, data)


# --- the generated fast paths build exactly what the slow paths build -------------------------------


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_fast_construction_equals_dataclass_init_for_every_message_type(cls: type[Any]) -> None:
    make = frozen_constructor(cls)

    @PER_TYPE
    @given(record_strategy(cls))
    def check(msg: Any) -> None:
        args = [getattr(msg, f.name) for f in fields(cls)]
        built = make(*args)
        assert type(built) is cls and built == msg and hash(built) == hash(msg)
        with pytest.raises(FrozenInstanceError):
            built.__setattr__(fields(cls)[0].name, args[0])

    check()


def test_records_that_validate_themselves_keep_their_init() -> None:
    assert frozen_constructor(Positive) is Positive

    @dataclass(frozen=True)
    class NoSlots:
        x: int

    assert frozen_constructor(NoSlots) is NoSlots


def test_the_generated_encoder_converts_what_the_leaf_encoders_convert() -> None:
    # bytearray is accepted and normalised to bytes; an IntEnum member in an int field is not.
    wire = to_wire(Hello("a", 1, bytearray(b"\x00" * 32), 2))  # type: ignore[arg-type]
    assert type(wire[2]) is bytes
    with pytest.raises(Malformed):
        to_wire(Ping(Colour.RED))


# --- differential: generated record decoders vs the field closures they inline -------------------------

NASTY_LEAVES = st.one_of(
    st.sampled_from([0, 1, -1, 255, 256, 2**16, 2**32, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)]),
    st.booleans(),
    st.none(),
    st.floats(),
    st.text(max_size=300),
    st.binary(max_size=70),
    st.just([]),
)


def _reference_decode(cls: type[Any], value: Any, depth: int = 0) -> Any:
    """What a record decoder must do, written plainly with the field closures (trailing
    fields at their defaults are left off the wire, and spelling one out is refused)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fs = fields(cls)
    codecs = [_codec_for(hints[f.name]) for f in fs]
    decs = [c[1] for c in codecs]
    trailing = [any(isinstance(m, Trailing) for m in getattr(hints[f.name], "__metadata__", ())) for f in fs]
    if any(trailing) and type(value) is list:
        first = trailing.index(True)
        defaults = [codecs[i][0](fs[i].default) if trailing[i] else None for i in range(len(fs))]
        if first <= len(value) <= len(fs):
            if len(value) > first and _same_wire(value[-1], defaults[len(value) - 1]):
                raise NonCanonical("a trailing default spelled out")
            value = value + defaults[len(value):]
    if type(value) is not list or len(value) != len(decs):
        raise Malformed("shape")
    if depth >= MAX_SCHEMA_DEPTH:
        raise LimitExceeded("depth")
    args = [d(x, depth + 1) for d, x in zip(decs, value)]
    try:
        return cls(*args)
    except (ValueError, TypeError, PolnetError) as exc:
        raise Malformed(str(exc)) from exc


def _outcome(fn: Any, *args: Any) -> Any:
    try:
        return ("ok", fn(*args))
    except DecodeError as exc:
        return ("error", type(exc))


def _leaf_paths(value: Any, path: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    if type(value) is list:
        out = [path] if path else []
        for i, item in enumerate(value):
            out += _leaf_paths(item, (*path, i))
        return out
    return [path]


def _replaced(value: Any, path: tuple[int, ...], leaf: Any) -> Any:
    if not path:
        return leaf
    copy = list(value)
    copy[path[0]] = _replaced(copy[path[0]], path[1:], leaf)
    return copy


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_generated_decoders_agree_with_the_plain_reference_on_mutated_values(cls: type[Any]) -> None:
    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(record_strategy(cls), st.data())
    def check(msg: Any, data: st.DataObject) -> None:
        wire = to_wire(msg)
        path = data.draw(st.sampled_from(_leaf_paths(wire)), label="path")
        mutated = _replaced(wire, path, data.draw(NASTY_LEAVES, label="leaf"))
        assert _outcome(from_wire, cls, mutated) == _outcome(_reference_decode, cls, mutated)

    check()
