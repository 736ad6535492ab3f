"""One height of Tendermint: Algorithm 1 of Buchman, Kwon and Milosevic, "The latest
gossip on BFT consensus" (2018), as a pure state machine.

Line numbers in comments refer to the paper's pseudocode. The machine never signs,
sends or sleeps: it returns actions (broadcast a proposal or vote, schedule a timeout,
decide) and the node core turns them into commands. "2f+1" is more than 2/3 of the
voting power and "f+1" more than 1/3, so unequal stakes work unchanged.

Only the first vote of a validator per (round, type) counts towards "any" quorums and
round skips; a second, different one is returned as an equivocation for the evidence
pool. It still counts for its own value when that value is a block this machine knows
(or nil), as in the paper, where "2f+1 PREVOTE for id(v)" counts every sender of such a
message: otherwise one equivocator (or a validator that lost its vote record in a crash)
can hide a proof of lock from half the committee forever (docs/chaos.md, seed 128).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

from .block import Block, block_hash
from .limits import MAX_FUTURE_ROUNDS
from .votes import SignedVote, Vote, VoteType, one_third_plus, quorum


class Step(IntEnum):
    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2


@dataclass(frozen=True, slots=True)
class TimeoutConfig:
    """Timeouts grow linearly with the round (paper: timeouts increase so that after GST
    some round is long enough), capped so that rebroadcasts keep flowing."""

    propose_ms: int = 1000
    prevote_ms: int = 500
    precommit_ms: int = 500
    delta_ms: int = 250
    max_ms: int = 10_000

    def duration(self, step: Step, round_: int) -> int:
        base = {
            Step.PROPOSE: self.propose_ms,
            Step.PREVOTE: self.prevote_ms,
            Step.PRECOMMIT: self.precommit_ms,
        }
        return min(base[step] + round_ * self.delta_ms, self.max_ms)


# --- actions (machine -> node core) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BroadcastProposal:
    round: int
    valid_round: int
    block: Block


@dataclass(frozen=True, slots=True)
class BroadcastVote:
    vote: Vote


@dataclass(frozen=True, slots=True)
class ScheduleTimeout:
    step: Step
    height: int
    round: int
    duration: int


@dataclass(frozen=True, slots=True)
class Decide:
    block: Block
    round: int
    precommits: tuple[SignedVote, ...]


Action = BroadcastProposal | BroadcastVote | ScheduleTimeout | Decide


@dataclass
class _VoteSet:
    """Votes of one (round, type): first vote per validator, power per block hash."""

    by_validator: dict[bytes, SignedVote] = field(default_factory=dict)
    power_for: dict[bytes | None, int] = field(default_factory=dict)
    power: int = 0
    #: Equivocations counted for their own value: validator -> value -> vote. Bounded by
    #: the known blocks of the height (one proposal per round in the window) plus nil.
    conflicting: dict[bytes, dict[bytes | None, SignedVote]] = field(default_factory=dict)

    def holds(self, vote: Vote) -> bool:
        """True when exactly this vote is counted here (first or conflicting)."""
        prior = self.by_validator.get(vote.validator)
        if prior is not None and prior.vote == vote:
            return True
        extra = self.conflicting.get(vote.validator, {}).get(vote.block_hash)
        return extra is not None and extra.vote == vote

    def votes_for(self, h: bytes | None) -> list[SignedVote]:
        """Every counted vote for `h`, one per validator (for a certificate)."""
        out = {v: sv for v, sv in self.by_validator.items() if sv.vote.block_hash == h}
        for v, extra in self.conflicting.items():
            if h in extra:
                out.setdefault(v, extra[h])
        return list(out.values())


@dataclass(frozen=True, slots=True)
class Inputs:
    """What the machine asks of its node: who proposes, what to propose, what is valid."""

    powers: dict[bytes, int]
    proposer: Callable[[int], bytes]
    get_value: Callable[[int], Block]  # a fresh block for the given round
    valid: Callable[[Block, bytes], bool]  # (block, its hash)


class HeightMachine:
    """State of consensus instance `height` at validator `me` (None: a non-voting observer)."""

    def __init__(self, height: int, me: bytes | None, inputs: Inputs, timeouts: TimeoutConfig) -> None:
        self.height = height
        self.me = me
        self.inp = inputs
        self.timeouts = timeouts
        self.total = sum(inputs.powers.values())
        self.round = 0
        self.step = Step.PROPOSE
        self.locked_value: Block | None = None
        self.locked_hash = b""
        self.locked_round = -1
        self.valid_value: Block | None = None
        self.valid_round = -1
        self.decision: Block | None = None
        self.proposals: dict[int, tuple[Block, bytes, int]] = {}  # round -> (block, hash, vr)
        self.blocks: dict[bytes, Block] = {}
        self.votes: dict[tuple[int, VoteType], _VoteSet] = {}
        self._once: set[tuple[str, int]] = set()
        self._out: list[Action] = []

    # --- inputs ---------------------------------------------------------------------------------

    def start(self, round_: int = 0) -> list[Action]:
        self._start_round(round_)
        return self._run()

    def on_proposal(self, sender: bytes, round_: int, valid_round: int, block: Block) -> list[Action]:
        # Only the round's proposer may propose, once per round, for this height.
        if block.height != self.height or round_ in self.proposals or not self._round_in_window(round_):
            return []
        if sender != self.inp.proposer(round_) or valid_round >= round_ or valid_round < -1:
            return []
        h = block_hash(block)
        self.proposals[round_] = (block, h, valid_round)
        self.blocks[h] = block
        return self._run()

    def on_vote(self, signed: SignedVote) -> tuple[list[Action], SignedVote | None]:
        """Count a (verified) vote; returns the actions and, on equivocation, the earlier
        conflicting vote."""
        v = signed.vote
        if (
            v.height != self.height
            or v.validator not in self.inp.powers
            or not self._round_in_window(v.round)
        ):
            return [], None
        vs = self.votes.setdefault((v.round, v.vote_type), _VoteSet())
        if vs.holds(v):  # a duplicate (or rebroadcast) is not an equivocation
            return [], None
        prior = vs.by_validator.get(v.validator)
        if prior is not None:
            return self._count_conflicting(vs, signed), prior
        power = self.inp.powers[v.validator]
        vs.by_validator[v.validator] = signed
        vs.power_for[v.block_hash] = vs.power_for.get(v.block_hash, 0) + power
        vs.power += power
        return self._run(), None

    def _count_conflicting(self, vs: _VoteSet, signed: SignedVote) -> list[Action]:
        """Count a validator's second, different vote for its own value (paper: every
        sender of a PREVOTE/PRECOMMIT for id(v) counts for id(v)), never twice for one
        value, and only for nil or a block we know, so junk hashes cost no memory."""
        v = signed.vote
        if v.block_hash is not None and v.block_hash not in self.blocks:
            return []
        extra = vs.conflicting.setdefault(v.validator, {})
        if v.block_hash in extra:
            return []
        extra[v.block_hash] = signed
        vs.power_for[v.block_hash] = vs.power_for.get(v.block_hash, 0) + self.inp.powers[v.validator]
        return self._run()

    def restore_lock(self, round_: int, h: bytes) -> None:
        """After a restart: we precommitted `h` in `round_`, so we are locked on it (the
        block itself may be gone; the lock only needs its hash to refuse other values)."""
        if round_ > self.locked_round:
            self.locked_round, self.locked_hash = round_, h

    def has_vote(self, signed: SignedVote) -> bool:
        """True when exactly this vote is already counted (a duplicate or a rebroadcast)."""
        v = signed.vote
        vs = self.votes.get((v.round, v.vote_type))
        return vs is not None and vs.holds(v)

    def on_timeout(self, step: Step, height: int, round_: int) -> list[Action]:
        if height != self.height or round_ != self.round or self.decision is not None:
            return []
        if step == Step.PROPOSE and self.step == Step.PROPOSE:  # line 57
            self._vote(VoteType.PREVOTE, None)
            self.step = Step.PREVOTE
        elif step == Step.PREVOTE and self.step == Step.PREVOTE:  # line 61
            self._vote(VoteType.PRECOMMIT, None)
            self.step = Step.PRECOMMIT
        elif step == Step.PRECOMMIT:  # line 65
            self._start_round(self.round + 1)
        return self._run()

    def add_block(self, block: Block) -> list[Action]:
        """A block learned outside a proposal (e.g. from a later certificate)."""
        if block.height == self.height:
            self.blocks[block_hash(block)] = block
        return self._run()

    # --- the algorithm ----------------------------------------------------------------------------

    def _start_round(self, round_: int) -> None:  # line 11
        self.round = round_
        self.step = Step.PROPOSE
        if self.me is not None and self.inp.proposer(round_) == self.me:
            block = self.valid_value if self.valid_value is not None else self.inp.get_value(round_)
            h = block_hash(block)
            self.proposals[round_] = (block, h, self.valid_round)
            self.blocks[h] = block
            self._out.append(BroadcastProposal(round_, self.valid_round, block))
        else:
            self._schedule(Step.PROPOSE)

    def _run(self) -> list[Action]:
        """Apply every enabled upon-rule until none fires (a rule's effect can enable another)."""
        while self.decision is None and self._fire_one():
            pass
        out, self._out = self._out, []
        return out

    def _fire_one(self) -> bool:
        return (
            self._rule_decide()
            or self._rule_round_skip()
            or self._rule_propose_fresh()
            or self._rule_propose_relocked()
            or self._rule_prevote_any()
            or self._rule_prevote_value()
            or self._rule_prevote_nil()
            or self._rule_precommit_any()
        )

    def _rule_decide(self) -> bool:  # line 49: any round with 2f+1 precommits for a known block
        q = quorum(self.total)
        for (r, t), vs in sorted(self.votes.items()):
            if t != VoteType.PRECOMMIT or vs.power < q:
                continue
            for h, p in vs.power_for.items():
                if h is not None and p >= q and h in self.blocks and self._valid(self.blocks[h], h):
                    votes = tuple(vs.votes_for(h))
                    self.decision = self.blocks[h]
                    self._out.append(Decide(self.blocks[h], r, votes))
                    return True
        return False

    def _rule_round_skip(self) -> bool:  # line 55: f+1 of messages from a higher round
        need = one_third_plus(self.total)
        for r in sorted({r for (r, _) in self.votes if r > self.round}):
            senders: set[bytes] = set()
            for t in (VoteType.PREVOTE, VoteType.PRECOMMIT):
                senders.update(self.votes.get((r, t), _VoteSet()).by_validator)
            if sum(self.inp.powers[s] for s in senders) >= need:
                self._start_round(r)
                return True
        return False

    def _rule_propose_fresh(self) -> bool:  # line 22
        prop = self.proposals.get(self.round)
        if self.step != Step.PROPOSE or prop is None or prop[2] != -1:
            return False
        block, h, _ = prop
        ok = self._valid(block, h) and (self.locked_round == -1 or self._is_locked_on(h))
        self._vote(VoteType.PREVOTE, h if ok else None)
        self.step = Step.PREVOTE
        return True

    def _rule_propose_relocked(self) -> bool:  # line 28
        prop = self.proposals.get(self.round)
        if self.step != Step.PROPOSE or prop is None or not 0 <= prop[2] < self.round:
            return False
        block, h, vr = prop
        if self._power(vr, VoteType.PREVOTE, h) < quorum(self.total):
            return False
        ok = self._valid(block, h) and (self.locked_round <= vr or self._is_locked_on(h))
        self._vote(VoteType.PREVOTE, h if ok else None)
        self.step = Step.PREVOTE
        return True

    def _rule_prevote_any(self) -> bool:  # line 34
        vs = self.votes.get((self.round, VoteType.PREVOTE))
        if self.step != Step.PREVOTE or vs is None or vs.power < quorum(self.total):
            return False
        if not self._first_time("prevote-timeout"):
            return False
        self._schedule(Step.PREVOTE)
        return True

    def _rule_prevote_value(self) -> bool:  # line 36
        prop = self.proposals.get(self.round)
        if self.step < Step.PREVOTE or prop is None:
            return False
        block, h, _ = prop
        if self._power(self.round, VoteType.PREVOTE, h) < quorum(self.total) or not self._valid(block, h):
            return False
        if not self._first_time("locked"):
            return False
        if self.step == Step.PREVOTE:
            self.locked_value, self.locked_hash, self.locked_round = block, h, self.round
            self._vote(VoteType.PRECOMMIT, h)
            self.step = Step.PRECOMMIT
        self.valid_value, self.valid_round = block, self.round
        return True

    def _rule_prevote_nil(self) -> bool:  # line 44
        if self.step != Step.PREVOTE or self._power(self.round, VoteType.PREVOTE, None) < quorum(self.total):
            return False
        self._vote(VoteType.PRECOMMIT, None)
        self.step = Step.PRECOMMIT
        return True

    def _rule_precommit_any(self) -> bool:  # line 47
        vs = self.votes.get((self.round, VoteType.PRECOMMIT))
        if vs is None or vs.power < quorum(self.total) or not self._first_time("precommit-timeout"):
            return False
        self._schedule(Step.PRECOMMIT)
        return True

    # --- helpers ---------------------------------------------------------------------------------

    def _vote(self, vote_type: VoteType, h: bytes | None) -> None:
        if self.me is None or self.me not in self.inp.powers:
            return
        self._out.append(BroadcastVote(Vote(self.height, self.round, vote_type, h, self.me)))

    def _schedule(self, step: Step) -> None:
        d = self.timeouts.duration(step, self.round)
        self._out.append(ScheduleTimeout(step, self.height, self.round, d))

    def _power(self, round_: int, vote_type: VoteType, h: bytes | None) -> int:
        vs = self.votes.get((round_, vote_type))
        return 0 if vs is None else vs.power_for.get(h, 0)

    def _is_locked_on(self, h: bytes) -> bool:
        return self.locked_round >= 0 and self.locked_hash == h

    def _valid(self, block: Block, h: bytes) -> bool:
        return self.inp.valid(block, h)

    def _first_time(self, what: str) -> bool:
        key = (what, self.round)
        if key in self._once:
            return False
        self._once.add(key)
        return True

    def _round_in_window(self, round_: int) -> bool:
        return round_ <= self.round + MAX_FUTURE_ROUNDS
