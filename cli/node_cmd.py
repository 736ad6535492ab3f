"""`polnet node run` and `polnet node status`."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from cli.init_cmd import DEFAULT_DATA_DIR
from cli.output import emit_json, fail, operator_errors, stdout
from node.config import load_config
from node.daemon.keyfile import load_key_file
from node.datadir import DataDir
from node.logs import configure_logging
from protocol.errors import ConfigError

if TYPE_CHECKING:
    from node.daemon.app import Daemon, Endpoints

app = typer.Typer(help="Run a node and look at it.", no_args_is_help=True)

#: The CLI waits this long for a local node to answer before calling it unreachable.
HTTP_TIMEOUT_S = 5.0
#: Admin answers are small JSON documents.
MAX_ANSWER_BYTES = 1024 * 1024
#: How long a stopped node waits for a compute thread still in torch before it exits.
THREAD_GRACE_S = 2.0


def load_daemon(data_dir: Path) -> Daemon:
    """Everything `node run` does before the event loop: each step fails with a clear
    ConfigError/KeyFileError naming the file at fault. (The daemon's modules pull in
    torch and libp2p, so they are imported here, not when any CLI command starts.)"""
    from node.daemon.wiring import build_daemon

    datadir = DataDir(data_dir)
    datadir.check()
    cfg = load_config(datadir.config, os.environ)
    key = load_key_file(datadir.node_key, passphrase=os.environ.get("POLNET_KEY_PASSPHRASE"))
    return build_daemon(datadir, cfg, key)


@app.command()
def run(
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, "--data-dir", "-d", help="The node's data directory."),
) -> None:
    """Run the node in the foreground until SIGINT or SIGTERM."""
    import trio

    from node.daemon.app import run_until_signalled

    with operator_errors():
        daemon = load_daemon(data_dir)
        configure_logging(daemon.config.log.level, json=daemon.config.log.json)

        def ready(endpoints: Endpoints) -> None:
            doc = {"node_id": endpoints.node_id, "admin": endpoints.admin}
            typer.echo(f"ready {json.dumps(doc)}", err=True)

        trio.run(run_until_signalled, daemon, ready)
    _exit_past_compute_threads()


def _exit_past_compute_threads() -> None:
    """A compute job abandoned at shutdown may still be inside torch's C++ code; letting
    the interpreter finalise under it aborts the process ("terminate called without an
    active exception"). The daemon has already stopped cleanly and flushed its state, so
    wait a little for such threads and then leave without finalising."""
    import logging
    import threading
    import time

    deadline = time.monotonic() + THREAD_GRACE_S
    for t in threading.enumerate():
        if t is not threading.main_thread():
            t.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in threading.enumerate() if t is not threading.main_thread()):
        logging.shutdown()
        os._exit(0)


def get_json(url: str) -> Any:
    """GET a local node endpoint, with errors an operator can act on."""
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as resp:
            return json.loads(resp.read(MAX_ANSWER_BYTES))
    except urllib.error.HTTPError as exc:
        detail = exc.read(4096).decode(errors="replace")
        raise ConfigError(f"{url}: node answered HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ConfigError(f"{url}: node not reachable ({exc}); is it running?") from None
    except ValueError:
        raise ConfigError(f"{url}: node answered something that is not JSON") from None


def admin_url(data_dir: Path) -> str:
    url = DataDir(data_dir).read_endpoints().get("admin")
    if not isinstance(url, str) or not url.startswith("http://127.0.0.1:"):
        raise ConfigError(f"{data_dir}: endpoints file names no local admin endpoint")
    return url


@app.command()
def status(
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, "--data-dir", "-d", help="The node's data directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw status document."),
) -> None:
    """Show a running node's height, peers, capacity and restarts."""
    with operator_errors():
        if not Path(data_dir).is_dir():
            fail(f"{data_dir}: data directory not found")
        doc = get_json(admin_url(data_dir) + "/status")
    if as_json:
        emit_json(doc)
        return
    table = Table(show_header=False, box=None)
    for key in ("node_id", "chain_id", "height", "peers", "uptime_s", "boots", "crashes", "recovered"):
        table.add_row(key, str(doc.get(key)))
    cap = doc.get("capacity") or {}
    if cap:
        table.add_row("capacity", f"{cap.get('device')} {cap.get('flops', 0) / 1e9:.1f} GFLOP/s")
    stdout.print(table)


@app.command()
def links(
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, "--data-dir", "-d", help="The node's data directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw /links document."),
) -> None:
    """Show the links this node measured and the links its peers agree on."""
    with operator_errors():
        if not Path(data_dir).is_dir():
            fail(f"{data_dir}: data directory not found")
        doc = get_json(admin_url(data_dir) + "/links")
    if as_json:
        emit_json(doc)
        return
    from cli.links_view import links_tables

    for table in links_tables(doc):
        stdout.print(table)
