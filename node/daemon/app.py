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
from dataclasses import asdict, dataclass, replace
from typing import Any

import trio

from node.capacity import (
    REMEASURE_EVERY_S,
    REMEASURE_FIRST_S,
    Capacity,
    CapacityEstimate,
    measure_capacity,
    unmeasured,
)
from node.config import NodeConfig
from node.daemon.chain import Chain
from node.daemon.driver import CoreDriver
from node.daemon.http import Request, Response, Routes, serve_http
from node.daemon.iface import MarketCompute
from node.daemon.lazycompute import LazyCompute
from node.daemon.ports import ComputeRunner, Network, Store
from node.daemon.progress import ProgressTracker
from node.daemon.solo import SoloNetwork
from node.daemon.state import BootInfo, DaemonState
from node.daemon.status import CatchUpWatch, chain_status, registration_status
from node.daemon.tasks import MAX_TASKS_LISTED, market_summary, parse_task_request, task_doc, workers_doc
from node.datadir import DataDir
from node.metrics import CONTENT_TYPE, NodeMetrics, reject_reason
from protocol.commands import Core, LocalRequest
from protocol.envelope import open_envelope
from protocol.errors import ConfigError, PolnetError
from protocol.identity import Keypair, public_key_from_node_id
from protocol.market.keyring import PrivateSubmit
from protocol.market.process import task_id_of
from protocol.market.roles import RegistrarRole
from protocol.market.txs import CancelTask
from protocol.market.views import stage_counts

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
ChainFactory = Callable[["Daemon"], Chain]
ComputeFactory = Callable[["Daemon"], ComputeRunner]


class Daemon:
    def __init__(
        self,
        datadir: DataDir,
        config: NodeConfig,
        key: Keypair,
        *,
        chain_factory: ChainFactory | None = None,
        network_factory: NetworkFactory | None = None,
        compute_factory: ComputeFactory | None = None,
        capacity_seconds: float = 0.2,
    ) -> None:
        self.datadir = datadir
        self.config = config
        self.key = key
        self.metrics = NodeMetrics()
        self._chain_factory = chain_factory
        self._network_factory = network_factory
        self._compute_factory = compute_factory
        self.compute: ComputeRunner | None = None
        self._capacity_seconds = capacity_seconds
        self.started_at = time.time()
        self.boot: BootInfo | None = None
        self.capacity: Capacity | None = None
        self.network: Network = SoloNetwork()
        self.driver: CoreDriver | None = None
        self.chain: Chain | None = None
        self.state: DaemonState | None = None
        self.endpoints: Endpoints | None = None
        self.links: Any = None  # node.daemon.links.LinkService, when the node measures links
        self.crews: Any = None  # node.daemon.crews.CrewRendezvous: a crew member's rendezvous
        #: The compute job running now (the runner updates it from its thread).
        self.progress = ProgressTracker()
        self._catch_up = CatchUpWatch()
        self._capacity_estimate: CapacityEstimate | None = None
        #: Capacity is measured again when idle; None skips that (tests).
        self.remeasure_first_s: float | None = REMEASURE_FIRST_S

    # --- lifecycle -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Endpoints] = trio.TASK_STATUS_IGNORED) -> None:
        self.datadir.check()
        with self.datadir.locked():
            self.state = DaemonState(self.datadir.daemon_db)
            try:
                await self._run_services(task_status)
            finally:
                self.datadir.clear_endpoints()
                if self.chain is not None:
                    self.chain.store.close()
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
            self._capacity_estimate = CapacityEstimate(self.capacity)
            self.metrics.capacity_flops.set(self.capacity.flops)
            p2p: tuple[str, ...] = ()
            if self._network_factory is not None:
                self.network, p2p = await self._network_factory(self, nursery)
            if self._chain_factory is not None:
                self.chain = await trio.to_thread.run_sync(self._chain_factory, self)
            if self._compute_factory is not None:
                self.compute = self._compute_factory(self)
            core: Core = self.chain.core if self.chain is not None else IdleCore()
            store: Store = self.chain.store if self.chain is not None else self.state
            self.driver = CoreDriver(
                core,
                self.network,
                store,
                self.metrics,
                compute=self.compute,
                compute_threads=self.config.compute.threads,
            )
            await nursery.start(self.driver.run)
            metrics_url = await self._start_metrics(nursery)
            admin_port = await _serve(nursery, self._admin_routes(), ADMIN_HOST, self.config.admin.port,
                                      "[admin] port")
            nursery.start_soon(self._refresh_metrics)
            if self.remeasure_first_s is not None and self._computes():
                nursery.start_soon(self._remeasure_capacity, self.remeasure_first_s)
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

    def _computes(self) -> bool:
        roles = self.config.roles
        return bool(roles.worker or roles.verifier)

    def _measure(self) -> Capacity:
        cfg = self.config.compute
        if not self._computes():  # no market compute: no torch, no benchmark
            return unmeasured(cfg.threads)
        return measure_capacity(cfg.threads, cfg.device, seconds=self._capacity_seconds)

    async def _start_metrics(self, nursery: trio.Nursery) -> str | None:
        m = self.config.metrics
        if not m.enabled:
            return None
        routes: Routes = {("GET", "/metrics"): self._get_metrics}
        port = await _serve(nursery, routes, m.host, m.port, "[metrics] port")
        return f"http://{m.host}:{port}/metrics"

    async def _remeasure_capacity(self, first_s: float) -> None:
        """Measure again whenever no compute job runs (the start-up figure is taken under
        the load of everything starting at once), advertise the best recent figure, and
        let the registrar update the ledger when it moved far (protocol.market.roles)."""
        await trio.sleep(first_s)
        while True:
            measured = await trio.to_thread.run_sync(self._measure_if_idle)
            if measured is not None and self._capacity_estimate is not None:
                before = self.capacity.flops if self.capacity else 0
                self.capacity = self._capacity_estimate.add(measured)
                self.metrics.capacity_flops.set(self.capacity.flops)
                log.info("capacity re-measured", extra={
                    "measured_gflops": round(measured.flops / 1e9, 2),
                    "advertised_gflops": round(self.capacity.flops / 1e9, 2),
                    "before_gflops": round(before / 1e9, 2),
                })
                self._offer_capacity(self.capacity)
            await trio.sleep(REMEASURE_EVERY_S)

    def _measure_if_idle(self) -> Capacity | None:
        """A measurement, unless a compute job holds torch (then skip this round)."""
        from node.daemon.compute import torch_lock  # torch: the daemon has it loaded by now

        lock = torch_lock()
        if not self.progress.idle() or not lock.acquire(blocking=False):
            return None
        try:
            return self._measure()
        finally:
            lock.release()

    def _offer_capacity(self, capacity: Capacity) -> None:
        if self.chain is None:
            return
        for role in self.chain.core.roles.roles:
            if isinstance(role, RegistrarRole) and role.registration is not None:
                role.registration = replace(role.registration, flops=max(1, capacity.flops))

    async def _refresh_metrics(self) -> None:
        rejected_seen = 0
        while True:
            self.metrics.peers.set(self.network.peer_count())
            if self.chain is not None:
                self.metrics.height.set(self.chain.height)
                last = self.chain.node.last_block  # each new block's time: is it catching up?
                self._catch_up.observe(self.chain.height, last.header.time if last is not None else None)
                self.metrics.stake.set(self.chain.ledger.state.stake(self.key.public).bonded)
                self.metrics.validators.set(len(self.chain.node.vset.validators))
                self._task_metrics()
            counters = getattr(self.network, "counters", None)
            if counters is not None:
                rejected = counters().get("messages_rejected", 0)
                self.metrics.messages_rejected.labels("gossip").inc(max(0, rejected - rejected_seen))
                rejected_seen = max(rejected, rejected_seen)
            await trio.sleep(METRICS_REFRESH_S)

    def _task_metrics(self) -> None:
        assert self.chain is not None
        view = self.chain.core.view
        counts = stage_counts(view.market.tasks.values() if view is not None else ())
        worker = view.market.workers.get(self.key.public) if view is not None else None
        for name, n in counts.items():
            self.metrics.tasks.labels(name).set(n)
        self.metrics.worker_stake.set(worker.stake if worker is not None else 0)

    # --- endpoints -------------------------------------------------------------------

    def _admin_routes(self) -> Routes:
        return {
            ("GET", "/status"): self._get_status,
            ("GET", "/metrics"): self._get_metrics,
            ("POST", "/tx"): self._post_tx,
            ("GET", "/account/"): self._get_account,
            ("GET", "/block/"): self._get_block,
            ("POST", "/task"): self._post_task,
            ("POST", "/task/"): self._post_task_action,
            ("GET", "/task/"): self._get_task,
            ("GET", "/tasks"): self._get_tasks,
            ("GET", "/links"): self._get_links,
            **getattr(self.network, "admin_routes", dict)(),  # the network's own (node/daemon/network.py)
        }

    async def _get_links(self, request: Request) -> Response:
        from node.daemon.links import links_response

        return links_response(self)

    async def _get_metrics(self, request: Request) -> Response:
        return Response(200, self.metrics.render(), CONTENT_TYPE)

    def status(self) -> dict[str, Any]:
        boot = self.boot or BootInfo(0, 0, 0, False)
        chain = self.chain
        return {
            "node_id": self.key.node_id,
            "chain_id": self.config.chain_id,
            "uptime_s": round(time.time() - self.started_at, 3),
            "peers": self.network.peer_count(),
            "height": chain.height if chain else 0,
            "chain": {**chain.summary(), **chain_status(chain, self._catch_up)} if chain else None,
            **self.progress.snapshot(),
            "registration": registration_status(chain, self.config.roles, self.key.public) if chain else None,
            "capacity_measurements": self._capacity_estimate.measurements if self._capacity_estimate else 0,
            "boots": boot.boots,
            "clean_stops": boot.clean_stops,
            "crashes": boot.crashes,
            "recovered": boot.recovered,
            "events_handled": self.driver.events_handled if self.driver else 0,
            "capacity": asdict(self.capacity) if self.capacity else None,
            "roles": asdict(self.config.roles),
            "market": market_summary(self.chain.core, self.key.public) if self.chain else None,
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
            return _json(400, {"error": f"{type(exc).__name__}: {exc}"})
        if self.chain is None or self.driver is None:
            return _json(503, {"error": "this node runs no chain"})
        try:
            # Through the core like every operator request: admitted to the mempool, then
            # gossiped by the driver (a failed gossip is retried by proposers, not fatal).
            await self.driver.call(LocalRequest(env.raw))
        except PolnetError as exc:
            self.metrics.rejected(reject_reason(exc))
            return _json(400, {"error": f"{type(exc).__name__}: {exc}"})
        return _json(202, {"accepted": env.message_id.hex()})

    async def _get_account(self, request: Request) -> Response:
        if self.chain is None:
            return _json(503, {"error": "this node runs no chain"})
        text = request.path.removeprefix("/account/")
        try:
            pubkey = bytes.fromhex(text) if len(text) == 64 else public_key_from_node_id(text)
        except (ValueError, PolnetError):
            return _json(400, {"error": "account must be 64 hex chars or a node id"})
        return _json(200, self.chain.account(pubkey))

    async def _get_block(self, request: Request) -> Response:
        if self.chain is None:
            return _json(503, {"error": "this node runs no chain"})
        text = request.path.removeprefix("/block/")
        if not text.isdigit() or len(text) > 19:
            return _json(400, {"error": "block height must be a non-negative integer"})
        doc = self.chain.block(int(text))
        if doc is None:
            return _json(404, {"error": f"this node holds no block {text}"})
        return _json(200, doc)


    @property
    def market_compute(self) -> MarketCompute | None:
        """The compute runner as the market pages use it (None without compute)."""
        # LazyCompute, not the runner itself: asking must not import torch.
        return self.compute if isinstance(self.compute, LazyCompute) else None

    async def _post_task(self, request: Request) -> Response:
        """Accept a task: blobs checked here, ledger rules checked and the task stored by
        the core before the answer (a refusal names the rule)."""
        if self.chain is None or self.driver is None:
            return _json(503, {"error": "this node runs no chain"})
        try:
            req = parse_task_request(request.body, self.market_compute)
            await self.driver.call(LocalRequest(req))
        except PolnetError as exc:
            return _json(400, {"error": str(exc)})
        tx = req.submit if isinstance(req, PrivateSubmit) else req
        return _json(202, {"task_id": task_id_of(self.key.public, tx).hex(), "private": bool(tx.key_commit)})

    async def _post_task_action(self, request: Request) -> Response:
        """POST /task/<id>/cancel: withdraw a task nobody was elected for (escrow back)."""
        if self.chain is None or self.driver is None:
            return _json(503, {"error": "this node runs no chain"})
        text, _, action = request.path.removeprefix("/task/").partition("/")
        if action != "cancel":
            return _json(404, {"error": f"no task action {action!r}"})
        try:
            tid = bytes.fromhex(text)
            await self.driver.call(LocalRequest(CancelTask(tid, 0, 0)))
        except ValueError:
            return _json(400, {"error": "task id must be hex"})
        except PolnetError as exc:
            return _json(409, {"error": str(exc)})
        return _json(202, {"task_id": text, "cancel": "sent"})

    async def _get_task(self, request: Request) -> Response:
        if self.chain is None:
            return _json(503, {"error": "this node runs no chain"})
        text, _, action = request.path.removeprefix("/task/").partition("/")
        try:
            tid = bytes.fromhex(text)
        except ValueError:
            return _json(400, {"error": "task id must be hex"})
        core = self.chain.core
        market = core.market
        task = market.tasks.get(tid)
        compute = self.market_compute
        if task is None:
            submitter = core.submitter
            if submitter is not None and tid in submitter.queued():
                return _json(200, {"task_id": text, "status": "QUEUED"})
            return _json(404, {"error": f"no task {text} on the ledger (or it ended long ago)"})
        doc = task_doc(market, task, compute)
        if action == "result":
            if compute is None:
                return _json(503, {"error": "this node runs no compute"})
            try:
                key = core.keyring.content_key(task, core.me) if task.private else None
                digest, acc = await trio.to_thread.run_sync(compute.final_weights, task, key)
            except PolnetError as exc:
                return _json(409, {"error": str(exc), **doc})
            doc.update(weights_blob=digest.hex(), accuracy=acc)
        return _json(200, doc)

    async def _get_tasks(self, request: Request) -> Response:
        if self.chain is None:
            return _json(503, {"error": "this node runs no chain"})
        market = self.chain.core.market
        compute = self.market_compute
        docs = [task_doc(market, t, compute) for t in list(market.tasks.values())[:MAX_TASKS_LISTED]]
        return _json(200, {"height": self.chain.height, "jackpot": market.jackpot, "tasks": docs,
                           "workers": workers_doc(market)})


async def _serve(nursery: trio.Nursery, routes: Routes, host: str, port: int, key: str) -> int:
    """Start an HTTP endpoint; a port that cannot be bound is a config value at fault."""
    try:
        bound: int = await nursery.start(serve_http, routes, host, port)
    except OSError as exc:
        raise ConfigError(f"{key} {port} on {host}: {exc.strerror or exc}") from None
    return bound


def _json(status: int, doc: dict[str, Any]) -> Response:
    return Response(status, json.dumps(doc, sort_keys=True).encode())


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
