"""Start real daemons as subprocesses on loopback and talk to them (test helper)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from node.config import AdminConfig, MetricsConfig, NetworkConfig, NodeConfig
from node.daemon.layout import init_datadir
from node.datadir import DataDir

REPO = Path(__file__).resolve().parent.parent
#: Startup imports torch and libp2p; on a loaded 2-core box that alone can take 20 s.
READY_TIMEOUT_S = 90.0


def loopback_config(chain_id: str = "polnet-test", bootstrap: tuple[str, ...] = ()) -> NodeConfig:
    """Every port 0: the kernel picks free ones and endpoints.json reports them."""
    return NodeConfig(
        chain_id=chain_id,
        network=NetworkConfig(listen_host="127.0.0.1", listen_port=0, bootstrap=bootstrap),
        metrics=MetricsConfig(port=0),
        admin=AdminConfig(port=0),
    )


def make_node(root: Path, cfg: NodeConfig | None = None) -> DataDir:
    init_datadir(root, cfg or loopback_config())
    return DataDir(root)


def start(dd: DataDir, log: Path | None = None) -> subprocess.Popen[bytes]:
    out = open(log or dd.root / "node.log", "ab")  # noqa: SIM115 - owned by the child
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "node", "run", "-d", str(dd.root)],
        cwd=REPO,
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


def wait_ready(
    dd: DataDir, proc: subprocess.Popen[bytes], timeout: float = READY_TIMEOUT_S
) -> dict[str, Any]:
    """Endpoints of *this* process (a SIGKILLed predecessor leaves a stale file)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited with {proc.returncode}: {log_tail(dd)}")
        try:
            doc: dict[str, Any] = json.loads(dd.endpoints.read_text())
            if doc.get("pid") == proc.pid:
                return doc
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"daemon not ready after {timeout}s: {log_tail(dd)}")


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body: bytes = resp.read()
        return body


def status(endpoints: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(get(endpoints["admin"] + "/status"))
    return doc


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=timeout)


def log_tail(dd: DataDir, n: int = 3000) -> str:
    try:
        return (dd.root / "node.log").read_text(errors="replace")[-n:]
    except FileNotFoundError:
        return "(no log)"
