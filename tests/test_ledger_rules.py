"""One test per ledger rule, each pinning the error it must raise."""

from __future__ import annotations

import pytest

from protocol.consensus.votes import VoteType
from protocol.envelope import seal
from protocol.errors import BadSignature, WrongChain
from protocol.identity import Keypair
from protocol.ledger.entries import Account
from protocol.ledger.errors import (
    BlockError,
    DuplicateEvidence,
    FeeTooLow,
    InsufficientFunds,
    InsufficientStake,
    InvalidAmount,
    InvalidEvidence,
    NonceError,
    StakeLocked,
    StaleEvidence,
    TooManyUnbondings,
    UnknownTxType,
)
from protocol.ledger.params import DEVNET, PPM
from protocol.ledger.primitives import FEE_POOL, audit_supply, lock_stake, slashable
from protocol.ledger.rules import min_fee, process_evidence
from protocol.ledger.txs import Bond, SubmitEvidence, Transfer, Unbond
from protocol.messages import Ping
from tests.test_ledger_support import KEYS, PUB, apply, block, equivocation, ledger, tx

FEE = DEVNET.base_fee


def test_transfer_moves_amount_and_charges_fee_split_between_burn_and_proposer() -> None:
    led = ledger()
    assert apply(led, tx(KEYS[3], Transfer(PUB[4], 700, 0, FEE)), proposer=PUB[5]) == ()
    burned = FEE * DEVNET.fee_burn_ppm // PPM
    assert led.state.account(PUB[3]) == Account(10_000 - 700 - FEE, 1)
    assert led.state.account(PUB[4]).balance == 10_700
    assert led.state.account(PUB[5]).balance == 10_000 + FEE - burned
    assert led.state.supply.burned == burned
    assert led.state.pool(FEE_POOL) == 0


def test_replayed_transfer_is_rejected_by_nonce() -> None:
    led = ledger()
    t = tx(KEYS[3], Transfer(PUB[4], 1, 0, FEE))
    assert apply(led, t) == ()
    with pytest.raises(NonceError):
        led.check_tx(t)
    assert apply(led, t) == (0,)
    assert led.state.account(PUB[4]).balance == 10_001


def test_nonce_gap_is_rejected_in_a_block_but_admitted_to_the_mempool_within_bound() -> None:
    led = ledger()
    ahead = tx(KEYS[3], Transfer(PUB[4], 1, 5, FEE))
    led.check_tx(ahead)
    with pytest.raises(NonceError):
        led.check_tx(tx(KEYS[3], Transfer(PUB[4], 1, 10_000, FEE)))
    assert apply(led, ahead) == (0,)
    assert led.state.account(PUB[3]).nonce == 0


def test_fee_below_minimum_is_rejected() -> None:
    led = ledger()
    with pytest.raises(FeeTooLow):
        led.check_tx(tx(KEYS[3], Transfer(PUB[4], 1, 0, FEE - 1)))


def test_min_fee_grows_with_tx_size() -> None:
    assert min_fee(DEVNET.replace(fee_per_byte=3), 100) == DEVNET.base_fee + 300


def test_transfer_more_than_balance_is_rejected_but_fee_is_paid_in_a_block() -> None:
    led = ledger()
    t = tx(KEYS[3], Transfer(PUB[4], 10_000, 0, FEE))
    with pytest.raises(InsufficientFunds):
        led.check_tx(t)
    assert apply(led, t) == (0,)
    assert led.state.account(PUB[3]) == Account(10_000 - FEE, 1)
    assert led.state.account(PUB[4]).balance == 10_000


def test_account_that_cannot_pay_the_fee_leaves_no_trace() -> None:
    led = ledger(balances=(10_000, 10_000, 10_000, 5, 0, 0))
    t = tx(KEYS[3], Transfer(PUB[4], 1, 0, FEE))
    with pytest.raises(InsufficientFunds):
        led.check_tx(t)
    root = led.app_hash()
    assert apply(led, t) == (0,)
    assert led.state.account(PUB[3]) == Account(5, 0)
    assert led.app_hash() != root  # the height and beacon moved, but:
    assert led.state.supply.burned == 0


def test_zero_and_self_transfers_are_invalid_amounts() -> None:
    led = ledger()
    with pytest.raises(InvalidAmount):
        led.check_tx(tx(KEYS[3], Transfer(PUB[4], 0, 0, FEE)))
    with pytest.raises(InvalidAmount):
        led.check_tx(tx(KEYS[3], Transfer(PUB[3], 5, 0, FEE)))


def test_tx_for_another_chain_or_forged_signature_is_refused() -> None:
    led = ledger()
    with pytest.raises(WrongChain):
        led.check_tx(seal(Transfer(PUB[4], 1, 0, FEE), KEYS[3], "other-chain"))
    raw = bytearray(tx(KEYS[3], Transfer(PUB[4], 1, 0, FEE)))
    raw[-1] ^= 1
    with pytest.raises(BadSignature):
        led.check_tx(bytes(raw))


def test_message_that_is_not_a_transaction_is_unknown_tx_type() -> None:
    led = ledger()
    with pytest.raises(UnknownTxType):
        led.check_tx(tx(KEYS[3], Ping(1)))


def test_bond_moves_balance_to_stake_and_below_min_bond_is_refused() -> None:
    led = ledger(params=DEVNET.replace(min_bond=50))
    assert apply(led, tx(KEYS[3], Bond(500, 0, FEE))) == ()
    assert led.state.stake(PUB[3]).bonded == 500
    assert led.state.account(PUB[3]).balance == 10_000 - 500 - FEE
    with pytest.raises(InvalidAmount):
        led.check_tx(tx(KEYS[3], Bond(49, 1, FEE)))
    with pytest.raises(InsufficientFunds):
        led.check_tx(tx(KEYS[3], Bond(1_000_000, 1, FEE)))


def test_unbond_is_released_exactly_at_the_unbonding_height() -> None:
    led = ledger()
    assert apply(led, tx(KEYS[1], Unbond(400, 0, FEE)), proposer=PUB[0]) == ()
    start = led.height
    balance = led.state.account(PUB[1]).balance
    assert led.state.stake(PUB[1]).bonded == 600
    while led.height < start + DEVNET.unbonding_period - 1:
        apply(led)
        assert led.state.account(PUB[1]).balance == balance
    apply(led)
    assert led.height == start + DEVNET.unbonding_period
    assert led.state.account(PUB[1]).balance == balance + 400
    assert led.state.stake(PUB[1]).unbondings == 0


def test_unbond_more_than_bonded_or_locked_is_refused() -> None:
    led = ledger()
    with pytest.raises(InsufficientStake):
        led.check_tx(tx(KEYS[1], Unbond(1_001, 0, FEE)))
    lock_stake(led.state, PUB[1], 900)
    with pytest.raises(StakeLocked):
        led.check_tx(tx(KEYS[1], Unbond(101, 0, FEE)))
    led.check_tx(tx(KEYS[1], Unbond(100, 0, FEE)))


def test_unbonding_entries_are_bounded_per_account() -> None:
    led = ledger()
    n = DEVNET.max_unbonding_entries
    assert apply(led, *(tx(KEYS[1], Unbond(10, i, FEE)) for i in range(n))) == ()
    with pytest.raises(TooManyUnbondings):
        led.check_tx(tx(KEYS[1], Unbond(10, n, FEE)))


def test_evidence_tx_slashes_offender_rewards_reporter_and_jails() -> None:
    led = ledger()
    apply(led)
    before = slashable(led.state, PUB[1])
    slash = before * DEVNET.slash_equivocation_ppm // PPM
    reward = slash * DEVNET.whistleblower_reward_ppm // PPM
    assert apply(led, tx(KEYS[4], SubmitEvidence(equivocation(KEYS[1], 1), 0, FEE)), proposer=PUB[0]) == ()
    assert led.state.stake(PUB[1]).bonded == before - slash
    assert led.state.stake(PUB[1]).jailed
    assert led.state.account(PUB[4]).balance == 10_000 - FEE + reward
    audit_supply(led.state)


def test_same_equivocation_is_slashed_exactly_once_even_with_a_different_proof() -> None:
    led = ledger()
    apply(led)
    ev = equivocation(KEYS[1], 1)
    other_proof = equivocation(KEYS[1], 1, salt=5)
    assert ev != other_proof
    apply(led, evidence=(ev,))
    bonded = led.state.stake(PUB[1]).bonded
    with pytest.raises(DuplicateEvidence), led.state.discard():
        process_evidence(led.state, ev, PUB[4])
    with pytest.raises(DuplicateEvidence), led.state.discard():
        process_evidence(led.state, other_proof, PUB[4])
    assert apply(led, tx(KEYS[4], SubmitEvidence(other_proof, 0, FEE)), evidence=(ev,)) == (0,)
    assert led.state.stake(PUB[1]).bonded == bonded


def test_equivocations_at_different_positions_are_each_slashed() -> None:
    led = ledger()
    apply(led)
    apply(led)
    evs = (
        equivocation(KEYS[1], 1),
        equivocation(KEYS[1], 1, step=VoteType.PRECOMMIT),
        equivocation(KEYS[1], 2),
    )
    b0 = led.state.stake(PUB[1]).bonded
    apply(led, evidence=evs)
    expected = b0
    for _ in evs:
        expected -= expected * DEVNET.slash_equivocation_ppm // PPM
    assert led.state.stake(PUB[1]).bonded == expected


def test_evidence_from_the_future_or_too_old_is_stale() -> None:
    led = ledger()
    apply(led)
    with pytest.raises(StaleEvidence), led.state.discard():
        process_evidence(led.state, equivocation(KEYS[1], 5), PUB[4])
    old = equivocation(KEYS[1], 1)
    for _ in range(DEVNET.max_evidence_age + 1):
        apply(led)
    with pytest.raises(StaleEvidence), led.state.discard():
        process_evidence(led.state, old, PUB[4])


def test_evidence_by_a_non_validator_or_garbage_is_invalid() -> None:
    led = ledger()
    apply(led)
    with pytest.raises(InvalidEvidence), led.state.discard():
        process_evidence(led.state, equivocation(KEYS[4], 1), PUB[4])
    with pytest.raises(InvalidEvidence), led.state.discard():
        process_evidence(led.state, b"\x93\x01\x02\x03", PUB[4])


def test_slash_reaches_unbonding_stake() -> None:
    led = ledger()
    apply(led, tx(KEYS[1], Unbond(1_000, 0, FEE)))
    assert led.state.stake(PUB[1]).bonded == 0
    apply(led, evidence=(equivocation(KEYS[1], 1),))
    cut = 1_000 * DEVNET.slash_equivocation_ppm // PPM
    assert slashable(led.state, PUB[1]) == 1_000 - cut


def test_block_at_wrong_height_is_refused_without_changing_state() -> None:
    led = ledger()
    root = led.app_hash()
    bad = block(led)
    with pytest.raises(BlockError):
        led.finalize_block(type(bad)(5, 0, PUB[0], (), (), bad.last_commit_hash))
    assert led.app_hash() == root and led.height == 0


def test_validator_set_changes_only_at_epoch_boundaries() -> None:
    led = ledger()
    genesis_set = led.validators()
    assert {v.pubkey for v in genesis_set} == set(PUB[:3])
    apply(led, tx(KEYS[3], Bond(5_000, 0, FEE)))
    while led.height < DEVNET.epoch_length - 1:
        apply(led)
        assert led.validators() == genesis_set
    apply(led)
    assert led.validators()[0].pubkey == PUB[3]
    assert led.validators()[0].power == 5_000


def test_validator_set_is_capped_to_top_stakers_and_excludes_jailed() -> None:
    params = DEVNET.replace(max_validators=2)
    led = ledger(params, stakes=(3_000, 2_000, 1_000, 0, 0, 0))
    assert [v.pubkey for v in led.validators()] == [PUB[0], PUB[1]]
    apply(led, evidence=(equivocation(KEYS[0], 0),))
    while led.height % params.epoch_length:
        apply(led)
    assert [v.pubkey for v in led.validators()] == [PUB[1], PUB[2]]


def test_select_txs_keeps_only_applicable_txs_in_order_within_size() -> None:
    led = ledger()
    good0 = tx(KEYS[3], Transfer(PUB[4], 1, 0, FEE))
    good1 = tx(KEYS[3], Transfer(PUB[4], 1, 1, FEE))
    replay = good0
    broke = tx(KEYS[4], Transfer(PUB[3], 1_000_000, 0, FEE))
    root = led.app_hash()
    assert led.select_txs([good0, replay, broke, good1], 10**6) == [good0, good1]
    assert led.select_txs([good0, good1], len(good0)) == [good0]
    assert led.app_hash() == root


def test_beacon_is_a_hash_chain_over_commits() -> None:
    a, b = ledger(), ledger()
    assert a.beacon() == b.beacon()
    apply(a)
    b.finalize_block(type(block(b))(1, 1_000, PUB[0], (), (), b"\x07" * 32))
    assert a.beacon() != b.beacon()
    assert a.app_hash() != b.app_hash()


def test_unknown_signer_with_no_account_cannot_transact() -> None:
    led = ledger()
    stranger = Keypair.derive("stranger")
    with pytest.raises(InsufficientFunds):
        led.check_tx(tx(stranger, Transfer(PUB[0], 1, 0, FEE)))
