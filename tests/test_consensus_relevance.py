"""The relevance check: what a validly signed message is worth to a node at (height, round)."""

from __future__ import annotations

from typing import Any, cast

from protocol.consensus.limits import FAR_AHEAD_HEIGHTS, MAX_FUTURE_ROUNDS
from protocol.consensus.messages import BlockRequest, Proposal, Status
from protocol.consensus.relevance import NodeView, Relevance, judge
from protocol.consensus.votes import Vote, VoteType
from protocol.ledger.ledger import MAX_NONCE_AHEAD
from protocol.ledger.txs import Transfer
from protocol.messages import Ping

VAL = b"\x01" * 32
OUTSIDER = b"\x02" * 32
ACCOUNTS = {VAL: (5, 1_000), OUTSIDER: (0, 0)}
VIEW = NodeView(height=10, round=2, is_validator={VAL}.__contains__, account=ACCOUNTS.get)
R, S, J = Relevance.RELEVANT, Relevance.STALE, Relevance.JUNK


def vote(h: int, r: int, who: bytes = VAL) -> Vote:
    return Vote(h, r, VoteType.PREVOTE, None, who)


def proposal(h: int, r: int) -> Proposal:
    return Proposal(h, r, -1, cast(Any, None))


def test_votes_of_the_previous_and_current_heights_are_relevant_older_ones_stale() -> None:
    assert [judge(VIEW, VAL, vote(h, 0)) for h in (8, 9, 10, 11, 50)] == [S, R, R, R, R]


def test_a_vote_signed_by_someone_else_or_by_a_non_validator_is_junk() -> None:
    assert judge(VIEW, OUTSIDER, vote(10, 2)) is J  # relayed under another signature
    for h in (9, 10, 11, 10_000):  # not in the validator set, whatever the height
        assert judge(VIEW, OUTSIDER, vote(h, 2, OUTSIDER)) is J


def test_rounds_beyond_the_future_window_are_junk_within_it_relevant() -> None:
    assert judge(VIEW, VAL, vote(10, 2 + MAX_FUTURE_ROUNDS)) is R
    assert judge(VIEW, VAL, vote(10, 3 + MAX_FUTURE_ROUNDS)) is J
    assert judge(VIEW, VAL, proposal(10, 3 + MAX_FUTURE_ROUNDS)) is J


def test_proposals_for_decided_heights_are_stale_and_outsiders_may_not_propose() -> None:
    assert judge(VIEW, VAL, proposal(9, 0)) is S
    assert judge(VIEW, VAL, proposal(10, 0)) is R
    assert judge(VIEW, OUTSIDER, proposal(10, 0)) is J


def test_a_far_ahead_status_counts_only_from_a_validator() -> None:
    far = Status(10 + FAR_AHEAD_HEIGHTS, b"\x00" * 32)
    assert judge(VIEW, OUTSIDER, far) is J
    assert judge(VIEW, VAL, far) is R
    assert judge(VIEW, OUTSIDER, Status(3, b"\x00" * 32)) is R  # a lagging peer: serve it


def test_a_block_request_for_heights_we_lack_is_stale() -> None:
    assert judge(VIEW, OUTSIDER, BlockRequest(4, 16)) is R
    assert judge(VIEW, OUTSIDER, BlockRequest(10, 16)) is S


def test_transactions_with_spent_or_far_nonces_or_no_funds_are_not_relevant() -> None:
    def tx(nonce: int, fee: int = 10) -> Transfer:
        return Transfer(OUTSIDER, 1, nonce, fee)

    assert judge(VIEW, VAL, tx(5)) is R
    assert judge(VIEW, VAL, tx(4)) is S
    assert judge(VIEW, VAL, tx(5 + MAX_NONCE_AHEAD)) is R
    assert judge(VIEW, VAL, tx(6 + MAX_NONCE_AHEAD)) is J
    assert judge(VIEW, VAL, tx(5, fee=1_001)) is J
    assert judge(VIEW, OUTSIDER, tx(0)) is J  # an account that cannot pay any fee
    assert judge(VIEW, b"\x03" * 32, tx(0)) is J  # unknown account


def test_other_messages_are_left_to_their_budgets() -> None:
    assert judge(VIEW, OUTSIDER, Ping(1)) is R
    assert judge(NodeView(1, 0, lambda _: False), OUTSIDER, Transfer(VAL, 1, 0, 10)) is R  # no ledger view
