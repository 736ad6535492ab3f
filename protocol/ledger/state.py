"""Ledger state: named tables of schema records, a journal for rollback, a state root.

Why tables of records rather than Python attributes: one mechanism then gives
every subsystem (the core ledger and extensions such as the market) the same three
things for free: atomic rollback of a failed transaction, a canonical state root, and
a snapshot format for storage.

State root (documented in docs/ledger.md):
    leaf(table, key, value) = SHA-256(0x00 || u16be(len key) || key || encode_record(value))
    table_root              = merkle(leaves sorted by key)
    root                    = merkle(SHA-256(0x02 || u8(len name) || name || table_root)
                                     for each non-empty table, sorted by name)
    merkle(xs)              = binary tree, node = SHA-256(0x01 || left || right), an odd
                              node is promoted unchanged, merkle([]) = SHA-256("polnet/empty")
Leaf hashes are cached per entry (recomputed lazily, once per block for an entry
written many times) and key order is kept sorted on insert, so a block rehashes only the
entries it touched and recombines only the tables it touched. Nothing depends on dict or set iteration order.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from protocol.encoding import pack, sha256, unpack
from protocol.errors import Malformed, NonCanonical
from protocol.ledger.entries import (
    Account,
    ChainMeta,
    EvidenceSeen,
    PoolBalance,
    Stake,
    Supply,
    Unbonding,
    ValidatorSnapshot,
)
from protocol.ledger.evidence import EvidenceVerifier, consensus_evidence
from protocol.ledger.params import LedgerParams
from protocol.limits import Limits
from protocol.records import decode_record, encode_record

R = TypeVar("R")

EMPTY_ROOT = sha256(b"polnet/empty")
MAX_TABLE_NAME = 64
MAX_KEY_LEN = 256
#: Snapshots are local (never gossiped), so they may exceed the message cap.
SNAPSHOT_LIMITS = Limits(max_bytes=1 << 30, max_array_len=1 << 24, max_bin_len=1 << 20)

# Core tables. Extensions add theirs with `register_table`.
ACCOUNTS = "account"
STAKES = "stake"
UNBONDING = "unbond"
POOLS = "pool"
EVIDENCE = "evidence"
VALIDATOR_SETS = "vset"
META = "meta"
SUPPLY = "supply"
SINGLETON = b""

_TABLES: dict[str, type[Any]] = {}


def register_table(name: str, record_cls: type[Any]) -> None:
    """Declare a state table and the record type its values have (idempotent).

    Extension tables must not hold value: tokens live only in accounts, stakes,
    unbonding entries and pools, which is what lets `audit_supply` stay generic.
    """
    if not 0 < len(name.encode()) <= MAX_TABLE_NAME:
        raise ValueError(f"table name {name!r} must be 1..{MAX_TABLE_NAME} bytes")
    known = _TABLES.get(name)
    if known is not None and known is not record_cls:
        raise ValueError(f"table {name!r} already registered for {known.__name__}")
    _TABLES[name] = record_cls


for _name, _cls in (
    (ACCOUNTS, Account),
    (STAKES, Stake),
    (UNBONDING, Unbonding),
    (POOLS, PoolBalance),
    (EVIDENCE, EvidenceSeen),
    (VALIDATOR_SETS, ValidatorSnapshot),
    (META, ChainMeta),
    (SUPPLY, Supply),
):
    register_table(_name, _cls)


def merkle_root(leaves: list[bytes]) -> bytes:
    if not leaves:
        return EMPTY_ROOT
    level = leaves
    while len(level) > 1:
        nxt = [sha256(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def _leaf(key: bytes, value: Any) -> bytes:
    return sha256(b"\x00" + len(key).to_bytes(2, "big") + key + encode_record(value))


def _table_leaf(name: str, root: bytes) -> bytes:
    raw = name.encode()
    return sha256(b"\x02" + len(raw).to_bytes(1, "big") + raw + root)


class State:
    """The whole ledger state. Mutate only through `put` (directly or via primitives)."""

    def __init__(self, params: LedgerParams, verify_evidence: EvidenceVerifier = consensus_evidence) -> None:
        self.params = params
        # Configuration, not state: how evidence bytes are checked (consensus's rules).
        self.verify_evidence = verify_evidence
        self._data: dict[str, dict[bytes, Any]] = {}
        self._keys: dict[str, list[bytes]] = {}
        self._leaves: dict[str, dict[bytes, bytes]] = {}
        self._roots: dict[str, bytes] = {}
        self._journal: list[tuple[str, bytes, Any]] = []
        self._frames: list[int] = []

    # --- raw table access ---------------------------------------------------------------

    def get(self, table: str, key: bytes) -> Any | None:
        return self._data.get(table, {}).get(key)

    def put(self, table: str, key: bytes, value: Any | None) -> None:
        """Write (or delete, with None) one entry, journaled for rollback."""
        cls = _TABLES.get(table)
        if cls is None:
            raise KeyError(f"unregistered state table {table!r}")
        if value is not None and type(value) is not cls:
            raise TypeError(f"table {table!r} holds {cls.__name__}, not {type(value).__name__}")
        if len(key) > MAX_KEY_LEN:
            raise ValueError(f"state key of {len(key)} bytes exceeds {MAX_KEY_LEN}")
        old = self.get(table, key)
        if self._frames:
            self._journal.append((table, key, old))
        self._set(table, key, value)

    def _set(self, table: str, key: bytes, value: Any | None) -> None:
        data = self._data.setdefault(table, {})
        keys = self._keys.setdefault(table, [])
        leaves = self._leaves.setdefault(table, {})
        self._roots.pop(table, None)
        if value is None:
            if key in data:
                del data[key]
                leaves.pop(key, None)
                del keys[bisect.bisect_left(keys, key)]
            return
        if key not in data:
            bisect.insort(keys, key)
        data[key] = value
        # Hashed lazily in table_root: an account written several times in a block
        # (nonce, fee, amount) is encoded and hashed once.
        leaves.pop(key, None)

    def keys(self, table: str) -> list[bytes]:
        """Keys of a table in canonical (sorted) order; a copy, safe to mutate during."""
        return list(self._keys.get(table, ()))

    def items(self, table: str) -> Iterator[tuple[bytes, Any]]:
        data = self._data.get(table, {})
        for key in self.keys(table):
            yield key, data[key]

    def count(self, table: str) -> int:
        return len(self._data.get(table, {}))

    # --- atomicity ---------------------------------------------------------------------------

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """All writes inside either all happen or, if an exception escapes, none do."""
        self._frames.append(len(self._journal))
        try:
            yield
        except BaseException:
            self._rollback_to(self._frames.pop())
            raise
        mark = self._frames.pop()
        if not self._frames:
            del self._journal[mark:]

    def _rollback_to(self, mark: int) -> None:
        while len(self._journal) > mark:
            table, key, old = self._journal.pop()
            self._set(table, key, old)
        if not self._frames:
            self._journal.clear()

    @contextmanager
    def discard(self) -> Iterator[None]:
        """Run a block of writes and always undo them (check_tx, proposal simulation)."""
        self._frames.append(len(self._journal))
        try:
            yield
        finally:
            self._rollback_to(self._frames.pop())

    # --- root and snapshots ----------------------------------------------------------------------

    def table_root(self, table: str) -> bytes:
        root = self._roots.get(table)
        if root is None:
            leaves = self._leaves.setdefault(table, {})
            data = self._data.get(table, {})
            ordered = []
            for key in self._keys.get(table, ()):
                leaf = leaves.get(key)
                if leaf is None:
                    leaf = leaves[key] = _leaf(key, data[key])
                ordered.append(leaf)
            root = merkle_root(ordered)
            self._roots[table] = root
        return root

    def root(self) -> bytes:
        names = sorted(t for t, d in self._data.items() if d)
        return merkle_root([_table_leaf(t, self.table_root(t)) for t in names])

    def export(self) -> bytes:
        """Canonical snapshot bytes (every non-empty table, sorted)."""
        names = sorted(t for t, d in self._data.items() if d)
        return pack([[t, [[k, encode_record(v)] for k, v in self.items(t)]] for t in names])

    @classmethod
    def restore(
        cls, params: LedgerParams, data: bytes, verify_evidence: EvidenceVerifier = consensus_evidence
    ) -> State:
        """Inverse of `export`; raises a DecodeError on any malformed or unknown content."""
        raw = unpack(data, SNAPSHOT_LIMITS)
        if type(raw) is not list:
            raise Malformed("state snapshot must be an array of tables")
        state = cls(params, verify_evidence)
        for table in raw:
            if type(table) is not list or len(table) != 2 or type(table[0]) is not str:
                raise Malformed("state snapshot table must be [name, entries]")
            name, entries = table
            rec_cls = _TABLES.get(name)
            if rec_cls is None:
                raise Malformed(f"state snapshot has unknown table {name!r}")
            if type(entries) is not list:
                raise Malformed(f"state snapshot table {name!r} entries must be an array")
            for entry in entries:
                if type(entry) is not list or len(entry) != 2 or type(entry[0]) is not bytes:
                    raise Malformed(f"state snapshot entry in {name!r} must be [key, record]")
                if type(entry[1]) is not bytes:
                    raise Malformed(f"state snapshot entry in {name!r} must hold record bytes")
                state._set(name, entry[0], decode_record(rec_cls, entry[1], SNAPSHOT_LIMITS))
        if state.get(META, SINGLETON) is None or state.get(SUPPLY, SINGLETON) is None:
            raise Malformed("state snapshot lacks the chain meta or supply record")
        # Duplicate or unsorted entries would decode to a state whose root the snapshot's
        # writer never had; the canonical form is unique, so compare with it.
        if state.export() != bytes(data):
            raise NonCanonical("state snapshot is not in canonical form")
        return state

    def copy(self) -> State:
        other = State(self.params, self.verify_evidence)
        for table, data in self._data.items():
            other._data[table] = dict(data)
            other._keys[table] = list(self._keys[table])
            other._leaves[table] = dict(self._leaves[table])
        other._roots = dict(self._roots)
        return other

    # --- typed accessors for the core tables ----------------------------------------------------

    def account(self, who: bytes) -> Account:
        acct: Account | None = self.get(ACCOUNTS, who)
        return acct if acct is not None else Account(0, 0)

    def set_account(self, who: bytes, acct: Account) -> None:
        # An account that has used a nonce is kept forever: deleting it would reset its
        # nonce and let old transactions replay.
        self.put(ACCOUNTS, who, None if acct == Account(0, 0) else acct)

    def stake(self, who: bytes) -> Stake:
        st: Stake | None = self.get(STAKES, who)
        return st if st is not None else Stake(0, 0, False, 0)

    def set_stake(self, who: bytes, st: Stake) -> None:
        self.put(STAKES, who, None if st == Stake(0, 0, False, 0) else st)

    def pool(self, name: str) -> int:
        bal: PoolBalance | None = self.get(POOLS, name.encode())
        return bal.amount if bal is not None else 0

    def set_pool(self, name: str, amount: int) -> None:
        self.put(POOLS, name.encode(), PoolBalance(amount) if amount else None)

    @property
    def meta(self) -> ChainMeta:
        meta: ChainMeta = self._data[META][SINGLETON]
        return meta

    def set_meta(self, meta: ChainMeta) -> None:
        self.put(META, SINGLETON, meta)

    @property
    def supply(self) -> Supply:
        supply: Supply = self._data[SUPPLY][SINGLETON]
        return supply

    def set_supply(self, supply: Supply) -> None:
        self.put(SUPPLY, SINGLETON, supply)

    @property
    def height(self) -> int:
        return self.meta.height

    @property
    def beacon(self) -> bytes:
        return self.meta.beacon
