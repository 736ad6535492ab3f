"""Live capacity adverts: what a node knows of other workers' free capacity right now.

Adverts are signed gossip, never ledger state: capacity changes by the second. A node
keeps the latest advert of each registered worker until it expires (its TTL is bounded
by `advert_max_ttl_ms`, checked by `check_advert`), so a worker that goes quiet stops
looking available on its own. The book is bounded; when full, the advert closest to
expiry makes room. Submitters and operators read it to see prices and free slots before
the ledger's stake-weighted election places a task.
"""

from __future__ import annotations

from protocol.errors import ValidationError
from protocol.latest import LatestBook
from protocol.market.messages import CapacityAdvert, check_advert

#: Adverts one node keeps (one per worker); beyond it the soonest to expire is dropped.
MAX_ADVERTS = 4096


class AdvertBook:
    def __init__(self, max_ttl_ms: int, capacity: int = MAX_ADVERTS) -> None:
        self.max_ttl_ms = max_ttl_ms
        self.capacity = capacity
        self._book: LatestBook[CapacityAdvert] = LatestBook(capacity, _issued, _expires)

    def offer(self, now: int, sender: bytes, advert: CapacityAdvert, registered: bool) -> bool:
        """Keep a live advert from a registered worker if it is newer than what we hold."""
        # Rule: only registered workers advertise (anyone else's adverts are spam).
        if not registered:
            return False
        try:
            check_advert(advert, now, self.max_ttl_ms)
        except ValidationError:
            return False
        # Rule: an older advert never replaces a newer one (gossip may reorder them).
        return self._book.offer(now, sender, advert)

    def expire(self, now: int) -> None:
        self._book.expire(now)

    def live(self, now: int) -> dict[bytes, CapacityAdvert]:
        return self._book.live(now)


def _issued(advert: CapacityAdvert) -> int:
    return advert.issued_at


def _expires(advert: CapacityAdvert) -> int:
    return advert.expires_at
