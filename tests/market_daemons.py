"""A market of real daemon processes on loopback, driven from a test (helper module).

The same layout `polnet swarm up` uses (cli/swarm_market.py's roles, node/daemon's
localnet layout), but the test keeps the processes: it can SIGKILL and restart a node at
the moment a property is about, read every node's admin endpoint and log, and judge the
market from node 0's ledger (its tasks' penalties: who lost stake or a bond, and why).
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli.swarm_market import node_pubkeys, submit_tasks, task_docs
from node.config import RolesConfig
from node.daemon.layout import layout_localnet
from node.datadir import DataDir
from tests.daemon_harness import start, wait_ready

HTTP_TIMEOUT_S = 5.0
CHAIN_ID = "polnet-market-test"
_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as resp:
        return json.loads(resp.read(8 * 1024 * 1024))


@dataclass
class MarketNet:
    root: Path
    roles: list[RolesConfig]
    dirs: list[DataDir] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes] | None] = field(default_factory=list)
    admin: list[str] = field(default_factory=list)
    pubkeys: list[str] = field(default_factory=list)

    def start(self) -> MarketNet:
        self.dirs = layout_localnet(self.root, len(self.roles), chain_id=CHAIN_ID, roles=self.roles)
        self.pubkeys = node_pubkeys(self.dirs)
        self.procs = [start(d) for d in self.dirs]
        self.admin = [wait_ready(d, p)["admin"] for d, p in zip(self.dirs, self.procs, strict=True)]
        return self

    def stop(self) -> None:
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            if p is not None:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def restart(self, i: int) -> None:
        self.procs[i] = start(self.dirs[i])
        proc = self.procs[i]
        assert proc is not None
        self.admin[i] = wait_ready(self.dirs[i], proc)["admin"]

    # --- reading ------------------------------------------------------------------------------

    def index_of(self, pubkey_hex: str | None) -> int | None:
        return self.pubkeys.index(pubkey_hex) if pubkey_hex in self.pubkeys else None

    def tasks(self) -> dict[str, dict[str, Any]]:
        with contextlib.suppress(OSError, ValueError):
            return {t["task_id"]: t for t in _get(f"{self.admin[0]}/tasks")["tasks"]}
        return {}

    def workers_registered(self) -> int:
        with contextlib.suppress(OSError, ValueError):
            return len(_get(f"{self.admin[0]}/tasks")["workers"])
        return 0

    def log(self, i: int) -> str:
        return (self.dirs[i].root / "node.log").read_text(errors="replace")

    def log_events(self, i: int, event: str) -> list[dict[str, str]]:
        """The log records of node i whose event is `event`, as their key=value fields."""
        out = []
        for line in self.log(i).splitlines():
            fields = {k: v.strip('"') for k, v in _FIELD.findall(line)}
            if fields.get("event") == event:
                out.append(fields)
        return out

    # --- driving ------------------------------------------------------------------------------

    def submit(self, count: int, cheaters: int) -> list[str]:
        workers = sum(r.worker for r in self.roles)
        self.wait(lambda: self.workers_registered() >= workers, 240, "workers registered")
        return submit_tasks(self.dirs[0], self.admin[0], task_docs(count, cheaters))

    def wait(self, ready: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            for i, p in enumerate(self.procs):
                if p is not None and p.poll() is not None:
                    raise AssertionError(f"node {i} exited {p.returncode}: {self.log(i)[-3000:]}")
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}; tasks: {self.tasks()}")

    def wait_status(self, tid: str, statuses: tuple[str, ...], timeout: float) -> dict[str, Any]:
        what = f"{tid[:16]} in {statuses}"
        self.wait(lambda: self.tasks().get(tid, {}).get("status") in statuses, timeout, what)
        return self.tasks()[tid]
