"""Who is misbehaving, and keeping them out.

GossipSub scoring sees only gossip. Bad blobs and bad direct messages are seen by our
own code, so they are charged here as an application-specific penalty that feeds the
score's P6 term; one number then decides. A peer whose score falls below the ban
threshold is disconnected and refused (gossip, blobs, direct messages, redials) until
its ban expires.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from libp2p.peer.id import ID

#: Penalty units (the score falls by one per unit) for a bad blob or direct message.
PENALTY_BAD_BLOB = 30.0
PENALTY_BAD_DIRECT = 20.0
#: Peers whose penalties are remembered (oldest forgotten first).
MAX_TRACKED_PEERS = 4096


class PeerPolice:
    def __init__(self, ban_threshold: float, ban_s: float, clock: Callable[[], float]) -> None:
        self._ban_threshold = ban_threshold
        self._ban_s = ban_s
        self._clock = clock
        self._penalty: OrderedDict[ID, float] = OrderedDict()
        self._banned: dict[ID, float] = {}
        self.suspects: set[ID] = set()
        self.bans_total = 0

    def app_score(self, peer: ID) -> float:
        """The P6 input of the gossip score (negative: accumulated penalties)."""
        return -self._penalty.get(peer, 0.0)

    def penalise(self, peer: ID, amount: float) -> None:
        self._penalty[peer] = self._penalty.get(peer, 0.0) + amount
        self._penalty.move_to_end(peer)
        if len(self._penalty) > MAX_TRACKED_PEERS:
            self._penalty.popitem(last=False)
        self.suspects.add(peer)

    def note_invalid(self, peer: ID) -> None:
        """Gossip validation failed; the score itself is updated by the router."""
        self.suspects.add(peer)

    def should_ban(self, score: float) -> bool:
        return score < self._ban_threshold

    def ban(self, peer: ID) -> None:
        self._banned[peer] = self._clock() + self._ban_s
        self.bans_total += 1

    def is_banned(self, peer: ID) -> bool:
        until = self._banned.get(peer)
        return until is not None and until > self._clock()

    def expire(self) -> list[ID]:
        """Bans that ran out; their penalties are forgiven so they start again at zero."""
        now = self._clock()
        done = [p for p, until in self._banned.items() if until <= now]
        for peer in done:
            del self._banned[peer]
            self._penalty.pop(peer, None)
        return done

    def banned(self) -> list[ID]:
        return list(self._banned)
