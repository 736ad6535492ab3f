"""Training under a reproducibility profile, with checkpoints every k steps.

A `Run` is one party's training of a task: it owns the state at every checkpoint and
can replay any step from the nearest one, which is all the pinpoint game ever asks of
it. The profile is applied before any tensor work (thread count, deterministic
algorithms); an explicit `threads` override models an honest solver on another machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from node.compute.datasets import Dataset
from node.compute.ops import dtype_of, execute, gather, init_params, layer_forward
from node.compute.tensors import digest
from protocol.errors import SpecError
from protocol.pol.merkle import CheckpointLeaf, leaf_hash, merkle_root
from protocol.pol.ops import OpKind, group_hash, state_slots_per_param, step_ops
from protocol.pol.spec import DeviceClass, LayerKind, TaskSpec, layer_params, validate_spec

#: Checkpoint states a Run keeps in memory; bounded by MAX_CHECKPOINTS in the spec.
MAX_KEPT_STATES = 4097


@dataclass
class State:
    params: list[torch.Tensor]
    opt: list[torch.Tensor]

    def digests(self) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
        return tuple(digest(p) for p in self.params), tuple(digest(o) for o in self.opt)

    def leaf(self, step: int, data_seed: int) -> CheckpointLeaf:
        w, o = self.digests()
        return CheckpointLeaf(step, group_hash(w), group_hash(o), data_seed)

    def flat_params(self) -> torch.Tensor:
        return torch.cat([p.reshape(-1).to(torch.float64) for p in self.params])

    def flat_opt(self) -> torch.Tensor:
        if not self.opt:
            return torch.zeros(0, dtype=torch.float64)
        return torch.cat([o.reshape(-1).to(torch.float64) for o in self.opt])


def apply_profile(spec: TaskSpec, threads: int | None = None) -> None:
    """Pin what makes CPU results bit-reproducible: thread count and algorithms."""
    if spec.profile.device is DeviceClass.CUDA and not torch.cuda.is_available():
        raise SpecError("profile asks for CUDA and this node has none")
    torch.set_num_threads(threads or spec.profile.threads)
    torch.use_deterministic_algorithms(spec.profile.deterministic)


def initial_state(spec: TaskSpec) -> State:
    params = init_params(spec)
    ns = state_slots_per_param(spec)
    return State(params, [torch.zeros_like(p) for p in params for _ in range(ns)])


StepHook = Callable[[int, int, tuple[torch.Tensor, ...]], None]


def run_step(spec: TaskSpec, data: Dataset, state: State, step: int, hook: StepHook | None = None) -> State:
    """One training step as the explicit op sequence; `hook(op_index, step, outputs)`."""
    ops = _ops(spec)
    start = [*state.params, *state.opt]
    outs: list[tuple[torch.Tensor, ...]] = []
    for j, op in enumerate(ops):
        o = execute(spec, data, op, step, gather(op, start, outs))
        outs.append(o)
        if hook is not None:
            hook(j, step, o)
    n = len(state.params)
    final = outs[-1]
    assert ops[-1].kind is OpKind.STATE
    return State(list(final[:n]), list(final[n:]))


_OPS_CACHE: dict[TaskSpec, list] = {}  # type: ignore[type-arg]


def _ops(spec: TaskSpec) -> list:  # type: ignore[type-arg]
    if spec not in _OPS_CACHE:
        if len(_OPS_CACHE) > 64:
            _OPS_CACHE.clear()
        _OPS_CACHE[spec] = step_ops(spec)
    return _OPS_CACHE[spec]


StepRule = Callable[[TaskSpec, Dataset, State, int], State]


def honest_step(spec: TaskSpec, data: Dataset, state: State, step: int) -> State:
    return run_step(spec, data, state, step)


@dataclass
class Run:
    """One party's training: states at checkpoints (its claims) and how it steps."""

    spec: TaskSpec
    data: Dataset
    threads: int | None = None
    step_rule: StepRule = honest_step
    states: dict[int, State] = field(default_factory=dict)
    steps_executed: int = 0

    def __post_init__(self) -> None:
        validate_spec(self.spec)
        if self.data.digest != self.spec.dataset_hash:
            raise SpecError("dataset does not match the spec's dataset hash")
        if 0 not in self.states:
            self.states[0] = initial_state(self.spec)

    def state_at(self, step: int) -> State:
        if step in self.states:
            return self.states[step]
        base = max(s for s in self.states if s <= step)
        state = self.states[base]
        apply_profile(self.spec, self.threads)
        for t in range(base, step):
            state = self.step_rule(self.spec, self.data, state, t)
            self.steps_executed += 1
        return state

    def train(self) -> None:
        """Train to the end, keeping every checkpoint."""
        k = self.spec.checkpoint_interval
        for i in range(1, self.spec.num_checkpoints):
            if i * k not in self.states:
                self.states[i * k] = self.state_at(i * k)

    def checkpoints(self) -> list[State]:
        k = self.spec.checkpoint_interval
        return [self.state_at(i * k) for i in range(self.spec.num_checkpoints)]

    def leaves(self) -> list[CheckpointLeaf]:
        k = self.spec.checkpoint_interval
        return [s.leaf(i * k, self.spec.data_seed) for i, s in enumerate(self.checkpoints())]

    def root(self) -> bytes:
        return merkle_root([leaf_hash(x) for x in self.leaves()])


def accuracy(spec: TaskSpec, data: Dataset, state: State) -> float:
    """Fraction of the dataset the model classifies correctly (dropout off)."""
    with torch.no_grad():
        x = data.x.to(dtype_of(spec))
        ps = iter(state.params)
        for i, layer in enumerate(spec.layers):
            p = [next(ps) for _ in layer_params(layer)]
            if layer.kind is not LayerKind.DROPOUT:
                x = layer_forward(layer, i, spec, 0, x, p)
        return float((x.argmax(1) == data.y).double().mean())
