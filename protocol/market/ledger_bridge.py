"""The market's money on the real ledger: its custody is one ledger pool.

The ledger's rule is that extension tables never hold value, so everything the market
holds (stakes, escrows, bonds, its jackpot) sits in the pool `MARKET_POOL`, and the
market's own books say who it belongs to. Moving value in or out of the market is a
ledger `to_pool`/`from_pool`; moves inside the market (a slash feeding the jackpot)
touch no ledger entry. `custody_matches` is the cross-check that the books and the pool
agree, so the ledger's `audit_supply` and the market's audit are the same statement.
"""

from __future__ import annotations

from protocol.ledger.errors import InsufficientFunds as LedgerInsufficientFunds
from protocol.ledger.primitives import from_pool, to_pool, total_supply
from protocol.ledger.state import State
from protocol.market.errors import InsufficientFunds
from protocol.market.state import MarketState

MARKET_POOL = "market"


class LedgerAccounts:
    """`protocol.market.state.Accounts` over a ledger `State`."""

    def __init__(self, state: State) -> None:
        self.state = state

    def balance(self, who: bytes) -> int:
        return self.state.account(who).balance

    def debit(self, who: bytes, amount: int) -> None:
        try:
            to_pool(self.state, who, MARKET_POOL, amount)
        except LedgerInsufficientFunds as exc:
            raise InsufficientFunds(str(exc)) from exc

    def credit(self, who: bytes, amount: int) -> None:
        from_pool(self.state, MARKET_POOL, who, amount)

    def bonded(self, who: bytes) -> int:
        return self.state.stake(who).bonded

    def total(self) -> int:
        """All value outside the market's custody (so market.supply() == ledger supply)."""
        return total_supply(self.state) - self.state.pool(MARKET_POOL)


def custody_matches(market: MarketState, ledger: State) -> bool:
    return market.held() + market.burned == ledger.pool(MARKET_POOL)
