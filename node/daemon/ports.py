"""The narrow interfaces the daemon drives its parts through.

The daemon composes a transport, a store and compute that other modules build; it
depends on these shapes rather than on those modules' classes, so each part can be
replaced in tests (a loopback network, an in-memory store) and adapted in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from protocol.commands import MessageReceived


class Network(Protocol):
    """What the driver needs from the p2p transport."""

    async def publish(self, topic: str, msg: Any) -> None:
        """Seal `msg` with the node key and gossip it on `topic`."""

    async def publish_sealed(self, topic: str, raw: bytes) -> None:
        """Gossip an envelope that is already sealed (and verified) unchanged."""

    async def send_to(self, peer: bytes, msg: Any) -> None:
        """Send one sealed message to one peer (by public key)."""

    async def fetch_blob(
        self, digest: bytes, max_size: int, peers: Sequence[bytes] | None = None,
        *, check: Callable[[bytes], bool] | None = None,
    ) -> bytes:
        """Fetch a content-addressed blob from `peers` (default: any connected peer) or
        raise a BlobError. With `check`, `digest` is a sealed blob's locator and the
        blob is whatever `check` accepts (node/transport/blobs.py)."""

    async def receive(self) -> MessageReceived:
        """The next verified inbound message (blocks until one arrives)."""

    def peer_count(self) -> int: ...


class Store(Protocol):
    """Durable storage for what the core asks to Persist."""

    def persist(self, kind: str, key: bytes, value: bytes) -> None: ...

    def close(self) -> None: ...


class ComputeRunner(Protocol):
    """Runs one compute job synchronously (called from a worker thread; a RunCompute with
    `own_process` beside the compute threads, not in one of them)."""

    def __call__(self, job_id: str, job: Any) -> Any: ...
