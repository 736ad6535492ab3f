"""The daemon's compute runner: the market roles' jobs done for real, with torch.

The driver calls it in a trio worker thread with one `protocol.market.jobs` job; it
fetches what the job names by content hash (the task spec, the dataset, the solver's
checkpoints walked down from the committed Merkle root, see proofblobs.py), does the
tensor work with node/compute under the task's reproducibility profile, and returns the
job's result record. It returns None (the roles' "no answer") when the task is unknown.

Jobs run one at a time per process (a module-level lock, so several daemons in one
process, as `swarm up` runs small swarms, share it too): the profile sets torch's
process-wide thread count and determinism flags, so two concurrent jobs would race on
them and lose bit-reproducibility.

The bisection game's per-position digests follow the model netsim's market scenario
uses (docs/market.md, "Not done yet"): the true state at (segment, position) is a hash,
and a solver whose own committed segment does not re-execute signs forged digests from
position 1 on. Arbitration re-executes the disputed segment from the committed
checkpoints, which decides the same question exactly for bit-reproducible profiles.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from node.compute import attacks, datasets
from node.compute.checkpoints import encode_checkpoint
from node.compute.datasets import Dataset
from node.compute.profiling import profile
from node.compute.trainer import Run, accuracy
from node.compute.verify import initial_matches, verify_segment
from node.daemon.blobdir import BlobDir
from node.daemon.progress import ProgressTracker, job_kind
from node.daemon.proofblobs import fetch_state, leaf_at, publish_run
from protocol.encoding import sha256
from protocol.errors import BlobError, PolnetError, SpecError
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
from protocol.market.roles import ChainView
from protocol.market.state import Task
from protocol.pol.spec import DeviceClass, TaskSpec, validate_spec
from protocol.records import decode_record

log = logging.getLogger("polnet.compute")

#: A task spec is a few hundred bytes; a dataset at most what the spec limits allow here.
MAX_SPEC_BLOB = 64 * 1024
MAX_DATASET_BLOB = 256 * 1024 * 1024
#: Blob fetch attempts before a job gives up (the solver may still be writing its proof).
FETCH_ATTEMPTS = 6
FETCH_BACKOFF_S = 1.0
#: Blobs fetched at once by one prefetch (the transport bounds concurrent fetches too).
PREFETCH_MAX = 64
#: Specs, datasets, own runs and segment verdicts kept in memory (LRU).
CACHE_ITEMS = 16
PPM = 1_000_000

#: (digest, max size, peers to ask, or None for every connected peer) -> the verified blob.
AsyncFetch = Callable[[bytes, int, Sequence[bytes] | None], Awaitable[bytes]]
_TORCH = threading.Lock()


def torch_lock() -> threading.Lock:
    """The lock a job holds while it uses torch; anything else that sets torch's
    process-wide threads (the daemon re-measuring capacity) takes it too."""
    return _TORCH


class _Lru(OrderedDict[Any, Any]):
    def put(self, key: Any, value: Any) -> Any:
        self[key] = value
        self.move_to_end(key)
        while len(self) > CACHE_ITEMS:
            self.popitem(last=False)
        return value


@dataclass(frozen=True)
class TrainedModel:
    """What this node knows about a task it trained (for status pages and the report)."""

    root: bytes
    accuracy: float
    attack: str | None


class MarketComputeRunner:
    def __init__(
        self,
        blobs: BlobDir,
        fetch: AsyncFetch,
        view: Callable[[], ChainView | None],
        me: bytes,
        cheat: str | None = None,
        progress: ProgressTracker | None = None,
    ) -> None:
        self.blobs = blobs
        self.progress = progress or ProgressTracker()
        self._fetch = fetch
        self._view = view
        self.me = me
        self.cheat = cheat or None
        self._specs = _Lru()
        self._data = _Lru()
        self._seg = _Lru()
        self.trained: dict[bytes, TrainedModel] = {}
        #: Peers asked first for the current job's blobs (its solver and submitter hold
        #: them for sure): asking every connected peer in turn costs a stream each.
        self._prefer: tuple[bytes, ...] = ()

    def __call__(self, job_id: str, job: Any) -> Any:
        task = self._task(job.task_id)
        with _TORCH:
            self._prefer = tuple(p for p in (task.solver, task.submitter) if p) if task is not None else ()
            t0 = time.monotonic()
            log.info("compute job started", extra={"job": job_id[:40]})
            self.progress.start(job_id, job_kind(job), getattr(job, "task_id", None))
            try:
                return self._run(job)
            finally:
                self.progress.finish()
                log.info("compute job finished", extra={"job": job_id[:40],
                                                        "seconds": round(time.monotonic() - t0, 2)})

    # --- blobs -----------------------------------------------------------------------------------

    def get(self, digest: bytes, max_size: int) -> bytes:
        """A blob from our own directory, else from any peer (then kept, so we serve it too)."""
        local = self.blobs.read(digest)
        if local is not None:
            return local
        last: PolnetError | None = None
        for attempt in range(FETCH_ATTEMPTS):
            try:
                data = trio.from_thread.run(self._fetch_preferring, digest, max_size)
            except PolnetError as exc:
                last = exc
                log.info("blob fetch failed", extra={"digest": digest.hex()[:16], "attempt": attempt,
                                                     "error": str(exc)})
                time.sleep(FETCH_BACKOFF_S * (attempt + 1))
                continue
            self.blobs.put(data)
            return data
        raise BlobError(f"blob {digest.hex()[:16]} unavailable: {last}")

    def prefetch(self, wanted: list[tuple[bytes, int]]) -> None:
        """Fetch the blobs we lack concurrently (one round trip for a checkpoint's tensors
        instead of one each); failures are left for `get` to retry and report."""
        missing = [(d, n) for d, n in wanted if self.blobs.read(d) is None]
        if missing:
            for data in trio.from_thread.run(self._fetch_all, missing):
                if data is not None:
                    self.blobs.put(data)

    async def _fetch_preferring(self, digest: bytes, max_size: int) -> bytes:
        if self._prefer:
            try:
                return await self._fetch(digest, max_size, self._prefer)
            except PolnetError:
                pass
        return await self._fetch(digest, max_size, None)

    async def _fetch_all(self, wanted: list[tuple[bytes, int]]) -> list[bytes | None]:
        out: list[bytes | None] = [None] * len(wanted)

        async def one(i: int, digest: bytes, size: int) -> None:
            try:
                out[i] = await self._fetch_preferring(digest, size)
            except PolnetError:
                return

        async with trio.open_nursery() as nursery:
            for i, (digest, size) in enumerate(wanted[:PREFETCH_MAX]):
                nursery.start_soon(one, i, digest, size)
        return out

    def spec(self, spec_hash: bytes) -> TaskSpec:
        if spec_hash not in self._specs:
            try:
                spec = decode_record(TaskSpec, self.get(spec_hash, MAX_SPEC_BLOB))
            except PolnetError as exc:
                raise SpecError(f"task spec {spec_hash.hex()[:16]}: {exc}") from None
            validate_spec(spec)
            self._specs.put(spec_hash, spec)
        return self._specs[spec_hash]  # type: ignore[no-any-return]

    def dataset(self, spec: TaskSpec) -> Dataset:
        if spec.dataset_hash not in self._data:
            blob = self.get(spec.dataset_hash, MAX_DATASET_BLOB)
            self._data.put(spec.dataset_hash, datasets.load(blob, spec.dataset_hash, tuple(spec.input_shape)))
        return self._data[spec.dataset_hash]  # type: ignore[no-any-return]

    # --- jobs ------------------------------------------------------------------------------------

    def _task(self, task_id: bytes) -> Task | None:
        view = self._view()
        return view.market.tasks.get(task_id) if view is not None else None

    def _run(self, job: Any) -> Any:
        if isinstance(job, MarketTrainJob):
            return self._train(job)
        if isinstance(job, ProfileJob):
            return self._profile(job)
        task = self._task(job.task_id)
        if task is None:
            return None
        if isinstance(job, SegmentCheckJob):
            ok, dist = self.segment_ok(task, job.proof_root, job.segment, job.threshold_ppm)
            return SegmentCheckResult(task.task_id, job.segment, ok, dist)
        if isinstance(job, StateHashJob):
            return self._state_hash(task, job)
        if isinstance(job, ArbitrationJob):
            return ArbitrationResult(task.task_id, self._arbitrate(task, job))
        raise PolnetError(f"unknown compute job {type(job).__name__}")

    def _train(self, job: MarketTrainJob) -> MarketTrainResult:
        spec = self.spec(job.spec_hash)
        data = self.dataset(spec)
        build = next((a.build for a in attacks.CATALOG if a.name == self.cheat), attacks.honest)
        self.progress.set_total(spec.steps)
        if build is attacks.honest:  # attacks.honest's training, a checkpoint at a time
            run = Run(spec, data)
            for step in range(spec.checkpoint_interval, spec.steps + 1, spec.checkpoint_interval):
                run.states[step] = run.state_at(step)
                self.progress.advance(step)
        else:
            run = build(spec, data, 1)
        root = publish_run(self.blobs.put, run)
        final = run.state_at(spec.steps)
        self.trained[job.task_id] = TrainedModel(root, accuracy(spec, data, final), self.cheat)
        log.info("task trained", extra={"task": job.task_id.hex()[:16], "attack": self.cheat or "none"})
        return MarketTrainResult(job.task_id, root, spec.num_checkpoints)

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

    def segment_ok(self, task: Task, root: bytes, segment: int, threshold_ppm: int) -> tuple[bool, int]:
        """Re-execute one committed segment; a proof nobody serves fails (the solver's duty)."""
        key = (task.task_id, root, segment)
        if key not in self._seg:
            self._seg.put(key, self._check(task, root, segment, threshold_ppm))
        return self._seg[key]  # type: ignore[no-any-return]

    def _check(self, task: Task, root: bytes, segment: int, threshold_ppm: int) -> tuple[bool, int]:
        try:
            spec = self.spec(task.spec_hash)
            data = self.dataset(spec)
            n, k = spec.num_checkpoints, spec.checkpoint_interval
            leaves = [leaf_at(self.get, root, n, i) for i in (0, segment, segment + 1)]
            if any(lf.step != i * k or lf.data_order_seed != spec.data_seed
                   for lf, i in zip(leaves, (0, segment, segment + 1), strict=True)):
                return False, PPM
            if not initial_matches(spec, fetch_state(self.get, spec, leaves[0], self.prefetch)):
                return False, PPM
            start, end = (fetch_state(self.get, spec, lf, self.prefetch) for lf in leaves[1:])
        except PolnetError as exc:
            log.warning("segment unavailable", extra={"task": task.task_id.hex()[:16], "error": str(exc)})
            return False, PPM
        res, _ = verify_segment(spec, data, segment, start, end, threshold_ppm / PPM)
        return bool(res.passed), min(PPM, int(res.distance * PPM))

    def _true_hash(self, task_id: bytes, segment: int, pos: int) -> bytes:
        return sha256(task_id + segment.to_bytes(4, "big") + pos.to_bytes(8, "big"))

    def _state_hash(self, task: Task, job: StateHashJob) -> StateHashResult:
        digest = self._true_hash(task.task_id, job.segment, job.position)
        if task.solver == self.me and job.position >= 1 and task.proof_root is not None:
            ok, _ = self.segment_ok(task, task.proof_root, job.segment, task.threshold_ppm or 0)
            if not ok:
                digest = sha256(b"forged" + digest)
        return StateHashResult(task.task_id, job.position, digest)

    def _arbitrate(self, task: Task, job: ArbitrationJob) -> bool:
        if task.proof_root is not None:
            ok, _ = self.segment_ok(task, task.proof_root, job.segment, task.threshold_ppm or 0)
            if ok:
                return True  # the committed segment re-executes: the defender is right
        return job.defender_output == self._true_hash(task.task_id, job.segment, job.position + 1)

    # --- results for submitters ------------------------------------------------------------------

    def final_weights(self, task: Task) -> tuple[bytes, float]:
        """The trained weights of a settled task as a safetensors blob (stored here), and
        their accuracy on the task's dataset; every tensor is checked against the root."""
        if task.proof_root is None:
            raise BlobError("the task has no committed proof")
        with _TORCH:
            self._prefer = tuple(p for p in (task.solver, task.submitter) if p)
            spec = self.spec(task.spec_hash)
            data = self.dataset(spec)
            leaf = leaf_at(self.get, task.proof_root, spec.num_checkpoints, spec.num_checkpoints - 1)
            state = fetch_state(self.get, spec, leaf, self.prefetch)
            blob = encode_checkpoint(type(state)(state.params, []))
            return self.blobs.put(blob), accuracy(spec, data, state)
