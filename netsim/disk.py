"""A node's simulated disk: what survives a crash.

Cores never touch storage; they emit Persist(kind, key, value) and read their state back
through this object when the factory builds them again after a restart. The writes of a
node's most recent handle() call that no message has followed yet are "un-synced": a
Crash with lose_unsynced rolls them back, modelling kill -9 after the write() but before
the fsync. Everything older is durable, and so is every write that precedes a Publish or
SendTo in the same command list: the daemon executes a Persist inline (sqlite commit with
synchronous=FULL) before it executes the next command, so nothing that left the node can
be backed by a write its disk then forgets (docs/chaos.md, finding 1).
"""

from __future__ import annotations

from netsim.errors import NetsimError


class Disk:
    """Per-node key-value store, grouped by record kind; reads are sorted (deterministic)."""

    __slots__ = ("_bytes", "_data", "_limit", "_undo", "writes")

    def __init__(self, limit_bytes: int) -> None:
        self._data: dict[str, dict[bytes, bytes]] = {}
        self._undo: list[tuple[str, bytes, bytes | None]] = []
        self._limit = limit_bytes
        self._bytes = 0
        self.writes = 0

    # --- what a core's factory reads ------------------------------------------------------

    def get(self, kind: str, key: bytes) -> bytes | None:
        table = self._data.get(kind)
        return None if table is None else table.get(key)

    def items(self, kind: str) -> list[tuple[bytes, bytes]]:
        """All records of one kind, sorted by key."""
        return sorted(self._data.get(kind, {}).items())

    def kinds(self) -> list[str]:
        return sorted(k for k, table in self._data.items() if table)

    def __len__(self) -> int:
        return sum(len(t) for t in self._data.values())

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def unsynced(self) -> int:
        """Writes a kill -9 now would lose (those of the node's most recent handle() after
        its last outgoing message)."""
        return len(self._undo)

    # --- what the simulator does -----------------------------------------------------------

    def write(self, kind: str, key: bytes, value: bytes) -> None:
        table = self._data.setdefault(kind, {})
        old = table.get(key)
        growth = len(key) + len(value) if old is None else len(value) - len(old)
        if self._bytes + growth > self._limit:
            raise NetsimError(f"simulated disk full: limit {self._limit} bytes")
        self._bytes += growth
        self._undo.append((kind, key, old))
        table[key] = value
        self.writes += 1

    def sync(self) -> None:
        """Make every write so far durable (called before each handle() and before each
        message a node sends)."""
        self._undo.clear()

    def lose_unsynced(self) -> int:
        """Roll back the un-synced writes, newest first; returns how many were lost."""
        lost = len(self._undo)
        for kind, key, old in reversed(self._undo):
            table = self._data[kind]
            now = table[key]
            if old is None:
                del table[key]
                self._bytes -= len(key) + len(now)
            else:
                table[key] = old
                self._bytes += len(old) - len(now)
        self._undo.clear()
        return lost
