"""kill -9 in the middle of block writes: nothing acknowledged is lost, nothing half
written is visible, and the reopened ledger verifies against the stored commits."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.storage import ChainStore, open_ledger
from tests.test_ledger_support import CHAIN, genesis

ROUNDS = 4
REPO = Path(__file__).resolve().parent.parent


def _run_and_kill(db: Path, rng: random.Random) -> int:
    """Start a writer, let it commit a few blocks, SIGKILL it at a random moment; return
    the highest height it reported as committed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.test_storage_support", str(db)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    assert proc.stdout is not None
    acked = 0
    try:
        first = proc.stdout.readline()
        assert first.startswith("opened"), first + (proc.stderr.read() if proc.stderr else "")
        for _ in range(rng.randint(2, 5)):
            line = proc.stdout.readline()
            assert line.strip().isdigit(), line
            acked = int(line)
        time.sleep(rng.uniform(0.0, 0.05))  # land somewhere inside the next block's write
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
    for line in rest.split():
        if line.isdigit():
            acked = max(acked, int(line))
    return acked


@pytest.mark.timeout(240)
def test_kill_9_mid_block_loses_nothing_committed_and_exposes_nothing_partial(tmp_path: Path) -> None:
    rng = random.Random(1234)
    db = tmp_path / "chain.db"
    acked = 0
    for _ in range(ROUNDS):
        acked = _run_and_kill(db, rng)
        store = ChainStore.open(db, CHAIN)
        assert store.height >= acked  # every acknowledged block survived
        ledger = open_ledger(store, genesis(balances=(10**9,) * 6))  # verifies roots + certificates
        assert ledger.height == store.height
        head = store.get_block(store.height)
        assert head is not None and head.app_hash == ledger.app_hash()
        rows = store._db.execute("SELECT COUNT(*) FROM blocks").fetchone()[0]
        assert rows == store.height  # no gap, no partial row
        store.close()
    assert acked >= ROUNDS * 2
