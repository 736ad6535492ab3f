"""Genesis transactions: a validator's signed consent to bond stake at genesis.

As in Cosmos (`gentx`), a genesis validator is not something a coordinator writes down
for someone else: each validator signs, with its node key, the stake it bonds from its
own genesis balance on this chain id. The coordinator collects the signed records into
the genesis, and every node checks every signature when it loads the genesis, so a
validator set nobody agreed to (a key that never signs blocks, stalling the chain) is
refused before height 1.

A gentx is an envelope (`protocol.envelope.seal`): the signer is the validator, the
signature covers the chain id and the type tag, so one signed for another chain or as
another message cannot be replayed here.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.envelope import open_envelope, seal
from protocol.errors import DecodeError
from protocol.identity import Keypair
from protocol.ledger.errors import GenesisError
from protocol.schema import U64, Text, message

#: A gentx envelope is about 150 bytes; its hex form in a genesis file twice that.
MAX_GENTX_BYTES = 1024


@message(0x34)
@dataclass(frozen=True, slots=True)
class GenTx:
    """`stake` bonded at genesis by the signer; `address` is where its node listens
    (`/ip4/H/tcp/P/p2p/ID`, or empty), so the other validators can bootstrap to it."""

    stake: U64
    address: Text


@dataclass(frozen=True, slots=True)
class SignedGenTx:
    pubkey: bytes
    stake: int
    address: str
    raw: bytes


def sign_gentx(key: Keypair, chain_id: str, stake: int, address: str = "") -> bytes:
    """The sealed gentx of `key` for `chain_id` (deterministic: ed25519 signatures are)."""
    return seal(GenTx(stake, address), key, chain_id)


def open_gentx(raw: bytes, chain_id: str, where: str = "gentx") -> SignedGenTx:
    """Verify a sealed gentx for `chain_id`; a GenesisError names what is wrong."""
    if len(raw) > MAX_GENTX_BYTES:
        raise GenesisError(f"{where}: {len(raw)} bytes, a gentx is at most {MAX_GENTX_BYTES}")
    try:
        env = open_envelope(raw, chain_id)
    except DecodeError as exc:
        raise GenesisError(f"{where}: not a valid signed gentx for chain {chain_id!r}: {exc}") from None
    if not isinstance(env.body, GenTx):
        raise GenesisError(f"{where}: signed message is a {type(env.body).__name__}, not a GenTx")
    return SignedGenTx(env.sender, env.body.stake, env.body.address, raw)
