"""`polnet swarm up --nodes N`: a local network of real daemons on 127.0.0.1.

Each node is a separate `polnet node run` process with its own data dir, so the swarm
exercises exactly what operators run: real TCP, real gossip, one sqlite per node. The
live view polls every node's admin endpoint; the final report says whether the nodes
agreed (the same block hash at a common height) and how fast blocks came.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from rich.live import Live
from rich.table import Table

from cli.output import emit_json, fail, operator_errors, stdout
from node.daemon.layout import MAX_LOCALNET_NODES, layout_localnet
from node.datadir import DataDir
from protocol.errors import ConfigError

app = typer.Typer(help="Run a local network of real daemons.", no_args_is_help=True)

POLL_S = 0.5
HTTP_TIMEOUT_S = 2.0
#: Startup imports torch and libp2p in every process; on a small shared box that is slow.
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0


@dataclass
class SwarmNode:
    index: int
    datadir: DataDir
    proc: subprocess.Popen[bytes]
    admin: str | None = None
    last: dict[str, Any] = field(default_factory=dict)

    def poll(self) -> None:
        if self.admin is None:
            try:
                doc = json.loads(self.datadir.endpoints.read_text())
                if doc.get("pid") == self.proc.pid:
                    self.admin = doc["admin"]
            except (OSError, ValueError, KeyError):
                return
        with contextlib.suppress(OSError, ValueError):
            self.last = _get(f"{self.admin}/status")

    @property
    def height(self) -> int:
        return int(self.last.get("height", 0))

    @property
    def state(self) -> str:
        if self.proc.poll() is not None:
            return f"exited {self.proc.returncode}"
        return "running" if self.last else "starting"


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as resp:
        return json.loads(resp.read(1024 * 1024))


def _spawn(dd: DataDir) -> subprocess.Popen[bytes]:
    log = open(dd.root / "node.log", "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "node", "run", "-d", str(dd.root)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop them in order
    )


def _table(nodes: list[SwarmNode], elapsed: float, target: int) -> Table:
    table = Table(title=f"polnet swarm: {len(nodes)} nodes, {elapsed:5.1f} s, target height {target}")
    for col in ("node", "id", "state", "height", "peers", "mempool"):
        table.add_column(col)
    for n in nodes:
        chain = n.last.get("chain") or {}
        table.add_row(
            f"{n.index:02d}",
            str(n.last.get("node_id", ""))[-10:],
            n.state,
            str(n.height),
            str(n.last.get("peers", "")),
            str(chain.get("mempool", "")),
        )
    return table


def _agreement(nodes: list[SwarmNode]) -> tuple[int, bool]:
    """The highest height every live node has passed, and whether they all hold the
    same block there."""
    live = [n for n in nodes if n.admin and n.proc.poll() is None]
    if not live:
        return 0, False
    h = min(n.height for n in live)
    if h == 0:
        return 0, False
    hashes = set()
    for n in live:
        try:
            hashes.add(_get(f"{n.admin}/block/{h}")["hash"])
        except (OSError, ValueError, KeyError):
            return h, False
    return h, len(hashes) == 1


def _stop_all(nodes: list[SwarmNode]) -> list[int | None]:
    for n in nodes:
        if n.proc.poll() is None:
            n.proc.send_signal(signal.SIGTERM)
    codes: list[int | None] = []
    for n in nodes:
        try:
            codes.append(n.proc.wait(timeout=STOP_TIMEOUT_S))
        except subprocess.TimeoutExpired:
            n.proc.kill()
            codes.append(n.proc.wait())
    return codes


def _run(nodes: list[SwarmNode], blocks: int, duration: float, live: bool) -> float:
    start = time.monotonic()
    ready_deadline = start + READY_TIMEOUT_S
    with Live(_table(nodes, 0, blocks), console=stdout, refresh_per_second=4, transient=not live) as view:
        while True:
            for n in nodes:
                n.poll()
            elapsed = time.monotonic() - start
            view.update(_table(nodes, elapsed, blocks))
            if any(n.proc.poll() is not None for n in nodes):
                raise ConfigError("a node exited early; see its node.log")
            if any(n.admin is None for n in nodes) and time.monotonic() > ready_deadline:
                raise ConfigError(f"not every node was ready within {READY_TIMEOUT_S:.0f} s")
            if all(n.height >= blocks for n in nodes) or elapsed >= duration:
                return elapsed
            time.sleep(POLL_S)


@app.command()
def up(
    nodes: int = typer.Option(4, "--nodes", "-n", min=1, max=MAX_LOCALNET_NODES, help="How many daemons."),
    blocks: int = typer.Option(10, min=1, max=1_000_000, help="Stop when every node reaches this height."),
    duration: float = typer.Option(180.0, min=1.0, max=86_400.0, help="Stop after this many seconds anyway."),
    block_interval_ms: int = typer.Option(500, min=0, max=600_000, help="Pause between heights."),
    directory: Path | None = typer.Option(
        None, "--dir", help="Where to lay out the nodes (default: a temp dir)."
    ),
    chain_id: str = typer.Option("polnet-local", help="Chain id of the local network."),
    as_json: bool = typer.Option(False, "--json", help="Print the final report as JSON."),
) -> None:
    """Start N daemons on loopback, show their progress live, stop them, report."""
    root = directory if directory is not None else Path(tempfile.mkdtemp(prefix="polnet-swarm-"))
    with operator_errors():
        dirs = layout_localnet(root, nodes, chain_id=chain_id, block_interval_ms=block_interval_ms)
    swarm = [SwarmNode(i, d, _spawn(d)) for i, d in enumerate(dirs)]
    error: str | None = None
    elapsed = 0.0
    try:
        elapsed = _run(swarm, blocks, duration, live=not as_json)
    except ConfigError as exc:
        error = str(exc)
    except KeyboardInterrupt:
        error = "interrupted"
    height, agreed = _agreement(swarm)
    codes = _stop_all(swarm)
    report = {
        "nodes": nodes,
        "dir": str(root),
        "seconds": round(elapsed, 2),
        "min_height": min((n.height for n in swarm), default=0),
        "max_height": max((n.height for n in swarm), default=0),
        "agreed_height": height,
        "same_block_at_agreed_height": agreed,
        "blocks_per_s": round(height / elapsed, 3) if elapsed else 0.0,
        "exit_codes": codes,
        "clean_shutdown": all(c == 0 for c in codes),
        "error": error,
    }
    if as_json:
        emit_json(report)
    else:
        _print_report(report)
    if error is not None or not agreed or report["min_height"] < blocks:
        fail(error or f"the swarm did not reach height {blocks} in agreement (logs in {root})")


def _print_report(report: dict[str, Any]) -> None:
    table = Table(title="swarm report", show_header=False)
    for key, value in report.items():
        table.add_row(key, str(value))
    stdout.print(table)
