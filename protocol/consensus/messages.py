"""Consensus wire messages (tags 0x10-0x2f).

Votes (0x11), commit certificates (0x12) and equivocation evidence (0x13) are defined
next to the code that checks them and re-exported here; importing this module registers
all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from protocol.schema import I64, U16, U32, U64, Hash32, Len, message

from .block import Block
from .evidence import DuplicateVoteEvidence
from .limits import MAX_SYNC_BATCH
from .votes import CommitCertificate, CommitSig, SignedVote, Vote, VoteType

__all__ = [
    "BlockRequest",
    "BlockResponse",
    "CommitCertificate",
    "CommitSig",
    "CommittedBlock",
    "DuplicateVoteEvidence",
    "Proposal",
    "SignedVote",
    "Status",
    "Vote",
    "VoteType",
]


@message(0x10)
@dataclass(frozen=True, slots=True)
class Proposal:
    """The round's proposer offers a block; `valid_round` is -1 or the round in which the
    proposer saw >2/3 prevotes for it (the paper's validRound)."""

    height: U64
    round: U32
    valid_round: I64
    block: Block


@dataclass(frozen=True, slots=True)
class CommittedBlock:
    """A block with the certificate that committed it: what block sync moves."""

    block: Block
    commit: CommitCertificate


@message(0x14)
@dataclass(frozen=True, slots=True)
class BlockRequest:
    """Ask a peer for committed blocks from `from_height`, at most `count` of them."""

    from_height: U64
    count: U16


@message(0x15)
@dataclass(frozen=True, slots=True)
class BlockResponse:
    blocks: Annotated[tuple[CommittedBlock, ...], Len(0, MAX_SYNC_BATCH)]


@message(0x16)
@dataclass(frozen=True, slots=True)
class Status:
    """A node's last committed height and head hash, published when it (re)starts or is
    stuck, and sent with block-sync answers, so that peers ahead of it can serve it and
    peers behind it learn how far to sync. `commit` is the certificate of `height` (None
    at 0): a node only believes it is behind, stops voting and asks a peer for blocks
    when the claim is signed by validators (protocol/consensus/node.py, `_vouched`)."""

    height: U64
    head_hash: Hash32
    commit: CommitCertificate | None = None
