"""What the scheduler is given and what it returns, as plain frozen records.

Inputs: the devices (measured FLOP/s and memory), the one-way delay and bandwidth
between every pair, the workload (a transformer: layers, hidden size, sequence, batch,
bytes per parameter and per activation), a shape (pipeline stages x data-parallel
degree) or none, and a budget. Output: each device's (stage, dp_rank) and the predicted
iteration time with its parts.

Every record checks its own bounds on construction (a ScheduleError names the field),
because schedules are computed from link reports and capacity that peers supplied: a
NaN bandwidth or a 10^9-device crew must be refused before any search runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from protocol.schedule.errors import ScheduleError

#: Largest crew the scheduler places (its matrices are N x N, its search O(N^2) a move).
MAX_DEVICES = 512
#: Most pipeline stages; the stage order is solved exactly (Held-Karp) up to
#: `protocol.schedule.paths.EXACT_PATH_MAX` stages and by 2-opt above.
MAX_STAGES = 64
#: Bounds on link values: a delay above a minute or a bandwidth outside
#: [1 kbit/s, 100 Tbit/s] is a broken measurement, not a network.
MAX_DELAY_MS = 60_000.0
MIN_BANDWIDTH_GBPS = 1e-6
MAX_BANDWIDTH_GBPS = 1e5
#: Bounds on device capacity: 1 kFLOP/s .. 10 EFLOP/s, up to 16 TiB of memory.
MIN_FLOPS = 1e3
MAX_FLOPS = 1e19
MAX_MEMORY_BYTES = 16 * 2**40
#: Bounds on the workload (generous: a 1000-layer model with 64k hidden and 1M context).
MAX_LAYERS = 4096
MAX_HIDDEN = 2**17
MAX_SEQ = 2**20
MAX_VOCAB = 2**22
MAX_BATCH_SEQS = 2.0**30
MAX_PARAMS = 1e15
MAX_BYTES_PER_VALUE = 64
MAX_MESSAGE_BYTES = 2**50
#: Fewest evaluations a search may be given (enough to evaluate its first candidates).
MIN_EVALUATIONS = 1
MAX_EVALUATIONS = 10**9
#: Evaluations a schedule gets by default: our search settles on the six DT-FM
#: scenarios within a few thousand; this leaves room for harder inputs and stays
#: within seconds on a small machine.
DEFAULT_EVALUATIONS = 20_000
#: Activation memory per token per layer, in units of hidden_size bytes: 34 for fp16
#: without recomputation and with fused attention (Korthikanti et al. 2022, the s^2
#: attention-score term dropped).
DEFAULT_ACTIVATION_MEMORY_FACTOR = 34.0
#: Bytes of training state per parameter: fp16 weights and gradients plus fp32 master
#: weights and two Adam moments (2 + 2 + 4 + 4 + 4).
DEFAULT_STATE_BYTES_PER_PARAM = 16


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise ScheduleError(what)


def _finite_in(x: float, lo: float, hi: float) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and lo <= x <= hi


def _int_in(x: int, lo: int, hi: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi


@dataclass(frozen=True, slots=True)
class Device:
    """One crew member: sustained FLOP/s on this workload's kernels and usable memory."""

    flops: float
    memory_bytes: int

    def __post_init__(self) -> None:
        _check(_finite_in(self.flops, MIN_FLOPS, MAX_FLOPS), f"device flops {self.flops!r} out of range")
        _check(
            _int_in(self.memory_bytes, 0, MAX_MEMORY_BYTES),
            f"device memory {self.memory_bytes!r} out of range",
        )


@dataclass(frozen=True, slots=True)
class Links:
    """One-way delay (ms) and bandwidth (Gbit/s) from row device to column device.

    The diagonal is ignored (a device does not talk to itself). Matrices may be
    asymmetric; the cost model charges each direction with its own entry.
    """

    delay_ms: tuple[tuple[float, ...], ...]
    bandwidth_gbps: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        n = len(self.delay_ms)
        _check(1 <= n <= MAX_DEVICES, f"links cover {n} devices, expected 1..{MAX_DEVICES}")
        _check(len(self.bandwidth_gbps) == n, "delay and bandwidth matrices differ in size")
        for name, rows in (("delay_ms", self.delay_ms), ("bandwidth_gbps", self.bandwidth_gbps)):
            for i, row in enumerate(rows):
                _check(len(row) == n, f"{name} row {i} has {len(row)} entries, expected {n}")
        for i in range(n):
            for j in range(n):
                if i == j:
                    continue
                d, b = self.delay_ms[i][j], self.bandwidth_gbps[i][j]
                _check(_finite_in(d, 0.0, MAX_DELAY_MS), f"delay_ms[{i}][{j}] = {d!r} out of range")
                _check(
                    _finite_in(b, MIN_BANDWIDTH_GBPS, MAX_BANDWIDTH_GBPS),
                    f"bandwidth_gbps[{i}][{j}] = {b!r} out of range",
                )

    @property
    def n(self) -> int:
        return len(self.delay_ms)

    @classmethod
    def from_rows(
        cls, delay_ms: Sequence[Sequence[float]], bandwidth_gbps: Sequence[Sequence[float]]
    ) -> Links:
        n = len(delay_ms)
        _check(1 <= n <= MAX_DEVICES, f"links cover {n} devices, expected 1..{MAX_DEVICES}")
        return cls(
            tuple(tuple(float(x) for x in row) for row in delay_ms),
            tuple(tuple(float(x) for x in row) for row in bandwidth_gbps),
        )


@dataclass(frozen=True, slots=True)
class Shape:
    """Pipeline stages x data-parallel degree; stages * dp_degree devices in all."""

    stages: int
    dp_degree: int

    def __post_init__(self) -> None:
        _check(_int_in(self.stages, 1, MAX_STAGES), f"stages {self.stages!r} outside 1..{MAX_STAGES}")
        _check(_int_in(self.dp_degree, 1, MAX_DEVICES), f"dp_degree {self.dp_degree!r} out of range")
        _check(self.size <= MAX_DEVICES, f"shape {self.stages}x{self.dp_degree} exceeds {MAX_DEVICES}")

    @property
    def size(self) -> int:
        return self.stages * self.dp_degree


@dataclass(frozen=True, slots=True)
class PinnedSizes:
    """Message sizes stated by a source for its own shape (the DT-FM scenarios state
    theirs, rounded their way); used instead of the derived sizes for that shape only."""

    shape: Shape
    activation_bytes: int
    gradient_bytes: int

    def __post_init__(self) -> None:
        _check(_int_in(self.activation_bytes, 0, MAX_MESSAGE_BYTES), "pinned activation_bytes out of range")
        _check(_int_in(self.gradient_bytes, 0, MAX_MESSAGE_BYTES), "pinned gradient_bytes out of range")


@dataclass(frozen=True, slots=True)
class Workload:
    """A decoder-only transformer trained with pipeline x data parallelism.

    `num_params` counts the transformer blocks (0: 12 * layers * hidden^2); a non-zero
    `vocab_size` adds the token embedding to the first stage and the output head to
    the last (both vocab x hidden, untied), which makes those stages heavier.
    """

    num_layers: int
    hidden_size: int
    seq_len: int
    global_batch_seqs: float
    micro_batch_seqs: float = 1.0
    num_params: float = 0.0
    vocab_size: int = 0
    gradient_bytes_per_param: int = 4
    activation_bytes_per_elem: int = 2
    #: Elements of one sequence's boundary tensor (0: seq_len * hidden_size).
    activation_elems_per_seq: int = 0
    state_bytes_per_param: int = DEFAULT_STATE_BYTES_PER_PARAM
    activation_memory_factor: float = DEFAULT_ACTIVATION_MEMORY_FACTOR
    pinned: PinnedSizes | None = None

    def __post_init__(self) -> None:
        _check(_int_in(self.num_layers, 1, MAX_LAYERS), "num_layers out of range")
        _check(_int_in(self.hidden_size, 1, MAX_HIDDEN), "hidden_size out of range")
        _check(_int_in(self.seq_len, 1, MAX_SEQ), "seq_len out of range")
        _check(_finite_in(self.global_batch_seqs, 1e-9, MAX_BATCH_SEQS), "global_batch_seqs out of range")
        _check(_finite_in(self.micro_batch_seqs, 1e-9, MAX_BATCH_SEQS), "micro_batch_seqs out of range")
        _check(_finite_in(self.num_params, 0.0, MAX_PARAMS), "num_params out of range")
        _check(_int_in(self.vocab_size, 0, MAX_VOCAB), "vocab_size out of range")
        for name in ("gradient_bytes_per_param", "activation_bytes_per_elem", "state_bytes_per_param"):
            _check(_int_in(getattr(self, name), 0, MAX_BYTES_PER_VALUE), f"{name} out of range")
        elems_ok = _int_in(self.activation_elems_per_seq, 0, MAX_SEQ * MAX_HIDDEN)
        _check(elems_ok, "activation_elems_per_seq out of range")
        _check(_finite_in(self.activation_memory_factor, 0.0, 1e6), "activation_memory_factor out of range")

    @property
    def block_params(self) -> float:
        return self.num_params if self.num_params > 0 else 12.0 * self.num_layers * self.hidden_size**2

    def shapes_for(self, n_devices: int) -> list[Shape]:
        """Every stages x dp shape that uses all `n_devices` and splits the layers evenly."""
        out = []
        for stages in range(1, min(MAX_STAGES, n_devices, self.num_layers) + 1):
            if n_devices % stages == 0 and self.num_layers % stages == 0:
                out.append(Shape(stages, n_devices // stages))
        return out


@dataclass(frozen=True, slots=True)
class Budget:
    """How long a search may run: at most `max_evaluations` cost evaluations, and it
    stops early when `stop()` says so (a shell passes a wall-clock deadline here; the
    core never reads a clock). A budget of evaluations alone is reproducible: every
    node that runs the same search on the same inputs gets the same assignment."""

    max_evaluations: int
    stop: Callable[[], bool] | None = None

    def __post_init__(self) -> None:
        ok = _int_in(self.max_evaluations, MIN_EVALUATIONS, MAX_EVALUATIONS)
        _check(ok, "max_evaluations out of range")


@dataclass(frozen=True, slots=True)
class Cost:
    """Predicted seconds of one training iteration, by part, in integer nanoseconds
    (exact sums and maxima, so every machine ranks candidates identically).

    dp: the slowest stage group's gradient all-reduce; pp_forward / pp_backward: the
    sum over stage boundaries of the slowest pipeline's activation (gradient) transfer;
    compute: the pipelined forward+backward time of the stages; violations: devices
    placed on a stage whose memory they cannot hold (any violation is infeasible).
    """

    dp_ns: int
    pp_forward_ns: int
    pp_backward_ns: int
    compute_ns: int
    violations: int

    @property
    def communication_ns(self) -> int:
        return self.dp_ns + self.pp_forward_ns + self.pp_backward_ns

    @property
    def total_ns(self) -> int:
        return self.communication_ns + self.compute_ns

    @property
    def seconds(self) -> float:
        return self.total_ns / 1e9

    @property
    def feasible(self) -> bool:
        return self.violations == 0

    def key(self) -> tuple[int, int]:
        """Sort key: feasibility first, then time."""
        return (self.violations, self.total_ns)


@dataclass(frozen=True, slots=True)
class Assignment:
    """Each device's (stage, dp_rank), in device order, with its predicted cost.

    Pipeline r is the devices with dp_rank r in stage order; stage group k is the
    devices with stage k (they all-reduce gradients together)."""

    shape: Shape
    placement: tuple[tuple[int, int], ...]
    cost: Cost
    evaluations: int
    method: str

    def grid(self) -> list[list[int]]:
        """grid[stage][rank] = device."""
        out = [[-1] * self.shape.dp_degree for _ in range(self.shape.stages)]
        for device, (stage, rank) in enumerate(self.placement):
            out[stage][rank] = device
        return out
