"""Consensus scenarios: N validators under netsim, honest or Byzantine, with checkers.

Byzantine behaviours (each wraps an honest `ConsensusNode` and rewrites what it sends):

* ``silent``: never sends anything (a crashed-forever validator that still holds stake);
* ``equivocate``: for every vote it signs, also gossips a conflicting vote for the same
  (height, round, type); every honest node sees both, so each one must become evidence;
* ``split``: the coalition of ``split`` validators tries to fork the honest nodes: a
  coalition proposer sends block A to one half of the honest nodes and block B to the
  other, and every coalition member prevotes and precommits A to the first half and B to
  the second, at once. Below 1/3 of the stake this must fail; above it, it forks the
  chain (the negative control that proves the checker can fail).

Any scenario can also be given a coalition from netsim/byzantine/ (`byzantine`, the
config's `[byzantine]` table: amnesia, selective equivocation, late proposals,
starvation, future-round spam, invalid blocks of every kind, silence, or the crash
reference); those nodes are not honest either. The scenario is registered as
"consensus", so `polnet sim run --scenario consensus --config F` runs any of them.

Observations are collected from the commands the cores emit (each committed block is
persisted), so the checker sees exactly what a node durably committed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from netsim import Check, Disk, NemesisConfig, NetworkConfig, Report, Sim, SimConfig, node_keys, run
from netsim.config import ByzantineConfig
from netsim.errors import SimConfigError
from netsim.faults import FaultAction
from netsim.registry import Scenario, register_scenario
from protocol.app import BlockContext, BlockOutcome, Validator
from protocol.commands import TOPIC_CONSENSUS, Command, Event, MessageReceived, Persist, Publish, SendTo
from protocol.consensus.block import block_hash
from protocol.consensus.evidence import DuplicateVoteEvidence, evidence_id
from protocol.consensus.messages import CommittedBlock, Proposal
from protocol.consensus.node import (
    OWN_VOTES_KEY,
    PERSIST_BLOCK,
    PERSIST_VOTES,
    ConsensusConfig,
    ConsensusNode,
)
from protocol.consensus.tendermint import TimeoutConfig
from protocol.consensus.votes import Vote, VoteType
from protocol.encoding import canonical_hash, sha256
from protocol.envelope import seal
from protocol.identity import Keypair
from protocol.records import decode_record

BEHAVIOURS = ("honest", "silent", "equivocate", "split")
SCENARIO = "consensus"
_TIMEOUT_FIELDS = ("propose_ms", "prevote_ms", "precommit_ms", "delta_ms", "max_ms")


# --- a toy application (until the ledger is wired in) ------------------------------------------


class HashChainApp:
    """Accepts any non-empty tx; the state root is a hash chain over applied blocks. Keeps
    the ids of the evidence it applied so tests can count slashes."""

    def __init__(self, validators: Sequence[Validator]) -> None:
        self._validators = tuple(validators)
        self._root = sha256(b"polnet/toy-app/genesis")
        self.applied_evidence: list[bytes] = []
        self.tx_count = 0

    def check_tx(self, tx: bytes) -> None:
        return None

    def select_txs(self, candidates: Sequence[bytes], max_bytes: int) -> list[bytes]:
        out, size = [], 0
        for tx in candidates:
            if size + len(tx) > max_bytes:
                break
            out.append(tx)
            size += len(tx)
        return out

    def finalize_block(self, block: BlockContext) -> BlockOutcome:
        ids = [evidence_id(decode_record(DuplicateVoteEvidence, ev)) for ev in block.evidence]
        self.applied_evidence.extend(ids)
        self.tx_count += len(block.txs)
        self._root = canonical_hash([self._root, block.height, list(block.txs), ids])
        return BlockOutcome(self._root, self._validators)

    def app_hash(self) -> bytes:
        return self._root

    def validators(self) -> tuple[Validator, ...]:
        return self._validators


# --- scenario description and observations ---------------------------------------------------


@dataclass(frozen=True)
class ConsensusScenario:
    seed: int = 0
    powers: tuple[int, ...] = (1, 1, 1, 1)
    behaviours: tuple[str, ...] = ()  # per node; missing entries are honest
    duration_ms: int = 3_000
    liveness_ms: int = 0
    network: NetworkConfig = field(default_factory=lambda: NetworkConfig(latency_ms=20, jitter_ms=10))
    faults: tuple[FaultAction, ...] = ()
    #: A seeded random fault plan for the safety phase (crashes lose no synced write:
    #: Persist must reach disk before the messages of the same step leave the node).
    nemesis: NemesisConfig | None = None
    timeouts: TimeoutConfig = field(default_factory=lambda: TimeoutConfig(300, 200, 200, 100, 3000))
    rebroadcast_ms: int = 200
    #: "toy" (HashChainApp) or "ledger" (protocol.ledger.Ledger from a genesis whose
    #: stakes are `powers` x STAKE_UNIT, with the supply audit after every block).
    app: str = "toy"
    epoch_length: int = 100
    #: A coalition of netsim/byzantine/ strategies (its nodes are not honest).
    byzantine: ByzantineConfig | None = None
    chain_id: str = "polnet-consensus-sim"

    def behaviour(self, i: int) -> str:
        return self.behaviours[i] if i < len(self.behaviours) else "honest"

    def honest(self, i: int) -> bool:
        return self.behaviour(i) == "honest" and (self.byzantine is None or i not in self.byzantine.nodes)

    @property
    def n(self) -> int:
        return len(self.powers)

    def sim_config(self) -> SimConfig:
        return SimConfig(
            seed=self.seed,
            nodes=self.n,
            duration_ms=self.duration_ms,
            liveness_ms=self.liveness_ms,
            scenario=SCENARIO,
            chain_id=self.chain_id,
            network=self.network,
            faults=self.faults,
            nemesis=self.nemesis,
            byzantine=self.byzantine,
            params=self.params(),
        )

    def params(self) -> dict[str, int | float | str | bool]:
        """What `from_config` needs beyond the SimConfig's own fields (replays a run)."""
        t = self.timeouts
        return {
            "powers": ",".join(str(p) for p in self.powers),
            "behaviours": ",".join(self.behaviours),
            "propose_ms": t.propose_ms,
            "prevote_ms": t.prevote_ms,
            "precommit_ms": t.precommit_ms,
            "delta_ms": t.delta_ms,
            "max_ms": t.max_ms,
            "rebroadcast_ms": self.rebroadcast_ms,
            "app": self.app,
            "epoch_length": self.epoch_length,
        }

    @classmethod
    def from_config(cls, config: SimConfig) -> ConsensusScenario:
        """The scenario a SimConfig describes (the inverse of `sim_config`): powers and
        behaviours are comma-separated params (default: `nodes` equal validators)."""
        p = config.param
        powers = tuple(int(x) for x in str(p("powers", "")).split(",") if x) or (1,) * config.nodes
        if len(powers) != config.nodes:
            raise SimConfigError(f"params.powers: {len(powers)} powers for {config.nodes} nodes")
        behaviours = tuple(b for b in str(p("behaviours", "")).split(",") if b)
        if any(b not in BEHAVIOURS for b in behaviours):
            raise SimConfigError(f"params.behaviours: each must be one of {BEHAVIOURS}")
        base = TimeoutConfig(300, 200, 200, 100, 3000)
        timeouts = TimeoutConfig(*(int(p(name, getattr(base, name))) for name in _TIMEOUT_FIELDS))
        app = str(p("app", "toy"))
        if app not in ("toy", "ledger"):
            raise SimConfigError("params.app: must be 'toy' or 'ledger'")
        return cls(
            seed=config.seed, powers=powers, behaviours=behaviours, duration_ms=config.duration_ms,
            liveness_ms=config.liveness_ms, network=config.network, faults=config.faults,
            nemesis=config.nemesis, timeouts=timeouts, rebroadcast_ms=int(p("rebroadcast_ms", 200)),
            app=app, epoch_length=int(p("epoch_length", 100)), byzantine=config.byzantine,
            chain_id=config.chain_id,
        )

    def byzantine_power_fraction(self) -> float:
        bad = sum(p for i, p in enumerate(self.powers) if not self.honest(i))
        return bad / sum(self.powers)


@dataclass
class Observations:
    """What happened, gathered from persisted blocks: commits[height][node] = block hash."""

    commits: dict[int, dict[int, bytes]] = field(default_factory=dict)
    app_hashes: dict[int, dict[int, bytes]] = field(default_factory=dict)
    committed_evidence: dict[int, dict[bytes, int]] = field(default_factory=dict)  # node -> id -> count
    injected: set[tuple[bytes, int, int, int]] = field(default_factory=set)  # equivocation positions
    commit_times: dict[int, dict[int, int]] = field(default_factory=dict)  # height -> node -> ms
    tx_counts: dict[int, int] = field(default_factory=dict)  # node -> transactions committed
    #: node -> validators that committed evidence (as seen by that node) accuses.
    accused: dict[int, set[bytes]] = field(default_factory=dict)
    #: node -> (height, proposer) of each block it committed (who the ledger pays).
    proposers: dict[int, dict[int, bytes]] = field(default_factory=dict)

    def record_block(self, node: int, now: int, cb: CommittedBlock) -> None:
        h = cb.block.height
        self.commits.setdefault(h, {})[node] = block_hash(cb.block)
        self.app_hashes.setdefault(h, {})[node] = cb.block.header.app_hash
        self.commit_times.setdefault(h, {}).setdefault(node, now)
        self.tx_counts[node] = self.tx_counts.get(node, 0) + len(cb.block.txs)
        self.proposers.setdefault(node, {})[h] = cb.block.header.proposer
        seen = self.committed_evidence.setdefault(node, {})
        for ev in cb.block.evidence:
            eid = evidence_id(ev)
            seen[eid] = seen.get(eid, 0) + 1
            self.accused.setdefault(node, set()).add(ev.validator)

    def height_of(self, node: int) -> int:
        return max((h for h, by in self.commits.items() if node in by), default=0)


class SafetyViolation(AssertionError):
    """Two honest nodes committed different blocks at one height."""


# --- cores -------------------------------------------------------------------------------------


class ObservedCore:
    """Runs a core and reports the blocks it persists to the scenario's observations."""

    def __init__(self, index: int, inner: ConsensusNode, obs: Observations) -> None:
        self.index = index
        self.inner = inner
        self.obs = obs

    def handle(self, now: int, event: Event) -> list[Command]:
        cmds = self.inner.handle(now, event)
        for c in cmds:
            if isinstance(c, Persist) and c.kind == PERSIST_BLOCK:
                self.obs.record_block(self.index, now, decode_record(CommittedBlock, c.value))
        return cmds


class SilentCore:
    def __init__(self, inner: ObservedCore) -> None:
        self.inner = inner

    def handle(self, now: int, event: Event) -> list[Command]:
        self.inner.handle(now, event)
        return []


class EquivocatingCore:
    """Signs and gossips, for each of its votes, a second vote for something else."""

    def __init__(self, inner: ObservedCore, key: Keypair, chain_id: str, obs: Observations) -> None:
        self.inner = inner
        self.key = key
        self.chain_id = chain_id
        self.obs = obs

    def handle(self, now: int, event: Event) -> list[Command]:
        out: list[Command] = []
        for c in self.inner.handle(now, event):
            out.append(c)
            if isinstance(c, Publish) and isinstance(c.msg, Vote):
                v = c.msg
                other = sha256(b"conflict" + (v.block_hash or b"nil"))
                out.append(Publish(TOPIC_CONSENSUS, dataclasses.replace(v, block_hash=other)))
                self.obs.injected.add((v.validator, v.height, v.round, int(v.vote_type)))
        return out


@dataclass
class Coalition:
    """Shared plan of the `split` validators: which block each honest half gets."""

    keys: dict[int, Keypair]
    half_a: tuple[bytes, ...]
    half_b: tuple[bytes, ...]
    splits: dict[tuple[int, int], tuple[bytes, bytes]] = field(default_factory=dict)
    voted: set[tuple[int, int, int]] = field(default_factory=set)


class SplitCore:
    """A coalition member that tries to make the two honest halves commit different blocks."""

    def __init__(self, index: int, inner: ObservedCore, coalition: Coalition, chain_id: str) -> None:
        self.index = index
        self.inner = inner
        self.co = coalition
        self.key = coalition.keys[index]
        self.chain_id = chain_id

    def handle(self, now: int, event: Event) -> list[Command]:
        out: list[Command] = []
        for c in self.inner.handle(now, event):
            if isinstance(c, Publish) and isinstance(c.msg, Proposal):
                out += self._split_proposal(c.msg)
            elif isinstance(c, Publish) and isinstance(c.msg, Vote) and self._split_of(c.msg) is not None:
                continue  # the coalition's votes for a split round are sent by _split_votes
            else:
                out.append(c)
        if isinstance(event, MessageReceived) and isinstance(event.body, Proposal):
            out += self._split_votes(event.body.height, event.body.round)
        return out

    def _split_of(self, v: Vote) -> tuple[bytes, bytes] | None:
        return self.co.splits.get((v.height, v.round))

    def _split_proposal(self, p: Proposal) -> list[Command]:
        a = p.block
        b = dataclasses.replace(a, header=dataclasses.replace(a.header, time=a.header.time + 1))
        self.co.splits[(p.height, p.round)] = (block_hash(a), block_hash(b))
        pa, pb = p, dataclasses.replace(p, block=b)
        out: list[Command] = [SendTo(peer, pa) for peer in self.co.half_a]
        out += [SendTo(peer, pb) for peer in self.co.half_b]
        out += [SendTo(k.public, pa) for i, k in self.co.keys.items() if i != self.index]
        return out + self._split_votes(p.height, p.round)

    def _split_votes(self, height: int, round_: int) -> list[Command]:
        split = self.co.splits.get((height, round_))
        if split is None or (self.index, height, round_) in self.co.voted:
            return []
        self.co.voted.add((self.index, height, round_))
        out: list[Command] = []
        for t in (VoteType.PREVOTE, VoteType.PRECOMMIT):
            for h, peers in ((split[0], self.co.half_a), (split[1], self.co.half_b)):
                raw = seal(Vote(height, round_, t, h, self.key.public), self.key, self.chain_id)
                out += [SendTo(peer, raw) for peer in peers]
        return out


# --- running ---------------------------------------------------------------------------------


STAKE_UNIT = 1_000
GENESIS_BALANCE = 1_000_000


def ledger_genesis(sc: ConsensusScenario) -> Any:
    """A devnet genesis where node i stakes powers[i] x STAKE_UNIT (epochs of the scenario's length)."""
    from protocol.chain_params import chain_preset
    from protocol.ledger.genesis import Genesis, GenesisAccount

    params = chain_preset("devnet").ledger.replace(epoch_length=sc.epoch_length)
    keys = node_keys(sc.sim_config())
    accounts = tuple(
        GenesisAccount(k.public, GENESIS_BALANCE, power * STAKE_UNIT) for k, power in zip(keys, sc.powers)
    )
    return Genesis(sc.sim_config().chain_id, params, 0, accounts)


def ledger_app(sc: ConsensusScenario) -> Callable[[tuple[Validator, ...]], Any]:
    from protocol.ledger.ledger import Ledger

    genesis = ledger_genesis(sc)
    return lambda validators: Ledger.from_genesis(genesis, audit=True)


def genesis_validators(sc: ConsensusScenario) -> tuple[Validator, ...]:
    if sc.app == "ledger":
        validators: tuple[Validator, ...] = ledger_app(sc)(()).validators()
        return validators
    keys = node_keys(sc.sim_config())
    return tuple(Validator(k.public, p) for k, p in zip(keys, sc.powers))


def make_factory(
    sc: ConsensusScenario,
    obs: Observations,
    app_factory: Callable[[tuple[Validator, ...]], Any] | None = None,
    sim_config: SimConfig | None = None,
) -> Callable[[int, Keypair, Disk], Any]:
    cfg = sim_config or sc.sim_config()
    validators = genesis_validators(sc)
    ccfg = ConsensusConfig(
        chain_id=cfg.chain_id,
        genesis_validators=validators,
        timeouts=sc.timeouts,
        rebroadcast_ms=sc.rebroadcast_ms,
        epoch_length=sc.epoch_length,
    )
    keys = node_keys(cfg)
    split_idx = [i for i in range(sc.n) if sc.behaviour(i) == "split"]
    honest = [keys[i].public for i in range(sc.n) if sc.honest(i)]
    coalition = Coalition(
        {i: keys[i] for i in split_idx}, tuple(honest[: len(honest) // 2]), tuple(honest[len(honest) // 2 :])
    )
    make_app = app_factory or (ledger_app(sc) if sc.app == "ledger" else HashChainApp)

    def factory(index: int, key: Keypair, disk: Disk) -> Any:
        node = ConsensusNode(ccfg, make_app(validators), key)
        node.restore([v for _, v in disk.items(PERSIST_BLOCK)], disk.get(PERSIST_VOTES, OWN_VOTES_KEY))
        core = ObservedCore(index, node, obs)
        kind = sc.behaviour(index)
        if kind == "silent":
            return SilentCore(core)
        if kind == "equivocate":
            return EquivocatingCore(core, key, cfg.chain_id, obs)
        if kind == "split":
            return SplitCore(index, core, coalition, cfg.chain_id)
        return core

    return factory


def honest_nodes(sc: ConsensusScenario) -> list[int]:
    return [i for i in range(sc.n) if sc.honest(i)]


def safety_check(sc: ConsensusScenario, obs: Observations) -> Callable[[Sim], None]:
    honest = set(honest_nodes(sc))

    def no_fork(sim: Sim) -> None:
        for h, by_node in obs.commits.items():
            hashes = {v for n, v in by_node.items() if n in honest}
            if len(hashes) > 1:
                raise SafetyViolation(f"honest nodes committed {len(hashes)} different blocks at height {h}")
        for h, by_node in obs.app_hashes.items():
            roots = {v for n, v in by_node.items() if n in honest}
            if len(roots) > 1:
                raise SafetyViolation(f"honest nodes disagree on the state root before height {h}")

    return no_fork


class HonestSlashed(AssertionError):
    """Committed evidence accuses an honest validator (it would be slashed)."""


def honest_slashes(sc: ConsensusScenario, obs: Observations) -> list[tuple[int, int]]:
    """(observing node, accused honest node) for every committed accusation of an honest one."""
    keys = node_keys(sc.sim_config())
    honest = {keys[i].public: i for i in honest_nodes(sc)}
    return sorted({(n, honest[v]) for n, accused in obs.accused.items() if n in honest.values()
                   for v in accused if v in honest})


def no_honest_slash_check(sc: ConsensusScenario, obs: Observations) -> Callable[[Sim], None]:
    def no_honest_slash(sim: Sim) -> None:
        bad = honest_slashes(sc, obs)
        if bad:
            raise HonestSlashed(f"node {bad[0][0]} committed evidence against honest validator {bad[0][1]}")

    return no_honest_slash


def forged_commits(obs: Observations, sim: Sim, honest: Sequence[int]) -> int:
    """Blocks an honest node committed that the Byzantine coalition forged as invalid."""
    co = sim.coalition
    if co is None:
        return 0
    return sum(1 for by in obs.commits.values() for n, h in by.items() if n in honest and h in co.invalid)


def summary(sc: ConsensusScenario, obs: Observations, sims: Sequence[Sim]) -> dict[str, Any]:
    """What `polnet sim run` prints for a consensus run beyond the simulator's counters."""
    honest = honest_nodes(sc)
    heights = [obs.height_of(i) for i in honest]
    return {
        "honest_height_min": min(heights, default=0),
        "honest_height_max": max(heights, default=0),
        "honest_slashed": len({v for _, v in honest_slashes(sc, obs)}),
        "forged_blocks_committed": forged_commits(obs, sims[0], honest) if sims else 0,
        "byzantine": sc.byzantine.strategy if sc.byzantine is not None else "none",
        "byzantine_nodes": list(sc.byzantine.nodes) if sc.byzantine is not None else [],
    }


def _registered(config: SimConfig) -> Scenario:
    sc = ConsensusScenario.from_config(config)
    obs = Observations()
    sims: list[Sim] = []
    checks = [
        Check(safety_check(sc, obs), every=50, name="no_fork"),
        Check(safety_check(sc, obs), final=True, name="no_fork_final"),
        Check(no_honest_slash_check(sc, obs), final=True, name="no_honest_slash"),
    ]
    return Scenario(make_factory(sc, obs, sim_config=config), checks, setup=sims.append,
                    summary=lambda: summary(sc, obs, sims))


register_scenario(SCENARIO, _registered)


def run_scenario(
    sc: ConsensusScenario,
    checks: Sequence[Check] = (),
    app_factory: Callable[[tuple[Validator, ...]], Any] | None = None,
    setup: Callable[[Sim], None] | None = None,
    obs: Observations | None = None,
) -> tuple[Report, Observations]:
    """Run one scenario; pass `obs` to watch the observations from checkers and callbacks."""
    obs = Observations() if obs is None else obs
    all_checks = [Check(safety_check(sc, obs), every=50, name="no_fork"), *checks]
    all_checks.append(Check(safety_check(sc, obs), final=True, name="no_fork_final"))
    all_checks.append(Check(no_honest_slash_check(sc, obs), final=True, name="no_honest_slash"))
    report = run(sc.sim_config(), make_factory(sc, obs, app_factory), all_checks, setup=setup)
    return report, obs


def seeded_byzantine(seed: int, n: int, powers: tuple[int, ...] | None = None) -> ConsensusScenario:
    """A small random scenario with Byzantine stake strictly below 1/3: one faulty
    validator among 4-7 of equal stake, behaviour drawn from the seed."""
    kinds = ("silent", "equivocate", "split")
    bad = seed % n
    behaviours = tuple(kinds[(seed // n) % 3] if i == bad else "honest" for i in range(n))
    return ConsensusScenario(seed=seed, powers=powers or (1,) * n, behaviours=behaviours)
