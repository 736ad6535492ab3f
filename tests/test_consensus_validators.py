"""Validator sets: stake-weighted proposer rotation, committee cap, epoch changes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.app import Validator
from protocol.consensus.validators import (
    InvalidValidatorSet,
    ProposerSchedule,
    ValidatorSet,
    proposer_sequence,
    select_committee,
)


def vals(*powers: int) -> list[Validator]:
    return [Validator(bytes([i + 1]) * 32, p) for i, p in enumerate(powers)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=1, max_size=8))
def test_over_each_window_of_total_power_selections_everyone_proposes_in_proportion_to_stake(
    powers: list[int],
) -> None:
    members = vals(*powers)
    vset = ValidatorSet.genesis(members)
    total = vset.total_power
    seq = proposer_sequence(vset, 3 * total)
    for w in range(3):
        window = seq[w * total : (w + 1) * total]
        for v in members:
            assert abs(window.count(v.pubkey) - v.power) <= 1


def test_equal_stakes_rotate_round_robin() -> None:
    vset = ValidatorSet.genesis(vals(5, 5, 5, 5))
    seq = proposer_sequence(vset, 8)
    assert sorted(seq[:4]) == sorted(v.pubkey for v in vset.validators)
    assert seq[:4] == seq[4:]


def test_round_r_proposer_and_next_height_follow_the_same_sequence() -> None:
    vset = ValidatorSet.genesis(vals(1, 2, 3, 4))
    seq = proposer_sequence(vset, 6)
    assert [vset.proposer(r) for r in range(6)] == seq
    assert vset.next_height().proposer(0) == seq[1]


def test_committee_is_the_top_stakers_up_to_the_cap_with_ties_broken_by_key() -> None:
    members = vals(5, 9, 5, 1, 0, 7)
    chosen = select_committee(members, cap=3)
    assert {v.power for v in chosen} == {9, 7, 5}
    assert [v for v in chosen if v.power == 5] == [members[0]]  # smaller key wins the tie
    assert all(v.power > 0 for v in select_committee(members, cap=10))


def test_a_joining_validator_starts_behind_and_does_not_jump_the_queue() -> None:
    vset = ValidatorSet.genesis(vals(10, 10, 10))
    newcomer = Validator(b"\x09" * 32, 10)
    grown = vset.with_members([*vset.validators, newcomer])
    assert newcomer.pubkey not in proposer_sequence(grown, 3)
    assert newcomer.pubkey in proposer_sequence(grown, 8)


@pytest.mark.parametrize(
    "members",
    [[], [Validator(b"\x01" * 32, 0)], [Validator(b"\x01" * 31, 5)]],
)
def test_an_empty_or_malformed_set_is_refused(members: list[Validator]) -> None:
    with pytest.raises(InvalidValidatorSet):
        ValidatorSet.genesis(members)


def test_priorities_stay_bounded_after_many_heights_and_power_changes() -> None:
    vset = ValidatorSet.genesis(vals(1, 1000))
    for i in range(500):
        vset = vset.next_height()
        if i % 50 == 0:
            vset = vset.with_members(vals(1 + i, 1000 - i, 7))
        total = vset.total_power
        assert max(vset.priorities) - min(vset.priorities) <= 2 * total + len(vset.priorities)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=1, max_size=8), st.lists(st.integers(0, 40), max_size=12))
def test_the_incremental_proposer_schedule_answers_as_the_set_does_in_any_order(
    powers: list[int], rounds: list[int]
) -> None:
    vset = ValidatorSet.genesis(vals(*powers))
    schedule = ProposerSchedule(vset)
    for r in rounds:
        assert schedule(r) == vset.proposer(r)
