"""Verification: re-execute sampled segments and measure how far the claim is.

Distance is the L2 norm of (claimed - reproduced) normalised by the norm of the
reproduced *update* over the segment (not of the weights): it is scale-free in the
learning rate and a skipped or faked segment scores about 1, while reduction-order
noise scores ~1e-6. Cosine compares the directions of the two updates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from node.compute.datasets import AnyDataset
from node.compute.tensors import digest
from node.compute.trainer import Run, State, initial_state
from protocol.pol.jobs import VerifyResult
from protocol.pol.merkle import CheckpointLeaf
from protocol.pol.ops import group_hash, op_digest, state_slots_per_param
from protocol.pol.sampling import choose_segments, sample_count, segment_passes
from protocol.pol.spec import TaskSpec

#: Below this update norm a segment is treated as "no update" (normalise by weights).
TINY = 1e-12


def _rel(diff: torch.Tensor, scale: torch.Tensor) -> float:
    return float(diff.norm() / max(float(scale.norm()), TINY))


def distance(start: State, reproduced: State, claimed: State) -> tuple[float, float]:
    """(normalised L2 distance, cosine of updates) of a claimed end state."""
    w0, wr, wc = start.flat_params(), reproduced.flat_params(), claimed.flat_params()
    upd_r, upd_c = wr - w0, wc - w0
    scale = upd_r if float(upd_r.norm()) > TINY else wr
    d = _rel(wc - wr, scale)
    o0, orr, oc = start.flat_opt(), reproduced.flat_opt(), claimed.flat_opt()
    if orr.numel():
        d = max(d, _rel(oc - orr, orr - o0 if float((orr - o0).norm()) > TINY else orr))
    denom = float(upd_r.norm()) * float(upd_c.norm())
    cos = float(upd_r @ upd_c) / denom if denom > TINY else (1.0 if d == 0.0 else 0.0)
    return d, cos


def initial_matches(spec: TaskSpec, state: State) -> bool:
    """Checkpoint 0 must be the spec's seeded init (copied runs fail here for free), or,
    for a fine-tuning task, exactly its named base (`base_matches`)."""
    if spec.base is not None:
        return base_matches(spec, state)
    return state.leaf(0, spec.data_seed) == initial_state(spec).leaf(0, spec.data_seed)


def base_matches(spec: TaskSpec, state: State) -> bool:
    """A fine-tuning task's checkpoint 0 is its base: the weights hash to the spec's base
    and the optimizer state is zero (a fresh optimizer, as for a task from scratch)."""
    if spec.base is None:
        return False
    weights = group_hash([digest(p) for p in state.params])
    zero = all(not bool(o.any()) for o in state.opt) and len(state.opt) == len(state.params) * (
        state_slots_per_param(spec)
    )
    return weights == spec.base.weights_hash and zero


def verify_segment(
    spec: TaskSpec,
    data: AnyDataset,
    segment: int,
    start: State,
    claimed_end: State,
    threshold: float,
    threads: int | None = None,
) -> tuple[VerifyResult, State]:
    """Re-execute segment `segment` from its (checked) start state."""
    k = spec.checkpoint_interval
    run = Run(spec, data, threads=threads, states={segment * k: start})
    reproduced = run.state_at((segment + 1) * k)
    d, cos = distance(start, reproduced, claimed_end)
    if reproduced.leaf(0, 0) == claimed_end.leaf(0, 0):
        d, cos = 0.0, 1.0  # bit-identical: exact, whatever the float arithmetic above says
    w, o = reproduced.leaf(0, 0).weights_hash, reproduced.leaf(0, 0).optimizer_hash
    passed = segment_passes(d, cos, threshold)
    return VerifyResult(spec.dataset_hash, segment, passed, d, cos, op_digest([w, o])), reproduced


@dataclass(frozen=True)
class ProofVerdict:
    passed: bool
    initial_ok: bool
    segments: tuple[VerifyResult, ...]
    steps_executed: int

    @property
    def failed_segments(self) -> list[int]:
        return [r.segment for r in self.segments if not r.passed]


def verify_proof(
    spec: TaskSpec,
    data: AnyDataset,
    leaves: list[CheckpointLeaf],
    fetch: Callable[[int], State],
    seed: bytes,
    threshold: float,
    fraction: float | None = None,
    threads: int | None = None,
) -> ProofVerdict:
    """The verifier's job: initial check plus the segments the post-commit seed picks.

    `fetch(i)` returns checkpoint i already checked against leaves[i] (decode_checkpoint).
    """
    n = spec.num_segments
    count = sample_count(n) if fraction is None else sample_count(n, fraction)
    initial_ok = initial_matches(spec, fetch(0))
    results = []
    for seg in choose_segments(seed, n, count):
        res, _ = verify_segment(spec, data, seg, fetch(seg), fetch(seg + 1), threshold, threads)
        results.append(res)
    passed = initial_ok and all(r.passed for r in results)
    return ProofVerdict(passed, initial_ok, tuple(results), len(results) * spec.checkpoint_interval)
