"""Encode and hash schema records (frozen dataclasses) canonically."""

from __future__ import annotations

from typing import Any, TypeVar

from protocol.encoding import pack, sha256, unpack
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.schema import from_wire, to_wire

T = TypeVar("T")


def encode_record(obj: Any) -> bytes:
    """Canonical bytes of a schema dataclass."""
    return pack(to_wire(obj))


def decode_record(cls: type[T], data: bytes, limits: Limits = DEFAULT_LIMITS) -> T:
    """Strictly decode bytes into `cls`, raising a DecodeError subclass on any fault."""
    return from_wire(cls, unpack(data, limits))


def record_hash(obj: Any) -> bytes:
    """Content id of a record: SHA-256 of its canonical bytes."""
    return sha256(encode_record(obj))
