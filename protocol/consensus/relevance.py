"""Is a validly signed message of any use to this node right now? A cheap, pure check.

Why: a signature proves who sent a message, not that it is worth anything. Old-height
votes, far-round votes, votes from non-validators, transactions with spent nonces or
from accounts that cannot pay their fee all verify fine, and each one costs every node
that relays it the same library work as a useful message (and some made the node
answer with block sync). The shell calls `judge` on every verified message before the
core or the network sees it, drops what is not RELEVANT, and charges the forwarder
past a small free allowance (node/transport/budgets.py), so junk costs its sender and
not the network.

The verdicts are deliberately lenient where an honest node may be the one behind:
messages for future heights or rounds within the window are RELEVANT (they are how a
lagging node learns to sync), and STALE is only what nobody can use any more. The
windows are named in protocol/consensus/limits.py. Only the committed state is read
(the node's height, round, validator set and accounts), never the network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from protocol.ledger.ledger import MAX_NONCE_AHEAD

from .evidence import DuplicateVoteEvidence
from .limits import FAR_AHEAD_HEIGHTS, MAX_FUTURE_ROUNDS, STALE_VOTE_HEIGHTS
from .messages import BlockRequest, BlockResponse, Proposal, Status
from .votes import Vote


class Relevance(IntEnum):
    RELEVANT = 0
    #: Of use to nobody any more (an old height, a spent nonce, blocks we hold).
    STALE = 1
    #: Of no use from this sender (a vote by a non-validator, an unfunded tx, a far
    #: round, an unprovable claim to be far ahead).
    JUNK = 2


#: pubkey -> (the account's next nonce, its balance); None for an unknown account.
AccountLookup = Callable[[bytes], "tuple[int, int] | None"]


@dataclass(frozen=True, slots=True)
class NodeView:
    """What `judge` may read: the height this node is deciding (last committed + 1), its
    round there, its validator set and its committed accounts."""

    height: int
    round: int
    is_validator: Callable[[bytes], bool]
    account: AccountLookup | None = None


def judge(view: NodeView, sender: bytes, body: Any) -> Relevance:
    """The verdict on one verified message `body` signed by `sender`."""
    if isinstance(body, Vote):
        return _vote(view, sender, body)
    if isinstance(body, Proposal):
        return _proposal(view, sender, body)
    if isinstance(body, Status):
        return _status(view, sender, body)
    if isinstance(body, BlockRequest):
        # Rule: a request for blocks this node does not have yet is of no use.
        return Relevance.STALE if body.from_height >= view.height else Relevance.RELEVANT
    if isinstance(body, BlockResponse):
        # Rule: an answer whose blocks are all below our height adds nothing.
        if body.blocks and all(cb.block.height < view.height for cb in body.blocks):
            return Relevance.STALE
        return Relevance.RELEVANT
    if isinstance(body, DuplicateVoteEvidence):
        return Relevance.RELEVANT  # checked in full by the core; rare by nature
    if _is_tx(body):
        return _tx(view, sender, body)
    return Relevance.RELEVANT


def _vote(view: NodeView, sender: bytes, vote: Vote) -> Relevance:
    # Rule: a vote travels in an envelope signed by the voter itself.
    if sender != vote.validator:
        return Relevance.JUNK
    # Rule: votes below the previous height are too late for anything (the previous
    # height's still prove equivocations).
    if vote.height + STALE_VOTE_HEIGHTS < view.height:
        return Relevance.STALE
    # Rule: only validators vote (the set changes only at epoch ends, so ours is right
    # for the heights around us).
    if not view.is_validator(sender):
        return Relevance.JUNK
    # Rule: no honest validator is that many rounds ahead at our height.
    if vote.height == view.height and vote.round > view.round + MAX_FUTURE_ROUNDS:
        return Relevance.JUNK
    return Relevance.RELEVANT


def _proposal(view: NodeView, sender: bytes, prop: Proposal) -> Relevance:
    # Rule: a proposal for a decided height is of no use.
    if prop.height < view.height:
        return Relevance.STALE
    # Rule: only validators propose.
    if not view.is_validator(sender):
        return Relevance.JUNK
    # Rule: ... and none that many rounds ahead at our height.
    if prop.height == view.height and prop.round > view.round + MAX_FUTURE_ROUNDS:
        return Relevance.JUNK
    return Relevance.RELEVANT


def _status(view: NodeView, sender: bytes, status: Status) -> Relevance:
    # Rule: a claim to be far ahead makes this node ask the sender for blocks; from
    # anyone but a validator it is unprovable here, so it is not acted on.
    if status.height >= view.height + FAR_AHEAD_HEIGHTS and not view.is_validator(sender):
        return Relevance.JUNK
    return Relevance.RELEVANT


def _is_tx(body: Any) -> bool:
    """Every transaction body carries an integer nonce and fee (protocol.ledger.registry)."""
    return type(getattr(body, "nonce", None)) is int and type(getattr(body, "fee", None)) is int


def _tx(view: NodeView, sender: bytes, body: Any) -> Relevance:
    if view.account is None:
        return Relevance.RELEVANT
    acct = view.account(sender)
    nonce, balance = acct if acct is not None else (0, 0)
    # Rule: a spent nonce can never apply again.
    if body.nonce < nonce:
        return Relevance.STALE
    # Rule: the ledger refuses nonces this far ahead, and an account that cannot pay
    # the fee cannot send anything.
    if body.nonce > nonce + MAX_NONCE_AHEAD or balance < body.fee:
        return Relevance.JUNK
    return Relevance.RELEVANT
