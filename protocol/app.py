"""The interface between consensus and the ledger (ABCI-shaped).

Consensus orders opaque transaction bytes into blocks; the application decides what a
valid transaction is and what a committed block does. Keeping this boundary narrow is
what lets the consensus state machine be tested with a toy application and the ledger be
tested without consensus.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Validator:
    """A consensus participant: its ed25519 public key and voting power (its stake)."""

    pubkey: bytes
    power: int


@dataclass(frozen=True, slots=True)
class BlockContext:
    """Everything about a committed block the application needs to apply it."""

    height: int
    time: int  # ms, the proposer's timestamp (bounded by consensus rules)
    proposer: bytes
    txs: tuple[bytes, ...]
    evidence: tuple[bytes, ...]  # encoded equivocation evidence, applied before txs
    last_commit_hash: bytes  # beacon input: hash of the previous commit certificate


@dataclass(frozen=True, slots=True)
class BlockOutcome:
    app_hash: bytes  # state root after the block
    validators: tuple[Validator, ...]  # the set for the next height (changes at epochs)
    rejected: tuple[int, ...] = ()  # indices of txs that failed and were skipped


class Application(Protocol):
    def check_tx(self, tx: bytes) -> None:
        """Raise a ValidationError/DecodeError if `tx` can never be applied now."""

    def select_txs(self, candidates: Sequence[bytes], max_bytes: int) -> list[bytes]:
        """Choose the transactions for a proposal, in order, within `max_bytes`."""

    def finalize_block(self, block: BlockContext) -> BlockOutcome:
        """Apply a committed block deterministically."""

    def app_hash(self) -> bytes:
        """State root of the last applied block."""

    def validators(self) -> tuple[Validator, ...]:
        """The validator set for the next height."""
