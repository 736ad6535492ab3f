"""How netsim runs RunCompute: an executor per job type, virtual time from FLOPS.

The shell, not the core, decides how compute happens (DESIGN.md): node/ runs torch in a
worker thread; netsim calls a function registered for the job's record type inline, and
charges `ceil(flops / advertised FLOPS)` of virtual time, so a run's timing follows the
node's capacity without the simulator ever waiting on real compute. Each node has one
device: jobs queue behind each other, except a job in its own process (`RunCompute.
own_process`: a crew member's run), which runs beside the queue as on a daemon.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from netsim.errors import NetsimError
from protocol.commands import RunCompute

JobFn = Callable[[Any], Any]


class Executor(Protocol):
    """Anything that can turn a RunCompute into (virtual duration in ms, result)."""

    def execute(self, node: int, cmd: RunCompute, node_flops: int) -> tuple[int, Any]: ...


def flops_to_ms(flops: int, node_flops: int) -> int:
    """Virtual milliseconds a node with `node_flops` FLOPS spends on `flops` (rounded up)."""
    return max(0, -(-flops * 1000 // node_flops))


class ComputeRegistry:
    """The default executor: one function per job record type, time from FLOPS."""

    def __init__(self) -> None:
        self._fns: dict[type[Any], JobFn] = {}

    def register(self, job_type: type[Any], fn: JobFn) -> None:
        """Run `fn(job)` for every RunCompute whose job is an instance of `job_type`."""
        self._fns[job_type] = fn

    def execute(self, node: int, cmd: RunCompute, node_flops: int) -> tuple[int, Any]:
        fn = self._fns.get(type(cmd.job))
        if fn is None:
            raise NetsimError(f"no compute function registered for job type {type(cmd.job).__name__}")
        return flops_to_ms(cmd.flops, node_flops), fn(cmd.job)
