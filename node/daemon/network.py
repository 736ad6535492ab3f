"""The daemon's adapter over node.transport.Transport (the `Network` port).

Besides passing commands through, it gives the transport what only the daemon knows:
the chain core's view (height, round, validators, accounts) for the relevance check
every verified message goes through before the core or the network sees it
(protocol/consensus/relevance.py, node/transport/budgets.py), and the node's own blob
directory, which is read before the network is asked for anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from node.config import NodeConfig
from node.daemon.blobdir import BlobDir
from node.daemon.http import Request, Response, Routes
from node.daemon.links import with_probe_blob
from node.transport import Transport, TransportConfig
from node.transport.discovery import DiscoveryConfig
from node.transport.errors import ListenFailed
from protocol.commands import MessageReceived
from protocol.consensus.relevance import NodeView, Relevance, judge
from protocol.envelope import Envelope
from protocol.errors import ConfigError
from protocol.identity import Keypair

if TYPE_CHECKING:
    from node.daemon.chain import Chain

#: Longest isolation the admin endpoint accepts.
MAX_ISOLATE_S = 600.0


class CoreRelevance:
    """`judge` against the chain core's current state; RELEVANT while no chain runs.

    Called from the gossip validator on the trio thread, between the core's events, so
    it always reads a whole committed state."""

    def __init__(self, chain: Callable[[], Chain | None]) -> None:
        self._chain = chain
        self._vset: object = None
        self._members: frozenset[bytes] = frozenset()

    def __call__(self, env: Envelope) -> Relevance:
        chain = self._chain()
        if chain is None:
            return Relevance.RELEVANT
        node = chain.node
        if node.vset is not self._vset:  # a new set object per height; members change per epoch
            self._vset, self._members = node.vset, frozenset(node.vset.powers())
        state = chain.ledger.state

        def account(pubkey: bytes) -> tuple[int, int]:
            acct = state.account(pubkey)
            return acct.nonce, acct.balance

        view = NodeView(node.height, node.machine.round, self._members.__contains__, account)
        return judge(view, env.sender, env.body)


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

    async def fetch_blob(
        self, digest: bytes, max_size: int, peers: Sequence[bytes] | None = None,
        *, check: Callable[[bytes], bool] | None = None,
    ) -> bytes:
        """Our own blob directory first: a node never asks the network (least of all
        itself: callers may name us among the peers to ask) for what it holds. With
        `check` (`digest` is a sealed blob's locator), what we hold must pass it too."""
        if self.blobs is not None:
            local = await trio.to_thread.run_sync(self._local, self.blobs, digest, max_size, check)
            if local is not None:
                return local
        if check is None:
            return await self.transport.fetch_blob(digest, max_size, peers)
        return await self.transport.fetch_blob(digest, max_size, peers, check=check)

    @staticmethod
    def _local(
        blobs: BlobDir, digest: bytes, max_size: int, check: Callable[[bytes], bool] | None
    ) -> bytes | None:
        """What our blob directory holds under `digest` that fits and passes `check`."""
        local = blobs.read(digest)
        if local is None or len(local) > max_size:
            return None
        return local if check is None or check(local) else None

    async def receive(self) -> MessageReceived:
        return await self.transport.inbound.receive()

    def peer_count(self) -> int:
        return len(self.transport.peers())

    def counters(self) -> dict[str, int]:
        return self.transport.metrics()

    def admin_routes(self) -> Routes:
        """Admin endpoints of the network part (the daemon mounts them on 127.0.0.1)."""
        return {("POST", "/net/isolate"): self._post_isolate}

    async def _post_isolate(self, request: Request) -> Response:
        """`{"seconds": S}`: drop every peer and refuse them for S seconds (1..MAX_ISOLATE_S)."""
        try:
            doc = json.loads(request.body or b"{}")
            seconds = float(doc["seconds"])
        except (ValueError, KeyError, TypeError):
            return Response(400, b'{"error": "body must be {\"seconds\": S}"}')
        if not 0 < seconds <= MAX_ISOLATE_S:
            return Response(400, json.dumps({"error": f"seconds must be in (0, {MAX_ISOLATE_S}]"}).encode())
        await self.transport.isolate(seconds)
        return Response(200, json.dumps({"isolated_s": seconds}).encode())


async def start_transport(
    config: NodeConfig,
    key: Keypair,
    blobs: BlobDir,
    nursery: trio.Nursery,
    genesis_hash: bytes | None = None,
    chain: Callable[[], Chain | None] | None = None,
) -> tuple[TransportNetwork, tuple[str, ...]]:
    """Start the transport as a service of `nursery`; returns it once it listens. With
    `genesis_hash` every connection starts with the chain handshake; `chain` returns the
    daemon's chain once it is open (it opens after the network)."""
    net = config.network
    tcfg = TransportConfig(
        chain_id=config.chain_id,
        listen_host=net.listen_host,
        listen_port=net.listen_port,
        bootstrap=net.bootstrap,
        genesis_hash=genesis_hash,
        discovery=DiscoveryConfig(target_peers=net.target_peers),
    )
    transport = Transport(tcfg, key, blob_provider=with_probe_blob(blobs.open_source), has_blob=blobs.has)
    if chain is not None:
        transport.budgets.relevance = CoreRelevance(chain)
    try:
        addrs = await nursery.start(transport.run)
    except (ListenFailed, BaseExceptionGroup) as exc:  # a value the operator must change: name it
        failed = exc.split(ListenFailed)[0] if isinstance(exc, BaseExceptionGroup) else exc
        if failed is None:
            raise
        while isinstance(failed, BaseExceptionGroup):
            failed = failed.exceptions[0]
        raise ConfigError(f"[network] listen_port: {failed}") from None
    return TransportNetwork(transport, blobs), tuple(addrs)


class Tap:
    """The daemon's network with some inbound messages taken out of the stream and handed
    to a shell service (`observe` returns True for those it takes): link adverts for the
    link service, crew addresses for the crew rendezvous. The chain core never sees them."""

    def __init__(self, inner: Any, observe: Callable[[MessageReceived], bool]) -> None:
        self.inner = inner
        self.observe = observe
        self.transport = inner.transport

    async def publish(self, topic: str, msg: Any) -> None:
        await self.inner.publish(topic, msg)

    async def publish_sealed(self, topic: str, raw: bytes) -> None:
        await self.inner.publish_sealed(topic, raw)

    async def send_to(self, peer: bytes, msg: Any) -> None:
        await self.inner.send_to(peer, msg)

    async def fetch_blob(
        self, digest: bytes, max_size: int, peers: Sequence[bytes] | None = None,
        *, check: Callable[[bytes], bool] | None = None,
    ) -> bytes:
        result: bytes = await self.inner.fetch_blob(digest, max_size, peers, check=check)
        return result

    async def receive(self) -> MessageReceived:
        while True:
            msg: MessageReceived = await self.inner.receive()
            if not self.observe(msg):
                return msg

    def peer_count(self) -> int:
        count: int = self.inner.peer_count()
        return count

    def counters(self) -> dict[str, int]:
        counts: dict[str, int] = self.inner.counters()
        return counts

    def admin_routes(self) -> Routes:
        """The wrapped network's admin endpoints (/net/isolate), still mounted when tapped."""
        routes: Routes = self.inner.admin_routes()
        return routes
