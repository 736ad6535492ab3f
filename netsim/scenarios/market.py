"""Market scenario: N nodes running the market roles over many tasks, honest or Byzantine.

Block-synchronous for now: a block is cut every `block_ms` of virtual time, the market's
rules apply the transactions published since the last block, and every node's roles see
the committed state. Compute is the synthetic trainer's proof structure in miniature
(true state hash = H(task, segment, position)); a job finishes `flops / node FLOPS` of
virtual time after it started. This drives the real role machines and ledger rules; it
does not yet run consensus or netsim's network model underneath (see docs/market.md).

Byzantine workers follow the proof-of-learning attack catalog: each attack corrupts the
committed checkpoints from some segment on (skipped steps, a different data order or
copied checkpoints from the start; interpolation after the first segment; truncation
from the middle; noise in the last segment), and two attacks fight the bisection
(answering nothing, or answering inconsistently). Plus one lazy verifier (accepts
without checking, ignores forcing) and one false challenger (challenges every accept).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from protocol.commands import ComputeDone, Publish, RunCompute
from protocol.encoding import sha256
from protocol.errors import ValidationError
from protocol.identity import Keypair
from protocol.market import elections
from protocol.market.blocks import begin_block, end_block
from protocol.market.jobs import (
    ArbitrationJob,
    ArbitrationResult,
    MarketTrainJob,
    MarketTrainResult,
    ProfileJob,
    ProfileResult,
    SegmentCheckJob,
    SegmentCheckResult,
    StateHashJob,
    StateHashResult,
)
from protocol.market.params import DEVNET, MarketParams
from protocol.market.process import process_tx
from protocol.market.roles import (
    ArbiterRole,
    ChainView,
    NodeRoles,
    SolverRole,
    SubmitterRole,
    VerifierRole,
    Wallet,
    WhistleblowerRole,
)
from protocol.market.state import TERMINAL, MarketState, MemoryAccounts, Status, Task
from protocol.market.txs import Challenge, DeviceClass, RegisterWorker, SubmitTask, Verdict, VerdictCommit

#: attack -> first corrupted segment as a fraction of the run (None: fights the bisection).
ATTACKS: dict[str, float] = {
    "skipped_steps": 0.0,
    "data_order": 0.0,
    "copied_checkpoints": 0.0,
    "interpolated": 0.1,
    "truncated": 0.5,
    "noise": 0.95,
    "bisect_silent": 0.0,
    "bisect_inconsistent": 0.0,
}
STAKE = 200_000
BALANCE = 10**10
MAX_BLOCKS = 5_000


@dataclass(frozen=True)
class MarketScenario:
    seed: int = 0
    nodes: int = 32
    tasks: int = 20
    byzantine_fraction: float = 0.0
    lazy_verifier: bool = False
    false_challenger: bool = False
    params: MarketParams = DEVNET
    block_ms: int = 1_000
    gflops: int = 2_000
    steps: int = 100
    interval: int = 10
    ops_per_step: int = 16


@dataclass
class MarketReport:
    tasks: int = 0
    settled: int = 0
    refunded: int = 0
    cheats: int = 0
    cheats_caught: int = 0
    honest_stake_lost: int = 0
    slashes: int = 0
    jackpot_payouts: int = 0
    forced_errors: int = 0
    supply_ok: bool = True
    rejected_txs: int = 0
    blocks: int = 0
    sim_ms: int = 0
    wall_s: float = 0.0
    solver_flops: int = 0
    verify_flops: int = 0
    submit_to_settle_blocks: list[int] = field(default_factory=list)
    payments: dict[str, int] = field(default_factory=dict)


class LazyVerifier(VerifierRole):
    """Accepts everything without computing and never obeys a forced error."""

    def on_view(self, market: MarketState) -> list[Any]:
        out: list[Any] = []
        for task in market.open_tasks():
            slot = self._slot(task)
            if task.status == Status.COMMIT and slot is not None and slot.commitment is None:
                verdict = Verdict(True, slot.segment, 0)
                salt = sha256(self.secret + task.task_id)
                self.verdicts[task.task_id] = (verdict, salt)
                commitment = elections.verdict_commitment(task.task_id, self.me, verdict, salt)
                out += self._once(task, "lazy", VerdictCommit(task.task_id, commitment, 0, 0))
            elif task.status == Status.REVEAL:
                out += self._verify(task)
        return out


class FalseChallenger(WhistleblowerRole):
    """Challenges every accepting verdict without checking anything."""

    def on_view(self, market: MarketState) -> list[Any]:
        out: list[Any] = []
        for task in market.open_tasks():
            if task.status != Status.CHALLENGE:
                continue
            for i, slot in enumerate(task.verifiers):
                if slot.verdict is not None and slot.verdict.accept and slot.pubkey != self.me:
                    out += self._once(
                        task, f"false{i}", Challenge(task.task_id, i, slot.segment, self.bond, 0, 0)
                    )
        return out + self._play(market)


class MarketSim:
    def __init__(self, sc: MarketScenario) -> None:
        self.sc = sc
        self.rng = random.Random(sc.seed)
        keys = [Keypair.derive(f"market/{sc.seed}/{i}").public for i in range(sc.nodes)]
        n_val = max(4, sc.nodes // 8)
        n_sub = max(1, sc.nodes // 8)
        self.validators = {k: 100 for k in keys[:n_val]}
        self.submitters = keys[n_val : n_val + n_sub]
        self.watcher = keys[n_val + n_sub]
        rest = keys[n_val + n_sub + 1 :]
        self.liar = rest.pop() if sc.false_challenger else None
        self.workers = rest
        n_byz = round(len(self.workers) * sc.byzantine_fraction)
        attacks = sorted(ATTACKS)
        self.attack = {
            w: attacks[i % len(attacks)] for i, w in enumerate(self.rng.sample(self.workers, n_byz))
        }
        honest = [w for w in self.workers if w not in self.attack]
        self.lazy = honest[0] if sc.lazy_verifier else None
        self.flops = {w: 10**12 * self.rng.choice((1, 2, 4)) for w in keys}
        self.state = MarketState(params=sc.params, accounts=MemoryAccounts({k: BALANCE for k in keys}))
        self.nodes: dict[bytes, NodeRoles] = {}
        self.subs: list[SubmitterRole] = []
        self._build_roles()
        self.supply0 = self.state.supply()
        self.inbox: list[tuple[bytes, Any]] = []
        self.timers: list[tuple[int, int, bytes, str, Any]] = []
        self.now = 0
        self.report = MarketReport(tasks=sc.tasks)

    def _build_roles(self) -> None:
        for w in self.workers:
            secret = sha256(b"market-secret" + w)
            tx = RegisterWorker(
                DeviceClass.CPU,
                16_384,
                self.flops[w],
                5,
                STAKE,
                elections.forced_error_commitment(secret),
                0,
                0,
            )
            process_tx(self.state, w, tx)
            verifier = (LazyVerifier if w == self.lazy else VerifierRole)(w, Wallet(), secret=secret)
            self.nodes[w] = NodeRoles([SolverRole(w, Wallet()), verifier])
        for v in self.validators:
            self.nodes[v] = NodeRoles([ArbiterRole(v, Wallet())])
        bond = self.sc.params.min_challenge_bond
        self.nodes[self.watcher] = NodeRoles([WhistleblowerRole(self.watcher, Wallet(), bond=bond)])
        if self.liar is not None:
            self.nodes[self.liar] = NodeRoles([FalseChallenger(self.liar, Wallet(), bond=bond)])
        # Capacity-aware submitters: keep concurrent duties (a solver, verifiers, maybe a
        # profiler per task) within what the workers can hold.
        duties = self.sc.params.verifier_count + 2
        room = len(self.workers) * self.sc.params.max_jobs_per_worker // (duties * len(self.submitters))
        for s in self.submitters:
            sub = SubmitterRole(s, Wallet(), max_in_flight=max(1, min(8, room)))
            self.subs.append(sub)
            self.nodes[s] = NodeRoles([sub])
        sc = self.sc
        for i in range(sc.tasks):
            tx = SubmitTask(
                sha256(b"spec" + i.to_bytes(4, "big")),
                sc.gflops,
                sc.steps,
                sc.interval,
                sc.ops_per_step,
                DeviceClass.CPU,
                1_024,
                True,
                10,
                i,
                0,
                0,
            )
            self.subs[i % len(self.subs)].queue.append(tx)

    # --- synthetic compute --------------------------------------------------------------------------

    def _first_bad(self, task: Task) -> int | None:
        kind = self.attack.get(task.solver or b"")
        return None if kind is None else int(ATTACKS[kind] * task.n_segments)

    def compute(self, node: bytes, job: Any) -> Any | None:
        task = self.state.tasks[job.task_id]
        bad = self._first_bad(task)
        tid = task.task_id
        if isinstance(job, MarketTrainJob):
            return MarketTrainResult(tid, sha256(tid + bytes([bad is not None])), task.n_segments + 1)
        if isinstance(job, ProfileJob):
            return ProfileResult(tid, 0, True)
        if isinstance(job, SegmentCheckJob):
            passed = bad is None or job.segment < bad
            return SegmentCheckResult(tid, job.segment, passed, 0 if passed else 10**5)
        if isinstance(job, StateHashJob):
            return self._state_hash(node, task, job, bad)
        if isinstance(job, ArbitrationJob):
            truth = self._true_hash(tid, job.segment, job.position + 1)
            right = job.defender_output == truth if job.defender_output else bad is None or job.segment < bad
            return ArbitrationResult(tid, right)
        raise ValueError(f"unknown job {type(job).__name__}")

    def _true_hash(self, tid: bytes, segment: int, pos: int) -> bytes:
        return sha256(tid + segment.to_bytes(4, "big") + pos.to_bytes(4, "big"))

    def _state_hash(self, node: bytes, task: Task, job: StateHashJob, bad: int | None) -> Any | None:
        kind = self.attack.get(node) if node == task.solver else None
        if kind == "bisect_silent":
            return None
        digest = self._true_hash(task.task_id, job.segment, job.position)
        if kind == "bisect_inconsistent":
            digest = sha256(self.rng.randbytes(32))
        elif kind is not None and bad is not None and job.segment >= bad and job.position >= 5:
            digest = sha256(b"forged" + digest)
        return StateHashResult(task.task_id, job.position, digest)

    # --- driving --------------------------------------------------------------------------------------

    def _execute(self, node: bytes, commands: list[Any]) -> None:
        for cmd in commands:
            if isinstance(cmd, Publish):
                self.inbox.append((node, cmd.msg))
            elif isinstance(cmd, RunCompute):
                self._account_flops(node, cmd)
                due = self.now + max(1, cmd.flops * 1_000 // self.flops[node])
                self.timers.append((due, len(self.timers), node, cmd.job_id, cmd.job))

    def _account_flops(self, node: bytes, cmd: RunCompute) -> None:
        if isinstance(cmd.job, MarketTrainJob):
            self.report.solver_flops += cmd.flops
        elif isinstance(cmd.job, SegmentCheckJob | ArbitrationJob | StateHashJob):
            self.report.verify_flops += cmd.flops

    def _deliver_due(self) -> None:
        due = sorted(t for t in self.timers if t[0] <= self.now)
        self.timers = [t for t in self.timers if t[0] > self.now]
        for _, _, node, job_id, job in due:
            result = self.compute(node, job)
            if result is not None:
                self._execute(node, self.nodes[node].handle(self.now, ComputeDone(job_id, result)))

    def block(self) -> None:
        self.now += self.sc.block_ms
        self._deliver_due()
        h = self.state.height + 1
        begin_block(
            self.state,
            h,
            sha256(b"market-beacon" + self.sc.seed.to_bytes(8, "big") + h.to_bytes(8, "big")),
            self.validators,
        )
        txs, self.inbox = self.inbox, []
        for sender, tx in txs:
            try:
                process_tx(self.state, sender, tx)
            except ValidationError:  # a late or out-of-turn move: refused, the block goes on
                self.report.rejected_txs += 1
        end_block(self.state)
        self.report.supply_ok &= self.state.supply() == self.supply0
        view = ChainView(h, self.state)
        for node, roles in self.nodes.items():
            self._execute(node, roles.handle(self.now, view))

    def done(self) -> bool:
        return sum(len(s.outcomes) for s in self.subs) == self.sc.tasks

    def run(self) -> MarketReport:
        start = time.perf_counter()
        for _ in range(MAX_BLOCKS):
            self.block()
            if self.done():
                break
        self.report.wall_s = time.perf_counter() - start
        self._summarise()
        return self.report

    def _summarise(self) -> None:
        r = self.report
        r.blocks, r.sim_ms = self.state.height, self.now
        for task in self.state.tasks.values():
            r.settled += task.status == Status.SETTLED
            r.refunded += task.status == Status.REFUNDED
            r.forced_errors += sum(v.forced_revealed for v in task.verifiers)
            r.jackpot_payouts += len(
                {
                    c.target
                    for c in task.challenges
                    if task.verifiers[c.target].forced_revealed and c.claims_valid == task.proof_valid
                }
            )
            if task.status in TERMINAL:
                r.submit_to_settle_blocks.append(task.deadline - task.submitted_at)
            if task.solver in self.attack and task.proof_root is not None:
                r.cheats += 1
                r.cheats_caught += task.proof_valid is False
        honest = [w for w in self.workers if w not in self.attack and w != self.lazy]
        r.honest_stake_lost = sum(
            STAKE - self.state.workers[w].stake for w in honest if w in self.state.workers
        )
        r.slashes = sum(1 for w in self.state.workers.values() if w.stake < STAKE)
        r.payments = {"jackpot_pool": self.state.jackpot}


def run_market(sc: MarketScenario) -> MarketReport:
    return MarketSim(sc).run()
