"""The whole market under seeded network faults: a safety phase, then a liveness phase.

TigerBeetle's VOPR recipe on polnet's real stack: every node runs `MarketNode`
(Tendermint + ledger/market + roles, built by `netsim.scenarios.market.build` with the
synthetic compute), netsim's nemesis cuts, isolates, clogs, drops, pauses and crashes
nodes (kill -9 with and without the last unsynced write) during `duration_ms`, then
heals everything and lets the run go on for `liveness_ms`. Safety is checked all the
time; liveness only once everything is healed, because during the safety phase the
nemesis is allowed to stop all progress.

Checkers (each failure prints the seed and config that replay it):

* ``no_fork``: no two nodes commit different blocks (or roots) at one height, also
  across a node's own crash and restart (Byzantine workers cheat in the market, not in
  the votes; Byzantine validators, from `config.byzantine`, are left out);
* supply: every node audits supply and market custody after every block
  (`audit=True`; a failure raises inside the core), and ``supply_final`` audits again;
* ``no_honest_loss``: honest workers and validators lose no stake, except a worker the
  nemesis *impaired* (crashed, paused, isolated, clogged, or cut off from the side of a
  partition that holds the validator quorum): such a node is not honest-and-live, and
  the protocol punishes its silence by design (see docs/chaos.md for the exact line);
* ``tasks_terminal`` and ``roots_agree`` (final): once healed, every task ends, and
  every live node is within one block of the others and agrees on the state root.

Entry points: `chaos_config(seed, ...)` builds the SimConfig, `run_chaos(config)` runs
it and returns a `ChaosReport`; the registered scenario "market.chaos" is what
`polnet sim run --scenario market.chaos --seed N --config F` replays.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from netsim import faults as F
from netsim.checks import Check
from netsim.config import NemesisConfig, NetworkConfig, SimConfig
from netsim.disk import Disk
from netsim.nemesis import generate
from netsim.registry import Scenario, register_scenario
from netsim.report import Report
from netsim.scenarios.market import Built, MarketConfig, build
from netsim.sim import Sim, run
from protocol.commands import Command, Event, Persist
from protocol.consensus.block import block_hash
from protocol.consensus.messages import CommittedBlock
from protocol.consensus.node import PERSIST_BLOCK
from protocol.identity import Keypair
from protocol.ledger.primitives import audit_supply
from protocol.market.blocks import train_blocks
from protocol.market.chain import audit_market
from protocol.market.node import MarketNode
from protocol.market.params import MarketParams
from protocol.market.process import task_id_of
from protocol.market.state import TERMINAL
from protocol.records import decode_record

SCENARIO = "market.chaos"
#: The default fault model: every nemesis kind, episodes of 0.5 to 8 s (blocks are 1 s on
#: devnet, and its shortest deadlines are 5 blocks, so some episodes outlast a deadline
#: and the silence rules are exercised too), a loss burst drops 30% of copies.
NEMESIS = NemesisConfig(mean_gap_ms=2_000, min_fault_ms=500, max_fault_ms=8_000, lose_unsynced=0.5, loss=0.3)
#: A lossy, jittery network under the nemesis (loss, reordering by jitter, duplicates).
NETWORK = NetworkConfig(latency_ms=40, jitter_ms=30, loss=0.02, duplicate=0.01)
#: How often (virtual ms) the watcher looks, in the liveness phase, for the end: every task
#: ended and every live node at one height (blocks are 1 s apart, so a poll lands between).
POLL_MS = 250
#: Safety checks run every this many events (each is a few dict lookups per new block).
CHECK_EVERY = 200


def chaos_config(
    seed: int,
    *,
    nodes: int = 10,
    tasks: int = 3,
    safety_ms: int = 40_000,
    liveness_ms: int = 600_000,
    nemesis: NemesisConfig | None = NEMESIS,
    faults: tuple[F.FaultAction, ...] = (),
    network: NetworkConfig = NETWORK,
    **market: Any,
) -> SimConfig:
    """A `market.chaos` run: `market` holds MarketConfig fields (byzantine_fraction...).

    `liveness_ms` is the stated liveness bound: after the heal every task must end, and
    every live node reach one height and root, within it (the run stops once they have)."""
    params: dict[str, int | float | str | bool] = {"tasks": tasks, "compute": "synthetic", **market}
    return SimConfig(seed=seed, nodes=nodes, duration_ms=safety_ms, liveness_ms=liveness_ms,
                     scenario=SCENARIO, chain_id="polnet-market-chaos", key_prefix="market",
                     network=network, faults=faults, nemesis=nemesis, params=params)


# --- what the nodes did ------------------------------------------------------------------------


@dataclass
class Observations:
    """Gathered from the commands the cores emit and the views they publish."""

    #: height -> node -> hash of the block the node persisted at that height.
    commits: dict[int, dict[int, bytes]] = field(default_factory=dict)
    #: height -> node -> the state root the block at that height carries (root after h-1).
    roots: dict[int, dict[int, bytes]] = field(default_factory=dict)
    #: height -> worker key -> (stake before, stake after) for every stake that dropped,
    #: recorded by the first node that stepped from height-1 to height.
    slashes: dict[int, dict[bytes, tuple[int, int]]] = field(default_factory=dict)
    forks: list[str] = field(default_factory=list)
    #: height -> virtual time at which the first node committed it.
    times: dict[int, int] = field(default_factory=dict)

    def record_block(self, node: int, now: int, cb: CommittedBlock) -> None:
        h = cb.block.height
        self.times.setdefault(h, now)
        digest = block_hash(cb.block)
        seen = self.commits.setdefault(h, {})
        if any(other != digest for other in seen.values()):
            self.forks.append(f"node {node} committed a different block at height {h}")
        seen[node] = digest
        self.roots.setdefault(h, {})[node] = cb.block.header.app_hash

    def record_view(self, before: dict[bytes, int], after: dict[bytes, int], height: int) -> None:
        if height in self.slashes:
            return
        self.slashes[height] = {k: (s, after.get(k, 0)) for k, s in before.items() if after.get(k, 0) < s}

    def height_at(self, t: int) -> int:
        """The chain's height at virtual time `t` (the highest block committed by then)."""
        return max((h for h, at in self.times.items() if at <= t), default=0)

    def height_of(self, node: int) -> int:
        return max((h for h, by in self.commits.items() if node in by), default=0)


class ObservedNode:
    """A MarketNode whose persisted blocks and stake changes are reported to the run."""

    def __init__(self, index: int, inner: MarketNode, obs: Observations) -> None:
        self.index = index
        self.inner = inner
        self.obs = obs
        self._stakes: tuple[int, dict[bytes, int]] | None = None

    # what MarketCompute and the checkers read
    @property
    def view(self) -> Any:
        return self.inner.view

    @property
    def ledger(self) -> Any:
        return self.inner.ledger

    def handle(self, now: int, event: Event) -> list[Command]:
        view = self.inner.view
        cmds = self.inner.handle(now, event)
        for c in cmds:
            if isinstance(c, Persist) and c.kind == PERSIST_BLOCK:
                self.obs.record_block(self.index, now, decode_record(CommittedBlock, c.value))
        if self.inner.view is not view and self.inner.view is not None:
            self._stake_step(self.inner.view.height, self.inner.view.market)
        return cmds

    def _stake_step(self, height: int, market: Any) -> None:
        stakes = {k: w.stake for k, w in sorted(market.workers.items())}
        if self._stakes is not None and self._stakes[0] == height - 1:
            self.obs.record_view(self._stakes[1], stakes, height)
        self._stakes = (height, stakes)


# --- who the nemesis impaired ------------------------------------------------------------------


def plan_of(config: SimConfig) -> tuple[F.FaultAction, ...]:
    """The whole fault plan of a run: the config's own actions and the nemesis's."""
    return tuple(sorted((*config.faults, *generate(config)), key=lambda a: a.at))


Window = tuple[int, int, str]  # (from ms, to ms, what)


def impairments(
    plan: Iterable[F.FaultAction], n: int, power: dict[int, int], end_ms: int
) -> dict[int, list[Window]]:
    """Node -> the windows of virtual time in which it was not honest-and-live.

    A node is impaired while a fault stops its messages or its handling: crashed (until
    its restart), paused, isolated, clogged (or a link from it), or cut off from the side
    of a partition that holds more than 2/3 of the validator power (that side keeps
    committing blocks, so deadlines pass while the node cannot be heard). Loss bursts and
    partitions without a quorum side impair nobody: everyone is hit alike, or no block
    (hence no deadline) passes. Undo actions close windows; the heal at `end_ms` closes
    the rest.
    """
    open_: dict[tuple[int, str], int] = {}
    out: dict[int, list[Window]] = {}
    total = sum(power.values())

    def close(node: int, kind: str, at: int) -> None:
        start = open_.pop((node, kind), None)
        if start is not None:
            out.setdefault(node, []).append((start, at, f"{kind} {start}-{at} ms"))

    for a in plan:
        if isinstance(a, F.Crash | F.Pause):
            open_.setdefault((a.node, F.action_name(a)), a.at)
        elif isinstance(a, F.Restart | F.Resume):
            close(a.node, "crash" if isinstance(a, F.Restart) else "pause", a.at)
        elif isinstance(a, F.Isolate):
            open_.setdefault((a.node, "cut"), a.at)
        elif isinstance(a, F.Partition):
            groups = [set(g) for g in a.groups]
            rest = set(range(n)) - set().union(*groups)
            quorum = [g for g in (*groups, rest) if 3 * sum(power.get(i, 0) for i in g) > 2 * total]
            for node in sorted(set(range(n)) - quorum[0]) if quorum else []:
                open_.setdefault((node, "cut"), a.at)
        elif isinstance(a, F.Heal):
            for node, kind in [k for k in open_ if k[1] == "cut"]:
                close(node, kind, a.at)
        elif isinstance(a, F.Clog):
            clogged = a.node if a.node is not None else a.link[0] if a.link is not None else None
            end = a.at + a.duration_ms
            if clogged is not None:
                out.setdefault(clogged, []).append((a.at, end, f"clog {a.at}-{end} ms"))
    for node, kind in list(open_):
        close(node, kind, end_ms)
    return out


def grace_blocks(params: MarketParams, cfg: MarketConfig, slowest_flops: int) -> int:
    """Blocks after an impairment within which a silence slash is still its consequence:
    the longest deadline that slashes a silent party (a duty that was due while the node
    was down runs out at most this long after it came back)."""
    train = train_blocks(params, cfg.gflops, slowest_flops)
    return 1 + max(train, params.commit_blocks, params.reveal_blocks, params.forced_reveal_blocks,
                   params.move_blocks)


# --- the run -----------------------------------------------------------------------------------


@dataclass
class ChaosReport:
    seed: int
    config: SimConfig
    report: Report
    heights: dict[int, int]
    tasks: dict[str, str]  # task id (hex prefix) -> final status
    impaired: dict[int, list[Window]]
    #: Every stake drop: (height, node index, role, kind, amount); kind names the slash
    #: whose size matches (silence, verifier, solver) or "combined".
    slashes: list[tuple[int, int, str, str, int]]
    ended_at_ms: int  # virtual time at which the last task ended (-1: some never did)
    faults: int

    @property
    def honest_slashes(self) -> list[tuple[int, int, str, str, int]]:
        return [s for s in self.slashes if s[2] == "worker"]


class Chaos:
    """One run's pieces: the built market, observations, impairment, the checkers."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.cfg = MarketConfig.from_params(config.seed, config.nodes, dict(config.params))
        self.built: Built = build(self.cfg, config)
        self.obs = Observations()
        lay = self.built.layout
        self.power = {i: 1 for i in lay.validators}
        self.impaired = impairments(plan_of(config), config.nodes, self.power, config.duration_ms)
        slowest = min(config.flops_of(i) for i in range(config.nodes))
        self.grace = grace_blocks(self.cfg.params, self.cfg, slowest)
        subs = lay.submitters
        self.expected = sorted(task_id_of(lay.keys[subs[j % len(subs)]].public, tx)
                               for j, tx in enumerate(self.built.submits))
        self.ended_at = -1
        self.byzantine = frozenset(config.byzantine.nodes) if config.byzantine is not None else frozenset()

    # --- scenario pieces ------------------------------------------------------------------

    def factory(self, index: int, key: Keypair, disk: Disk) -> ObservedNode:
        # A Byzantine validator (config.byzantine; the simulator wraps this core in its
        # strategy) is watched apart: its commits are no one's fork and not the chain's.
        obs = Observations() if index in self.byzantine else self.obs
        return ObservedNode(index, self.built.factory(index, key, disk), obs)

    def setup(self, sim: Sim) -> None:
        self.built.compute.sim = sim
        sim.call_at(self.config.duration_ms, self._poll)

    def checks(self) -> list[Check]:
        return [
            Check(self.no_fork, every=CHECK_EVERY, name="no_fork"),
            Check(self.no_honest_loss, every=CHECK_EVERY * 10, name="no_honest_loss"),
            Check(self.no_fork, final=True, name="no_fork_final"),
            Check(self.no_honest_loss, final=True, name="no_honest_loss_final"),
            Check(self.supply_final, final=True, name="supply_final"),
            Check(self.tasks_terminal, final=True, name="tasks_terminal"),
            Check(self.roots_agree, final=True, name="roots_agree"),
        ]

    def _poll(self, sim: Sim) -> None:
        """Liveness phase: stop once every task ended and every live node is at one height."""
        node = self._tip_node(sim)
        if self.ended_at < 0 and node is not None and all(self._ended(node, t) for t in self.expected):
            self.ended_at = sim.now
        if self.ended_at >= 0 and len({m.ledger.height for m in self._live(sim)}) == 1:
            sim.stop()
            return
        sim.call_at(sim.now + POLL_MS, self._poll)

    def crash_for(self, sim: Sim, node: int, ms: int, *, lose_unsynced: bool = False) -> None:
        """A crash scripted by hand (`run_chaos(config, script)`): it is restarted after `ms`
        and its window is known to the checkers like a nemesis crash."""
        sim.crash(node, lose_unsynced=lose_unsynced)
        sim.call_at(sim.now + ms, lambda s: s.restart(node))
        window = (sim.now, sim.now + ms, f"crash {sim.now}-{sim.now + ms} ms (scripted)")
        self.impaired.setdefault(node, []).append(window)

    # --- inspection ----------------------------------------------------------------------------

    def _live(self, sim: Sim) -> list[MarketNode]:
        out = []
        for i in sim.up_nodes():
            core = sim.core(i)
            if isinstance(core, ObservedNode):
                out.append(core.inner)
        return out

    def _tip_node(self, sim: Sim) -> MarketNode | None:
        live = self._live(sim)
        return max(live, key=lambda m: m.ledger.height) if live else None

    @staticmethod
    def _ended(node: MarketNode, tid: bytes) -> bool:
        view = node.view
        task = view.market.tasks.get(tid) if view is not None else None
        return task is not None and task.status in TERMINAL

    def role(self, i: int) -> str:
        return self.built.layout.role_of(i)

    # --- checkers ------------------------------------------------------------------------------

    def no_fork(self, sim: Sim) -> None:
        if self.obs.forks:
            raise AssertionError(self.obs.forks[0])
        for h, by_node in self.obs.roots.items():
            if len(set(by_node.values())) > 1:
                raise AssertionError(f"nodes {sorted(by_node)} disagree on the state root before height {h}")

    def no_honest_loss(self, sim: Sim) -> None:
        """Honest validators keep their ledger stake; an honest worker's stake drops only
        in a block committed during one of its impairment windows or within `grace`
        blocks after it (the silence the protocol punishes by design)."""
        node = self._tip_node(sim)
        if node is None:
            return
        lay, state = self.built.layout, node.ledger.state
        for i in lay.validators:
            if i in self.byzantine:
                continue  # a Byzantine validator may well be slashed
            key = lay.keys[i].public
            if state.stake(key).bonded < self.built.genesis.stake(key).bonded:
                raise AssertionError(f"validator {i} lost ledger stake (t={sim.now})")
        honest = {lay.keys[i].public: i for i in lay.workers if self.role(i) == "worker"}
        for h, drops in sorted(self.obs.slashes.items()):
            for key, (before, after) in drops.items():
                if key in honest and not self.excused(honest[key], h):
                    windows = [w[2] for w in self.impaired.get(honest[key], [])] or "never impaired"
                    raise AssertionError(
                        f"honest worker {honest[key]} lost {before - after} of its {before} stake at height "
                        f"{h} (t={self.obs.times.get(h)} ms), not within {self.grace} blocks of an impairment"
                        f" ({windows})")

    def excused(self, node: int, height: int) -> bool:
        return any(self.obs.height_at(start) < height <= self.obs.height_at(end) + self.grace
                   for start, end, _ in self.impaired.get(node, []))

    def supply_final(self, sim: Sim) -> None:
        for node in self._live(sim):
            audit_supply(node.ledger.state)
            audit_market(node.ledger.state)

    def tasks_terminal(self, sim: Sim) -> None:
        live = self._live(sim)
        if not live:
            raise AssertionError("no node is up at the end")
        for node in live:
            stuck = [tid.hex()[:12] for tid in self.expected if not self._ended(node, tid)]
            if stuck:
                raise AssertionError(f"{len(stuck)} task(s) not terminal on node {node.me.hex()[:8]} "
                                     f"{liveness_note(self.config)}: {stuck}")

    def roots_agree(self, sim: Sim) -> None:
        live = self._live(sim)
        heights = {m.me.hex()[:8]: m.ledger.height for m in live}
        if len(set(heights.values())) > 1:
            raise AssertionError(f"live nodes not at one height {liveness_note(self.config)}: {heights}")
        if len({m.ledger.app_hash() for m in live}) > 1:
            raise AssertionError(f"live nodes disagree on the state root at height {live[0].ledger.height}")

    # --- the report ----------------------------------------------------------------------------

    def chaos_report(self, sim_report: Report, sim: Sim | None) -> ChaosReport:
        lay = self.built.layout
        index = {k.public: i for i, k in enumerate(lay.keys)}
        p = self.cfg.params
        kinds = {p.silence_slash_bps: "silence", p.verifier_slash_bps: "verifier",
                 p.solver_slash_bps: "solver"}
        slashes = []
        for h, drops in sorted(self.obs.slashes.items()):
            for key, (before, after) in sorted(drops.items()):
                kind = next((name for bps, name in kinds.items() if before - after == before * bps // 10_000),
                            "combined")
                slashes.append((h, index[key], self.role(index[key]), kind, before - after))
        tasks: dict[str, str] = {}
        heights: dict[int, int] = {}
        if sim is not None:
            node = self._tip_node(sim)
            for tid in self.expected:
                task = node.view.market.tasks.get(tid) if node is not None and node.view else None
                tasks[tid.hex()[:16]] = task.status.name if task is not None else "UNKNOWN"
            heights = {i: self.obs.height_of(i) for i in range(self.config.nodes)}
        return ChaosReport(self.config.seed, self.config, sim_report, heights, tasks, self.impaired,
                           slashes, self.ended_at, sim_report.faults_applied)


def liveness_note(config: SimConfig) -> str:
    return f"within the liveness bound ({config.liveness_ms} ms after the heal at {config.duration_ms} ms)"


def run_chaos(config: SimConfig, script: Callable[[Sim, Chaos], None] | None = None) -> ChaosReport:
    """Run one chaos configuration; raises netsim's InvariantViolation/CoreFailure (with
    the seed and config) when a checker fails. `script(sim, chaos)` runs before the first
    event: schedule hand-made faults with `sim.call_at` and `chaos.crash_for`."""
    chaos = Chaos(config)
    holder: list[Sim] = []

    def setup(sim: Sim) -> None:
        holder.append(sim)
        chaos.setup(sim)
        if script is not None:
            script(sim, chaos)

    report = run(config, chaos.factory, chaos.checks(), executor=chaos.built.compute, setup=setup)
    return chaos.chaos_report(report, holder[0] if holder else None)


def _scenario(config: SimConfig) -> Scenario:
    chaos = Chaos(config)
    return Scenario(chaos.factory, chaos.checks(), chaos.built.compute, chaos.setup)


register_scenario(SCENARIO, _scenario)
