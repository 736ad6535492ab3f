"""`polnet init`: make a data directory with a fresh key, a config and a genesis."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from cli.output import bad_input, operator_errors, stdout
from node.config import (
    AdminConfig,
    ComputeConfig,
    MetricsConfig,
    NetworkConfig,
    NodeConfig,
    RolesConfig,
)
from node.daemon.layout import init_datadir

DEFAULT_DATA_DIR = Path(os.environ.get("POLNET_DATA_DIR", str(Path.home() / ".polnet")))


def _read_passphrase(encrypt: bool) -> str | None:
    if not encrypt:
        return None
    env = os.environ.get("POLNET_KEY_PASSPHRASE")
    if env is not None:
        return env
    text: str = typer.prompt("Key passphrase", hide_input=True, confirmation_prompt=True)
    return text


def init(
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, "--data-dir", "-d", help="The node's home."),
    chain_id: str = typer.Option("polnet-devnet", help="The network to join."),
    genesis: Path | None = typer.Option(
        None, help="Genesis file of the network to join; default: a one-node devnet run by this node."
    ),
    listen_host: str = typer.Option("0.0.0.0", help="Address the p2p host listens on."),
    port: int = typer.Option(4001, min=0, max=65535, help="p2p TCP port (0 = any free port)."),
    bootstrap: list[str] = typer.Option([], help="Peer address /ip4/H/tcp/P/p2p/ID; repeatable."),
    metrics_port: int = typer.Option(9464, min=0, max=65535, help="Prometheus port on 127.0.0.1."),
    admin_port: int = typer.Option(9465, min=0, max=65535, help="Local admin (CLI) port on 127.0.0.1."),
    threads: int = typer.Option(1, min=1, max=256, help="Torch threads for compute jobs."),
    validator: bool = typer.Option(True, help="Run the validator role."),
    worker: bool = typer.Option(False, help="Run the worker (solver) role."),
    verifier: bool = typer.Option(False, help="Run the verifier role."),
    encrypt: bool = typer.Option(False, help="Encrypt the key (POLNET_KEY_PASSPHRASE or a prompt)."),
) -> None:
    """Create a data directory: node key, config.toml and genesis."""
    with operator_errors():
        cfg = NodeConfig(
            chain_id=chain_id,
            network=NetworkConfig(listen_host=listen_host, listen_port=port, bootstrap=tuple(bootstrap)),
            metrics=MetricsConfig(port=metrics_port),
            admin=AdminConfig(port=admin_port),
            compute=ComputeConfig(threads=threads),
            roles=RolesConfig(validator=validator, worker=worker, verifier=verifier),
        )
        if genesis is not None and not genesis.is_file():
            bad_input(f"--genesis {genesis}: no such file")
        key = init_datadir(data_dir, cfg, passphrase=_read_passphrase(encrypt), genesis=genesis)
    stdout.print(f"initialised [bold]{data_dir}[/]")
    stdout.print(f"node id   {key.node_id}")
    stdout.print(f"chain id  {chain_id}")
    stdout.print(f"start it with: polnet node run --data-dir {data_dir}")
