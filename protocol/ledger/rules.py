"""The ledger's state transition, Ethereum-consensus-spec style.

Each `process_x(state, ...)` states its checks one per commented rule, all before the
first write, and moves value only through `primitives`, so supply is conserved by
construction. A block is: begin (height, beacon, matured unbondings), evidence, txs
(ante: nonce and fee; then the type's rule), end (fees to the proposer, epoch step).
"""

from __future__ import annotations

from typing import Any

from protocol.app import BlockContext, Validator
from protocol.encoding import sha256
from protocol.ledger.entries import Account, ChainMeta, EvidenceSeen, ValidatorEntry, ValidatorSnapshot
from protocol.ledger.errors import (
    BlockError,
    DuplicateEvidence,
    FeeTooLow,
    InsufficientFunds,
    InvalidAmount,
    NonceError,
    StaleEvidence,
)
from protocol.ledger.evidence import Equivocation
from protocol.ledger.params import LedgerParams
from protocol.ledger.primitives import (
    FEE_POOL,
    SlashResult,
    begin_unbonding,
    bond,
    burn_from_balance,
    from_pool,
    release_matured,
    share,
    slash,
    slashable,
    to_pool,
    transfer,
)
from protocol.ledger.registry import register_tx
from protocol.ledger.state import EVIDENCE, STAKES, VALIDATOR_SETS, State
from protocol.ledger.txs import Bond, SignedTx, SubmitEvidence, Transfer, Unbond

BEACON_DOMAIN = b"polnet/beacon/v1\x00"


# --- helpers -----------------------------------------------------------------------------------


def epoch_of(params: LedgerParams, height: int) -> int:
    """Heights 1..L are epoch 0, L+1..2L epoch 1, ...; genesis (0) belongs to epoch 0."""
    return max(height - 1, 0) // params.epoch_length


def min_fee(params: LedgerParams, size: int) -> int:
    return params.base_fee + params.fee_per_byte * size


def next_beacon(prev: bytes, height: int, last_commit_hash: bytes) -> bytes:
    """Hash chain over committed blocks: unpredictable before the previous commit exists,
    identical on every node after. (A proposer can withhold a block to re-roll it once;
    elections that need more read the beacon some blocks after the commitment.)"""
    return sha256(BEACON_DOMAIN + prev + height.to_bytes(8, "big") + last_commit_hash)


# --- ante: what every transaction pays ---------------------------------------------------------


def check_fee(params: LedgerParams, tx: SignedTx[Any]) -> None:
    # Rule: the fee covers the base fee plus the per-byte fee of the signed tx.
    if tx.body.fee < min_fee(params, tx.size):
        raise FeeTooLow(f"fee {tx.body.fee} below minimum {min_fee(params, tx.size)}")


def process_ante(state: State, tx: SignedTx[Any]) -> None:
    """Consume the nonce and charge the fee; kept even if the tx's own rule then fails."""
    acct = state.account(tx.sender)
    # Rule: the nonce is exactly the account's next one (lower: replay; higher: gap).
    if tx.body.nonce != acct.nonce:
        raise NonceError(f"nonce {tx.body.nonce}, account expects {acct.nonce}")
    check_fee(state.params, tx)
    # Rule: the account can pay the fee.
    if acct.balance < tx.body.fee:
        raise InsufficientFunds(f"balance {acct.balance} cannot pay fee {tx.body.fee}")
    state.set_account(tx.sender, Account(acct.balance, acct.nonce + 1))
    burned = share(tx.body.fee, state.params.fee_burn_ppm)
    burn_from_balance(state, tx.sender, burned)
    to_pool(state, tx.sender, FEE_POOL, tx.body.fee - burned)


# --- transactions ----------------------------------------------------------------------------------


def check_transfer(tx: SignedTx[Transfer]) -> None:
    # Rule: a transfer moves a positive amount.
    if tx.body.amount == 0:
        raise InvalidAmount("transfer amount must be positive")
    # Rule: not to oneself (it would only burn a fee and bloat the chain).
    if tx.body.to == tx.sender:
        raise InvalidAmount("transfer to self")


def process_transfer(state: State, tx: SignedTx[Transfer]) -> None:
    check_transfer(tx)
    # Rule: the sender holds the amount (after the fee). `transfer` raises InsufficientFunds.
    transfer(state, tx.sender, tx.body.to, tx.body.amount)


def check_bond(tx: SignedTx[Bond]) -> None:
    # Rule: at least the minimum bond is checked statefully (params live in the state);
    # statelessly, a bond must be positive.
    if tx.body.amount == 0:
        raise InvalidAmount("bond amount must be positive")


def process_bond(state: State, tx: SignedTx[Bond]) -> None:
    check_bond(tx)
    # Rule: at least min_bond, so stakes are not dust.
    if tx.body.amount < state.params.min_bond:
        raise InvalidAmount(f"bond {tx.body.amount} below min_bond {state.params.min_bond}")
    # Rule: the sender holds the amount. `bond` raises InsufficientFunds.
    bond(state, tx.sender, tx.body.amount)


def check_unbond(tx: SignedTx[Unbond]) -> None:
    # Rule: an unbond moves a positive amount.
    if tx.body.amount == 0:
        raise InvalidAmount("unbond amount must be positive")


def process_unbond(state: State, tx: SignedTx[Unbond]) -> None:
    check_unbond(tx)
    st = state.stake(tx.sender)
    # Rule: at least min_bond, unless it unbonds everything that is left.
    if tx.body.amount < state.params.min_bond and tx.body.amount != st.bonded:
        raise InvalidAmount(f"unbond {tx.body.amount} below min_bond {state.params.min_bond}")
    # Rules (in `begin_unbonding`): enough bonded stake, of which enough unlocked, and
    # fewer than max_unbonding_entries pending. Released unbonding_period blocks later.
    begin_unbonding(state, tx.sender, tx.body.amount, state.height + state.params.unbonding_period)


def process_submit_evidence(state: State, tx: SignedTx[SubmitEvidence]) -> None:
    process_evidence(state, tx.body.evidence, reporter=tx.sender)


register_tx(Transfer, process_transfer, check_transfer)
register_tx(Bond, process_bond, check_bond)
register_tx(Unbond, process_unbond, check_unbond)
register_tx(SubmitEvidence, process_submit_evidence)


# --- evidence --------------------------------------------------------------------------------------


def validator_powers(state: State, height: int) -> dict[bytes, int]:
    snap: ValidatorSnapshot | None = state.get(VALIDATOR_SETS, _epoch_key(epoch_of(state.params, height)))
    if snap is None:
        raise StaleEvidence(f"no validator set kept for height {height}")
    return {v.pubkey: v.power for v in snap.validators}


def process_evidence(state: State, raw: bytes, reporter: bytes) -> SlashResult:
    """Slash an equivocation once, rewarding `reporter` (the tx sender or the proposer)."""
    params = state.params

    def powers_at(height: int) -> dict[bytes, int]:
        """Called by the verifier once it has decoded the claimed height, before any
        signature is checked, so stale evidence is refused cheaply."""
        # Rule: not from the future (the block being applied is the newest height).
        if height > state.height:
            raise StaleEvidence(f"evidence height {height} is after the current height {state.height}")
        # Rule: not older than max_evidence_age (its record of being slashed is pruned).
        if height + params.max_evidence_age < state.height:
            raise StaleEvidence(f"evidence height {height} older than {params.max_evidence_age} blocks")
        return validator_powers(state, height)

    # Rule: the evidence proves an equivocation by a member of the validator set of its
    # height (consensus's rules: same signer, same position, different votes, valid
    # signatures).
    eq: Equivocation = state.verify_evidence(state.meta.chain_id, raw, powers_at)
    # Rule: each equivocation (offender, height, round, step) is slashed exactly once.
    if state.get(EVIDENCE, eq.key) is not None:
        raise DuplicateEvidence("equivocation already slashed")
    state.put(EVIDENCE, eq.key, EvidenceSeen(eq.offender, eq.height))
    amount = share(slashable(state, eq.offender), params.slash_equivocation_ppm)
    return slash(
        state,
        eq.offender,
        amount,
        beneficiary=reporter,
        reward_ppm=params.whistleblower_reward_ppm,
        jail=True,
    )


# --- block boundaries ------------------------------------------------------------------------------


def begin_block(state: State, block: BlockContext) -> None:
    meta = state.meta
    # Rule: blocks apply in order, one height at a time.
    if block.height != meta.height + 1:
        raise BlockError(f"block height {block.height} after state height {meta.height}")
    # Block time is monotone: consensus enforces it, and the ledger clamps rather than
    # trusting it, because deadlines in extensions compare against it.
    time = max(block.time, meta.time)
    beacon = next_beacon(meta.beacon, block.height, block.last_commit_hash)
    state.set_meta(ChainMeta(meta.chain_id, block.height, time, beacon, meta.params_hash))
    release_matured(state, block.height)


def end_block(state: State, block: BlockContext) -> None:
    fees = state.pool(FEE_POOL)
    if fees and len(block.proposer) == 32:
        from_pool(state, FEE_POOL, block.proposer, fees)
    if block.height % state.params.epoch_length == 0:
        advance_epoch(state, block.height)


def compute_validator_set(state: State) -> tuple[ValidatorEntry, ...]:
    """Top stakers by bonded stake (ties by key), unjailed and above the minimum, capped."""
    params = state.params
    eligible = [
        (st.bonded, who)
        for who, st in state.items(STAKES)
        if not st.jailed and st.bonded >= params.min_validator_stake
    ]
    eligible.sort(key=lambda e: (-e[0], e[1]))
    return tuple(ValidatorEntry(who, power) for power, who in eligible[: params.max_validators])


def advance_epoch(state: State, height: int) -> None:
    """Snapshot the set for the epoch starting at height+1; forget what evidence no longer needs."""
    params = state.params
    epoch = height // params.epoch_length
    validators = compute_validator_set(state)
    if not validators:
        # A chain with no eligible staker would halt; keep the previous set instead.
        prev: ValidatorSnapshot | None = state.get(VALIDATOR_SETS, _epoch_key(epoch - 1))
        validators = prev.validators if prev is not None else ()
    state.put(VALIDATOR_SETS, _epoch_key(epoch), ValidatorSnapshot(epoch, validators))
    horizon = height - params.max_evidence_age
    keep_from = epoch_of(params, max(horizon, 0))
    for key, snap in state.items(VALIDATOR_SETS):
        if snap.epoch >= keep_from:
            break
        state.put(VALIDATOR_SETS, key, None)
    for key, seen in state.items(EVIDENCE):
        if seen.height < horizon:
            state.put(EVIDENCE, key, None)


def _epoch_key(epoch: int) -> bytes:
    return epoch.to_bytes(8, "big")


def validators_for(state: State, height: int) -> tuple[Validator, ...]:
    snap: ValidatorSnapshot | None = state.get(VALIDATOR_SETS, _epoch_key(epoch_of(state.params, height)))
    if snap is None:
        raise KeyError(f"no validator set snapshot for height {height}")
    return tuple(Validator(v.pubkey, v.power) for v in snap.validators)


__all__ = [
    "advance_epoch",
    "begin_block",
    "check_fee",
    "compute_validator_set",
    "end_block",
    "epoch_of",
    "min_fee",
    "next_beacon",
    "process_ante",
    "process_bond",
    "process_evidence",
    "process_submit_evidence",
    "process_transfer",
    "process_unbond",
    "validators_for",
]
