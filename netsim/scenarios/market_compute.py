"""How the market scenario answers the roles' RunCompute: real torch, or pol's synthetic trainer.

netsim charges virtual time from FLOPS; this executor decides what a job *returns*.
Both modes have the same proof structure, so the ledger's game is played on real digests:

- `torch`: tasks are tiny MLPs (node/compute) on the synthetic dataset or scikit-learn
  digits. The solver really trains (honestly, or with a cheat from node/compute's attack
  catalog) and commits the real Merkle root of its checkpoints, keeping the leaves to
  open disputes with membership proofs; verifiers and whistleblowers re-execute their
  segment from the solver's committed checkpoint (`verify_segment`, plus the seeded-init
  check that catches copied runs). In a dispute each party's digests come from real
  intermediate tensors (`node.compute.trace.TorchSource`): the solver's from its claimed
  run, the accuser's from an honest re-execution from the committed start checkpoint.
- `synthetic`: protocol/pol's `SyntheticRun` (a hash-chain trainer with exactly the op
  dataflow of real training) for big seed sweeps: the catalog's cheats become pol's
  `Cheat`s, verification re-executes the segment from the committed checkpoint, and the
  game's digests are the runs' real state hashes and op-chain values. No torch at all.

Positions of the ledger game (`protocol.market.game`): position `i * ops + j` of segment
s is the state hash at step s*k+i when j = 0, else the op-chain value after op j-1 of
that step. Validators arbitrate position lo -> lo+1: they check the agreed input digest
against an honest re-execution from the committed checkpoint, then execute that one
operation and compare the output with the defender's claim.

Results are memoised per (task, segment): every node that re-checks the same segment
gets the same answer, which is what determinism of the profile means.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from netsim.compute import flops_to_ms
from protocol.commands import RunCompute
from protocol.encoding import sha256
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
from protocol.market.state import Task
from protocol.pol.merkle import leaf_hash
from protocol.pol.ops import chain_values
from protocol.pol.oracle import TraceSource, state_hash_of
from protocol.pol.spec import TaskSpec
from protocol.pol.synthetic import Cheat, SyntheticRun


def _skip_early(spec: TaskSpec) -> tuple[TaskSpec, Cheat]:
    return spec, Cheat(skip_from=max(1, spec.checkpoint_interval // 2))


#: Synthetic equivalents of the attack catalog: the spec the solver really runs and its
#: pol `Cheat`. Like their torch originals: skipped/truncated steps and another data order
#: break every segment from where they start; interpolation fabricates every checkpoint
#: (nothing trained, the final weights swapped in); noise touches only the delivered
#: weights (the final segment); a copied run is a real run of another model seed (every
#: segment re-executes, only its initial weights are not the spec's).
SYNTHETIC_ATTACKS: dict[str, Callable[[TaskSpec], tuple[TaskSpec, Cheat]]] = {
    "skipped_steps": _skip_early,
    "data_order": lambda spec: (spec, Cheat(data_seed=spec.data_seed + 7)),
    "copied_checkpoints": lambda spec: (replace(spec, model_seed=spec.model_seed + 1), Cheat()),
    "interpolated": lambda spec: (spec, Cheat(skip_from=1, corrupt_at=spec.steps)),
    "truncated": lambda spec: (spec, Cheat(skip_from=spec.steps // 2)),
    "noisy_weights": lambda spec: (spec, Cheat(corrupt_at=spec.steps - spec.checkpoint_interval // 2)),
    "bisect_silent": _skip_early,
    "bisect_inconsistent": _skip_early,
}
#: Attacks on the bisection itself: the solver trains like `skipped_steps`, then plays badly.
BISECTION_ATTACKS = ("bisect_silent", "bisect_inconsistent")


@dataclass
class TorchTask:
    """What a submitter ships with a task: the spec and its dataset (by hash; None for
    the synthetic trainer, which needs no data)."""

    spec: Any  # protocol.pol.spec.TaskSpec
    data: Any  # node.compute.datasets.Dataset | None
    dataset_name: str


@dataclass
class ComputeStats:
    solver_flops: int = 0
    verify_flops: int = 0  # verifiers, whistleblowers, profilers (re-execution)
    dispute_flops: int = 0  # bisection state hashes and arbitration
    accuracy: dict[bytes, float] = field(default_factory=dict)  # task id -> trained accuracy


class MarketCompute:
    """netsim `Executor` for market jobs. `sim` is set by the scenario's setup hook."""

    def __init__(
        self, attack_of: dict[bytes, str], mode: str, torch_tasks: dict[bytes, TorchTask], seed: int
    ) -> None:
        self.attack_of = attack_of  # solver pubkey -> attack name
        self.mode = mode
        self.torch_tasks = torch_tasks  # spec hash -> TorchTask
        self.rng = random.Random(seed)
        self.sim: Any = None
        self.stats = ComputeStats()
        self._runs: dict[bytes, Any] = {}
        self._seg_ok: dict[tuple[bytes, int], tuple[bool, int]] = {}
        self._arb: dict[tuple[bytes, int, int, bytes], bool] = {}
        self._honest_runs: dict[tuple[bytes, int], Any] = {}
        self._digests: dict[tuple[bytes, bool, int, int], bytes] = {}
        self._store: Any = None

    # --- Executor ------------------------------------------------------------------------------

    def execute(self, node: int, cmd: RunCompute, node_flops: int) -> tuple[int, Any]:
        self._count(cmd)
        job = cmd.job
        core = self.sim.core(node) if self.sim is not None else None
        view = getattr(core, "view", None)
        task = view.market.tasks.get(job.task_id) if view is not None else None
        ms = flops_to_ms(cmd.flops, node_flops)
        if task is None:
            return ms, None
        me = self.sim.keys[node].public
        return ms, self._answer(me, task, job)

    def _count(self, cmd: RunCompute) -> None:
        if isinstance(cmd.job, MarketTrainJob):
            self.stats.solver_flops += cmd.flops
        elif isinstance(cmd.job, SegmentCheckJob | ProfileJob):
            self.stats.verify_flops += cmd.flops
        else:
            self.stats.dispute_flops += cmd.flops

    def _answer(self, me: bytes, task: Task, job: Any) -> Any:
        tid = task.task_id
        if isinstance(job, MarketTrainJob):
            return self._train(task)
        if isinstance(job, ProfileJob):
            return ProfileResult(tid, 0, True)
        if isinstance(job, SegmentCheckJob):
            ok, dist = self._segment_ok(task, job.segment)
            return SegmentCheckResult(tid, job.segment, ok, dist)
        if isinstance(job, StateHashJob):
            return self._state_hash(me, task, job)
        if isinstance(job, ArbitrationJob):
            return ArbitrationResult(tid, self._arbitrate(task, job))
        return None

    # --- training and checking -----------------------------------------------------------------

    def _attack(self, task: Task) -> str | None:
        return self.attack_of.get(task.solver or b"")

    def _train(self, task: Task) -> MarketTrainResult:
        tid = task.task_id
        tt = self.torch_tasks[task.spec_hash]
        name = self._attack(task)
        if self.mode != "torch":
            spec, cheat = SYNTHETIC_ATTACKS[name](tt.spec) if name is not None else (tt.spec, None)
            srun = SyntheticRun(spec, cheat)
            leaves, root = srun.train()
            self._runs[tid] = srun
            return MarketTrainResult(tid, root, len(leaves), tuple(leaves))
        from node.compute import attacks
        from node.compute.trainer import accuracy

        if name in BISECTION_ATTACKS:
            name = "skipped_steps"
        build = next((a.build for a in attacks.CATALOG if a.name == name), attacks.honest)
        run = build(tt.spec, tt.data, 1)
        self._runs[tid] = run
        self.stats.accuracy[tid] = accuracy(tt.spec, tt.data, run.state_at(tt.spec.steps))
        leaves = run.leaves()
        return MarketTrainResult(tid, run.root(), len(leaves), tuple(leaves))

    def _segment_ok(self, task: Task, segment: int) -> tuple[bool, int]:
        key = (task.task_id, segment)
        if key not in self._seg_ok:
            self._seg_ok[key] = self._check(task, segment)
        return self._seg_ok[key]

    def _check(self, task: Task, segment: int) -> tuple[bool, int]:
        tt, run = self.torch_tasks[task.spec_hash], self._runs.get(task.task_id)
        if run is None:  # nothing was committed by this shell: nothing to re-execute against
            return False, 1_000_000
        k = tt.spec.checkpoint_interval
        if not self._initial_ok(task):
            return False, 1_000_000  # not this task's seeded initial weights (a copied run)
        if self.mode != "torch":
            honest = self._honest(task, segment)
            ok = leaf_hash(honest.leaf((segment + 1) * k)) == leaf_hash(run.leaf((segment + 1) * k))
            return ok, 0 if ok else 1_000_000
        from node.compute.verify import verify_segment

        res, _ = verify_segment(tt.spec, tt.data, segment, run.state_at(segment * k),
                                run.state_at((segment + 1) * k), (task.threshold_ppm or 0) / 1e6, threads=1)
        return bool(res.passed), min(1_000_000, int(res.distance * 1e6))

    def _initial_ok(self, task: Task) -> bool:
        """The committed step-0 checkpoint is the spec's seeded initialisation (a pure
        function of the spec, so anyone, validators included, can check it)."""
        tt, run = self.torch_tasks[task.spec_hash], self._runs[task.task_id]
        if self.mode != "torch":
            return bool(SyntheticRun(tt.spec).state_digests(0) == run.state_digests(0))
        from node.compute.verify import initial_matches

        return bool(initial_matches(tt.spec, run.state_at(0)))

    # --- the dispute: real digests from the parties' traces ---------------------------------------

    def _honest(self, task: Task, segment: int) -> Any:
        """An honest re-execution of `segment` from the solver's committed checkpoint."""
        key = (task.task_id, segment)
        if key not in self._honest_runs:
            tt, run = self.torch_tasks[task.spec_hash], self._runs[task.task_id]
            start = segment * tt.spec.checkpoint_interval
            if self.mode != "torch":
                honest = SyntheticRun(tt.spec)
                honest.seed_state(start, run.state_digests(start))
                self._honest_runs[key] = honest
            else:
                from node.compute.dispute import challenger_run

                self._honest_runs[key] = challenger_run(tt.spec, tt.data, run, segment, threads=1)
        return self._honest_runs[key]

    def _source(self, run: Any) -> TraceSource:
        if self.mode != "torch":
            src: TraceSource = run
            return src
        from node.compute.tensors import TensorStore
        from node.compute.trace import TorchSource

        if self._store is None:
            self._store = TensorStore()
        return TorchSource(run, self._store)

    def _digest(self, task: Task, run: Any, segment: int, position: int) -> bytes:
        """A party's digest at a game position (see the module docstring)."""
        key = (task.task_id, run is self._runs[task.task_id], segment, position)
        if key not in self._digests:
            src = self._source(run)
            k, ops = task.checkpoint_interval, task.ops_per_step
            step, j = segment * k + position // ops, position % ops
            start = state_hash_of(src.state_digests(step))
            self._digests[key] = start if j == 0 else chain_values(start, src.step_trace(step)[:j])[j - 1]
        return self._digests[key]

    def _state_hash(self, me: bytes, task: Task, job: StateHashJob) -> StateHashResult | None:
        if task.task_id not in self._runs:
            return None
        name = self._attack(task) if me == task.solver else None
        if name == "bisect_silent":
            return None
        if name == "bisect_inconsistent":
            return StateHashResult(task.task_id, job.position, sha256(self.rng.randbytes(32)))
        run = self._runs[task.task_id] if me == task.solver else self._honest(task, job.segment)
        return StateHashResult(task.task_id, job.position, self._digest(task, run, job.segment, job.position))

    def _arbitrate(self, task: Task, job: ArbitrationJob) -> bool:
        key = (task.task_id, job.segment, job.position, job.defender_output)
        if key not in self._arb:
            self._arb[key] = self._referee(task, job)
        return self._arb[key]

    def _referee(self, task: Task, job: ArbitrationJob) -> bool:
        """Re-execute the one operation after `position` from the agreed input and judge the
        defender's output. An input no honest re-execution reaches cannot be judged against
        the defender: the accuser agreed to it."""
        if task.task_id not in self._runs or not self._initial_ok(task):
            return False
        honest = self._honest(task, job.segment)
        if self._digest(task, honest, job.segment, job.position) != job.input_hash:
            return True
        return self._digest(task, honest, job.segment, job.position + 1) == job.defender_output
