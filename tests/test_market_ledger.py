"""The market inside the ledger: registered txs, journaled tables, state root, hook, audit."""

from __future__ import annotations

from dataclasses import replace

import pytest

from protocol.app import BlockContext
from protocol.chain_params import chain_preset
from protocol.envelope import seal
from protocol.identity import Keypair
from protocol.ledger.errors import SupplyError
from protocol.ledger.genesis import Genesis, GenesisAccount, genesis_state
from protocol.ledger.ledger import Ledger
from protocol.ledger.primitives import audit_supply
from protocol.ledger.state import State
from protocol.market import elections
from protocol.market.chain import audit_market, installed, load_market, market_genesis_state
from protocol.market.ledger_bridge import MARKET_POOL
from protocol.market.params import DEVNET
from protocol.market.process import task_id_of
from protocol.market.state import NO_BASE, Status, market_root
from protocol.market.store import META, SINGLETON, TASKS, WORKERS
from protocol.market.txs import DeviceClass, RegisterWorker, SubmitTask

CHAIN = "market-ledger-test"
KEYS = [Keypair.derive(f"mkt-ledger/{i}") for i in range(4)]
VALIDATOR, SUBMITTER, WORKER = KEYS[0], KEYS[1], KEYS[2]
BALANCE = 10**9
FEE = chain_preset("devnet").ledger.base_fee


def genesis(with_market: bool = True) -> State:
    accounts = tuple(GenesisAccount(k.public, BALANCE, 1_000 if k is VALIDATOR else 0) for k in KEYS)
    g = Genesis(CHAIN, chain_preset("devnet").ledger, 0, accounts)
    return market_genesis_state(g, DEVNET) if with_market else genesis_state(g)


class Chain:
    def __init__(self, state: State) -> None:
        self.ledger = Ledger(state, audit=True)
        self.nonces: dict[bytes, int] = {}

    def tx(self, key: Keypair, body: object) -> bytes:
        n = self.nonces.get(key.public, 0)
        self.nonces[key.public] = n + 1
        return seal(replace(body, nonce=n, fee=FEE), key, CHAIN)  # type: ignore[type-var]

    def block(self, *txs: bytes) -> tuple[int, ...]:
        h = self.ledger.height + 1
        out = self.ledger.finalize_block(BlockContext(h, h * 1000, VALIDATOR.public, txs, (), b"\0" * 32))
        if installed(self.ledger.state):
            audit_market(self.ledger.state)
        return out.rejected


def register(key: Keypair, stake: int = 200_000) -> RegisterWorker:
    secret = elections.forced_error_commitment(b"s" + key.public)
    return RegisterWorker(DeviceClass.CPU, 4096, 10**12, 5, stake, secret, 0, 0)


def submit(price: int = 40, salt: int = 0) -> SubmitTask:
    return SubmitTask(b"\1" * 32, 1_000, 640, 10, 16, DeviceClass.CPU, 1024, True, price, salt, NO_BASE, 0, 0)


def market_tables(state: State) -> tuple[bytes, ...]:
    roots = tuple(state.table_root(t) for t in (WORKERS, TASKS, META))
    return (*roots, state.pool(MARKET_POOL).to_bytes(8, "big"))


def test_a_market_tx_applies_through_the_ledger_and_moves_the_state_root() -> None:
    chain = Chain(genesis())
    before = chain.ledger.app_hash()
    assert chain.block(chain.tx(WORKER, register(WORKER))) == ()
    market = load_market(chain.ledger.state)
    assert market.workers[WORKER.public].stake == 200_000
    assert chain.ledger.state.pool(MARKET_POOL) == 200_000
    assert chain.ledger.state.account(WORKER.public).balance == BALANCE - 200_000 - FEE
    assert chain.ledger.app_hash() != before


def test_a_refused_market_tx_leaves_the_market_untouched_but_pays_its_fee() -> None:
    chain = Chain(genesis())
    before = market_tables(chain.ledger.state)
    assert chain.block(chain.tx(SUBMITTER, submit(price=0))) == (0,)  # below the price floor
    assert market_tables(chain.ledger.state) == before
    acct = chain.ledger.state.account(SUBMITTER.public)
    assert (acct.balance, acct.nonce) == (BALANCE - FEE, 1)


def test_a_rule_failing_after_its_debit_is_rolled_back_by_the_ledger_journal() -> None:
    chain = Chain(genesis())
    before = market_tables(chain.ledger.state)
    # The worker cannot pay its stake: the debit fails inside the rule.
    assert chain.block(chain.tx(SUBMITTER, register(SUBMITTER, stake=BALANCE * 2))) == (0,)
    assert market_tables(chain.ledger.state) == before
    audit_supply(chain.ledger.state)


def test_check_tx_and_proposal_simulation_never_change_the_market() -> None:
    chain = Chain(genesis())
    before = chain.ledger.app_hash()
    raw = chain.tx(WORKER, register(WORKER))
    chain.ledger.check_tx(raw)
    assert chain.ledger.select_txs([raw], 1 << 20) == [raw]
    assert chain.ledger.app_hash() == before and WORKER.public not in load_market(chain.ledger.state).workers


def test_unplaceable_task_is_refunded_by_the_end_block_hook() -> None:
    chain = Chain(genesis())
    chain.block(chain.tx(SUBMITTER, submit()))
    tid = task_id_of(SUBMITTER.public, submit())
    assert load_market(chain.ledger.state).tasks[tid].status == Status.OPEN
    for _ in range(DEVNET.placement_blocks + 1):
        chain.block()
    task = load_market(chain.ledger.state).tasks[tid]
    assert task.status == Status.REFUNDED and task.outcome == "unplaceable"
    assert chain.ledger.state.account(SUBMITTER.public).balance == BALANCE - FEE
    assert chain.ledger.state.pool(MARKET_POOL) == 0


def test_snapshot_restores_the_same_market_and_state_root() -> None:
    chain = Chain(genesis())
    chain.block(chain.tx(WORKER, register(WORKER)), chain.tx(SUBMITTER, submit()))
    chain.block()
    state = chain.ledger.state
    restored = State.restore(state.params, state.export())
    assert restored.root() == state.root()
    assert market_root(load_market(restored)) == market_root(load_market(state))


def test_the_custody_audit_catches_books_that_disagree_with_the_pool() -> None:
    chain = Chain(genesis())
    chain.block(chain.tx(WORKER, register(WORKER)))
    state = chain.ledger.state
    rec = state.get(WORKERS, WORKER.public)
    state.put(WORKERS, WORKER.public, replace(rec, stake=rec.stake + 1))
    with pytest.raises(SupplyError):
        audit_market(state)


def test_a_plain_ledger_carries_no_market_tables_and_refuses_market_txs() -> None:
    chain = Chain(genesis(with_market=False))
    assert not installed(chain.ledger.state)
    assert chain.block(chain.tx(WORKER, register(WORKER))) == (0,)
    chain.block()
    assert chain.ledger.state.count(WORKERS) == 0 and chain.ledger.state.get(META, SINGLETON) is None
