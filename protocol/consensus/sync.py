"""Block sync: the recent committed blocks a node keeps to serve peers that fell behind,
the bounded buffer of consensus messages that arrive before a node can count them, and
the check that makes a node believe a peer is ahead of it.

A peer asks for blocks from a height (BlockRequest); the answer carries each block with
its commit certificate, and the requester verifies every certificate against the
validator set it derived itself before applying anything, so a lying peer can delay a
node but never make it commit a block the validators did not.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from .limits import (
    MAX_FUTURE_BYTES,
    MAX_FUTURE_PER_SENDER,
    MAX_FUTURE_SENDER_BYTES,
    MAX_SYNC_BATCH,
    MAX_SYNC_RESPONSE_BYTES,
)
from .messages import CommittedBlock
from .votes import CommitCertificate, SignedVote, Verifier, certificate_votes, one_third_plus, verify_vote


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


# --- messages for heights (or rounds) this node has not reached ---------------------------------

#: (height, round, kind, block hash) of one buffered message; kind 0 = proposal, else the
#: vote type + 1. The hash keeps an equivocator's second vote apart (it is evidence).
FutureKey = tuple[int, int, int, bytes]


class FutureBuffer:
    """Consensus messages that arrived before this node could count them, bounded per
    sender so that one peer's flood evicts only its own messages.

    The node decides what is admissible (heights within MAX_FUTURE_HEIGHTS, senders in
    its validator set); the buffer enforces the counts and bytes: at most `per_sender`
    messages and `sender_bytes` bytes per sender (its oldest go first), at most
    `total_bytes` overall (then new messages are refused), one message per key.
    """

    def __init__(
        self,
        per_sender: int = MAX_FUTURE_PER_SENDER,
        sender_bytes: int = MAX_FUTURE_SENDER_BYTES,
        total_bytes: int = MAX_FUTURE_BYTES,
    ) -> None:
        self._per_sender = per_sender
        self._sender_bytes = sender_bytes
        self._total_bytes = total_bytes
        self._by_sender: dict[bytes, OrderedDict[FutureKey, tuple[int, Any, bytes]]] = {}
        self._bytes: dict[bytes, int] = {}
        self._total = 0
        self._seq = 0

    def __len__(self) -> int:
        return sum(len(q) for q in self._by_sender.values())

    @property
    def size(self) -> int:
        """Bytes buffered in all."""
        return self._total

    def add(self, sender: bytes, key: FutureKey, body: Any, raw: bytes) -> bool:
        """Buffer one message; False when it is a duplicate or there is no room."""
        size = max(len(raw), 1)
        queue = self._by_sender.setdefault(sender, OrderedDict())
        if key in queue or size > self._sender_bytes:
            return False
        while queue and (
            len(queue) >= self._per_sender or self._bytes.get(sender, 0) + size > self._sender_bytes
        ):
            self._drop(sender, next(iter(queue)))
        if self._total + size > self._total_bytes:
            if not queue:
                del self._by_sender[sender]
            return False
        self._seq += 1
        queue[key] = (self._seq, body, raw)
        self._bytes[sender] = self._bytes.get(sender, 0) + size
        self._total += size
        return True

    def take(self, height: int, max_round: int | None = None) -> list[tuple[bytes, Any, bytes]]:
        """Remove and return the messages for `height` (up to `max_round`), in arrival
        order; messages for lower heights are dropped, later ones stay."""
        out: list[tuple[int, bytes, Any, bytes]] = []
        for sender in list(self._by_sender):
            for key in [k for k in self._by_sender[sender] if k[0] < height]:
                self._drop(sender, key)
            for key in [k for k in self._by_sender.get(sender, {}) if k[0] == height]:
                if max_round is not None and key[1] > max_round:
                    continue
                seq, body, raw = self._by_sender[sender][key]
                out.append((seq, sender, body, raw))
                self._drop(sender, key)
        out.sort(key=lambda item: item[0])
        return [(sender, body, raw) for _, sender, body, raw in out]

    def _drop(self, sender: bytes, key: FutureKey) -> None:
        queue = self._by_sender[sender]
        _, _, raw = queue.pop(key)
        size = max(len(raw), 1)
        self._bytes[sender] -= size
        self._total -= size
        if not queue:
            del self._by_sender[sender]
            del self._bytes[sender]


# --- believing that a peer is ahead -------------------------------------------------------------


def vouched_by(
    chain_id: str, cert: CommitCertificate, powers: Mapping[bytes, int], verifier: Verifier
) -> bool:
    """True when validators holding more than 1/3 of `powers` signed `cert`: at least one
    honest member of our validator set committed that height (the trust level of
    Tendermint's light client for skipping verification). Signers outside our set are
    ignored rather than refused: the set may have changed at an epoch since our height.
    Only the counted signatures are verified, cheapest check first."""
    total = sum(powers.values())
    counted: list[SignedVote] = []
    seen: set[bytes] = set()
    power = 0
    for signed in certificate_votes(cert):
        who = signed.vote.validator
        if who in seen or who not in powers:
            continue
        seen.add(who)
        counted.append(signed)
        power += powers[who]
    if power < one_third_plus(total):
        return False
    return all(verify_vote(chain_id, signed, verifier) for signed in counted)
