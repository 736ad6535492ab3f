"""`polnet sim`: run a netsim scenario from a seed and a config, or replay a failure.

A failing netsim run prints `polnet sim run --scenario S --seed N --config '<json>'`;
this command accepts exactly that line, so a failure found in CI is one paste away from
a local reproduction.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from netsim.config import SimConfig
from netsim.errors import ReproducibleFailure, SimConfigError
from netsim.registry import replay_with_summary, scenario_names

app = typer.Typer(help="Deterministic in-process swarm simulation (netsim).", no_args_is_help=True)
MAX_CONFIG_BYTES = 1 << 20


def _load_config(config: str | None) -> SimConfig:
    """`config` is a path to a .toml/.json file, or inline JSON (as failures print it)."""
    if config is None:
        return SimConfig()
    text = config
    if not config.lstrip().startswith("{"):
        path = Path(config)
        if not path.is_file():
            raise SimConfigError(f"config: no such file {config!r}")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise SimConfigError(f"config: {config!r} is larger than {MAX_CONFIG_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".toml":
            return SimConfig.from_toml(text)
    return SimConfig.from_json(text)


@app.command("run")
def run_cmd(
    seed: Annotated[int | None, typer.Option(help="Seed (overrides the config's).", min=0)] = None,
    config: Annotated[str | None, typer.Option(help="Config: a .toml/.json file or inline JSON.")] = None,
    scenario: Annotated[str | None, typer.Option(help="Scenario name (see `polnet sim list`).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Run one scenario; exit 1 with the reproduction line if an invariant fails."""
    console = Console(stderr=True)
    try:
        cfg = _load_config(config)
        changes: dict[str, object] = {}
        if seed is not None:
            changes["seed"] = seed
        if scenario is not None:
            changes["scenario"] = scenario
        if changes:
            cfg = cfg.replace(**changes)
        if not cfg.scenario:
            raise SimConfigError(f"scenario: none given; choose one of {scenario_names()}")
        report, extra = replay_with_summary(cfg)
    except SimConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    except ReproducibleFailure as exc:
        console.print(f"[red]netsim failure[/red]\n{exc}")
        raise typer.Exit(1) from exc
    summary = {
        "scenario": cfg.scenario,
        "seed": report.seed,
        "nodes": report.nodes,
        "virtual_s": report.virtual_ms / 1000,
        "wall_s": round(report.wall_s, 3),
        "events": report.events,
        "delivered": report.counters.delivered,
        "rejected": report.counters.rejected,
        "dropped": dict(sorted(report.counters.dropped.items())),
        "faults_applied": report.faults_applied,
        "trace_hash": report.trace_hash,
        **extra,
    }
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True))
        return
    table = Table(title=f"netsim {cfg.scenario} seed={report.seed}", show_header=False)
    for key, value in summary.items():
        table.add_row(key, str(value))
    Console().print(table)


@app.command("list")
def list_cmd() -> None:
    """List the scenarios that `polnet sim run --scenario` accepts."""
    for name in scenario_names():
        typer.echo(name)
