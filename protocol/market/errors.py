"""Why a market transaction was refused (all ValidationErrors: the tx is skipped, the
block goes on)."""

from __future__ import annotations

from protocol.errors import ValidationError


class MarketError(ValidationError):
    """A market transaction breaks a market rule."""


class InsufficientFunds(MarketError):
    """An account cannot pay what a transaction asks of it."""


class UnknownTask(MarketError):
    """No task with this id (or it already ended)."""


class WrongStage(MarketError):
    """The task is not in the stage this transaction belongs to."""


class NotAuthorized(MarketError):
    """The signer does not hold the role this transaction needs."""


class BadReveal(MarketError):
    """A reveal does not match its commitment (verdict, salt or forced-error secret)."""


class OutOfBounds(MarketError):
    """A value or a count is outside the market's limits."""


class BadProof(MarketError):
    """A checkpoint is not proven to belong to the committed proof of learning."""


class IllegalTransition(MarketError):
    """A rule tried to move a task along an edge the stage table does not have (a bug)."""
