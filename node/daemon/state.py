"""The daemon's own small durable state: how often it started, whether it stopped
cleanly, and the records the core asked to persist while the chain store is absent.

A `running` flag set at start and cleared at a clean stop tells a restarted daemon that
the previous run died (SIGKILL, power loss): it then logs a recovery and counts it,
which is how an operator (and the restart tests) can see a crash was survived.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from protocol.errors import ConfigError

#: Persisted records are control data (locks, votes); a large one is a core bug.
MAX_RECORD_BYTES = 1024 * 1024
MAX_KIND_LEN = 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL, PRIMARY KEY (kind, key)
);
"""


@dataclass(frozen=True, slots=True)
class BootInfo:
    boots: int
    clean_stops: int
    crashes: int
    recovered: bool  # the previous run did not stop cleanly


class DaemonState:
    def __init__(self, path: Path) -> None:
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{path}: daemon database unusable: {exc}") from None

    def _get(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _set(self, key: str, value: int) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def start(self) -> BootInfo:
        """Record a start; say whether the previous run crashed."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            recovered = self._get("running") == 1
            self._set("boots", self._get("boots") + 1)
            if recovered:
                self._set("crashes", self._get("crashes") + 1)
            self._set("running", 1)
        return self.info(recovered)

    def stop(self) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._set("running", 0)
            self._set("clean_stops", self._get("clean_stops") + 1)

    def info(self, recovered: bool = False) -> BootInfo:
        return BootInfo(self._get("boots"), self._get("clean_stops"), self._get("crashes"), recovered)

    def persist(self, kind: str, key: bytes, value: bytes) -> None:
        if len(kind) > MAX_KIND_LEN or len(value) > MAX_RECORD_BYTES:
            raise ConfigError(f"persist record {kind!r} over its size limit")
        self._db.execute(
            "INSERT OR REPLACE INTO records (kind, key, value) VALUES (?, ?, ?)", (kind, key, value)
        )

    def load(self, kind: str, key: bytes) -> bytes | None:
        row = self._db.execute("SELECT value FROM records WHERE kind = ? AND key = ?", (kind, key)).fetchone()
        return bytes(row[0]) if row else None

    def load_kind(self, kind: str) -> list[bytes]:
        """Every record of one kind in key order (block heights are big-endian keys)."""
        rows = self._db.execute("SELECT value FROM records WHERE kind = ? ORDER BY key", (kind,))
        return [bytes(r[0]) for r in rows]

    def close(self) -> None:
        self._db.close()
