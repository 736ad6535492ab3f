"""Every message type has a budget, and useless messages cost whoever sends them.

Three checks run on each message a peer hands us, gossip or direct, cheapest first:

1. **Per forwarder, all types** (`GossipConfig.peer_msgs_per_s`): what one connection
   may push at us in total, checked before anything is decoded.
2. **Per sender and type** (`SENDER_BUDGETS`, after the signature is verified, so
   nobody can spend another sender's budget): about what one honest node emits of
   that type, with room for bursts (a rebroadcast, a batch of transactions).
3. **Relevance** (protocol/consensus/relevance.py): old heights, far rounds, votes
   from non-validators, spent nonces, unfunded senders. These are dropped; each
   forwarder has a free allowance of them (`STALE_ALLOWANCE`, generous: a lagging honest
   node sends a trickle; `JUNK_ALLOWANCE`, small) and pays `PENALTY_JUNK` per message
   past it. Sending the same ignored bytes again counts again (it is not verified again).

A message over budget or irrelevant is *ignored*: not delivered, not forwarded, not
marked invalid (py-libp2p would then charge every honest relay of the same bytes).
The connected peer is charged for breaking the first check always, for the second
only when it is the message's signer (an honest relay is not liable for what others
sign; it forwards no more than its own budgets let through), and for the third past
its allowance. Charges feed PeerPolice, whose ban threshold does the rest.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from libp2p.peer.id import ID

from node.transport.police import PENALTY_JUNK, PENALTY_OVER_BUDGET, PeerPolice
from protocol.consensus.relevance import Relevance
from protocol.envelope import Envelope


class TokenBucket:
    """Per-key token buckets, bounded in the number of keys they remember."""

    def __init__(self, rate: float, burst: float, capacity: int = 4096) -> None:
        self._rate = rate
        self._burst = burst
        self._capacity = capacity
        self._state: OrderedDict[Any, tuple[float, float]] = OrderedDict()

    def take(self, key: Any, now: float) -> bool:
        tokens, last = self._state.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        ok = tokens >= 1.0
        self._state[key] = (tokens - 1.0 if ok else tokens, now)
        self._state.move_to_end(key)
        if len(self._state) > self._capacity:
            self._state.popitem(last=False)
        return ok


@dataclass(frozen=True, slots=True)
class Budget:
    """Sustained messages per second and burst size."""

    rate: float
    burst: float


#: Per sender and type tag. Sized from what an honest node sends: a validator signs a
#: prevote and a precommit per round and rebroadcasts its recent ones every 2 s while
#: stuck (a proof of lock re-sends others' prevotes, which count against *their*
#: budgets); a Status on start and per rebroadcast; a block-sync answer per request.
SENDER_BUDGETS: dict[int, Budget] = {
    0x01: Budget(1.0, 5.0),  # Hello
    0x02: Budget(1.0, 5.0),  # Ping
    0x03: Budget(1.0, 5.0),  # Pong
    0x10: Budget(5.0, 20.0),  # Proposal
    0x11: Budget(20.0, 80.0),  # Vote
    0x13: Budget(2.0, 16.0),  # DuplicateVoteEvidence
    0x14: Budget(5.0, 10.0),  # BlockRequest (direct)
    0x15: Budget(5.0, 10.0),  # BlockResponse (direct)
    0x16: Budget(2.0, 6.0),  # Status
    0x60: Budget(1.0, 4.0),  # CapacityAdvert
}
#: Any other type (transactions, dispute moves): a wallet's burst of txs up to the
#: mempool's nonce window, then a steady trickle.
DEFAULT_BUDGET = Budget(10.0, 64.0)
#: Free useless messages per forwarder before each one costs PENALTY_JUNK. Stale ones
#: (old heights, spent nonces) are what a lagging or restarted honest node sends while it
#: catches up: a few per rebroadcast. Junk (votes by non-validators, far rounds, unfunded
#: senders, unprovable far-ahead claims) an honest node sends only by accident.
STALE_ALLOWANCE = Budget(5.0, 50.0)
JUNK_ALLOWANCE = Budget(1.0, 10.0)
#: Message ids recently ignored (and why): the same bytes again are dropped unverified.
IGNORED_CACHE = 4096


class Verdict(IntEnum):
    ACCEPT = 0
    REJECT = 1  # invalid for everyone: let the library drop it and score the forwarder
    IGNORE = 2  # useless or over budget here: drop quietly, charge as described above


#: A verified envelope's relevance to this node now (the daemon plugs in the core's view).
RelevanceFn = Callable[[Envelope], Relevance]


@dataclass(slots=True)
class BudgetCounters:
    over_forwarder: int = 0
    over_sender: int = 0
    stale: int = 0
    junk: int = 0
    charged: int = 0
    by_tag: dict[int, int] = field(default_factory=dict)


class MessageBudgets:
    def __init__(
        self,
        police: PeerPolice,
        clock: Callable[[], float],
        key_of: Callable[[ID], bytes | None],
        budgets: dict[int, Budget] | None = None,
        default: Budget = DEFAULT_BUDGET,
        stale: Budget = STALE_ALLOWANCE,
        junk: Budget = JUNK_ALLOWANCE,
    ) -> None:
        self._police = police
        self._clock = clock
        self._key_of = key_of
        self._table = SENDER_BUDGETS if budgets is None else budgets
        self._default = default
        self._buckets: dict[int, TokenBucket] = {}
        self._stale = TokenBucket(stale.rate, stale.burst)
        self._junk = TokenBucket(junk.rate, junk.burst)
        self.relevance: RelevanceFn | None = None
        self.counters = BudgetCounters()

    def set_budget(self, tag: int, budget: Budget) -> None:
        """Replace one type's per-sender budget (a benchmark host that floods on purpose)."""
        self._table = {**self._table, tag: budget}
        self._buckets.pop(tag, None)

    def admit(self, forwarder: ID, env: Envelope) -> bool:
        """Checks 2 and 3 for one verified envelope; False means ignore it."""
        return self.judge(forwarder, env) is None

    def judge(self, forwarder: ID, env: Envelope) -> Relevance | None:
        """None to admit; otherwise why to ignore it: RELEVANT means over its signer's
        budget, STALE or JUNK what the relevance check said. Charges as it goes."""
        tag = int(type(env.body).TYPE_TAG)
        if not self._bucket(tag).take(env.sender, self._clock()):
            self.counters.over_sender += 1
            self.counters.by_tag[tag] = self.counters.by_tag.get(tag, 0) + 1
            if self._key_of(forwarder) == env.sender:  # first-hand: the signer itself
                self._charge(forwarder, PENALTY_OVER_BUDGET)
            return Relevance.RELEVANT
        verdict = Relevance.RELEVANT if self.relevance is None else self.relevance(env)
        if verdict is Relevance.RELEVANT:
            return None
        self.useless(forwarder, verdict)
        return verdict

    def useless(self, forwarder: ID, verdict: Relevance) -> None:
        """`forwarder` handed us a useless message (or again one we ignored already):
        free within its allowance for that kind, PENALTY_JUNK past it."""
        if verdict is Relevance.STALE:
            self.counters.stale += 1
            bucket = self._stale
        else:
            self.counters.junk += 1
            bucket = self._junk
        if not bucket.take(forwarder, self._clock()):
            self._charge(forwarder, PENALTY_JUNK)

    def over_forwarder_budget(self, forwarder: ID) -> None:
        self.counters.over_forwarder += 1
        self._charge(forwarder, PENALTY_OVER_BUDGET)

    def _charge(self, peer: ID, amount: float) -> None:
        self.counters.charged += 1
        self._police.penalise(peer, amount)

    def _bucket(self, tag: int) -> TokenBucket:
        bucket = self._buckets.get(tag)
        if bucket is None:
            b = self._table.get(tag, self._default)
            bucket = self._buckets[tag] = TokenBucket(b.rate, b.burst)
        return bucket
