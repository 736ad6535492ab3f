"""Profiling: measure how far honest reruns drift, to set the task's threshold.

Reruns of a short stretch that differ only in what the market lets an honest solver
differ in (thread count) give the noise floor; reruns with another data seed give the
size of a real difference. Zero noise means the profile is bit-reproducible and the
threshold is zero.
"""

from __future__ import annotations

from dataclasses import replace

from node.compute.datasets import AnyDataset
from node.compute.trainer import Run
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
