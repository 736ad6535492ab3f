"""`Transport`: the one object the daemon holds for everything network.

Usage, either as a context manager::

    async with Transport.open(config, keypair, blob_provider=store.get) as t:
        await t.publish(TOPIC_TXS, tx)
        async for event in t.inbound: ...          # verified MessageReceived

or as a service in the daemon's nursery (readiness = listening)::

    t = Transport(config, keypair)
    addrs = await nursery.start(t.run)

Startup order matters in py-libp2p 0.8.1: pubsub and the router are started before
`host.run`, and `host.close()` runs on every exit path (otherwise listeners leak).
Everything that arrives is bounded: the inbound channel, validator caches, blob and
direct-message concurrency.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service
from libp2p.utils.varint import encode_varint_prefixed

from node.transport.backpressure import DrainWatch
from node.transport.blobs import (
    BLOB_PROTOCOL,
    BlobCheck,
    BlobClient,
    BlobConfig,
    BlobCounters,
    BlobProvider,
    BlobServer,
)
from node.transport.budgets import MessageBudgets
from node.transport.dialer import BackoffConfig, keep_connected
from node.transport.direct import DIRECT_PROTOCOL, DIRECT_TOPIC, read_direct
from node.transport.discovery import Discovery, DiscoveryConfig, close_quietly, reset_quietly
from node.transport.errors import (
    BlobHashMismatch,
    BlobOversized,
    BlobProtocolError,
    BlobTruncated,
    BlobUnavailable,
    ListenFailed,
    NotRunning,
    PeerUnavailable,
    TransportError,
)
from node.transport.gossip import (
    MAX_GOSSIP_ENVELOPE_BYTES,
    EnvelopeValidator,
    GossipConfig,
    build_pubsub,
    build_router,
)
from node.transport.handshake import Handshake
from node.transport.host import (
    build_host,
    ensure_port_free,
    full_addrs,
    parse_peer_addr,
    peer_id_of,
    public_key_of,
    tcp_listen_addr,
)
from node.transport.police import PENALTY_BAD_BLOB, PENALTY_BAD_DIRECT, PENALTY_OVERSIZED_RPC, PeerPolice
from node.transport.pubsub_peers import keep_streams_fresh
from protocol.commands import BlobFetched, Fetch, MessageReceived, Publish, SendTo
from protocol.envelope import open_envelope, seal
from protocol.errors import BlobError, DecodeError, MessageTooLarge
from protocol.handshake import HANDSHAKE_VERSION, ChainHello
from protocol.identity import Keypair

log = logging.getLogger(__name__)

#: Blob failures that prove the serving peer lied or broke the protocol.
_PEER_FAULTS = (BlobHashMismatch, BlobOversized, BlobTruncated, BlobProtocolError)
#: Seconds `close` waits for libp2p to shut its listeners and connections.
CLOSE_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class TransportConfig:
    chain_id: str
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    bootstrap: tuple[str, ...] = ()
    gossip: GossipConfig = field(default_factory=GossipConfig)
    blobs: BlobConfig = field(default_factory=BlobConfig)
    backoff: BackoffConfig = field(default_factory=BackoffConfig)
    #: Peer exchange towards a target peer count, and blob-provider lookup
    #: (node/transport/discovery.py); off only for tests of fixed topologies.
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    discover: bool = True
    #: Verified messages waiting for the daemon; when full, readers wait (and the
    #: library's own bounded subscription queue drops the overflow).
    inbound_queue: int = 1024
    #: Whether our own gossip comes back on `inbound` (the core already knows it).
    deliver_own: bool = False
    police_interval_s: float = 0.25
    publish_backpressure_s: float = 2.0
    direct_timeout_s: float = 10.0
    max_direct_inflight: int = 64
    #: This node's genesis hash: with it, every connection starts with the chain
    #: handshake (node/transport/handshake.py) and peers of another genesis are refused.
    genesis_hash: bytes | None = None


@dataclass(slots=True)
class TransportCounters:
    msgs_out: int = 0
    msgs_in: int = 0
    direct_out: int = 0
    direct_in: int = 0
    backpressure_timeouts: int = 0
    direct_rejected: int = 0
    direct_ignored: int = 0


class Transport:
    """One node's network presence. Construction wires everything (so handlers exist
    before the first connection); `run` or `open` makes it live."""

    def __init__(
        self,
        config: TransportConfig,
        keypair: Keypair,
        blob_provider: BlobProvider | None = None,
        has_blob: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.config = config
        self._key = keypair
        self._bootstrap = [parse_peer_addr(a) for a in config.bootstrap]
        self.host = build_host(keypair)
        self.peer_id: ID = self.host.get_id()
        gcfg = config.gossip
        self.police = PeerPolice(gcfg.ban_threshold, gcfg.ban_s, trio.current_time, self.peer_id)
        self.router: GossipSub = build_router(config.gossip, self.police.app_score)
        self.pubsub: Pubsub = build_pubsub(self.host, self.router, config.gossip)
        self.budgets = MessageBudgets(self.police, trio.current_time, _key_or_none)
        self.validator = EnvelopeValidator(
            config.chain_id, config.gossip, trio.current_time, self._on_reject, self.peer_id,
            budgets=self.budgets,
        )
        self.pubsub.gate = self.validator.gate
        self.pubsub.on_oversized = lambda peer: self.police.penalise(peer, PENALTY_OVERSIZED_RPC)
        self._drain_watch = DrainWatch(lambda: self.pubsub.peer_queues, trio.current_time)
        for topic in config.gossip.topics:
            self.pubsub.set_topic_validator(topic, self.validator, False)
        self.blob_counters = BlobCounters()
        self._blob_server = BlobServer(blob_provider, config.blobs, self.blob_counters)
        self._blob_client = BlobClient(self.host, config.blobs, self.blob_counters)
        self.host.set_stream_handler(BLOB_PROTOCOL, self._on_blob_stream)
        self.host.set_stream_handler(DIRECT_PROTOCOL, self._on_direct_stream)
        self._inbound_send, self.inbound = trio.open_memory_channel[MessageReceived](config.inbound_queue)
        self.counters = TransportCounters()
        self._direct_inflight = 0
        self._running = False
        self._rng = random.Random(keypair.public)
        self.handshake: Handshake | None = None
        if config.genesis_hash is not None:
            hello = ChainHello(HANDSHAKE_VERSION, config.chain_id, config.genesis_hash)
            self.handshake = Handshake(self.host, hello, self._refuse_peer, is_banned=self.police.is_banned)
        self.discovery = Discovery(
            self.host, keypair, config.chain_id, config.discovery, self._bootstrap, self.police.refuses,
            has_blob or _holds_nothing, self._rng,
        )

    # --- lifecycle ------------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        config: TransportConfig,
        keypair: Keypair,
        blob_provider: BlobProvider | None = None,
        has_blob: Callable[[bytes], bool] | None = None,
    ) -> AsyncIterator[Transport]:
        transport = cls(config, keypair, blob_provider, has_blob)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(transport.run)
                try:
                    yield transport
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The service task ends quietly on cancel, so a lone error is the caller's
            # own (or a failed start): re-raise it as itself, not wrapped in a group.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; reports the dialable listen addresses when ready."""
        listen = tcp_listen_addr(self.config.listen_host, self.config.listen_port)
        ensure_port_free(self.config.listen_host, self.config.listen_port)
        try:
            async with (
                background_trio_service(self.pubsub),
                background_trio_service(self.router),
                self.host.run([listen]),
            ):
                try:
                    await self._serve(task_status)
                finally:
                    self._running = False
                    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
                        await self.host.close()
        finally:
            self._inbound_send.close()

    async def _serve(self, task_status: Any) -> None:
        if not self.host.get_addrs():  # py-libp2p logs a failed bind and carries on
            cfg = self.config
            raise ListenFailed(f"could not listen on {cfg.listen_host}:{cfg.listen_port} (in use?)")
        await self.pubsub.wait_until_ready()
        subs = [(topic, await self.pubsub.subscribe(topic)) for topic in self.config.gossip.topics]
        async with trio.open_nursery() as nursery:
            for topic, sub in subs:
                nursery.start_soon(self._read_topic, topic, sub)
            redial = (self.host, self._bootstrap, self.config.backoff, self.police.refuses, self._rng)
            nursery.start_soon(keep_connected, *redial)
            nursery.start_soon(self._police_loop)
            if self.handshake is not None:
                nursery.start_soon(self.handshake.run)
            nursery.start_soon(keep_streams_fresh, self.host, self.pubsub)
            if self.config.discover:
                nursery.start_soon(self.discovery.run)
            self._running = True
            task_status.started(self.listen_addrs)
            await trio.sleep_forever()

    # --- identity and peers -----------------------------------------------------------------

    @property
    def listen_addrs(self) -> list[str]:
        return list(full_addrs(self.host))

    def peers(self) -> list[bytes]:
        """Public keys (node identities) of connected peers."""
        out = []
        for pid in self.host.get_connected_peers():
            try:
                out.append(public_key_of(pid))
            except DecodeError:
                continue  # a non-ed25519 libp2p peer: connected, but not a polnet node
        return out

    def mesh_size(self, topic: str) -> int:
        return len(self.router.mesh.get(topic, ()))

    async def connect(self, addr: str) -> None:
        """Dial one peer now (bootstrap peers are dialed and redialed automatically)."""
        info = parse_peer_addr(addr)
        try:
            with trio.fail_after(self.config.backoff.dial_timeout_s):
                await self.host.connect(info)
        except Exception as exc:  # libp2p dial failures have no common base
            raise PeerUnavailable(f"cannot connect to {addr}: {exc}") from exc

    async def wait_for_mesh(self, topic: str, n: int, timeout_s: float) -> None:
        """Wait until our mesh for `topic` has at least `n` peers (tests, startup)."""
        with trio.fail_after(timeout_s):
            while self.mesh_size(topic) < n:
                await trio.sleep(0.05)

    # --- gossip ----------------------------------------------------------------------------

    async def publish(self, topic: str, msg: Any) -> bytes:
        """Seal `msg` with the node key and gossip it; returns the envelope bytes."""
        raw = seal(msg, self._key, self.config.chain_id)
        await self._publish(topic, raw)
        return raw

    async def publish_sealed(self, topic: str, raw: bytes) -> None:
        """Gossip an envelope someone else signed (a wallet's transaction), after
        checking it as any peer would: we never relay what we would reject."""
        open_envelope(raw, self.config.chain_id)
        await self._publish(topic, raw)

    async def _publish(self, topic: str, raw: bytes) -> None:
        self._check_running()
        if topic not in self.config.gossip.topics:
            raise TransportError(f"unknown topic {topic!r}")
        if len(raw) > MAX_GOSSIP_ENVELOPE_BYTES:
            raise MessageTooLarge(f"{len(raw)}-byte envelope exceeds gossip's {MAX_GOSSIP_ENVELOPE_BYTES}")
        await self._wait_for_queue_room()
        await self.pubsub.publish(topic, raw)
        self.counters.msgs_out += 1

    async def _wait_for_queue_room(self) -> None:
        """Backpressure for publishers. py-libp2p (like go-libp2p) gives each peer an
        outbound queue of 32 RPCs and silently drops what does not fit, so a burst of
        publishes would mostly vanish; wait until every queue is below the high-water
        mark, but never longer than `publish_backpressure_s`, and never for a peer that
        stopped draining (node/transport/backpressure.py: it gets the drops instead)."""
        if not await self._drain_watch.wait(self.config.publish_backpressure_s):
            self.counters.backpressure_timeouts += 1

    async def _read_topic(self, topic: str, sub: Any) -> None:
        me = self.peer_id.to_bytes()
        async for msg in sub:
            if msg.from_id == me and not self.config.deliver_own:
                continue
            env = self.validator.take_verified(msg.data)
            if env is None:  # evicted from the cache under load: verify again
                try:
                    env = open_envelope(msg.data, self.config.chain_id)
                except DecodeError:
                    continue
            self.counters.msgs_in += 1
            await self._inbound_send.send(MessageReceived(topic, env.sender, env.body, env.raw))

    # --- direct messages ------------------------------------------------------------------

    async def send_to(self, peer: bytes, msg: Any) -> None:
        """Send `msg` to one peer (by public key) over a direct stream."""
        self._check_running()
        raw = seal(msg, self._key, self.config.chain_id)
        pid = peer_id_of(peer)
        # A gossip sender we are not connected to (yet): discovery may know its address.
        await self.discovery.dial_if_known(pid)
        try:
            with trio.fail_after(self.config.direct_timeout_s):
                stream = await self.host.new_stream(pid, [DIRECT_PROTOCOL])
                await stream.write(encode_varint_prefixed(raw))
                await stream.close()
        except Exception as exc:  # libp2p stream failures have no common base
            raise PeerUnavailable(f"direct send to {peer.hex()[:16]} failed: {exc}") from exc
        self.counters.direct_out += 1

    async def _on_direct_stream(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        if self.police.is_banned(peer) or self._direct_inflight >= self.config.max_direct_inflight:
            await reset_quietly(stream)
            return
        self._direct_inflight += 1
        try:
            with trio.fail_after(self.config.direct_timeout_s):
                env = await read_direct(stream, self.config.chain_id)
        except DecodeError as exc:
            self.counters.direct_rejected += 1
            self.police.penalise(peer, PENALTY_BAD_DIRECT)
            log.info("rejected direct message from %s: %s", peer, exc)
            await reset_quietly(stream)
            return
        except trio.TooSlowError:
            await reset_quietly(stream)
            return
        finally:
            self._direct_inflight -= 1
        await close_quietly(stream)
        if not (self.validator.take_forwarder(peer) and self.budgets.admit(peer, env)):
            self.counters.direct_ignored += 1  # over budget or useless: charged by the budgets
            return
        self.counters.direct_in += 1
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):  # shutting down
            await self._inbound_send.send(MessageReceived(DIRECT_TOPIC, env.sender, env.body, env.raw))

    # --- blobs -----------------------------------------------------------------------------

    async def _on_blob_stream(self, stream: INetStream) -> None:
        if self.police.is_banned(stream.muxed_conn.peer_id):
            await reset_quietly(stream)
            return
        await self._blob_server.handle(stream)

    async def fetch_blob(
        self, digest: bytes, max_size: int, peers: Sequence[bytes] | None = None,
        *, check: BlobCheck | None = None,
    ) -> bytes:
        """Fetch and verify a blob from the given peers (public keys) or, by default,
        from every connected peer in turn; our own id is skipped. Peers that provably
        lied (wrong hash, oversized, closed mid-body, garbage header) are penalised;
        refusals, timeouts and broken streams are not. Raises BlobUnavailable when no
        peer delivers. With `check`, `digest` is a sealed blob's locator and a body is
        verified by `check` instead of by its hash (one it refuses is a wrong blob)."""
        self._check_running()
        candidates = [peer_id_of(p) for p in peers] if peers is not None else self.host.get_connected_peers()
        reasons: dict[str, str] = {}
        data = await self._fetch_from_any(candidates, digest, max_size, reasons, check)
        if data is None and peers is None and self.config.discover:
            # Nobody we are connected to has it: ask who does (one hop further), dial them.
            tried = list(candidates)
            providers = await self.discovery.find_providers(digest, exclude=tried)
            for pid in providers:
                if pid not in self.host.get_connected_peers():
                    await self.discovery.dial(pid)
            data = await self._fetch_from_any(providers, digest, max_size, reasons, check)
        if data is None:
            raise BlobUnavailable(digest, reasons)
        return data

    async def _fetch_from_any(
        self, candidates: Sequence[ID], digest: bytes, max_size: int, reasons: dict[str, str],
        check: BlobCheck | None = None,
    ) -> bytes | None:
        for pid in candidates:
            # Rule: never fetch from ourselves over the network (the caller reads its own
            # store; a "failed" self-fetch must not become a self-penalty).
            if pid == self.peer_id or self.police.is_banned(pid):
                continue
            await self.discovery.dial_if_known(pid)  # a named peer we know how to reach
            try:
                return await self._blob_client.fetch_from(pid, digest, max_size, check=check)
            except BlobError as exc:
                reasons[pid.to_base58()] = type(exc).__name__
                # A stream cut because the peer went away (a restart) is not a lie; one
                # cut while the peer stays connected, or a wrong answer, is.
                if isinstance(exc, _PEER_FAULTS) and pid in self.host.get_connected_peers():
                    self.police.penalise(pid, PENALTY_BAD_BLOB)
        return None

    async def execute(self, cmd: Publish | SendTo | Fetch) -> BlobFetched | None:
        """Run one network command of a core; a fetch answers with its BlobFetched event.
        A failed direct send raises PeerUnavailable (the core's timers cover it)."""
        if isinstance(cmd, Publish):
            await self.publish(cmd.topic, cmd.msg)
            return None
        if isinstance(cmd, SendTo):
            await self.send_to(cmd.peer, cmd.msg)
            return None
        return await self.execute_fetch(cmd)

    async def execute_fetch(self, cmd: Fetch) -> BlobFetched:
        """The shell side of the core's `Fetch` command."""
        try:
            data: bytes | None = await self.fetch_blob(cmd.digest, cmd.max_size)
        except BlobError:
            data = None
        return BlobFetched(cmd.digest, data)

    # --- misbehaviour --------------------------------------------------------------------------

    def _on_reject(self, peer: ID, reason: str) -> None:
        log.debug("rejected gossip from %s: %s", peer, reason)
        self.police.note_invalid(peer)

    def score(self, peer: ID) -> float:
        scorer = self.router.scorer
        return 0.0 if scorer is None else float(scorer.score(peer, list(self.config.gossip.topics)))

    def banned_peers(self) -> list[ID]:
        return self.police.banned()

    async def _police_loop(self) -> None:
        while True:
            await trio.sleep(self.config.police_interval_s)
            for peer in self.police.expire():
                self.pubsub.remove_from_blacklist(peer)
            suspects = self.police.suspects | set(self.host.get_connected_peers())
            self.police.suspects = set()
            for peer in suspects:
                if self.police.refuses(peer):
                    if peer in self.host.get_connected_peers():
                        await self._disconnect(peer)
                elif self.police.should_ban(self.score(peer)):
                    await self._ban(peer)

    async def _refuse_peer(self, peer: ID, reason: str) -> None:
        """A peer of another chain or genesis (the handshake logged why): ban it, so it is
        not redialed until the ban expires and the police loop drops it if it dials us,
        and hang up. Not blacklisted in pubsub: py-libp2p 0.8.1's blacklist teardown
        (`Pubsub._teardown_if_connected`) races the disconnect and, when the peer is
        already gone, raises KeyError inside the pubsub service, which stops the node."""
        self.police.ban(peer)
        await self._disconnect(peer)
    async def isolate(self, seconds: float) -> None:
        """Drop every connection and refuse (and not redial) all peers for `seconds`: an
        operator's switch, and the "disconnect" fault of `polnet swarm up --perturb`."""
        self.police.isolate(seconds)
        for peer in list(self.host.get_connected_peers()):
            await self._disconnect(peer)

    async def _ban(self, peer: ID) -> None:
        if peer == self.peer_id:
            return  # Rule: never ban ourselves (PeerPolice refuses too)
        log.warning("banning peer %s (score %.1f)", peer, self.score(peer))
        self.police.ban(peer)
        self.pubsub.add_to_blacklist(peer)
        await self._disconnect(peer)

    async def _disconnect(self, peer: ID) -> None:
        try:
            await self.host.disconnect(peer)
        except Exception as exc:  # a half-closed connection may fail to close
            log.debug("disconnect %s: %s", peer, exc)

    # --- metrics ---------------------------------------------------------------------------

    def metrics(self) -> dict[str, int]:
        """Counters for the daemon's Prometheus endpoint (monotonic, except `peers`)."""
        c, v, b = self.counters, self.validator.counters, self.blob_counters
        return {
            "peers": len(self.host.get_connected_peers()),
            "messages_out": c.msgs_out + c.direct_out,
            "messages_in": c.msgs_in + c.direct_in,
            "messages_rejected": v.rejected + c.direct_rejected,
            "gossip_rate_limited": v.rate_limited,
            "messages_ignored": v.ignored + c.direct_ignored,
            "penalties_charged": self.budgets.counters.charged,
            "blobs_served": b.served,
            "blobs_fetched": b.fetched,
            "blobs_rejected": b.rejected,
            "blob_bytes_in": b.fetched_bytes,
            "blob_bytes_out": b.served_bytes,
            "bans": self.police.bans_total,
            "publish_backpressure_timeouts": c.backpressure_timeouts,
        }

    def _check_running(self) -> None:
        if not self._running:
            raise NotRunning("transport is not running")


def _key_or_none(peer: ID) -> bytes | None:
    """The ed25519 key behind a peer id (None for other key types: never an envelope signer)."""
    try:
        return public_key_of(peer)
    except DecodeError:
        return None


def _holds_nothing(digest: bytes) -> bool:
    """The has_blob default: a transport without a blob directory holds nothing."""
    return False
