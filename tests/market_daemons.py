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
from cli.task_cmd import _post_json, submit_built
from cli.task_spec import BuiltTask, build_task
from node.config import RolesConfig
from node.daemon.blobdir import BlobDir
from node.daemon.layout import layout_localnet
from node.datadir import DataDir
from protocol.market.txs import SubmitTask
from protocol.records import encode_record
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
    #: Each node's libp2p listen addresses (`/ip4/.../p2p/<id>`), from its endpoints file.
    p2p: list[list[str]] = field(default_factory=list)

    def start(self) -> MarketNet:
        self.dirs = layout_localnet(self.root, len(self.roles), chain_id=CHAIN_ID, roles=self.roles)
        self.pubkeys = node_pubkeys(self.dirs)
        procs = [start(d) for d in self.dirs]
        self.procs = list(procs)
        ready = [wait_ready(d, p) for d, p in zip(self.dirs, procs, strict=True)]
        self.admin = [doc["admin"] for doc in ready]
        self.p2p = [list(doc["p2p"]) for doc in ready]
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
        doc = wait_ready(self.dirs[i], proc)
        self.admin[i], self.p2p[i] = doc["admin"], list(doc["p2p"])

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
        self.wait_workers()
        return submit_tasks(self.dirs[0], self.admin[0], task_docs(count, cheaters))

    def submit_crew(self, spec: bytes, tx: SubmitTask) -> str:
        """Submit a crew task through node 0 once every worker is registered: its crew task
        file where node 0 serves it, then the transaction (checked against the file)."""
        self.wait_workers()
        BlobDir(self.dirs[0].blobs).put(spec)
        answer = _post_json(f"{self.admin[0]}/task", {"submit": encode_record(tx).hex()})
        return str(answer["task_id"])

    def wait_workers(self) -> None:
        workers = sum(r.worker for r in self.roles)
        self.wait(lambda: self.workers_registered() >= workers, 240, "workers registered")

    def submit_docs(self, docs: list[dict[str, Any]]) -> list[tuple[str, BuiltTask]]:
        """Submit `docs` through node 0 once every worker is registered, as `polnet task
        submit` does; with each task id, what `build_task` built (its spec, plaintext
        dataset and, for a private task, content key)."""
        self.wait_workers()
        out = []
        for doc in docs:
            built = build_task(doc, Path("."))
            out.append((submit_built(self.dirs[0], self.admin[0], built), built))
        return out

    def task(self, tid: str) -> dict[str, Any]:
        """Node 0's admin document of one task (its full view, as `task status --json`)."""
        doc: dict[str, Any] = _get(f"{self.admin[0]}/task/{tid}")
        return doc

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
