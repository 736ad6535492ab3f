"""Publish backpressure that waits for draining peers only.

py-libp2p (like go-libp2p) gives each peer an outbound queue of 32 RPCs and silently
drops whatever does not fit, so a burst of publishes would mostly vanish: `publish`
waits while some peer's queue is above a high-water mark. But a peer that stopped
reading never drains, and waiting on it (up to `publish_backpressure_s` per publish)
slowed every vote the node sent: one unresponsive peer could halve the block rate.

So a queue counts only while it is draining: one that has stayed at or above the mark
without shrinking for `STALL_S` belongs to a stalled peer, which gets the drops (gossip
repairs what an honest, briefly slow peer missed, through IHAVE/IWANT) instead of our
time. It counts again as soon as it shrinks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sized
from typing import Any

import trio

#: Publishers wait while a draining peer's outbound queue (32 RPCs) holds this many.
OUTBOUND_HIGH_WATER = 16
POLL_S = 0.002
#: A full queue that has not shrunk for this long is a stalled peer's.
STALL_S = 0.25


class DrainWatch:
    def __init__(self, queues: Callable[[], Mapping[Any, Sized]], clock: Callable[[], float]) -> None:
        self._queues = queues
        self._clock = clock
        # peer -> (queue length, last time it moved, last time we looked)
        self._seen: dict[Any, tuple[int, float, float]] = {}
        self.stalled = 0

    def congested(self) -> bool:
        """Whether some peer that is still draining holds a full-ish queue."""
        now = self._clock()
        queues = dict(self._queues())
        busy = False
        stalled = 0
        for peer, q in queues.items():
            n = len(q)
            last_n, moved, looked = self._seen.get(peer, (n, now, now))
            # Shrunk, below the mark, or not watched lately (no evidence either way).
            if n < OUTBOUND_HIGH_WATER or n < last_n or now - looked > STALL_S:
                moved = now
            self._seen[peer] = (n, moved, now)
            if n >= OUTBOUND_HIGH_WATER:
                if now - moved < STALL_S:
                    busy = True
                else:
                    stalled += 1
        for peer in [p for p in self._seen if p not in queues]:
            del self._seen[peer]
        self.stalled = stalled
        return busy

    async def wait(self, timeout_s: float) -> bool:
        """Wait until no draining peer is congested; False if `timeout_s` ran out first."""
        deadline = trio.current_time() + timeout_s
        while self.congested():
            if trio.current_time() >= deadline:
                return False
            await trio.sleep(POLL_S)
        return True
