"""The daemon's adapter over node.transport.Transport (the `Network` port)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio

from node.config import NodeConfig
from node.daemon.blobdir import BlobDir
from node.transport import Transport, TransportConfig
from protocol.commands import MessageReceived
from protocol.identity import Keypair


class TransportNetwork:
    def __init__(self, transport: Transport, blobs: BlobDir | None = None) -> None:
        self.transport = transport
        self.blobs = blobs

    async def publish(self, topic: str, msg: Any) -> None:
        await self.transport.publish(topic, msg)

    async def publish_sealed(self, topic: str, raw: bytes) -> None:
        await self.transport.publish_sealed(topic, raw)

    async def send_to(self, peer: bytes, msg: Any) -> None:
        await self.transport.send_to(peer, msg)

    async def fetch_blob(self, digest: bytes, max_size: int, peers: Sequence[bytes] | None = None) -> bytes:
        """Our own blob directory first: a node never asks the network (least of all
        itself: callers may name us among the peers to ask) for what it holds."""
        if self.blobs is not None:
            local = await trio.to_thread.run_sync(self.blobs.read, digest)
            if local is not None and len(local) <= max_size:
                return local
        return await self.transport.fetch_blob(digest, max_size, peers)

    async def receive(self) -> MessageReceived:
        return await self.transport.inbound.receive()

    def peer_count(self) -> int:
        return len(self.transport.peers())

    def counters(self) -> dict[str, int]:
        return self.transport.metrics()


async def start_transport(
    config: NodeConfig, key: Keypair, blobs: BlobDir, nursery: trio.Nursery
) -> tuple[TransportNetwork, tuple[str, ...]]:
    """Start the transport as a service of `nursery`; returns it once it listens."""
    net = config.network
    tcfg = TransportConfig(
        chain_id=config.chain_id,
        listen_host=net.listen_host,
        listen_port=net.listen_port,
        bootstrap=net.bootstrap,
    )
    transport = Transport(tcfg, key, blob_provider=blobs.open_source)
    addrs = await nursery.start(transport.run)
    return TransportNetwork(transport, blobs), tuple(addrs)
