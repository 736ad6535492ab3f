"""The market's compute jobs done with torch: one implementation for every shell that trains.

The daemon runs it over its blob directory and the network (node/daemon/compute.py);
netsim's torch mode runs it over an in-memory blob store shared by the simulated nodes.
So the solver that commits a proof, the verifier that re-executes a segment, the
parties that bisect a dispute and the validators that re-execute the last operation
run the same code on both shells, and the contract in `protocol.market.jobs` holds for
both by construction (tests/test_compute_contract.py checks it on each).

What each job does:

- train: the solver trains (honestly, or with the attack of `cheat`), stores every
  checkpoint of its proof as blobs (node/compute/proofblobs.py) and returns the root
  and the leaves;
- segment check: a verifier walks the committed tree down to the segment's checkpoints,
  checks checkpoint 0 is the spec's seeded initialisation, re-executes the segment and
  measures the distance;
- state hash: a party's digest at a game position, from the real op trace of its own
  run (node/compute/trace.py): the defender's committed run, or the accuser's honest
  re-execution from the committed start checkpoint;
- reveal: the defender's digests behind the agreed position, after storing the
  disputed op's input tensors (and its claimed outputs) as blobs under their digests;
- arbitration: a validator fetches exactly the disputed op's inputs by digest (each
  hash-checked), re-executes that one op under the task's profile, and judges the
  defender's next digest; it reports the op, its FLOPs (counted by torch) and the time.

Attacks on the bisection itself are compute modes too: `bisect_silent` never answers a
game query, `bisect_inconsistent` answers with digests no run produced; both train like
`skipped_steps`.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch

from node.compute import attacks, datasets
from node.compute.checkpoints import load_base
from node.compute.datasets import AnyDataset
from node.compute.ops import execute
from node.compute.profiling import profile
from node.compute.proofblobs import fetch_state, leaf_at, publish_run, tensor_blob, tensor_by_digest
from node.compute.sealedblobs import SealedBlobs, SealingStore
from node.compute.tensors import TensorStore, digest
from node.compute.trace import TorchSource, rel_distance
from node.compute.trainer import Run, State, accuracy, apply_profile
from node.compute.verify import initial_matches, verify_segment
from protocol.encoding import sha256
from protocol.errors import BlobError, BlobUnavailable, PolnetError, SpecError
from protocol.market.game import next_digest
from protocol.market.jobs import (
    ArbitrationJob,
    ArbitrationResult,
    AvailabilityJob,
    MarketTrainJob,
    MarketTrainResult,
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
from protocol.market.state import NO_BASE
from protocol.pol.ops import START, OpDesc, OpKind, chain_values, group_hash, state_slots_per_param, step_ops
from protocol.pol.oracle import state_hash_of
from protocol.pol.spec import BaseKind, DeviceClass, TaskSpec, param_shapes, validate_spec
from protocol.records import decode_record

log = logging.getLogger("polnet.compute")

#: A task spec is a few hundred bytes; a dataset at most what the spec limits allow here.
MAX_SPEC_BLOB = 64 * 1024
MAX_DATASET_BLOB = 256 * 1024 * 1024
#: Specs, datasets, runs, traces and verdicts kept in memory (least recently used go).
CACHE_ITEMS = 16
PPM = 1_000_000
#: Attacks on the bisection (they train like `skipped_steps`, then play the game badly).
BISECTION_ATTACKS = ("bisect_silent", "bisect_inconsistent")


class Blobs(Protocol):
    """Content-addressed blobs as a shell provides them: ours first, then the network."""

    def get(self, digest: bytes, max_size: int) -> bytes: ...

    def put(self, data: bytes) -> bytes: ...

    def prefetch(self, wanted: list[tuple[bytes, int]]) -> None: ...


class Lru(OrderedDict[Any, Any]):
    def __init__(self, limit: int = CACHE_ITEMS) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: Any, value: Any) -> Any:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)
        return value


@dataclass(frozen=True)
class TrainedModel:
    """What a node knows about a task it trained (for status pages and reports)."""

    root: bytes
    accuracy: float
    attack: str | None


def attack_builder(name: str | None) -> Callable[..., Run]:
    """The catalog's training for `name` (bisection attacks train like skipped_steps)."""
    if name in BISECTION_ATTACKS:
        name = "skipped_steps"
    if name and not any(a.name == name for a in attacks.CATALOG):
        raise SpecError(f"unknown attack {name!r}")
    return next((a.build for a in attacks.CATALOG if a.name == name), attacks.honest)


class _JobBlobs(Protocol):
    store: Blobs
    blobs: Blobs


@contextmanager
def job_blobs(engine: _JobBlobs, task: TaskFacts) -> Iterator[None]:
    """An engine's `blobs` for one job (its `store` is the shell's): a private task's job
    sees them through `SealedBlobs` (sealed on put, opened on get), so nothing of it is
    stored or fetched in the clear; without the committed key the job does not run at
    all (`check_content_key` raises KeyWrapError). Every engine of both shells uses it."""
    key = check_content_key(task)
    engine.blobs = engine.store if key is None else SealedBlobs(cast(SealingStore, engine.store), key)
    try:
        yield
    finally:
        engine.blobs = engine.store


class TorchMarketCompute:
    """One node's market compute. `run(task, job)` answers one job for `task` (the facts
    of the committed task the job names, frozen when the role asked)."""

    def __init__(self, me: bytes, blobs: Blobs, cheat: str | None = None,
                 progress: Callable[[str, int, int], None] | None = None) -> None:
        attack_builder(cheat)  # an unknown attack is a config error now, not at the first task
        self.me = me
        self.store = blobs  # the shell's blobs; `blobs` is what the current job sees
        self.blobs = blobs
        self.cheat = cheat or None
        self.progress = progress
        self._specs = Lru()
        self._data = Lru()
        self._seg = Lru(4 * CACHE_ITEMS)
        self._runs = Lru()  # (task id, "defender" | segment) -> Run
        self._sources = Lru()  # same keys -> TorchSource (its tensors, by digest)
        self._digests = Lru(1024)
        self.trained: dict[bytes, TrainedModel] = {}

    def run(self, task: TaskFacts, job: Any) -> Any:
        with self._blobs_of(task):
            return self._run(task, job)

    def _blobs_of(self, task: TaskFacts) -> AbstractContextManager[None]:
        return job_blobs(self, task)

    def _run(self, task: TaskFacts, job: Any) -> Any:
        if isinstance(job, MarketTrainJob):
            return self._train(task, job)
        if isinstance(job, ProfileJob):
            return self._profile(job)
        if isinstance(job, SegmentCheckJob):
            ok, dist, available = self.segment_ok(task, job.proof_root, job.segment, job.threshold_ppm)
            return SegmentCheckResult(task.task_id, job.segment, ok, dist, available)
        if isinstance(job, AvailabilityJob):
            return self._available(task, job)
        if isinstance(job, StateHashJob):
            return self._state_hash(task, job)
        if isinstance(job, RevealJob):
            return self._reveal(task, job)
        if isinstance(job, ArbitrationJob):
            return self._arbitrate(task, job)
        raise PolnetError(f"unknown compute job {type(job).__name__}")

    # --- inputs ----------------------------------------------------------------------------

    def spec(self, spec_hash: bytes) -> TaskSpec:
        if spec_hash not in self._specs:
            try:
                spec = decode_record(TaskSpec, self.store.get(spec_hash, MAX_SPEC_BLOB))  # public
            except PolnetError as exc:
                raise SpecError(f"task spec {spec_hash.hex()[:16]}: {exc}") from None
            validate_spec(spec)
            self._specs.put(spec_hash, spec)
        return self._specs[spec_hash]  # type: ignore[no-any-return]

    def dataset(self, spec: TaskSpec) -> AnyDataset:
        key = (spec.dataset_hash, tuple(spec.input_shape), spec.dataset_size)
        if key not in self._data:
            blob = self.blobs.get(spec.dataset_hash, MAX_DATASET_BLOB)
            self._data.put(key, datasets.load_for(spec, blob))
        return self._data[key]  # type: ignore[no-any-return]

    def base(self, task: TaskFacts, spec: TaskSpec) -> State | None:
        """A fine-tune's checkpoint 0: its base blob, fetched and checked by hash (None for
        a task from scratch). A proven base must be the one the ledger accepted."""
        if spec.base is None:
            return None
        if not base_is_the_accepted_proof(task, spec):
            raise SpecError("the spec's base is not the accepted proof the task names")
        return load_base(spec, self.blobs.get(spec.base.blob_hash, MAX_DATASET_BLOB))

    def _committed(self, spec: TaskSpec, root: bytes, index: int) -> State:
        leaf = leaf_at(self.blobs.get, root, spec.num_checkpoints, index)
        return fetch_state(self.blobs.get, spec, leaf, self.blobs.prefetch)

    # --- train, profile, verify -------------------------------------------------------------------

    def _train(self, task: TaskFacts, job: MarketTrainJob) -> MarketTrainResult:
        spec = self.spec(job.spec_hash)
        data = self.dataset(spec)
        if self.progress is not None:
            self.progress(task.task_id.hex(), 0, spec.steps)
        start = self.base(task, spec)
        if self.cheat is None:  # attacks.honest's training, one checkpoint at a time
            run = Run(spec, data, states={0: start} if start is not None else {})
            for step in range(spec.checkpoint_interval, spec.steps + 1, spec.checkpoint_interval):
                run.states[step] = run.state_at(step)
                if self.progress is not None:
                    self.progress(task.task_id.hex(), step, spec.steps)
        else:
            run = attack_builder(self.cheat)(spec, data, 1, start=start)
        root = publish_run(self.blobs.put, run)
        self._runs.put((task.task_id, "defender"), run)
        final = run.state_at(spec.steps)
        self.trained[task.task_id] = TrainedModel(root, accuracy(spec, data, final), self.cheat)
        leaves = tuple(run.leaves())
        return MarketTrainResult(task.task_id, root, len(leaves), leaves)

    def _profile(self, job: ProfileJob) -> ProfileResult:
        try:
            spec = self.spec(job.spec_hash)
            data = self.dataset(spec)
        except PolnetError:
            return ProfileResult(job.task_id, 0, False)
        if spec.profile.deterministic and spec.profile.device is DeviceClass.CPU:
            return ProfileResult(job.task_id, 0, True)  # bit-reproducible: any difference is a cheat
        res = profile(spec, data, spec.checkpoint_interval, (1, 2))
        return ProfileResult(job.task_id, min(PPM, int(res.threshold * PPM)), True)

    def segment_ok(self, task: TaskFacts, root: bytes, segment: int,
                   threshold_ppm: int) -> tuple[bool, int, bool]:
        """Re-execute one committed segment: (passed, distance, available). A segment no
        peer serves is reported unavailable (never as a finding); one that comes back and
        does not match its leaves fails."""
        key = (task.task_id, root, segment)
        if key not in self._seg:
            result = self._check(task, root, segment, threshold_ppm)
            if not result[2]:
                return result  # not cached: the next ask may reach a peer that serves it
            self._seg.put(key, result)
        return self._seg[key]  # type: ignore[no-any-return]

    def _available(self, task: TaskFacts, job: AvailabilityJob) -> ArbitrationResult:
        """Fetch the segment's two committed checkpoints, every tensor checked by digest."""
        t0 = time.perf_counter()
        try:
            spec = self.spec(task.spec_hash)
            for i in (job.segment, job.segment + 1):
                self._committed(spec, job.proof_root, i)
        except PolnetError as exc:
            return _vote(task, False, "AVAILABILITY", job.segment, 0, 0.0, t0, f"not served: {exc}")
        return _vote(task, True, "AVAILABILITY", job.segment, 0, 0.0, t0, "")

    def _check(self, task: TaskFacts, root: bytes, segment: int,
               threshold_ppm: int) -> tuple[bool, int, bool]:
        try:
            spec = self.spec(task.spec_hash)
            data = self.dataset(spec)
            n, k = spec.num_checkpoints, spec.checkpoint_interval
            leaves = [leaf_at(self.blobs.get, root, n, i) for i in (0, segment, segment + 1)]
            if any(lf.step != i * k or lf.data_order_seed != spec.data_seed
                   for lf, i in zip(leaves, (0, segment, segment + 1), strict=True)):
                return False, PPM, True
            state0 = fetch_state(self.blobs.get, spec, leaves[0], self.blobs.prefetch)
            if not base_is_the_accepted_proof(task, spec) or not initial_matches(spec, state0):
                return False, PPM, True
            start, end = (fetch_state(self.blobs.get, spec, lf, self.blobs.prefetch) for lf in leaves[1:])
        except BlobUnavailable as exc:
            log.warning("segment unavailable", extra={"task": task.task_id.hex()[:16], "error": str(exc)})
            return False, PPM, False
        except PolnetError as exc:
            log.warning("segment does not match its proof", extra={"task": task.task_id.hex()[:16],
                                                                    "error": str(exc)})
            return False, PPM, True
        res, _ = verify_segment(spec, data, segment, start, end, threshold_ppm / PPM)
        return bool(res.passed), min(PPM, int(res.distance * PPM)), True

    # --- the game: each party's run, its digests, the reveal ---------------------------------------

    def _claimed_run(self, task: TaskFacts, spec: TaskSpec, segment: int) -> Run:
        """The run this solver committed: kept since training, or rebuilt after a restart
        from its own checkpoint blobs (the proof it committed, whatever it did)."""
        key = (task.task_id, "defender")
        assert task.proof_root is not None
        k = spec.checkpoint_interval
        run: Run | None = self._runs.get(key)
        if run is None:
            start = {0: self._committed(spec, task.proof_root, 0)}
            run = self._runs.put(key, Run(spec, self.dataset(spec), states=start))
        for i in (segment, segment + 1):
            if i * k not in run.states:
                run.states[i * k] = self._committed(spec, task.proof_root, i)
        return run

    def _honest_run(self, task: TaskFacts, spec: TaskSpec, segment: int) -> Run:
        """An honest re-execution of `segment` from the solver's committed start checkpoint."""
        key = (task.task_id, segment)
        if key not in self._runs:
            assert task.proof_root is not None
            start = self._committed(spec, task.proof_root, segment)
            k = spec.checkpoint_interval
            self._runs.put(key, Run(spec, self.dataset(spec), states={segment * k: start}))
        return self._runs[key]  # type: ignore[no-any-return]

    def _source(self, task: TaskFacts, spec: TaskSpec, segment: int, defender: bool) -> TorchSource:
        key = (task.task_id, "defender") if defender else (task.task_id, segment)
        if key not in self._sources:
            pick = self._claimed_run if defender else self._honest_run
            run = pick(task, spec, segment)
            self._sources.put(key, TorchSource(run, TensorStore()))
        return self._sources[key]  # type: ignore[no-any-return]

    def _digest(self, task: TaskFacts, src: TorchSource, segment: int, position: int, side: bool) -> bytes:
        key = (task.task_id, side, segment, position)
        if key not in self._digests:
            step, j = divmod(position, task.ops_per_step)
            t = segment * task.checkpoint_interval + step
            start = state_hash_of(src.state_digests(t))
            value = start if j == 0 else chain_values(start, src.step_trace(t)[:j])[j - 1]
            self._digests.put(key, value)
        return self._digests[key]  # type: ignore[no-any-return]

    def _state_hash(self, task: TaskFacts, job: StateHashJob) -> StateHashResult | None:
        if job.defender and (task.solver != self.me or task.proof_root is None):
            return None  # only the solver holds the run it committed
        if job.defender and self.cheat == "bisect_silent":
            return None
        if job.defender and self.cheat == "bisect_inconsistent":
            noise = sha256(b"inconsistent" + self.me + task.task_id + job.position.to_bytes(8, "big"))
            return StateHashResult(task.task_id, job.position, noise)
        spec = self.spec(task.spec_hash)
        src = self._source(task, spec, job.segment, job.defender)
        return StateHashResult(task.task_id, job.position,
                               self._digest(task, src, job.segment, job.position, job.defender))

    def _reveal(self, task: TaskFacts, job: RevealJob) -> RevealResult | None:
        if task.solver != self.me or task.proof_root is None or self.cheat == "bisect_silent":
            return None
        spec = self.spec(task.spec_hash)
        src = self._source(task, spec, job.segment, True)
        step, j = divmod(job.position, task.ops_per_step)
        t = job.segment * task.checkpoint_interval + step
        weights, optimizer = src.state_digests(t)
        trace = src.step_trace(t)
        op = step_ops(spec)[j]
        # The inputs (and, for tolerance checks, the claimed outputs) go to the blob store
        # before the reveal is published: a validator must be able to fetch them by digest.
        state = (*weights, *optimizer)
        needed = [state[r.slot] if r.op == START else trace[r.op][r.slot] for r in op.inputs]
        if op.kind is not OpKind.STATE:
            needed += list(trace[j])
        for d in needed:
            self.blobs.put(tensor_blob(src.store.get(d)))
        return RevealResult(task.task_id, job.position, weights, optimizer, tuple(trace[:j]), trace[j])

    # --- arbitration: one operation ------------------------------------------------------------------

    def _arbitrate(self, task: TaskFacts, job: ArbitrationJob) -> ArbitrationResult:
        t0 = time.perf_counter()
        spec = self.spec(task.spec_hash)
        ops = step_ops(spec)
        step, j = divmod(job.position, task.ops_per_step)
        if len(ops) != task.ops_per_step:
            return _vote(task, True, "?", j, 0, 0.0, t0, "the task declares another op count than its spec")
        op = ops[j]
        name = f"{op.kind.name}[{op.index}]"
        malformed = _malformed(spec, ops, j, job)
        if malformed:
            return _vote(task, False, name, j, 0, 0.0, t0, malformed)
        if not self._initial_ok(task, spec):
            # Every step can re-execute and the run still be another task's (a copied run):
            # checkpoint 0 must be the spec's seeded initialisation, which anyone can check.
            return _vote(task, False, name, j, 0, 0.0, t0, "checkpoint 0 is not the spec's initialisation")
        state = (*job.weights, *job.optimizer)
        in_digests = [state[r.slot] if r.op == START else job.prefix[r.op][r.slot] for r in op.inputs]
        t = job.segment * task.checkpoint_interval + step
        computed: tuple[torch.Tensor, ...] = ()
        flops, run_s = 0, 0.0
        if op.kind is OpKind.STATE:
            n = len(param_shapes(spec))
            outputs: tuple[bytes, ...] = (group_hash(in_digests[:n]), group_hash(in_digests[n:]))
        else:
            try:
                inputs = [tensor_by_digest(self.blobs.get, d) for d in in_digests]
                data = self.dataset(spec) if op.kind is OpKind.BATCH else None
            except PolnetError as exc:
                # Serving the op's inputs is the defender's duty (its reveal named them).
                return _vote(task, False, name, j, 0, 0.0, t0, f"inputs unavailable: {exc}")
            computed, flops, run_s = _execute_counted(spec, data, op, t, inputs)
            outputs = tuple(digest(o) for o in computed)
        right = self._judge(task, job, j, outputs, computed)
        why = "" if right else "re-execution differs from the claim"
        return _vote(task, right, name, j, flops, run_s, t0, why)

    def _initial_ok(self, task: TaskFacts, spec: TaskSpec) -> bool:
        key = (task.task_id, "initial")
        if key not in self._seg:
            try:
                root = task.proof_root
                ok = root is not None and base_is_the_accepted_proof(task, spec) and \
                    initial_matches(spec, self._committed(spec, root, 0))
            except PolnetError:
                ok = False
            self._seg.put(key, ok)
        return bool(self._seg[key])

    def _judge(self, task: TaskFacts, job: ArbitrationJob, j: int, outputs: tuple[bytes, ...],
               computed: Sequence[torch.Tensor]) -> bool:
        ops = task.ops_per_step
        if next_digest(ops, j, job.weights, job.optimizer, job.prefix, outputs) == job.defender_next:
            return True
        if job.threshold_ppm == 0 or not computed:
            return False
        # A thresholded profile: the claimed outputs must chain to the defender's digest and
        # each lie within the task's relative distance of the re-executed value.
        if next_digest(ops, j, job.weights, job.optimizer, job.prefix, job.claimed) != job.defender_next:
            return False
        try:
            claimed = [tensor_by_digest(self.blobs.get, d) for d in job.claimed]
        except PolnetError:
            return False
        tol = job.threshold_ppm / PPM
        return all(rel_distance(c, r) <= tol for c, r in zip(claimed, computed, strict=True))

    # --- results for submitters ------------------------------------------------------------------

    def committed_state(self, task: TaskFacts, index: int) -> State:
        """Checkpoint `index` of the task's committed proof, every tensor checked."""
        if task.proof_root is None:
            raise BlobError("the task has no committed proof")
        with self._blobs_of(task):
            return self._committed(self.spec(task.spec_hash), task.proof_root, index)

    def losses(self, task_id: bytes) -> dict[int, float]:
        """The training loss of every step this node trained for `task_id` (empty if it did not)."""
        run: Run | None = self._runs.get((task_id, "defender"))
        return dict(run.losses) if run is not None else {}

    def final_weights(self, task: TaskFacts) -> tuple[bytes, float]:
        """The trained weights of a settled task as a safetensors blob (stored here), and
        their accuracy on the task's dataset; every tensor is checked against the root."""
        from node.compute.checkpoints import encode_checkpoint

        if task.proof_root is None:
            raise BlobError("the task has no committed proof")
        with self._blobs_of(task):  # a private task's weights are stored sealed too
            spec = self.spec(task.spec_hash)
            data = self.dataset(spec)
            state = self._committed(spec, task.proof_root, spec.num_checkpoints - 1)
            blob = encode_checkpoint(type(state)(state.params, []))
            return self.blobs.put(blob), accuracy(spec, data, state)


def base_is_the_accepted_proof(task: TaskFacts, spec: TaskSpec) -> bool:
    """A spec that fine-tunes a proven base names the proof the ledger accepted for this
    task (its root, and a final leaf at that proof's last step and index); a spec with an
    uploaded base, or none, names no proof and the task must name none either."""
    base = spec.base
    if base is None or base.kind is not BaseKind.PROVEN:
        return task.base_root == NO_BASE
    leaf, proof = base.final_leaf, base.proof
    return (base.proof_root == task.base_root and leaf is not None and proof is not None
            and proof.size == task.base_checkpoints and leaf.step == task.base_steps)


def _malformed(spec: TaskSpec, ops: list[OpDesc], j: int, job: ArbitrationJob) -> str:
    """Why a reveal cannot be the digests of this spec's step (empty: it can)."""
    n = len(param_shapes(spec))
    if len(job.weights) != n or len(job.optimizer) != n * state_slots_per_param(spec):
        return "the revealed state does not have the spec's tensors"
    if len(job.prefix) != j or any(len(o) != ops[q].n_outputs for q, o in enumerate(job.prefix)):
        return "the revealed op outputs do not have the spec's shape"
    if len(job.claimed) != ops[j].n_outputs:
        return "the claimed outputs are not the op's"
    return ""


def _execute_counted(spec: TaskSpec, data: AnyDataset | None, op: OpDesc, step: int,
                     inputs: list[torch.Tensor]) -> tuple[tuple[torch.Tensor, ...], int, float]:
    """Run one op under the task's profile: its outputs, its FLOPs (torch's own counter, on
    a second, untimed run: the counter's dispatch hooks would dominate a small op) and the
    seconds the plain run took."""
    from torch.utils.flop_counter import FlopCounterMode

    apply_profile(spec)
    t0 = time.perf_counter()
    outs = execute(spec, data, op, step, inputs)
    seconds = time.perf_counter() - t0
    counter = FlopCounterMode(display=False)
    with counter:
        execute(spec, data, op, step, inputs)
    return outs, int(counter.get_total_flops()), seconds


def _vote(task: TaskFacts, right: bool, op: str, j: int, flops: int, run_s: float, t0: float,
          reason: str) -> ArbitrationResult:
    """The result: `run_s` re-executing the op, the rest of the time since `t0` fetching."""
    return ArbitrationResult(task.task_id, right, op, j, flops, run_s, reason,
                             max(0.0, time.perf_counter() - t0 - run_s))
