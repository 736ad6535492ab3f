"""The Tendermint height machine driven directly, rule by rule (paper line numbers)."""

from __future__ import annotations

from protocol.consensus.block import ZERO_HASH, Block, BlockHeader, block_hash
from protocol.consensus.tendermint import (
    BroadcastProposal,
    BroadcastVote,
    Decide,
    HeightMachine,
    Inputs,
    ScheduleTimeout,
    Step,
    TimedOutTooSoon,
    TimeoutConfig,
)
from protocol.consensus.timeouts import Pacer
from protocol.consensus.votes import SignedVote, Vote, VoteType

KEYS = [bytes([i]) * 32 for i in range(1, 5)]
SIG = b"\x00" * 64
TIMEOUTS = TimeoutConfig(propose_ms=100, prevote_ms=50, precommit_ms=50, delta_ms=20, max_ms=150)


def block(tag: int, height: int = 1) -> Block:
    header = BlockHeader(height, tag, KEYS[0], ZERO_HASH, ZERO_HASH, ZERO_HASH, ZERO_HASH, ZERO_HASH)
    return Block(header, (), (), None)


A, B = block(1), block(2)
HA, HB = block_hash(A), block_hash(B)


def machine(
    me: int = 1,
    powers: tuple[int, ...] = (1, 1, 1, 1),
    proposer: int = 0,
    value: Block = A,
    invalid: frozenset[bytes] = frozenset(),
) -> HeightMachine:
    inputs = Inputs(
        powers={k: p for k, p in zip(KEYS, powers)},
        proposer=lambda r: KEYS[(proposer + r) % 4],
        get_value=lambda round_: value,
        valid=lambda b, h: h not in invalid,
    )
    return HeightMachine(1, KEYS[me], inputs, TIMEOUTS)


def vote(who: int, t: VoteType, h: bytes | None, round_: int = 0) -> SignedVote:
    return SignedVote(Vote(1, round_, t, h, KEYS[who]), SIG)


def votes_of(actions: list[object]) -> list[Vote]:
    return [a.vote for a in actions if isinstance(a, BroadcastVote)]


def loop(m: HeightMachine, actions: list[object]) -> list[object]:
    """Count the machine's own votes, as the node core does, collecting every action."""
    out: list[object] = []
    pending = list(actions)
    while pending:
        a = pending.pop(0)
        out.append(a)
        if isinstance(a, BroadcastVote):
            more, _ = m.on_vote(SignedVote(a.vote, SIG))
            pending += more
    return out


def start(m: HeightMachine) -> list[object]:
    return loop(m, m.start())


def propose(m: HeightMachine, sender: int, round_: int, vr: int, b: Block) -> list[object]:
    return loop(m, m.on_proposal(KEYS[sender], round_, vr, b))


def timeout(m: HeightMachine, step: Step, round_: int) -> list[object]:
    return loop(m, m.on_timeout(step, 1, round_))


def feed(m: HeightMachine, who: list[int], t: VoteType, h: bytes | None, round_: int = 0) -> list[object]:
    out: list[object] = []
    for w in who:
        actions, _ = m.on_vote(vote(w, t, h, round_))
        out += loop(m, actions)
    return out


def test_proposer_proposes_its_value_at_once_and_others_arm_the_propose_timeout() -> None:
    assert machine(me=0).start() == [
        BroadcastProposal(0, -1, A),
        BroadcastVote(Vote(1, 0, VoteType.PREVOTE, HA, KEYS[0])),
    ]
    assert machine(me=1).start() == [ScheduleTimeout(Step.PROPOSE, 1, 0, 100)]


def test_happy_path_prevotes_precommits_and_decides_with_the_quorum_precommits() -> None:
    m = machine()
    start(m)
    out = propose(m, 0, 0, -1, A)
    assert votes_of(out) == [Vote(1, 0, VoteType.PREVOTE, HA, KEYS[1])]  # line 22
    out = feed(m, [0, 2], VoteType.PREVOTE, HA)
    assert votes_of(out) == [Vote(1, 0, VoteType.PRECOMMIT, HA, KEYS[1])]  # line 36
    assert (m.locked_round, m.valid_round) == (0, 0)
    out = feed(m, [0, 2], VoteType.PRECOMMIT, HA)
    decided = [a for a in out if isinstance(a, Decide)]
    assert len(decided) == 1 and decided[0].block == A
    assert {sv.vote.validator for sv in decided[0].precommits} == {KEYS[0], KEYS[1], KEYS[2]}


def test_exactly_two_thirds_of_the_power_is_not_a_quorum() -> None:
    m = machine(powers=(2, 2, 1, 1), me=3)
    start(m)
    propose(m, 0, 0, -1, A)  # our own prevote: 1
    out = feed(m, [2], VoteType.PREVOTE, HA)  # 2 of 6
    out += feed(m, [0], VoteType.PREVOTE, HA)  # 4 of 6 = exactly 2/3: no quorum
    assert not [v for v in votes_of(out) if v.vote_type == VoteType.PRECOMMIT]
    out = feed(m, [1], VoteType.PREVOTE, HA)  # 6 of 6
    assert [v for v in votes_of(out) if v.vote_type == VoteType.PRECOMMIT]


def test_a_proposal_from_anyone_but_the_rounds_proposer_is_ignored() -> None:
    m = machine()
    start(m)
    assert propose(m, 2, 0, -1, A) == []
    assert m.step == Step.PROPOSE


def test_invalid_proposal_gets_a_nil_prevote() -> None:
    m = machine(invalid=frozenset({HA}))
    start(m)
    assert votes_of(propose(m, 0, 0, -1, A)) == [Vote(1, 0, VoteType.PREVOTE, None, KEYS[1])]


def test_propose_timeout_prevotes_nil_and_timeouts_grow_per_round_up_to_the_cap() -> None:
    m = machine()
    start(m)
    assert votes_of(timeout(m, Step.PROPOSE, 0)) == [Vote(1, 0, VoteType.PREVOTE, None, KEYS[1])]  # l.57
    assert [TIMEOUTS.duration(Step.PROPOSE, r) for r in range(5)] == [100, 120, 140, 150, 150]
    assert timeout(m, Step.PROPOSE, 0) == []  # a repeated or stale timeout does nothing


def test_nil_prevote_quorum_precommits_nil_and_precommit_timeout_starts_next_round() -> None:
    m = machine()
    start(m)
    timeout(m, Step.PROPOSE, 0)
    out = feed(m, [0, 2], VoteType.PREVOTE, None)
    assert Vote(1, 0, VoteType.PRECOMMIT, None, KEYS[1]) in votes_of(out)  # line 44
    out = feed(m, [0, 2], VoteType.PRECOMMIT, HA)
    assert ScheduleTimeout(Step.PRECOMMIT, 1, 0, 50) in out  # line 47: A could still get 3
    assert m.round == 0
    out = timeout(m, Step.PRECOMMIT, 0)  # line 65: round 1, whose proposer we are
    assert m.round == 1 and BroadcastProposal(1, -1, A) in out


def test_once_no_block_can_reach_a_precommit_quorum_the_next_round_starts_at_once() -> None:
    m = machine()
    start(m)
    timeout(m, Step.PROPOSE, 0)
    feed(m, [0, 2], VoteType.PREVOTE, None)
    out = feed(m, [0, 2], VoteType.PRECOMMIT, None)  # 3 nil of 4: no block can get 3 now
    assert ScheduleTimeout(Step.PRECOMMIT, 1, 0, 50) in out  # line 47 still fires first
    assert m.round == 1 and BroadcastProposal(1, -1, A) in out  # line 65 without the wait
    assert timeout(m, Step.PRECOMMIT, 0) == []  # the stale timeout does nothing


def test_once_no_value_can_reach_a_prevote_quorum_it_precommits_nil_without_the_timeout() -> None:
    # A late proposal reached only us and validator 0 in time: A has 2 prevotes, nil 2.
    m = machine()
    start(m)
    propose(m, 0, 0, -1, A)
    feed(m, [0], VoteType.PREVOTE, HA)
    out = feed(m, [2], VoteType.PREVOTE, None)
    assert ScheduleTimeout(Step.PREVOTE, 1, 0, 50) in out and votes_of(out) == []  # A may get 3
    out = feed(m, [3], VoteType.PREVOTE, None)  # now neither A (2) nor nil (2) can reach 3
    assert votes_of(out) == [Vote(1, 0, VoteType.PRECOMMIT, None, KEYS[1])]  # line 61, early
    assert m.locked_round == -1


def _locked_on_a(me: int) -> HeightMachine:
    """Round 0: we prevote A, see >2/3 prevotes for A and lock; the round fails."""
    m = machine(me=me)
    start(m)
    propose(m, 0, 0, -1, A)
    others = [i for i in range(4) if i not in (me, 3)]
    feed(m, others, VoteType.PREVOTE, HA)
    assert m.locked_round == 0
    feed(m, [i for i in range(4) if i != me], VoteType.PRECOMMIT, None)
    timeout(m, Step.PRECOMMIT, 0)
    assert m.round == 1
    return m


def test_a_locked_validator_prevotes_nil_on_another_value_and_for_its_locked_value() -> None:
    # We are KEYS[2]; round 1's proposer is KEYS[1].
    m = _locked_on_a(me=2)
    assert votes_of(propose(m, 1, 1, -1, B)) == [Vote(1, 1, VoteType.PREVOTE, None, KEYS[2])]
    m = _locked_on_a(me=2)
    assert votes_of(propose(m, 1, 1, -1, A)) == [Vote(1, 1, VoteType.PREVOTE, HA, KEYS[2])]


def test_a_lock_is_released_by_a_proposal_justified_by_a_later_prevote_quorum() -> None:
    """Line 28: locked on A at round 0, but >2/3 prevoted B in round 1; a round-2
    proposal of B with valid_round 1 gets our prevote."""
    m = _locked_on_a(me=3)
    timeout(m, Step.PROPOSE, 1)
    feed(m, [0, 1, 2], VoteType.PREVOTE, HB, round_=1)
    feed(m, [0, 1, 2], VoteType.PRECOMMIT, None, round_=1)
    timeout(m, Step.PRECOMMIT, 1)
    assert (m.round, m.locked_round) == (2, 0)
    assert votes_of(propose(m, 2, 2, 1, B)) == [Vote(1, 2, VoteType.PREVOTE, HB, KEYS[3])]


def test_a_proposal_claiming_an_unproven_valid_round_does_not_release_the_lock() -> None:
    m = _locked_on_a(me=3)
    timeout(m, Step.PROPOSE, 1)
    feed(m, [0, 1, 2], VoteType.PRECOMMIT, None, round_=1)
    timeout(m, Step.PRECOMMIT, 1)
    assert votes_of(propose(m, 2, 2, 1, B)) == []  # no 2f+1 prevotes for B at round 1


def test_more_than_a_third_of_power_in_a_higher_round_makes_us_skip_to_it() -> None:
    m = machine()
    start(m)
    feed(m, [2], VoteType.PREVOTE, None, round_=3)
    assert m.round == 0  # 1/4 is not more than 1/3
    feed(m, [3], VoteType.PRECOMMIT, None, round_=3)  # 2/4 now
    assert m.round == 3  # line 55


def test_a_second_vote_for_an_unknown_block_is_returned_as_equivocation_and_not_counted() -> None:
    m = machine()
    start(m)
    m.on_vote(vote(2, VoteType.PREVOTE, HA))
    actions, prior = m.on_vote(vote(2, VoteType.PREVOTE, HB))
    assert prior == vote(2, VoteType.PREVOTE, HA) and actions == []
    assert m.votes[(0, VoteType.PREVOTE)].power_for == {HA: 1}
    _, again = m.on_vote(vote(2, VoteType.PREVOTE, HA))
    assert again is None  # an exact duplicate is not an equivocation


def test_an_equivocators_prevote_for_a_known_block_completes_the_proof_of_lock() -> None:
    """Regression (docs/chaos.md, seed 128): validator 0 proposed and prevoted B to us and
    A to the others (a crash had rolled back its vote record). Counting only its first
    prevote hid the round-0 POL for A from us forever while the others stayed locked on
    A; the paper counts every sender of a PREVOTE for id(A), so its re-sent one counts."""
    m = machine(me=1)
    start(m)
    propose(m, 0, 0, -1, B)  # we prevote B
    feed(m, [0], VoteType.PREVOTE, HB)
    feed(m, [2, 3], VoteType.PREVOTE, HA)  # no value has 2/3 in round 0
    feed(m, [2, 3], VoteType.PREVOTE, None, round_=2)  # skip to round 2 (proposer 2)
    assert m.round == 2 and m.locked_round == -1
    assert votes_of(propose(m, 2, 2, 0, A)) == []  # its POL (round 0) lacks a third prevote
    actions, prior = m.on_vote(vote(0, VoteType.PREVOTE, HA))  # the POL re-send
    assert prior == vote(0, VoteType.PREVOTE, HB)  # still reported as an equivocation
    assert votes_of(loop(m, actions)) == [Vote(1, 2, VoteType.PREVOTE, HA, KEYS[1])]  # line 28
    assert m.has_vote(vote(0, VoteType.PREVOTE, HA))
    assert m.on_vote(vote(0, VoteType.PREVOTE, HA)) == ([], None)  # counted once, not twice
    assert m.votes[(0, VoteType.PREVOTE)].power_for == {HA: 3, HB: 2}


def test_a_certificate_may_carry_an_equivocators_precommit_for_the_decided_block() -> None:
    m = machine(me=1)
    start(m)
    propose(m, 0, 0, -1, A)
    feed(m, [0], VoteType.PRECOMMIT, None)
    feed(m, [2, 3], VoteType.PRECOMMIT, HA)
    out = feed(m, [0], VoteType.PRECOMMIT, HA)
    decided = [a for a in out if isinstance(a, Decide)]
    assert len(decided) == 1 and decided[0].block == A
    assert sorted(sv.vote.validator for sv in decided[0].precommits) == [KEYS[0], KEYS[2], KEYS[3]]


def test_decides_on_a_block_whose_precommit_quorum_is_from_an_earlier_round() -> None:
    """Line 49 holds for any round: a node that moved on still decides on late precommits."""
    m = machine()
    start(m)
    propose(m, 0, 0, -1, A)
    feed(m, [0, 2, 3], VoteType.PRECOMMIT, None, round_=1)  # skips ahead to round 1 (line 55)
    assert m.round == 2  # whose nil precommit quorum starts round 2 at once
    out = feed(m, [0, 2, 3], VoteType.PRECOMMIT, HA, round_=0)
    assert [a.block for a in out if isinstance(a, Decide)] == [A]


def test_votes_from_non_validators_and_far_future_rounds_are_ignored() -> None:
    m = machine()
    start(m)
    stranger = SignedVote(Vote(1, 0, VoteType.PREVOTE, HA, b"\x09" * 32), SIG)
    assert m.on_vote(stranger) == ([], None)
    m.on_vote(vote(2, VoteType.PREVOTE, None, round_=10_000))
    assert (10_000, VoteType.PREVOTE) not in m.votes


def test_stake_weighted_quorum_a_heavy_validator_counts_by_power() -> None:
    m = machine(powers=(7, 1, 1, 1))
    start(m)
    propose(m, 0, 0, -1, A)
    out = feed(m, [0], VoteType.PREVOTE, HA)  # 7 + our 1 = 8 of 10 > 2/3
    assert Vote(1, 0, VoteType.PRECOMMIT, HA, KEYS[1]) in votes_of(out)


def test_a_proof_of_lock_seen_late_for_an_earlier_round_becomes_the_valid_value_we_propose() -> None:
    """Line 36 for any round (issue 17, lock splitting): we never saw round 0's proposal
    in time, others locked on it; once its proposal and POL reach us (re-sent by a locked
    validator) it is our valid value, so our own proposal re-proposes it, not a fresh B."""
    m = machine(me=3, value=B)
    start(m)
    feed(m, [0, 2], VoteType.PREVOTE, None, round_=2)  # we skip to round 2 (line 55)
    assert m.round == 2 and m.valid_round == -1
    propose(m, 0, 0, -1, A)  # the late round-0 proposal
    feed(m, [0, 1, 2], VoteType.PREVOTE, HA)  # and its proof of lock
    assert (m.valid_value, m.valid_round) == (A, 0)
    assert m.locked_round == -1  # a lock is only ever taken in the current round
    timeout(m, Step.PROPOSE, 2)
    out = feed(m, [0, 1, 2], VoteType.PRECOMMIT, None, round_=2)  # round 3: ours
    assert BroadcastProposal(3, 0, A) in out


def test_a_proof_of_lock_older_than_our_valid_round_does_not_replace_it() -> None:
    m = machine(me=3, value=B)
    start(m)
    feed(m, [0, 2], VoteType.PREVOTE, None, round_=2)
    propose(m, 1, 1, -1, B)
    feed(m, [0, 1, 2], VoteType.PREVOTE, HB, round_=1)
    propose(m, 0, 0, -1, A)
    feed(m, [0, 1, 2], VoteType.PREVOTE, HA)  # round 0 < our valid round 1
    assert (m.valid_value, m.valid_round) == (B, 1)


def test_a_timeout_followed_by_what_it_waited_for_is_reported_as_too_soon() -> None:
    m = machine()
    start(m)
    timeout(m, Step.PROPOSE, 0)  # line 57: nil prevote
    assert TimedOutTooSoon(Step.PROPOSE, 0) in propose(m, 0, 0, -1, A)  # then the proposal came
    m2 = machine()
    start(m2)
    propose(m2, 0, 0, -1, A)  # we prevote A
    feed(m2, [2], VoteType.PREVOTE, None)
    timeout(m2, Step.PREVOTE, 0)  # line 61: precommit nil, no POL yet
    out = feed(m2, [0, 3], VoteType.PREVOTE, HA)  # the POL completes after all
    assert TimedOutTooSoon(Step.PREVOTE, 0) in out
    m3 = machine()
    start(m3)
    propose(m3, 0, 0, -1, A)
    feed(m3, [0, 2], VoteType.PRECOMMIT, HA)
    timeout(m3, Step.PRECOMMIT, 0)  # line 65: on to round 1
    out = feed(m3, [3], VoteType.PRECOMMIT, HA)  # round 0's decision arrives after all
    assert out.index(TimedOutTooSoon(Step.PRECOMMIT, 0)) < [type(a) for a in out].index(Decide)


def test_the_pacer_lengthens_a_timeout_that_proved_short_and_shortens_it_back_on_success() -> None:
    pacer = Pacer(TIMEOUTS)
    assert [pacer.duration(Step.PROPOSE, r) for r in range(3)] == [100, 120, 140]
    pacer.too_soon(Step.PROPOSE)
    assert pacer.duration(Step.PROPOSE, 0) == 120 and pacer.duration(Step.PREVOTE, 0) == 50
    for _ in range(10):
        pacer.too_soon(Step.PROPOSE)
    assert pacer.duration(Step.PROPOSE, 0) == TIMEOUTS.max_ms  # capped
    pacer.decided(2)  # a height that needed rounds: nothing learned is forgotten
    assert pacer.duration(Step.PROPOSE, 0) == TIMEOUTS.max_ms
    pacer.decided(0)
    assert pacer.duration(Step.PROPOSE, 0) == TIMEOUTS.max_ms - TIMEOUTS.delta_ms
    for _ in range(10):
        pacer.decided(0)
    assert pacer.duration(Step.PROPOSE, 0) == 100  # back to the configured base
