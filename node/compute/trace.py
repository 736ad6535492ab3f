"""Op-level tracing of one step for the pinpoint game, and the referee.

`TorchSource` is a party's `TraceSource`: the digests of its state at any step and of
every op output within a step, with the tensors kept in a `TensorStore` so the referee
can be shown them. A party's trace ends in the state it *claims* for step+1: for an
honest run that is what the ops compute; for a cheat it is the fake, which then shows
up as UPDATE outputs that the referee's re-execution contradicts.
"""

from __future__ import annotations

import torch

from node.compute.datasets import AnyDataset
from node.compute.ops import execute
from node.compute.tensors import TensorStore
from node.compute.trainer import Run, apply_profile, run_step
from protocol.errors import BlobError
from protocol.pol.jobs import RefereeJob, RefereeResult
from protocol.pol.ops import OpKind, group_hash, op_digest, step_ops
from protocol.pol.spec import param_shapes

Digests = tuple[bytes, ...]


class TorchSource:
    def __init__(self, run: Run, store: TensorStore) -> None:
        self.run, self.store = run, store

    def state_digests(self, step: int) -> tuple[Digests, Digests]:
        s = self.run.state_at(step)
        return tuple(self.store.put(p) for p in s.params), tuple(self.store.put(o) for o in s.opt)

    def step_trace(self, step: int) -> list[Digests]:
        spec, run = self.run.spec, self.run
        outs: list[tuple[torch.Tensor, ...]] = []
        apply_profile(spec, run.threads)
        run_step(spec, run.data, run.state_at(step), step, lambda j, t, o: outs.append(o))
        claimed = run.state_at(step + 1)
        ops = step_ops(spec)
        n, ns = len(claimed.params), len(claimed.opt) // max(len(claimed.params), 1)
        first_update = len(ops) - 1 - n
        for p in range(n):
            outs[first_update + p] = (claimed.params[p], *claimed.opt[p * ns : (p + 1) * ns])
        trace: list[Digests] = [tuple(self.store.put(t) for t in o) for o in outs[:-1]]
        w = tuple(self.store.put(p) for p in claimed.params)
        o2 = tuple(self.store.put(x) for x in claimed.opt)
        trace.append((group_hash(w), group_hash(o2)))
        return trace


def rel_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative L2 distance of `a` from `b` (inf for another shape or dtype; integer
    tensors are equal or infinitely far)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return float("inf")
    if not a.is_floating_point():
        return 0.0 if torch.equal(a, b) else float("inf")
    ref = float(b.to(torch.float64).norm())
    return float((a.to(torch.float64) - b.to(torch.float64)).norm()) / max(ref, 1e-30)


def _claim_distance(store: TensorStore, claimed: Digests, truth: tuple[torch.Tensor, ...]) -> float:
    """Largest relative distance of a claimed output set to the re-executed one."""
    worst = 0.0
    for d, t in zip(claimed, truth, strict=True):
        try:
            worst = max(worst, rel_distance(store.get(d), t))
        except BlobError:
            return float("inf")  # a claim whose tensor nobody can show is not a claim
    return worst


def referee(job: RefereeJob, data: AnyDataset | None, store: TensorStore) -> RefereeResult:
    """Re-execute exactly one op from hash-checked inputs and judge both claims."""
    spec = job.spec
    if spec is None:
        raise ValueError("a crew member's op goes to the crew referee (node/compute/crew/optrace.py)")
    op = step_ops(spec)[job.op_index]
    if op.kind is OpKind.STATE:
        n = len(param_shapes(spec))
        truth_d = (group_hash(job.inputs[:n]), group_hash(job.inputs[n:]))
        dok, cok = job.defender_outputs.digests == truth_d, job.challenger_outputs.digests == truth_d
        return RefereeResult(
            job.dispute_id, dok, cok, op_digest(truth_d), 0.0 if dok else 1.0, 0.0 if cok else 1.0
        )
    inputs = [store.get(d) for d in job.inputs]  # each re-hashed against its digest
    apply_profile(spec)
    outs = execute(spec, data, op, job.step, inputs)
    digests = tuple(store.put(t) for t in outs)
    dd = (
        0.0
        if digests == job.defender_outputs.digests
        else _claim_distance(store, job.defender_outputs.digests, outs)
    )
    cd = (
        0.0
        if digests == job.challenger_outputs.digests
        else _claim_distance(store, job.challenger_outputs.digests, outs)
    )
    tol = job.tolerance
    return RefereeResult(job.dispute_id, dd <= tol, cd <= tol, op_digest(digests), dd, cd)
