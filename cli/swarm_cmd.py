"""`polnet swarm up --nodes N`: a local network of real daemons on 127.0.0.1.

Each node is a separate `polnet node run` process with its own data dir, so the swarm
exercises exactly what operators run: real TCP, real gossip, one sqlite per node; up to
IN_PROCESS_MAX_NODES nodes run by default as daemons in one process (cli/swarm_inproc.py),
where start-up, not the nodes, would dominate. With `--tasks` the swarm is a market
(cli/swarm_market.py). The
live view polls every node's admin endpoint; the final report says whether the nodes
agreed (the same block hash at a common height) and how fast blocks came.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from rich.live import Live
from rich.table import Table

from cli.output import bad_input, emit_json, fail, operator_errors, stdout
from cli.swarm_attacks import SwarmFaults
from cli.swarm_inproc import IN_PROCESS_MAX_NODES, InProcessSwarm, in_process
from cli.swarm_market import (
    ALL_CHEATS,
    MarketWatch,
    node_pubkeys,
    role_name,
    submit_tasks,
    swarm_crew_file,
    swarm_roles,
    task_docs,
)
from cli.swarm_restarts import StaggeredRestart
from cli.swarm_restarts import spawn_daemon as _spawn
from node.adversary.attacks import ATTACKS
from node.config import RolesConfig
from node.daemon.layout import MAX_LOCALNET_NODES, layout_localnet
from node.datadir import DataDir
from protocol.errors import ConfigError

app = typer.Typer(help="Run a local network of real daemons.", no_args_is_help=True)

POLL_S = 0.5
HTTP_TIMEOUT_S = 2.0
#: Startup imports torch and libp2p in every process; on a small shared box that is slow.
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
#: A solver, three verifiers (the devnet's verifier_count) and a whistleblower.
MIN_MARKET_NODES = 5
MIN_HONEST_WORKERS = 3
MODES = ("auto", "process", "inprocess")


@dataclass
class SwarmNode:
    index: int
    datadir: DataDir
    proc: Any  # subprocess.Popen, or an InProcessNode with the same slice of its interface
    role: str = ""
    admin: str | None = None
    last: dict[str, Any] = field(default_factory=dict)
    restarting: bool = False  # being stopped and started again (--restart-staggered)

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


def _table(nodes: list[SwarmNode], elapsed: float, market: MarketWatch | None) -> Table:
    title = f"polnet swarm: {len(nodes)} nodes, {elapsed:5.1f} s"
    if market is not None:
        title += f" | {market.headline()}"
    table = Table(title=title)
    for col in ("node", "id", "role", "state", "height", "peers", "mempool", "stake", "job"):
        table.add_column(col)
    for n in nodes:
        chain = n.last.get("chain") or {}
        mkt = n.last.get("market") or {}
        table.add_row(
            f"{n.index:02d}",
            str(n.last.get("node_id", ""))[-10:],
            n.role,
            n.state,
            str(n.height),
            str(n.last.get("peers", "")),
            str(chain.get("mempool", "")),
            str(mkt.get("worker_stake") if mkt.get("worker_stake") is not None else ""),
            _job(n.last.get("job")),
        )
    return table


def _job(job: dict[str, Any] | None) -> str:
    """A node's running compute job: its kind, step of total, and what it says of itself
    (a crew member: its rank, stage and bytes sent)."""
    if not job:
        return ""
    steps = f" {job.get('step', 0)}/{job['total']}" if job.get("total") else ""
    detail = f" {job['detail']}" if job.get("detail") else ""
    return f"{job.get('kind', '')}{steps}{detail}"


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


def _wait_ready(nodes: list[SwarmNode], view: Live, start: float) -> None:
    deadline = start + READY_TIMEOUT_S
    while any(n.admin is None or not n.last for n in nodes):
        _poll(nodes)
        view.update(_table(nodes, time.monotonic() - start, None))
        if time.monotonic() > deadline:
            raise ConfigError(f"not every node was ready within {READY_TIMEOUT_S:.0f} s")
        time.sleep(POLL_S)


def _poll(nodes: list[SwarmNode]) -> None:
    for n in nodes:
        if not n.restarting:
            n.poll()
    if any(n.proc.poll() is not None and not n.restarting for n in nodes):
        bad = next(n for n in nodes if n.proc.poll() is not None and not n.restarting)
        raise ConfigError(f"node {bad.index} exited early; see {bad.datadir.root / 'node.log'}")


def _run(nodes: list[SwarmNode], plan: Plan, live: bool) -> float:
    start = time.monotonic()
    with Live(_table(nodes, 0, None), console=stdout, refresh_per_second=4, transient=not live) as view:
        _wait_ready(nodes, view, start)
        if plan.faults is not None:
            plan.faults.start(nodes, plan.duration)
        market = plan.market = plan.watch(nodes) if plan.tasks else None
        submitted = False
        busy_since = time.monotonic()
        on_chain: float | None = None
        while True:
            if plan.faults is not None:
                plan.faults.tick()
            _poll(nodes)
            elapsed = time.monotonic() - start
            if market is not None:
                if nodes[0].admin is not None:
                    market.admin = nodes[0].admin  # a restarted node 0 listens on a new port
                market.poll()
                if not submitted and market.registered() >= plan.workers:
                    market.task_ids = plan.submit(nodes[0].datadir, market.admin)
                    submitted = True
                if submitted and on_chain is None and len(market.tasks()) == len(market.task_ids):
                    # Restart once the tasks are on the ledger: a submitter's queue that
                    # is not persisted yet dies with it (issue 11 item 4, not this option's).
                    on_chain = busy_since = time.monotonic()
            _restarts(nodes, plan, busy_since if market is None or on_chain is not None else None)
            view.update(_table(nodes, elapsed, market))
            if elapsed >= plan.duration:
                return elapsed
            if plan.restarts is not None and not plan.restarts.resumed:
                pass  # not done before the restarted chain has moved on
            elif market is not None:
                if market.done():
                    return elapsed
            elif all(n.height >= plan.blocks for n in nodes):
                return elapsed
            time.sleep(POLL_S)


#: With --restart-staggered, the restarts begin this long after the work began (every
#: task is on the ledger, or the swarm was ready), so they hit a market mid-flight.
RESTART_AFTER_S = 20.0
#: The chain counts as resumed once every node committed this many blocks past the
#: highest height reached when the last node was restarted.
RESUME_BLOCKS = 3


@dataclass
class RestartWatch:
    """A staggered restart of a swarm, and when the chain resumed after it."""

    stagger_s: float
    runner: StaggeredRestart | None = None
    base_height: int | None = None
    resume_s: float | None = None

    @property
    def resumed(self) -> bool:
        return self.resume_s is not None

    def report(self) -> dict[str, Any]:
        if self.runner is None:
            return {"stagger_s": self.stagger_s, "restarted": 0, "resume_s": None}
        return {**self.runner.report(), "resume_s": self.resume_s}


def _restarts(nodes: list[SwarmNode], plan: Plan, busy_since: float | None) -> None:
    watch = plan.restarts
    if watch is None or busy_since is None or watch.resumed:
        return
    if watch.runner is None:
        if time.monotonic() - busy_since >= RESTART_AFTER_S:
            watch.runner = StaggeredRestart(nodes, watch.stagger_s, spawn=_spawn)
            watch.runner.start()
        return
    if not watch.runner.done or any(n.restarting or not n.last for n in nodes):
        return
    assert watch.runner.finished_at is not None
    if watch.base_height is None:
        watch.base_height = max(n.height for n in nodes)
    if min(n.height for n in nodes) >= watch.base_height + RESUME_BLOCKS:
        watch.resume_s = round(time.monotonic() - watch.runner.finished_at, 2)


@dataclass
class Plan:
    blocks: int
    duration: float
    tasks: int
    cheaters: int
    roles: list[RolesConfig]
    pubkeys: list[str] = field(default_factory=list)
    private: bool = False  # --private: every task sealed to its elected parties
    market: MarketWatch | None = None
    faults: SwarmFaults | None = None  # --attack / --perturb (cli/swarm_attacks.py)
    restarts: RestartWatch | None = None
    crew: tuple[int, int] | None = None  # --crew: the first task is a crew task of this shape

    @property
    def workers(self) -> int:
        return sum(r.worker for r in self.roles)

    @property
    def docs(self) -> list[dict[str, Any]]:
        return task_docs(self.tasks, self.cheaters, self.private)

    def submit(self, dd: DataDir, admin: str) -> list[str]:
        """Submit the swarm's tasks through node 0: with --crew, the first is a crew task."""
        if self.crew is None:
            return submit_tasks(dd, admin, self.docs)
        from cli.task_cmd import submit_crew_file

        crew_id, _ = submit_crew_file(dd, admin, swarm_crew_file(*self.crew))
        return [crew_id, *submit_tasks(dd, admin, self.docs[1:])]

    def watch(self, nodes: list[SwarmNode]) -> MarketWatch:
        assert nodes[0].admin is not None
        return MarketWatch(nodes[0].admin, self.roles, self.pubkeys)


@app.command()
def up(
    nodes: int = typer.Option(4, "--nodes", "-n", min=1, max=MAX_LOCALNET_NODES, help="How many daemons."),
    tasks: int = typer.Option(0, "--tasks", "-t", min=0, max=64, help="Real training tasks to submit."),
    cheaters: int = typer.Option(0, "--cheaters", "-c", min=0, max=MAX_LOCALNET_NODES,
                                 help="Workers that cheat (each with an attack from the catalog)."),
    cheat: list[str] = typer.Option([], "--cheat", help=f"Attacks the cheaters cycle through "
                                    f"(repeatable; default all: {', '.join(ALL_CHEATS)})."),
    false_challengers: int = typer.Option(0, "--false-challengers", min=0, max=MAX_LOCALNET_NODES,
                                          help="Staked nodes that challenge every ACCEPT without checking."),
    lazy_verifiers: int = typer.Option(0, "--lazy-verifiers", min=0, max=MAX_LOCALNET_NODES,
                                       help="Workers that accept every segment without checking."),
    private: bool = typer.Option(False, "--private", help="Make every task private: its data, checkpoints "
                                 "and weights sealed, the key wrapped only to the parties elected."),
    blocks: int = typer.Option(10, min=1, max=1_000_000, help="Without tasks: stop at this height."),
    duration: float = typer.Option(300.0, min=1.0, max=86_400.0, help="Stop after this many seconds anyway."),
    block_interval_ms: int = typer.Option(500, min=0, max=600_000, help="Pause between heights."),
    directory: Path | None = typer.Option(
        None, "--dir", help="Where to lay out the nodes (default: a temp dir)."
    ),
    chain_id: str = typer.Option("polnet-local", help="Chain id of the local network."),
    as_json: bool = typer.Option(False, "--json", help="Print the final report as JSON."),
    mode: str = typer.Option("auto", help=f"process, inprocess, or auto (inprocess up to "
                                          f"{IN_PROCESS_MAX_NODES} nodes)."),
    attack: str = typer.Option("", "--attack", help=f"Run a hostile peer doing one of: "
                                                    f"{', '.join(ATTACKS)}."),
    perturb: str = typer.Option("", "--perturb", help="Inject faults in turn: a comma list of kill, pause, "
                                                      "disconnect (separate processes only)."),
    bootstrap_one: bool = typer.Option(False, "--bootstrap-one",
                                       help="Tell each node of one other only (discovery finds the rest)."),
    crew: str = typer.Option("", "--crew", metavar="SxD",
                             help="Make the first task a crew task of S stages x D replicas (e.g. 2x2): "
                                  "S x D elected workers train one model together, each verified on its "
                                  "own; the live view shows each member's step, stage and bytes sent."),
    restart_staggered: float | None = typer.Option(
        None, "--restart-staggered", min=0.0, max=3600.0, metavar="S",
        help=f"{RESTART_AFTER_S:.0f} s into the work, restart every node in turn, S seconds apart "
             "(SIGTERM, same data dir); the run must still finish. Needs separate processes."),
) -> None:
    """Start N daemons on loopback, run T training tasks through the market, report."""
    if mode not in MODES:
        bad_input(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if restart_staggered is not None:
        if mode == "inprocess":
            bad_input("--restart-staggered restarts processes: it needs --mode process (or auto)")
        mode = "process"
    crew_shape = _crew_shape(crew)
    if crew_shape is not None and mode == "inprocess":
        bad_input("--crew runs every member's job at once: it needs separate processes (--mode process)")
    _check_shape(nodes, tasks, cheaters, false_challengers, lazy_verifiers, cheat, private, crew_shape)
    root = directory if directory is not None else Path(tempfile.mkdtemp(prefix="polnet-swarm-"))
    roles = swarm_roles(nodes, cheaters, false_challengers, lazy_verifiers, tuple(cheat) or ALL_CHEATS) \
        if tasks else None
    faults = None
    with operator_errors():
        if attack or perturb:
            faults = SwarmFaults(attack, perturb, root, chain_id, _spawn)
            if perturb and mode == "inprocess":
                raise ConfigError("--perturb kills and pauses processes: it needs --mode process")
            mode = "process"
        dirs = layout_localnet(root, nodes, chain_id=chain_id, block_interval_ms=block_interval_ms,
                               roles=roles, bootstrap_one=bootstrap_one)
        if faults is not None:
            faults.prepare(dirs)
    plan = Plan(blocks, duration, tasks, cheaters, roles or [], node_pubkeys(dirs) if tasks else [],
                private=private, faults=faults, crew=crew_shape)
    if restart_staggered is not None:
        plan.restarts = RestartWatch(restart_staggered)
    if in_process(nodes, mode):
        procs: list[Any] = InProcessSwarm(dirs, root / "swarm.log").start()
    else:
        procs = [_spawn(d) for d in dirs]
    swarm = [SwarmNode(i, d, p, role=_role_name(plan, i)) for i, (d, p) in enumerate(zip(dirs, procs))]
    error: str | None = None
    elapsed = 0.0
    try:
        elapsed = _run(swarm, plan, live=not as_json)
    except ConfigError as exc:
        error = str(exc)
    except KeyboardInterrupt:
        error = "interrupted"
    report = _report(swarm, plan, plan.market, root, elapsed, error)
    if as_json:
        emit_json(report)
    else:
        _print_report(report)
    problem = _problem(report, plan)
    if problem is not None:
        fail(f"{problem} (logs in {root})")


def _crew_shape(text: str) -> tuple[int, int] | None:
    """`--crew SxD`: (stages, replicas), or None without the option."""
    if not text:
        return None
    stages, _, replicas = text.lower().partition("x")
    if not (stages.isdigit() and replicas.isdigit()) or not 2 <= int(stages) * int(replicas) <= 16:
        bad_input(f"--crew must be STAGESxREPLICAS with 2 to 16 members, such as 2x2, got {text!r}")
    if int(stages) < 1 or int(replicas) < 1:
        bad_input(f"--crew needs at least one stage and one replica, got {text!r}")
    return int(stages), int(replicas)


def _check_shape(nodes: int, tasks: int, cheaters: int, liars: int = 0, lazy: int = 0,
                 cheats: list[str] | None = None, private: bool = False,
                 crew: tuple[int, int] | None = None) -> None:
    with operator_errors():
        if crew is not None and not tasks:
            raise ConfigError("--crew makes the first task a crew task: it needs --tasks 1 or more")
        if crew is not None and private:
            raise ConfigError("--crew and --private: a crew task cannot be private yet")
        need = 2 * crew[0] * crew[1] if crew is not None else 0
        if crew is not None and nodes - 1 < need:
            raise ConfigError(f"a {crew[0]}x{crew[1]} crew and a verifier for each member need {need} "
                              f"workers: --nodes {need + 1} at least")
        if private and not tasks:
            raise ConfigError("--private makes the swarm's tasks private: it needs --tasks")
        if tasks and nodes < MIN_MARKET_NODES:
            raise ConfigError(f"a market swarm needs at least {MIN_MARKET_NODES} nodes "
                              "(a solver, three verifiers and a whistleblower)")
        if (cheaters or liars or lazy) and not tasks:
            raise ConfigError("--cheaters, --false-challengers and --lazy-verifiers need --tasks: "
                              "they only show up when there is work")
        unknown = [c for c in cheats or () if c not in ALL_CHEATS]
        if unknown:
            raise ConfigError(f"--cheat {unknown[0]!r} is not an attack; known: {', '.join(ALL_CHEATS)}")
        if tasks and nodes - 1 - cheaters - liars - lazy < MIN_HONEST_WORKERS:
            shape = f"--cheaters {cheaters}, --false-challengers {liars} and --lazy-verifiers {lazy}"
            among = nodes - 1
            raise ConfigError(f"{shape} leave fewer than {MIN_HONEST_WORKERS} honest workers among {among}")


def _role_name(plan: Plan, i: int) -> str:
    return role_name(plan.roles[i]) if plan.roles else "validator"


def _report(
    swarm: list[SwarmNode], plan: Plan, market: MarketWatch | None, root: Path, elapsed: float,
    error: str | None,
) -> dict[str, Any]:
    for n in swarm:
        with contextlib.suppress(OSError, ValueError):
            n.poll()
    height, agreed = _agreement(swarm)
    audits = [bool((n.last.get("market") or {}).get("supply_audit_ok")) for n in swarm]
    mkt: dict[str, Any] = {}
    if market is not None:
        market.poll()
        mkt = market.report()
    faults = None
    if plan.faults is not None:
        plan.faults.close()
        faults = plan.faults.report(swarm)
    codes = _stop_all(swarm)
    report = {
        "nodes": len(swarm),
        "dir": str(root),
        "seconds": round(elapsed, 2),
        "min_height": min((n.height for n in swarm), default=0),
        "max_height": max((n.height for n in swarm), default=0),
        "agreed_height": height,
        "same_block_at_agreed_height": agreed,
        "supply_conserved_on_every_node": all(audits) if plan.tasks else None,
        "blocks_per_s": round(height / elapsed, 3) if elapsed else 0.0,
        "exit_codes": codes,
        "clean_shutdown": all(c == 0 for c in codes),
        "error": error,
    }
    if plan.tasks:
        report["market"] = mkt
    if faults is not None:
        report["faults"] = faults
    if plan.restarts is not None:
        report["restarts"] = plan.restarts.report()
    return report


def _problem(report: dict[str, Any], plan: Plan) -> str | None:
    if report["error"] is not None:
        return str(report["error"])
    if plan.faults is not None and (problem := plan.faults.problem(report)) is not None:
        return problem
    if not report["same_block_at_agreed_height"]:
        return "the nodes do not hold the same block at a common height"
    restarts = report.get("restarts")
    if restarts is not None and restarts.get("resume_s") is None:
        return "the chain did not resume after the staggered restart"
    if not plan.tasks:
        reached = report["min_height"] >= plan.blocks
        return None if reached else f"the swarm did not reach height {plan.blocks}"
    mkt = report.get("market") or {}
    if report["supply_conserved_on_every_node"] is not True:
        return "a node's supply or market audit failed"
    ended = mkt.get("settled", 0) + mkt.get("refunded", 0)
    if ended < plan.tasks:
        return f"only {ended} of {plan.tasks} tasks ended within {plan.duration:.0f} s"
    if mkt.get("honest_slashed"):
        return f"honest workers were slashed: {mkt['honest_slashed']}"
    if mkt.get("cheats_caught") != mkt.get("cheats_placed"):
        return "a cheat was not caught"
    unpunished = set(mkt.get("false_challengers", [])) - set(mkt.get("false_challengers_slashed", []))
    if unpunished:
        return f"false challengers lost nothing: {sorted(unpunished)}"
    return None


def _print_report(report: dict[str, Any]) -> None:
    """Print without mutating `report`: the exit status is judged from it afterwards."""
    mkt = report.get("market")
    table = Table(title="swarm report", show_header=False)
    for key, value in report.items():
        if key not in ("market", "restarts"):
            table.add_row(key, str(value))
    stdout.print(table)
    if report.get("restarts"):
        restarts = Table(title="staggered restart", show_header=False)
        for key, value in report["restarts"].items():
            restarts.add_row(key, str(value))
        stdout.print(restarts)
    if not mkt:
        return
    tasks = Table(title="tasks")
    cols = ("task", "status", "outcome", "solver", "crew", "convicted", "cheat", "accuracy", "paid",
            "challenges", "private", "key_holders")
    for col in cols:
        tasks.add_column(col.replace("_", " "))
    for row in mkt["tasks"]:
        tasks.add_row(*(str(row.get(c, "")) for c in cols))
    stdout.print(tasks)
    slashes = Table(title="slashed (who lost stake or a bond, and why)")
    for col in ("node", "role", "why", "amount"):
        slashes.add_column(col)
    for row in mkt.get("slashes", []):
        slashes.add_row(*(str(row[c]) for c in ("node", "role", "why", "amount")))
    stdout.print(slashes)
    summary = Table(title="market", show_header=False)
    for key, value in mkt.items():
        if key not in ("tasks", "slashes"):
            summary.add_row(key, str(value))
    stdout.print(summary)
