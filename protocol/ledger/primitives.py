"""Supply-preserving moves of value: the only way rules touch balances.

Every public function here moves an amount from one holder to another (account
balance, bonded stake, unbonding entry, pool) or into `burned`, so a rule built from
them cannot create or destroy tokens by accident, and `audit_supply` holds by
construction. The market builds escrow, stake locks, payments and slashes from these.

Each function checks before it writes, so on error nothing has changed; rules still
run inside `State.atomic()` so that a failure after several moves undoes them all.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.ledger.entries import Account, Stake, Unbonding
from protocol.ledger.errors import (
    InsufficientFunds,
    InsufficientStake,
    InvalidAmount,
    StakeLocked,
    SupplyError,
    TooManyUnbondings,
)
from protocol.ledger.params import MAX_SUPPLY, PPM
from protocol.ledger.state import ACCOUNTS, POOLS, STAKES, UNBONDING, State

#: Well-known pools. Escrows are pools too, named with `escrow_pool`.
JACKPOT_POOL = "jackpot"
FEE_POOL = "fees"
ESCROW_PREFIX = "escrow/"


def escrow_pool(kind: str, ident: bytes) -> str:
    """Name of the escrow pool for one object (a task fee, a dispute bond...)."""
    return f"{ESCROW_PREFIX}{kind}/{ident.hex()}"


def _amount(amount: int) -> int:
    if type(amount) is not int or not 0 <= amount <= MAX_SUPPLY:
        raise InvalidAmount(f"amount {amount!r} must be an int in [0, {MAX_SUPPLY}]")
    return amount


# --- balances and pools ---------------------------------------------------------------------


def _debit(state: State, who: bytes, amount: int) -> None:
    acct = state.account(who)
    if acct.balance < amount:
        raise InsufficientFunds(f"balance {acct.balance} < {amount}")
    state.set_account(who, Account(acct.balance - amount, acct.nonce))


def _credit(state: State, who: bytes, amount: int) -> None:
    acct = state.account(who)
    state.set_account(who, Account(acct.balance + amount, acct.nonce))


def _pool_debit(state: State, pool: str, amount: int) -> None:
    have = state.pool(pool)
    if have < amount:
        raise InsufficientFunds(f"pool {pool!r} holds {have} < {amount}")
    state.set_pool(pool, have - amount)


def transfer(state: State, src: bytes, dst: bytes, amount: int) -> None:
    _debit(state, src, _amount(amount))
    _credit(state, dst, amount)


def to_pool(state: State, who: bytes, pool: str, amount: int) -> None:
    """Move from an account into a pool (escrow a fee, pay a tax, put up a bond)."""
    _debit(state, who, _amount(amount))
    state.set_pool(pool, state.pool(pool) + amount)


def from_pool(state: State, pool: str, who: bytes, amount: int) -> None:
    """Pay out of a pool (settle an escrow, pay a jackpot, refund)."""
    _pool_debit(state, pool, _amount(amount))
    _credit(state, who, amount)


def pool_to_pool(state: State, src: str, dst: str, amount: int) -> None:
    _pool_debit(state, src, _amount(amount))
    state.set_pool(dst, state.pool(dst) + amount)


def burn_from_pool(state: State, pool: str, amount: int) -> None:
    _pool_debit(state, pool, _amount(amount))
    _add_burned(state, amount)


def burn_from_balance(state: State, who: bytes, amount: int) -> None:
    _debit(state, who, _amount(amount))
    _add_burned(state, amount)


def _add_burned(state: State, amount: int) -> None:
    s = state.supply
    state.set_supply(type(s)(s.genesis, s.burned + amount, s.unbond_seq))


def share(amount: int, ppm: int) -> int:
    """`ppm` parts per million of `amount`, rounded down (the same on every node)."""
    return amount * ppm // PPM


# --- stake -----------------------------------------------------------------------------------


def bond(state: State, who: bytes, amount: int) -> None:
    """Move balance into bonded stake."""
    _debit(state, who, _amount(amount))
    st = state.stake(who)
    state.set_stake(who, Stake(st.bonded + amount, st.locked, st.jailed, st.unbondings))


def begin_unbonding(state: State, who: bytes, amount: int, release_height: int) -> bytes:
    """Move unlocked bonded stake into the unbonding queue; returns the entry key.

    Unbonding stake stays slashable until released, which is what makes the
    unbonding period a deterrent rather than a formality.
    """
    st = state.stake(who)
    _amount(amount)
    if st.bonded < amount:
        raise InsufficientStake(f"bonded {st.bonded} < {amount}")
    if st.bonded - st.locked < amount:
        raise StakeLocked(f"only {st.bonded - st.locked} of {st.bonded} bonded is unlocked")
    if st.unbondings >= state.params.max_unbonding_entries:
        raise TooManyUnbondings(f"{st.unbondings} unbonding entries already pending")
    s = state.supply
    key = release_height.to_bytes(8, "big") + s.unbond_seq.to_bytes(8, "big")
    state.set_supply(type(s)(s.genesis, s.burned, s.unbond_seq + 1))
    state.put(UNBONDING, key, Unbonding(who, amount, release_height))
    state.set_stake(who, Stake(st.bonded - amount, st.locked, st.jailed, st.unbondings + 1))
    return key


def release_matured(state: State, height: int) -> int:
    """Pay out every unbonding entry due at or before `height`; returns how many."""
    released = 0
    for key, entry in state.items(UNBONDING):
        if entry.release_height > height:
            break  # keys sort by release height first
        state.put(UNBONDING, key, None)
        _credit(state, entry.owner, entry.amount)
        st = state.stake(entry.owner)
        state.set_stake(entry.owner, Stake(st.bonded, st.locked, st.jailed, st.unbondings - 1))
        released += 1
    return released


def lock_stake(state: State, who: bytes, amount: int) -> None:
    """Hold part of a bonded stake for an obligation (a task, a verdict, a dispute)."""
    st = state.stake(who)
    if st.bonded - st.locked < _amount(amount):
        raise StakeLocked(f"only {st.bonded - st.locked} unlocked stake, {amount} needed")
    state.set_stake(who, Stake(st.bonded, st.locked + amount, st.jailed, st.unbondings))


def unlock_stake(state: State, who: bytes, amount: int) -> None:
    st = state.stake(who)
    if st.locked < _amount(amount):
        raise InsufficientStake(f"only {st.locked} locked, cannot unlock {amount}")
    state.set_stake(who, Stake(st.bonded, st.locked - amount, st.jailed, st.unbondings))


@dataclass(frozen=True, slots=True)
class SlashResult:
    slashed: int  # taken from the offender in total
    reward: int  # of which paid to the beneficiary
    remainder: int  # of which burned or sent to `remainder_pool`


def slash(
    state: State,
    who: bytes,
    amount: int,
    *,
    beneficiary: bytes | None = None,
    reward_ppm: int = 0,
    remainder_pool: str | None = None,
    jail: bool = False,
) -> SlashResult:
    """Take up to `amount` from `who`'s bonded stake, then from its unbonding entries.

    Slashing what is available instead of failing is deliberate: an offender must not
    escape by having less stake than the penalty. Locks shrink with the stake.
    """
    _amount(amount)
    st = state.stake(who)
    from_bonded = min(st.bonded, amount)
    bonded = st.bonded - from_bonded
    state.set_stake(who, Stake(bonded, min(st.locked, bonded), st.jailed or jail, st.unbondings))
    taken = from_bonded + _slash_unbonding(state, who, amount - from_bonded)
    reward = share(taken, reward_ppm) if beneficiary is not None else 0
    if beneficiary is not None:
        _credit(state, beneficiary, reward)
    remainder = taken - reward
    if remainder_pool is None:
        _add_burned(state, remainder)
    else:
        state.set_pool(remainder_pool, state.pool(remainder_pool) + remainder)
    return SlashResult(taken, reward, remainder)


def _slash_unbonding(state: State, who: bytes, amount: int) -> int:
    taken = 0
    for key, entry in state.items(UNBONDING):
        if taken >= amount:
            break
        if entry.owner != who:
            continue
        cut = min(entry.amount, amount - taken)
        taken += cut
        if cut == entry.amount:
            state.put(UNBONDING, key, None)
            st = state.stake(who)
            state.set_stake(who, Stake(st.bonded, st.locked, st.jailed, st.unbondings - 1))
        else:
            state.put(UNBONDING, key, Unbonding(who, entry.amount - cut, entry.release_height))
    return taken


def slashable(state: State, who: bytes) -> int:
    """Bonded plus unbonding stake: what a slash of `who` can reach."""
    total: int = state.stake(who).bonded
    for _, entry in state.items(UNBONDING):
        if entry.owner == who:
            total += entry.amount
    return total


# --- audit -----------------------------------------------------------------------------------


def total_supply(state: State) -> int:
    """Everything that holds value, plus what was burned."""
    total: int = state.supply.burned
    for table, field in ((ACCOUNTS, "balance"), (STAKES, "bonded"), (UNBONDING, "amount"), (POOLS, "amount")):
        for _, entry in state.items(table):
            total += getattr(entry, field)
    return total


def audit_supply(state: State) -> None:
    """Raise SupplyError unless balances + stakes + unbonding + pools + burned == genesis.

    Escrows are pools, so they are included; extension tables hold no value by rule.
    """
    total = total_supply(state)
    if total != state.supply.genesis:
        raise SupplyError(f"supply {total} != genesis supply {state.supply.genesis}")
