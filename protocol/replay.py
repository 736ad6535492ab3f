"""Replay protection primitives.

Three different notions of "already seen", each bounded:

* transactions carry an account nonce that must be exactly the next one;
* votes are ordered by (height, round, step) and a validator signs each position once;
* gossip deduplicates by message id in a seen cache that forgets by age and by count.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import IntEnum

from protocol.errors import ReplayError


def check_nonce(expected: int, got: int) -> None:
    """A transaction's nonce must equal the account's next nonce: lower is a replay,
    higher is a gap that would let a transaction be held and injected later."""
    if got < expected:
        raise ReplayError(f"nonce {got} already used (next is {expected})")
    if got > expected:
        raise ReplayError(f"nonce {got} is ahead of the account's next nonce {expected}")


class VoteStep(IntEnum):
    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2


@dataclass(frozen=True, order=True, slots=True)
class VotePosition:
    """Where a consensus message sits; positions are totally ordered."""

    height: int
    round: int
    step: VoteStep


class SignedPositions:
    """Remembers the last position a signer used, so a node never signs (or accepts as
    fresh) a position at or before one already used. Bounded to `capacity` signers."""

    def __init__(self, capacity: int = 10_000) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self._last: OrderedDict[bytes, VotePosition] = OrderedDict()
        self._capacity = capacity

    def check_and_record(self, signer: bytes, pos: VotePosition) -> None:
        last = self._last.get(signer)
        if last is not None and pos <= last:
            raise ReplayError(f"position {pos} is not after the last one used {last}")
        self._last[signer] = pos
        self._last.move_to_end(signer)
        if len(self._last) > self._capacity:
            self._last.popitem(last=False)

    def last(self, signer: bytes) -> VotePosition | None:
        return self._last.get(signer)


class SeenCache:
    """Bounded set of recently seen message ids with a time-to-live.

    `now` is passed in (integer milliseconds, or any monotone unit): the core has no
    clock. Oldest entries are evicted first when the cache is full, so a flood of new
    ids costs memory bounded by `capacity`.
    """

    def __init__(self, capacity: int = 65_536, ttl: int = 120_000) -> None:
        if capacity <= 0 or ttl <= 0:
            raise ValueError("capacity and ttl must be positive")
        self._capacity = capacity
        self._ttl = ttl
        self._seen: OrderedDict[bytes, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, msg_id: bytes) -> bool:
        return msg_id in self._seen

    def add(self, msg_id: bytes, now: int) -> bool:
        """Record `msg_id`; return True if it was new (not seen within the ttl)."""
        self._expire(now)
        if msg_id in self._seen:
            return False
        self._seen[msg_id] = now
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True

    def _expire(self, now: int) -> None:
        horizon = now - self._ttl
        while self._seen:
            oldest_id, at = next(iter(self._seen.items()))
            if at > horizon:
                break
            del self._seen[oldest_id]
