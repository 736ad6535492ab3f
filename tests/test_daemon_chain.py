"""The daemon's chain: a one-node market chain commits blocks, restarts by replay to the
same state, and serves block sync for heights its memory no longer holds."""

from __future__ import annotations

import json
from pathlib import Path

from node.daemon.blockstore import DiskBackedBlocks
from node.daemon.chain import Chain, genesis_bytes, read_genesis
from protocol.commands import Persist, SetTimer, Tick, TimerFired
from protocol.consensus.limits import MAX_SYNC_BATCH
from protocol.identity import Keypair

KEY = Keypair.derive("daemon-chain-test")


def _open(tmp: Path) -> Chain:
    path = tmp / "genesis.json"
    if not path.exists():
        path.write_bytes(genesis_bytes("polnet-chain-test", [KEY]))
    return Chain.open(read_genesis(path), KEY, tmp / "chain.db", 0)


def _drive(chain: Chain, blocks: int) -> None:
    """Run the core as the driver would: persist inline, fire timers in time order."""
    now = 1_000
    timers: dict[str, int] = {}
    events: list[object] = [Tick()]
    for _ in range(10_000):
        if chain.height >= blocks:
            return
        if not events:
            key, at = min(timers.items(), key=lambda kv: kv[1])
            del timers[key]
            now = max(now, at)
            events.append(TimerFired(key))
        for cmd in chain.core.handle(now, events.pop(0)):  # type: ignore[arg-type]
            if isinstance(cmd, Persist):
                chain.store.persist(cmd.kind, cmd.key, cmd.value)
            elif isinstance(cmd, SetTimer):
                timers[cmd.key] = cmd.at
    raise AssertionError(f"stuck at height {chain.height}")


def test_a_restarted_chain_replays_to_the_same_state_root(tmp_path: Path) -> None:
    chain = _open(tmp_path)
    _drive(chain, 6)
    height, root = chain.height, chain.ledger.app_hash()
    chain.store.close()
    again = _open(tmp_path)
    assert (again.height, again.ledger.app_hash()) == (height, root)
    again.store.close()


def test_block_sync_serves_heights_evicted_from_memory_from_sqlite(tmp_path: Path) -> None:
    chain = _open(tmp_path)
    _drive(chain, 6)
    small = DiskBackedBlocks(2, chain.store.load)  # a memory cache that holds nothing old
    served = small.range(1, 10)
    assert [cb.block.height for cb in served] == [1, 2, 3, 4, 5, 6][:MAX_SYNC_BATCH]
    assert small.get(3) == chain.node.store.get(3)
    assert small.get(99) is None
    assert json.dumps(chain.block(1))  # the admin page for the first block still works
    chain.store.close()
