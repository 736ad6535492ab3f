"""How a party answers pinpoint queries from its own view of the training.

Shared by the torch trainer (node/compute) and the synthetic trainer: both expose the
digests of the state at any step and of every op output within a step (`TraceSource`).
An honest party's source is the real training; a cheater's source is whatever it claims
(its fake checkpoints between steps, honest ops inside a step up to its fake end), which
is exactly what the game forces it to defend.
"""

from __future__ import annotations

from typing import Protocol

from protocol.pol.jobs import ClaimJob, ClaimResult, RevealJob, RevealResult
from protocol.pol.messages import OpOutputs
from protocol.pol.ops import chain_values, group_hash, state_hash
from protocol.pol.pinpoint import Phase

Digests = tuple[bytes, ...]


class TraceSource(Protocol):
    def state_digests(self, step: int) -> tuple[Digests, Digests]:
        """(weight digests, optimizer-state digests) at the start of global `step`."""
        ...

    def step_trace(self, step: int) -> list[Digests]:
        """Output digests of every op of global `step`, in `step_ops` order."""
        ...


def state_hash_of(digests: tuple[Digests, Digests]) -> bytes:
    return state_hash(group_hash(digests[0]), group_hash(digests[1]))


class HonestOracle:
    """Answers every query from its source, consistently."""

    def __init__(self, source: TraceSource) -> None:
        self.source = source

    def claim(self, job: ClaimJob) -> ClaimResult | None:
        if job.phase == Phase.STEP:
            value = state_hash_of(self.source.state_digests(job.step))
        else:
            start = state_hash_of(self.source.state_digests(job.step))
            value = chain_values(start, self.source.step_trace(job.step)[: job.index + 1])[job.index]
        return ClaimResult(job.dispute_id, job.phase, job.round, job.index, value)

    def reveal(self, job: RevealJob) -> RevealResult | None:
        weights, optimizer = self.source.state_digests(job.step)
        trace = self.source.step_trace(job.step)[: job.op_index + 1]
        return RevealResult(job.dispute_id, weights, optimizer, tuple(OpOutputs(o) for o in trace))
