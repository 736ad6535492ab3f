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
from protocol.market.messages import CapacityAdvert, check_advert

#: Adverts one node keeps (one per worker); beyond it the soonest to expire is dropped.
MAX_ADVERTS = 4096


class AdvertBook:
    def __init__(self, max_ttl_ms: int, capacity: int = MAX_ADVERTS) -> None:
        self.max_ttl_ms = max_ttl_ms
        self.capacity = capacity
        self._book: dict[bytes, CapacityAdvert] = {}

    def offer(self, now: int, sender: bytes, advert: CapacityAdvert, registered: bool) -> bool:
        """Keep a live advert from a registered worker if it is newer than what we hold."""
        # Rule: only registered workers advertise (anyone else's adverts are spam).
        if not registered:
            return False
        try:
            check_advert(advert, now, self.max_ttl_ms)
        except ValidationError:
            return False
        held = self._book.get(sender)
        # Rule: an older advert never replaces a newer one (gossip may reorder them).
        if held is not None and held.issued_at >= advert.issued_at:
            return False
        if held is None and len(self._book) >= self.capacity:
            self.expire(now)
            if len(self._book) >= self.capacity:
                del self._book[min(self._book, key=lambda k: (self._book[k].expires_at, k))]
        self._book[sender] = advert
        return True

    def expire(self, now: int) -> None:
        for key in [k for k, a in self._book.items() if a.expires_at <= now]:
            del self._book[key]

    def live(self, now: int) -> dict[bytes, CapacityAdvert]:
        self.expire(now)
        return dict(self._book)
