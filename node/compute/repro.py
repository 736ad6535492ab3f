"""Reproducibility profiles: the settings under which a rerun gives the same bits.

CPU: the same torch build, the same thread count and deterministic algorithms give
identical results (a different thread count does not: reduction order changes).

CUDA: deterministic algorithms, cuDNN's deterministic kernels without autotuning, no
TF32, and cuBLAS's fixed workspace (`CUBLAS_WORKSPACE_CONFIG`, which must be in the
environment before the first cuBLAS call, so it is set here and by `polnet node` before
any CUDA work). Even so, results match only on the same GPU model, driver and torch
build; a verifier on another device class needs the profiled threshold
(`node.compute.profiling.cross_device_profile`).

The CUDA path has not been exercised in this project's tests (no GPU on the machines
they ran on); everything that does not need a GPU is tested (the settings, the threshold
logic with two CPU thread counts standing in for two devices).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from protocol.errors import SpecError
from protocol.pol.spec import DeviceClass, TaskSpec

#: cuBLAS: a fixed workspace per handle makes its GEMM reductions deterministic.
CUBLAS_WORKSPACE_CONFIG = ":4096:8"


@dataclass(frozen=True)
class Settings:
    """What a profile pins, as data (so it can be checked without a GPU)."""

    device: str
    threads: int
    deterministic: bool
    env: tuple[tuple[str, str], ...] = ()
    cudnn_deterministic: bool = False
    cudnn_benchmark: bool = False
    allow_tf32: bool = False


def settings(spec: TaskSpec, threads: int | None = None, device: str | None = None) -> Settings:
    dev = device or ("cuda" if spec.profile.device is DeviceClass.CUDA else "cpu")
    det = spec.profile.deterministic
    n = threads or spec.profile.threads
    if dev.startswith("cuda"):
        env = (("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG),) if det else ()
        return Settings(dev, n, det, env, cudnn_deterministic=det, cudnn_benchmark=False, allow_tf32=False)
    return Settings(dev, n, det)


def apply(spec: TaskSpec, threads: int | None = None, device: str | None = None) -> Settings:
    """Apply the profile before any tensor work; refuse a device this node lacks."""
    s = settings(spec, threads, device)
    if s.device.startswith("cuda") and not torch.cuda.is_available():
        raise SpecError("profile asks for CUDA and this node has none")
    for key, value in s.env:
        os.environ[key] = value
    if torch.get_num_threads() != s.threads:
        torch.set_num_threads(s.threads)
    # Setting it costs ~7 ms of CPU even when unchanged (a Run applies the profile at
    # every checkpoint), so only a change is applied.
    if torch.are_deterministic_algorithms_enabled() != s.deterministic:
        torch.use_deterministic_algorithms(s.deterministic)
    if s.device.startswith("cuda"):
        torch.backends.cudnn.deterministic = s.cudnn_deterministic
        torch.backends.cudnn.benchmark = s.cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = s.allow_tf32
        torch.backends.cudnn.allow_tf32 = s.allow_tf32
    return s
