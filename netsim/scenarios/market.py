"""The market end to end in netsim: every node runs `protocol.market.node.MarketNode`.

That is the real stack: Tendermint consensus over netsim's network model (latency,
jitter, loss), the PoS ledger with the market installed as its extension (market state
in the ledger's tables, supply and custody audited after every block by every node),
and each node's role machines, whose RunCompute netsim executes through
`MarketCompute` (real torch for tiny models, or the synthetic hash model for sweeps).

Layout of a run of N nodes: the first `validators` nodes validate (staked at genesis,
arbitrate disputes); then submitters; one whistleblower; optionally one false challenger
(challenges every accept without checking); the rest are workers (registered at genesis
with capacity, price, stake and a forced-error secret) running solver + verifier roles.
A fraction of the workers is Byzantine: each cheats as a solver with an attack of the
catalog (node/compute's for torch; their synthetic equivalents for sweeps) or fights the
bisection (silent, inconsistent); optionally one honest-looking lazy verifier accepts
without checking and ignores its forced errors.

Entry points: `run_market(config, on_progress)` (what `polnet demo` calls) and the
registered netsim scenario "market" (`polnet sim run --scenario market --seed N
--config JSON`; knobs in `SimConfig.params`, see `MarketConfig.from_params`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from netsim.config import NetworkConfig, SimConfig
from netsim.disk import Disk
from netsim.registry import Scenario, register_scenario
from netsim.scenarios.market_compute import BISECTION_ATTACKS, SYNTHETIC_ATTACKS, MarketCompute, TorchTask
from netsim.sim import Sim, node_keys
from protocol.chain_params import chain_preset
from protocol.commands import Command
from protocol.consensus.node import OWN_VOTES_KEY, PERSIST_BLOCK, PERSIST_VOTES, ConsensusConfig
from protocol.encoding import sha256
from protocol.identity import Keypair
from protocol.ledger.genesis import Genesis, GenesisAccount
from protocol.ledger.ledger import Ledger
from protocol.ledger.primitives import audit_supply
from protocol.ledger.state import State
from protocol.market import elections
from protocol.market.chain import audit_market, load_market, market_genesis_state, save_market
from protocol.market.node import MarketNode
from protocol.market.params import GFLOP, MarketParams
from protocol.market.process import budget, process_register_worker, task_id_of
from protocol.market.roles import (
    ArbiterRole,
    NodeRoles,
    RegistrarRole,
    SolverRole,
    SubmitterRole,
    VerifierRole,
    Wallet,
    WhistleblowerRole,
    _Role,
)
from protocol.market.settle import compute_cost, verifier_pay
from protocol.market.state import TERMINAL, MarketState, Status, Task
from protocol.market.txs import Challenge, DeviceClass, RegisterWorker, SubmitTask, Verdict, VerdictCommit
from protocol.records import record_hash

BALANCE = 10**12
VALIDATOR_STAKE = 100_000
#: Prices in base units per GFLOP (see protocol/market/params.py, "Scale"): workers ask
#: half of what submitters offer, so the unused half of the work budget is refunded.
WORKER_PRICE = 1_000
OFFERED_PRICE = 2_000
#: Worker stakes are this many times the largest task budget of the run: twice what
#: `max_budget_per_stake_bps` (50%) requires, so every worker is eligible for every task.
STAKE_PER_BUDGET = 4
#: Torch attacks a Byzantine solver may use (the catalog's honest outlier is not a cheat).
TORCH_ATTACKS = ("skipped_steps", "truncated", "noisy_weights", "copied_checkpoints", "interpolated",
                 "data_order", *BISECTION_ATTACKS)


@dataclass(frozen=True)
class MarketConfig:
    seed: int = 0
    nodes: int = 32
    tasks: int = 20
    byzantine_fraction: float = 0.0
    lazy_verifier: bool = False
    false_challenger: bool = False
    #: "torch" (real training, small models) or "synthetic" (hash model, sweeps).
    compute: str = "synthetic"
    #: Torch datasets: "synthetic", "digits", or "mixed" (alternating).
    dataset: str = "mixed"
    preset: str = "devnet"
    validators: int = 0  # 0: max(4, nodes // 8)
    latency_ms: int = 50
    jitter_ms: int = 10
    loss: float = 0.0
    #: Synthetic tasks' declared work and shape (ops per step follow from the spec).
    gflops: int = 2_000
    steps: int = 640  # 64 segments: the devnet's minimum (one check = 1/64 of the work)
    interval: int = 10
    #: Workers register by RegisterWorker tx once the chain runs (False: at genesis).
    register_by_tx: bool = True
    #: Give up (every task not ended counts as a failed invariant) after this much virtual time.
    max_sim_ms: int = 3_600_000
    progress_ms: int = 5_000

    @property
    def params(self) -> MarketParams:
        return chain_preset(self.preset).market

    @classmethod
    def from_params(cls, seed: int, nodes: int, params: dict[str, Any]) -> MarketConfig:
        known = {f.name for f in fields(cls)}
        return cls(seed=seed, nodes=nodes, **{k: v for k, v in params.items() if k in known})

    def sim_config(self) -> SimConfig:
        rng = random.Random(self.seed)
        flops = tuple(10**12 * rng.choice((1, 2, 4)) for _ in range(self.nodes))
        params = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("seed", "nodes")}
        return SimConfig(
            seed=self.seed, nodes=self.nodes, duration_ms=self.max_sim_ms, scenario="market",
            chain_id="polnet-market-sim", key_prefix="market",
            network=NetworkConfig(latency_ms=self.latency_ms, jitter_ms=self.jitter_ms, loss=self.loss),
            flops=flops, params=params,
        )


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
    #: The ended tasks as the observer's ledger holds them (for audits of the payments).
    final_tasks: list[Task] = field(default_factory=list, repr=False)
    #: Height at which each task ended, by task id.
    ended_at: dict[bytes, int] = field(default_factory=dict, repr=False)
    #: Node public keys by index, each worker's genesis stake, and the fee of one tx.
    node_keys: list[bytes] = field(default_factory=list, repr=False)
    worker_stake: int = 0
    tx_fee: int = 0
    jackpot_end: int = 0

    @property
    def settled(self) -> int:
        return sum(t.status == "SETTLED" for t in self.tasks)

    @property
    def refunded(self) -> int:
        return sum(t.status == "REFUNDED" for t in self.tasks)

    @property
    def ok(self) -> bool:
        return all(self.invariants.values())


# --- layout --------------------------------------------------------------------------------------


@dataclass
class Layout:
    keys: list[Keypair]
    validators: list[int]
    submitters: list[int]
    watcher: int
    liar: int | None
    workers: list[int]
    attack: dict[int, str]
    lazy: int | None

    def role_of(self, i: int) -> str:
        if i in self.validators:
            return "validator"
        if i in self.submitters:
            return "submitter"
        if i == self.watcher:
            return "whistleblower"
        if i == self.liar:
            return "false_challenger"
        if i == self.lazy:
            return "lazy_verifier"
        return f"byzantine:{self.attack[i]}" if i in self.attack else "worker"


def layout(cfg: MarketConfig, keys: list[Keypair]) -> Layout:
    rng = random.Random(cfg.seed * 7919 + 1)
    n_val = cfg.validators or max(4, cfg.nodes // 8)
    n_sub = max(1, cfg.nodes // 8)
    idx = list(range(cfg.nodes))
    validators, submitters = idx[:n_val], idx[n_val : n_val + n_sub]
    watcher = n_val + n_sub
    rest = idx[watcher + 1 :]
    liar = rest.pop() if cfg.false_challenger else None
    n_byz = round(len(rest) * cfg.byzantine_fraction)
    names = sorted(TORCH_ATTACKS if cfg.compute == "torch" else SYNTHETIC_ATTACKS)
    attack = {w: names[i % len(names)] for i, w in enumerate(sorted(rng.sample(rest, n_byz)))}
    honest = [w for w in rest if w not in attack]
    lazy = honest[0] if cfg.lazy_verifier and honest else None
    return Layout(keys, validators, submitters, watcher, liar, rest, attack, lazy)


def worker_stake(cfg: MarketConfig, submits: list[SubmitTask]) -> int:
    """Stakes in the units of the run's budgets (not a constant that dwarfs them)."""
    largest = max((budget(MarketState(params=cfg.params), tx.gflops, tx.max_price_per_gflop)
                   for tx in submits), default=0)
    return max(cfg.params.min_worker_stake, STAKE_PER_BUDGET * largest)


def worker_secret(key: Keypair) -> bytes:
    return sha256(b"market-secret" + key.public)


# --- tasks ----------------------------------------------------------------------------------------


def build_tasks(cfg: MarketConfig) -> tuple[list[SubmitTask], dict[bytes, TorchTask]]:
    if cfg.compute == "torch":
        return _torch_tasks(cfg)
    return _synthetic_tasks(cfg)


def _synthetic_tasks(cfg: MarketConfig) -> tuple[list[SubmitTask], dict[bytes, TorchTask]]:
    """Specs for protocol/pol's synthetic trainer: the declared work is `cfg.gflops` (the
    sweep's economics), the shape (steps, interval, ops per step) is the spec's own."""
    from protocol.pol.ops import step_ops
    from protocol.pol.spec import LossKind, OptimizerKind, OptimizerSpec, ReproProfile, TaskSpec, linear, relu

    txs: list[SubmitTask] = []
    out: dict[bytes, TorchTask] = {}
    for i in range(cfg.tasks):
        spec = TaskSpec(1, (4,), 2, (linear(4, 4), relu(), linear(4, 2)), LossKind.CROSS_ENTROPY,
                        OptimizerSpec(OptimizerKind.SGD, 0.1), 8, cfg.steps, cfg.interval,
                        sha256(b"synthetic-data" + i.to_bytes(4, "big")), 64, 1 + i, 2 + i, 3 + i,
                        ReproProfile(threads=1))
        spec_hash = record_hash(spec)
        out[spec_hash] = TorchTask(spec, None, "synthetic-hash")
        txs.append(SubmitTask(spec_hash, cfg.gflops, spec.steps, spec.checkpoint_interval,
                              len(step_ops(spec)), DeviceClass.CPU, 1_024, True, OFFERED_PRICE, i, 0, 0))
    return txs, out


def _torch_tasks(cfg: MarketConfig) -> tuple[list[SubmitTask], dict[bytes, TorchTask]]:
    import torch

    from node.compute import datasets
    from protocol.pol.flops import estimate
    from protocol.pol.ops import step_ops
    from protocol.pol.spec import LossKind, OptimizerKind, OptimizerSpec, ReproProfile, TaskSpec, linear, relu

    torch.set_num_threads(1)
    sets: list[tuple[str, Any, tuple[int, int]]] = []
    if cfg.dataset in ("synthetic", "mixed"):
        sets.append(("synthetic", datasets.synthetic(512, (16,), 4, cfg.seed), (16, 4)))
    if cfg.dataset in ("digits", "mixed"):
        sets.append(("digits", datasets.digits(), (64, 10)))
    txs: list[SubmitTask] = []
    out: dict[bytes, TorchTask] = {}
    for i in range(cfg.tasks):
        name, data, (d_in, classes) = sets[i % len(sets)]
        spec = TaskSpec(1, (d_in,), classes, (linear(d_in, 16), relu(), linear(16, classes)),
                        LossKind.CROSS_ENTROPY, OptimizerSpec(OptimizerKind.ADAM, 0.01), 32, 64, 1,
                        data.digest, len(data), 1 + i, 2 + i, 3 + i, ReproProfile(threads=1))
        spec_hash = record_hash(spec)
        out[spec_hash] = TorchTask(spec, data, name)
        gflops = max(1, -(-estimate(spec).total // GFLOP))
        txs.append(SubmitTask(spec_hash, gflops, spec.steps, spec.checkpoint_interval,
                              min(4_096, len(step_ops(spec))), DeviceClass.CPU, 1_024, True,
                              OFFERED_PRICE, i, 0, 0))
    return txs, out


# --- genesis and nodes -------------------------------------------------------------------------


def registration(key: Keypair, flops: int, stake: int) -> RegisterWorker:
    """A worker's registration: capacity (netsim's FLOPS for the node), price, stake, and
    the root of its duty secrets."""
    return RegisterWorker(DeviceClass.CPU, 16_384, flops, WORKER_PRICE, stake,
                          elections.forced_error_commitment(worker_secret(key)), 0, 0)


def genesis_state(cfg: MarketConfig, lay: Layout, flops: tuple[int, ...], chain_id: str, stake: int) -> State:
    """Validators staked in the ledger; workers registered in the market at genesis unless
    they register by transaction (`register_by_tx`)."""
    params = chain_preset("devnet").ledger
    accounts = tuple(
        GenesisAccount(k.public, BALANCE, VALIDATOR_STAKE if i in lay.validators else 0)
        for i, k in enumerate(lay.keys)
    )
    state = market_genesis_state(Genesis(chain_id, params, 0, accounts), cfg.params)
    market = load_market(state)
    for w in [] if cfg.register_by_tx else lay.workers:
        process_register_worker(market, lay.keys[w].public, registration(lay.keys[w], flops[w], stake))
    save_market(state, market)
    audit_supply(state)
    audit_market(state)
    return state


class LazyVerifier(VerifierRole):
    """Accepts everything without computing and never obeys a forced error (it reveals its
    duty secrets like everyone, hoping it was not forced)."""

    def on_view(self, market: MarketState) -> list[Command]:
        out: list[Command] = []
        for task in market.open_tasks():
            slot = self._slot(task)
            if task.status == Status.COMMIT and slot is not None and slot.commitment is None:
                verdict = Verdict(True, slot.segment, 0)
                salt = sha256(self.secret + task.task_id)
                self.verdicts[task.task_id] = (verdict, salt)
                commitment = elections.verdict_commitment(task.task_id, self.me, verdict, salt)
                out += self._once(task, "lazy", VerdictCommit(task.task_id, commitment, 0, 0))
            elif task.status in (Status.REVEAL, Status.FORCED_REVEAL):
                out += self._verify(task)
        return out


class FalseChallenger(WhistleblowerRole):
    """Challenges every accepting verdict without checking anything, so it has nothing
    to play a bisection game with: its games are lost by silence."""

    def on_view(self, market: MarketState) -> list[Command]:
        out: list[Command] = []
        for task in market.open_tasks():
            if task.status != Status.CHALLENGE:
                continue
            for i, slot in enumerate(task.verifiers):
                if slot.verdict is not None and slot.verdict.accept and slot.pubkey != self.me:
                    out += self._once(task, f"false{i}",
                                      Challenge(task.task_id, i, slot.segment, self.bond, 0, 0))
        return out


def node_roles(cfg: MarketConfig, lay: Layout, i: int, queue: list[SubmitTask], flops: int = 10**12,
               stake: int = 0) -> NodeRoles:
    key = lay.keys[i]
    me = key.public
    bond = cfg.params.min_challenge_bond
    roles: list[_Role] = []
    if i in lay.validators:
        roles.append(ArbiterRole(me, Wallet()))
    if i in lay.submitters:
        duties = cfg.params.verifier_count + 2
        room = len(lay.workers) * cfg.params.max_jobs_per_worker // (duties * len(lay.submitters))
        mine = [tx for j, tx in enumerate(queue) if lay.submitters[j % len(lay.submitters)] == i]
        roles.append(SubmitterRole(me, Wallet(), queue=mine, max_in_flight=max(1, min(8, room))))
    if i == lay.watcher:
        roles.append(WhistleblowerRole(me, Wallet(), bond=bond))
    if i == lay.liar:
        roles.append(FalseChallenger(me, Wallet(), bond=bond))
    if i in lay.workers:
        verifier = LazyVerifier if i == lay.lazy else VerifierRole
        roles += [SolverRole(me, Wallet()), verifier(me, Wallet(), secret=worker_secret(key))]
        if cfg.register_by_tx:
            roles.append(RegistrarRole(me, Wallet(), registration=registration(key, flops, stake)))
    return NodeRoles(roles)


@dataclass
class Built:
    cfg: MarketConfig
    sim_config: SimConfig
    layout: Layout
    genesis: State
    submits: list[SubmitTask]
    stake: int
    compute: MarketCompute
    factory: Callable[[int, Keypair, Disk], MarketNode]


def build(cfg: MarketConfig, sim_cfg: SimConfig | None = None) -> Built:
    """Everything a run needs; `sim_cfg` (keys, chain id, FLOPS) defaults to the config's own."""
    sim_cfg = sim_cfg or cfg.sim_config()
    lay = layout(cfg, node_keys(sim_cfg))
    flops = tuple(sim_cfg.flops_of(i) for i in range(sim_cfg.nodes))
    submits, torch_tasks = build_tasks(cfg)
    stake = worker_stake(cfg, submits)
    genesis = genesis_state(cfg, lay, flops, sim_cfg.chain_id, stake)
    validators = Ledger(genesis.copy()).validators()
    ccfg = ConsensusConfig(chain_id=sim_cfg.chain_id, genesis_validators=validators,
                           epoch_length=genesis.params.epoch_length,
                           block_interval_ms=cfg.params.block_time_ms)
    attack_of = {lay.keys[w].public: name for w, name in lay.attack.items()}
    compute = MarketCompute(attack_of, cfg.compute, torch_tasks, cfg.seed)

    def factory(index: int, key: Keypair, disk: Disk) -> MarketNode:
        roles = node_roles(cfg, lay, index, list(submits), flops=flops[index], stake=stake)
        blocks = [v for _, v in disk.items(PERSIST_BLOCK)]
        return MarketNode.create(genesis, ccfg, key, roles, blocks=blocks,
                                 own_votes=disk.get(PERSIST_VOTES, OWN_VOTES_KEY), audit=True,
                                 role_state=lambda kind: [v for _, v in disk.items(kind)])

    return Built(cfg, sim_cfg, lay, genesis, submits, stake, compute, factory)


# --- running ----------------------------------------------------------------------------------


class _Watch:
    """Reads one validator's committed market: progress events, early stop, the report."""

    def __init__(self, built: Built, on_progress: Callable[[MarketProgress], None] | None) -> None:
        self.built = built
        self.on_progress = on_progress
        self.observer = built.layout.validators[0]
        subs = built.layout.submitters
        self.expected = {task_id_of(built.layout.keys[subs[j % len(subs)]].public, tx)
                         for j, tx in enumerate(built.submits)}
        self.ended: dict[bytes, Task] = {}
        self.ended_at: dict[bytes, int] = {}
        self.last_height = 0
        self.stopped_at = -1

    def market(self, sim: Sim) -> MarketState | None:
        core = sim.core(self.observer)
        return core.market if isinstance(core, MarketNode) else None

    def tick(self, sim: Sim) -> None:
        market = self.market(sim)
        if market is not None:
            self._record(market)
            if self.on_progress is not None:
                self.on_progress(progress(market, sim.now, self.built.stake))
        if len(self.ended) == len(self.expected):
            self.stopped_at = sim.now
            sim.stop()
            return
        sim.call_at(sim.now + self.built.cfg.progress_ms, self.tick)

    def _record(self, market: MarketState) -> None:
        self.last_height = market.height
        for tid in self.expected:
            task = market.tasks.get(tid)
            if task is not None and task.status in TERMINAL and tid not in self.ended:
                self.ended[tid] = task
                self.ended_at[tid] = market.height


def progress(market: MarketState, now: int, stake: int) -> MarketProgress:
    stages: dict[str, int] = {}
    paid = 0
    for task in market.tasks.values():
        stages[task.status.name] = stages.get(task.status.name, 0) + 1
        if task.status == Status.SETTLED and task.proof_valid:
            paid += compute_cost(task)
    slashes = sum(1 for w in market.workers.values() if w.stake < stake)
    return MarketProgress(market.height, now, stages, stages.get("SETTLED", 0), stages.get("REFUNDED", 0),
                          paid, slashes, market.jackpot)


def run_market(
    config: MarketConfig, on_progress: Callable[[MarketProgress], None] | None = None
) -> MarketReport:
    """Run one market simulation on the real stack and report what happened."""
    built = build(config)
    watch = _Watch(built, on_progress)
    sim = Sim(built.sim_config, built.factory, executor=built.compute)
    built.compute.sim = sim
    sim.call_at(config.progress_ms, watch.tick)
    wall0 = time.perf_counter()
    sim.run()
    wall = time.perf_counter() - wall0
    return _report(built, watch, sim, wall)


def _report(built: Built, watch: _Watch, sim: Sim, wall: float) -> MarketReport:
    cfg, lay = built.cfg, built.layout
    core = sim.core(watch.observer)
    assert isinstance(core, MarketNode)
    market = core.market
    watch._record(market)
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
    roots = {sim.core(i).ledger.app_hash() for i in sim.up_nodes() if isinstance(sim.core(i), MarketNode)
             and sim.core(i).ledger.height == market.height}  # type: ignore[union-attr]
    r.invariants = {
        # every node audits supply and market custody after every block (a failure halts the run)
        "supply_conserved_every_block": True,
        "no_honest_stake_lost": honest_lost == 0,
        "every_task_terminal": all(t.status in ("SETTLED", "REFUNDED") for t in r.tasks),
        "every_cheat_caught": r.cheats_caught == r.cheats,
        "nodes_agree_on_state_root": len(roots) <= 1,
    }
    return r


def _task_outcome(
    built: Built, task: Task | None, tid: bytes, index: dict[bytes, int], ended: int
) -> TaskOutcome:
    if task is None:
        return TaskOutcome(tid.hex()[:16], "UNKNOWN", "", None, None, 0, 0, 0, 0, None, "", 0)
    market_like = MarketState(params=built.cfg.params)
    fee = budget(market_like, task.gflops, task.max_price_per_gflop)
    valid = task.status == Status.SETTLED and bool(task.proof_valid)
    paid = compute_cost(task) if valid else 0
    vpay = 0
    if task.status == Status.SETTLED and task.solver_price:
        per = verifier_pay(market_like, task)
        paid_duties = sum(v.verdict is not None for v in task.verifiers)
        vpay = per * (paid_duties + sum(r.spec_ok for r in task.profile_reports))
    work = task.gflops * task.max_price_per_gflop
    tax = work * built.cfg.params.jackpot_tax_bps // 10_000 if task.taxed else 0
    solver = index.get(task.solver) if task.solver else None
    tt = built.compute.torch_tasks.get(task.spec_hash)
    return TaskOutcome(
        tid.hex()[:16], task.status.name, task.outcome, solver,
        built.layout.attack.get(solver) if solver is not None else None,
        fee, paid, vpay, max(0, fee - tax - paid - vpay) if task.status in TERMINAL else 0,
        built.compute.stats.accuracy.get(tid), tt.dataset_name if tt else "synthetic-hash",
        ended - task.submitted_at,
    )


# --- the registered netsim scenario -------------------------------------------------------------


def _scenario(config: SimConfig) -> Scenario:
    cfg = MarketConfig.from_params(config.seed, config.nodes, dict(config.params))
    built = build(cfg, config)
    watch = _Watch(built, None)

    def setup(sim: Sim) -> None:
        built.compute.sim = sim
        sim.call_at(cfg.progress_ms, watch.tick)

    def all_ended(sim: Sim) -> None:
        market = watch.market(sim)
        if market is not None:
            watch._record(market)
        missing = len(watch.expected) - len(watch.ended)
        if missing:
            raise AssertionError(f"{missing} market tasks did not end")

    from netsim.checks import Check

    return Scenario(built.factory, [Check(all_ended, final=True)], built.compute, setup)


register_scenario("market", _scenario)
