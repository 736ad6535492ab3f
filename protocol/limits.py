"""Decoder limits, named in one place.

Every byte that arrives from a peer passes through a decoder bounded by these. The
numbers are deliberately small: gossip carries control messages; datasets, checkpoints
and operation inputs travel as blobs over streams, never inside a message.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024

#: Envelope size cap (DESIGN.md: "about 1 MiB; blobs travel by stream, not gossip").
MAX_MESSAGE_BYTES = 1 * MiB
#: Deepest nesting of arrays a message may use (a block holds txs holding structs).
MAX_DEPTH = 16
#: Longest array a message may hold (e.g. txs in a block, votes in a certificate).
MAX_ARRAY_LEN = 4096
#: Longest map (maps only appear in genesis/config documents, never on the wire).
MAX_MAP_LEN = 1024
#: Longest UTF-8 string, in bytes.
MAX_STR_LEN = 4096
#: Longest byte string inside a message (a whole block's tx payloads are below this).
MAX_BIN_LEN = MAX_MESSAGE_BYTES
#: Integers on the wire are 64-bit; wider values are a schema error.
MIN_INT = -(2**63)
MAX_INT = 2**64 - 1


@dataclass(frozen=True, slots=True)
class Limits:
    """A bundle of decoder limits; tests and blob decoders can tighten or widen them."""

    max_bytes: int = MAX_MESSAGE_BYTES
    max_depth: int = MAX_DEPTH
    max_array_len: int = MAX_ARRAY_LEN
    max_map_len: int = MAX_MAP_LEN
    max_str_len: int = MAX_STR_LEN
    max_bin_len: int = MAX_BIN_LEN


DEFAULT_LIMITS = Limits()
