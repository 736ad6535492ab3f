"""The daemon's compute runner: the market's jobs on real blobs, with torch.

The driver calls it in a trio worker thread with one RunCompute's job, a
`protocol.market.jobs.MarketWork`: the job and the frozen facts of its task, so the
thread never reads the core's live state. The work itself is node/compute's
`TorchMarketCompute`, the same code netsim's torch mode runs; this module gives it the
daemon's blobs: our own blob directory first, then the network, asking the task's
solver and submitter before every connected peer (they hold its blobs for sure), and
never ourselves over the network.

Jobs run one at a time per process (a module-level lock, so several daemons in one
process, as `swarm up` runs small swarms, share it too): the profile sets torch's
process-wide thread count and determinism flags, so two concurrent jobs would race on
them and lose bit-reproducibility. A crew member's training is the exception: it runs
in the member's own process, so its job holds the lock only while it reads the spec and
publishes the proof, and the node verifies other tasks while its crew trains.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import trio

from node.compute.crew.market import CrewMarketCompute, CrewRunner
from node.compute.market_engine import TorchMarketCompute, TrainedModel
from node.daemon.blobdir import BlobDir
from node.daemon.progress import ProgressTracker, job_kind
from protocol.errors import BlobError, BlobUnavailable, PolnetError
from protocol.market.jobs import CrewCheckJob, CrewTrainJob, MarketWork, TaskFacts, facts_of
from protocol.market.state import Task

log = logging.getLogger("polnet.compute")

#: Blob fetch attempts before a job gives up (the solver may still be writing its proof).
FETCH_ATTEMPTS = 6
FETCH_BACKOFF_S = 1.0
#: Blobs fetched at once by one prefetch (the transport bounds concurrent fetches too).
PREFETCH_MAX = 64


class AsyncFetch(Protocol):
    """(digest, max size, peers to ask, or None for every connected peer) -> the verified
    blob; with `check`, the digest is a sealed blob's locator and `check` verifies the
    body (the `Network` port's `fetch_blob`)."""

    def __call__(
        self, digest: bytes, max_size: int, peers: Sequence[bytes] | None, /,
        *, check: Callable[[bytes], bool] | None = None,
    ) -> Awaitable[bytes]: ...


_TORCH = threading.Lock()


def torch_lock() -> threading.Lock:
    """The lock a job holds while it uses torch; anything else that sets torch's
    process-wide threads (the daemon re-measuring capacity) takes it too."""
    return _TORCH

__all__ = ["MarketComputeRunner", "TrainedModel"]


class NetworkBlobs:
    """`node.compute.market_engine.Blobs` for a daemon: the blob directory, then peers.

    Also the `SealingStore` of node/compute/sealedblobs.py for a private task's blobs:
    sealed blobs kept under their own hash, found by locator, and verified by the
    caller's check (which opens them) wherever they come from, our directory included."""

    def __init__(self, blobs: BlobDir, fetch: AsyncFetch, me: bytes,
                 backoff_s: float = FETCH_BACKOFF_S) -> None:
        self.dir = blobs
        self._fetch = fetch
        self.me = me
        self.backoff_s = backoff_s
        #: Peers asked first for the current job's blobs (its solver and submitter).
        self.prefer: tuple[bytes, ...] = ()

    def put(self, data: bytes) -> bytes:
        return self.dir.put(data)

    def get(self, digest: bytes, max_size: int) -> bytes:
        """A blob from our own directory, else from a peer (then kept, so we serve it too)."""
        local = self.dir.read(digest)
        if local is not None:
            if len(local) > max_size:
                raise BlobError(f"blob {digest.hex()[:16]} is {len(local)} bytes, more than {max_size}")
            return local
        data = self._fetch_retrying(digest, max_size, None, "blob")
        self.dir.put(data)
        return data

    def _fetch_retrying(self, name: bytes, max_size: int, check: Callable[[bytes], bool] | None,
                        what: str) -> bytes:
        """A blob (or a sealed blob by locator, with its `check`) from the network, retried
        with backoff (the solver may still be writing its proof)."""
        last: PolnetError | None = None
        for attempt in range(FETCH_ATTEMPTS):
            try:
                return trio.from_thread.run(self._fetch_preferring, name, max_size, check)
            except PolnetError as exc:
                last = exc
                log.info(f"{what} fetch failed", extra={"digest": name.hex()[:16], "attempt": attempt,
                                                       "error": str(exc)})
                time.sleep(self.backoff_s * (attempt + 1))
        raise BlobUnavailable(f"{what} {name.hex()[:16]} unavailable: {last}")

    def prefetch(self, wanted: list[tuple[bytes, int]]) -> None:
        """Fetch the blobs we lack concurrently (one round trip for a checkpoint's tensors
        instead of one each); failures are left for `get` to retry and report."""
        missing = [(d, n, None) for d, n in wanted if self.dir.read(d) is None]
        if missing:
            for data in trio.from_thread.run(self._fetch_all, missing):
                if data is not None:
                    self.dir.put(data)

    def put_sealed(self, locator: bytes, sealed: bytes) -> bytes:
        return self.dir.put_sealed(locator, sealed)

    def get_sealed(self, locator: bytes, max_size: int, check: Callable[[bytes], bool]) -> bytes:
        """The sealed blob `locator` finds that `check` accepts: from our own directory,
        else from a peer (then kept under its hash and the locator, so we serve it too)."""
        local = self.dir.read_sealed(locator)
        if local is not None:
            if len(local) > max_size:
                raise BlobError(f"sealed blob {locator.hex()[:16]} is {len(local)} bytes, "
                                f"more than {max_size}")
            if check(local):
                return local
            log.info("stored sealed blob fails its check", extra={"locator": locator.hex()[:16]})
        data = self._fetch_retrying(locator, max_size, check, "sealed blob")
        self.dir.put_sealed(locator, data)
        return data

    def prefetch_sealed(self, wanted: list[tuple[bytes, int, Callable[[bytes], bool]]]) -> None:
        """`prefetch` for sealed blobs (locator, max size, check); what fails is left for
        `get_sealed` to retry and report."""
        missing = [(loc, n, c) for loc, n, c in wanted if self.dir.read_sealed(loc) is None]
        if missing:
            fetched = trio.from_thread.run(self._fetch_all, missing)
            for (loc, _, _), data in zip(missing, fetched, strict=True):
                if data is not None:
                    self.dir.put_sealed(loc, data)

    async def _fetch_preferring(
        self, digest: bytes, max_size: int, check: Callable[[bytes], bool] | None = None
    ) -> bytes:
        if self.prefer:
            try:
                return await self._fetch_one(digest, max_size, self.prefer, check)
            except PolnetError:
                pass
        return await self._fetch_one(digest, max_size, None, check)

    async def _fetch_one(
        self, digest: bytes, max_size: int, peers: Sequence[bytes] | None,
        check: Callable[[bytes], bool] | None,
    ) -> bytes:
        if check is None:  # a plain fetch passes no keyword (fetchers that predate sealing)
            return await self._fetch(digest, max_size, peers)
        return await self._fetch(digest, max_size, peers, check=check)

    async def _fetch_all(
        self, wanted: Sequence[tuple[bytes, int, Callable[[bytes], bool] | None]]
    ) -> list[bytes | None]:
        out: list[bytes | None] = [None] * len(wanted)

        async def one(i: int, digest: bytes, size: int, check: Callable[[bytes], bool] | None) -> None:
            try:
                out[i] = await self._fetch_preferring(digest, size, check)
            except PolnetError:
                return

        async with trio.open_nursery() as nursery:
            for i, (digest, size, check) in enumerate(wanted[:PREFETCH_MAX]):
                nursery.start_soon(one, i, digest, size, check)
        return out

    def ask_first(self, task: TaskFacts) -> None:
        self.prefer = tuple(p for p in (task.solver, task.submitter) if p and p != self.me)

    def ask_crew(self, members: tuple[bytes, ...], rank: int) -> None:
        """A crew job's blobs are its members' (a check's, first of all the checked
        member's), and the spec the submitter's: ask them before every connected peer."""
        first = (members[rank],) if 0 <= rank < len(members) else ()
        order = (*first, *members, *self.prefer)
        self.prefer = tuple(dict.fromkeys(p for p in order if p != self.me))


class MarketComputeRunner:
    def __init__(
        self,
        blobs: BlobDir,
        fetch: AsyncFetch,
        me: bytes,
        cheat: str | None = None,
        progress: ProgressTracker | None = None,
        fetch_backoff_s: float = FETCH_BACKOFF_S,
        crews: CrewRunner | None = None,
    ) -> None:
        self.blobs = blobs
        self.me = me
        self.cheat = cheat or None
        self.progress = progress or ProgressTracker()
        self.network = NetworkBlobs(blobs, fetch, me, fetch_backoff_s)
        self.engine = TorchMarketCompute(me, self.network, cheat, self._stepped)
        #: A crew member's jobs (node/compute/crew/market.py), over the same blobs; without
        #: a runner (a daemon with no rendezvous) a crew job has no answer: silence.
        self.crew = (CrewMarketCompute(me, self.network, crews, torch_guard=torch_lock)
                     if crews is not None else None)

    def _stepped(self, task_hex: str, step: int, total: int) -> None:
        """Training progress from the engine (step i of n) into the status tracker."""
        if step == 0:
            self.progress.set_total(total)
        else:
            self.progress.advance(step)

    @property
    def trained(self) -> dict[bytes, TrainedModel]:
        return self.engine.trained

    def runs_elsewhere(self, work: Any) -> bool:
        """A crew member's training runs in its member process (node/compute/crew/launch.py):
        the job only waits for it and then publishes files, so it takes neither a compute
        thread (the driver) nor the torch lock, and the node verifies other tasks meanwhile."""
        return isinstance(work, MarketWork) and isinstance(work.job, CrewTrainJob)

    def __call__(self, job_id: str, work: Any) -> Any:
        if not isinstance(work, MarketWork):
            raise PolnetError(f"not a market job: {type(work).__name__}")
        with contextlib.nullcontext() if self.runs_elsewhere(work) else _TORCH:
            self.network.ask_first(work.task)
            if isinstance(work.job, CrewTrainJob | CrewCheckJob):  # a crew's blobs are its members'
                self.network.ask_crew(work.job.members, work.job.rank)
            t0 = time.monotonic()
            log.info("compute job started", extra={"job": job_id[:40]})
            self.progress.start(job_id, job_kind(work.job), work.task.task_id)
            try:
                if isinstance(work.job, CrewTrainJob | CrewCheckJob):
                    return self.crew.run(work.task, work.job) if self.crew is not None else None
                return self.engine.run(work.task, work.job)
            finally:
                self.progress.finish()
                log.info("compute job finished", extra={"job": job_id[:40],
                                                        "seconds": round(time.monotonic() - t0, 2)})

    def final_weights(self, task: Task, content_key: bytes | None = None) -> tuple[bytes, float]:
        """The trained weights of a settled task (stored here: sealed, for a private task,
        whose `content_key` the caller holds) and their accuracy."""
        facts = facts_of(task, content_key)
        with _TORCH:
            self.network.ask_first(facts)
            if task.is_crew:  # the whole model, assembled from every stage's committed final state
                if self.crew is None:
                    raise PolnetError("this node runs no crew engine")
                return self.crew.final_weights(facts, tuple(task.crew), tuple(task.crew_commits), task.stages,
                                               task.data_parallel)
            return self.engine.final_weights(facts)
