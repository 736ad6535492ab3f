"""Durable chain data: sqlite chain database (blocks, certificates, snapshots, records)
and the verified restart of the ledger from it. See docs/ledger.md."""

from node.storage.chainstore import ChainStore, Snapshot, StoredBlock
from node.storage.errors import CorruptDatabase, StateMismatch, StorageError
from node.storage.ledger_restore import open_ledger, record_block

__all__ = [
    "ChainStore",
    "CorruptDatabase",
    "Snapshot",
    "StateMismatch",
    "StorageError",
    "StoredBlock",
    "open_ledger",
    "record_block",
]
