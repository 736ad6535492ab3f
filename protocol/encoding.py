"""Canonical msgpack: one value, one byte string, always.

Why canonical: signatures, content hashes, Merkle leaves and the ledger's state root
are all computed over bytes, so two honest nodes must produce identical bytes for the
same value. msgpack's packer already picks the shortest integer and length headers;
we add the rest: maps with keys sorted by their encoded bytes, floats always as
float64, tuples and lists both as arrays, no ext types, no non-finite floats.

Decoding is the strict mirror: a size cap before parsing, per-container and
per-string limits inside the C unpacker (so a header claiming gigabytes is refused
before anything is allocated), duplicate map keys rejected, no ext types, bounded
depth, and a final re-encode that must reproduce the input byte for byte. That last
check makes every other canonical rule (shortest ints, key order, float width)
enforced without a hand-written parser.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import msgpack

from protocol.errors import LimitExceeded, Malformed, MessageTooLarge, NonCanonical
from protocol.limits import DEFAULT_LIMITS, MAX_INT, MIN_INT, Limits

__all__ = ["canonical_hash", "pack", "pack_plain", "sha256", "unpack", "unpack_shallow"]

#: Scalar types whose msgpack encoding needs no normalisation (ints are range-checked).
_SCALARS = (type(None), bool, str, bytes)

# One packer, reused: `msgpack.packb` builds a Packer with a 256 KiB buffer on every
# call, which costs more than packing a whole envelope. Sharing it is safe: it has no
# `default` hook, so packing never runs Python bytecode and cannot be interleaved with
# another thread's use under the GIL; and `pack` resets the buffer on error as well as
# on success (autoreset).
_PACKER = msgpack.Packer(use_bin_type=True, use_single_float=False, autoreset=True)


def _normalise(value: Any, depth: int = 0) -> Any:
    """Turn a plain value into the exact shape the packer will emit canonically."""
    if depth > 64:
        raise LimitExceeded("value nested too deeply to encode")
    if value is None or isinstance(value, (bool, str, bytes)):
        return value
    if isinstance(value, int):
        if not MIN_INT <= value <= MAX_INT:
            raise LimitExceeded(f"integer {value} outside 64-bit range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Malformed("non-finite float cannot be encoded")
        # -0.0 == 0.0 in Python: one value, so one encoding.
        return value if value != 0.0 else 0.0
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (list, tuple)):
        return [_normalise(v, depth + 1) for v in value]
    if isinstance(value, dict):
        items = [(pack(k), _normalise(k, depth + 1), _normalise(v, depth + 1)) for k, v in value.items()]
        items.sort(key=lambda t: t[0])
        return _SortedMap([(k, v) for _, k, v in items])
    raise Malformed(f"cannot encode value of type {type(value).__name__}")


class _SortedMap(dict):  # type: ignore[type-arg]
    """A dict whose insertion order is the canonical key order (msgpack keeps it)."""

    def __init__(self, pairs: list[tuple[Any, Any]]) -> None:
        super().__init__(pairs)
        if len(self) != len(pairs):
            raise Malformed("duplicate map keys after normalisation")


def pack(value: Any) -> bytes:
    """Encode a plain value (None/bool/int/float/str/bytes/list/tuple/dict) canonically."""
    if type(value) in _SCALARS:
        return pack_plain(value)
    return pack_plain(_normalise(value))


def pack_plain(value: Any) -> bytes:
    """Encode a value that is already in canonical shape, skipping normalisation.

    The caller vouches that it holds no maps, no non-finite floats or -0.0 and no
    integers outside 64 bits: `protocol.schema.to_wire` output and values that a schema
    decoder accepted qualify. Anything msgpack still refuses (a lone surrogate in a
    string) is reported as Malformed rather than escaping as a library error.
    """
    try:
        out: bytes = _PACKER.pack(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise Malformed(f"cannot encode value: {exc}") from exc
    return out


def _reject_ext(code: int, data: bytes) -> Any:
    raise Malformed(f"msgpack ext type {code} is not allowed")


def _pairs_no_duplicates(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise Malformed("duplicate key in map")
    return result


def _check_depth(value: Any, max_depth: int) -> None:
    """Bound nesting iteratively (no recursion, so hostile depth cannot blow the stack)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, list):
            if depth >= max_depth:
                raise LimitExceeded(f"nesting deeper than {max_depth}")
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, dict):
            if depth >= max_depth:
                raise LimitExceeded(f"nesting deeper than {max_depth}")
            for k, v in item.items():
                stack.append((k, depth + 1))
                stack.append((v, depth + 1))
        elif isinstance(item, float) and not math.isfinite(item):
            raise Malformed("non-finite float")


def unpack(data: bytes, limits: Limits = DEFAULT_LIMITS, *, check_canonical: bool = True) -> Any:
    """Decode exactly one canonical msgpack value from `data`, or raise a DecodeError.

    Arrays decode as Python lists (never tuples) so that the result can be re-encoded
    and compared with the input.
    """
    data = _as_bytes(data)
    value = unpack_shallow(data, limits)
    if type(value) in (list, dict):
        _check_depth(value, limits.max_depth)
    elif type(value) is float and not math.isfinite(value):
        raise Malformed("non-finite float")
    if check_canonical:
        try:
            again = pack(value)
        except Malformed as exc:
            raise NonCanonical(str(exc)) from exc
        if again != data:
            raise NonCanonical("input is not the canonical encoding of its value")
    return value


def _as_bytes(data: Any) -> bytes:
    if type(data) is bytes:
        return data
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise Malformed(f"expected bytes, got {type(data).__name__}")
    return bytes(data)


def unpack_shallow(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Decode one msgpack value under every size and length limit, but leave the depth
    bound and the canonical-form check to the caller.

    A schema decoder bounds depth by its own structure and, once it has accepted the
    value, can prove canonical form with one C-level re-encode (`pack_plain`); doing
    both generically here would double the cost of every ingested message.
    """
    data = _as_bytes(data)
    if len(data) > limits.max_bytes:
        raise MessageTooLarge(f"{len(data)} bytes exceeds the {limits.max_bytes}-byte cap")
    if len(data) == 0:
        raise Malformed("empty input")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=False,
            object_pairs_hook=_pairs_no_duplicates,
            ext_hook=_reject_ext,
            max_str_len=limits.max_str_len,
            max_bin_len=limits.max_bin_len,
            max_array_len=limits.max_array_len,
            max_map_len=limits.max_map_len,
            max_ext_len=0,
            timestamp=0,
        )
    except msgpack.ExtraData as exc:
        raise Malformed("trailing bytes after the value") from exc
    except msgpack.StackError as exc:
        raise LimitExceeded("msgpack nesting exceeds the decoder stack") from exc
    except (ValueError, msgpack.UnpackException) as exc:
        # ValueError covers truncated input, length-limit breaches and bad UTF-8
        # (UnicodeDecodeError is a ValueError).
        if "max_ext_len" in str(exc):
            raise Malformed("msgpack ext types are not allowed") from exc
        if "exceeds max" in str(exc):
            raise LimitExceeded(str(exc)) from exc
        raise Malformed(f"invalid msgpack: {exc}") from exc
    except Malformed:
        raise
    except (TypeError, RecursionError) as exc:
        # Unhashable map keys (a list used as a key) end up here.
        raise Malformed(f"invalid msgpack structure: {exc}") from exc


def sha256(data: bytes) -> bytes:
    """SHA-256; one name so every content hash in polnet is the same function."""
    return hashlib.sha256(data).digest()


def canonical_hash(value: Any) -> bytes:
    """SHA-256 of the canonical encoding: the content id of a plain value."""
    return sha256(pack(value))
