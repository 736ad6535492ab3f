"""Bounded per-peer send queues: the driver hands a direct message over and moves on.

Why: the core's command loop used to await each `SendTo` inline (10 s timeout), so one
peer that stopped reading stalled the whole node; eight validly signed messages in
40 s halted a 4-node chain for 29 s. Here every peer gets its own small queue and its
own task, each send has a deadline, and the caller never waits:

* `put` is synchronous and O(1). A full queue drops its *oldest* message (the newest
  sync answer or vote is the one worth sending) and counts the drop.
* At most `max_peers` peers hold a queue at once; a message for one more is dropped.
* A peer's task exits when its queue runs dry, so idle peers cost nothing.

Ordering per peer is kept (one task sends them in turn); across peers there is none,
which is what a network gives anyway.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from protocol.errors import PolnetError

log = logging.getLogger("polnet.driver")

#: Messages waiting per peer (a block-sync answer or a round's votes at a time).
PEER_QUEUE = 16
#: Peers with a queue at once (validators plus sync peers; more is a flood).
MAX_QUEUED_PEERS = 256
#: One send may take this long (open a stream, write up to ~1 MiB, close).
SEND_DEADLINE_S = 5.0

Send = Callable[[bytes, Any], Awaitable[None]]


@dataclass(slots=True)
class SendCounters:
    sent: int = 0
    failed: int = 0
    timed_out: int = 0
    dropped_full: int = 0
    dropped_peers: int = 0


class PeerQueues:
    def __init__(
        self,
        send: Send,
        nursery: trio.Nursery,
        per_peer: int = PEER_QUEUE,
        max_peers: int = MAX_QUEUED_PEERS,
        deadline_s: float = SEND_DEADLINE_S,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self._send = send
        self._nursery = nursery
        self._per_peer = per_peer
        self._max_peers = max_peers
        self._deadline_s = deadline_s
        self._queues: dict[bytes, deque[Any]] = {}
        self.counters = SendCounters()
        self._report = report or (lambda outcome: None)

    def put(self, peer: bytes, msg: Any) -> bool:
        """Queue `msg` for `peer`; False if it was dropped (too many peers queued)."""
        queue = self._queues.get(peer)
        if queue is None:
            if len(self._queues) >= self._max_peers:
                self.counters.dropped_peers += 1
                self._report("dropped")
                return False
            queue = self._queues[peer] = deque()
            self._nursery.start_soon(self._drain, peer, queue)
        if len(queue) >= self._per_peer:
            queue.popleft()
            self.counters.dropped_full += 1
            self._report("dropped")
        queue.append(msg)
        return True

    def pending(self, peer: bytes) -> int:
        queue = self._queues.get(peer)
        return 0 if queue is None else len(queue)

    @property
    def peers(self) -> int:
        return len(self._queues)

    async def _drain(self, peer: bytes, queue: deque[Any]) -> None:
        try:
            while queue:
                msg = queue.popleft()
                with trio.move_on_after(self._deadline_s) as scope:
                    try:
                        await self._send(peer, msg)
                        self.counters.sent += 1
                        self._report("sent")
                    except PolnetError as exc:
                        self.counters.failed += 1
                        self._report("failed")
                        log.info("direct send failed", extra={"peer": peer.hex()[:16], "error": str(exc)})
                if scope.cancelled_caught:
                    self.counters.timed_out += 1
                    self._report("timed_out")
                    log.info("direct send timed out", extra={"peer": peer.hex()[:16]})
        finally:
            self._queues.pop(peer, None)
