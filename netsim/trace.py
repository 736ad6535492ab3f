"""The run's fingerprint: a running SHA-256 over every event handed to a core.

Two runs with the same seed and config must produce the same hash; any difference in
what was delivered, to whom, or when, changes it. The last few records are also kept in
a ring buffer so a failure message can show what led up to it.
"""

from __future__ import annotations

import hashlib
import struct
from collections import deque

_HEADER = struct.Struct(">qiB")

#: Trace record kinds (also the scheduler's event kinds, see sim.py).
KIND_NAMES = ("tick", "msg", "timer", "compute", "blob", "fault", "phase", "call", "reject")


class Trace:
    __slots__ = ("_hash", "count", "recent")

    def __init__(self, tail: int) -> None:
        self._hash = hashlib.sha256(b"netsim/trace/v1")
        self.recent: deque[tuple[int, int, int, bytes]] = deque(maxlen=tail)
        self.count = 0

    def record(self, now: int, node: int, kind: int, ident: bytes) -> None:
        self._hash.update(_HEADER.pack(now, node, kind) + ident)
        self.recent.append((now, node, kind, ident))
        self.count += 1

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def format_recent(self) -> str:
        lines = []
        for now, node, kind, ident in self.recent:
            shown = ident.hex()[:16] if not ident.isascii() or not ident.isalnum() else ident.decode()
            lines.append(f"  {now:>10} n{node:<4} {KIND_NAMES[kind]:<8} {shown}")
        return "\n".join(lines) or "  (none)"
