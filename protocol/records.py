"""Encode and hash schema records (frozen dataclasses) canonically."""

from __future__ import annotations

from typing import Any, TypeVar

from protocol.encoding import pack_plain, sha256, unpack_shallow
from protocol.errors import NonCanonical
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.schema import from_wire, to_wire

T = TypeVar("T")


def encode_record(obj: Any) -> bytes:
    """Canonical bytes of a schema dataclass."""
    # to_wire checks every bound, so its output needs no generic normalisation.
    return pack_plain(to_wire(obj))


def decode_record(cls: type[T], data: bytes, limits: Limits = DEFAULT_LIMITS) -> T:
    """Strictly decode bytes into `cls`, raising a DecodeError subclass on any fault.

    The schema bounds depth and types; once it has accepted the value, one plain
    re-encode proves the input was the canonical encoding (see `pack_plain`).
    """
    value = unpack_shallow(data, limits)
    obj = from_wire(cls, value)
    if pack_plain(value) != data:
        raise NonCanonical(f"{cls.__name__}: input is not the canonical encoding of its value")
    return obj


def record_hash(obj: Any) -> bytes:
    """Content id of a record: SHA-256 of its canonical bytes."""
    return sha256(encode_record(obj))
