"""Restarting the daemons of a local network, and measuring how fast the chain resumes.

`polnet swarm up --restart-staggered S`, the multi-process restart tests and
bench/restart.py all do the same thing: a network of separate `polnet node run`
processes on loopback, some of them stopped (SIGTERM or SIGKILL) and started again in
some order with S seconds between starts, and the time from the last start until every
node has committed a few new blocks ("resume"). That lives here once.

Why processes: the failures this guards against (gossip sequence numbers reused after a
restart, a seen-cache that keeps suppressing a re-sent vote, a node that votes before it
has caught up) only happen between separate libp2p hosts that restart for real.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from node.datadir import DataDir

#: Startup imports torch and libp2p; on a loaded 2-core box that alone can take 20 s.
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
HTTP_TIMEOUT_S = 2.0
POLL_S = 0.25
#: "Resumed" means every node committed this many blocks past the height reached before
#: the restarts began.
RESUME_BLOCKS = 5
#: Longest a restart order may take to resume before it counts as a stall.
RESUME_TIMEOUT_S = 120.0
#: Most nodes a restart plan may name (a local network's cap is larger; plans that
#: enumerate orders grow factorially, so 4-8 nodes is what they are for).
MAX_PLAN_NODES = 64


def spawn_daemon(dd: DataDir) -> subprocess.Popen[bytes]:
    """One `polnet node run` process with its output appended to the node's log."""
    log = open(dd.root / "node.log", "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "node", "run", "-d", str(dd.root)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop them in order
    )


def get_json(url: str, timeout: float = HTTP_TIMEOUT_S) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read(1024 * 1024))


@dataclass
class NetNode:
    """One daemon of the network: its data dir, its current process, its admin URL."""

    datadir: DataDir
    proc: subprocess.Popen[bytes] | None = None
    admin: str | None = None
    last: dict[str, Any] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def endpoints(self) -> dict[str, Any] | None:
        """The endpoints this process wrote (a SIGKILLed predecessor leaves a stale file)."""
        if self.proc is None:
            return None
        try:
            doc: dict[str, Any] = json.loads(self.datadir.endpoints.read_text())
        except (OSError, ValueError):
            return None
        return doc if doc.get("pid") == self.proc.pid else None

    def status(self) -> dict[str, Any] | None:
        if self.admin is None:
            ep = self.endpoints()
            if ep is None:
                return None
            self.admin = ep["admin"]
        try:
            doc: dict[str, Any] = get_json(f"{self.admin}/status")
        except (OSError, ValueError):
            return None
        self.last = doc
        return doc


class LocalNet:
    """Separate daemon processes over prepared data dirs (node.daemon.layout)."""

    def __init__(self, dirs: Sequence[DataDir], spawn: Callable[[DataDir], Any] = spawn_daemon) -> None:
        self.nodes = [NetNode(d) for d in dirs]
        self._spawn = spawn

    def __len__(self) -> int:
        return len(self.nodes)

    # --- processes -------------------------------------------------------------------------

    def start(self, i: int) -> None:
        node = self.nodes[i]
        if node.running:
            raise RuntimeError(f"node {i} is already running")
        node.proc, node.admin, node.last = self._spawn(node.datadir), None, {}

    def start_all(self) -> None:
        for i in range(len(self.nodes)):
            self.start(i)

    def stop(self, i: int, sig: int = signal.SIGTERM) -> int | None:
        """Signal node i and wait for it to exit; a SIGTERM that is not obeyed in time
        becomes a SIGKILL (and the exit code says so)."""
        node = self.nodes[i]
        if node.proc is None or node.proc.poll() is not None:
            return None if node.proc is None else node.proc.returncode
        node.proc.send_signal(sig)
        try:
            return node.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            return node.proc.wait()

    def stop_all(self, sig: int = signal.SIGTERM) -> list[int | None]:
        for node in self.nodes:
            if node.running:
                assert node.proc is not None
                node.proc.send_signal(sig)
        return [self.stop(i, sig) for i in range(len(self.nodes))]

    def close(self) -> None:
        """Stop everything that still runs (cleanly if it will): never leave processes."""
        with contextlib.suppress(Exception):
            self.stop_all(signal.SIGTERM)
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.kill()
                node.proc.wait()

    # --- observation -------------------------------------------------------------------------

    def wait_ready(self, indices: Iterable[int] | None = None, timeout: float = READY_TIMEOUT_S) -> None:
        todo = set(range(len(self.nodes)) if indices is None else indices)
        deadline = time.monotonic() + timeout
        while todo:
            for i in sorted(todo):
                node = self.nodes[i]
                if node.proc is not None and node.proc.poll() is not None:
                    raise RuntimeError(f"node {i} exited with {node.proc.returncode}: {self.log_tail(i)}")
                if node.status() is not None:
                    todo.discard(i)
            if todo and time.monotonic() > deadline:
                raise TimeoutError(f"nodes {sorted(todo)} not ready within {timeout:.0f} s")
            time.sleep(POLL_S)

    def heights(self) -> list[int]:
        """Last committed height of each node (-1: not answering)."""
        out = []
        for node in self.nodes:
            st = node.status() if node.running else None
            out.append(int(st["height"]) if st is not None else -1)
        return out

    def wait_for(self, pred: Callable[[], bool], timeout: float, what: str) -> float:
        """Seconds until `pred()` held; TimeoutError naming `what` if it never did."""
        t0 = time.monotonic()
        while not pred():
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(POLL_S)
        return time.monotonic() - t0

    def wait_height(self, height: int, timeout: float = RESUME_TIMEOUT_S) -> float:
        return self.wait_for(lambda: min(self.heights()) >= height, timeout, f"every node at height {height}")

    def log_tail(self, i: int, n: int = 3000) -> str:
        try:
            return (self.nodes[i].datadir.root / "node.log").read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return "(no log)"


# --- restart plans ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RestartPlan:
    """Stop `nodes` (all at once, with `sig`), then start them in this order with
    `stagger_s` between starts. `label` names the plan in reports."""

    nodes: tuple[int, ...]
    sig: int
    stagger_s: float

    @property
    def label(self) -> str:
        name = "kill" if self.sig == signal.SIGKILL else "term"
        return f"{name}:{'-'.join(map(str, self.nodes))}"


def every_order(n: int, stagger_s: float) -> list[RestartPlan]:
    """Every order of a full restart of n nodes, alternating SIGKILL and SIGTERM so that
    both crash recovery and a clean stop are covered by each half of the orders."""
    if not 1 <= n <= MAX_PLAN_NODES:
        raise ValueError(f"a restart plan covers 1..{MAX_PLAN_NODES} nodes, got {n}")
    sigs = itertools.cycle((signal.SIGKILL, signal.SIGTERM))
    return [RestartPlan(order, next(sigs), stagger_s) for order in itertools.permutations(range(n))]


def subsets(n: int, stagger_s: float) -> list[RestartPlan]:
    """Every proper, non-empty subset of n nodes restarted in ascending order (kill -9):
    one node down, a minority down, a blocking group down."""
    plans = []
    for k in range(1, n):
        for combo in itertools.combinations(range(n), k):
            plans.append(RestartPlan(combo, signal.SIGKILL, stagger_s))
    return plans


@dataclass(frozen=True, slots=True)
class Resume:
    label: str
    base_height: int
    resume_s: float
    #: Seconds from the first stop to the last start (how long the plan itself took).
    restart_s: float


def run_plan(net: LocalNet, plan: RestartPlan, blocks: int = RESUME_BLOCKS,
             timeout: float = RESUME_TIMEOUT_S) -> Resume:
    """Run one restart plan against a running network and time its resume."""
    base = max(net.heights())
    t0 = time.monotonic()
    for i in plan.nodes:
        proc = net.nodes[i].proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(plan.sig)  # all at once, then wait for each
    for i in plan.nodes:
        net.stop(i, plan.sig)
    last_start = t0
    for k, i in enumerate(plan.nodes):
        if k:
            time.sleep(plan.stagger_s)
        last_start = time.monotonic()
        net.start(i)
    net.wait_ready(plan.nodes)
    net.wait_for(lambda: min(net.heights()) >= base + blocks, timeout,
                 f"{plan.label} to resume {blocks} blocks past {base}")
    # Resume counts from the last start, so the last node's own start-up is included.
    return Resume(plan.label, base, round(time.monotonic() - last_start, 2), round(last_start - t0, 2))


def rolling_restart(net: LocalNet, stagger_s: float, sig: int = signal.SIGTERM,
                    order: Sequence[int] | None = None) -> float:
    """Each node in turn is stopped and started again, `stagger_s` after the previous
    node's restart began (so with a short stagger several are down at once). Returns the
    time of the last start (time.monotonic())."""
    last = time.monotonic()
    for k, i in enumerate(order if order is not None else range(len(net))):
        if k:
            time.sleep(max(0.0, last + stagger_s - time.monotonic()))
        last = time.monotonic()
        net.stop(i, sig)
        net.start(i)
    return last


# --- `polnet swarm up --restart-staggered S` --------------------------------------------------------


class Restartable(Protocol):
    """What the staggered restart needs of a swarm node (cli.swarm_cmd.SwarmNode has it)."""

    datadir: DataDir
    proc: Any
    admin: str | None
    last: dict[str, Any]
    restarting: bool


class StaggeredRestart:
    """Restart every node of a running swarm in turn, `stagger_s` apart (SIGTERM, then the
    same data dir again), in a background thread so the swarm's live view keeps polling.
    Node i is stopped at t0 + i * stagger_s; with a stagger shorter than a restart,
    several nodes are down at once (the pattern that used to halt the chain)."""

    def __init__(self, nodes: Sequence[Restartable], stagger_s: float,
                 spawn: Callable[[DataDir], Any] = spawn_daemon, sig: int = signal.SIGTERM) -> None:
        self.nodes = list(nodes)
        self.stagger_s = stagger_s
        self._spawn = spawn
        self._sig = sig
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.restarted = 0
        self.errors: list[str] = []
        self._thread: threading.Thread | None = None

    @property
    def done(self) -> bool:
        return self.finished_at is not None

    def start(self) -> None:
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="staggered-restart", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self.started_at is not None
        threads = []
        for k, node in enumerate(self.nodes):
            time.sleep(max(0.0, self.started_at + k * self.stagger_s - time.monotonic()))
            t = threading.Thread(target=self._restart_one, args=(node,), daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        self.finished_at = time.monotonic()

    def _restart_one(self, node: Restartable) -> None:
        node.restarting = True
        try:
            if node.proc.poll() is None:
                node.proc.send_signal(self._sig)
                try:
                    node.proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait()
            node.admin, node.last = None, {}
            node.proc = self._spawn(node.datadir)
            self.restarted += 1
        except OSError as exc:
            self.errors.append(f"{node.datadir.root}: {exc}")
        finally:
            node.restarting = False

    def report(self) -> dict[str, Any]:
        took = None
        if self.started_at is not None and self.finished_at is not None:
            took = round(self.finished_at - self.started_at, 2)
        return {"stagger_s": self.stagger_s, "restarted": self.restarted, "restart_s": took,
                "errors": self.errors}
