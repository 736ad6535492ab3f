"""State tables: the root depends only on content, writes roll back, snapshots are strict,
and an extension can add a table, a transaction and a block hook without touching the core."""

from __future__ import annotations

from dataclasses import dataclass

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from protocol.app import BlockContext
from protocol.encoding import pack, unpack
from protocol.errors import DecodeError, Malformed, NonCanonical
from protocol.ledger import State, audit_supply, register_block_hook, register_table, register_tx
from protocol.ledger.entries import Account
from protocol.ledger.errors import InsufficientFunds, InvalidAmount, StakeLocked, SupplyError
from protocol.ledger.params import DEVNET
from protocol.ledger.primitives import (
    JACKPOT_POOL,
    escrow_pool,
    from_pool,
    lock_stake,
    pool_to_pool,
    slash,
    to_pool,
    unlock_stake,
)
from protocol.ledger.state import ACCOUNTS, EMPTY_ROOT, SNAPSHOT_LIMITS, merkle_root
from protocol.ledger.txs import SignedTx
from protocol.schema import U64, Hash32, message
from tests.test_ledger_support import KEYS, PUB, apply, ledger, tx

entries = st.dictionaries(st.binary(min_size=1, max_size=8), st.integers(0, 2**40), max_size=30)


@settings(max_examples=60, deadline=None)
@given(entries, st.randoms(use_true_random=False))
def test_root_depends_on_content_not_insertion_order(data: dict[bytes, int], rnd: object) -> None:
    a, b = State(DEVNET), State(DEVNET)
    items = list(data.items())
    for k, v in items:
        a.put(ACCOUNTS, k, Account(v, 1))
    rnd.shuffle(items)  # type: ignore[attr-defined]
    for k, v in items:
        b.put(ACCOUNTS, k, Account(v + 1, 1))
    for k, v in items:
        b.put(ACCOUNTS, k, Account(v, 1))
    assert a.root() == b.root()
    assert a.export() == b.export()


def test_root_changes_with_any_value_and_empty_tables_do_not_count() -> None:
    s = State(DEVNET)
    assert s.root() == merkle_root([]) == EMPTY_ROOT
    s.put(ACCOUNTS, b"k", Account(1, 0))
    r1 = s.root()
    s.put(ACCOUNTS, b"k", Account(2, 0))
    assert s.root() != r1
    s.put(ACCOUNTS, b"k", None)
    assert s.root() == EMPTY_ROOT


def test_atomic_rolls_back_every_write_on_error_and_nested_frames_compose() -> None:
    s = State(DEVNET)
    s.put(ACCOUNTS, b"a", Account(5, 0))
    root = s.root()
    with pytest.raises(InvalidAmount), s.atomic():
        s.put(ACCOUNTS, b"a", Account(6, 0))
        s.put(ACCOUNTS, b"b", Account(1, 0))
        with s.atomic():
            s.put(ACCOUNTS, b"c", Account(1, 0))
        raise InvalidAmount("boom")
    assert s.root() == root and s.count(ACCOUNTS) == 1
    with s.atomic():
        s.put(ACCOUNTS, b"b", Account(1, 0))
        with pytest.raises(InvalidAmount), s.atomic():
            s.put(ACCOUNTS, b"c", Account(1, 0))
            raise InvalidAmount("inner only")
    assert s.keys(ACCOUNTS) == [b"a", b"b"]


def test_put_refuses_wrong_record_type_and_unregistered_table() -> None:
    s = State(DEVNET)
    with pytest.raises(TypeError):
        s.put(ACCOUNTS, b"a", 5)
    with pytest.raises(KeyError):
        s.put("nope", b"a", Account(1, 0))


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\xc1",
        pack({"a": 1}),
        pack([["account"]]),
        pack([["no-such-table", []]]),
        pack([["account", [[b"k"]]]]),
        pack([["account", [[b"k", b"\x92\x01"]]]]),
        pack([["account", [[b"k", pack([-1, 0])]]]]),
    ],
)
def test_corrupt_snapshot_is_a_decode_error(bad: bytes) -> None:
    with pytest.raises(DecodeError):
        State.restore(DEVNET, bad)


def test_primitives_conserve_supply_and_refuse_overdrafts() -> None:
    led = ledger()
    s = led.state
    esc = escrow_pool("task", b"\x01" * 32)
    to_pool(s, PUB[3], esc, 900)
    pool_to_pool(s, esc, JACKPOT_POOL, 100)
    from_pool(s, esc, PUB[4], 800)
    with pytest.raises(InsufficientFunds):
        from_pool(s, esc, PUB[4], 1)
    lock_stake(s, PUB[1], 600)
    with pytest.raises(StakeLocked):
        lock_stake(s, PUB[1], 401)
    result = slash(s, PUB[1], 700, beneficiary=PUB[5], reward_ppm=250_000, remainder_pool=JACKPOT_POOL)
    assert (result.slashed, result.reward, result.remainder) == (700, 175, 525)
    assert s.stake(PUB[1]).locked == 300  # locks shrink with the stake
    unlock_stake(s, PUB[1], 300)
    assert s.pool(JACKPOT_POOL) == 625
    audit_supply(s)
    s.put(ACCOUNTS, PUB[5], Account(s.account(PUB[5]).balance + 1, 0))
    with pytest.raises(SupplyError):
        audit_supply(s)


# --- an extension, as the market will write one ----------------------------------------------


@dataclass(frozen=True, slots=True)
class _Deposit:
    amount: U64
    opened_at: U64


@message(0x4F)
@dataclass(frozen=True, slots=True)
class _OpenDeposit:
    """Test-only extension tx: escrow an amount, refunded by a block hook 2 blocks later."""

    ident: Hash32
    amount: U64
    nonce: U64
    fee: U64


_TABLE = "test/deposit"


def _process_open(state: State, stx: SignedTx[_OpenDeposit]) -> None:
    # Rule: one deposit per id.
    if state.get(_TABLE, stx.body.ident + stx.sender) is not None:
        raise InvalidAmount("deposit exists")
    to_pool(state, stx.sender, escrow_pool("deposit", stx.body.ident + stx.sender), stx.body.amount)
    state.put(_TABLE, stx.body.ident + stx.sender, _Deposit(stx.body.amount, state.height))


def _refund_due(state: State, block: BlockContext) -> None:
    for key, dep in state.items(_TABLE):
        if dep.opened_at + 2 <= block.height:
            from_pool(state, escrow_pool("deposit", key), key[32:], dep.amount)
            state.put(_TABLE, key, None)


register_table(_TABLE, _Deposit)
register_tx(_OpenDeposit, _process_open)
register_block_hook("test-deposit", end=_refund_due)


def test_extension_tx_and_hook_run_through_the_core_with_rollback_and_supply() -> None:
    led = ledger()
    ident = b"\x09" * 32
    before = led.state.account(PUB[3]).balance
    assert apply(led, tx(KEYS[3], _OpenDeposit(ident, 2_000, 0, 10))) == ()
    assert led.state.count(_TABLE) == 1
    root_with_deposit = led.app_hash()
    assert apply(led, tx(KEYS[3], _OpenDeposit(ident, 2_000, 1, 10))) == (0,)  # rule failed, fee paid
    assert apply(led, tx(KEYS[3], _OpenDeposit(b"\x08" * 32, 10**9, 2, 10))) == (0,)  # overdraft rolled back
    assert led.state.count(_TABLE) == 0  # refunded by the hook at height 3
    assert led.state.account(PUB[3]).balance == before - 30
    assert root_with_deposit != led.app_hash()
    audit_supply(led.state)


def test_registering_the_same_name_for_something_else_is_refused() -> None:
    with pytest.raises(ValueError):
        register_table(_TABLE, Account)
    with pytest.raises(ValueError):
        register_tx(_OpenDeposit, lambda s, t: None)
    with pytest.raises(ValueError):
        register_block_hook("test-deposit", begin=_refund_due)
    with pytest.raises(TypeError):
        register_tx(_Deposit, _process_open)


def test_snapshot_with_duplicated_or_missing_records_is_refused() -> None:
    led = ledger()
    snap = led.snapshot()
    assert State.restore(DEVNET, snap).root() == led.app_hash()
    tables = unpack(snap, SNAPSHOT_LIMITS)
    accounts = next(t for t in tables if t[0] == ACCOUNTS)
    accounts[1].append(accounts[1][0])
    with pytest.raises(NonCanonical):
        State.restore(DEVNET, pack(tables))
    without_meta = [t for t in unpack(snap, SNAPSHOT_LIMITS) if t[0] != "meta"]
    with pytest.raises(Malformed, match="meta"):
        State.restore(DEVNET, pack(without_meta))
