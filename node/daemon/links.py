"""Measure links to peers and gossip signed link reports (for the crew scheduler).

Every `[links] period_ms` the service takes the next `peers_per_period` connected
peers (round robin over the sorted peer list, so every peer comes up in turn and the
cost per period is bounded) and measures each:

- one-way delay: the smallest of `pings` round trips of libp2p's own ping protocol
  (/ipfs/ping/1.0.0, which every py-libp2p host serves), halved; timed here with
  trio's clock because the library rounds its RTT to whole milliseconds;
- bandwidth: a timed fetch of the probe blob (`PROBE_BYTES` of fixed content that
  every node serves over the ordinary blob protocol), less one round trip for the
  request, so 8 * size / time.

It then gossips its live reports as one signed `LinkAdvert` on the adverts topic with
a TTL, hands them to the market node (which commits them to the ledger when due, for
crew placement: protocol/market/linkcommit.py), keeps every peer's latest advert in a
`LinkBook`, and answers `GET /links`
with its measurements, the links both ends agree on and the matrices the scheduler
takes (`polnet schedule --from-network`). Nothing here decides anything: the book's
agreement rule is pure code in protocol/schedule/book.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio
from libp2p.host.ping import ID as PING_PROTOCOL
from libp2p.host.ping import perform_ping_roundtrip

from node.config import LinksConfig
from node.daemon.driver import wall_ms
from node.daemon.http import Response
from node.transport.host import peer_id_of
from protocol.commands import TOPIC_ADVERTS, LocalRequest, MessageReceived
from protocol.errors import PolnetError
from protocol.identity import Keypair, node_id
from protocol.market.linkcommit import MeasuredLinks
from protocol.market.node import MarketNode
from protocol.schedule.book import LinkBook
from protocol.schedule.links import MAX_LINKS_PER_ADVERT, LinkAdvert, LinkReport

if TYPE_CHECKING:
    from node.daemon.app import Daemon
    from node.daemon.network import TransportNetwork

log = logging.getLogger("polnet.links")

#: The probe blob: 256 KiB of fixed bytes (small enough to cost little each period,
#: large enough that a LAN transfer is not all round trip). Every node serves it.
PROBE_BYTES = 256 * 1024
PROBE_BLOB = (hashlib.sha256(b"polnet/link-probe/1").digest() * (PROBE_BYTES // 32 + 1))[:PROBE_BYTES]
PROBE_DIGEST = hashlib.sha256(PROBE_BLOB).digest()
#: One peer's whole measurement (pings and probe) must finish within this.
MEASURE_TIMEOUT_S = 10.0
#: Shortest transfer time credited, so a loopback probe cannot claim infinite bandwidth.
MIN_TRANSFER_S = 1e-4
MAX_KBPS = 2**32 - 1
#: Nodes shown in the /links matrices (a crew is far smaller; the document stays small).
MAX_MATRIX_NODES = 64

BlobGet = Callable[[bytes], Awaitable[Any]]  # bytes, a BlobSource (node/transport/blobs.py) or None


def with_probe_blob(provider: BlobGet | None) -> BlobGet:
    """A blob provider that also serves the probe blob."""

    async def get(digest: bytes) -> bytes | None:
        if digest == PROBE_DIGEST:
            return PROBE_BLOB
        return await provider(digest) if provider is not None else None

    return get


class LinkService:
    def __init__(
        self,
        network: TransportNetwork,
        key: Keypair,
        config: LinksConfig,
        clock_ms: Callable[[], int] = wall_ms,
        on_measured: Callable[[tuple[LinkReport, ...]], Awaitable[None]] | None = None,
    ) -> None:
        self.network = network
        self.on_measured = on_measured
        self.transport = network.transport
        self.key = key
        self.config = config
        self.clock_ms = clock_ms
        self.book = LinkBook()
        self.measured: dict[bytes, LinkReport] = {}
        self.rounds = 0
        self.failures = 0
        self._cursor = 0

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self.config.period_ms / 1000)
            await self.measure_round()
            await self.advertise()
            if self.on_measured is not None and self.measured:
                await self.on_measured(tuple(self.measured.values()))

    # --- measuring ------------------------------------------------------------------------

    def next_peers(self, peers: Sequence[bytes]) -> list[bytes]:
        """The next `peers_per_period` peers in round-robin order."""
        ordered = sorted(set(peers))
        if not ordered:
            return []
        k = min(self.config.peers_per_period, len(ordered))
        start = self._cursor % len(ordered)
        self._cursor = start + k
        return [ordered[(start + i) % len(ordered)] for i in range(k)]

    async def measure_round(self) -> None:
        self.rounds += 1
        for peer in self.next_peers(self.transport.peers()):
            report = None
            with trio.move_on_after(MEASURE_TIMEOUT_S):
                try:
                    report = await self.measure(peer)
                except (PolnetError, OSError, trio.BrokenResourceError) as exc:
                    log.info("link measurement failed", extra={"peer": node_id(peer), "error": str(exc)})
                except Exception as exc:  # libp2p stream errors have no common base
                    log.info("link measurement failed", extra={"peer": node_id(peer), "error": repr(exc)})
            if report is None:
                self.failures += 1
            else:
                self.measured[peer] = report
        self._forget(self.clock_ms())

    async def measure(self, peer: bytes) -> LinkReport:
        stream = await self.transport.host.new_stream(peer_id_of(peer), [PING_PROTOCOL])
        rtts = []
        try:
            for _ in range(self.config.pings):
                start = trio.current_time()
                await perform_ping_roundtrip(stream)
                rtts.append(trio.current_time() - start)
        finally:
            with contextlib.suppress(Exception):  # the peer may already have reset it
                await stream.close()
        rtt = min(rtts)
        start = trio.current_time()
        await self.transport.fetch_blob(PROBE_DIGEST, PROBE_BYTES, [peer])
        elapsed = max(trio.current_time() - start - rtt, MIN_TRANSFER_S)
        kbps = min(MAX_KBPS, max(1, round(8 * PROBE_BYTES / elapsed / 1000)))
        delay_us = round(rtt / 2 * 1e6)
        return LinkReport(peer, delay_us, kbps, self.config.pings, self.clock_ms())

    def _forget(self, now: int) -> None:
        for peer in [p for p, r in self.measured.items() if r.measured_at + self.config.ttl_ms <= now]:
            del self.measured[peer]

    # --- gossip ---------------------------------------------------------------------------

    def current_advert(self, now: int) -> LinkAdvert | None:
        self._forget(now)
        reports = sorted(self.measured.values(), key=lambda r: -r.measured_at)[:MAX_LINKS_PER_ADVERT]
        if not reports:
            return None
        return LinkAdvert(now, now + self.config.ttl_ms, tuple(sorted(reports, key=lambda r: r.peer)))

    async def advertise(self) -> None:
        now = self.clock_ms()
        advert = self.current_advert(now)
        if advert is None:
            return
        self.book.offer(now, self.key.public, advert)
        try:
            await self.network.publish(TOPIC_ADVERTS, advert)
        except Exception as exc:  # a failed publish must never stop the node
            log.info("link advert gossip failed", extra={"error": repr(exc)})

    def observe(self, msg: MessageReceived) -> bool:
        """Keep a peer's advert; True if `msg` was one (whether or not it was kept)."""
        if not isinstance(msg.body, LinkAdvert):
            return False
        self.book.offer(self.clock_ms(), msg.sender, msg.body)
        return True

    # --- the admin document ---------------------------------------------------------------

    def doc(self, devices: dict[bytes, dict[str, int]]) -> dict[str, Any]:
        now = self.clock_ms()
        me = self.key.public
        agreed = self.book.agreed(now)
        nodes = {me}
        for link in agreed:
            nodes.update((link.a, link.b))
        ordered = sorted(nodes)[:MAX_MATRIX_NODES]
        if me not in ordered:
            ordered = [me, *ordered[: MAX_MATRIX_NODES - 1]]
        matrix = self.book.matrix(ordered, now)
        return {
            "node_id": node_id(me),
            "now_ms": now,
            "rounds": self.rounds,
            "failures": self.failures,
            "measured": [
                {
                    "peer": node_id(r.peer),
                    "delay_ms": r.delay_us / 1000,
                    "bandwidth_gbps": r.bandwidth_kbps / 1e6,
                    "samples": r.samples,
                    "age_s": round((now - r.measured_at) / 1000, 3),
                }
                for r in sorted(self.measured.values(), key=lambda r: r.peer)
            ],
            "reporters": len(self.book.reporters(now)),
            "agreed": [
                {
                    "a": node_id(x.a),
                    "b": node_id(x.b),
                    "delay_ms": x.delay_ms,
                    "bandwidth_gbps": x.bandwidth_gbps,
                }
                for x in agreed
            ],
            "disagreed": [[node_id(a), node_id(b)] for a, b in self.book.disagreed(now)],
            "nodes": [node_id(n) for n in ordered],
            "delay_ms": [list(row) for row in matrix.delay_ms],
            "bandwidth_gbps": [list(row) for row in matrix.bandwidth_gbps],
            "devices": [devices.get(n) for n in ordered],
        }


async def start_links(daemon: Daemon, network: TransportNetwork, nursery: trio.Nursery) -> Any:
    """Start the link service as a daemon service (unless `[links] enabled = false`);
    returns the network the daemon should use (tapped when the service runs)."""
    config = daemon.config.links
    if not config.enabled:
        return network
    from node.daemon.network import Tap

    async def to_market(reports: tuple[LinkReport, ...]) -> None:
        """Hand the reports to the market node, which commits them when due (linkcommit)."""
        driver, chain = daemon.driver, daemon.chain
        if driver is None or chain is None or not isinstance(chain.core, MarketNode):
            return
        try:
            await driver.call(LocalRequest(MeasuredLinks(reports)))
        except PolnetError as exc:
            log.info("measured links refused by the core", extra={"error": str(exc)})

    service = LinkService(network, daemon.key, config, on_measured=to_market)
    await nursery.start(service.run)
    daemon.links = service
    return Tap(network, service.observe)


def known_devices(daemon: Daemon) -> dict[bytes, dict[str, int]]:
    """Capacity the node knows: its own measurement and live market capacity adverts."""
    out: dict[bytes, dict[str, int]] = {}
    chain = daemon.chain
    if chain is not None:
        adverts = getattr(chain.core, "adverts", None)
        if adverts is not None:
            for who, ad in adverts.live(wall_ms()).items():
                out[who] = {"flops": int(ad.flops), "memory_bytes": int(ad.memory_mb) * 2**20}
    if daemon.capacity is not None:
        cap = daemon.capacity
        out[daemon.key.public] = {"flops": cap.flops, "memory_bytes": cap.memory_bytes}
    return out


def links_response(daemon: Daemon) -> Response:
    """GET /links: this node's link measurements, the agreed links and matrices."""
    import json

    service = getattr(daemon, "links", None)
    if not isinstance(service, LinkService):
        return Response(503, json.dumps({"error": "this node measures no links"}).encode())
    doc = service.doc(known_devices(daemon))
    doc["committed"] = committed_doc(daemon)
    return Response(200, json.dumps(doc, sort_keys=True).encode())


def committed_doc(daemon: Daemon) -> list[dict[str, Any]]:
    """The link reports the chain holds (CommitLinks), which crew placement reads: who
    committed, at which height, and to which peers (at most MAX_MATRIX_NODES reporters)."""
    chain = daemon.chain
    core = chain.core if chain is not None else None
    if not isinstance(core, MarketNode):
        return []
    links = core.market.links
    return [
        {"reporter": node_id(who), "height": links[who].height,
         "peers": [{"peer": node_id(r.peer), "delay_ms": r.delay_us / 1000,
                    "bandwidth_gbps": r.bandwidth_kbps / 1e6} for r in links[who].reports]}
        for who in sorted(links)[:MAX_MATRIX_NODES]
    ]
