"""A network with no peers, for a node that runs alone (a one-node devnet, tests).

It keeps the driver's contract (publish succeeds, receive blocks) so the daemon needs
no special case for "no transport".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import trio

from node.transport.errors import BlobNotFound
from protocol.commands import MessageReceived


class SoloNetwork:
    def __init__(self) -> None:
        self.published: int = 0

    async def publish(self, topic: str, msg: Any) -> None:
        self.published += 1

    async def publish_sealed(self, topic: str, raw: bytes) -> None:
        self.published += 1

    async def send_to(self, peer: bytes, msg: Any) -> None:
        return None

    async def fetch_blob(
        self, digest: bytes, max_size: int, peers: Sequence[bytes] | None = None,
        *, check: Callable[[bytes], bool] | None = None,
    ) -> bytes:
        raise BlobNotFound(f"no peers to fetch {digest.hex()[:16]} from")

    async def receive(self) -> MessageReceived:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    def peer_count(self) -> int:
        return 0
