"""The daemon's chain restarts from its newest verifiable snapshot: it reads only the
blocks after it, never trusts a snapshot no stored block certifies, and falls back to an
older start when a snapshot is damaged."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from node.daemon.chain import Chain
from node.storage.ledger_restore import SNAPSHOT_EVERY
from protocol.consensus.node import PERSIST_BLOCK
from tests.test_daemon_chain import _drive, _open


def _restored_from(caplog: pytest.LogCaptureFixture) -> int:
    [rec] = [r for r in caplog.records if r.getMessage() == "chain restored"]
    return int(rec.from_snapshot)  # type: ignore[attr-defined]


def _reopen(tmp: Path, caplog: pytest.LogCaptureFixture) -> tuple[Chain, int]:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="polnet.chain"):
        chain = _open(tmp)
    return chain, _restored_from(caplog)


def _sql(tmp: Path, statement: str, *args: object) -> None:
    db = sqlite3.connect(tmp / "chain.db")
    with db:
        db.execute(statement, args)
    db.close()


def test_a_restart_reads_only_the_blocks_after_the_newest_verifiable_snapshot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    chain = _open(tmp_path)
    _drive(chain, 2 * SNAPSHOT_EVERY + 6)
    height, root = chain.height, chain.ledger.app_hash()
    chain.store.close()
    # Remove every block the snapshot covers: a replay from genesis could not work now.
    _sql(tmp_path, "DELETE FROM records WHERE kind = ? AND key <= ?", PERSIST_BLOCK,
         (2 * SNAPSHOT_EVERY).to_bytes(8, "big"))
    again, start = _reopen(tmp_path, caplog)
    assert start == 2 * SNAPSHOT_EVERY
    assert (again.height, again.ledger.app_hash()) == (height, root)
    # It goes on committing from there, snapshotting as before.
    _drive(again, 3 * SNAPSHOT_EVERY + 1)
    assert again.store.consensus_snapshots()[0].height == 3 * SNAPSHOT_EVERY
    again.store.close()


def test_a_snapshot_at_the_head_is_not_trusted_the_one_before_it_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    chain = _open(tmp_path)
    _drive(chain, 2 * SNAPSHOT_EVERY)
    assert chain.height == 2 * SNAPSHOT_EVERY  # killed right after the snapshot's block
    root = chain.ledger.app_hash()
    chain.store.close()
    again, start = _reopen(tmp_path, caplog)
    assert start == SNAPSHOT_EVERY  # no stored block certifies the head snapshot's root yet
    assert again.ledger.app_hash() == root
    again.store.close()


def test_a_damaged_snapshot_is_skipped_for_the_older_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    chain = _open(tmp_path)
    _drive(chain, 2 * SNAPSHOT_EVERY + 3)
    height, root = chain.height, chain.ledger.app_hash()
    chain.store.close()
    # Flip the last byte of the newest snapshot (inside the ledger state).
    db = sqlite3.connect(tmp_path / "chain.db")
    (blob,) = db.execute("SELECT snapshot FROM consensus_snapshots ORDER BY height DESC LIMIT 1").fetchone()
    with db:
        db.execute("UPDATE consensus_snapshots SET snapshot = ? WHERE height = ?",
                   (bytes(blob[:-1]) + bytes([blob[-1] ^ 1]), 2 * SNAPSHOT_EVERY))
    db.close()
    again, start = _reopen(tmp_path, caplog)
    assert start == SNAPSHOT_EVERY
    assert (again.height, again.ledger.app_hash()) == (height, root)
    again.store.close()
