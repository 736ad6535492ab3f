"""A swarm of `node.transport.peer` processes on loopback, driven from one parent.

Ports are reserved and node ids derived from labels up front, so every process can be
started at once with its bootstrap list already known; dialers retry with backoff
until their peers are listening. Used by the multi-process tests and by
bench/transport.py.
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from node.ports import free_ports
from protocol.identity import Keypair

Event = dict[str, Any]


class ProcSwarm:
    def __init__(
        self,
        n: int,
        label: str = "proc",
        chain_id: str = "devnet",
        seeds: int = 2,
        hub: bool = False,
        target_peers: int | None = None,
    ) -> None:
        self.n = n
        self.labels = [f"{label}/{i}" for i in range(n)]
        self.keys = [Keypair.derive(lbl) for lbl in self.labels]
        self.ports = free_ports(n)
        self.addrs = [f"/ip4/127.0.0.1/tcp/{p}/p2p/{k.node_id}" for p, k in zip(self.ports, self.keys)]
        self.chain_id = chain_id
        self.seeds = seeds
        self.hub = hub
        self.target_peers = target_peers
        self.procs: list[subprocess.Popen[str]] = []
        self.queues: list[queue.Queue[Event]] = [queue.Queue() for _ in range(n)]

    def bootstrap_for(self, i: int) -> list[str]:
        """Node i dials its `seeds` predecessors on a ring: connected, no hub; with `hub`,
        every node is told of node 0 only (peer discovery must find the rest)."""
        if self.hub:
            return [] if i == 0 else [self.addrs[0]]
        return [self.addrs[(i - d) % self.n] for d in range(1, self.seeds + 1) if (i - d) % self.n != i]

    def start(self, timeout_s: float = 60.0) -> None:
        for i in range(self.n):
            self.procs.append(self._launch(i))
        for i in range(self.n):
            self.wait_for(i, lambda e: e["event"] == "ready", timeout_s)

    def _launch(self, i: int) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "node.transport.peer", "--label", self.labels[i],
               "--chain-id", self.chain_id, "--port", str(self.ports[i])]
        for addr in self.bootstrap_for(i):
            cmd += ["--bootstrap", addr]
        if self.target_peers is not None:
            cmd += ["--target-peers", str(self.target_peers)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, bufsize=1)
        threading.Thread(target=self._pump, args=(proc, self.queues[i]), daemon=True).start()
        return proc

    @staticmethod
    def _pump(proc: subprocess.Popen[str], q: queue.Queue[Event]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                q.put(json.loads(line))
            except json.JSONDecodeError:
                continue
        q.put({"event": "exited", "rc": proc.wait()})

    def kill(self, i: int) -> int:
        """SIGKILL node i (no goodbye to anyone) and reap it."""
        self.procs[i].kill()
        return self.procs[i].wait()

    def restart(self, i: int, timeout_s: float = 60.0) -> Event:
        """Start node i again with the same key and port; returns its ready event."""
        self.queues[i] = queue.Queue()
        self.procs[i] = self._launch(i)
        return self.wait_for(i, lambda e: e["event"] == "ready", timeout_s)

    def send(self, i: int, line: str) -> None:
        proc = self.procs[i]
        assert proc.stdin is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()

    def wait_for(self, i: int, pred: Callable[[Event], bool], timeout_s: float) -> Event:
        """The next event of node i matching `pred` (earlier non-matching ones are dropped)."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0 and self.queues[i].empty():
                raise TimeoutError(f"node {i}: no matching event within {timeout_s}s")
            try:
                ev = self.queues[i].get(timeout=max(left, 0.001))
            except queue.Empty:
                continue
            if ev["event"] == "exited" and not pred(ev):
                raise RuntimeError(f"node {i} exited with {ev['rc']}")
            if pred(ev):
                return ev

    def collect(self, i: int, pred: Callable[[Event], bool], count: int, timeout_s: float) -> list[Event]:
        """Up to `count` events of node i matching `pred`, whatever arrived by the deadline."""
        deadline = time.monotonic() + timeout_s
        got: list[Event] = []
        while len(got) < count:
            try:
                got.append(self.wait_for(i, pred, max(0.0, deadline - time.monotonic())))
            except TimeoutError:
                break
        return got

    def drain(self, i: int) -> list[Event]:
        out = []
        while True:
            try:
                out.append(self.queues[i].get_nowait())
            except queue.Empty:
                return out

    def stats(self, i: int, timeout_s: float = 30.0) -> Event:
        self.send(i, "stats")
        return self.wait_for(i, lambda e: e["event"] == "stats", timeout_s)

    def stop(self, timeout_s: float = 30.0) -> list[int | None]:
        """Ask every node to quit, wait for all within one shared deadline, kill stragglers."""
        for i, proc in enumerate(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    self.send(i, "quit")
        deadline = time.monotonic() + timeout_s
        codes: list[int | None] = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
        return codes

    def __enter__(self) -> ProcSwarm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
