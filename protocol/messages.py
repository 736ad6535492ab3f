"""Foundation wire messages, and the one import that registers every message type.

Each message is a frozen dataclass registered with a stable tag (see
`protocol.schema.message` for the tag ranges). Importing this module imports every
module that defines messages, so `registered_messages()` is complete afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.schema import U16, U64, Hash32, Text, message


@message(0x01)
@dataclass(frozen=True, slots=True)
class Hello:
    """First message on a new connection: who I am and where my chain is."""

    agent: Text
    height: U64
    head_hash: Hash32
    listen_port: U16


@message(0x02)
@dataclass(frozen=True, slots=True)
class Ping:
    """Liveness probe; the nonce lets the answer be matched to the question."""

    nonce: U64


@message(0x03)
@dataclass(frozen=True, slots=True)
class Pong:
    nonce: U64


def load_all() -> None:
    """Import every module that registers message types (idempotent)."""
    import importlib

    for mod in _MESSAGE_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


# Modules that define @message classes; extended as subsystems land.
_MESSAGE_MODULES: tuple[str, ...] = (
    "protocol.consensus.messages",
    "protocol.ledger.txs",
    "protocol.ledger.gentx",
    "protocol.handshake",
    "protocol.market.messages",
    "protocol.market.chain",
    "protocol.pol.messages",
    "protocol.peers",
    "protocol.schedule.links",
)
