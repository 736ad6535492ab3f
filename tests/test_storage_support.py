"""A tiny certified chain for the storage tests: real consensus blocks and commit
certificates signed by the genesis validators, applied to a real ledger (no tests here)."""

from __future__ import annotations

import sys
from pathlib import Path

from node.storage import ChainStore, open_ledger, record_block
from node.storage.ledger_restore import consensus_block_context
from protocol.consensus.block import (
    ZERO_HASH,
    Block,
    BlockHeader,
    block_hash,
    certificate_hash,
    evidence_root,
    tx_root,
)
from protocol.consensus.votes import CommitCertificate, Vote, VoteType, make_certificate, sign_vote
from protocol.ledger import Ledger
from protocol.ledger.txs import Transfer
from protocol.records import decode_record, encode_record
from tests.test_ledger_support import CHAIN, KEYS, PUB, genesis, tx

VALIDATORS = KEYS[:3]  # the genesis stakers of tests.test_ledger_support.genesis()


def certify(block: Block) -> CommitCertificate:
    h = block_hash(block)
    votes = [
        sign_vote(CHAIN, Vote(block.height, 0, VoteType.PRECOMMIT, h, k.public), k.sign) for k in VALIDATORS
    ]
    return make_certificate(block.height, 0, h, votes)


def next_block(ledger: Ledger, last_commit: CommitCertificate | None, txs: tuple[bytes, ...] = ()) -> Block:
    height = ledger.height + 1
    header = BlockHeader(
        height=height,
        time=1_000 * height,
        proposer=PUB[height % 3],
        prev_hash=last_commit.block_hash if last_commit else ZERO_HASH,
        tx_root=tx_root(txs),
        evidence_root=evidence_root(()),
        app_hash=ledger.app_hash(),
        last_commit_hash=certificate_hash(last_commit),
    )
    return Block(header, txs, (), last_commit)


def last_commit(store: ChainStore) -> CommitCertificate | None:
    head = store.get_block(store.height)
    return decode_record(CommitCertificate, head.commit) if head else None


def grow(
    store: ChainStore, ledger: Ledger, blocks: int, txs_per_block: int = 2, snapshot_every: int = 4
) -> None:
    """Append `blocks` certified blocks of transfers from account 3 to account 4."""
    commit = last_commit(store)
    for _ in range(blocks):
        nonce = ledger.state.account(PUB[3]).nonce
        txs = tuple(tx(KEYS[3], Transfer(PUB[4], 1, nonce + i, 10)) for i in range(txs_per_block))
        block = next_block(ledger, commit, txs)
        outcome = ledger.finalize_block(consensus_block_context(encode_record(block)))
        assert outcome.rejected == ()
        commit = certify(block)
        record_block(
            store, ledger, encode_record(block), encode_record(commit), snapshot_every=snapshot_every
        )


def writer_main(path: str) -> None:
    """Subprocess body for the kill -9 test: reopen, then append blocks forever, printing
    each height once `append_block` has returned (i.e. once it is committed)."""
    store = ChainStore.open(Path(path), CHAIN)
    ledger = open_ledger(store, genesis(balances=(10**9,) * 6))
    print(f"opened {store.height}", flush=True)
    while True:
        grow(store, ledger, 1, txs_per_block=40, snapshot_every=3)
        print(store.height, flush=True)


if __name__ == "__main__":
    writer_main(sys.argv[1])
