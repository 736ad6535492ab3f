"""The latest live item per sender: the store behind gossip-fed books of signed adverts.

Capacity adverts and link adverts are both signed gossip with an issue time and an
absolute expiry. A node keeps one per sender, the newest (gossip may reorder them),
until it expires; the book is bounded, and when full the item closest to expiry makes
room. Checking an item's own rules is the caller's part, before `offer`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestBook(Generic[T]):
    def __init__(self, capacity: int, issued: Callable[[T], int], expires: Callable[[T], int]) -> None:
        self.capacity = capacity
        self._issued = issued
        self._expires = expires
        self._book: dict[bytes, T] = {}

    def offer(self, now: int, sender: bytes, item: T) -> bool:
        """Keep `item` if it is newer than what `sender` has here; False if not kept."""
        held = self._book.get(sender)
        # Rule: an older item never replaces a newer one.
        if held is not None and self._issued(held) >= self._issued(item):
            return False
        if held is None and len(self._book) >= self.capacity:
            self.expire(now)
            if len(self._book) >= self.capacity:
                del self._book[min(self._book, key=lambda k: (self._expires(self._book[k]), k))]
        self._book[sender] = item
        return True

    def expire(self, now: int) -> None:
        for key in [k for k, item in self._book.items() if self._expires(item) <= now]:
            del self._book[key]

    def live(self, now: int) -> dict[bytes, T]:
        self.expire(now)
        return dict(self._book)
