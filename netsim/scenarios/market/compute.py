"""How the market scenario answers the roles' RunCompute: real torch, or the synthetic trainer.

netsim charges virtual time from FLOPS; this executor decides what a job *returns*,
through one engine per node that implements the compute contract of
`protocol.market.jobs` (tests/test_compute_contract.py runs the same suite on both):

- `torch`: node/compute's `TorchMarketCompute`, exactly what a daemon runs, over an
  in-memory blob store the simulated nodes share (the submitters' specs and datasets,
  every proof the solvers publish, the op inputs a defender reveals). Tasks are tiny
  MLPs on the synthetic dataset or scikit-learn digits.
- `synthetic`: `SyntheticMarketCompute` below, over protocol/pol's `SyntheticRun` (a
  hash-chain trainer with exactly the op dataflow of real training, where a "tensor" is
  its digest) for big seed sweeps, no torch at all. The catalog's cheats become pol's
  `Cheat`s; verification re-executes the segment from the committed checkpoint; the
  game's digests are the runs' real state hashes and op-chain values; validators
  re-execute the one disputed op with the synthetic op semantics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from netsim.compute import flops_to_ms
from protocol.commands import RunCompute
from protocol.encoding import sha256
from protocol.market.game import next_digest
from protocol.market.jobs import (
    ArbitrationJob,
    ArbitrationResult,
    AvailabilityJob,
    CrewCheckJob,
    CrewCheckResult,
    CrewTrainJob,
    CrewTrainResult,
    MarketTrainJob,
    MarketTrainResult,
    MarketWork,
    ProfileJob,
    ProfileResult,
    RevealJob,
    RevealResult,
    SegmentCheckJob,
    SegmentCheckResult,
    StateHashJob,
    StateHashResult,
    TaskFacts,
    check_content_key,
)
from protocol.pol.merkle import leaf_hash
from protocol.pol.ops import START, chain_values, state_slots_per_param, step_ops
from protocol.pol.oracle import state_hash_of
from protocol.pol.spec import TaskSpec, param_shapes
from protocol.pol.synthetic import Cheat, SyntheticRun, execute_op

PPM = 1_000_000


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
    """What a submitter ships with a task: the spec and its dataset (None for the
    synthetic trainer, which needs no data)."""

    spec: Any  # protocol.pol.spec.TaskSpec
    data: Any  # node.compute.datasets.Dataset | None
    dataset_name: str
    #: A private task's content key: its dataset is published sealed under it.
    content_key: bytes | None = None


@dataclass
class SyntheticNetwork:
    """What the synthetic nodes share: the specs, and every published proof by root (a
    synthetic proof's checkpoints are the run's state digests at its boundaries)."""

    specs: dict[bytes, TaskSpec]
    proofs: dict[bytes, SyntheticRun] = field(default_factory=dict)


class SyntheticMarketCompute:
    """The compute contract over protocol/pol's synthetic trainer (one node's view)."""

    def __init__(self, me: bytes, network: SyntheticNetwork, cheat: str | None = None) -> None:
        self.me, self.network, self.cheat = me, network, cheat
        self._own: dict[bytes, SyntheticRun] = {}
        self._honest: dict[tuple[bytes, int], SyntheticRun] = {}
        self._seg: dict[tuple[bytes, bytes, int], tuple[bool, int, bool]] = {}

    def run(self, task: TaskFacts, job: Any) -> Any:
        check_content_key(task)  # a private task's job runs only with its committed key
        spec = self.network.specs.get(task.spec_hash)
        if spec is None:
            return None
        if isinstance(job, MarketTrainJob):
            return self._train(task, spec)
        if isinstance(job, ProfileJob):
            return ProfileResult(task.task_id, 0, True)
        if isinstance(job, SegmentCheckJob):
            ok, dist, available = self._check(task, spec, job.proof_root, job.segment)
            return SegmentCheckResult(task.task_id, job.segment, ok, dist, available)
        if isinstance(job, AvailabilityJob):
            served = job.proof_root in self.network.proofs
            return ArbitrationResult(task.task_id, served, "AVAILABILITY", job.segment, 0, 0.0,
                                     "" if served else "not served")
        if isinstance(job, StateHashJob):
            return self._state_hash(task, spec, job)
        if isinstance(job, RevealJob):
            return self._reveal(task, spec, job)
        if isinstance(job, ArbitrationJob):
            return self._arbitrate(task, spec, job)
        return None

    def _train(self, task: TaskFacts, spec: TaskSpec) -> MarketTrainResult:
        claimed, cheat = SYNTHETIC_ATTACKS[self.cheat](spec) if self.cheat else (spec, None)
        run = SyntheticRun(claimed, cheat)
        leaves, root = run.train()
        self._own[task.task_id] = run
        self.network.proofs[root] = run  # published: anyone may read its checkpoints
        return MarketTrainResult(task.task_id, root, len(leaves), tuple(leaves))

    def _committed(self, root: bytes | None, step: int) -> Any:
        run = self.network.proofs.get(root or b"")
        return None if run is None else run.state_digests(step)

    def _check(self, task: TaskFacts, spec: TaskSpec, root: bytes, segment: int) -> tuple[bool, int, bool]:
        key = (task.task_id, root, segment)
        if key not in self._seg:
            self._seg[key] = self._recheck(spec, root, segment)
        return self._seg[key]

    def _recheck(self, spec: TaskSpec, root: bytes, segment: int) -> tuple[bool, int, bool]:
        proof = self.network.proofs.get(root)
        if proof is None:  # nothing was published under this root: nobody serves it
            return False, PPM, False
        if SyntheticRun(spec).state_digests(0) != proof.state_digests(0):
            return False, PPM, True  # not the spec's seeded initial weights (a copied run)
        k = spec.checkpoint_interval
        honest = SyntheticRun(spec)
        honest.seed_state(segment * k, proof.state_digests(segment * k))
        end = (segment + 1) * k
        ok = leaf_hash(honest.leaf(end)) == leaf_hash(proof.leaf(end))
        return ok, 0 if ok else PPM, True

    def _source(self, task: TaskFacts, spec: TaskSpec, segment: int, defender: bool) -> SyntheticRun | None:
        if defender:
            return self._own.get(task.task_id) or self.network.proofs.get(task.proof_root or b"")
        key = (task.task_id, segment)
        if key not in self._honest:
            start = self._committed(task.proof_root, segment * spec.checkpoint_interval)
            if start is None:
                return None
            honest = SyntheticRun(spec)
            honest.seed_state(segment * spec.checkpoint_interval, start)
            self._honest[key] = honest
        return self._honest[key]

    def _state_hash(self, task: TaskFacts, spec: TaskSpec, job: StateHashJob) -> StateHashResult | None:
        if job.defender and (task.solver != self.me or self.cheat == "bisect_silent"):
            return None
        if job.defender and self.cheat == "bisect_inconsistent":
            noise = sha256(b"inconsistent" + self.me + task.task_id + job.position.to_bytes(8, "big"))
            return StateHashResult(task.task_id, job.position, noise)
        src = self._source(task, spec, job.segment, job.defender)
        if src is None:
            return None
        step, j = divmod(job.position, task.ops_per_step)
        t = job.segment * task.checkpoint_interval + step
        start = state_hash_of(src.state_digests(t))
        digest = start if j == 0 else chain_values(start, src.step_trace(t)[:j])[j - 1]
        return StateHashResult(task.task_id, job.position, digest)

    def _reveal(self, task: TaskFacts, spec: TaskSpec, job: RevealJob) -> RevealResult | None:
        if task.solver != self.me or self.cheat == "bisect_silent":
            return None
        src = self._source(task, spec, job.segment, True)
        if src is None:
            return None
        step, j = divmod(job.position, task.ops_per_step)
        t = job.segment * task.checkpoint_interval + step
        weights, optimizer = src.state_digests(t)
        trace = src.step_trace(t)
        return RevealResult(task.task_id, job.position, weights, optimizer, tuple(trace[:j]), trace[j])

    def _arbitrate(self, task: TaskFacts, spec: TaskSpec, job: ArbitrationJob) -> ArbitrationResult:
        ops = step_ops(spec)
        step, j = divmod(job.position, task.ops_per_step)
        op = ops[j]
        name = f"{op.kind.name}[{op.index}]"
        n = len(param_shapes(spec))
        outs_ok = all(len(o) == ops[q].n_outputs for q, o in enumerate(job.prefix))
        shaped = (len(job.weights) == n and len(job.optimizer) == n * state_slots_per_param(spec)
                  and len(job.prefix) == j and outs_ok)
        if not shaped:
            return ArbitrationResult(task.task_id, False, name, j, 0, 0.0, "malformed reveal")
        if self._committed(task.proof_root, 0) != SyntheticRun(spec).state_digests(0):
            return ArbitrationResult(task.task_id, False, name, j, 0, 0.0, "checkpoint 0 is not the spec's")
        state = (*job.weights, *job.optimizer)
        ins = tuple(state[r.slot] if r.op == START else job.prefix[r.op][r.slot] for r in op.inputs)
        outputs = execute_op(spec, op, job.segment * task.checkpoint_interval + step, ins)
        got = next_digest(task.ops_per_step, j, job.weights, job.optimizer, job.prefix, outputs)
        right = got == job.defender_next
        why = "" if right else "re-execution differs"
        return ArbitrationResult(task.task_id, right, name, j, 0, 0.0, why)


class SharedBlobs:
    """The blob store netsim's torch nodes share (`node.compute.market_engine.Blobs`),
    and the `SealingStore` of node/compute/sealedblobs.py for private tasks: a sealed
    blob is kept by its own hash like any other, and found through `aliases` (locator
    -> that hash), as a daemon's blob directory does."""

    def __init__(self) -> None:
        self.blobs: dict[bytes, bytes] = {}
        self.aliases: dict[bytes, bytes] = {}

    def get(self, digest: bytes, max_size: int) -> bytes:
        from protocol.errors import BlobError, BlobUnavailable

        data = self.blobs.get(digest)
        if data is None:
            raise BlobUnavailable(f"blob {digest.hex()[:16]} not published by anyone")
        if len(data) > max_size:
            raise BlobError(f"blob {digest.hex()[:16]} larger than {max_size}")
        return data

    def put(self, data: bytes) -> bytes:
        digest = sha256(data)
        self.blobs[digest] = data
        return digest

    def prefetch(self, wanted: list[tuple[bytes, int]]) -> None:
        return None

    def put_sealed(self, locator: bytes, sealed: bytes) -> bytes:
        sid = self.put(sealed)
        self.aliases[locator] = sid
        return sid

    def get_sealed(self, locator: bytes, max_size: int, check: Callable[[bytes], bool]) -> bytes:
        from protocol.errors import BlobError, BlobUnavailable

        sid = self.aliases.get(locator)
        data = self.blobs.get(sid) if sid is not None else None
        if data is None:
            raise BlobUnavailable(f"sealed blob {locator.hex()[:16]} not published by anyone")
        if len(data) > max_size:
            raise BlobError(f"sealed blob {locator.hex()[:16]} larger than {max_size}")
        if not check(data):
            raise BlobUnavailable(f"sealed blob {locator.hex()[:16]} fails its check")
        return data

    def prefetch_sealed(self, wanted: list[tuple[bytes, int, Callable[[bytes], bool]]]) -> None:
        return None


@dataclass
class ComputeStats:
    solver_flops: int = 0
    verify_flops: int = 0  # verifiers, whistleblowers, profilers (re-execution)
    dispute_flops: int = 0  # bisection state hashes, reveals and arbitration
    accuracy: dict[bytes, float] = field(default_factory=dict)  # task id -> trained accuracy
    #: Crew tasks, measured rather than declared: member-steps the members trained, and
    #: member-steps re-executed by crew checks, by who asked (verify: verifiers'
    #: commits and rechecks; check: whistleblowers; crewgame: validators in games).
    crew_trained_steps: int = 0
    crew_checked_steps: dict[str, int] = field(default_factory=dict)
    crew_train_s: float = 0.0
    crew_check_s: dict[str, float] = field(default_factory=dict)


class MarketCompute:
    """netsim `Executor` for market jobs: one contract engine per node. `sim` is set by
    the scenario's setup hook."""

    def __init__(
        self, attack_of: dict[bytes, str], mode: str, torch_tasks: dict[bytes, TorchTask], seed: int,
        vanish_of: dict[bytes, int] | None = None,
    ) -> None:
        self.attack_of = attack_of  # solver (or crew member) pubkey -> attack name
        self.vanish_of = vanish_of or {}  # crew member pubkey -> steps after which it dies
        self.mode = mode
        self.torch_tasks = torch_tasks  # spec hash -> TorchTask
        self.seed = seed
        self.sim: Any = None
        self.stats = ComputeStats()
        self._engines: dict[bytes, Any] = {}
        self._synthetic = SyntheticNetwork({h: t.spec for h, t in torch_tasks.items()})
        self._blobs: SharedBlobs | None = None
        self._crews: dict[bytes, Any] = {}
        self._hub: Any = None

    def execute(self, node: int, cmd: RunCompute, node_flops: int) -> tuple[int, Any]:
        self._count(cmd)
        ms = flops_to_ms(cmd.flops, node_flops)
        work = cmd.job
        if not isinstance(work, MarketWork):
            return ms, None
        me = self.sim.keys[node].public
        crew = isinstance(work.job, CrewTrainJob | CrewCheckJob)
        engine = self.crew_engine(me) if crew else self.engine(node)  # the engine of node's own key
        started = time.perf_counter()
        result = engine.run(work.task, work.job)
        if crew:
            self._count_crew(cmd.job_id, work, result, time.perf_counter() - started)
        if isinstance(result, MarketTrainResult) and self.mode == "torch":
            trained = self.engine(node).trained.get(work.task.task_id)
            if trained is not None:
                self.stats.accuracy[work.task.task_id] = trained.accuracy
        return ms, result

    def engine(self, node: int) -> Any:
        return self.engine_of(self.sim.keys[node].public)

    def engine_of(self, me: bytes) -> Any:
        """The engine of the node with public key `me` (its cheat, if the layout gave one)."""
        if me not in self._engines:
            cheat = self.attack_of.get(me)
            if self.mode == "torch":
                from node.compute.market_engine import TorchMarketCompute

                self._engines[me] = TorchMarketCompute(me, self.shared_blobs(), cheat)
            else:
                self._engines[me] = SyntheticMarketCompute(me, self._synthetic, cheat)
        return self._engines[me]

    def crew_engine(self, me: bytes) -> Any:
        """The crew engine of node `me` (node/compute/crew/market.py), over the shared blobs
        and one local hub that runs each crew's members as processes on this box (a
        member named in `attack_of` trains with that cheat, one in `vanish_of` dies)."""
        if self._hub is None:
            import tempfile
            from pathlib import Path

            from node.compute.crew.market import LocalCrewHub

            self._workdir = tempfile.TemporaryDirectory(prefix="polnet-netsim-crews-")
            self._hub = LocalCrewHub(Path(self._workdir.name), cheats=self.attack_of, vanish=self.vanish_of)
        if me not in self._crews:
            from node.compute.crew.market import CrewMarketCompute

            self._crews[me] = CrewMarketCompute(me, self.shared_blobs(), self._hub)
        return self._crews[me]

    def solver_losses(self, task_id: bytes) -> dict[int, float]:
        """The per-step training loss of whichever node trained `task_id` (torch mode)."""
        for engine in self._engines.values():
            losses = getattr(engine, "losses", None)
            if losses is not None and (got := losses(task_id)):
                return dict(got)
        return {}

    def shared_blobs(self) -> SharedBlobs:
        """The submitters' specs and datasets are published before anyone asks."""
        if self._blobs is None:
            from protocol.records import encode_record

            self._blobs = SharedBlobs()
            for tt in self.torch_tasks.values():
                # A spec is public, private task or not (a crew's is its task file's bytes).
                self._blobs.put(tt.spec if isinstance(tt.spec, bytes) else encode_record(tt.spec))
                if tt.data is not None and tt.content_key is not None:
                    from node.compute.sealedblobs import SealedBlobs

                    SealedBlobs(self._blobs, tt.content_key).put(tt.data.blob)
                elif tt.data is not None:
                    self._blobs.put(tt.data.blob)
        return self._blobs

    def _count(self, cmd: RunCompute) -> None:
        job = cmd.job.job if isinstance(cmd.job, MarketWork) else cmd.job
        if isinstance(job, MarketTrainJob | CrewTrainJob):
            self.stats.solver_flops += cmd.flops
        elif isinstance(job, SegmentCheckJob | ProfileJob) or (isinstance(job, CrewCheckJob)
                                                               and self._verifying(cmd)):
            self.stats.verify_flops += cmd.flops
        else:
            self.stats.dispute_flops += cmd.flops

    def _count_crew(self, job_id: str, work: MarketWork, result: Any, seconds: float) -> None:
        """A crew job's measured work. Training: the hub runs the whole crew on its first
        member's job, so the crew's member-steps and wall time are counted once, there."""
        stats = self.stats
        if isinstance(result, CrewTrainResult) and not result.aborted:
            stats.crew_trained_steps += work.task.steps  # this member's steps
            stats.crew_train_s += seconds
        elif isinstance(result, CrewCheckResult):
            duty = job_id.split(":", 1)[0]
            stats.crew_checked_steps[duty] = stats.crew_checked_steps.get(duty, 0) + result.steps_executed
            stats.crew_check_s[duty] = stats.crew_check_s.get(duty, 0.0) + seconds

    @staticmethod
    def _verifying(cmd: RunCompute) -> bool:
        """A crew check is a verifier's or a game's (its job id starts with its duty)."""
        return not cmd.job_id.startswith("crewgame:")
