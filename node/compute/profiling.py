"""Profiling: measure how far honest reruns drift, to set the task's threshold.

Reruns of a short stretch that differ only in what the market lets an honest solver
differ in (thread count) give the noise floor; reruns with another data seed give the
size of a real difference. Zero noise means the profile is bit-reproducible and the
threshold is zero.

When the verifier's device differs from the solver's (a CPU verifier checking a CUDA
solver, or one GPU model checking another), bits differ even under deterministic
settings: `cross_device_profile` reruns the stretch on both devices and sets the
threshold from their distance. Its logic is tested with two CPU thread counts standing
in for two devices; on CUDA it has not been exercised here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from node.compute.datasets import AnyDataset
from node.compute.trainer import Run, State
from node.compute.verify import distance
from protocol.pol.jobs import ProfileResult
from protocol.pol.sampling import threshold_from_profile
from protocol.pol.spec import TaskSpec


def profile(
    spec: TaskSpec, data: AnyDataset, stretch_steps: int, thread_counts: tuple[int, ...]
) -> ProfileResult:
    stretch = max(1, min(stretch_steps, spec.steps))
    base = Run(spec, data)
    start, ref = base.state_at(0), base.state_at(stretch)
    noise = [distance(start, ref, Run(spec, data, threads=t).state_at(stretch))[0] for t in thread_counts]
    noise.append(distance(start, ref, Run(spec, data).state_at(stretch))[0])  # same settings again
    other = replace(spec, data_seed=spec.data_seed + 1)
    signal = [distance(start, ref, Run(other, data).state_at(stretch))[0]]
    return ProfileResult(
        spec.dataset_hash, tuple(noise), tuple(signal), threshold_from_profile(noise, signal)
    )


@dataclass(frozen=True)
class Device:
    """Where a party trains: a torch device and a thread count."""

    kind: str = "cpu"
    threads: int = 1


def _on_cpu(state: State) -> State:
    return State([p.cpu() for p in state.params], [o.cpu() for o in state.opt])


def cross_device_profile(
    spec: TaskSpec, data: AnyDataset, stretch_steps: int, solver: Device, verifier: Device
) -> ProfileResult:
    """Threshold for a verifier on `verifier` checking a solver on `solver`: the noise is
    the distance between the two devices' honest reruns (and the solver's own rerun),
    the signal the distance to a rerun with another data seed."""
    stretch = max(1, min(stretch_steps, spec.steps))
    base = Run(spec, data, threads=solver.threads, device=solver.kind)
    start, ref = _on_cpu(base.state_at(0)), _on_cpu(base.state_at(stretch))
    theirs = Run(spec, data, threads=verifier.threads, device=verifier.kind)
    again = Run(spec, data, threads=solver.threads, device=solver.kind)
    noise = [distance(start, ref, _on_cpu(r.state_at(stretch)))[0] for r in (theirs, again)]
    other = Run(replace(spec, data_seed=spec.data_seed + 1), data, threads=solver.threads, device=solver.kind)
    signal = [distance(start, ref, _on_cpu(other.state_at(stretch)))[0]]
    torch.set_num_threads(spec.profile.threads)
    return ProfileResult(
        spec.dataset_hash, tuple(noise), tuple(signal), threshold_from_profile(noise, signal)
    )
