"""The polnet daemon: one trio nursery holding every service of a node.

Start order is dependency order, each service started with `nursery.start` so that the
next one only starts once the previous reported ready: durable state, capacity
measurement (a worker thread), the transport, the consensus driver, then the metrics
and admin endpoints; `run()` reports ready (with the endpoints) only when all are up,
and writes them to run/endpoints.json for the CLI.

Shutdown is cancellation of that one nursery (SIGINT/SIGTERM do it in `run_daemon`):
trio unwinds every service, the transport closes its hosts in its own `finally`, and
ours marks the state as cleanly stopped. A SIGKILL skips all of that, which the next
start detects (DaemonState.start) and recovers from.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import trio

from node.capacity import Capacity, measure_capacity
from node.config import NodeConfig
from node.daemon.driver import CoreDriver
from node.daemon.http import Request, Response, Routes, serve_http
from node.daemon.ports import Network
from node.daemon.solo import SoloNetwork
from node.daemon.state import BootInfo, DaemonState
from node.datadir import DataDir
from node.metrics import CONTENT_TYPE, NodeMetrics, reject_reason
from protocol.commands import TOPIC_TXS, Core, MessageReceived
from protocol.envelope import open_envelope
from protocol.errors import PolnetError
from protocol.identity import Keypair

log = logging.getLogger("polnet.daemon")

#: How often gauges that are read, not pushed (peers, height), are refreshed.
METRICS_REFRESH_S = 1.0
ADMIN_HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Endpoints:
    pid: int
    node_id: str
    chain_id: str
    admin: str
    metrics: str | None
    p2p: tuple[str, ...]


class IdleCore:
    """The core a node runs when no chain core is configured: it accepts events and
    does nothing, so the daemon's services can run and be observed on their own."""

    def handle(self, now: int, event: Any) -> list[Any]:
        return []


NetworkFactory = Callable[["Daemon", trio.Nursery], Any]
CoreFactory = Callable[["Daemon"], Core]


class Daemon:
    def __init__(
        self,
        datadir: DataDir,
        config: NodeConfig,
        key: Keypair,
        *,
        core_factory: CoreFactory | None = None,
        network_factory: NetworkFactory | None = None,
        capacity_seconds: float = 0.2,
    ) -> None:
        self.datadir = datadir
        self.config = config
        self.key = key
        self.metrics = NodeMetrics()
        self._core_factory = core_factory or (lambda daemon: IdleCore())
        self._network_factory = network_factory
        self._capacity_seconds = capacity_seconds
        self.started_at = time.time()
        self.boot: BootInfo | None = None
        self.capacity: Capacity | None = None
        self.network: Network = SoloNetwork()
        self.driver: CoreDriver | None = None
        self.state: DaemonState | None = None
        self.endpoints: Endpoints | None = None

    # --- lifecycle -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Endpoints] = trio.TASK_STATUS_IGNORED) -> None:
        self.datadir.check()
        with self.datadir.locked():
            self.state = DaemonState(self.datadir.daemon_db)
            try:
                await self._run_services(task_status)
            finally:
                self.datadir.clear_endpoints()
                self.state.stop()
                self.state.close()
                log.info("node stopped", extra={"node_id": self.key.node_id})

    async def _run_services(self, task_status: trio.TaskStatus[Endpoints]) -> None:
        assert self.state is not None
        self.boot = self.state.start()
        self.metrics.uptime_boots.set(self.boot.boots)
        if self.boot.recovered:
            log.warning("previous run did not stop cleanly; recovering", extra={"boots": self.boot.boots})
        async with trio.open_nursery() as nursery:
            self.capacity = await trio.to_thread.run_sync(self._measure)
            self.metrics.capacity_flops.set(self.capacity.flops)
            p2p: tuple[str, ...] = ()
            if self._network_factory is not None:
                self.network, p2p = await self._network_factory(self, nursery)
            self.driver = CoreDriver(
                self._core_factory(self),
                self.network,
                self.state,
                self.metrics,
                compute_threads=self.config.compute.threads,
            )
            await nursery.start(self.driver.run)
            metrics_url = await self._start_metrics(nursery)
            admin = self.config.admin.port
            admin_port = await nursery.start(serve_http, self._admin_routes(), ADMIN_HOST, admin)
            nursery.start_soon(self._refresh_metrics)
            self.endpoints = Endpoints(
                pid=_pid(),
                node_id=self.key.node_id,
                chain_id=self.config.chain_id,
                admin=f"http://{ADMIN_HOST}:{admin_port}",
                metrics=metrics_url,
                p2p=p2p,
            )
            self.datadir.write_endpoints(asdict(self.endpoints))
            log.info("node ready", extra=asdict(self.endpoints))
            task_status.started(self.endpoints)

    def _measure(self) -> Capacity:
        cfg = self.config.compute
        return measure_capacity(cfg.threads, cfg.device, seconds=self._capacity_seconds)

    async def _start_metrics(self, nursery: trio.Nursery) -> str | None:
        m = self.config.metrics
        if not m.enabled:
            return None
        routes: Routes = {("GET", "/metrics"): self._get_metrics}
        port = await nursery.start(serve_http, routes, m.host, m.port)
        return f"http://{m.host}:{port}/metrics"

    async def _refresh_metrics(self) -> None:
        while True:
            self.metrics.peers.set(self.network.peer_count())
            await trio.sleep(METRICS_REFRESH_S)

    # --- endpoints -------------------------------------------------------------------

    def _admin_routes(self) -> Routes:
        return {
            ("GET", "/status"): self._get_status,
            ("GET", "/metrics"): self._get_metrics,
            ("POST", "/tx"): self._post_tx,
        }

    async def _get_metrics(self, request: Request) -> Response:
        return Response(200, self.metrics.render(), CONTENT_TYPE)

    def status(self) -> dict[str, Any]:
        boot = self.boot or BootInfo(0, 0, 0, False)
        return {
            "node_id": self.key.node_id,
            "chain_id": self.config.chain_id,
            "uptime_s": round(time.time() - self.started_at, 3),
            "peers": self.network.peer_count(),
            "height": int(self.metrics.height._value.get()),
            "boots": boot.boots,
            "clean_stops": boot.clean_stops,
            "crashes": boot.crashes,
            "recovered": boot.recovered,
            "events_handled": self.driver.events_handled if self.driver else 0,
            "capacity": asdict(self.capacity) if self.capacity else None,
            "roles": asdict(self.config.roles),
            "endpoints": asdict(self.endpoints) if self.endpoints else None,
        }

    async def _get_status(self, request: Request) -> Response:
        return Response(200, json.dumps(self.status(), sort_keys=True).encode())

    async def _post_tx(self, request: Request) -> Response:
        """Accept a sealed transaction from a local wallet: verify it here (the same
        checks a peer's message gets), hand it to the core, gossip it on."""
        try:
            env = open_envelope(request.body, self.config.chain_id)
        except PolnetError as exc:
            self.metrics.rejected(reject_reason(exc))
            return Response(400, json.dumps({"error": str(exc)}).encode())
        assert self.driver is not None
        await self.driver.submit(MessageReceived(TOPIC_TXS, env.sender, env.body, env.raw))
        return Response(202, json.dumps({"accepted": env.message_id.hex()}).encode())


def _pid() -> int:
    import os

    return os.getpid()


async def run_until_signalled(daemon: Daemon, on_ready: Callable[[Endpoints], None] | None = None) -> None:
    """Run the daemon until SIGINT or SIGTERM, then shut down gracefully."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            endpoints = await nursery.start(daemon.run)
            if on_ready is not None:
                on_ready(endpoints)
            async for signum in signals:
                log.info("signal received; shutting down", extra={"signal": signal.Signals(signum).name})
                nursery.cancel_scope.cancel()
                break
