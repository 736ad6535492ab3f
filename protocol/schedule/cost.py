"""The cost model: the paper's communication terms plus compute and memory.

Communication (Yuan et al. 2022, sec. 3; `../shared/scenarios/dtfm/README.md`): a
transfer of X bytes from u to v takes delay(u,v) + 8X / bandwidth(u,v).

- Data parallel: each stage group's D devices all-reduce that stage's gradient G; a
  device exchanges G/D with each other member both ways, so its time is
  sum_j t(i,j,G/D) + t(j,i,G/D); a group takes its slowest member's time and DP is
  the slowest group (the groups run in parallel).
- Pipeline: at each of the S-1 stage boundaries every pipeline sends one activation
  message forward and its gradient back; a boundary takes the slowest pipeline's
  transfer, and the boundaries add up (the paper's DP + 2 PP; each direction is
  charged with its own matrix entry, which is 2 PP when links are symmetric).

What the paper leaves out, added here:

- Compute: stage k's work on a device (forward + backward of its layers over the
  rank's whole batch, 3 x the forward FLOPs) at the device's measured FLOP/s; a stage
  takes its slowest device's time (data-parallel ranks wait for each other at the
  all-reduce), and the M micro-batches pipeline through the stages, so the iteration
  spends (sum_k c_k + (M - 1) max_k c_k) / M computing (GPipe / 1F1B with no overlap
  of communication and compute, as the paper's communication terms assume none).
- Memory: stage k holds its parameters' training state and, under 1F1B, the
  activations of min(M, S - k) micro-batches in flight; a device that cannot hold its
  stage makes the assignment infeasible (counted in `violations`, ranked first).

Times are integers (nanoseconds) computed once per device pair with IEEE-754 basic
operations, so every sum and maximum afterwards is exact and every machine ranks the
same candidates the same way, which consensus on a schedule needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from protocol.schedule.errors import ScheduleError
from protocol.schedule.model import Cost, Device, Links, Shape, Workload

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
#: Any single transfer or stage time is capped here (about 78 hours) so that sums of
#: S terms and the infeasibility penalty stay inside int64 with room to spare.
MAX_TIME_NS = 2**48
#: FLOPs of one transformer layer's forward pass per token: 24 h^2 for the matmuls
#: plus 4 s h for attention scores and their use (Narayanan et al. 2021, eq. 3).
MATMUL_FLOPS_PER_H2 = 24
ATTENTION_FLOPS_PER_SH = 4
#: Backward costs twice the forward.
TRAIN_FLOPS_FACTOR = 3


FloatArray = npt.NDArray[np.float64]


def transfer_ns(delay_ms: FloatArray, bandwidth_gbps: FloatArray, nbytes: int) -> IntArray:
    """delay + 8 * bytes / bandwidth, in whole ns (bits / (Gbit/s) = ns), capped."""
    t = delay_ms * NS_PER_MS + (8.0 * float(nbytes)) / bandwidth_gbps
    out: IntArray = np.minimum(np.rint(t), MAX_TIME_NS).astype(np.int64)
    np.fill_diagonal(out, 0)
    return out


@dataclass(frozen=True, slots=True)
class StageSizes:
    """What each stage moves, computes and holds, derived from the workload."""

    activation_bytes: int  # one boundary message of one data-parallel rank
    gradient_bytes: tuple[int, ...]  # per stage
    flops: tuple[float, ...]  # per stage, one rank's whole batch, forward + backward
    memory_bytes: tuple[int, ...]  # per stage
    micro_batches: int


def stage_sizes(workload: Workload, shape: Shape) -> StageSizes:
    w, s = workload, shape.stages
    if w.num_layers % s:
        raise ScheduleError(f"{w.num_layers} layers do not split into {s} equal stages")
    layers = w.num_layers // s
    rank_seqs = w.global_batch_seqs / shape.dp_degree
    micro = max(1, math.ceil(rank_seqs / w.micro_batch_seqs - 1e-9))
    elems = w.activation_elems_per_seq or w.seq_len * w.hidden_size
    vocab = float(w.vocab_size) * w.hidden_size
    params = [w.block_params / s + vocab * ((k == 0) + (k == s - 1)) for k in range(s)]
    pinned = w.pinned if w.pinned is not None and w.pinned.shape == shape else None
    if pinned is not None:
        activation = pinned.activation_bytes
        extra = [p - w.block_params / s for p in params]
        gradient = [pinned.gradient_bytes + round(e * w.gradient_bytes_per_param) for e in extra]
    else:
        activation = round(rank_seqs * elems * w.activation_bytes_per_elem)
        gradient = [round(p * w.gradient_bytes_per_param) for p in params]
    tokens = rank_seqs * w.seq_len
    h = float(w.hidden_size)
    per_layer = MATMUL_FLOPS_PER_H2 * h * h + ATTENTION_FLOPS_PER_SH * w.seq_len * h
    head = 2.0 * h * w.vocab_size
    flops = [TRAIN_FLOPS_FACTOR * tokens * (layers * per_layer + head * (k == s - 1)) for k in range(s)]
    act_per_micro = w.micro_batch_seqs * w.seq_len * layers * w.activation_memory_factor * h
    state = w.state_bytes_per_param
    memory = [round(params[k] * state + min(micro, s - k) * act_per_micro) for k in range(s)]
    return StageSizes(activation, tuple(gradient), tuple(flops), tuple(memory), micro)


@dataclass(frozen=True, slots=True)
class Problem:
    """One scheduling instance compiled to integer matrices.

    dp_weight[c][i, j]: device i's all-reduce time with j for gradient class c;
    stage_class[k]: the class of stage k (stages with equal gradients share one);
    fwd[u, v]: an activation message from u to v; compute[i, k]: device i's time on
    stage k (zero when compute is not modelled); fits[i, k]: i can hold stage k.
    """

    shape: Shape
    dp_weight: IntArray
    stage_class: IntArray
    fwd: IntArray
    compute: IntArray
    fits: BoolArray
    micro_batches: int

    @property
    def n(self) -> int:
        return int(self.fwd.shape[0])


def build_problem(
    devices: Sequence[Device],
    links: Links,
    workload: Workload,
    shape: Shape,
    *,
    compute: bool = True,
    memory: bool = True,
) -> Problem:
    """Compile inputs for one shape. `compute=False, memory=False` is the paper's
    communication-only model (devices then only need to be counted)."""
    n = links.n
    if len(devices) != n:
        raise ScheduleError(f"{len(devices)} devices but links for {n}")
    if shape.size != n:
        raise ScheduleError(f"shape {shape.stages}x{shape.dp_degree} does not place {n} devices")
    sizes = stage_sizes(workload, shape)
    delay = np.asarray(links.delay_ms, dtype=np.float64)
    bandwidth = np.asarray(links.bandwidth_gbps, dtype=np.float64).copy()
    np.fill_diagonal(bandwidth, 1.0)
    d = shape.dp_degree
    classes = sorted(set(sizes.gradient_bytes))
    dp_weight = np.zeros((len(classes), n, n), dtype=np.int64)
    for c, grad in enumerate(classes):
        share = transfer_ns(delay, bandwidth, grad // d if d > 1 else 0)
        dp_weight[c] = share + share.T if d > 1 else 0
    stage_class = np.array([classes.index(g) for g in sizes.gradient_bytes], dtype=np.int64)
    fwd = transfer_ns(delay, bandwidth, sizes.activation_bytes)
    s = shape.stages
    flops = np.array([dev.flops for dev in devices], dtype=np.float64)
    if compute:
        stage_flops = np.array(sizes.flops, dtype=np.float64)
        times = np.rint(stage_flops[None, :] / flops[:, None] * NS_PER_S)
        compute_ns = np.minimum(times, MAX_TIME_NS).astype(np.int64)
    else:
        compute_ns = np.zeros((n, s), dtype=np.int64)
    mem = np.array([dev.memory_bytes for dev in devices], dtype=np.int64)
    need = np.array(sizes.memory_bytes, dtype=np.int64)
    fits = mem[:, None] >= need[None, :] if memory else np.ones((n, s), dtype=np.bool_)
    return Problem(shape, dp_weight, stage_class, fwd, compute_ns, fits, sizes.micro_batches)


def evaluate(problem: Problem, grid: IntArray) -> Cost:
    """The exact cost of one assignment, grid[stage, rank] = device."""
    v, dp, pf, pb, comp = evaluate_many(problem, grid[None, :, :])
    return Cost(int(dp[0]), int(pf[0]), int(pb[0]), int(comp[0]), int(v[0]))


def evaluate_many(problem: Problem, grids: IntArray) -> tuple[IntArray, ...]:
    """Vectorised `evaluate` over a batch grids[b, stage, rank]: the arrays
    (violations, dp, pp_forward, pp_backward, compute), one entry per grid."""
    parts = cost_parts(problem, grids)
    return parts.violations, parts.dp, parts.pp_forward, parts.pp_backward, parts.compute


@dataclass(frozen=True, slots=True)
class Parts:
    """The terms of a batch of grids, with the per-device and per-pipeline values
    behind each maximum (the search reads those to see how close a term is to moving)."""

    rows: IntArray  # [b, stage, rank]: each device's all-reduce time
    forward: IntArray  # [b, boundary, rank]: each pipeline's activation transfer
    backward: IntArray  # [b, boundary, rank]: its gradient transfer back
    stage_time: IntArray  # [b, stage]: the slowest device's compute time
    violations: IntArray
    dp: IntArray
    pp_forward: IntArray
    pp_backward: IntArray
    compute: IntArray

    @property
    def total(self) -> IntArray:
        out: IntArray = self.dp + self.pp_forward + self.pp_backward + self.compute
        return out


def cost_parts(problem: Problem, grids: IntArray) -> Parts:
    b, s, d = grids.shape
    stages = np.arange(s)[None, :, None]
    if d > 1:
        cls = problem.stage_class[None, :, None, None]
        rows = problem.dp_weight[cls, grids[:, :, :, None], grids[:, :, None, :]].sum(axis=3)
    else:
        rows = np.zeros((b, s, d), dtype=np.int64)
    dp = rows.max(axis=(1, 2))
    here, there = grids[:, :-1, :], grids[:, 1:, :]
    forward, backward = problem.fwd[here, there], problem.fwd[there, here]
    if s > 1:
        pf, pb = forward.max(axis=2).sum(axis=1), backward.max(axis=2).sum(axis=1)
    else:
        pf = pb = np.zeros(b, dtype=np.int64)
    stage_time = problem.compute[grids, stages].max(axis=2)
    m = problem.micro_batches
    comp = (stage_time.sum(axis=1) + (m - 1) * stage_time.max(axis=1)) // m
    violations = (~problem.fits[grids, stages]).sum(axis=(1, 2)).astype(np.int64)
    return Parts(rows, forward, backward, stage_time, violations, dp, pf, pb, comp)


def total_keys(problem: Problem, grids: IntArray) -> tuple[IntArray, IntArray]:
    """(violations, total ns) of each grid in a batch: the search's ranking."""
    parts = cost_parts(problem, grids)
    return parts.violations, parts.total


def placement_of(grid: IntArray) -> tuple[tuple[int, int], ...]:
    """Device order: device i -> (stage, rank)."""
    s, d = grid.shape
    out: list[tuple[int, int]] = [(0, 0)] * (s * d)
    for k in range(s):
        for r in range(d):
            out[int(grid[k, r])] = (k, r)
    return tuple(out)


def grid_of(placement: Sequence[tuple[int, int]], shape: Shape) -> IntArray:
    """Inverse of `placement_of`; raises ScheduleError unless it is a bijection onto
    stages x ranks."""
    if len(placement) != shape.size:
        raise ScheduleError(f"{len(placement)} placements for a {shape.stages}x{shape.dp_degree} shape")
    grid = np.full((shape.stages, shape.dp_degree), -1, dtype=np.int64)
    for device, (stage, rank) in enumerate(placement):
        if not (0 <= stage < shape.stages and 0 <= rank < shape.dp_degree):
            raise ScheduleError(f"device {device}: ({stage}, {rank}) outside the shape")
        if grid[stage, rank] != -1:
            other = int(grid[stage, rank])
            raise ScheduleError(f"({stage}, {rank}) is given to devices {other} and {device}")
        grid[stage, rank] = device
    return grid
