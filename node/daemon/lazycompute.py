"""The compute runner, built on first use, so a node that never computes never loads torch.

torch is most of a daemon's memory (a validator-only daemon idled at about 310 MB with
it, under 200 without). Every node holds a compute runner (validators arbitrate
disputes by re-executing one operation), but most never get a job: this proxy builds
the real runner (node/daemon/compute.py, which imports torch) the first time a job,
or a question only the real runner can answer, arrives. What the admin endpoints ask
of every node (its blob directory, what it trained) needs no torch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from node.daemon.blobdir import BlobDir


class LazyCompute:
    def __init__(self, build: Callable[[], Any], blobs: BlobDir) -> None:
        self._build = build
        self._runner: Any = None
        self._lock = threading.Lock()  # jobs and admin calls arrive on worker threads
        self.blobs = blobs

    @property
    def built(self) -> bool:
        return self._runner is not None

    def runner(self) -> Any:
        with self._lock:
            if self._runner is None:
                self._runner = self._build()
            return self._runner

    def __call__(self, job_id: str, job: Any) -> Any:
        return self.runner()(job_id, job)

    @property
    def trained(self) -> dict[bytes, Any]:
        """Models this node trained (none, before it ever computed)."""
        return {} if self._runner is None else dict(self._runner.trained)

    def final_weights(self, task: Any, content_key: bytes | None = None) -> Any:
        return self.runner().final_weights(task, content_key)
