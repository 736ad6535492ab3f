"""Training under a reproducibility profile, with checkpoints every k steps.

A `Run` is one party's training of a task: it owns the state at every checkpoint and
can replay any step from the nearest one, which is all the pinpoint game ever asks of
it. The profile is applied before any tensor work (thread count, deterministic
algorithms, see `node.compute.repro`); an explicit `threads` override models an honest
solver on another machine. Steps run on the fast path (one autograd graph,
`node.compute.fast`) unless someone needs the op trace, which `run_step` then produces
op by op; both give the same bits.

A fine-tuning task (`spec.base`) has no seeded initialisation: its checkpoint 0 is the
base's weights with a zero optimizer state (`base_state`), given to the Run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from node.compute import fast, repro
from node.compute.datasets import AnyDataset
from node.compute.ops import dtype_of, execute, gather, graph_of, init_params
from node.compute.tensors import digest
from protocol.errors import BlobError, SpecError
from protocol.pol.merkle import CheckpointLeaf, leaf_hash, merkle_root
from protocol.pol.ops import OpDesc, OpKind, group_hash, state_slots_per_param, step_ops
from protocol.pol.spec import TaskSpec, param_shapes, validate_spec

#: Checkpoint states a Run keeps in memory; bounded by MAX_CHECKPOINTS in the spec.
MAX_KEPT_STATES = 4097


@dataclass
class State:
    """Parameters and optimizer state at a step boundary. Its tensors are never changed
    in place (a step makes new ones), so their digests are computed once."""

    params: list[torch.Tensor]
    opt: list[torch.Tensor]
    #: the training loss of the step that produced this state (None: not a trained step)
    loss: float | None = None
    _digests: tuple[tuple[bytes, ...], tuple[bytes, ...]] | None = field(
        default=None, repr=False, compare=False
    )

    def digests(self) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
        if self._digests is None:
            self._digests = tuple(digest(p) for p in self.params), tuple(digest(o) for o in self.opt)
        return self._digests

    def leaf(self, step: int, data_seed: int) -> CheckpointLeaf:
        w, o = self.digests()
        return CheckpointLeaf(step, group_hash(w), group_hash(o), data_seed)

    def flat_params(self) -> torch.Tensor:
        return torch.cat([p.reshape(-1).to(torch.float64) for p in self.params])

    def flat_opt(self) -> torch.Tensor:
        if not self.opt:
            return torch.zeros(0, dtype=torch.float64)
        return torch.cat([o.reshape(-1).to(torch.float64) for o in self.opt])


def apply_profile(spec: TaskSpec, threads: int | None = None, device: str | None = None) -> None:
    """Pin what makes results bit-reproducible (threads, algorithms; CUDA's settings)."""
    repro.apply(spec, threads, device)


def _zero_opt(spec: TaskSpec, params: list[torch.Tensor]) -> list[torch.Tensor]:
    ns = state_slots_per_param(spec)
    return [torch.zeros_like(p) for p in params for _ in range(ns)]


def initial_state(spec: TaskSpec) -> State:
    """Checkpoint 0 of a from-scratch task: the seeded init and a zero optimizer state."""
    if spec.base is not None:
        raise SpecError("a fine-tuning task starts from its base weights (see base_state), not an init")
    params = init_params(spec)
    return State(params, _zero_opt(spec, params))


def base_state(spec: TaskSpec, params: list[torch.Tensor]) -> State:
    """Checkpoint 0 of a fine-tuning task: exactly the named base, optimizer state zero."""
    if spec.base is None:
        raise SpecError("the spec names no base model")
    shapes = [tuple(p.shape) for p in params]
    if shapes != param_shapes(spec) or any(p.dtype != dtype_of(spec) for p in params):
        raise BlobError("the base weights do not have the spec's parameter shapes and dtype")
    if group_hash([digest(p) for p in params]) != spec.base.weights_hash:
        raise BlobError("the base weights do not hash to the spec's base")
    params = [p.detach().clone() for p in params]
    return State(params, _zero_opt(spec, params))


StepHook = Callable[[int, int, tuple[torch.Tensor, ...]], None]


def run_step(
    spec: TaskSpec, data: AnyDataset, state: State, step: int, hook: StepHook | None = None
) -> State:
    """One training step. With a hook, op by op (`hook(op_index, step, outputs)` sees
    every op's outputs: the trace); without, on the fast path. Same bits either way."""
    if hook is None:
        params, opt, loss = fast.step(spec, data, state.params, state.opt, step)
        return State(params, opt, loss)
    ops = _ops(spec)
    start = [*state.params, *state.opt]
    device = state.params[0].device
    outs: list[tuple[torch.Tensor, ...]] = []
    for j, op in enumerate(ops):
        o = execute(spec, data, op, step, gather(op, start, outs))
        if op.kind is OpKind.BATCH:
            o = tuple(t.to(device) for t in o)
        outs.append(o)
        hook(j, step, o)
    n = len(state.params)
    final = outs[-1]
    assert ops[-1].kind is OpKind.STATE
    return State(list(final[:n]), list(final[n:]), float(outs[1 + len(graph_of(spec))][0]))


_OPS_CACHE: dict[TaskSpec, list[OpDesc]] = {}


def _ops(spec: TaskSpec) -> list[OpDesc]:
    if spec not in _OPS_CACHE:
        if len(_OPS_CACHE) > 64:
            _OPS_CACHE.clear()
        _OPS_CACHE[spec] = step_ops(spec)
    return _OPS_CACHE[spec]


StepRule = Callable[[TaskSpec, AnyDataset, State, int], State]


def honest_step(spec: TaskSpec, data: AnyDataset, state: State, step: int) -> State:
    return run_step(spec, data, state, step)


@dataclass
class Run:
    """One party's training: states at checkpoints (its claims) and how it steps."""

    spec: TaskSpec
    data: AnyDataset
    threads: int | None = None
    step_rule: StepRule = honest_step
    states: dict[int, State] = field(default_factory=dict)
    steps_executed: int = 0
    #: training loss of every step this Run executed (for loss curves)
    losses: dict[int, float] = field(default_factory=dict)
    device: str | None = None

    def __post_init__(self) -> None:
        validate_spec(self.spec)
        if self.data.digest != self.spec.dataset_hash:
            raise SpecError("dataset does not match the spec's dataset hash")
        if 0 not in self.states and self.spec.base is None:
            self.states[0] = initial_state(self.spec)
        if not self.states:
            raise SpecError("a fine-tuning run needs its checkpoint 0 (base_state) or a start state")
        if self.device is not None:
            self.states = {k: _to(v, self.device) for k, v in self.states.items()}

    def state_at(self, step: int) -> State:
        if step in self.states:
            return self.states[step]
        base = max(s for s in self.states if s <= step)
        state = self.states[base]
        apply_profile(self.spec, self.threads, self.device)
        for t in range(base, step):
            state = self.step_rule(self.spec, self.data, state, t)
            self.steps_executed += 1
            if state.loss is not None:
                self.losses[t] = state.loss
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


def _to(state: State, device: str) -> State:
    return State([p.to(device) for p in state.params], [o.to(device) for o in state.opt], state.loss)


def accuracy(spec: TaskSpec, data: AnyDataset, state: State) -> float:
    """Fraction classified correctly, dropout off: every sample of a version-1 dataset;
    next-token accuracy on the held-out split (bounded windows) for a language model."""
    from node.compute.evaluate import evaluate

    return evaluate(spec, data, state).accuracy
