"""Block sync: the recent committed blocks a node keeps to serve peers that fell behind.

A peer asks for blocks from a height (BlockRequest); the answer carries each block with
its commit certificate, and the requester verifies every certificate against the
validator set it derived itself before applying anything, so a lying peer can delay a
node but never make it commit a block the validators did not.
"""

from __future__ import annotations

from collections import OrderedDict

from .limits import MAX_SYNC_BATCH, MAX_SYNC_RESPONSE_BYTES
from .messages import CommittedBlock


class BlockStore:
    """The last `capacity` committed blocks by height (older ones live only on disk)."""

    def __init__(self, capacity: int) -> None:
        self._blocks: OrderedDict[int, tuple[CommittedBlock, int]] = OrderedDict()
        self._capacity = capacity

    def add(self, cb: CommittedBlock, size: int) -> None:
        """`size` is the encoded size (the caller encoded it to persist it anyway)."""
        self._blocks[cb.block.height] = (cb, size)
        while len(self._blocks) > self._capacity:
            self._blocks.popitem(last=False)

    def get(self, height: int) -> CommittedBlock | None:
        item = self._blocks.get(height)
        return None if item is None else item[0]

    def range(self, from_height: int, count: int) -> list[CommittedBlock]:
        """Consecutive blocks from `from_height`, at most `count` and the response size cap."""
        out: list[CommittedBlock] = []
        size = 0
        for h in range(from_height, from_height + min(count, MAX_SYNC_BATCH)):
            item = self._blocks.get(h)
            if item is None or (out and size + item[1] > MAX_SYNC_RESPONSE_BYTES):
                break
            out.append(item[0])
            size += item[1]
        return out
