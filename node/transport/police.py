"""Who is misbehaving, and keeping them out.

GossipSub scoring sees only gossip. Bad blobs, bad direct messages and over-budget or
useless (but validly signed) messages are seen by our own code, so they are charged
here as an application-specific penalty that feeds the score's P6 term; one number
then decides. A peer whose score falls below the ban threshold is disconnected and
refused (gossip, blobs, direct messages, redials) until its ban expires.

Two rules keep honest nodes out of it:

* A node never charges or bans itself. Its own id reaches the police only through a bug
  elsewhere (a fetch "from ourselves" that failed), and a self-ban silently drops
  everything the node gossips: two validators doing that at once halted a 4-node chain.
* Penalties decay (half-life `decay_half_life_s`). A lagging or restarted honest peer
  sends a trickle of stale messages and the odd failed transfer; without decay those
  add up over hours to a ban, while a flood still crosses the threshold in seconds.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

from libp2p.peer.id import ID

#: Penalty units (the score falls by one per unit) for a blob the peer provably lied
#: about (wrong hash, more than announced, undecodable header, closed mid-body).
PENALTY_BAD_BLOB = 30.0
#: ... for a direct message that does not decode or is not signed by the connected peer.
PENALTY_BAD_DIRECT = 20.0
#: ... for a pubsub RPC over the size cap (a stock library sends none: it refuses to).
PENALTY_OVERSIZED_RPC = 30.0
#: ... for one message over its per-type budget, or one useless message past the
#: sender's free allowance (node/transport/budgets.py).
PENALTY_OVER_BUDGET = 4.0
PENALTY_JUNK = 2.0
#: Peers whose penalties are remembered (oldest forgotten first).
MAX_TRACKED_PEERS = 4096
#: Penalties halve every this many seconds.
DECAY_HALF_LIFE_S = 60.0


class PeerPolice:
    def __init__(
        self,
        ban_threshold: float,
        ban_s: float,
        clock: Callable[[], float],
        self_id: ID | None = None,
        decay_half_life_s: float = DECAY_HALF_LIFE_S,
    ) -> None:
        self._ban_threshold = ban_threshold
        self._ban_s = ban_s
        self._clock = clock
        self._self = self_id
        self._decay = math.log(2) / decay_half_life_s if decay_half_life_s > 0 else 0.0
        self._penalty: OrderedDict[ID, tuple[float, float]] = OrderedDict()  # peer -> (units, as of)
        self._banned: dict[ID, float] = {}
        self.suspects: set[ID] = set()
        self.bans_total = 0
        self.charged_total = 0.0
        self._isolated_until = 0.0

    def app_score(self, peer: ID) -> float:
        """The P6 input of the gossip score (negative: accumulated, decayed penalties)."""
        return -self._current(peer)

    def _current(self, peer: ID) -> float:
        item = self._penalty.get(peer)
        if item is None:
            return 0.0
        units, since = item
        return units * math.exp(-self._decay * max(0.0, self._clock() - since))

    def penalise(self, peer: ID, amount: float) -> None:
        if peer == self._self or amount <= 0:
            return  # Rule: never charge ourselves
        self._penalty[peer] = (self._current(peer) + amount, self._clock())
        self._penalty.move_to_end(peer)
        if len(self._penalty) > MAX_TRACKED_PEERS:
            self._penalty.popitem(last=False)
        self.charged_total += amount
        self.suspects.add(peer)

    def note_invalid(self, peer: ID) -> None:
        """Gossip validation failed; the score itself is updated by the router."""
        if peer != self._self:
            self.suspects.add(peer)

    def should_ban(self, score: float) -> bool:
        return score < self._ban_threshold

    def ban(self, peer: ID) -> None:
        if peer == self._self:
            return  # Rule: never ban ourselves
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

    # --- isolation (an operator's or a fault test's "disconnect for N seconds") -----------

    def isolate(self, seconds: float) -> None:
        """Refuse every peer for `seconds` (the transport drops and stops redialing them)."""
        self._isolated_until = self._clock() + seconds

    @property
    def isolated(self) -> bool:
        return self._isolated_until > self._clock()

    def refuses(self, peer: ID) -> bool:
        """Whether to keep `peer` out right now: banned, or this node is isolated."""
        return self.isolated or self.is_banned(peer)
