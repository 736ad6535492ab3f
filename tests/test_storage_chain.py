"""The chain database: blocks and snapshots round-trip, restart verifies against the
commits, and corruption or tampering is refused with a clear error."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from node.storage import ChainStore, CorruptDatabase, Snapshot, StateMismatch, StorageError, open_ledger
from node.storage.chainstore import MAX_COMMIT_BYTES, MAX_RANGE
from protocol.ledger import Ledger
from tests.test_ledger_support import CHAIN, PUB, genesis
from tests.test_storage_support import grow

GENESIS = genesis()


def _chain(tmp_path: Path, blocks: int = 10) -> tuple[ChainStore, Ledger]:
    store = ChainStore.open(tmp_path / "chain.db", CHAIN)
    ledger = Ledger.from_genesis(GENESIS)
    grow(store, ledger, blocks)
    return store, ledger


def test_reopen_restores_the_same_ledger_from_snapshot_and_replay(tmp_path: Path) -> None:
    store, ledger = _chain(tmp_path, 10)
    assert store.height == 10
    assert store.latest_snapshot() is not None and store.latest_snapshot().height == 8  # type: ignore[union-attr]
    store.close()
    again = ChainStore.open(tmp_path / "chain.db", CHAIN)
    restored = open_ledger(again, GENESIS)
    assert restored.height == 10
    assert restored.app_hash() == ledger.app_hash() == again.get_block(10).app_hash  # type: ignore[union-attr]
    assert restored.state.account(PUB[4]) == ledger.state.account(PUB[4])
    grow(again, restored, 3)  # and it can go on from there
    assert again.height == 13


def test_restart_without_snapshots_replays_from_genesis(tmp_path: Path) -> None:
    store = ChainStore.open(tmp_path / "c.db", CHAIN)
    ledger = Ledger.from_genesis(GENESIS)
    grow(store, ledger, 5, snapshot_every=1000)
    assert store.latest_snapshot() is None
    assert open_ledger(store, GENESIS).app_hash() == ledger.app_hash()


def test_only_the_last_snapshots_are_kept(tmp_path: Path) -> None:
    store, _ = _chain(tmp_path, 17)
    heights = [r[0] for r in store._db.execute("SELECT height FROM snapshots ORDER BY height")]
    assert heights == [12, 16]


def test_blocks_must_be_appended_in_order_and_within_size(tmp_path: Path) -> None:
    store, _ = _chain(tmp_path, 2)
    with pytest.raises(StorageError, match="does not follow"):
        store.append_block(5, b"b", b"c", b"\x00" * 32)
    with pytest.raises(StorageError, match="exceeds"):
        store.append_block(3, b"b", b"c" * (MAX_COMMIT_BYTES + 1), b"\x00" * 32)
    with pytest.raises(StorageError, match="snapshot of height"):
        store.append_block(3, b"b", b"c", b"\x00" * 32, Snapshot(2, b"\x00" * 32, b""))
    assert store.height == 2


def test_range_reads_are_bounded(tmp_path: Path) -> None:
    store, _ = _chain(tmp_path, 5)
    assert [b.height for b in store.blocks(2, 2)] == [2, 3]
    assert len(store.blocks(1, 10**9)) == 5 <= MAX_RANGE


def test_records_persist_one_per_call_and_load_in_key_order(tmp_path: Path) -> None:
    store = ChainStore.open(tmp_path / "r.db", CHAIN)
    store.persist("consensus/block", (2).to_bytes(8, "big"), b"two")
    store.persist("consensus/block", (1).to_bytes(8, "big"), b"one")
    store.persist("consensus/block", (1).to_bytes(8, "big"), b"uno")
    assert list(store.load_kind("consensus/block")) == [b"uno", b"two"]
    assert store.load("consensus/block", b"x") is None
    with pytest.raises(StorageError):
        store.persist("k" * 65, b"", b"")


def test_database_of_another_chain_is_refused(tmp_path: Path) -> None:
    ChainStore.open(tmp_path / "c.db", CHAIN).close()
    with pytest.raises(StorageError, match="belongs to chain"):
        ChainStore.open(tmp_path / "c.db", "another-chain")


@pytest.mark.parametrize("garbage", [b"not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 5000])
def test_garbage_file_is_a_corrupt_database(tmp_path: Path, garbage: bytes) -> None:
    path = tmp_path / "bad.db"
    path.write_bytes(garbage)
    with pytest.raises(CorruptDatabase):
        ChainStore.open(path, CHAIN)


def test_truncated_database_file_is_refused_not_misread(tmp_path: Path) -> None:
    store, _ = _chain(tmp_path, 6)
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    path = tmp_path / "chain.db"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises((CorruptDatabase, StateMismatch)):
        open_ledger(ChainStore.open(path, CHAIN), GENESIS)


def _tamper(tmp_path: Path, sql: str, *args: object) -> None:
    db = sqlite3.connect(tmp_path / "chain.db")
    db.execute(sql, args)
    db.commit()
    db.close()


def test_tampered_stored_root_is_a_state_mismatch(tmp_path: Path) -> None:
    _chain(tmp_path, 10)[0].close()
    _tamper(tmp_path, "UPDATE blocks SET app_hash = ? WHERE height = 10", b"\x01" * 32)
    with pytest.raises(StateMismatch, match="block 10"):
        open_ledger(ChainStore.open(tmp_path / "chain.db", CHAIN), GENESIS)


def test_tampered_snapshot_is_refused(tmp_path: Path) -> None:
    _chain(tmp_path, 10)[0].close()
    _tamper(tmp_path, "UPDATE snapshots SET state = ? WHERE height = 8", b"\x92\x01\x02")
    with pytest.raises(CorruptDatabase, match="snapshot"):
        open_ledger(ChainStore.open(tmp_path / "chain.db", CHAIN), GENESIS)


def test_block_with_forged_commit_is_refused_on_replay(tmp_path: Path) -> None:
    store, _ = _chain(tmp_path, 10)
    other = store.get_block(9)
    store.close()
    assert other is not None
    _tamper(tmp_path, "UPDATE blocks SET commit_cert = ? WHERE height = 10", other.commit)
    with pytest.raises(StateMismatch, match="commit certificate"):
        open_ledger(ChainStore.open(tmp_path / "chain.db", CHAIN), GENESIS)


def test_missing_block_row_is_corruption(tmp_path: Path) -> None:
    _chain(tmp_path, 5)[0].close()
    _tamper(tmp_path, "DELETE FROM blocks WHERE height = 3")
    with pytest.raises(CorruptDatabase, match="contiguous"):
        ChainStore.open(tmp_path / "chain.db", CHAIN)
