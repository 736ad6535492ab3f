"""Ledger transactions (tags 0x30-0x4f).

A transaction travels as a signed envelope (protocol.envelope.seal): the envelope's
sender is the account that pays, and its signature covers the chain id and the type
tag, so a transaction can be replayed neither on another chain nor as another type.
Every transaction body carries `nonce` and `fee` (the registry checks this), which the
ante handler consumes before the type-specific rule runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from protocol.schema import U64, Len, PubKey, message

#: Encoded consensus evidence is two signed votes; a few hundred bytes in practice.
MAX_EVIDENCE_BYTES = 4096

T = TypeVar("T")


@message(0x30)
@dataclass(frozen=True, slots=True)
class Transfer:
    to: PubKey
    amount: U64
    nonce: U64
    fee: U64


@message(0x31)
@dataclass(frozen=True, slots=True)
class Bond:
    """Move balance into stake (validators are the top stakers; workers stake too)."""

    amount: U64
    nonce: U64
    fee: U64


@message(0x32)
@dataclass(frozen=True, slots=True)
class Unbond:
    """Start releasing stake; it stays slashable for the unbonding period."""

    amount: U64
    nonce: U64
    fee: U64


@message(0x33)
@dataclass(frozen=True, slots=True)
class SubmitEvidence:
    """Report an equivocation; the sender is the whistleblower and is rewarded."""

    evidence: Annotated[bytes, Len(1, MAX_EVIDENCE_BYTES)]
    nonce: U64
    fee: U64


@dataclass(frozen=True, slots=True)
class SignedTx(Generic[T]):
    """A transaction after its envelope was verified: what a rule gets to see."""

    sender: bytes
    body: T
    tx_hash: bytes  # SHA-256 of the envelope bytes (unique per signed tx)
    size: int  # envelope bytes, for the per-byte fee


#: Largest signed transaction accepted (matches consensus's per-tx cap).
MAX_TX_BYTES = 16 * 1024
