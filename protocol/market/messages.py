"""Market gossip (capacity adverts), a crew's rendezvous message, and the import that
registers market transactions.

A capacity advert is signed gossip, not a transaction: live capacity changes by the
second and would flood the chain. It carries an absolute expiry no further ahead than
the market's maximum time-to-live, so a stale advert stops attracting work on its own.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated

from protocol.market import txs as _txs  # noqa: F401  (registers tags 0x50-0x5b)
from protocol.market.errors import OutOfBounds
from protocol.market.txs import DeviceClass
from protocol.schema import U16, U32, U64, Hash32, Len, message

#: An IP literal, at most an IPv6 one: members never resolve a name a peer hands them.
MAX_CREW_HOST = 45


@message(0x60)
@dataclass(frozen=True, slots=True)
class CapacityAdvert:
    device: DeviceClass
    memory_mb: U32
    flops: U64
    price_per_gflop: U64
    free_slots: U16
    issued_at: U64  # ms on the sender's clock
    expires_at: U64  # ms; at most advert_max_ttl_ms after issued_at


def check_advert(advert: CapacityAdvert, now: int, max_ttl_ms: int) -> None:
    """Accept an advert for forwarding only while it is live and its TTL is bounded."""
    # Rule: the advert's lifetime is positive and at most the maximum TTL.
    if not advert.issued_at < advert.expires_at <= advert.issued_at + max_ttl_ms:
        raise OutOfBounds("advert time-to-live out of range")
    # Rule: not issued in the future (beyond one TTL of clock skew) and not expired.
    if advert.issued_at > now + max_ttl_ms or advert.expires_at <= now:
        raise OutOfBounds("advert is expired or from the future")


@message(0x67)
@dataclass(frozen=True, slots=True)
class CrewAddress:
    """A crew's rank 0 tells a member where the crew's torch.distributed store listens: a
    signed direct message, which a member takes only from its crew's rank 0 (the shell
    checks the envelope's signer), for the crew named `crew` (crews.crew_tag), until
    `expires_at` (ms on the sender's clock)."""

    crew: Hash32
    host: Annotated[str, Len(1, MAX_CREW_HOST)]
    port: U16
    expires_at: U64


def check_crew_address(addr: CrewAddress) -> None:
    """The host is an IP literal and the port a real one (no name to resolve, no port 0)."""
    # Rule: an IP address, not a name.
    try:
        ipaddress.ip_address(addr.host)
    except ValueError:
        raise OutOfBounds(f"crew store host {addr.host!r} is not an IP address") from None
    # Rule: a port a store can listen on.
    if addr.port == 0:
        raise OutOfBounds("crew store port 0")
