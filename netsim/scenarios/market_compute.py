"""How the market scenario answers the roles' RunCompute: real torch, or a hash model.

netsim charges virtual time from FLOPS; this executor decides what a job *returns*.

- `torch`: tasks are tiny MLPs (node/compute) on the synthetic dataset or scikit-learn
  digits. The solver really trains (honestly, or with a cheat from node/compute's attack
  catalog) and its Merkle root is the real root of its checkpoints; verifiers and
  whistleblowers really re-execute their segment from the solver's checkpoint
  (`verify_segment`, plus the seeded-init check that catches copied runs); validators
  arbitrating a dispute run protocol/pol's two-phase pinpoint game to one operation and
  its referee (`node.compute.dispute.dispute_segment`) and vote its outcome. The
  ledger-side bisection moves use per-position digests derived from those torch
  verdicts (the solver's digests diverge inside the segments torch found wrong).
- `synthetic`: the same proof structure in miniature for big seed sweeps: the true state
  at (segment, position) is a hash, a cheat corrupts every segment from a first bad one
  (where each attack of the catalog shows first), no torch at all.

Results are memoised per (task, segment): every node that re-checks the same segment
gets the same answer, which is what determinism of the profile means.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from netsim.compute import flops_to_ms
from protocol.commands import RunCompute
from protocol.encoding import sha256
from protocol.errors import PolnetError
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

#: Synthetic model: first corrupted segment as a fraction of the run, per attack.
SYNTHETIC_ATTACKS: dict[str, float] = {
    "skipped_steps": 0.0,
    "data_order": 0.0,
    "copied_checkpoints": 0.0,
    "interpolated": 0.1,
    "truncated": 0.5,
    "noisy_weights": 0.95,
    "bisect_silent": 0.0,
    "bisect_inconsistent": 0.0,
}
#: Attacks on the bisection itself: the solver trains like `skipped_steps`, then plays badly.
BISECTION_ATTACKS = ("bisect_silent", "bisect_inconsistent")


@dataclass
class TorchTask:
    """What a submitter ships with a torch task: the spec and its dataset (by hash)."""

    spec: Any  # protocol.pol.spec.TaskSpec
    data: Any  # node.compute.datasets.Dataset
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
        self._arb: dict[tuple[bytes, int], bool] = {}

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
        if self.mode != "torch":
            bad = self._first_bad(task)
            return MarketTrainResult(tid, sha256(tid + bytes([bad is not None])), task.n_segments + 1)
        from node.compute import attacks
        from node.compute.trainer import accuracy

        tt = self.torch_tasks[task.spec_hash]
        name = self._attack(task)
        if name in BISECTION_ATTACKS:
            name = "skipped_steps"
        build = next((a.build for a in attacks.CATALOG if a.name == name), attacks.honest)
        run = build(tt.spec, tt.data, 1)
        self._runs[tid] = run
        self.stats.accuracy[tid] = accuracy(tt.spec, tt.data, run.state_at(tt.spec.steps))
        return MarketTrainResult(tid, run.root(), tt.spec.num_checkpoints)

    def _first_bad(self, task: Task) -> int | None:
        name = self._attack(task)
        return None if name is None else int(SYNTHETIC_ATTACKS[name] * task.n_segments)

    def _segment_ok(self, task: Task, segment: int) -> tuple[bool, int]:
        key = (task.task_id, segment)
        if key not in self._seg_ok:
            self._seg_ok[key] = self._check(task, segment)
        return self._seg_ok[key]

    def _check(self, task: Task, segment: int) -> tuple[bool, int]:
        if self.mode != "torch":
            bad = self._first_bad(task)
            ok = bad is None or segment < bad
            return ok, 0 if ok else 100_000
        from node.compute.verify import initial_matches, verify_segment

        tt, run = self.torch_tasks[task.spec_hash], self._runs.get(task.task_id)
        if run is None:  # nothing was committed by this shell: nothing to re-execute against
            return False, 1_000_000
        k = tt.spec.checkpoint_interval
        if not initial_matches(tt.spec, run.state_at(0)):
            return False, 1_000_000
        res, _ = verify_segment(tt.spec, tt.data, segment, run.state_at(segment * k),
                                run.state_at((segment + 1) * k), (task.threshold_ppm or 0) / 1e6, threads=1)
        return bool(res.passed), min(1_000_000, int(res.distance * 1e6))

    # --- the dispute ----------------------------------------------------------------------------

    def _true_hash(self, tid: bytes, segment: int, pos: int) -> bytes:
        return sha256(tid + segment.to_bytes(4, "big") + pos.to_bytes(8, "big"))

    def _state_hash(self, me: bytes, task: Task, job: StateHashJob) -> StateHashResult | None:
        name = self._attack(task) if me == task.solver else None
        if name == "bisect_silent":
            return None
        digest = self._true_hash(task.task_id, job.segment, job.position)
        if name == "bisect_inconsistent":
            digest = sha256(self.rng.randbytes(32))
        elif me == task.solver and job.position >= 1 and not self._segment_ok(task, job.segment)[0]:
            digest = sha256(b"forged" + digest)
        return StateHashResult(task.task_id, job.position, digest)

    def _arbitrate(self, task: Task, job: ArbitrationJob) -> bool:
        key = (task.task_id, job.segment)
        if key not in self._arb:
            self._arb[key] = self._referee(task, job)
        return self._arb[key]

    def _referee(self, task: Task, job: ArbitrationJob) -> bool:
        if self._segment_ok(task, job.segment)[0]:
            return True  # the solver's segment re-executes: nothing to pinpoint, it is right
        if self.mode == "torch" and task.task_id in self._runs:
            from node.compute.dispute import challenger_run, dispute_segment
            from protocol.pol.pinpoint import Outcome
            from protocol.pol.sampling import op_tolerance

            tt, run = self.torch_tasks[task.spec_hash], self._runs[task.task_id]
            honest = challenger_run(tt.spec, tt.data, run, job.segment, threads=1)
            tolerance = op_tolerance((task.threshold_ppm or 0) / 1e6)
            try:
                report = dispute_segment(tt.spec, tt.data, run, honest, job.segment, tolerance)
            except PolnetError:  # nothing to pinpoint inside the segment (e.g. a forged start)
                return False
            if report.outcome != Outcome.BOTH_WRONG:
                return bool(report.outcome == Outcome.DEFENDER_WINS)
        truth = self._true_hash(task.task_id, job.segment, job.position + 1)
        return job.defender_output == truth
