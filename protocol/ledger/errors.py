"""Why a transaction, block or genesis was refused.

Split finely so that tests pin the exact rule that fired and the mempool can tell
"never valid" (bad amount) from "not valid yet" (nonce ahead) without parsing text.
"""

from __future__ import annotations

from protocol.errors import ConfigError, PolnetError, ReplayError, ValidationError

__all__ = [
    "BlockError",
    "DuplicateEvidence",
    "FeeTooLow",
    "GenesisError",
    "InsufficientFunds",
    "InsufficientStake",
    "InvalidAmount",
    "InvalidEvidence",
    "LedgerError",
    "NonceError",
    "StakeLocked",
    "StaleEvidence",
    "SupplyError",
    "TooManyUnbondings",
    "UnknownTxType",
]


class LedgerError(ValidationError):
    """A transaction breaks a ledger rule."""


class InvalidAmount(LedgerError):
    """Zero, below a minimum, or to oneself where that is meaningless."""


class InsufficientFunds(LedgerError):
    """The account (or pool) cannot cover the amount plus fee."""


class FeeTooLow(LedgerError):
    """The fee is below base_fee + fee_per_byte * size."""


class NonceError(ReplayError):
    """The nonce is not the account's next one (a replay, or a gap)."""


class InsufficientStake(LedgerError):
    """Unbonding, locking or slashing more than is bonded."""


class StakeLocked(InsufficientStake):
    """The stake exists but is locked by a market obligation."""


class TooManyUnbondings(LedgerError):
    """The account already has the maximum number of pending unbonding entries."""


class UnknownTxType(LedgerError):
    """A well-formed message that is not a registered ledger transaction."""


class InvalidEvidence(LedgerError):
    """Evidence that does not prove an equivocation by a validator of that height."""


class DuplicateEvidence(InvalidEvidence):
    """This equivocation was already slashed (evidence is applied exactly once)."""


class StaleEvidence(InvalidEvidence):
    """Evidence older than max_evidence_age, or from the future."""


class BlockError(PolnetError):
    """A block cannot be applied at all (wrong height): a consensus bug, not a bad tx."""


class SupplyError(PolnetError):
    """The supply audit failed: a bug in a rule, never a user's fault."""


class GenesisError(ConfigError):
    """The genesis document is invalid."""
