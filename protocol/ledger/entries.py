"""The records the ledger stores in its state tables.

They are schema records (not wire messages) so that their canonical bytes, and hence
the state root, are defined by the same codec as everything else on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from protocol.schema import U16, U64, Hash32, Len, PubKey, Text

#: Largest validator set a snapshot may hold (well above any max_validators preset).
MAX_SNAPSHOT_VALIDATORS = 1024


@dataclass(frozen=True, slots=True)
class Account:
    balance: U64
    nonce: U64  # the next nonce this account must use; never reset, so never deleted


@dataclass(frozen=True, slots=True)
class Stake:
    bonded: U64
    locked: U64  # part of `bonded` held by market obligations; cannot be unbonded
    jailed: bool  # set by an equivocation slash: excluded from later validator sets
    unbondings: U16  # pending unbonding entries (bounded by max_unbonding_entries)


@dataclass(frozen=True, slots=True)
class Unbonding:
    owner: PubKey
    amount: U64
    release_height: U64


@dataclass(frozen=True, slots=True)
class PoolBalance:
    amount: U64


@dataclass(frozen=True, slots=True)
class EvidenceSeen:
    """An equivocation already slashed, kept until it is too old to be resubmitted."""

    offender: PubKey
    height: U64


@dataclass(frozen=True, slots=True)
class ValidatorEntry:
    pubkey: PubKey
    power: U64


@dataclass(frozen=True, slots=True)
class ValidatorSnapshot:
    epoch: U64
    validators: Annotated[tuple[ValidatorEntry, ...], Len(0, MAX_SNAPSHOT_VALIDATORS)]


@dataclass(frozen=True, slots=True)
class ChainMeta:
    chain_id: Text
    height: U64  # last applied block (0 = genesis)
    time: U64  # its timestamp, ms
    beacon: Hash32  # randomness beacon after that block
    params_hash: Hash32


@dataclass(frozen=True, slots=True)
class Supply:
    genesis: U64  # total supply at genesis: the audit's invariant
    burned: U64
    unbond_seq: U64  # counter that keeps unbonding keys unique
