"""Why a chain database could not be used. Each says what an operator should do."""

from __future__ import annotations

from protocol.errors import PolnetError


class StorageError(PolnetError):
    """The chain database refused an operation (too large, out of order, closed)."""


class CorruptDatabase(StorageError):
    """The file is not a readable sqlite database of ours: restore from a backup or resync."""


class StateMismatch(StorageError):
    """Replaying the stored blocks does not reproduce the stored/certified state root:
    the database was altered, or this build's rules differ from the chain's."""
