"""The daemon's adapter over node.transport.Transport (the `Network` port)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio

from node.config import NodeConfig
from node.daemon.blobdir import BlobDir
from node.daemon.links import with_probe_blob
from node.transport import Transport, TransportConfig
from node.transport.errors import ListenFailed
from protocol.commands import MessageReceived
from protocol.errors import ConfigError
from protocol.identity import Keypair


class TransportNetwork:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    async def publish(self, topic: str, msg: Any) -> None:
        await self.transport.publish(topic, msg)

    async def publish_sealed(self, topic: str, raw: bytes) -> None:
        await self.transport.publish_sealed(topic, raw)

    async def send_to(self, peer: bytes, msg: Any) -> None:
        await self.transport.send_to(peer, msg)

    async def fetch_blob(self, digest: bytes, max_size: int, peers: Sequence[bytes] | None = None) -> bytes:
        return await self.transport.fetch_blob(digest, max_size, peers)

    async def receive(self) -> MessageReceived:
        return await self.transport.inbound.receive()

    def peer_count(self) -> int:
        return len(self.transport.peers())

    def counters(self) -> dict[str, int]:
        return self.transport.metrics()


async def start_transport(
    config: NodeConfig, key: Keypair, blobs: BlobDir, nursery: trio.Nursery, genesis_hash: bytes | None = None
) -> tuple[TransportNetwork, tuple[str, ...]]:
    """Start the transport as a service of `nursery`; returns it once it listens. With
    `genesis_hash` every connection starts with the chain handshake."""
    net = config.network
    tcfg = TransportConfig(
        chain_id=config.chain_id,
        listen_host=net.listen_host,
        listen_port=net.listen_port,
        bootstrap=net.bootstrap,
        genesis_hash=genesis_hash,
    )
    transport = Transport(tcfg, key, blob_provider=with_probe_blob(blobs.get))
    try:
        addrs = await nursery.start(transport.run)
    except (ListenFailed, BaseExceptionGroup) as exc:  # a value the operator must change: name it
        failed = exc.split(ListenFailed)[0] if isinstance(exc, BaseExceptionGroup) else exc
        if failed is None:
            raise
        while isinstance(failed, BaseExceptionGroup):
            failed = failed.exceptions[0]
        raise ConfigError(f"[network] listen_port: {failed}") from None
    return TransportNetwork(transport), tuple(addrs)
