"""What a market run reports: per task, per node, the invariants, and the live progress.

Counting stages, payouts and slashes is `protocol.market.views`' job (the daemon's admin
endpoint and the CLI read the same functions); this module adds what only a simulation
knows: which node was meant to cheat, every node's balance and stake deltas against
genesis, and whether all nodes ended on one state root.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from netsim.sim import Sim
from protocol.market.chain import load_market
from protocol.market.node import MarketNode
from protocol.market.state import MarketState, Task
from protocol.market.views import stage_counts, task_summary

if TYPE_CHECKING:
    from netsim.scenarios.market.build import Built, MarketConfig
    from netsim.scenarios.market.run import Watch


@dataclass(frozen=True)
class MarketProgress:
    """What a live view draws: sent every `progress_ms` of virtual time and at the end."""

    height: int
    sim_ms: int
    tasks_by_stage: dict[str, int]
    settled: int
    refunded: int
    paid: int  # to solvers so far
    slashes: int
    jackpot: int


@dataclass
class TaskOutcome:
    task_id: str
    status: str
    outcome: str
    solver: int | None
    attack: str | None
    fee: int
    paid: int
    verifier_paid: int
    refunded: int
    accuracy: float | None
    dataset: str
    submit_to_end_blocks: int
    #: A private task: its key holders (wrap recipients) and the parties that reported a wrap.
    private: bool = False
    key_holders: int = 0
    key_faults: int = 0


@dataclass
class NodeOutcome:
    index: int
    role: str
    balance_delta: int
    stake_delta: int
    slashed: bool
    #: Ledger tx fees this node paid (nonce x fee); balance_delta + fees_paid is what the
    #: market rules paid it (validators also earn the proposers' share of everyone's fees).
    fees_paid: int = 0


@dataclass
class MarketReport:
    seed: int
    config: MarketConfig
    trace_hash: str = ""
    tasks: list[TaskOutcome] = field(default_factory=list)
    nodes: list[NodeOutcome] = field(default_factory=list)
    jackpot_payouts: int = 0
    forced_errors: int = 0
    invariants: dict[str, bool] = field(default_factory=dict)
    cheats: int = 0
    cheats_caught: int = 0
    honest_stake_lost: int = 0
    slashes: int = 0
    blocks: int = 0
    sim_ms: int = 0
    wall_s: float = 0.0
    solver_flops: int = 0
    verify_flops: int = 0
    dispute_flops: int = 0
    #: Crew tasks, measured: member-steps trained and re-executed (by duty), and seconds.
    crew_trained_steps: int = 0
    crew_checked_steps: dict[str, int] = field(default_factory=dict)
    crew_train_s: float = 0.0
    crew_check_s: dict[str, float] = field(default_factory=dict)
    #: The ended tasks as the observer's ledger holds them (for audits of the payments).
    final_tasks: list[Task] = field(default_factory=list, repr=False)
    #: Height at which each task ended, by task id.
    ended_at: dict[bytes, int] = field(default_factory=dict, repr=False)
    #: Node public keys by index, each worker's genesis stake, and the fee of one tx.
    node_keys: list[bytes] = field(default_factory=list, repr=False)
    worker_stake: int = 0
    tx_fee: int = 0
    jackpot_end: int = 0
    #: For `workload="lm"`: per LM task, the verified model's quality, samples and curves.
    lm: list[Any] = field(default_factory=list, repr=False)

    @property
    def settled(self) -> int:
        return sum(t.status == "SETTLED" for t in self.tasks)

    @property
    def refunded(self) -> int:
        return sum(t.status == "REFUNDED" for t in self.tasks)

    @property
    def ok(self) -> bool:
        return all(self.invariants.values())



def progress(market: MarketState, now: int, stake: int) -> MarketProgress:
    tasks = list(market.tasks.values())
    stages = {k: v for k, v in stage_counts(tasks).items() if v}
    paid = sum(task_summary(market, t).paid for t in tasks)
    slashes = sum(1 for w in market.workers.values() if w.stake < stake)
    return MarketProgress(market.height, now, stages, stages.get("SETTLED", 0), stages.get("REFUNDED", 0),
                          paid, slashes, market.jackpot)


def report(built: Built, watch: Watch, sim: Sim, wall: float) -> MarketReport:
    cfg, lay = built.cfg, built.layout
    core = sim.core(watch.observer)
    assert isinstance(core, MarketNode)
    market = core.market
    watch.record(market)
    genesis = load_market(built.genesis)
    r = MarketReport(cfg.seed, cfg, trace_hash=sim.trace.hexdigest(), wall_s=wall,
                     sim_ms=watch.stopped_at if watch.stopped_at >= 0 else sim.now,
                     blocks=market.height)
    index = {k.public: i for i, k in enumerate(lay.keys)}
    r.node_keys, r.worker_stake, r.tx_fee = [k.public for k in lay.keys], built.stake, core.fee
    r.jackpot_end = market.jackpot
    for tid in sorted(watch.expected):
        task = watch.ended.get(tid) or market.tasks.get(tid)
        r.tasks.append(_task_outcome(built, task, tid, index, watch.ended_at.get(tid, market.height)))
        if task is None:
            continue
        r.final_tasks.append(task)
        r.ended_at[tid] = watch.ended_at.get(tid, market.height)
        r.forced_errors += sum(v.forced_revealed for v in task.verifiers)
        forced = {i for i, v in enumerate(task.verifiers) if v.forced_revealed}
        r.jackpot_payouts += len({c.target for c in task.challenges
                                  if c.target in forced and c.claims_valid == task.proof_valid})
        if index.get(task.solver or b"") in lay.attack and task.proof_root is not None:
            r.cheats += 1
            r.cheats_caught += task.proof_valid is False
        if task.is_crew and task.status.name == "SETTLED":  # each cheating member of the crew that trained
            cheaters = [m for m in task.crew if index.get(m) in lay.attack]
            r.cheats += len(cheaters)
            r.cheats_caught += sum(m in task.convicted for m in cheaters)
    ledger = core.ledger.state
    honest_lost = 0
    for i, k in enumerate(lay.keys):
        w0, w1 = genesis.workers.get(k.public), market.workers.get(k.public)
        # Deltas are against the registered position: a worker registering by tx moved
        # `stake` from its balance into its stake, which is neither income nor loss.
        staked = built.stake if cfg.register_by_tx and i in lay.workers and w1 is not None else 0
        stake_delta = (w1.stake if w1 else 0) - (w0.stake if w0 else 0) - staked
        bal_delta = ledger.account(k.public).balance - built.genesis.account(k.public).balance + staked
        role = lay.role_of(i)
        fees = (ledger.account(k.public).nonce - built.genesis.account(k.public).nonce) * core.fee
        r.nodes.append(NodeOutcome(i, role, bal_delta, stake_delta, stake_delta < 0, fees))
        r.slashes += stake_delta < 0
        if role == "worker":
            honest_lost += max(0, -stake_delta)
    r.honest_stake_lost = honest_lost
    r.solver_flops, r.verify_flops = built.compute.stats.solver_flops, built.compute.stats.verify_flops
    r.dispute_flops = built.compute.stats.dispute_flops
    stats = built.compute.stats
    r.crew_trained_steps, r.crew_train_s = stats.crew_trained_steps, stats.crew_train_s
    r.crew_checked_steps, r.crew_check_s = dict(stats.crew_checked_steps), dict(stats.crew_check_s)
    cores = [c for c in (sim.core(i) for i in sim.up_nodes()) if isinstance(c, MarketNode)]
    roots = {c.ledger.app_hash() for c in cores if c.ledger.height == market.height}
    r.invariants = {
        # every node audits supply and market custody after every block (a failure halts the run)
        "supply_conserved_every_block": True,
        "no_honest_stake_lost": honest_lost == 0,
        "every_task_terminal": all(t.status in ("SETTLED", "REFUNDED") for t in r.tasks),
        "every_cheat_caught": r.cheats_caught == r.cheats,
        "nodes_agree_on_state_root": len(roots) <= 1,
    }
    if cfg.compute == "torch" and cfg.workload == "lm":
        from netsim.scenarios.market.lm import lm_outcome

        r.lm = [lm_outcome(built.compute, t, t.submitter) for t in r.final_tasks]
    return r


def _task_outcome(
    built: Built, task: Task | None, tid: bytes, index: dict[bytes, int], ended: int
) -> TaskOutcome:
    if task is None:
        return TaskOutcome(tid.hex()[:16], "UNKNOWN", "", None, None, 0, 0, 0, 0, None, "", 0)
    s = task_summary(MarketState(params=built.cfg.params), task)
    solver = index.get(task.solver) if task.solver else None
    tt = built.compute.torch_tasks.get(task.spec_hash)
    return TaskOutcome(
        tid.hex()[:16], s.status, s.outcome, solver,
        built.layout.attack.get(solver) if solver is not None else None,
        s.fee, s.paid, s.verifier_paid, s.refunded,
        built.compute.stats.accuracy.get(tid), tt.dataset_name if tt else "synthetic-hash",
        ended - task.submitted_at, s.private, len(s.key_holders), s.key_faults,
    )
