"""The chain database: blocks, their commit certificates and ledger snapshots in sqlite.

The daemon uses the generic `records` table for what its consensus core persists
(committed blocks, its own votes, role state) and `consensus_snapshots` for the core's
snapshots (`PERSIST_SNAPSHOT`, routed there by `persist` because they are larger than a
record may be); `blocks` and `snapshots` serve the ledger-only path of ledger_restore.py.

Why sqlite in WAL mode with one transaction per block: a block, its certificate, the
state root it produced and (every few blocks) a state snapshot become visible together
or not at all, whatever kills the process; WAL lets readers (block sync, the admin
endpoint) read while the node appends. `synchronous=FULL` makes a returned
`append_block` durable across power loss, not only across a process kill.

Every stored value has a size cap, checked before writing, and every read that returns
many rows is bounded, so a bug or a hostile peer cannot grow memory without limit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from node.storage.errors import CorruptDatabase, StorageError
from protocol.consensus.config import PERSIST_SNAPSHOT

SCHEMA_VERSION = 1
#: A block is one consensus message (about 1 MiB), with room to spare.
MAX_BLOCK_BYTES = 2 * 1024 * 1024
#: A certificate holds at most a few hundred signatures.
MAX_COMMIT_BYTES = 256 * 1024
#: Snapshot of the whole ledger state; far above devnet sizes, a guard against bugs.
MAX_SNAPSHOT_BYTES = 512 * 1024 * 1024
#: Generic records the core persists (votes it signed, locks).
MAX_RECORD_BYTES = 1024 * 1024
MAX_KIND_LEN = 64
MAX_KEY_LEN = 256
#: Most blocks returned by one range read (block sync answers in batches).
MAX_RANGE = 256
#: Snapshots kept; older ones are deleted in the same transaction that adds a new one.
KEEP_SNAPSHOTS = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY,
    block BLOB NOT NULL,
    commit_cert BLOB NOT NULL,
    app_hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    height INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    state BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL, PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS consensus_snapshots (
    height INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    snapshot BLOB NOT NULL
);
"""
#: PERSIST_SNAPSHOT keys: height (8 bytes, big-endian) then the state root (32 bytes).
_SNAPSHOT_KEY_BYTES = 8 + 32


@dataclass(frozen=True, slots=True)
class StoredBlock:
    height: int
    block: bytes
    commit: bytes
    app_hash: bytes  # state root after applying this block


@dataclass(frozen=True, slots=True)
class Snapshot:
    height: int
    root: bytes
    state: bytes


def _check_size(what: str, data: bytes, cap: int) -> None:
    if not isinstance(data, bytes):
        raise StorageError(f"{what} must be bytes, got {type(data).__name__}")
    if len(data) > cap:
        raise StorageError(f"{what} of {len(data)} bytes exceeds the {cap}-byte cap")


class ChainStore:
    """One node's chain database. Not thread-safe: one owner (the daemon's chain task)."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    @classmethod
    def open(cls, path: Path | str, chain_id: str) -> ChainStore:
        """Open or create; refuse a corrupt file, a foreign schema or another chain's data."""
        path = Path(path)
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise CorruptDatabase(f"{path}: cannot open chain database: {exc}") from None
        try:
            store = cls(db, path)
            store._init(chain_id)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise CorruptDatabase(
                f"{path}: chain database unreadable ({exc}); restore a backup or resync"
            ) from None
        except StorageError:
            db.close()
            raise
        return store

    def _init(self, chain_id: str) -> None:
        db = self._db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        check = db.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise CorruptDatabase(f"{self.path}: integrity check failed: {check}")
        with self._tx():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)  # not executescript: it would commit our transaction
            version = self._meta("schema_version")
            stored_chain = self._meta("chain_id")
            if version is None:
                self._set_meta("schema_version", str(SCHEMA_VERSION).encode())
                self._set_meta("chain_id", chain_id.encode())
                return
        if version != str(SCHEMA_VERSION).encode():
            raise CorruptDatabase(
                f"{self.path}: schema version {version!r}, this build reads {SCHEMA_VERSION}"
            )
        if stored_chain != chain_id.encode():
            raise StorageError(f"{self.path}: database belongs to chain {stored_chain!r}, not {chain_id!r}")
        self._check_contiguous()

    def _check_contiguous(self) -> None:
        lo, hi, n = self._db.execute("SELECT MIN(height), MAX(height), COUNT(*) FROM blocks").fetchone()
        if n and (lo != 1 or hi != n):
            raise CorruptDatabase(
                f"{self.path}: blocks are not contiguous from 1 (min {lo}, max {hi}, {n} rows)"
            )

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """One sqlite write transaction: commit on success, roll back on any error."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _meta(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return bytes(row[0]) if row else None

    def _set_meta(self, key: str, value: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # --- blocks ---------------------------------------------------------------------------------

    def append_block(
        self, height: int, block: bytes, commit: bytes, app_hash: bytes, snapshot: Snapshot | None = None
    ) -> None:
        """Store the next block, its certificate, its resulting root (and maybe a snapshot)
        in one transaction: after a crash either all of it is there or none."""
        _check_size("block", block, MAX_BLOCK_BYTES)
        _check_size("commit certificate", commit, MAX_COMMIT_BYTES)
        if len(app_hash) != 32:
            raise StorageError("app_hash must be 32 bytes")
        if snapshot is not None:
            _check_size("state snapshot", snapshot.state, MAX_SNAPSHOT_BYTES)
            if snapshot.height != height:
                raise StorageError(f"snapshot of height {snapshot.height} stored with block {height}")
        with self._tx():
            head = self._head_height()
            if height != head + 1:
                raise StorageError(f"block {height} does not follow the stored head {head}")
            self._db.execute(
                "INSERT INTO blocks (height, block, commit_cert, app_hash) VALUES (?, ?, ?, ?)",
                (height, block, commit, app_hash),
            )
            if snapshot is not None:
                self._put_snapshot(snapshot)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store a snapshot of an already stored height (e.g. at a clean shutdown)."""
        _check_size("state snapshot", snapshot.state, MAX_SNAPSHOT_BYTES)
        with self._tx():
            if snapshot.height > self._head_height():
                raise StorageError(f"snapshot of height {snapshot.height} is after the stored head")
            self._put_snapshot(snapshot)

    def _put_snapshot(self, snap: Snapshot) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO snapshots (height, root, state) VALUES (?, ?, ?)",
            (snap.height, snap.root, snap.state),
        )
        self._db.execute(
            "DELETE FROM snapshots WHERE height NOT IN "
            "(SELECT height FROM snapshots ORDER BY height DESC LIMIT ?)",
            (KEEP_SNAPSHOTS,),
        )

    def _head_height(self) -> int:
        row = self._db.execute("SELECT MAX(height) FROM blocks").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    @property
    def height(self) -> int:
        """Height of the last stored block (0: none)."""
        return self._head_height()

    def get_block(self, height: int) -> StoredBlock | None:
        row = self._db.execute(
            "SELECT height, block, commit_cert, app_hash FROM blocks WHERE height = ?", (height,)
        ).fetchone()
        return StoredBlock(row[0], bytes(row[1]), bytes(row[2]), bytes(row[3])) if row else None

    def blocks(self, start: int, limit: int = MAX_RANGE) -> list[StoredBlock]:
        """Up to `limit` (at most MAX_RANGE) consecutive blocks from `start` (block sync)."""
        rows = self._db.execute(
            "SELECT height, block, commit_cert, app_hash FROM blocks"
            " WHERE height >= ? ORDER BY height LIMIT ?",
            (start, max(0, min(limit, MAX_RANGE))),
        )
        return [StoredBlock(r[0], bytes(r[1]), bytes(r[2]), bytes(r[3])) for r in rows]

    def latest_snapshot(self) -> Snapshot | None:
        row = self._db.execute(
            "SELECT height, root, state FROM snapshots ORDER BY height DESC LIMIT 1"
        ).fetchone()
        return Snapshot(row[0], bytes(row[1]), bytes(row[2])) if row else None

    # --- generic records (protocol.commands.Persist) -------------------------------------------------

    def persist(self, kind: str, key: bytes, value: bytes) -> None:
        """Store one record the core asked to persist (its own votes, locks): one
        transaction. A consensus snapshot goes to its own table (see the module docstring)."""
        if kind == PERSIST_SNAPSHOT:
            self._persist_consensus_snapshot(key, value)
            return
        if not 0 < len(kind) <= MAX_KIND_LEN or len(key) > MAX_KEY_LEN:
            raise StorageError(f"persist record kind/key {kind!r} over its size limit")
        _check_size(f"persist record {kind!r}", value, MAX_RECORD_BYTES)
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO records (kind, key, value) VALUES (?, ?, ?)", (kind, key, value)
            )

    def _persist_consensus_snapshot(self, key: bytes, value: bytes) -> None:
        if len(key) != _SNAPSHOT_KEY_BYTES:
            raise StorageError(f"consensus snapshot key must be {_SNAPSHOT_KEY_BYTES} bytes")
        _check_size("consensus snapshot", value, MAX_SNAPSHOT_BYTES)
        height, root = int.from_bytes(key[:8], "big"), key[8:]
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO consensus_snapshots (height, root, snapshot) VALUES (?, ?, ?)",
                (height, root, value),
            )
            self._db.execute(
                "DELETE FROM consensus_snapshots WHERE height NOT IN "
                "(SELECT height FROM consensus_snapshots ORDER BY height DESC LIMIT ?)",
                (KEEP_SNAPSHOTS,),
            )

    def consensus_snapshots(self) -> list[Snapshot]:
        """The kept consensus snapshots (at most KEEP_SNAPSHOTS), newest first."""
        rows = self._db.execute(
            "SELECT height, root, snapshot FROM consensus_snapshots ORDER BY height DESC LIMIT ?",
            (KEEP_SNAPSHOTS,),
        )
        return [Snapshot(r[0], bytes(r[1]), bytes(r[2])) for r in rows]

    def load(self, kind: str, key: bytes) -> bytes | None:
        row = self._db.execute("SELECT value FROM records WHERE kind = ? AND key = ?", (kind, key)).fetchone()
        return bytes(row[0]) if row else None

    def load_kind(self, kind: str, after: bytes | None = None) -> Iterator[bytes]:
        """Every record of one kind in key order (only keys above `after`, if given),
        streamed (not loaded at once): block records are keyed by big-endian height, so
        `after` = a snapshot's height reads just the blocks after it."""
        if after is None:
            cur = self._db.execute("SELECT value FROM records WHERE kind = ? ORDER BY key", (kind,))
        else:
            cur = self._db.execute(
                "SELECT value FROM records WHERE kind = ? AND key > ? ORDER BY key", (kind, after)
            )
        for row in cur:
            yield bytes(row[0])

    def last_key(self, kind: str) -> bytes | None:
        row = self._db.execute("SELECT MAX(key) FROM records WHERE kind = ?", (kind,)).fetchone()
        return bytes(row[0]) if row and row[0] is not None else None

    def close(self) -> None:
        self._db.close()
