"""Typed, frozen dataclasses <-> canonical wire values.

Every message, transaction and nested record in polnet is a frozen dataclass whose
field annotations are the schema. A record travels as a msgpack array of its field
values in declaration order (compact, and "unknown fields" become a length mismatch
that is rejected). Field annotations use the bounded aliases below (`U64`, `Hash32`,
`Text`, `Annotated[tuple[X, ...], Len(0, n)]`...) so that every integer has a range,
every string and byte string a length, every sequence a maximum count. Unbounded `int`,
`bytes`, `str` and tuples fall back to the decoder-wide limits.

Converters are compiled once per class: leaves into closures, records into generated
straight-line functions (as dataclasses generates __init__), because ingest speed
matters: the issue asks decode + verify to stay within 10% of a raw ed25519 verify.
The generated code only inlines the happy-path test of each leaf and calls the leaf's
own decoder whenever that test fails, so it accepts exactly what the closures accept.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, TypeVar, Union, get_args, get_origin

from protocol.errors import DecodeError, LimitExceeded, Malformed, NonCanonical, PolnetError, UnknownType
from protocol.limits import MAX_ARRAY_LEN, MAX_BIN_LEN, MAX_INT, MAX_STR_LEN, MIN_INT

T = TypeVar("T")


# --- bounds used inside Annotated[...] ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IntRange:
    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class Len:
    """Length bounds for bytes (in bytes), str (in UTF-8 bytes) and tuples (in items)."""

    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class Trailing:
    """Marks a field a later version appended to a record (it must have a default).

    While a trailing field and every field after it hold their defaults they are left
    off the wire, so a record encoded before the field existed decodes to the same value
    and keeps its hash; spelling a trailing default out is refused as non-canonical (one
    encoding per value).
    """


U8 = Annotated[int, IntRange(0, 2**8 - 1)]
U16 = Annotated[int, IntRange(0, 2**16 - 1)]
U32 = Annotated[int, IntRange(0, 2**32 - 1)]
U64 = Annotated[int, IntRange(0, 2**64 - 1)]
I64 = Annotated[int, IntRange(-(2**63), 2**63 - 1)]
Hash32 = Annotated[bytes, Len(32, 32)]
PubKey = Annotated[bytes, Len(32, 32)]
Signature = Annotated[bytes, Len(64, 64)]
ShortBytes = Annotated[bytes, Len(0, 256)]
Text = Annotated[str, Len(0, 256)]
LongText = Annotated[str, Len(0, MAX_STR_LEN)]


# --- registry -------------------------------------------------------------------------------

Decoder = Callable[[Any, int], Any]
Encoder = Callable[[Any], Any]

_MESSAGE_TYPES: dict[int, type[Any]] = {}
_COMPILED: dict[type[Any], tuple[Encoder, Decoder]] = {}
#: Leaf decoders whose happy path is one expression in `{x}`; record decoders inline it
#: and call the decoder itself only when the expression fails (to raise its error).
_INLINE_CHECKS: dict[Decoder, str] = {}
MAX_SCHEMA_DEPTH = 16


def message(tag: int) -> Callable[[type[T]], type[T]]:
    """Register a frozen dataclass as a top-level wire message with a stable type tag.

    Tags are part of the protocol: never reuse or renumber one. Ranges: 0x01-0x0f
    foundation, 0x10-0x2f consensus, 0x30-0x4f ledger transactions, 0x50-0x7f market
    and tasks, 0x80-0x9f proofs and disputes, 0xa0-0xbf transport/control.
    """

    def register(cls: type[T]) -> type[T]:
        if not (0 < tag < 2**16):
            raise ValueError(f"type tag {tag} outside 1..65535")
        if tag in _MESSAGE_TYPES and _MESSAGE_TYPES[tag] is not cls:
            raise ValueError(f"type tag {tag:#x} already used by {_MESSAGE_TYPES[tag].__name__}")
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} must be a dataclass")
        params = getattr(cls, "__dataclass_params__")
        if not params.frozen:
            raise TypeError(f"{cls.__name__} must be frozen")
        setattr(cls, "TYPE_TAG", tag)
        _MESSAGE_TYPES[tag] = cls
        return cls

    return register


def message_type(tag: int) -> type[Any]:
    try:
        return _MESSAGE_TYPES[tag]
    except KeyError:
        raise UnknownType(f"unknown message type tag {tag:#x}") from None


def tag_of(cls: type[Any]) -> int:
    """A registered message class's type tag (set by `@message`, invisible to mypy)."""
    tag = getattr(cls, "TYPE_TAG", None)
    if not isinstance(tag, int):
        raise TypeError(f"{cls.__name__} is not a registered message")
    return tag


def registered_messages() -> dict[int, type[Any]]:
    """A copy of the tag -> class table (used by tests to cover every message type)."""
    return dict(_MESSAGE_TYPES)


class Message:
    """Optional base with the class variable every registered message gets."""

    TYPE_TAG: ClassVar[int]


# --- compilation -----------------------------------------------------------------------------


def _int_codec(rng: IntRange) -> tuple[Encoder, Decoder]:
    lo, hi = rng.lo, rng.hi

    def dec(v: Any, depth: int) -> int:
        if type(v) is not int:
            raise Malformed(f"expected int, got {type(v).__name__}")
        if not lo <= v <= hi:
            raise LimitExceeded(f"integer {v} outside [{lo}, {hi}]")
        return v

    def enc(v: Any) -> Any:
        return dec(v, 0)

    _INLINE_CHECKS[dec] = f"type({{x}}) is int and {lo} <= {{x}} <= {hi}"
    return enc, dec


def _bytes_codec(ln: Len) -> tuple[Encoder, Decoder]:
    lo, hi = ln.lo, ln.hi

    def dec(v: Any, depth: int) -> bytes:
        if type(v) is not bytes:
            raise Malformed(f"expected bytes, got {type(v).__name__}")
        if not lo <= len(v) <= hi:
            raise LimitExceeded(f"byte string of length {len(v)} outside [{lo}, {hi}]")
        return v

    _INLINE_CHECKS[dec] = f"type({{x}}) is bytes and {lo} <= len({{x}}) <= {hi}"

    def enc(v: Any) -> Any:
        if isinstance(v, (bytearray, memoryview)):
            v = bytes(v)
        return dec(v, 0)

    return enc, dec


def _str_codec(ln: Len) -> tuple[Encoder, Decoder]:
    lo, hi = ln.lo, ln.hi

    def dec(v: Any, depth: int) -> str:
        if type(v) is not str:
            raise Malformed(f"expected str, got {type(v).__name__}")
        n = len(v.encode("utf-8", "surrogatepass")) if not v.isascii() else len(v)
        if not lo <= n <= hi:
            raise LimitExceeded(f"string of {n} bytes outside [{lo}, {hi}]")
        return v

    # Non-ASCII strings fall back to `dec`, which measures their UTF-8 length.
    _INLINE_CHECKS[dec] = f"type({{x}}) is str and {{x}}.isascii() and {lo} <= len({{x}}) <= {hi}"

    def enc(v: Any) -> Any:
        if not v.isascii():
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise Malformed(f"string is not encodable as UTF-8: {exc}") from None
        return dec(v, 0)

    return enc, dec


def _bool_dec(v: Any, depth: int) -> bool:
    if type(v) is not bool:
        raise Malformed(f"expected bool, got {type(v).__name__}")
    return v


def _bool_enc(v: Any) -> Any:
    return _bool_dec(v, 0)


_INLINE_CHECKS[_bool_dec] = "type({x}) is bool"


def _float_dec(v: Any, depth: int) -> float:
    if type(v) is not float:
        raise Malformed(f"expected float, got {type(v).__name__}")
    if not math.isfinite(v):
        raise Malformed("float must be finite")
    if v == 0.0 and math.copysign(1.0, v) < 0:
        # The encoder writes -0.0 as 0.0 (equal values, one encoding), so -0.0 on the
        # wire can only come from a non-canonical encoder.
        raise NonCanonical("-0.0 is not canonical; zero is encoded as +0.0")
    return v


def _float_enc(v: Any) -> Any:
    if type(v) is int:
        v = float(v)
    if v == 0.0:
        v = 0.0
    return _float_dec(v, 0)


def _enum_codec(cls: type[enum.IntEnum]) -> tuple[Encoder, Decoder]:
    values = {int(m): m for m in cls}

    def dec(v: Any, depth: int) -> enum.IntEnum:
        if type(v) is not int or v not in values:
            raise Malformed(f"{v!r} is not a valid {cls.__name__}")
        return values[v]

    def enc(v: Any) -> Any:
        if not isinstance(v, cls):
            raise Malformed(f"expected {cls.__name__}, got {type(v).__name__}")
        return int(v)

    return enc, dec


def _optional_codec(inner: tuple[Encoder, Decoder]) -> tuple[Encoder, Decoder]:
    ienc, idec = inner

    def dec(v: Any, depth: int) -> Any:
        return None if v is None else idec(v, depth)

    def enc(v: Any) -> Any:
        return None if v is None else ienc(v)

    return enc, dec


def _tuple_codec(inner: tuple[Encoder, Decoder], ln: Len) -> tuple[Encoder, Decoder]:
    ienc, idec = inner
    lo, hi = ln.lo, ln.hi

    def dec(v: Any, depth: int) -> tuple[Any, ...]:
        if type(v) is not list:
            raise Malformed(f"expected array, got {type(v).__name__}")
        if not lo <= len(v) <= hi:
            raise LimitExceeded(f"array of {len(v)} items outside [{lo}, {hi}]")
        if depth >= MAX_SCHEMA_DEPTH:
            raise LimitExceeded("schema nesting too deep")
        return tuple(idec(x, depth + 1) for x in v)

    def enc(v: Any) -> Any:
        if not isinstance(v, (tuple, list)):
            raise Malformed(f"expected tuple, got {type(v).__name__}")
        if not lo <= len(v) <= hi:
            raise LimitExceeded(f"array of {len(v)} items outside [{lo}, {hi}]")
        return [ienc(x) for x in v]

    return enc, dec


def _fixed_tuple_codec(inners: list[tuple[Encoder, Decoder]]) -> tuple[Encoder, Decoder]:
    n = len(inners)

    def dec(v: Any, depth: int) -> tuple[Any, ...]:
        if type(v) is not list or len(v) != n:
            raise Malformed(f"expected array of {n} items")
        if depth >= MAX_SCHEMA_DEPTH:
            raise LimitExceeded("schema nesting too deep")
        return tuple(d(x, depth + 1) for (_, d), x in zip(inners, v))

    def enc(v: Any) -> Any:
        if not isinstance(v, (tuple, list)) or len(v) != n:
            raise Malformed(f"expected tuple of {n} items")
        return [e(x) for (e, _), x in zip(inners, v)]

    return enc, dec


def _codec_for(tp: Any, bound: Any = None) -> tuple[Encoder, Decoder]:
    origin = get_origin(tp)
    if origin is Annotated:
        base, *extras = get_args(tp)
        bounds = [e for e in extras if isinstance(e, (IntRange, Len))]
        return _codec_for(base, bounds[0] if bounds else None)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) != 1 or len(get_args(tp)) != 2:
            raise TypeError(f"only Optional[X] unions are supported, got {tp}")
        return _optional_codec(_codec_for(args[0], bound))
    if origin is tuple:
        items = get_args(tp)
        if len(items) == 2 and items[1] is Ellipsis:
            ln = bound if isinstance(bound, Len) else Len(0, MAX_ARRAY_LEN)
            return _tuple_codec(_codec_for(items[0]), ln)
        return _fixed_tuple_codec([_codec_for(a) for a in items])
    if tp is bool:
        return _bool_enc, _bool_dec
    if isinstance(tp, type) and issubclass(tp, enum.IntEnum):
        return _enum_codec(tp)
    if tp is int:
        return _int_codec(bound if isinstance(bound, IntRange) else IntRange(MIN_INT, MAX_INT))
    if tp is bytes:
        return _bytes_codec(bound if isinstance(bound, Len) else Len(0, MAX_BIN_LEN))
    if tp is str:
        return _str_codec(bound if isinstance(bound, Len) else Len(0, MAX_STR_LEN))
    if tp is float:
        return _float_enc, _float_dec
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _record_codec(tp)
    raise TypeError(f"unsupported schema type {tp!r}")


def _record_codec(cls: type[Any]) -> tuple[Encoder, Decoder]:
    """Compile (or fetch) the array codec for one dataclass."""
    if cls in _COMPILED:
        return _COMPILED[cls]

    # Placeholders allow self-referencing records (not used yet, but harmless).
    cell: dict[str, tuple[Encoder, Decoder]] = {}

    def enc_lazy(v: Any) -> Any:
        return _ready(cell, cls)[0](v)

    def dec_lazy(v: Any, depth: int) -> Any:
        return _ready(cell, cls)[1](v, depth)

    _COMPILED[cls] = (enc_lazy, dec_lazy)
    cell["c"] = _compile_record(cls)
    _COMPILED[cls] = cell["c"]
    return cell["c"]


def _ready(cell: dict[str, tuple[Encoder, Decoder]], cls: type[Any]) -> tuple[Encoder, Decoder]:
    """The compiled codec behind a placeholder. A shell may use records from several
    threads (the daemon decodes in worker threads too); one that meets the placeholder
    while another is still compiling the record compiles a copy of its own."""
    ready = cell.get("c")
    return ready if ready is not None else _compile_record(cls)


def _compile_record(cls: type[Any]) -> tuple[Encoder, Decoder]:
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = tuple(f for f in dataclasses.fields(cls) if f.init)
    codecs = [_codec_for(hints[f.name]) for f in fields]
    dec = _compile_record_decoder(cls, [d for _, d in codecs])
    enc = _compile_record_encoder(cls, [f.name for f in fields], codecs)
    trailing = [_is_trailing(hints[f.name]) for f in fields]
    if not any(trailing):
        return enc, dec
    return _with_trailing(cls, fields, trailing, codecs, enc, dec)


def _is_trailing(tp: Any) -> bool:
    return get_origin(tp) is Annotated and any(isinstance(e, Trailing) for e in tp.__metadata__)


def _same_wire(a: Any, b: Any) -> bool:
    """Equal wire values of the same types (so False never matches 0, nor 1.0 match 1)."""
    if type(a) is not type(b):
        return False
    if type(a) is list:
        return len(a) == len(b) and all(_same_wire(x, y) for x, y in zip(a, b))
    return bool(a == b)


def _with_trailing(
    cls: type[Any],
    fields: tuple[dataclasses.Field[Any], ...],
    trailing: list[bool],
    codecs: list[tuple[Encoder, Decoder]],
    enc_full: Encoder,
    dec_full: Decoder,
) -> tuple[Encoder, Decoder]:
    """Wrap a record's codec so its trailing fields are omitted while at their defaults."""
    n, first = len(fields), trailing.index(True)
    if not all(trailing[first:]):
        raise TypeError(f"{cls.__name__}: Trailing fields must all come last")
    defaults: list[Any] = [None] * n
    for i in range(first, n):
        if fields[i].default is dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{fields[i].name}: a Trailing field needs a default")
        defaults[i] = codecs[i][0](fields[i].default)
    name = cls.__name__

    def enc(v: Any) -> Any:
        out: list[Any] = enc_full(v)
        m = n
        while m > first and _same_wire(out[m - 1], defaults[m - 1]):
            m -= 1
        return out if m == n else out[:m]

    def dec(v: Any, depth: int) -> Any:
        if type(v) is list and first <= len(v) <= n:
            m = len(v)
            if m > first and _same_wire(v[m - 1], defaults[m - 1]):
                raise NonCanonical(f"{name}: a trailing field at its default must be left off")
            if m < n:
                v = v + defaults[m:]
        return dec_full(v, depth)

    return enc, dec


def _wrong_record_type(cls: type[Any], v: Any) -> Any:
    raise Malformed(f"expected {cls.__name__}, got {type(v).__name__}")


def _compile_record_encoder(
    cls: type[Any], names: list[str], codecs: list[tuple[Encoder, Decoder]]
) -> Encoder:
    """Generate the straight-line encoder of `cls`: the mirror of the record decoder.

    A leaf whose inline check passes is already its own wire value (the leaf encoders
    only convert or reject values that fail it), so the field encoder is called only
    for nested values and for values that fail the check.
    """
    ns: dict[str, Any] = {"_cls": cls, "_wrong": _wrong_record_type}
    lines = ["def enc(v):", "    if type(v) is not _cls:", "        return _wrong(_cls, v)"]
    for i, (name, (e, d)) in enumerate(zip(names, codecs)):
        ns[f"_e{i}"] = e
        lines.append(f"    x{i} = v.{name}")
        check = _INLINE_CHECKS.get(d)
        call = f"x{i} = _e{i}(x{i})"
        lines.append(f"    if not ({check.format(x=f'x{i}')}): {call}" if check else f"    {call}")
    lines.append(f"    return [{', '.join(f'x{i}' for i in range(len(names)))}]")
    exec("\n".join(lines), ns)
    result: Encoder = ns["enc"]
    return result


def _record_shape_error(cls: type[Any], n: int, v: Any, depth: int) -> Any:
    """Raise the error for a value that is not an array of exactly `n` fields."""
    name = cls.__name__
    if type(v) is not list:
        raise Malformed(f"{name}: expected array, got {type(v).__name__}")
    if len(v) != n:
        raise Malformed(f"{name}: expected {n} fields, got {len(v)}")
    raise LimitExceeded(f"{name}: schema nesting deeper than {MAX_SCHEMA_DEPTH}")


def _build_record(cls: type[Any], args: tuple[Any, ...]) -> Any:
    try:
        return cls(*args)
    except DecodeError:
        raise
    except (ValueError, TypeError, PolnetError) as exc:
        # A record's own __post_init__ checks are part of its schema: whatever they
        # raise, bytes from a peer must only ever produce a DecodeError.
        raise Malformed(f"{cls.__name__}: {exc}") from exc


def _compile_record_decoder(cls: type[Any], decs: list[Decoder]) -> Decoder:
    """Generate one straight-line decoder for `cls` (as dataclasses and attrs generate
    __init__): field checks inlined on the happy path, no per-field call or zip.

    This is the hot path of ingest; a loop over field closures costs about as much as
    the rest of envelope decoding together. The generated code only ever calls the
    field decoders, so the accepted language is exactly theirs.
    """
    n = len(decs)
    names = [f"x{i}" for i in range(n)]
    ns: dict[str, Any] = {"_shape_error": _record_shape_error, "_cls": cls, "_n": n}
    ns["_build"] = _build_record
    ns["_make"] = frozen_constructor(cls)
    lines = [
        "def dec(v, depth):",
        f"    if type(v) is not list or len(v) != {n} or depth >= {MAX_SCHEMA_DEPTH}:",
        "        return _shape_error(_cls, _n, v, depth)",
        "    d1 = depth + 1",
    ]
    if n:
        lines.append(f"    {', '.join(names)}, = v")
    for i, d in enumerate(decs):
        ns[f"_d{i}"] = d
        check = _INLINE_CHECKS.get(d)
        call = f"x{i} = _d{i}(x{i}, d1)"
        lines.append(f"    if not ({check.format(x=f'x{i}')}): {call}" if check else f"    {call}")
    lines += [
        "    try:",
        f"        return _make({', '.join(names)})",
        "    except Exception:",
        f"        return _build(_cls, ({', '.join(names)}{',' if n else ''}))",
    ]
    exec("\n".join(lines), ns)
    result: Decoder = ns["dec"]
    return result


def frozen_constructor(cls: type[T]) -> Callable[..., T]:
    """A faster equivalent of `cls(*fields)` for a frozen, slotted dataclass.

    A frozen dataclass's __init__ assigns each field through object.__setattr__, which
    costs more than decoding the fields did. When __init__ is the generated one and
    does nothing else (no __post_init__, no init=False fields, no custom __new__), the
    same instance can be built by writing the slots directly. Otherwise `cls` itself is
    returned, so validation in __post_init__ always runs.
    """
    setters = _slot_setters(cls)
    if setters is None:
        return cls
    names = [f"x{i}" for i in range(len(setters))]
    ns: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    lines = [f"def make({', '.join(names)}):", "    o = _new(_cls)"]
    for i, setter in enumerate(setters):
        ns[f"_s{i}"] = setter
        lines.append(f"    _s{i}(o, x{i})")
    lines.append("    return o")
    exec("\n".join(lines), ns)
    make: Callable[..., T] = ns["make"]
    return make


def _slot_setters(cls: type[Any]) -> list[Callable[[Any, Any], None]] | None:
    if not dataclasses.is_dataclass(cls) or hasattr(cls, "__post_init__"):
        return None
    if cls.__new__ is not object.__new__:
        return None
    init = cls.__dict__.get("__init__")
    code = getattr(init, "__code__", None)
    if code is None or code.co_filename != "<string>":  # not dataclasses' generated __init__
        return None
    setters = []
    for f in dataclasses.fields(cls):
        slot = cls.__dict__.get(f.name)
        if not f.init or type(slot) is not types.MemberDescriptorType:
            return None
        setters.append(slot.__set__)
    return setters


def to_wire(obj: Any) -> Any:
    """The plain (msgpack-ready) value of a schema dataclass, validating bounds."""
    return _record_codec(type(obj))[0](obj)


def record_decoder(cls: type[T]) -> Callable[[Any, int], T]:
    """The compiled decoder of `cls` (value, depth) -> instance, for hot paths that
    decode the same type many times."""
    codec = _COMPILED.get(cls)
    dec: Callable[[Any, int], T] = (codec or _record_codec(cls))[1]
    return dec


def from_wire(cls: type[T], value: Any) -> T:
    """Build and validate a schema dataclass from a decoded plain value."""
    result: T = _record_codec(cls)[1](value, 0)
    return result
