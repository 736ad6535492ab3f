"""The chain a daemon runs: genesis file -> ledger -> consensus node, restored from disk.

protocol/ledger owns the genesis format and protocol/consensus the state machine; this
module is the one place the daemon and the CLI put them together, so the wiring lives
in one file. Restart starts from the newest consensus snapshot that a stored block after
it can verify (the core writes one every SNAPSHOT_EVERY heights: protocol.consensus.
snapshot) and replays only the blocks after it (ConsensusNode.restore), re-checking each
block's state root against our own ledger; so the time to ready after a kill -9 does not
grow with the chain. A snapshot that fails its checks is skipped for the next older one,
and with none left the node replays from genesis, as before snapshots existed.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from node.daemon.blockstore import DiskBackedBlocks
from node.storage import ChainStore, Snapshot
from node.storage.ledger_restore import SNAPSHOT_EVERY
from protocol.consensus.block import block_hash
from protocol.consensus.limits import MAX_EVIDENCE_AGE
from protocol.consensus.node import (
    OWN_VOTES_KEY,
    PERSIST_BLOCK,
    PERSIST_VOTES,
    ConsensusConfig,
    ConsensusNode,
)
from protocol.errors import ConfigError, DecodeError, ValidationError
from protocol.identity import Keypair
from protocol.ledger import Genesis, Ledger, ceremony, parse_genesis
from protocol.ledger.genesis import load_document
from protocol.market.chain import market_genesis_state
from protocol.market.node import MarketNode
from protocol.market.params import MarketParams
from protocol.market.roles import NodeRoles
from protocol.messages import load_all

#: Devnet balances: enough to pay fees and bond for a long demo.
DEVNET_BALANCE = 1_000_000_000
DEVNET_STAKE = 10_000_000
#: The preset of the genesis `polnet init` and `polnet swarm up` write: real daemons.
LOCAL_PRESET = "local"
#: A genesis file lists accounts and stakes; anything this large is not one.
MAX_GENESIS_BYTES = 16 * 1024 * 1024
#: Where the chain database remembers the genesis it was made for (a `records` row).
GENESIS_RECORD = ("chain/genesis", b"hash")
#: How long a (re)started daemon listens for peers ahead of it before it votes: a few
#: gossip heartbeats, so its Status reaches peers and their answer comes back.
STARTUP_SYNC_MS = 1500

log = logging.getLogger("polnet.chain")


def genesis_document(
    chain_id: str,
    members: list[Keypair],
    genesis_time: int = 0,
    addresses: list[str] | None = None,
    preset: str = LOCAL_PRESET,
) -> dict[str, Any]:
    """A genesis (format 2) where every member is funded and has signed a gentx bonding
    DEVNET_STAKE of it, so every member is a validator from height 1: the ceremony
    `polnet genesis` runs across machines, done in one place because one process holds
    every key (a local network, a one-node devnet)."""
    doc = ceremony.new_document(chain_id, preset, genesis_time)
    for k in members:
        doc = ceremony.add_account(doc, k.public, DEVNET_BALANCE + DEVNET_STAKE)
    addrs = addresses or [""] * len(members)
    gentxs = [ceremony.make_gentx(doc, k, DEVNET_STAKE, a) for k, a in zip(members, addrs, strict=True)]
    return ceremony.collect(doc, gentxs)


def genesis_bytes(chain_id: str, members: list[Keypair], genesis_time: int = 0,
                  addresses: list[str] | None = None) -> bytes:
    return document_bytes(genesis_document(chain_id, members, genesis_time, addresses))


def document_bytes(doc: dict[str, Any]) -> bytes:
    """How genesis documents are written: indented JSON, one field per line."""
    return (json.dumps(doc, indent=2) + "\n").encode()


def _genesis_text(path: Path) -> str:
    try:
        raw = path.read_bytes()[: MAX_GENESIS_BYTES + 1]
    except FileNotFoundError:
        raise ConfigError(f"{path}: genesis file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a genesis file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read genesis: {exc.strerror}") from None
    if len(raw) > MAX_GENESIS_BYTES:
        raise ConfigError(f"{path}: genesis larger than {MAX_GENESIS_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: genesis is not UTF-8 text") from None


def _fmt(path: Path) -> str:
    return "toml" if path.suffix == ".toml" else "json"


def read_genesis(path: Path, *, draft: bool = False) -> Genesis:
    """Parse a genesis file (JSON or TOML by suffix), errors prefixed with its path."""
    try:
        return parse_genesis(_genesis_text(path), _fmt(path), draft=draft)
    except ConfigError as exc:
        if str(exc).startswith(f"{path}:"):
            raise
        raise ConfigError(f"{path}: {exc}") from None


def read_genesis_document(path: Path) -> dict[str, Any]:
    """A genesis file as its table (a draft the ceremony is still filling in)."""
    try:
        return load_document(_genesis_text(path), _fmt(path))
    except ConfigError as exc:
        if str(exc).startswith(f"{path}:"):
            raise
        raise ConfigError(f"{path}: {exc}") from None


def check_genesis_file(path: Path, chain_id: str) -> Genesis:
    """Refuse a bad genesis, or one for another chain, before anything is written."""
    genesis = read_genesis(path)
    if genesis.chain_id != chain_id:
        raise ConfigError(f"{path}: genesis is for chain {genesis.chain_id!r}, config says {chain_id!r}")
    return genesis


def recorded_genesis(db_path: Path, chain_id: str) -> bytes | None:
    """The genesis hash a chain database was made for; None if there is no database (or
    it predates recorded genesis hashes). A database of another chain id raises."""
    if not db_path.exists():
        return None
    store = ChainStore.open(db_path, chain_id)
    try:
        kind, key = GENESIS_RECORD
        return store.load(kind, key)
    finally:
        store.close()


def check_store_genesis(store: ChainStore, genesis: Genesis, db_path: Path) -> None:
    """A chain database belongs to one genesis: remember it on first open, refuse another.
    (Same chain id, other genesis: the database's blocks do not extend this state, and
    without this check the node would fail later with a state-root mismatch.)"""
    kind, key = GENESIS_RECORD
    stored = store.load(kind, key)
    ours = genesis.hash()
    if stored is None:
        store.persist(kind, key, ours)
    elif stored != ours:
        raise ConfigError(
            f"{db_path}: this database holds the chain of genesis {stored.hex()[:16]}, but the genesis "
            f"file is {ours.hex()[:16]}; move the db/ directory aside to start this genesis from height 0"
        )


def consensus_config(genesis: Genesis, validators: Any, block_interval_ms: int) -> ConsensusConfig:
    """The consensus core's configuration: the chain-wide part from genesis (timeouts,
    block limits, clock drift, the ledger's epochs, committee cap and evidence horizon),
    the pacing from this node's config."""
    c, p = genesis.consensus_params, genesis.params
    return ConsensusConfig(
        chain_id=genesis.chain_id,
        genesis_validators=validators,
        genesis_time=genesis.time,
        timeouts=c.timeouts(),
        epoch_length=p.epoch_length,
        max_validators=p.max_validators,
        max_block_txs=c.max_block_txs,
        max_block_bytes=c.max_block_bytes,
        max_evidence_age=min(p.max_evidence_age, MAX_EVIDENCE_AGE),
        max_clock_drift_ms=c.max_clock_drift_ms,
        block_interval_ms=block_interval_ms,
    )


@dataclass
class Chain:
    genesis: Genesis
    ledger: Ledger
    core: MarketNode  # consensus + ledger with the market + this node's roles
    store: ChainStore  # node/storage's sqlite: what the core Persists goes here

    @property
    def node(self) -> ConsensusNode:
        return self.core.consensus

    @classmethod
    def open(
        cls,
        genesis: Genesis,
        key: Keypair,
        db_path: Path,
        block_interval_ms: int,
        roles: NodeRoles | None = None,
        enc_generation: int = 0,
    ) -> Chain:
        """Open the chain database (refusing another chain's or another genesis's) and
        replay it. Every parameter comes from the genesis: nothing here is a preset."""
        load_all()
        store = ChainStore.open(db_path, genesis.chain_id)
        try:
            check_store_genesis(store, genesis, db_path)
            return cls._restore(genesis, key, store, block_interval_ms, roles or NodeRoles(()),
                                enc_generation)
        except BaseException:
            store.close()
            raise

    @classmethod
    def _restore(
        cls,
        genesis: Genesis,
        key: Keypair,
        store: ChainStore,
        block_interval_ms: int,
        roles: NodeRoles,
        enc_generation: int = 0,
    ) -> Chain:
        state = market_genesis_state(genesis)
        cfg = replace(consensus_config(genesis, Ledger(state.copy()).validators(), block_interval_ms),
                      snapshot_every=SNAPSHOT_EVERY, startup_sync_ms=STARTUP_SYNC_MS)
        started = time.monotonic()
        head = store.last_key(PERSIST_BLOCK)
        head_height = 0 if head is None else int.from_bytes(head, "big")
        # A snapshot at the very head has no stored block after it to certify its root;
        # the older one (KEEP_SNAPSHOTS are kept) costs at most SNAPSHOT_EVERY more blocks.
        starts: list[Snapshot | None] = [s for s in store.consensus_snapshots() if s.height < head_height]
        starts.append(None)
        own_votes = store.load(PERSIST_VOTES, OWN_VOTES_KEY)
        for snap in starts:
            after = None if snap is None else snap.height.to_bytes(8, "big")
            try:
                core = MarketNode.create(
                    state, cfg, key, roles,
                    blocks=store.load_kind(PERSIST_BLOCK, after=after), own_votes=own_votes,
                    role_state=store.load_kind, snapshot=None if snap is None else snap.state,
                    enc_generation=enc_generation,
                )
                break
            except (DecodeError, ValidationError) as exc:
                if snap is None:
                    raise
                log.warning("snapshot unusable; trying an older start",
                            extra={"height": snap.height, "error": str(exc)})
        log.info("chain restored", extra={
            "height": core.consensus.height - 1,
            "from_snapshot": 0 if snap is None else snap.height,
            "seconds": round(time.monotonic() - started, 3),
        })
        # Serve block sync from sqlite too, so peers down for longer than the in-memory
        # cache of recent blocks can still catch up from us.
        core.consensus.store = DiskBackedBlocks(cfg.block_cache, store.load)
        return cls(genesis, core.ledger, core, store)

    @property
    def market(self) -> MarketParams:
        """The market parameters this chain runs (its genesis's)."""
        return self.genesis.market

    @property
    def height(self) -> int:
        """Height of the last committed block."""
        return self.node.height - 1

    def account(self, pubkey: bytes) -> dict[str, Any]:
        acct = self.ledger.state.account(pubkey)
        stake = self.ledger.state.stake(pubkey)
        return {
            "pubkey": pubkey.hex(),
            "balance": acct.balance,
            "nonce": acct.nonce,
            "bonded": stake.bonded,
            "locked": stake.locked,
            "jailed": stake.jailed,
            "unbondings": stake.unbondings,
            "height": self.height,
        }

    def block(self, height: int) -> dict[str, Any] | None:
        """A committed block's identity (hash and the state root it built on)."""
        cb = self.node.store.get(height)
        if cb is None:
            return None
        h = cb.block.header
        return {
            "height": h.height,
            "hash": block_hash(cb.block).hex(),
            "app_hash": h.app_hash.hex(),
            "proposer": h.proposer.hex(),
            "time": h.time,
            "txs": len(cb.block.txs),
        }

    def summary(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "app_hash": self.ledger.app_hash().hex(),
            "validators": len(self.node.vset.powers()),
            "mempool": len(self.node.mempool),
            "catching_up": self.node.catching_up,
            "round": self.node.machine.round,
        }
