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
them and lose bit-reproducibility.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from node.compute.market_engine import TorchMarketCompute, TrainedModel
from node.daemon.blobdir import BlobDir
from node.daemon.progress import ProgressTracker, job_kind
from protocol.errors import BlobError, BlobUnavailable, PolnetError
from protocol.market.jobs import MarketWork, TaskFacts, facts_of
from protocol.market.state import Task

log = logging.getLogger("polnet.compute")

#: Blob fetch attempts before a job gives up (the solver may still be writing its proof).
FETCH_ATTEMPTS = 6
FETCH_BACKOFF_S = 1.0
#: Blobs fetched at once by one prefetch (the transport bounds concurrent fetches too).
PREFETCH_MAX = 64

#: (digest, max size, peers to ask, or None for every connected peer) -> the verified blob.
AsyncFetch = Callable[[bytes, int, Sequence[bytes] | None], Awaitable[bytes]]
_TORCH = threading.Lock()


def torch_lock() -> threading.Lock:
    """The lock a job holds while it uses torch; anything else that sets torch's
    process-wide threads (the daemon re-measuring capacity) takes it too."""
    return _TORCH

__all__ = ["MarketComputeRunner", "TrainedModel"]


class NetworkBlobs:
    """`node.compute.market_engine.Blobs` for a daemon: the blob directory, then peers."""

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
        last: PolnetError | None = None
        for attempt in range(FETCH_ATTEMPTS):
            try:
                data = trio.from_thread.run(self._fetch_preferring, digest, max_size)
            except PolnetError as exc:
                last = exc
                log.info("blob fetch failed", extra={"digest": digest.hex()[:16], "attempt": attempt,
                                                     "error": str(exc)})
                time.sleep(self.backoff_s * (attempt + 1))
                continue
            self.dir.put(data)
            return data
        raise BlobUnavailable(f"blob {digest.hex()[:16]} unavailable: {last}")

    def prefetch(self, wanted: list[tuple[bytes, int]]) -> None:
        """Fetch the blobs we lack concurrently (one round trip for a checkpoint's tensors
        instead of one each); failures are left for `get` to retry and report."""
        missing = [(d, n) for d, n in wanted if self.dir.read(d) is None]
        if missing:
            for data in trio.from_thread.run(self._fetch_all, missing):
                if data is not None:
                    self.dir.put(data)

    async def _fetch_preferring(self, digest: bytes, max_size: int) -> bytes:
        if self.prefer:
            try:
                return await self._fetch(digest, max_size, self.prefer)
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

    def ask_first(self, task: TaskFacts) -> None:
        self.prefer = tuple(p for p in (task.solver, task.submitter) if p and p != self.me)


class MarketComputeRunner:
    def __init__(
        self,
        blobs: BlobDir,
        fetch: AsyncFetch,
        me: bytes,
        cheat: str | None = None,
        progress: ProgressTracker | None = None,
        fetch_backoff_s: float = FETCH_BACKOFF_S,
    ) -> None:
        self.blobs = blobs
        self.me = me
        self.cheat = cheat or None
        self.progress = progress or ProgressTracker()
        self.network = NetworkBlobs(blobs, fetch, me, fetch_backoff_s)
        self.engine = TorchMarketCompute(me, self.network, cheat, self._stepped)

    def _stepped(self, task_hex: str, step: int, total: int) -> None:
        """Training progress from the engine (step i of n) into the status tracker."""
        if step == 0:
            self.progress.set_total(total)
        else:
            self.progress.advance(step)

    @property
    def trained(self) -> dict[bytes, TrainedModel]:
        return self.engine.trained

    def __call__(self, job_id: str, work: Any) -> Any:
        if not isinstance(work, MarketWork):
            raise PolnetError(f"not a market job: {type(work).__name__}")
        with _TORCH:
            self.network.ask_first(work.task)
            t0 = time.monotonic()
            log.info("compute job started", extra={"job": job_id[:40]})
            self.progress.start(job_id, job_kind(work.job), work.task.task_id)
            try:
                return self.engine.run(work.task, work.job)
            finally:
                self.progress.finish()
                log.info("compute job finished", extra={"job": job_id[:40],
                                                        "seconds": round(time.monotonic() - t0, 2)})

    def final_weights(self, task: Task) -> tuple[bytes, float]:
        """The trained weights of a settled task (stored here) and their accuracy."""
        facts = facts_of(task)
        with _TORCH:
            self.network.ask_first(facts)
            return self.engine.final_weights(facts)
