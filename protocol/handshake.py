"""The chain handshake: what two nodes tell each other when they connect.

Why: a chain id is a name anyone can reuse; two networks built from different genesis
files under one name peer happily and then fail in ways nobody can read (blocks that
do not apply, votes from strangers). So right after a connection opens each side sends
a `ChainHello` with its chain id and genesis hash (protocol.ledger.genesis_hash) and
refuses a peer whose answer differs, saying both values. The peer's identity is already
proven by the connection's Noise handshake (its peer id is its node key), so the hello
needs no signature of its own. The shell (node/transport/handshake.py) does the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.schema import U16, Hash32, Text, message

#: Version of the handshake itself (a node refuses hellos of a version it does not speak).
HANDSHAKE_VERSION = 1


@message(0xA8)
@dataclass(frozen=True, slots=True)
class ChainHello:
    version: U16
    chain_id: Text
    genesis_hash: Hash32


def hello_mismatch(ours: ChainHello, theirs: ChainHello) -> str | None:
    """Why a peer that sent `theirs` is not on our chain, or None if it is."""
    # Rule: both sides speak the same handshake version.
    if theirs.version != ours.version:
        return f"handshake version {theirs.version}, ours is {ours.version}"
    # Rule: same chain id (a misconfigured peer, or another network).
    if theirs.chain_id != ours.chain_id:
        return f"peer is on chain {theirs.chain_id!r}, this node on {ours.chain_id!r}"
    # Rule: same genesis (same name, different network: the case a chain id cannot catch).
    if theirs.genesis_hash != ours.genesis_hash:
        return (f"different genesis: peer has {theirs.genesis_hash.hex()}, "
                f"this node has {ours.genesis_hash.hex()}")
    return None
