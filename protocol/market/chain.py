"""The market as a ledger extension: its txs, its block hook, its tables, its audit.

Why an adapter over the ledger's tables rather than a second state: the ledger already
gives every extension rollback of a failed tx (its journal), a state root, snapshots for
node/storage, and one supply audit. So each market tx is a registered ledger tx whose
`process` thaws the market from the tables, runs the market rule, and writes back the
changed records (`protocol.market.store`); a rule that raises leaves no trace because
the ledger runs `process` inside `State.atomic()`. Elections, deadlines and settlement
run in the `end` block hook, inside `Ledger.finalize_block`, after the block's txs.

A ledger without the market installed (`install_market` at genesis) carries none of
its tables, and its hook does nothing, so a plain ledger's state root is unchanged.
"""

from __future__ import annotations

from typing import Any

from protocol.app import BlockContext
from protocol.errors import PolnetError
from protocol.ledger.errors import SupplyError
from protocol.ledger.genesis import Genesis, genesis_state
from protocol.ledger.registry import register_block_hook, register_tx
from protocol.ledger.rules import validator_powers
from protocol.ledger.state import State, register_table
from protocol.ledger.txs import SignedTx
from protocol.market.blocks import end_block
from protocol.market.errors import MarketError
from protocol.market.ledger_bridge import MARKET_POOL, LedgerAccounts
from protocol.market.params import MarketParams, check_params
from protocol.market.process import MARKET_TX_TYPES, process_tx
from protocol.market.state import TERMINAL, LazyTable, MarketState
from protocol.market.store import (
    ENC_KEYS,
    LINKS,
    META,
    PARAMS,
    PROVEN,
    SINGLETON,
    TASKS,
    WORKERS,
    EncKeyRecord,
    LinksRecord,
    MetaRecord,
    ProvenRecord,
    TaskRecord,
    WorkerRecord,
    build_state,
    freeze_enc_key,
    freeze_links,
    freeze_proven,
    freeze_task,
    freeze_worker,
)


class MarketNotInstalled(MarketError):
    """This chain's genesis has no market (its tables are absent)."""


def install_market(state: State, params: MarketParams) -> None:
    """Genesis step: the market's params and empty books (before height 1)."""
    check_params(params)
    state.put(PARAMS, SINGLETON, params)
    state.put(META, SINGLETON, MetaRecord(0, 0))


def installed(state: State) -> bool:
    return state.get(META, SINGLETON) is not None


def load_market(state: State) -> MarketState:
    """The market as of `state` (a fresh object: mutating it changes nothing until saved)."""
    meta: MetaRecord | None = state.get(META, SINGLETON)
    params: MarketParams | None = state.get(PARAMS, SINGLETON)
    if meta is None or params is None:
        raise MarketNotInstalled("this chain has no market")
    market = build_state(params, LedgerAccounts(state), meta, list(state.items(WORKERS)),
                         list(state.items(TASKS)), list(state.items(PROVEN)),
                         list(state.items(ENC_KEYS)), list(state.items(LINKS)))
    market.height = state.height
    market.beacon = state.beacon
    market.validators = _validators(state)
    return market


def _validators(state: State) -> dict[bytes, int]:
    """The validator powers at this height (arbitration votes count this stake)."""
    try:
        return validator_powers(state, state.height)
    except PolnetError:  # no set kept for this height (only at genesis of a bare state)
        return {}


def save_market(state: State, market: MarketState) -> None:
    """Write back the entries whose record changed (each write is journaled)."""
    _save_table(state, WORKERS, market.workers, freeze_worker)
    _save_table(state, TASKS, market.tasks, freeze_task)
    _save_table(state, PROVEN, market.proven, freeze_proven)
    _save_table(state, ENC_KEYS, market.enc_keys, freeze_enc_key)
    _save_table(state, LINKS, market.links, freeze_links)
    meta = MetaRecord(market.jackpot, market.burned)
    if state.get(META, SINGLETON) != meta:
        state.put(META, SINGLETON, meta)


def _save_table(state: State, table: str, objects: Any, freeze: Any) -> None:
    if isinstance(objects, LazyTable):  # only what the rules touched
        deleted, live = sorted(objects.deleted), objects.live
    else:
        deleted, live = [k for k in state.keys(table) if k not in objects], objects
    for key in deleted:
        state.put(table, key, None)
    for key in sorted(live):
        record = freeze(live[key])
        if state.get(table, key) != record:
            state.put(table, key, record)


def process_market_tx(state: State, tx: SignedTx[Any]) -> None:
    """The ledger's `process` for every market tx (the ledger already ran the ante)."""
    market = load_market(state)
    process_tx(market, tx.sender, tx.body)
    save_market(state, market)


def market_end_block(state: State, block: BlockContext) -> None:
    """Elections, deadlines, replacements and settlement at the end of every block."""
    if not installed(state):
        return
    market = load_market(state)
    end_block(market)
    save_market(state, market)
    audit_market(state)


def audit_market(state: State) -> None:
    """The market's books (stakes, escrows, bonds, jackpot) equal its ledger pool.

    With `protocol.ledger.primitives.audit_supply` (which counts the pool) this makes
    supply conservation cover the market's custody too. A mismatch is a bug: the hook
    raises, the block does not apply, and the node halts rather than forks. It reads the
    stored records, so run it after `save_market`.
    """
    meta: MetaRecord | None = state.get(META, SINGLETON)
    if meta is None:
        raise MarketNotInstalled("this chain has no market")
    stakes = sum(rec.stake for _, rec in state.items(WORKERS))
    escrows = sum(rec.escrow + sum(c.bond for c in rec.challenges) for _, rec in state.items(TASKS))
    books = stakes + escrows + meta.jackpot + meta.burned
    pool = state.pool(MARKET_POOL)
    if books != pool:
        raise SupplyError(f"market books hold {books} but the market pool holds {pool}")


def open_task_count(state: State) -> int:
    return sum(1 for _, rec in state.items(TASKS) if rec.status not in TERMINAL)


register_table(WORKERS, WorkerRecord)
register_table(TASKS, TaskRecord)
register_table(PROVEN, ProvenRecord)
register_table(ENC_KEYS, EncKeyRecord)
register_table(LINKS, LinksRecord)
register_table(META, MetaRecord)
register_table(PARAMS, MarketParams)
for _cls in MARKET_TX_TYPES:
    register_tx(_cls, process_market_tx)
register_block_hook("market", end=market_end_block)


def market_genesis_state(genesis: Genesis, params: MarketParams | None = None, **kwargs: Any) -> State:
    """The genesis state of a chain that carries the market (what every node starts from):
    the genesis's own market parameters unless a simulation passes its own."""
    state = genesis_state(genesis, **kwargs)
    install_market(state, genesis.market if params is None else params)
    return state
