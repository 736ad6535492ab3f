"""`polnet node run` and `polnet node status`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from cli.admin_http import request_json
from cli.init_cmd import DEFAULT_DATA_DIR
from cli.output import bad_input, emit_json, operator_errors, stdout
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
    return request_json(url, timeout=HTTP_TIMEOUT_S, refused=f"{url}: the node refused")


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
    """What a running node is doing: chain height and round, last block age, catching up,
    peers, the current compute job with its progress, and its worker registration."""
    with operator_errors():
        if not Path(data_dir).is_dir():
            bad_input(f"{data_dir}: data directory not found")
        doc = get_json(admin_url(data_dir) + "/status")
    if as_json:
        emit_json(doc)
        return
    for key, value in status_rows(doc):  # one line each, never wrapped: grep-able
        stdout.print(f"{key:<13} {value}", markup=False)


def status_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The status document as (label, text) rows, for people."""
    chain = doc.get("chain") or {}
    rows = [("node", str(doc.get("node_id"))),
            ("chain", f"{doc.get('chain_id')} (genesis {str(chain.get('genesis_hash', '?'))[:16]}, "
                      f"preset {chain.get('preset', '?')})")]
    age = chain.get("last_block_age_s")
    rows.append(("height", f"{doc.get('height')}, last block "
                           f"{'never' if age is None else f'{age:.1f} s ago'}, "
                           f"round {chain.get('round', '?')} ({chain.get('step', '?')})"))
    rows.append(("catching up", "yes (applying old blocks from peers)" if chain.get("catching_up") else "no"))
    rows.append(("peers", str(doc.get("peers"))))
    rows.append(("job", _job_text(doc.get("job"), doc.get("last_job"))))
    rows.append(("registration", _registration_text(doc.get("registration"))))
    cap = doc.get("capacity") or {}
    if cap:
        n = doc.get("capacity_measurements", 1)
        rows.append(("capacity", f"{cap.get('device')} {cap.get('flops', 0) / 1e9:.1f} GFLOP/s "
                                 f"(best of the last measurements; {n} taken)"))
    rows.append(("uptime", f"{doc.get('uptime_s', 0):.0f} s, boots {doc.get('boots')}, "
                           f"crashes {doc.get('crashes')}, recovered {doc.get('recovered')}"))
    return rows


def _job_text(job: dict[str, Any] | None, last: dict[str, Any] | None) -> str:
    if job:
        what = f"{job.get('kind')} task {str(job.get('task_id'))[:16]}"
        if job.get("total"):
            eta = job.get("eta_s")
            pct = job.get("percent")
            return (f"{what}: step {job.get('step')} of {job.get('total')} ({pct}%), "
                    f"ETA {'?' if eta is None else f'{eta:.0f} s'}")
        return f"{what}: running for {job.get('running_s', 0):.0f} s"
    if last:
        return (f"idle (last: {last.get('kind')} task {str(last.get('task_id'))[:16]}, "
                f"{last.get('outcome')} after {last.get('running_s', 0):.0f} s)")
    return "idle"


def _registration_text(reg: dict[str, Any] | None) -> str:
    if not reg:
        return "no chain"
    if reg.get("state") == "registered":
        return (f"registered: stake {reg.get('stake')}, {reg.get('flops', 0) / 1e9:.1f} GFLOP/s, "
                f"{reg.get('price_per_gflop')}/GFLOP, {reg.get('open_jobs')} open jobs")
    return f"{reg.get('state')}: {reg.get('reason')}"


@app.command()
def links(
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, "--data-dir", "-d", help="The node's data directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw /links document."),
) -> None:
    """Show the links this node measured and the links its peers agree on."""
    with operator_errors():
        if not Path(data_dir).is_dir():
            bad_input(f"{data_dir}: data directory not found")
        doc = get_json(admin_url(data_dir) + "/links")
    if as_json:
        emit_json(doc)
        return
    from cli.links_view import links_tables

    for table in links_tables(doc):
        stdout.print(table)
