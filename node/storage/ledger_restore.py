"""Restart: rebuild the ledger from the chain database and prove it is the chain's.

Open = latest snapshot (or genesis) + replay of the blocks stored after it. Each
replayed block must (1) carry a commit certificate of more than 2/3 of the validator
set the ledger itself computed for that height, (2) name in its header the state root
our ledger has before it (the root the validators certified), and (3) produce the root
stored with it. The head block's stored root is thereby checked against the last
commit: a database edited by hand, or a build whose rules differ, is refused with
StateMismatch rather than silently forking.
"""

from __future__ import annotations

from collections.abc import Callable

from node.storage.chainstore import ChainStore, Snapshot
from node.storage.errors import CorruptDatabase, StateMismatch
from protocol.app import BlockContext, Validator
from protocol.errors import DecodeError, ValidationError
from protocol.ledger import Genesis, Ledger
from protocol.records import decode_record, encode_record

#: Blocks between snapshots: bounds the replay after a restart to this many blocks.
SNAPSHOT_EVERY = 32

BlockDecoder = Callable[[bytes], BlockContext]
CommitCheck = Callable[[str, bytes, bytes, tuple[Validator, ...], bytes], None]
"""(chain_id, block bytes, commit bytes, validator set, our root before the block):
raise ValidationError unless the commit certifies this block on top of that root."""


def consensus_block_context(raw: bytes) -> BlockContext:
    """What the ledger needs from a stored protocol.consensus Block."""
    from protocol.consensus.block import Block

    block = decode_record(Block, raw)
    h = block.header
    return BlockContext(
        height=h.height,
        time=h.time,
        proposer=h.proposer,
        txs=block.txs,
        evidence=tuple(encode_record(ev) for ev in block.evidence),
        last_commit_hash=h.last_commit_hash,
    )


def consensus_commit_check(
    chain_id: str, raw_block: bytes, raw_commit: bytes, validators: tuple[Validator, ...], root_before: bytes
) -> None:
    from protocol.consensus.block import Block, block_hash
    from protocol.consensus.votes import CommitCertificate, verify_certificate

    block = decode_record(Block, raw_block)
    cert = decode_record(CommitCertificate, raw_commit)
    # Rule: the certificate is for this block (height and header hash).
    if cert.height != block.height or cert.block_hash != block_hash(block):
        raise StateMismatch(f"commit certificate does not name block {block.height}")
    # Rule: the header names the state root we hold before the block.
    if block.header.app_hash != root_before:
        raise StateMismatch(f"block {block.height} was built on another state root")
    # Rule: >2/3 of the validator set of this height signed it (raises InvalidCertificate).
    verify_certificate(chain_id, cert, {v.pubkey: v.power for v in validators})


def record_block(
    store: ChainStore, ledger: Ledger, block: bytes, commit: bytes, *, snapshot_every: int = SNAPSHOT_EVERY
) -> None:
    """Persist the block the ledger has just applied, in one transaction with its root
    (and a snapshot every `snapshot_every` blocks)."""
    height = ledger.height
    root = ledger.app_hash()
    snap = Snapshot(height, root, ledger.snapshot()) if height % snapshot_every == 0 else None
    store.append_block(height, block, commit, root, snap)


def open_ledger(
    store: ChainStore,
    genesis: Genesis,
    *,
    decode_block: BlockDecoder = consensus_block_context,
    check_commit: CommitCheck | None = consensus_commit_check,
) -> Ledger:
    """The ledger at the stored head, verified as described in the module docstring."""
    ledger = _from_snapshot(store, genesis)
    while True:
        batch = store.blocks(ledger.height + 1)
        if not batch:
            break
        for stored in batch:
            _replay(
                store,
                genesis.chain_id,
                ledger,
                stored.height,
                stored.block,
                stored.commit,
                stored.app_hash,
                decode_block,
                check_commit,
            )
    return ledger


def _from_snapshot(store: ChainStore, genesis: Genesis) -> Ledger:
    snap = store.latest_snapshot()
    if snap is None:
        return Ledger.from_genesis(genesis)
    try:
        ledger = Ledger.restore(genesis.params, snap.state)
    except DecodeError as exc:
        raise CorruptDatabase(
            f"{store.path}: snapshot at height {snap.height} does not decode: {exc}"
        ) from None
    stored = store.get_block(snap.height)
    if ledger.height != snap.height or ledger.app_hash() != snap.root:
        raise StateMismatch(f"snapshot at height {snap.height} does not hash to its stored root")
    if stored is None or stored.app_hash != snap.root:
        raise StateMismatch(f"snapshot at height {snap.height} disagrees with the block stored there")
    return ledger


def _replay(
    store: ChainStore,
    chain_id: str,
    ledger: Ledger,
    height: int,
    raw_block: bytes,
    raw_commit: bytes,
    stored_root: bytes,
    decode_block: BlockDecoder,
    check_commit: CommitCheck | None,
) -> None:
    try:
        ctx = decode_block(raw_block)
    except DecodeError as exc:
        raise CorruptDatabase(f"{store.path}: stored block {height} does not decode: {exc}") from None
    if ctx.height != height:
        raise CorruptDatabase(f"{store.path}: row {height} holds block {ctx.height}")
    if check_commit is not None:
        try:
            check_commit(chain_id, raw_block, raw_commit, ledger.validators(), ledger.app_hash())
        except DecodeError as exc:
            raise CorruptDatabase(f"{store.path}: commit of block {height} does not decode: {exc}") from None
        except ValidationError as exc:
            raise StateMismatch(f"block {height}: commit certificate rejected: {exc}") from None
    outcome = ledger.finalize_block(ctx)
    if outcome.app_hash != stored_root:
        raise StateMismatch(
            f"replaying block {height} gives root {outcome.app_hash.hex()[:16]}, "
            f"stored {stored_root.hex()[:16]}"
        )
