"""The extension point: other subsystems add transaction types and block hooks here.

The core ledger registers Transfer, Bond, Unbond and SubmitEvidence through the same
table the market uses, so there is one dispatch path and no special cases. A module
that defines transactions registers them at import; `protocol.messages.load_all()`
imports every such module, so all nodes see the same table.

Block hooks run in the order of their names (never import order), so registration
order cannot make two nodes diverge.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protocol.app import BlockContext
from protocol.ledger.state import State
from protocol.ledger.txs import SignedTx

ProcessFn = Callable[[State, SignedTx[Any]], None]
CheckFn = Callable[[SignedTx[Any]], None]
HookFn = Callable[[State, BlockContext], None]


@dataclass(frozen=True, slots=True)
class TxType:
    cls: type[Any]
    process: ProcessFn  # state transition; raise a ValidationError to reject
    check: CheckFn | None  # stateless checks (run in check_tx before any state is read)


@dataclass(frozen=True, slots=True)
class BlockHook:
    name: str
    begin: HookFn | None  # after the beacon/unbonding step, before evidence and txs
    end: HookFn | None  # after the txs, before fees and the epoch step (deadlines go here)


_TX_TYPES: dict[type[Any], TxType] = {}
_HOOKS: dict[str, BlockHook] = {}


def register_tx(cls: type[Any], process: ProcessFn, check: CheckFn | None = None) -> None:
    """Make `cls` (a @message-registered record with `nonce` and `fee`) a transaction."""
    names = {f.name for f in dataclasses.fields(cls)}
    if not {"nonce", "fee"} <= names:
        raise TypeError(f"transaction {cls.__name__} must have `nonce` and `fee` fields")
    if not hasattr(cls, "TYPE_TAG"):
        raise TypeError(f"transaction {cls.__name__} must be registered with @message(tag)")
    known = _TX_TYPES.get(cls)
    if known is not None and (known.process is not process or known.check is not check):
        raise ValueError(f"transaction {cls.__name__} already registered")
    _TX_TYPES[cls] = TxType(cls, process, check)


def tx_type(cls: type[Any]) -> TxType | None:
    return _TX_TYPES.get(cls)


def register_block_hook(name: str, *, begin: HookFn | None = None, end: HookFn | None = None) -> None:
    """Run `begin(state, block)` / `end(state, block)` in every block (e.g. market deadlines)."""
    known = _HOOKS.get(name)
    if known is not None and (known.begin is not begin or known.end is not end):
        raise ValueError(f"block hook {name!r} already registered")
    _HOOKS[name] = BlockHook(name, begin, end)


def block_hooks() -> list[BlockHook]:
    return [_HOOKS[name] for name in sorted(_HOOKS)]
