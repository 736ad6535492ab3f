"""Building a market run: its config, who does what, the tasks, genesis and each node's core.

Layout of a run of N nodes: the first `validators` nodes validate (staked at genesis,
arbitrate disputes); then submitters; one whistleblower; optionally one false challenger
(challenges every accept without checking); the rest are workers (registered with
capacity, price, stake and a forced-error secret) running solver + verifier roles. The
whistleblower and the false challenger have a little stake bonded at genesis (only a
staked account may challenge), below what makes a validator. A fraction of the workers is
Byzantine: each cheats as a solver with an attack of the catalog (node/compute's for
torch; their synthetic equivalents for sweeps) or fights the bisection (silent,
inconsistent); optionally one honest-looking lazy verifier accepts without checking and
ignores its forced errors. Roles come from `protocol.market.assembly`, as on daemons.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from netsim.config import LinkOverride, NetworkConfig, SimConfig
from netsim.disk import Disk
from netsim.scenarios.market.compute import BISECTION_ATTACKS, SYNTHETIC_ATTACKS, MarketCompute, TorchTask
from netsim.sim import node_keys
from protocol.chain_params import chain_preset
from protocol.consensus.node import OWN_VOTES_KEY, PERSIST_BLOCK, PERSIST_VOTES, ConsensusConfig
from protocol.encoding import sha256
from protocol.identity import Keypair
from protocol.ledger.genesis import Genesis, GenesisAccount
from protocol.ledger.ledger import Ledger
from protocol.ledger.primitives import audit_supply
from protocol.ledger.state import State
from protocol.market import elections
from protocol.market.assembly import Duties, roles_for, submit_for
from protocol.market.chain import audit_market, load_market, market_genesis_state, save_market
from protocol.market.node import MarketNode
from protocol.market.params import MarketParams
from protocol.market.process import budget, process_register_worker, task_id_of
from protocol.market.roles import NodeRoles
from protocol.market.state import MarketState
from protocol.market.txs import DeviceClass, RegisterWorker, SubmitTask

BALANCE = 10**12
#: A vanishing crew member dies after this many steps of its crew's run.
VANISH_AFTER_STEPS = 3
VALIDATOR_STAKE = 100_000
#: Ledger stake of the whistleblower and the false challenger: bonded (so allowed to
#: challenge) but below the devnet's minimum validator stake, so not validators.
CHALLENGER_STAKE = 50
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
    #: Torch tasks: "mlp" (tiny classifiers on `dataset`), "lm" (a character transformer on
    #: the built-in corpus, of size `lm_size`: see netsim/scenarios/market/lm.py), or
    #: "crew" (one byte-level transformer trained by a crew of `crew_stages` x
    #: `crew_replicas` members, each verified on its own: netsim/scenarios/market/crew.py).
    workload: str = "mlp"
    lm_size: str = "small"
    crew_stages: int = 2
    crew_replicas: int = 2
    #: Honest-looking workers that vanish (like kill -9) after a few steps of any crew
    #: they are placed in: the crew aborts, they alone are slashed, the task is re-placed.
    crew_vanish: int = 0
    preset: str = "devnet"
    validators: int = 0  # 0: max(4, nodes // 8)
    latency_ms: int = 50
    jitter_ms: int = 10
    loss: float = 0.0
    #: Geography: node i -> j takes `line_spacing_ms * |i - j|` on top of `latency_ms` (0:
    #: every link alike), so a crew's placement has links worth choosing between.
    line_spacing_ms: int = 0
    #: Synthetic tasks' declared work and shape (ops per step follow from the spec).
    gflops: int = 2_000
    steps: int = 640  # 64 segments: the devnet's minimum (one check = 1/64 of the work)
    interval: int = 10
    #: Workers register by RegisterWorker tx once the chain runs (False: at genesis).
    register_by_tx: bool = True
    #: The first this many tasks are private (sealed data, keys wrapped to the elected).
    private_tasks: int = 0
    #: Submitters wrap wrong keys to verifiers and watchers (adversaries.BadWrapper).
    bad_wrapper: bool = False
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

    def line_links(self) -> tuple[LinkOverride, ...]:
        """With `line_spacing_ms`, nodes stand on a line: i->j takes |i - j| spacings more."""
        if not self.line_spacing_ms:
            return ()
        return tuple(LinkOverride(i, j, self.latency_ms + self.line_spacing_ms * abs(i - j), self.jitter_ms,
                                  self.loss)
                     for i in range(self.nodes) for j in range(self.nodes) if i != j)

    def sim_config(self) -> SimConfig:
        rng = random.Random(self.seed)
        flops = tuple(10**12 * rng.choice((1, 2, 4)) for _ in range(self.nodes))
        params = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("seed", "nodes")}
        return SimConfig(
            seed=self.seed, nodes=self.nodes, duration_ms=self.max_sim_ms, scenario="market",
            chain_id="polnet-market-sim", key_prefix="market",
            network=NetworkConfig(latency_ms=self.latency_ms, jitter_ms=self.jitter_ms, loss=self.loss,
                                  links=self.line_links()),
            flops=flops, params=params,
        )


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
    vanish: tuple[int, ...] = ()  # workers that vanish from their crews (MarketConfig.crew_vanish)

    def role_of(self, i: int) -> str:
        if i in self.vanish:
            return "byzantine:vanish"
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
    if cfg.workload == "crew":
        from netsim.scenarios.market.crew import CREW_ATTACKS

        names = sorted(CREW_ATTACKS)
    attack = {w: names[i % len(names)] for i, w in enumerate(sorted(rng.sample(rest, n_byz)))}
    honest = [w for w in rest if w not in attack]
    lazy = honest[0] if cfg.lazy_verifier and honest else None
    vanish = tuple(w for w in honest if w != lazy)[-cfg.crew_vanish:] if cfg.crew_vanish else ()
    return Layout(keys, validators, submitters, watcher, liar, rest, attack, lazy, vanish)


def worker_stake(cfg: MarketConfig, submits: list[SubmitTask]) -> int:
    """Stakes in the units of the run's budgets (not a constant that dwarfs them)."""
    largest = max((budget(MarketState(params=cfg.params), tx.gflops, tx.max_price_per_gflop)
                   for tx in submits), default=0)
    return max(cfg.params.min_worker_stake, STAKE_PER_BUDGET * largest)


def worker_secret(key: Keypair) -> bytes:
    return sha256(b"market-secret" + key.public)


# --- tasks ----------------------------------------------------------------------------------------


def build_tasks(cfg: MarketConfig) -> tuple[list[SubmitTask], dict[bytes, TorchTask]]:
    if cfg.workload == "crew":
        from netsim.scenarios.market.crew import crew_tasks

        return crew_tasks(cfg)
    if cfg.compute == "torch" and cfg.workload == "lm":
        txs, tasks = _lm_tasks(cfg)
    elif cfg.compute == "torch":
        txs, tasks = _torch_tasks(cfg)
    else:
        txs, tasks = _synthetic_tasks(cfg)
    return _make_private(cfg, txs, tasks)


def content_key_of(cfg: MarketConfig, index: int) -> bytes:
    """Task `index`'s content key, from the run's seed (a run is a function of its seed)."""
    return sha256(b"netsim-content-key" + cfg.seed.to_bytes(8, "big") + index.to_bytes(4, "big"))


def _make_private(cfg: MarketConfig, txs: list[SubmitTask],
                  tasks: dict[bytes, TorchTask]) -> tuple[list[SubmitTask], dict[bytes, TorchTask]]:
    """The first `cfg.private_tasks` tasks are private: they commit to a content key and
    their datasets are published sealed under it."""
    from protocol.market.keyring import key_commitment

    out = list(txs)
    for i in range(min(cfg.private_tasks, len(out))):
        key = content_key_of(cfg, i)
        out[i] = replace(out[i], key_commit=key_commitment(key))
        tasks[out[i].spec_hash] = replace(tasks[out[i].spec_hash], content_key=key)
    return out, tasks


def _lm_tasks(cfg: MarketConfig) -> tuple[list[SubmitTask], dict[bytes, TorchTask]]:
    import torch

    from netsim.scenarios.market.lm import lm_task
    from protocol.pol.memory import peak_memory_mb

    torch.set_num_threads(1)
    txs: list[SubmitTask] = []
    out: dict[bytes, TorchTask] = {}
    for i in range(cfg.tasks):
        tt = lm_task(cfg.lm_size, i)
        memory = peak_memory_mb(tt.spec)
        tx = submit_for(tt.spec, max_price_per_gflop=OFFERED_PRICE, salt=i, min_memory_mb=memory)
        out[tx.spec_hash] = tt
        txs.append(tx)
    return txs, out


def _synthetic_tasks(cfg: MarketConfig) -> tuple[list[SubmitTask], dict[bytes, TorchTask]]:
    """Specs for protocol/pol's synthetic trainer: the declared work is `cfg.gflops` (the
    sweep's economics), the shape (steps, interval, ops per step) is the spec's own."""
    from protocol.pol.spec import LossKind, OptimizerKind, OptimizerSpec, ReproProfile, TaskSpec, linear, relu

    txs: list[SubmitTask] = []
    out: dict[bytes, TorchTask] = {}
    for i in range(cfg.tasks):
        spec = TaskSpec(1, (4,), 2, (linear(4, 4), relu(), linear(4, 2)), LossKind.CROSS_ENTROPY,
                        OptimizerSpec(OptimizerKind.SGD, 0.1), 8, cfg.steps, cfg.interval,
                        sha256(b"synthetic-data" + i.to_bytes(4, "big")), 64, 1 + i, 2 + i, 3 + i,
                        ReproProfile(threads=1))
        tx = submit_for(spec, max_price_per_gflop=OFFERED_PRICE, salt=i, gflops=cfg.gflops)
        out[tx.spec_hash] = TorchTask(spec, None, "synthetic-hash")
        txs.append(tx)
    return txs, out


def _torch_tasks(cfg: MarketConfig) -> tuple[list[SubmitTask], dict[bytes, TorchTask]]:
    import torch

    from node.compute import datasets
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
        tx = submit_for(spec, max_price_per_gflop=OFFERED_PRICE, salt=i)
        out[tx.spec_hash] = TorchTask(spec, data, name)
        txs.append(tx)
    return txs, out


# --- genesis and nodes -------------------------------------------------------------------------


def registration_of(key: Keypair, flops: int, stake: int) -> RegisterWorker:
    """A worker's registration: capacity (netsim's FLOPS for the node), price, stake, and
    the root of its duty secrets."""
    return RegisterWorker(DeviceClass.CPU, 16_384, flops, WORKER_PRICE, stake,
                          elections.forced_error_commitment(worker_secret(key)), 0, 0)


def genesis_state(cfg: MarketConfig, lay: Layout, flops: tuple[int, ...], chain_id: str, stake: int) -> State:
    """Validators staked in the ledger; workers registered in the market at genesis unless
    they register by transaction (`register_by_tx`)."""
    params = chain_preset("devnet").ledger
    def stake_of(i: int) -> int:
        if i in lay.validators:
            return VALIDATOR_STAKE
        return CHALLENGER_STAKE if i in (lay.watcher, lay.liar) else 0

    accounts = tuple(GenesisAccount(k.public, BALANCE, stake_of(i)) for i, k in enumerate(lay.keys))
    state = market_genesis_state(Genesis(chain_id, params, 0, accounts), cfg.params)
    market = load_market(state)
    for w in [] if cfg.register_by_tx else lay.workers:
        process_register_worker(market, lay.keys[w].public, registration_of(lay.keys[w], flops[w], stake))
    save_market(state, market)
    audit_supply(state)
    audit_market(state)
    return state


def node_roles(cfg: MarketConfig, lay: Layout, i: int, queue: list[SubmitTask], flops: int = 10**12,
               stake: int = 0) -> NodeRoles:
    """Node i's roles, assembled as a daemon assembles its own (protocol.market.assembly)."""
    key = lay.keys[i]
    adversary = "false_challenger" if i == lay.liar else "lazy_verifier" if i == lay.lazy else ""
    if cfg.bad_wrapper and i in lay.submitters and not adversary:
        adversary = "bad_wrapper"
    duties = Duties(validator=i in lay.validators, worker=i in lay.workers, whistleblower=i == lay.watcher,
                    submitter=i in lay.submitters, adversary=adversary)
    mine: list[SubmitTask] = []
    in_flight = 1
    if i in lay.submitters:
        duty_count = cfg.params.verifier_count + 2
        room = len(lay.workers) * cfg.params.max_jobs_per_worker // (duty_count * len(lay.submitters))
        mine = [tx for j, tx in enumerate(queue) if lay.submitters[j % len(lay.submitters)] == i]
        in_flight = max(1, min(8, room))
    registration = registration_of(key, flops, stake) if cfg.register_by_tx and i in lay.workers else None
    assembled = roles_for(key.public, duties, secret=worker_secret(key), registration=registration,
                          queue=mine, max_in_flight=in_flight)
    if assembled.submitter is not None:  # its private tasks' keys, as `polnet task submit` hands them over
        for j, tx in enumerate(queue):
            if tx.key_commit and tx in mine:
                assembled.submitter.content_keys[task_id_of(key.public, tx)] = content_key_of(cfg, j)
    return assembled.roles


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
    vanish_of = {lay.keys[w].public: VANISH_AFTER_STEPS for w in lay.vanish}
    compute = MarketCompute(attack_of, cfg.compute, torch_tasks, cfg.seed, vanish_of)

    def factory(index: int, key: Keypair, disk: Disk) -> MarketNode:
        roles = node_roles(cfg, lay, index, list(submits), flops=flops[index], stake=stake)
        blocks = [v for _, v in disk.items(PERSIST_BLOCK)]
        return MarketNode.create(genesis, ccfg, key, roles, blocks=blocks,
                                 own_votes=disk.get(PERSIST_VOTES, OWN_VOTES_KEY), audit=True,
                                 role_state=lambda kind: [v for _, v in disk.items(kind)])

    return Built(cfg, sim_cfg, lay, genesis, submits, stake, compute, factory)
