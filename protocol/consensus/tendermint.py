"""One height of Tendermint: Algorithm 1 of Buchman, Kwon and Milosevic, "The latest
gossip on BFT consensus" (2018), as a pure state machine.

Line numbers in comments refer to the paper's pseudocode. The machine never signs,
sends or sleeps: it returns actions (broadcast a proposal or vote, schedule a timeout,
decide) and the node core turns them into commands. "2f+1" is more than 2/3 of the
voting power and "f+1" more than 1/3, so unequal stakes work unchanged.

Beyond the paper (issue 17; each rule's docstring has its safety argument): validValue
is also taken from an earlier round's proof of lock (`_rule_valid_any_round`, line 36),
and the prevote and precommit timeouts are cut short once no value can reach 2f+1
(`_rule_prevote_hopeless`, line 61; `_rule_precommit_hopeless`, line 65). A timeout that
fired before what it waited for arrived is reported (`TimedOutTooSoon`) for the Pacer.

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
from typing import Protocol

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
    some round is long enough), capped so that rebroadcasts keep flowing. A node adds
    what it learned on top (protocol/consensus/timeouts.py, the Pacer): longer where a
    timeout proved too short, back to these as heights succeed."""

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


class Timeouts(Protocol):
    """What the machine asks of its timeouts (a TimeoutConfig, or the node's Pacer)."""

    def duration(self, step: Step, round_: int) -> int: ...


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


@dataclass(frozen=True, slots=True)
class TimedOutTooSoon:
    """Our timeout of `step` fired in `round`, and what it waited for came after all:
    the round's proposal (propose), a proof of lock for it (prevote), or a precommit
    quorum for a block (precommit). The node's Pacer lengthens that timeout."""

    step: Step
    round: int


Action = BroadcastProposal | BroadcastVote | ScheduleTimeout | Decide | TimedOutTooSoon


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

    def __init__(self, height: int, me: bytes | None, inputs: Inputs, timeouts: Timeouts) -> None:
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
        #: (step, round) of the timeouts that fired and made us act (lines 57, 61, 65).
        self._timed_out: set[tuple[Step, int]] = set()

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
        if (Step.PROPOSE, round_) in self._timed_out and self._valid(block, h):
            self._out.append(TimedOutTooSoon(Step.PROPOSE, round_))
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
        self._late_proof_of_lock(v)
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
            self._timed_out.add((step, round_))
            self._vote(VoteType.PREVOTE, None)
            self.step = Step.PREVOTE
        elif step == Step.PREVOTE and self.step == Step.PREVOTE:  # line 61
            self._timed_out.add((step, round_))
            self._vote(VoteType.PRECOMMIT, None)
            self.step = Step.PRECOMMIT
        elif step == Step.PRECOMMIT:  # line 65
            self._timed_out.add((step, round_))
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
            or self._rule_valid_any_round()
            or self._rule_prevote_hopeless()
            or self._rule_precommit_hopeless()
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
                    if (Step.PRECOMMIT, r) in self._timed_out:
                        self._out.append(TimedOutTooSoon(Step.PRECOMMIT, r))
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

    def _rule_valid_any_round(self) -> bool:  # line 36, its validValue half, for any round
        """A proof of lock seen for an earlier round makes that block our valid value.

        The paper updates validValue only from the current round's prevotes (line 36),
        so a validator that was not sent a round's proposal or prevotes in time (a
        Byzantine proposer fed them to just f+1 honest validators, who locked) proposes a
        fresh block when its turn comes, and the locked ones prevote nil on it: with the
        locks split so, rounds fail until a locked validator happens to propose. Here a
        proposal of any round r with 2f+1 prevotes for it, once seen (the locked ones
        re-send both, see ConsensusNode), becomes validValue when r > validRound, so the
        next honest proposer re-proposes the block with the highest proof of lock, which
        every honest validator accepts (line 28: locked no later than r, or on it).

        Safety: untouched. validValue only decides what this node proposes; a proposal
        <v, vr> counts only where its receivers see 2f+1 prevotes for v in round vr
        themselves (line 28) and their own lock allows it, and those 2f+1 prevotes exist
        here too. The lock (lockedValue/lockedRound) still changes only by line 36 in the
        current round, so no lock is ever taken or released by this rule.
        """
        q = quorum(self.total)
        for r in sorted(self.proposals, reverse=True):
            if r <= self.valid_round:
                return False
            if r == self.round:  # line 36 itself: it also locks
                continue
            block, h, _ = self.proposals[r]
            if self._power(r, VoteType.PREVOTE, h) >= q and self._valid(block, h):
                self.valid_value, self.valid_round = block, r
                return True
        return False

    def _rule_prevote_hopeless(self) -> bool:  # line 61, without waiting for timeoutPrevote
        """Precommit nil as soon as no value can still get 2f+1 prevotes this round.

        Line 61 precommits nil when timeoutPrevote fires in step prevote; the wait is
        for a proof of lock (line 36) that may still come. When the prevotes already
        counted leave no value (nor nil) able to reach 2f+1 even if every validator not
        yet heard from voted for it, the timeout can only end in that same nil precommit,
        so it is taken now. A late proposal fed to f honest validators just before their
        propose timeout (2f prevotes for it, f+1 nil) used to cost a full prevote
        timeout per round; so does a lock split.

        Safety: a nil precommit never locks, unlocks or decides anything (lines 36, 49);
        line 36 still updates validValue if a proof of lock shows up after all (step >=
        prevote). Liveness: after GST an honest proposer's round gets the prevotes of all
        honest validators for its block, enough for 2f+1, so this never fires there.
        """
        vs = self.votes.get((self.round, VoteType.PREVOTE))
        if self.step != Step.PREVOTE or vs is None or self._quorum_possible(vs, count_nil=True):
            return False
        self._vote(VoteType.PRECOMMIT, None)
        self.step = Step.PRECOMMIT
        return True

    def _rule_precommit_hopeless(self) -> bool:  # line 65, without waiting for timeoutPrecommit
        """Start the next round once 2f+1 precommits are in (line 47) and no block can
        still get 2f+1 precommits this round.

        timeoutPrecommit waits for a decision (line 49) that may still come; when the
        precommits counted leave every block short of 2f+1 even with every missing
        validator's, that wait can only end in StartRound(round + 1), taken now.

        Safety: starting a round is always safe in Tendermint (a round change touches
        no lock; the decision rule, line 49, holds for the quorum of any round, so a
        late quorum for this round still decides). Liveness: after GST the round of an
        honest proposer gets 2f+1 precommits for its block, so this never cuts it short.
        """
        vs = self.votes.get((self.round, VoteType.PRECOMMIT))
        if vs is None or vs.power < quorum(self.total) or self._quorum_possible(vs, count_nil=False):
            return False
        self._start_round(self.round + 1)
        return True

    # --- helpers ---------------------------------------------------------------------------------

    def _late_proof_of_lock(self, v: Vote) -> None:
        """A prevote that completes a proof of lock for the proposal of a round in which
        our prevote timeout already made us precommit nil: that timeout was too short."""
        prop = self.proposals.get(v.round)
        if (
            v.vote_type != VoteType.PREVOTE
            or prop is None
            or v.block_hash != prop[1]
            or (Step.PREVOTE, v.round) not in self._timed_out
            or self._power(v.round, VoteType.PREVOTE, prop[1]) < quorum(self.total)
            or ("late-pol", v.round) in self._once
        ):
            return
        self._once.add(("late-pol", v.round))
        self._out.append(TimedOutTooSoon(Step.PREVOTE, v.round))

    def _quorum_possible(self, vs: _VoteSet, count_nil: bool) -> bool:
        """Whether some value (a block, or nil when `count_nil`) can still reach 2f+1 in
        `vs` if every validator not yet counted votes for it. An equivocator's second
        vote could add more, but liveness never depends on Byzantine votes."""
        q = quorum(self.total)
        missing = self.total - vs.power
        if missing >= q:
            return True
        return any(p + missing >= q for h, p in vs.power_for.items() if count_nil or h is not None)

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
