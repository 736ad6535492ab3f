"""The attack catalog: Byzantine solvers (and one honest outlier) for tests and netsim.

Each entry builds the `Run` a solver would claim (its checkpoints and how it answers
step queries), so the same object feeds verification, the pinpoint game and the
benchmark. Bisection misbehaviour (inconsistent or absent answers) is an oracle wrapper.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from node.compute.datasets import AnyDataset
from node.compute.ops import generator
from node.compute.trainer import Run, State, run_step
from protocol.pol.jobs import ClaimJob, ClaimResult, RevealJob, RevealResult
from protocol.pol.oracle import HonestOracle
from protocol.pol.pinpoint import Phase
from protocol.pol.spec import TaskSpec

#: Relative size of the noise the "noise" attack adds to the delivered weights.
NOISE_SCALE = 1e-2


def _train(run: Run) -> Run:
    run.train()
    return run


def _run(spec: TaskSpec, data: AnyDataset, start: State | None, **kw: Any) -> Run:
    """A run from the spec's checkpoint 0: the seeded init, or `start` (a fine-tuning
    task's base, which only the caller can fetch)."""
    return Run(spec, data, states={0: start} if start is not None else {}, **kw)


def honest(spec: TaskSpec, data: AnyDataset, seed: int = 0, start: State | None = None) -> Run:
    return _train(_run(spec, data, start))


def other_threads(spec: TaskSpec, data: AnyDataset, seed: int = 0, start: State | None = None) -> Run:
    """Honest: the same training on a different thread count (not a cheat)."""
    return _train(_run(spec, data, start, threads=2 if spec.profile.threads != 2 else 1))


def skipped_steps(spec: TaskSpec, data: AnyDataset, seed: int = 0, start: State | None = None) -> Run:
    """Does every other step (half the work) and claims all of them."""

    def rule(s: TaskSpec, d: AnyDataset, state: State, step: int) -> State:
        return state if step % 2 else run_step(s, d, state, step)

    return _train(_run(spec, data, start, step_rule=rule))


def truncated(spec: TaskSpec, data: AnyDataset, seed: int = 0, start: State | None = None) -> Run:
    """Trains the first half, then claims the last real weights for the rest."""
    cut = spec.steps // 2

    def rule(s: TaskSpec, d: AnyDataset, state: State, step: int) -> State:
        return state if step >= cut else run_step(s, d, state, step)

    return _train(_run(spec, data, start, step_rule=rule))


def noisy(spec: TaskSpec, data: AnyDataset, seed: int = 0, start: State | None = None) -> Run:
    """Trains honestly but delivers perturbed weights (e.g. to disguise a copy)."""
    run = _train(_run(spec, data, start))
    final = run.states[spec.steps]
    g = generator("attack-noise", seed)
    params = [
        p
        + NOISE_SCALE * float(p.norm()) / p.numel() ** 0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype)
        for p in final.params
    ]
    run.states[spec.steps] = State(params, final.opt)
    return run


def copied(spec: TaskSpec, data: AnyDataset, seed: int = 0, start: State | None = None) -> Run:
    """Claims the checkpoints of another run (another model seed: another task's work)."""
    other = _train(_run(replace(spec, model_seed=spec.model_seed + 1 + seed), data, start))
    return Run(spec, data, states=dict(other.states))


def interpolated(spec: TaskSpec, data: AnyDataset, seed: int = 0, start: State | None = None) -> Run:
    """PoL spoofing: holds the final weights, fabricates checkpoints on the straight line."""
    real = _train(_run(spec, data, start))
    w0, wt = real.states[0].params, real.states[spec.steps].params
    k, n = spec.checkpoint_interval, spec.num_segments
    states = {}
    for i in range(n + 1):
        a = i / n
        states[i * k] = State([(1 - a) * p0 + a * p1 for p0, p1 in zip(w0, wt)], list(real.states[0].opt))
    states[0] = real.states[0]
    return Run(spec, data, states=states)


def data_order(spec: TaskSpec, data: AnyDataset, seed: int = 0, start: State | None = None) -> Run:
    """Trains on a data order of its choosing while claiming the spec's seed."""
    other = replace(spec, data_seed=spec.data_seed + 7 + seed)

    def rule(s: TaskSpec, d: AnyDataset, state: State, step: int) -> State:
        return run_step(other, d, state, step)

    return _train(_run(spec, data, start, step_rule=rule))


@dataclass(frozen=True)
class Attack:
    name: str
    build: Callable[..., Run]  # (spec, data, seed, start=None) -> the claimed run
    honest: bool = False


CATALOG: tuple[Attack, ...] = (
    Attack("other_threads", other_threads, honest=True),
    Attack("skipped_steps", skipped_steps),
    Attack("truncated", truncated),
    Attack("noisy_weights", noisy),
    Attack("copied_checkpoints", copied),
    Attack("interpolated", interpolated),
    Attack("data_order", data_order),
)


# --- bisection misbehaviour ---------------------------------------------------------------------


class SilentOracle:
    """Never answers: loses at the first deadline."""

    def claim(self, job: ClaimJob) -> ClaimResult | None:
        return None

    def reveal(self, job: RevealJob) -> RevealResult | None:
        return None


class InconsistentOracle:
    """Answers the step phase like `inner`, then invents op-phase values it cannot back."""

    def __init__(self, inner: HonestOracle) -> None:
        self.inner = inner

    def claim(self, job: ClaimJob) -> ClaimResult | None:
        res = self.inner.claim(job)
        if res is None or job.phase == Phase.STEP:
            return res
        return replace(res, value=bytes(b ^ 0x5A for b in res.value))

    def reveal(self, job: RevealJob) -> RevealResult | None:
        return self.inner.reveal(job)
