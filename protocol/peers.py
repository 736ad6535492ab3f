"""Peer exchange and blob-provider discovery messages (transport tags 0xa0-0xa7).

Why: one bootstrap address must be enough for a node to find every other node, and a
verifier must be able to find whoever serves the proof it has to check (issue 11 item 2).
A node asks its connected peers for the peers they know (PeerRequest, carrying its own
listen addresses so the peer can tell others how to reach it) and whether they, or a
peer of theirs, hold a blob (ProviderQuery). Everything a peer says about third parties
is hearsay: the addresses are only ever dialed, and a dial authenticates the remote key
(Noise), so a lying record can waste a dial but never impersonate a node.

Bounds: at most MAX_ADDRS addresses per peer, MAX_PEER_RECORDS records per answer,
MAX_PROVIDERS providers per answer, MAX_PROVIDER_HOPS forwarding hops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from protocol.schema import U8, U16, Hash32, Len, PubKey, message

#: Listen addresses one peer may announce (IPv4 and IPv6, a couple of interfaces).
MAX_ADDRS = 4
#: A multiaddr such as /ip4/203.0.113.7/tcp/4001 (the peer id travels as `pubkey`).
MAX_ADDR_LEN = 128
#: Records in one PeerList: enough to learn a whole small network in one answer.
MAX_PEER_RECORDS = 32
#: Providers named in one ProviderList.
MAX_PROVIDERS = 8
#: How far a provider query is forwarded (1: the peers of the peers we ask).
MAX_PROVIDER_HOPS = 1

Addr = Annotated[str, Len(1, MAX_ADDR_LEN)]


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """A node and the addresses it said it listens on."""

    pubkey: PubKey
    addrs: Annotated[tuple[Addr, ...], Len(1, MAX_ADDRS)]


@message(0xA0)
@dataclass(frozen=True, slots=True)
class PeerRequest:
    """"Which peers do you know?" `addrs`: where the asker listens (may be empty)."""

    addrs: Annotated[tuple[Addr, ...], Len(0, MAX_ADDRS)]
    want: U16


@message(0xA1)
@dataclass(frozen=True, slots=True)
class PeerList:
    peers: Annotated[tuple[PeerRecord, ...], Len(0, MAX_PEER_RECORDS)]


@message(0xA2)
@dataclass(frozen=True, slots=True)
class ProviderQuery:
    """"Who serves blob `digest`?" `hops`: how many more times it may be forwarded."""

    digest: Hash32
    hops: U8


@message(0xA3)
@dataclass(frozen=True, slots=True)
class ProviderList:
    digest: Hash32
    providers: Annotated[tuple[PeerRecord, ...], Len(0, MAX_PROVIDERS)]
