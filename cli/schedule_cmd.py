"""`polnet schedule`: place a crew (pipeline stages x data-parallel ranks) on devices.

    polnet schedule --scenario S.json --out A.json [--seed N] [--time-limit S] [--plot P.png]
    polnet schedule --from-network -d DATADIR [--workload W.json] [--shape 4x2] [--out A.json]

A scenario is a DT-FM scenario file (`../shared/scenarios/dtfm/`); with `--from-network`
the links are the ones the running node's peers agreed on (`GET /links`) and the
devices the capacity it knows. The assignment file is {"assignment": [[stage, dp_rank],
...]} in device (or node) order; a one-line JSON summary of the predicted iteration
time goes to stdout. `--time-limit` stops the search by the wall clock (the CLI's own
clock, passed in: the result is then only reproducible where the limit is not hit);
`--evaluations` is the reproducible bound.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from cli.admin_http import request_json
from cli.init_cmd import DEFAULT_DATA_DIR
from cli.node_cmd import HTTP_TIMEOUT_S, admin_url
from cli.output import emit_json, operator_errors
from protocol.errors import ConfigError, PolnetError
from protocol.schedule.model import (
    DEFAULT_EVALUATIONS,
    MAX_EVALUATIONS,
    Assignment,
    Budget,
    Device,
    Links,
    Shape,
    Workload,
)
from protocol.schedule.scenario import assignment_doc, scenario_from_doc, workload_from_doc

#: A 512-device scenario is a few MiB of JSON; anything much larger is not one.
MAX_SCENARIO_BYTES = 32 * 1024 * 1024
MAX_WORKLOAD_BYTES = 64 * 1024
MAX_TIME_LIMIT_S = 3600.0
#: The workload `--from-network` assumes without `--workload`: DT-FM's GPT-3 XL.
DEFAULT_WORKLOAD = {
    "num_layers": 24,
    "hidden_size": 2048,
    "seq_len": 2048,
    "num_params": 1.3e9,
    "global_batch_seqs": 488.28125,
    "micro_batch_seqs": 1.0,
}


def _read_json(path: Path, what: str, limit: int) -> Any:
    try:
        size = path.stat().st_size
        if size > limit:
            raise ConfigError(f"{path}: {size} bytes is too large for a {what} (max {limit})")
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a {what}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: {what} is not valid JSON: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror}") from None


def _parse_shape(text: str | None) -> Shape | None:
    if text is None:
        return None
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and 0 < len(p) <= 4 for p in parts):
        raise typer.BadParameter(f"{text!r} is not STAGESxDP (for example 4x2)", param_hint="--shape")
    try:
        return Shape(int(parts[0]), int(parts[1]))
    except PolnetError as exc:
        raise typer.BadParameter(str(exc), param_hint="--shape") from None


def _network_inputs(
    data_dir: Path, workload_path: Path | None
) -> tuple[list[str], Links, list[Device], bool, Workload]:
    if not data_dir.is_dir():
        raise ConfigError(f"{data_dir}: data directory not found")
    url = admin_url(data_dir) + "/links"
    doc = request_json(url, timeout=HTTP_TIMEOUT_S, refused="the node refused /links")
    nodes = doc.get("nodes")
    if not isinstance(nodes, list) or not nodes or not all(isinstance(n, str) for n in nodes):
        raise ConfigError(f"{url}: answer names no nodes")
    if len(nodes) < 2:
        raise ConfigError(f"{url}: no link is agreed with any peer yet (measurements take a few periods)")
    links = Links.from_rows(doc.get("delay_ms") or [], doc.get("bandwidth_gbps") or [])
    known = doc.get("devices") or []
    has_devices = len(known) == len(nodes) and all(isinstance(d, dict) for d in known)
    if has_devices:
        devices = [Device(float(d["flops"]), int(d["memory_bytes"])) for d in known]
    else:
        devices = [Device(1e12, 2**40)] * len(nodes)
    wdoc = _read_json(workload_path, "workload", MAX_WORKLOAD_BYTES) if workload_path else DEFAULT_WORKLOAD
    if not isinstance(wdoc, dict):
        raise ConfigError("workload: expected a JSON object")
    return nodes, links, devices, has_devices, workload_from_doc(wdoc, None)


def schedule(
    scenario: Path | None = typer.Option(None, "--scenario", help="A DT-FM scenario JSON file."),
    from_network: bool = typer.Option(False, "--from-network", help="Use the running node's agreed links."),
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, "--data-dir", "-d", help="The node's data directory."),
    workload: Path | None = typer.Option(None, "--workload", help="Workload JSON for --from-network."),
    shape: str | None = typer.Option(
        None, "--shape", help="STAGESxDP (default: the scenario's; free otherwise)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Write the assignment file here (each device's stage and rank)."
    ),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1, help="The search's seed."),
    time_limit: float | None = typer.Option(
        None, "--time-limit", min=0.01, max=MAX_TIME_LIMIT_S, help="Stop searching after this many seconds."
    ),
    evaluations: int = typer.Option(
        DEFAULT_EVALUATIONS,
        "--evaluations",
        min=1,
        max=MAX_EVALUATIONS,
        help="Cost evaluations the search may use.",
    ),
    method: str = typer.Option("ours", "--method", help="ours (default) or gcma (the paper's search)."),
    plot: Path | None = typer.Option(
        None, "--plot", help="Draw devices, stages and the heaviest links (PNG)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the full result document."),
) -> None:
    """Assign each device a (stage, dp_rank) and predict the iteration time."""
    from protocol.schedule.driver import SEARCHES
    from protocol.schedule.driver import schedule as run_schedule

    if (scenario is None) == (not from_network):
        raise typer.BadParameter("give exactly one of --scenario and --from-network", param_hint="--scenario")
    if method not in SEARCHES:
        raise typer.BadParameter(f"{method!r}; one of {', '.join(sorted(SEARCHES))}", param_hint="--method")
    want_shape = _parse_shape(shape)
    with operator_errors():
        names: list[str] | None = None
        if scenario is not None:
            try:
                sc = scenario_from_doc(_read_json(scenario, "scenario", MAX_SCENARIO_BYTES))
            except PolnetError as exc:  # a scenario file is input: its faults exit 2
                raise ConfigError(f"{scenario}: {exc}") if not isinstance(exc, ConfigError) else exc from None
            devices, links, work, modelled = list(sc.devices), sc.links, sc.workload, sc.has_devices
            want_shape = want_shape or sc.shape
        else:
            names, links, devices, modelled, work = _network_inputs(data_dir, workload)
        deadline = time.monotonic() + time_limit if time_limit is not None else None
        stop = (lambda: time.monotonic() >= deadline) if deadline is not None else None
        started = time.monotonic()
        result = run_schedule(
            devices,
            links,
            work,
            want_shape,
            seed,
            Budget(evaluations, stop),
            compute=modelled,
            memory=modelled,
            method=method,
        )
        wall = time.monotonic() - started
        if out is not None:
            _write(out, assignment_doc(result.placement))
        if plot is not None:
            from cli.schedule_plot import draw

            draw(plot, result, links, devices, work, modelled)
    summary = _summary(result, wall, seed, modelled, names)
    if as_json:
        emit_json(summary)
    else:
        typer.echo(json.dumps({k: v for k, v in summary.items() if k != "assignment"}, sort_keys=True))


def _write(path: Path, doc: dict[str, Any]) -> None:
    try:
        path.write_text(json.dumps(doc) + "\n", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the assignment: {exc.strerror}") from None


def _summary(
    result: Assignment, wall: float, seed: int, modelled: bool, names: list[str] | None
) -> dict[str, Any]:
    c = result.cost
    doc: dict[str, Any] = {
        "shape": [result.shape.stages, result.shape.dp_degree],
        "method": result.method,
        "seed": seed,
        "evaluations": result.evaluations,
        "wall_s": round(wall, 3),
        "predicted_iteration_s": round(c.seconds, 6),
        "dp_s": c.dp_ns / 1e9,
        "pp_forward_s": c.pp_forward_ns / 1e9,
        "pp_backward_s": c.pp_backward_ns / 1e9,
        "compute_s": c.compute_ns / 1e9,
        "compute_modelled": modelled,
        "assignment": [list(p) for p in result.placement],
    }
    if names is not None:
        doc["nodes"] = names
    return doc
