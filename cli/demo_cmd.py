"""`polnet demo`: the main job, end to end, with live progress and a final report.

It runs the market on the real stack inside netsim: every node is the same composite
core the daemon runs (Tendermint consensus, the ledger with the market installed, the
solver/verifier/whistleblower/arbiter roles), over netsim's simulated network, training
real torch models (tiny MLPs on scikit-learn's digits and on a seeded synthetic
dataset). Some solvers cheat from the attack catalog; verifiers, whistleblowers and the
validators' arbitration catch them, and the ledger pays or slashes. The run is a pure
function of its seed, so any surprise in the report is reproducible with the printed
`polnet sim run` line.

Then a character-level transformer goes through the same market on the built-in corpus
(Python's own documentation): elected, trained, proven, verified, settled. From the
weights in its committed proof (checked tensor by tensor against the root) the demo
prints text the model writes and its held-out bits per byte against the corpus's unigram
entropy, and writes the loss curve (`loss.png`) and the report (`report.json`) into the
report directory.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from netsim.scenarios.market import MarketConfig, MarketProgress, MarketReport, run_market
from protocol.market.state import Status

STAGE_ORDER = tuple(s.name for s in Status)


def _progress_view(p: MarketProgress, cfg: MarketConfig) -> Panel:
    stages = Table.grid(padding=(0, 2))
    names = sorted(p.tasks_by_stage, key=lambda s: (STAGE_ORDER.index(s) if s in STAGE_ORDER else 99, s))
    stages.add_row(*[f"[bold]{n.lower()}[/bold]" for n in names] or ["(no tasks yet)"])
    stages.add_row(*[str(p.tasks_by_stage[n]) for n in names] or [""])
    head = (
        f"height [bold]{p.height}[/bold]   virtual time {p.sim_ms / 1000:.0f} s   "
        f"settled {p.settled}/{cfg.tasks}   refunded {p.refunded}   "
        f"paid to solvers {p.paid:,}   slashed nodes {p.slashes}   jackpot {p.jackpot:,}"
    )
    return Panel(Group(head, stages), title=f"polnet market: {cfg.nodes} nodes, seed {cfg.seed}")


def _task_table(report: MarketReport) -> Table:
    table = Table(title="Tasks")
    for col in ("task", "data", "solver", "cheat", "status", "outcome", "accuracy", "fee", "paid", "refund",
                "private"):
        table.add_column(col, justify="right" if col in ("fee", "paid", "refund", "accuracy") else "left")
    for t in report.tasks:
        acc = f"{t.accuracy:.1%}" if t.accuracy is not None else "-"
        table.add_row(
            t.task_id[:10], t.dataset, str(t.solver) if t.solver is not None else "-", t.attack or "-",
            t.status, t.outcome, acc, f"{t.fee:,}", f"{t.paid:,}", f"{t.refunded:,}",
            f"sealed, {t.key_holders} keys" if t.private else "-",
        )
    return table


def _node_table(report: MarketReport) -> Table:
    table = Table(title="Nodes whose stake changed or who were paid")
    for col in ("node", "role", "balance Δ", "stake Δ", "slashed"):
        table.add_column(col)
    for n in report.nodes:
        if n.balance_delta or n.stake_delta:
            table.add_row(str(n.index), n.role, f"{n.balance_delta:+,}", f"{n.stake_delta:+,}",
                          "[red]yes[/red]" if n.slashed else "no")
    return table


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def _summary(report: MarketReport) -> dict[str, object]:
    return {
        "seed": report.seed,
        "nodes": report.config.nodes,
        "tasks": len(report.tasks),
        "settled": report.settled,
        "refunded": report.refunded,
        "cheats": report.cheats,
        "cheats_caught": report.cheats_caught,
        "slashes": report.slashes,
        "honest_stake_lost": report.honest_stake_lost,
        "jackpot_payouts": report.jackpot_payouts,
        "forced_errors": report.forced_errors,
        "private_tasks": sum(t.private for t in report.tasks),
        "blocks": report.blocks,
        "virtual_s": round(report.sim_ms / 1000, 1),
        "wall_s": round(report.wall_s, 1),
        "verify_vs_train_flops": _ratio(report.verify_flops, report.solver_flops),
        "invariants_held": report.ok,
        "trace_hash": report.trace_hash,
    }


def _lm_section(console: Console, outcome: Any, png: Path | None) -> None:
    if not outcome.settled_valid:
        console.print("[yellow]the language-model task did not settle valid: no verified weights[/]")
        return
    console.print(
        f"[bold]character transformer[/bold] (verified weights): held-out "
        f"{outcome.val_bits_per_byte:.3f} bits/byte against a unigram entropy of "
        f"{outcome.unigram_bits_per_byte:.3f} ({outcome.below_unigram:.0%} below)"
    )
    for prompt, text in outcome.samples.items():
        console.print(Panel(text, title=f"sampled from {prompt!r}", expand=False))
    if png is not None:
        console.print(f"loss curve: {png}")


def _lm_summary(outcome: Any) -> dict[str, object]:
    return {"lm_settled_valid": outcome.settled_valid, "lm_val_bits_per_byte": outcome.val_bits_per_byte,
            "lm_unigram_bits_per_byte": outcome.unigram_bits_per_byte,
            "lm_below_unigram": outcome.below_unigram}


def _run_lm(console: Console, seed: int, nodes: int, size: str, report_dir: Path, live_view: bool) -> Any:
    """The character transformer through the market; its outcome, with the PNG written."""
    from netsim.scenarios.market.lm import write_curve

    cfg = MarketConfig(seed=seed, nodes=nodes, tasks=1, compute="torch", workload="lm", lm_size=size)
    if live_view:
        console.print(f"[bold]then[/bold]: a {size} character transformer on the built-in corpus, "
                      "through the same market")
        with Live(console=console, auto_refresh=False, transient=False) as live:
            report = run_market(cfg, on_progress=lambda p: live.update(_progress_view(p, cfg), refresh=True))
    else:
        report = run_market(cfg)
    outcome = report.lm[0] if report.lm else None
    png = None
    if outcome is not None and outcome.settled_valid:
        png = write_curve(outcome, report_dir / "loss.png")
    if live_view and outcome is not None:
        _lm_section(console, outcome, png)
    return report, outcome


def demo(
    nodes: Annotated[int, typer.Option(help="Nodes in the swarm.", min=6, max=64)] = 12,
    tasks: Annotated[int, typer.Option(help="Training tasks to submit.", min=1, max=40)] = 4,
    byzantine: Annotated[float, typer.Option(help="Fraction of cheating workers.", min=0.0, max=0.5)] = 0.25,
    seed: Annotated[int, typer.Option(help="Seed: the run is a pure function of it.", min=0)] = 1,
    private: Annotated[int, typer.Option(help="How many of the tasks are private (data, checkpoints "
                                              "and weights sealed to the elected parties).", min=0)] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Only print the summary as JSON.")] = False,
    lm: Annotated[str, typer.Option(help="The language-model run: small, full (the 4x128 model, "
                                         "minutes), or none.")] = "small",
    report_dir: Annotated[Path | None, typer.Option(help="Where report.json and loss.png go "
                                                         "(default: a new temp dir).")] = None,
) -> None:
    """Run a local swarm that trains real models, verifies, catches cheaters and settles."""
    if lm not in ("small", "full", "none"):
        raise typer.BadParameter(f"{lm!r}: one of small, full, none", param_hint="--lm")
    out_dir = report_dir if report_dir is not None else Path(tempfile.mkdtemp(prefix="polnet-demo-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    console = Console()
    cfg = MarketConfig(
        seed=seed, nodes=nodes, tasks=tasks, compute="torch", byzantine_fraction=byzantine,
        lazy_verifier=True, false_challenger=True, private_tasks=min(private, tasks),
    )  # fmt: skip
    if as_json:
        report = run_market(cfg)
    else:
        console.print(
            f"[bold]polnet demo[/bold]: {nodes} nodes (consensus + ledger + market roles) in netsim, "
            f"{tasks} real torch training tasks ({min(private, tasks)} private), {byzantine:.0%} cheating "
            "workers, one lazy verifier, one false challenger."
        )
        with Live(console=console, auto_refresh=False, transient=False) as live:

            def on_progress(p: MarketProgress) -> None:
                live.update(_progress_view(p, cfg), refresh=True)

            report = run_market(cfg, on_progress=on_progress)
        console.print(_task_table(report))
        console.print(_node_table(report))
        inv = Table(title="Invariants")
        inv.add_column("invariant")
        inv.add_column("held")
        for name, ok in report.invariants.items():
            inv.add_row(name, "[green]yes[/green]" if ok else "[red]NO[/red]")
        console.print(inv)
        console.print(
            f"reproduce: polnet sim run --scenario market --seed {seed} --config "
            f"'{cfg.sim_config().to_json()}'",
            soft_wrap=True,
        )
    summary = _summary(report)
    ok = report.ok
    if lm != "none":
        lm_report, outcome = _run_lm(console, seed, max(10, nodes // 2), lm, out_dir, not as_json)
        ok = ok and lm_report.ok and outcome is not None and outcome.settled_valid
        if outcome is not None:
            summary.update(_lm_summary(outcome))
    summary["report_dir"] = str(out_dir)
    (out_dir / "report.json").write_text(json.dumps(summary, sort_keys=True, indent=2))
    typer.echo(json.dumps(summary, sort_keys=True))
    if not ok:
        raise typer.Exit(1)
