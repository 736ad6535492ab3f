"""The chain a daemon runs: genesis file -> ledger -> consensus node, restored from disk.

protocol/ledger owns the genesis format and protocol/consensus the state machine; this
module is the one place the daemon and the CLI put them together, so the wiring lives
in one file. Restart is a replay: the committed blocks the core asked to persist are
read back in height order and re-applied from genesis (ConsensusNode.restore), which
also re-checks every block's state root against our own ledger.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from node.daemon.blockstore import DiskBackedBlocks
from node.storage import ChainStore
from protocol.consensus.block import block_hash
from protocol.consensus.node import (
    OWN_VOTES_KEY,
    PERSIST_BLOCK,
    PERSIST_VOTES,
    ConsensusConfig,
    ConsensusNode,
)
from protocol.errors import ConfigError, PolnetError
from protocol.identity import Keypair
from protocol.ledger import Genesis, Ledger, parse_genesis
from protocol.market.chain import market_genesis_state
from protocol.market.node import MarketNode
from protocol.market.params import DEVNET, MarketParams
from protocol.market.roles import NodeRoles
from protocol.messages import load_all

#: Devnet balances: enough to pay fees and bond for a long demo.
DEVNET_BALANCE = 1_000_000_000
DEVNET_STAKE = 10_000_000
#: The market's stage deadlines as real daemons run them. The devnet preset's windows are
#: sized for netsim, where compute costs virtual time; a daemon trains, fetches proofs and
#: re-executes segments in wall time, on a box it may share with the whole swarm, so its
#: deadlines (in blocks of about a second) leave room for that. Every node of a chain must
#: use the same parameters: they are part of the state root.
REALTIME_MARKET = replace(
    DEVNET,
    profile_blocks=30,
    train_base_blocks=120,
    commit_blocks=60,
    reveal_blocks=10,
    challenge_window_blocks=15,
    forced_reveal_blocks=10,
    move_blocks=15,
    arbitration_blocks=30,
)
#: A genesis file lists accounts and stakes; anything this large is not one.
MAX_GENESIS_BYTES = 16 * 1024 * 1024


def genesis_document(chain_id: str, members: list[Keypair], genesis_time: int = 0) -> dict[str, Any]:
    """A devnet genesis (protocol.ledger.genesis format) where every member is funded
    and bonded, so every member is a validator from height 1."""
    return {
        "chain_id": chain_id,
        "preset": "devnet",
        "genesis_time": genesis_time,
        "accounts": [
            {"pubkey": k.public.hex(), "balance": DEVNET_BALANCE, "stake": DEVNET_STAKE} for k in members
        ],
    }


def genesis_bytes(chain_id: str, members: list[Keypair], genesis_time: int = 0) -> bytes:
    return json.dumps(genesis_document(chain_id, members, genesis_time), indent=2).encode()


def read_genesis(path: Path) -> Genesis:
    """Parse a genesis file (JSON or TOML by suffix), errors prefixed with its path."""
    try:
        raw = path.read_bytes()[: MAX_GENESIS_BYTES + 1]
    except FileNotFoundError:
        raise ConfigError(f"{path}: genesis file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read genesis: {exc.strerror}") from None
    if len(raw) > MAX_GENESIS_BYTES:
        raise ConfigError(f"{path}: genesis larger than {MAX_GENESIS_BYTES} bytes")
    fmt = "toml" if path.suffix == ".toml" else "json"
    try:
        return parse_genesis(raw.decode("utf-8"), fmt)
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: genesis is not UTF-8 text") from None
    except PolnetError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def check_genesis_file(path: Path, chain_id: str) -> None:
    """Refuse a bad genesis, or one for another chain, before anything is written."""
    genesis = read_genesis(path)
    if genesis.chain_id != chain_id:
        raise ConfigError(f"{path}: genesis is for chain {genesis.chain_id!r}, config says {chain_id!r}")


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
        market: MarketParams = REALTIME_MARKET,
    ) -> Chain:
        """Open the chain database (refusing another chain's) and replay it."""
        load_all()
        store = ChainStore.open(db_path, genesis.chain_id)
        try:
            return cls._restore(genesis, key, store, block_interval_ms, roles or NodeRoles(()), market)
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
        market: MarketParams,
    ) -> Chain:
        state = market_genesis_state(genesis, market)
        params = genesis.params
        cfg = ConsensusConfig(
            chain_id=genesis.chain_id,
            genesis_validators=Ledger(state.copy()).validators(),
            genesis_time=genesis.time,
            epoch_length=params.epoch_length,
            max_validators=params.max_validators,
            block_interval_ms=block_interval_ms,
        )
        core = MarketNode.create(
            state, cfg, key, roles,
            blocks=list(store.load_kind(PERSIST_BLOCK)), own_votes=store.load(PERSIST_VOTES, OWN_VOTES_KEY),
            role_state=store.load_kind,
        )
        # Serve block sync from sqlite too, so peers down for longer than the in-memory
        # cache of recent blocks can still catch up from us.
        core.consensus.store = DiskBackedBlocks(cfg.block_cache, store.load)
        return cls(genesis, core.ledger, core, store)

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
        }
