"""Ledger and chain-database costs, side by side with a raw ed25519 verify in the same run.

Figures: applying a block of transfers per tx (with signature checks, and with the
signatures already verified by check_tx) vs one raw verify; the state root's share of a
block; sqlite append per block (one fsync'd transaction) and verified restart replay.

    .venv/bin/python bench/ledger.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.storage import ChainStore, open_ledger
from protocol.app import BlockContext
from protocol.envelope import seal
from protocol.identity import Keypair, verify
from protocol.ledger import Ledger
from protocol.ledger.genesis import Genesis, GenesisAccount
from protocol.ledger.params import DEVNET
from protocol.ledger.txs import Transfer
from tests.test_storage_support import grow

CHAIN = "polnet-test"
BLOCK_TXS = 1000
SENDERS = 50
REPS = 3


def raw_verify_us(n: int = 2000) -> float:
    key = Keypair.derive("bench")
    msg = b"\x11" * 32
    sig = key.sign(msg)
    t = time.perf_counter()
    for _ in range(n):
        verify(key.public, sig, msg)
    return (time.perf_counter() - t) / n * 1e6


def _ledger(keys: list[Keypair]) -> Ledger:
    accounts = tuple(GenesisAccount(k.public, 10**12, 1_000) for k in keys)
    return Ledger.from_genesis(Genesis(CHAIN, DEVNET, 0, accounts))


def apply_block_us(cached: bool) -> tuple[float, float]:
    """Per-tx cost of finalize_block for BLOCK_TXS transfers, and the root's share."""
    keys = [Keypair.derive(f"bench-{i}") for i in range(SENDERS)]
    led = _ledger(keys)
    txs = tuple(
        seal(Transfer(keys[(i + 1) % SENDERS].public, 1, i // SENDERS, 10), keys[i % SENDERS], CHAIN)
        for i in range(BLOCK_TXS)
    )
    if cached:
        for raw in txs:
            led._decode(raw)  # what check_tx does first: decode + verify, cached

    t = time.perf_counter()
    out = led.finalize_block(BlockContext(1, 1, keys[0].public, txs, (), b"\x00" * 32))
    total = time.perf_counter() - t
    assert out.rejected == ()
    led.state._roots.clear()
    led.state._leaves.clear()
    t = time.perf_counter()
    led.app_hash()
    root = time.perf_counter() - t
    return total / BLOCK_TXS * 1e6, root / total


def storage_ms() -> tuple[float, float]:
    from tests.test_ledger_support import genesis

    with tempfile.TemporaryDirectory() as tmp:
        store = ChainStore.open(Path(tmp) / "chain.db", CHAIN)
        g = genesis(balances=(10**9,) * 6)
        led = Ledger.from_genesis(g)
        n = 40
        t = time.perf_counter()
        grow(store, led, n, txs_per_block=10, snapshot_every=10**9)
        grow_ms = (time.perf_counter() - t) / n * 1e3
        # the append alone: time sqlite on pre-built rows
        blocks = store.blocks(1, n)
        store2 = ChainStore.open(Path(tmp) / "again.db", CHAIN)
        t = time.perf_counter()
        for b in blocks:
            store2.append_block(b.height, b.block, b.commit, b.app_hash)
        append_ms = (time.perf_counter() - t) / n * 1e3
        t = time.perf_counter()
        again = open_ledger(store, g)
        replay_ms = (time.perf_counter() - t) / n * 1e3
        assert again.app_hash() == led.app_hash()
        print(f"  build+apply+store per block: {grow_ms:.2f} ms")
        return append_ms, replay_ms


def main() -> None:
    raw = min(raw_verify_us() for _ in range(REPS))
    full, root_share = min(apply_block_us(False) for _ in range(REPS))
    cached, _ = min(apply_block_us(True) for _ in range(REPS))
    append_ms, replay_ms = storage_ms()
    print(f"raw ed25519 verify: {raw:.1f} us")
    print(f"finalize_block, {BLOCK_TXS} transfers: {full:.1f} us/tx = {full / raw:.2f}x raw verify")
    print(
        f"  with signatures verified in check_tx (cache): {cached:.1f} us/tx = {cached / raw:.2f}x raw verify"
    )
    print(f"  state root share of the block: {root_share:.1%}")
    print(f"sqlite append (one fsync'd transaction per block): {append_ms:.2f} ms/block")
    print(f"verified restart replay (3 validators, 10 txs/block): {replay_ms:.2f} ms/block")
    print(
        json.dumps(
            {
                "apply_per_tx_vs_raw_verify": round(full / raw, 3),
                "apply_cached_per_tx_vs_raw_verify": round(cached / raw, 3),
                "root_share_of_block": round(root_share, 3),
                "store_append_ms_per_block": round(append_ms, 3),
                "replay_ms_per_block": round(replay_ms, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
