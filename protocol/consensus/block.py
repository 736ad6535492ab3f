"""Blocks: a header that is hashed, and a body that the header commits to.

Execution lags one block, as in Tendermint: the header of height h carries the app hash
after block h-1 and the hash of the certificate that committed h-1, so a block can be
built and checked before it is applied, and agreeing on a block is agreeing on the
state root that precedes it.

The header names the round its proposer built it in, so that "the proposer is the one
the state says it must be" is a check of the header alone (as the Ethereum specs'
`block.proposer_index == get_beacon_proposer_index(state)` with the slot in the block):
every node, live or syncing, can tell that `proposer` is the proposer of `round` by the
height's proposer priority, and the ledger pays only the validator that made the block.
A later round that re-proposes a locked or valid block (paper, lines 14-16) sends the
same header, so the block keeps its id and its maker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from protocol.encoding import sha256
from protocol.records import record_hash
from protocol.schema import U32, U64, Hash32, Len, PubKey

from .evidence import DuplicateVoteEvidence
from .limits import MAX_BLOCK_EVIDENCE, MAX_BLOCK_TXS, MAX_TX_BYTES
from .votes import CommitCertificate

ZERO_HASH = b"\x00" * 32
_LEAF = b"\x00"
_NODE = b"\x01"

Tx = Annotated[bytes, Len(1, MAX_TX_BYTES)]


@dataclass(frozen=True, slots=True)
class BlockHeader:
    height: U64
    time: U64  # ms, the proposer's clock; never before the previous block's
    proposer: PubKey
    prev_hash: Hash32  # ZERO_HASH for height 1
    tx_root: Hash32
    evidence_root: Hash32
    app_hash: Hash32  # state root after block height-1
    last_commit_hash: Hash32  # record_hash of the certificate of height-1; ZERO_HASH at 1
    round: U32 = 0  # the round `proposer` built this block in (it is that round's proposer)


@dataclass(frozen=True, slots=True)
class Block:
    header: BlockHeader
    txs: Annotated[tuple[Tx, ...], Len(0, MAX_BLOCK_TXS)]
    evidence: Annotated[tuple[DuplicateVoteEvidence, ...], Len(0, MAX_BLOCK_EVIDENCE)]
    last_commit: CommitCertificate | None  # None only at height 1

    @property
    def height(self) -> int:
        return self.header.height


def block_hash(block: Block) -> bytes:
    """The id votes sign: the header's hash (the header commits to the body by roots)."""
    return record_hash(block.header)


def merkle_root(leaves: list[bytes]) -> bytes:
    """Binary Merkle root with domain-separated leaves and nodes (RFC 6962 style), so
    a leaf can never be passed off as an inner node; ZERO_HASH for no leaves."""
    if not leaves:
        return ZERO_HASH
    level = [sha256(_LEAF + leaf) for leaf in leaves]
    while len(level) > 1:
        nxt = [sha256(_NODE + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def tx_root(txs: tuple[bytes, ...]) -> bytes:
    return merkle_root(list(txs))


def evidence_root(evidence: tuple[DuplicateVoteEvidence, ...]) -> bytes:
    return merkle_root([record_hash(ev) for ev in evidence])


def certificate_hash(cert: CommitCertificate | None) -> bytes:
    return ZERO_HASH if cert is None else record_hash(cert)
