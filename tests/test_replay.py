"""Replay primitives: exact-next nonces, strictly increasing vote positions per signer,
and a seen-message cache bounded by age and by count."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import ReplayError
from protocol.replay import SeenCache, SignedPositions, VotePosition, VoteStep, check_nonce

A, B = b"a" * 32, b"b" * 32


def test_only_the_next_nonce_is_accepted() -> None:
    check_nonce(expected=5, got=5)
    with pytest.raises(ReplayError, match="already used"):
        check_nonce(expected=5, got=4)
    with pytest.raises(ReplayError, match="ahead"):
        check_nonce(expected=5, got=6)


def test_vote_positions_order_by_height_then_round_then_step() -> None:
    assert VotePosition(1, 9, VoteStep.PRECOMMIT) < VotePosition(2, 0, VoteStep.PROPOSE)
    assert VotePosition(1, 0, VoteStep.PRECOMMIT) < VotePosition(1, 1, VoteStep.PROPOSE)
    assert VotePosition(1, 1, VoteStep.PREVOTE) < VotePosition(1, 1, VoteStep.PRECOMMIT)


def test_a_signer_cannot_reuse_or_go_back_to_a_position() -> None:
    seen = SignedPositions()
    seen.check_and_record(A, VotePosition(3, 0, VoteStep.PREVOTE))
    with pytest.raises(ReplayError):
        seen.check_and_record(A, VotePosition(3, 0, VoteStep.PREVOTE))
    with pytest.raises(ReplayError):
        seen.check_and_record(A, VotePosition(2, 5, VoteStep.PRECOMMIT))
    seen.check_and_record(B, VotePosition(1, 0, VoteStep.PROPOSE))  # other signers are independent
    seen.check_and_record(A, VotePosition(3, 0, VoteStep.PRECOMMIT))
    assert seen.last(A) == VotePosition(3, 0, VoteStep.PRECOMMIT)


def test_signed_positions_forget_the_least_recent_signer_beyond_capacity() -> None:
    seen = SignedPositions(capacity=2)
    for i, signer in enumerate([A, B, b"c" * 32]):
        seen.check_and_record(signer, VotePosition(i, 0, VoteStep.PROPOSE))
    assert seen.last(A) is None and seen.last(B) is not None


VOTE_EVENTS = st.lists(
    st.tuples(st.sampled_from([A, B]), st.integers(0, 3), st.integers(0, 2), st.sampled_from(list(VoteStep)))
)


@settings(max_examples=100, deadline=None)
@given(VOTE_EVENTS)
def test_accepted_positions_are_strictly_increasing_per_signer(
    events: list[tuple[bytes, int, int, VoteStep]],
) -> None:
    seen = SignedPositions()
    accepted: dict[bytes, list[VotePosition]] = {A: [], B: []}
    for signer, h, r, s in events:
        pos = VotePosition(h, r, s)
        try:
            seen.check_and_record(signer, pos)
        except ReplayError:
            assert accepted[signer] and pos <= accepted[signer][-1]
            continue
        accepted[signer].append(pos)
    for positions in accepted.values():
        assert positions == sorted(set(positions))


def test_the_seen_cache_reports_new_ids_once_until_they_expire() -> None:
    cache = SeenCache(capacity=10, ttl=100)
    assert cache.add(b"m1", now=0)
    assert not cache.add(b"m1", now=99)
    assert b"m1" in cache
    assert cache.add(b"m1", now=100)  # expired at the ttl, so fresh again


def test_the_seen_cache_never_holds_more_than_its_capacity() -> None:
    cache = SeenCache(capacity=3, ttl=10**9)
    for i in range(10):
        cache.add(bytes([i]), now=i)
    assert len(cache) == 3
    assert bytes([0]) not in cache and bytes([9]) in cache


@pytest.mark.parametrize(("capacity", "ttl"), [(0, 1), (1, 0), (-1, 5)])
def test_a_seen_cache_without_bounds_is_refused(capacity: int, ttl: int) -> None:
    with pytest.raises(ValueError):
        SeenCache(capacity=capacity, ttl=ttl)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 50)), max_size=60))
def test_the_seen_cache_matches_a_reference_model(steps: list[tuple[int, int]]) -> None:
    capacity, ttl = 4, 20
    cache = SeenCache(capacity=capacity, ttl=ttl)
    model: dict[int, int] = {}  # id -> time first seen, insertion ordered
    now = 0
    for msg, dt in steps:
        now += dt
        model = {k: t for k, t in model.items() if t > now - ttl}
        expected_new = msg not in model
        if expected_new:
            model[msg] = now
            if len(model) > capacity:
                del model[next(iter(model))]
        assert cache.add(bytes([msg]), now) == expected_new
        assert len(cache) == len(model)
