"""Block sync served from the chain database, not only from the core's memory.

The consensus core keeps the last `block_cache` committed blocks in memory to answer
peers that fell behind (protocol.consensus.sync.BlockStore). A node that was down for
longer than that would find nobody able to serve the blocks it missed. Every committed
block is also persisted (the core's `Persist(PERSIST_BLOCK, height)`), so the daemon
gives the core this store instead: recent blocks from memory, older ones read back from
sqlite. Answers stay bounded by the core's limits (MAX_SYNC_BATCH blocks and
MAX_SYNC_RESPONSE_BYTES per answer, and the core's per-peer rate limit), so serving
from disk costs at most one batch of reads per request.
"""

from __future__ import annotations

from collections.abc import Callable

from protocol.consensus.limits import MAX_SYNC_BATCH, MAX_SYNC_RESPONSE_BYTES
from protocol.consensus.messages import CommittedBlock
from protocol.consensus.node import PERSIST_BLOCK
from protocol.consensus.sync import BlockStore
from protocol.errors import PolnetError
from protocol.records import decode_record

#: Reads a persisted record: (kind, key) -> bytes or None.
Loader = Callable[[str, bytes], bytes | None]


class DiskBackedBlocks(BlockStore):
    def __init__(self, capacity: int, load: Loader) -> None:
        super().__init__(capacity)
        self._load = load

    def _item(self, height: int) -> tuple[CommittedBlock, int] | None:
        cached = self._blocks.get(height)
        if cached is not None:
            return cached
        if height < 1:
            return None
        raw = self._load(PERSIST_BLOCK, height.to_bytes(8, "big"))
        if raw is None:
            return None
        try:
            cb = decode_record(CommittedBlock, raw)
        except PolnetError:
            return None  # a damaged row is not served (restart would refuse it loudly)
        return (cb, len(raw)) if cb.block.height == height else None

    def get(self, height: int) -> CommittedBlock | None:
        item = self._item(height)
        return None if item is None else item[0]

    def range(self, from_height: int, count: int) -> list[CommittedBlock]:
        out: list[CommittedBlock] = []
        size = 0
        for h in range(from_height, from_height + min(count, MAX_SYNC_BATCH)):
            item = self._item(h)
            if item is None or (out and size + item[1] > MAX_SYNC_RESPONSE_BYTES):
                break
            out.append(item[0])
            size += item[1]
        return out
