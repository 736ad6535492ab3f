"""The coalition: what a run's Byzantine nodes share, and the base of every strategy.

A Byzantine node here is an honest `ConsensusNode` (alone, or inside a `MarketNode`)
whose commands a strategy rewrites: where its proposals and votes go, when, and which
conflicting or forged messages it adds. Its keys are its own, so anything it sends is
correctly signed; what it cannot do is sign for an honest validator. The members of one
run act together (Tendermint's fault model: up to f colluding validators), sharing one
`Coalition`: who the honest validators are, and the per-(height, round) plan (the split
halves, the forged block the coalition votes for).

Everything is deterministic: choices rotate by a hash of (seed, height, round), never
by the wall clock or a shared RNG, so a run stays a pure function of its seed and config.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeGuard

from netsim.config import ByzantineConfig, SimConfig
from protocol.commands import TOPIC_CONSENSUS, Command, Event, Publish, SendTo, SetTimer, TimerFired
from protocol.consensus.node import ConsensusNode
from protocol.consensus.votes import Vote, one_third_plus, quorum
from protocol.encoding import sha256
from protocol.envelope import seal
from protocol.identity import Keypair

#: Timer keys a strategy sets for itself start with this (the inner core never sees them).
TIMER_PREFIX = "byzantine/"
#: How deep `consensus_of` looks through wrappers for the ConsensusNode.
MAX_WRAP_DEPTH = 8


def consensus_of(core: Any) -> ConsensusNode | None:
    """The ConsensusNode inside a core: the core itself, its `.consensus` (MarketNode), or
    that of the core it wraps (`.inner`, the scenarios' observing wrappers)."""
    for _ in range(MAX_WRAP_DEPTH):
        if isinstance(core, ConsensusNode):
            return core
        nxt = getattr(core, "consensus", None)
        core = nxt if nxt is not None else getattr(core, "inner", None)
        if core is None:
            return None
    return None


class Coalition:
    """The Byzantine nodes of one run and the plan they share."""

    def __init__(self, config: SimConfig, keys: Sequence[Keypair]) -> None:
        assert config.byzantine is not None
        self.cfg: ByzantineConfig = config.byzantine
        self.seed = config.seed
        self.chain_id = config.chain_id
        self.keys = list(keys)
        self.index_of = {k.public: i for i, k in enumerate(keys)}
        self.members = frozenset(self.cfg.nodes)
        self.member_keys = frozenset(keys[i].public for i in self.cfg.nodes)
        #: (height, round) -> (hash sent to half A, hash sent to half B): equivocation.
        self.splits: dict[tuple[int, int], tuple[bytes, bytes]] = {}
        #: (height, round) -> the forged block's hash the coalition votes for: invalid_blocks.
        self.forged: dict[tuple[int, int], bytes] = {}
        #: Hashes of every invalid block the coalition forged: none may ever be committed
        #: (an audit set for checkers; it grows by one per forged proposal of the run).
        self.invalid: set[bytes] = set()
        self._victims: tuple[bytes, ...] | None = None
        #: Honest validators seen precommitting a block at `_locked_height` -> latest round.
        self._locked_height = -1
        self._locked: dict[bytes, int] = {}
        self._targets: dict[tuple[int, int], list[bytes]] = {}

    def plan(self, table: dict[tuple[int, int], Any], key: tuple[int, int], value: Any) -> Any:
        """Record a (height, round) decision once (the first member's wins) and forget
        those of heights well below it, so the plan stays bounded."""
        if key not in table:
            for old in [k for k in table if k[0] + 2 < key[0]]:
                del table[old]
            table[key] = value
        return table[key]

    def wrap(self, index: int, core: Any, key: Keypair) -> Any:
        """The core a node runs: a strategy around `core` for members, `core` otherwise."""
        if index not in self.members:
            return core
        from netsim.byzantine.strategies import STRATEGIES

        return STRATEGIES[self.cfg.strategy](index, core, key, self)

    # --- who is who ---------------------------------------------------------------------------

    def honest_validators(self, node: ConsensusNode) -> list[bytes]:
        """The validators of the node's current height outside the coalition, in node order."""
        members = [k for k in node.vset.powers() if k not in self.member_keys]
        return sorted(members, key=lambda k: self.index_of.get(k, len(self.keys)))

    def coalition_peers(self, me: bytes) -> list[bytes]:
        return sorted((k for k in self.member_keys if k != me), key=self.index_of.__getitem__)

    def everyone_but(self, me: bytes) -> list[bytes]:
        return [k.public for k in self.keys if k.public != me]

    def rotation(self, items: Sequence[bytes], height: int, round_: int, salt: str) -> list[bytes]:
        """`items` rotated by a hash of (seed, height, round): every member agrees on it."""
        if not items:
            return []
        digest = sha256(f"netsim/byzantine/{salt}\x00{self.seed}\x00{height}\x00{round_}".encode())
        start = int.from_bytes(digest[:8], "big") % len(items)
        return [*items[start:], *items[:start]]

    def saw_precommit(self, vote: Vote) -> None:
        """A member saw an honest validator precommit a block: it is locked on it now."""
        if vote.block_hash is not None and vote.validator not in self.member_keys:
            if vote.height != self._locked_height:
                self._locked_height, self._locked = vote.height, {}
            self._locked[vote.validator] = max(vote.round, self._locked.get(vote.validator, -1))

    def lock_targets(self, node: ConsensusNode, height: int, round_: int) -> list[bytes]:
        """The fewest honest validators whose power with the coalition's makes a quorum:
        f+1 of them with equal stakes, the ones an amnesiac coalition can lock. Those it
        has not seen precommit a block at this height come first (a locked validator
        would prevote nil on a fresh block), in an order rotating per round."""
        chosen = self._targets.get((height, round_))
        if chosen is not None:  # fixed once chosen: rebroadcasts go to the same ones
            return chosen
        powers = node.vset.powers()
        total = sum(powers.values())
        have = sum(p for k, p in powers.items() if k in self.member_keys)
        locked = self._locked if self._locked_height == height else {}
        order = self.rotation(self.honest_validators(node), height, round_, "lock")
        order.sort(key=lambda k: k in locked)  # stable: unlocked first, rotation kept
        out: list[bytes] = []
        for k in order:
            if have >= quorum(total):
                break
            out.append(k)
            have += powers[k]
        return list(self.plan(self._targets, (height, round_), out))

    def early_group(self, node: ConsensusNode, height: int, round_: int) -> list[bytes]:
        """As many honest validators (rotating) as the coalition has power: f of them."""
        powers = node.vset.powers()
        budget = sum(p for k, p in powers.items() if k in self.member_keys)
        out: list[bytes] = []
        for k in self.rotation(self.honest_validators(node), height, round_, "early"):
            if budget <= 0:
                break
            out.append(k)
            budget -= powers[k]
        return out

    def halves(self, node: ConsensusNode, height: int) -> tuple[list[bytes], list[bytes]]:
        """The honest validators split in two (rotating per height): equivocation's targets."""
        honest = self.rotation(self.honest_validators(node), height, 0, "halves")
        return honest[: len(honest) // 2], honest[len(honest) // 2 :]

    def victims(self, node: ConsensusNode) -> tuple[bytes, ...]:
        """Starvation's victims: the configured nodes, or f honest validators by the seed."""
        if self._victims is None:
            if self.cfg.victims:
                self._victims = tuple(self.keys[i].public for i in self.cfg.victims)
            else:
                powers = node.vset.powers()
                f_power = one_third_plus(sum(powers.values())) - 1
                chosen: list[bytes] = []
                for k in self.rotation(self.honest_validators(node), 0, 0, "victims"):
                    if sum(powers[c] for c in chosen) + powers[k] > f_power:
                        break
                    chosen.append(k)
                self._victims = tuple(chosen)
        return self._victims


def is_consensus(cmd: Command) -> TypeGuard[Publish | SendTo]:
    """A message on the consensus topic, or sent directly (consensus answers and moves)."""
    return (isinstance(cmd, Publish) and cmd.topic == TOPIC_CONSENSUS) or isinstance(cmd, SendTo)


def is_message(cmd: Command) -> TypeGuard[Publish | SendTo]:
    return isinstance(cmd, (Publish, SendTo))


class ByzantineCore:
    """The base of every strategy: runs the honest core and rewrites its commands.

    Subclasses override `before` (tamper with the honest core's state before an event),
    `rewrite` (one command in, any commands out), `on_timer` (their own timers, keys
    under TIMER_PREFIX) and `after` (commands of their own after each event)."""

    def __init__(self, index: int, inner: Any, key: Keypair, coalition: Coalition) -> None:
        self.index = index
        self.inner = inner
        self.key = key
        self.me = key.public
        self.co = coalition
        node = consensus_of(inner)
        if node is None:
            raise TypeError(f"node {index}: a Byzantine strategy needs a core with a ConsensusNode")
        self.node: ConsensusNode = node
        self.now = 0
        self._timers = 0

    def handle(self, now: int, event: Event) -> list[Command]:
        self.now = now
        if isinstance(event, TimerFired) and event.key.startswith(TIMER_PREFIX):
            return self.on_timer(event.key)
        self.before(event)
        out: list[Command] = []
        for cmd in self.inner.handle(now, event):
            out += self.rewrite(cmd)
        return out + self.after(event)

    # --- hooks ------------------------------------------------------------------------------

    def before(self, event: Event) -> None:
        return None

    def rewrite(self, cmd: Command) -> list[Command]:
        return [cmd]

    def on_timer(self, key: str) -> list[Command]:
        return []

    def after(self, event: Event) -> list[Command]:
        return []

    # --- helpers ----------------------------------------------------------------------------

    def seal(self, msg: Any) -> bytes:
        """The envelope this node's key makes for `msg` (deterministic: same msg, same bytes)."""
        return seal(msg, self.key, self.co.chain_id)

    def timer(self, at: int) -> tuple[str, Command]:
        self._timers += 1
        key = f"{TIMER_PREFIX}{self._timers}"
        return key, SetTimer(at, key)

    @staticmethod
    def send(msg: Any, peers: Sequence[bytes]) -> list[Command]:
        return [SendTo(p, msg) for p in peers]
