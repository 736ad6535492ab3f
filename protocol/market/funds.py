"""Supply-preserving money moves between accounts and the market's custody.

Every function moves value from exactly one place to another, so the supply audit
(`MarketState.supply()`) is conserved by construction; nothing here mints or burns.
"""

from __future__ import annotations

from protocol.market.params import BPS
from protocol.market.state import MarketState, Penalty, PenaltyKind, Task, Worker


def pay_from_escrow(state: MarketState, task: Task, who: bytes, amount: int) -> int:
    """Pay up to `amount` out of a task's escrow; returns what was paid."""
    paid = min(amount, task.escrow)
    task.escrow -= paid
    state.accounts.credit(who, paid)
    return paid


def escrow_to_jackpot(state: MarketState, task: Task, amount: int) -> int:
    moved = min(amount, task.escrow)
    task.escrow -= moved
    state.jackpot += moved
    return moved


def pay_from_jackpot(state: MarketState, who: bytes, amount: int) -> int:
    """The pool pays what it holds; a short pool pays less (the tax refills it)."""
    paid = min(amount, state.jackpot)
    state.jackpot -= paid
    state.accounts.credit(who, paid)
    return paid


def slash(worker: Worker, fraction_bps: int) -> int:
    """Take a share of a worker's stake; the caller decides where it goes."""
    amount = worker.stake * fraction_bps // BPS
    worker.stake -= amount
    return amount


def penalise(state: MarketState, task: Task, who: bytes, fraction_bps: int, kind: PenaltyKind) -> int:
    """Slash `who` (a worker) for `task`, recorded on the task; the caller decides where it goes."""
    worker = state.workers.get(who)
    amount = slash(worker, fraction_bps) if worker is not None else 0
    task.penalties.append(Penalty(who, amount, kind))
    return amount


def forfeit(state: MarketState, task: Task, who: bytes, bond: int) -> None:
    """A challenger's bond goes to the jackpot, recorded on the task."""
    state.jackpot += bond
    task.penalties.append(Penalty(who, bond, PenaltyKind.BOND_FORFEIT))


def distribute(state: MarketState, amount: int, winners: list[bytes], reward_bps: int) -> None:
    """Split `reward_bps` of a slashed amount equally among winners; the rest (and the
    rounding dust) funds the jackpot pool."""
    unique = sorted(set(winners))
    share = amount * reward_bps // BPS // len(unique) if unique else 0
    for who in unique:
        state.accounts.credit(who, share)
    state.jackpot += amount - share * len(unique)


def release(state: MarketState, who: bytes | None) -> None:
    """One duty of `who` ended; its stake can leave once none are open."""
    if who is not None and who in state.workers:
        worker = state.workers[who]
        worker.jobs = max(0, worker.jobs - 1)
