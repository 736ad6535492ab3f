"""`polnet crew run`: train one model with a local crew, then verify it stage by stage.

    polnet crew run TASK.toml [--cheat RANK:NAME] [--liar RANK:DST:INDEX]
                              [--fraction F] [--proofs DIR] [--json]

One process per member on this machine (node/compute/crew/launch.py), every boundary
message signed, every member committing its proof; live progress per member (step,
bytes sent, loss); then a verifier re-executes the sampled segments of every member,
cross-checks every pair's transcripts and blames each mismatch on the member the
signatures convict, and the report says who, if anyone, is convicted and of what.
`--cheat` and `--liar` make one member cheat (node/compute/crew/cheats.py's catalog, or a
boundary liar), for chaos runs. The task file format is in protocol/pol/crew_spec.py
(one parser for this command and the market's crew engine, node/compute/crew/market.py).
This is the crew engine on one box, without the market (docs/parallel.md, "Through the
market").
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from cli.output import emit_json, operator_errors
from protocol.errors import ConfigError
from protocol.pol.crew_spec import MAX_CREW_FILE, CrewSettings, parse_crew_spec

app = typer.Typer(help="A crew on this machine: one model over many member processes, verified.",
                  no_args_is_help=True)
console = Console(stderr=True)
#: Progress redraws at most this often (members report every step).
REDRAW_S = 0.25


def _cheat(text: str | None, cfg: Any) -> dict[int, str] | None:
    from node.compute.crew import cheats

    if text is None:
        return None
    rank_s, _, name = text.partition(":")
    if not rank_s.isdigit() or not name:
        raise ConfigError(f"--cheat wants RANK:NAME, got {text!r}")
    rank = int(rank_s)
    if name not in cheats.CATALOG:
        raise ConfigError(f"--cheat: unknown cheat {name!r}; known: {', '.join(cheats.CATALOG)}")
    if rank >= cfg.world:
        raise ConfigError(f"--cheat: rank {rank} is not a member (the crew has {cfg.world})")
    where, stage = cheats.CATALOG[name][0], cfg.position(rank)[0]
    if (where == "first" and stage != 0) or (where == "not-first" and stage == 0) or (
            where == "replica" and cfg.data_parallel < 2):
        raise ConfigError(f"--cheat: {name} is a cheat of a member at '{where}', not of member {rank}")
    return {rank: name}


def _liar(text: str | None, cfg: Any) -> tuple[int, int, int] | None:
    if text is None:
        return None
    parts = text.split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ConfigError(f"--liar wants RANK:DST:INDEX, got {text!r}")
    rank, dst, index = map(int, parts)
    if rank >= cfg.world or dst >= cfg.world or rank == dst:
        raise ConfigError(f"--liar: {rank} and {dst} must be two members of the {cfg.world}")
    (s, r), (t, q) = cfg.position(rank), cfg.position(dst)
    if not ((abs(s - t) == 1 and r == q) or (s == t)):
        raise ConfigError(f"--liar: members {rank} and {dst} never exchange messages")
    return rank, dst, index


def read_crew_file(path: Path) -> CrewSettings:
    """Read and check a crew task file (TOML); the parsing is protocol/pol/crew_spec.py's."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CREW_FILE + 1)  # one byte over tells "too large" without reading it all
    except FileNotFoundError:
        raise ConfigError(f"{path}: crew task file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_crew_spec(raw, str(path))


def _config(settings: CrewSettings) -> Any:
    from node.compute.crew.config import crew_config  # torch: imported only when a crew runs

    return crew_config(settings)


def _progress_table(cfg: Any, rows: dict[int, Any], started: float) -> Table:
    table = Table(title=f"crew: {cfg.stages} stages x {cfg.data_parallel}, {cfg.total_steps} steps, "
                        f"{time.monotonic() - started:.0f} s")
    for col in ("member", "stage", "replica", "step", "MB sent", "loss"):
        table.add_column(col, justify="right")
    for rank in range(cfg.world):
        stage, replica = cfg.position(rank)
        p = rows.get(rank)
        table.add_row(str(rank), str(stage), str(replica), f"{p.step if p else 0}/{cfg.total_steps}",
                      f"{(p.sent_bytes if p else 0) / 1e6:.2f}",
                      f"{p.loss:.4f}" if p is not None and p.loss is not None else "")
    return table


@app.command("run")
def run(
    task: Path = typer.Argument(..., help="crew task file (TOML, protocol/pol/crew_spec.py)"),
    cheat: str | None = typer.Option(None, help="RANK:NAME: that member runs a catalog cheat"),
    liar: str | None = typer.Option(None, help="RANK:DST:INDEX: that member's INDEX-th message to DST is "
                                               "tampered after it was hashed"),
    fraction: float = typer.Option(1 / 32, min=0.0, max=1.0,
                                   help="share of segments the verifier re-executes (the last one always)"),
    proofs: Path | None = typer.Option(None,
                                       help="keep the members' proofs here (default: a scratch folder)"),
    json_out: bool = typer.Option(False, "--json", help="print the report as one JSON object on stdout"),
) -> None:
    """Train the task's model with a local crew, verify every member, report."""
    with operator_errors():
        settings = read_crew_file(task)
        cfg = _config(settings)
        cheats, lie = _cheat(cheat, cfg), _liar(liar, cfg)
        if proofs is not None and proofs.exists() and any(proofs.iterdir()):
            raise ConfigError(f"--proofs {proofs}: not empty (a crew's proofs need a folder of their own)")
        root = proofs or Path(tempfile.mkdtemp(prefix="polnet-crew-"))
        try:
            report = _run(cfg, settings, cheats, lie, fraction, root)
        finally:
            if proofs is None:
                shutil.rmtree(root, ignore_errors=True)
    if json_out:
        emit_json(report)
    else:
        _print_report(report)


def _run(cfg: Any, settings: CrewSettings, cheats: dict[int, str] | None, liar: tuple[int, int, int] | None,
         fraction: float, root: Path) -> dict[str, Any]:
    from node.compute import datasets
    from node.compute.crew.channels import Link
    from node.compute.crew.crosscheck import blame, cross_check
    from node.compute.crew.launch import CrewAborted, crew_id, local_keys, run_local_crew
    from node.compute.crew.proof import local_fetch, verify_crew

    links = None
    if settings.delay_ms is not None and settings.mbit is not None:
        link = Link(settings.delay_ms / 1e3, settings.mbit * 1e6)
        links = {(a, b): link for a in range(cfg.world) for b in range(cfg.world) if a != b}
    tokens = datasets.corpus().tokens
    rows: dict[int, Any] = {}
    started = time.monotonic()
    last = 0.0
    with Live(_progress_table(cfg, rows, started), console=console, transient=False) as live:
        def on_progress(p: Any) -> None:
            nonlocal last
            rows[p.rank] = p
            if time.monotonic() - last >= REDRAW_S or p.step == cfg.total_steps:
                last = time.monotonic()
                live.update(_progress_table(cfg, rows, started))

        try:
            results = run_local_crew(cfg, tokens, links=links, deadline_s=24 * 3600, liar=liar, cheats=cheats,
                                     proof_root=root, on_progress=on_progress)
        except CrewAborted as exc:
            raise ConfigError(f"the crew aborted: {exc}") from None
        live.update(_progress_table(cfg, rows, started))
    train_s = time.monotonic() - started
    console.print("\nverifying: re-executing the sampled segments of every member ...")
    t = time.monotonic()
    # The sample is drawn from the commitments themselves: fixed only once every member committed.
    seed = hashlib.sha256(b"".join(d for r in results for d in r.state_digests)).digest()
    verdicts = verify_crew(cfg, tokens, results, local_fetch(root), seed, fraction)
    found: dict[int, str] = {f.rank: f"{f.what} (segment {f.segment})" for v in verdicts for f in v.findings}
    publics = [k.public for k in local_keys(cfg)]
    for m in cross_check(cfg, results):
        who = blame(m, results, publics, crew_id(cfg))
        if who is not None:
            other = m.members[1] if who == m.members[0] else m.members[0]
            found.setdefault(who, f"{m.kind} mismatch with member {other} at message {m.index}")
    executed = sum(v.steps_executed for v in verdicts)
    return {
        "stages": cfg.stages, "data_parallel": cfg.data_parallel, "steps": cfg.total_steps,
        "val_loss": results[-1].val_loss, "train_seconds": round(train_s, 1),
        "verify_seconds": round(time.monotonic() - t, 1),
        "verify_compute_fraction": round(executed / (cfg.world * cfg.total_steps), 4),
        "members": [{"rank": r.rank, "stage": r.stage, "replica": r.replica, "sent_bytes": r.sent_bytes,
                     "verdict": found.get(r.rank, "ok")} for r in results],
        "convicted": sorted(found),
    }


def _print_report(report: dict[str, Any]) -> None:
    table = Table(title=f"verified: {report['stages']} stages x {report['data_parallel']}, "
                        f"{report['steps']} steps, held-out loss {report['val_loss']:.4f}")
    for col in ("member", "stage", "replica", "MB sent", "verdict"):
        table.add_column(col, justify="left" if col == "verdict" else "right")
    for m in report["members"]:
        table.add_row(str(m["rank"]), str(m["stage"]), str(m["replica"]), f"{m['sent_bytes'] / 1e6:.2f}",
                      m["verdict"] if m["verdict"] == "ok" else f"[bold red]convicted[/]: {m['verdict']}")
    out = Console()
    out.print(table)
    out.print(f"trained in {report['train_seconds']} s; verified in {report['verify_seconds']} s, "
              f"re-executing {report['verify_compute_fraction']:.1%} of the crew's member-steps; convicted: "
              f"{', '.join(map(str, report['convicted'])) or 'nobody'}")
