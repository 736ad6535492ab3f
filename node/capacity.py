"""Measure what this machine can actually compute.

Capacity is advertised to the market and used to charge time, so it is measured, never
read from a config constant: a node that claims a GPU it does not have, or a CPU figure
from another box, is elected for work it then misses. The benchmark is a short float32
matmul loop (the operation training spends its time in), sized to finish in a fraction
of a second so it can run at every start.

At start the box is often busy (a swarm starts every node at once, and each measures
while the others import torch), so the figure is low: 4.5-6.4 GFLOP/s on the shared dev
box against 100-130 idle. The daemon therefore measures again whenever it is idle
(`REMEASURE_FIRST_S` after start, then every `REMEASURE_EVERY_S`) and advertises the
best of the last few measurements (`CapacityEstimate`): contention can only make the
benchmark slower, never faster, so the highest recent figure is the closest to what the
device does, and the window forgets an old high if the device really got slower.

Only a node that computes for the market (a worker or verifier) is measured: torch is
imported here, inside the functions, so a validator-only node never loads it (it is
most of a daemon's memory) and reports `unmeasured()` instead.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, replace

#: Matmul side: big enough to reach the BLAS steady state, small enough for any box.
BENCH_N = 256
#: Wall time to spend in the timed loop; one warm-up multiply precedes it.
BENCH_SECONDS = 0.2
#: Hard cap on iterations, so a very fast device still finishes promptly.
MAX_ITERS = 10_000
#: When an idle daemon measures again: once the start-up load has passed, then now and then.
REMEASURE_FIRST_S = 60.0
REMEASURE_EVERY_S = 600.0
#: Measurements the advertised figure is the best of.
REMEASURE_WINDOW = 4


@dataclass(frozen=True, slots=True)
class Capacity:
    device: str  # "cpu", "cuda", "mps"
    device_name: str
    memory_bytes: int
    threads: int
    flops: int  # measured float32 matmul FLOP/s
    torch_version: str


def detect_device(preferred: str = "auto") -> str:
    """The device compute jobs run on: the preferred one if present, else the best found."""
    if preferred not in ("auto", "cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {preferred!r}")
    if preferred == "cpu":
        return "cpu"
    import torch
    has_cuda = torch.cuda.is_available()
    has_mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if has_cuda and preferred in ("cuda", "auto"):
        return "cuda"
    if has_mps and preferred in ("mps", "auto"):
        return "mps"
    return "cpu"


def _memory_bytes(device: str) -> int:
    if device == "cuda":
        import torch

        return int(torch.cuda.get_device_properties(0).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError):
        return 0


def _device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return str(torch.cuda.get_device_name(0))
    return os.uname().machine if device == "cpu" else device


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def matmul_flops(device: str, n: int = BENCH_N, seconds: float = BENCH_SECONDS) -> int:
    """FLOP/s of repeated n x n float32 matmuls on `device` (2 n^3 FLOPs each)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    a = torch.rand((n, n), generator=gen).to(device)
    b = torch.rand((n, n), generator=gen).to(device)
    c = a @ b  # warm-up: kernel selection, allocation
    _sync(device)
    iters = 0
    start = time.perf_counter()
    while iters < MAX_ITERS:
        c = a @ b
        iters += 1
        if iters % 8 == 0:
            _sync(device)
            if time.perf_counter() - start >= seconds:
                break
    _sync(device)
    elapsed = max(time.perf_counter() - start, 1e-9)
    del c
    return int(2 * n**3 * iters / elapsed)


def unmeasured(threads: int) -> Capacity:
    """What a node that does no market compute reports: no device probe, no benchmark,
    no torch (flops 0 means "not measured", and such a node never registers as a worker)."""
    try:
        memory = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError):
        memory = 0
    return Capacity("cpu", os.uname().machine, memory, threads, 0, "")


def measure_capacity(threads: int, preferred: str = "auto", seconds: float = BENCH_SECONDS) -> Capacity:
    """Detect the device and benchmark it with the thread count compute jobs will use."""
    import torch

    torch.set_num_threads(threads)
    device = detect_device(preferred)
    return Capacity(
        device=device,
        device_name=_device_name(device),
        memory_bytes=_memory_bytes(device),
        threads=threads,
        flops=matmul_flops(device, seconds=seconds),
        torch_version=torch.__version__,
    )


class CapacityEstimate:
    """The capacity to advertise: the latest measurement, with the best FLOP/s of the
    last `REMEASURE_WINDOW` ones (see the module docstring for why the best)."""

    def __init__(self, first: Capacity, window: int = REMEASURE_WINDOW) -> None:
        self._flops: deque[int] = deque([first.flops], maxlen=window)
        self.current = first
        self.measurements = 1

    def add(self, measured: Capacity) -> Capacity:
        self._flops.append(measured.flops)
        self.measurements += 1
        self.current = replace(measured, flops=max(self._flops))
        return self.current
