"""What the node's compute is doing right now: job, kind, step i of n, started, ETA.

The compute runner works in a worker thread and the admin endpoint (`/status`, which
`polnet node status` shows) reads from the trio thread, so the tracker holds one lock
and hands out immutable snapshots. It also writes the progress to the log, at most
every `LOG_EVERY_S` and once at the end, so an operator tailing `node.log` sees
training move without a line per step.

The runner calls `start` when a job begins, `set_total` once it knows how many steps
the job has (a training job: the task's steps, after its blobs are fetched), `advance`
as steps complete and `finish` when the job ends, whatever its outcome.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

log = logging.getLogger("polnet.progress")

#: Progress is logged at most this often (and once when the job ends).
LOG_EVERY_S = 10.0
#: What an operator calls each compute job of protocol.market.jobs.
JOB_KINDS = {
    "MarketTrainJob": "train",
    "ProfileJob": "profile",
    "SegmentCheckJob": "verify",
    "StateHashJob": "state-hash",
    "ArbitrationJob": "arbitrate",
    "RevealJob": "reveal",
    "AvailabilityJob": "availability",
    "CrewTrainJob": "crew-train",
    "CrewCheckJob": "crew-check",
}


def job_kind(job: Any) -> str:
    name = type(job).__name__
    return JOB_KINDS.get(name, name)


@dataclass(frozen=True, slots=True)
class JobProgress:
    job_id: str
    kind: str  # "train", "verify", "profile", "state-hash", "arbitrate", ...
    task_id: str  # hex, "" when the job has no task
    started_at: float  # wall clock (s) when the job began
    step: int = 0
    total: int = 0  # 0: not known (yet)
    #: When stepping began (after the job fetched its inputs): the ETA's time base.
    steps_started_at: float | None = None
    #: What else the job says of itself (a crew member: its rank, stage, bytes sent).
    detail: str = ""

    def eta_s(self, now: float) -> float | None:
        """Seconds to go at the rate so far, or None before the first step."""
        if self.total <= 0 or self.step <= 0 or self.steps_started_at is None:
            return None
        elapsed = max(now - self.steps_started_at, 1e-6)
        return max(0.0, (self.total - self.step) * elapsed / self.step)

    def as_dict(self, now: float) -> dict[str, Any]:
        eta = self.eta_s(now)
        return {
            "job_id": self.job_id,
            "kind": self.kind,
            "task_id": self.task_id,
            "step": self.step,
            "total": self.total,
            "percent": round(100.0 * self.step / self.total, 1) if self.total else None,
            "running_s": round(now - self.started_at, 1),
            "eta_s": None if eta is None else round(eta, 1),
            "detail": self.detail,
        }


class ProgressTracker:
    """The running compute jobs of one node, readable from any thread.

    Jobs may run at once (a crew member's run waits on its own process while the node
    verifies other tasks), each in its own worker thread: a job's calls (`set_total`,
    `advance`, `note`, `finish`) act on the job its thread started, or, from a thread
    that started none, on the only job running (a callback from a helper thread)."""

    def __init__(self, clock: Callable[[], float] = time.time, log_every_s: float = LOG_EVERY_S) -> None:
        self._clock = clock
        self._log_every_s = log_every_s
        self._lock = threading.Lock()
        self._jobs: dict[int, JobProgress] = {}  # worker thread -> its job
        self._logged_at: dict[int, float] = {}
        self._last: dict[str, Any] | None = None
        self.jobs_done = 0

    def start(self, job_id: str, kind: str, task_id: bytes | None = None) -> None:
        now, me = self._clock(), threading.get_ident()
        with self._lock:
            self._jobs[me] = JobProgress(job_id, kind, task_id.hex() if task_id else "", now)
            self._logged_at[me] = now

    def _mine(self) -> int | None:
        """The key of the caller's job (call with the lock held)."""
        me = threading.get_ident()
        if me in self._jobs:
            return me
        return next(iter(self._jobs)) if len(self._jobs) == 1 else None

    def set_total(self, total: int) -> None:
        with self._lock:
            me = self._mine()
            job = self._jobs.get(me) if me is not None else None
            if me is not None and job is not None:
                self._jobs[me] = replace(job, total=max(0, total), step=0, steps_started_at=self._clock())

    def advance(self, step: int) -> None:
        """`step` of the total are done (absolute, not an increment)."""
        now = self._clock()
        with self._lock:
            me = self._mine()
            job = self._jobs.get(me) if me is not None else None
            if me is None or job is None:
                return
            self._jobs[me] = job = replace(job, step=min(step, job.total or step))
            due = now - self._logged_at.get(me, 0.0) >= self._log_every_s
            if due:
                self._logged_at[me] = now
        if due:
            self._log("job progress", job, now)

    def note(self, detail: str) -> None:
        """Say what the running job is at beyond its step count (shown by /status)."""
        with self._lock:
            me = self._mine()
            job = self._jobs.get(me) if me is not None else None
            if me is not None and job is not None:
                self._jobs[me] = replace(job, detail=detail[:120])

    def finish(self, outcome: str = "done") -> None:
        now = self._clock()
        with self._lock:
            me = self._mine()
            job = self._jobs.pop(me, None) if me is not None else None
            if me is None or job is None:
                return
            self._logged_at.pop(me, None)
            self.jobs_done += 1
            self._last = {**job.as_dict(now), "outcome": outcome, "ended_at": round(now, 3)}
        if job.total:
            self._log("job finished", job, now, outcome=outcome)

    def running(self) -> list[JobProgress]:
        """The running jobs, the longest-running first."""
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.started_at)

    def current(self) -> JobProgress | None:
        """The longest-running job (a crew member's run outlasts the checks beside it)."""
        jobs = self.running()
        return jobs[0] if jobs else None

    def idle(self) -> bool:
        return self.current() is None

    def snapshot(self) -> dict[str, Any]:
        """For /status: the longest-running job (or None), every running job, and the
        last one that ended."""
        now = self._clock()
        jobs = self.running()
        with self._lock:
            last = self._last
        return {"job": jobs[0].as_dict(now) if jobs else None, "jobs": [j.as_dict(now) for j in jobs],
                "last_job": last, "jobs_done": self.jobs_done}

    def _log(self, event: str, job: JobProgress, now: float, **extra: Any) -> None:
        doc = job.as_dict(now)
        log.info(event, extra={
            "job": job.job_id[:40], "kind": job.kind, "task": job.task_id[:16], "step": doc["step"],
            "total": doc["total"], "percent": doc["percent"], "eta_s": doc["eta_s"], **extra,
        })
