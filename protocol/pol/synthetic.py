"""A hash-chain trainer with exactly the proof structure of real training.

netsim's big seed sweeps cannot afford torch for hundreds of tasks, but they must still
exercise checkpoints, Merkle proofs, sampling, the pinpoint game and the referee. Here a
"tensor" is its 32-byte digest and every op output is the hash of the op, the step and
its input digests, following the same dataflow (`step_ops`) as the torch trainer. So a
step's STATE op yields real state hashes, the op chain is the real chain, and a cheat
(skipped or corrupted steps) diverges exactly where it would with tensors. Distances are
0 (identical) or 1 (different): the synthetic profile is bit-reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from protocol.encoding import pack, sha256
from protocol.errors import BlobError
from protocol.pol.jobs import RefereeJob, RefereeResult, VerifyJob, VerifyResult
from protocol.pol.merkle import CheckpointLeaf, leaf_hash, merkle_root
from protocol.pol.ops import START, OpDesc, OpKind, group_hash, op_digest, state_slots_per_param, step_ops
from protocol.pol.oracle import Digests
from protocol.pol.spec import TaskSpec, param_shapes, validate_spec

DOMAIN = b"polnet/pol/synthetic/v1\x00"
#: Checkpoint states kept in memory by one run (the rest are replayed on demand).
MAX_CACHED_STATES = 4097


def _h(*parts: object) -> bytes:
    return sha256(DOMAIN + pack(list(parts)))


def execute_op(spec: TaskSpec, op: OpDesc, step: int, inputs: Digests) -> Digests:
    """The synthetic semantics of one op: a hash of what it reads."""
    if op.kind is OpKind.STATE:
        n = len(param_shapes(spec))
        return (group_hash(inputs[:n]), group_hash(inputs[n:]))
    if op.kind is OpKind.BATCH:
        return tuple(_h("batch", spec.dataset_hash, spec.data_seed, step, s) for s in range(op.n_outputs))
    return tuple(_h(int(op.kind), op.index, step, s, list(inputs)) for s in range(op.n_outputs))


@dataclass(frozen=True)
class Cheat:
    """How a synthetic solver deviates from honest training (None fields: honest)."""

    skip_from: int | None = None  # steps >= this do nothing (skipped/truncated training)
    corrupt_at: int | None = None  # the state reached at this step is replaced (noise, copy)
    data_seed: int | None = None  # a different data order


class SyntheticRun:
    """One party's view of a task's training: its states, traces and checkpoints."""

    def __init__(self, spec: TaskSpec, cheat: Cheat | None = None) -> None:
        validate_spec(spec)
        self.spec, self.cheat = spec, cheat or Cheat()
        self.ops = step_ops(spec)
        if self.cheat.data_seed is not None:
            self._data_spec = _with_data_seed(spec, self.cheat.data_seed)
        else:
            self._data_spec = spec
        self._states: dict[int, tuple[Digests, Digests]] = {0: self._initial()}

    def _initial(self) -> tuple[Digests, Digests]:
        n = len(param_shapes(self.spec))
        w = tuple(_h("init", self.spec.model_seed, i) for i in range(n))
        o = tuple(_h("opt0", i) for i in range(n * state_slots_per_param(self.spec)))
        return w, o

    def _honest_trace(self, step: int, state: tuple[Digests, Digests]) -> list[Digests]:
        start = (*state[0], *state[1])
        outs: list[Digests] = []
        for op in self.ops:
            ins = tuple(start[r.slot] if r.op == START else outs[r.op][r.slot] for r in op.inputs)
            outs.append(execute_op(self._data_spec, op, step, ins))
        return outs

    def _next_state(self, step: int, state: tuple[Digests, Digests]) -> tuple[Digests, Digests]:
        c = self.cheat
        if c.skip_from is not None and step >= c.skip_from:
            nxt = state
        else:
            trace = self._honest_trace(step, state)
            n = len(state[0])
            first_update = len(self.ops) - 1 - n
            updates = trace[first_update:-1]
            nxt = (tuple(u[0] for u in updates), tuple(d for u in updates for d in u[1:]))
        if c.corrupt_at is not None and step + 1 == c.corrupt_at:
            nxt = (tuple(_h("corrupt", d) for d in nxt[0]), nxt[1])
        return nxt

    def seed_state(self, step: int, state: tuple[Digests, Digests]) -> None:
        """Start replays from a fetched checkpoint instead of from step 0."""
        self._states = {step: state}

    def state_digests(self, step: int) -> tuple[Digests, Digests]:
        if step in self._states:
            return self._states[step]
        base = max(s for s in self._states if s <= step)
        state = self._states[base]
        for t in range(base, step):
            state = self._next_state(t, state)
        if len(self._states) < MAX_CACHED_STATES:
            self._states[step] = state
        return state

    def step_trace(self, step: int) -> list[Digests]:
        """This party's claimed op outputs for `step`: honest ops from its own start
        state, ending in the state it claims at step+1 (the best a cheater can defend)."""
        start = self.state_digests(step)
        trace = self._honest_trace(step, start)
        claimed = self.state_digests(step + 1)
        n = len(claimed[0])
        ns = len(claimed[1]) // n
        first_update = len(self.ops) - 1 - n
        for p in range(n):
            trace[first_update + p] = (claimed[0][p], *claimed[1][p * ns : (p + 1) * ns])
        trace[-1] = (group_hash(claimed[0]), group_hash(claimed[1]))
        return trace

    def leaf(self, step: int) -> CheckpointLeaf:
        w, o = self.state_digests(step)
        return CheckpointLeaf(step, group_hash(w), group_hash(o), self._data_spec.data_seed)

    def train(self) -> tuple[list[CheckpointLeaf], bytes]:
        k = self.spec.checkpoint_interval
        leaves = [self.leaf(i * k) for i in range(self.spec.num_checkpoints)]
        return leaves, merkle_root([leaf_hash(x) for x in leaves])


def _with_data_seed(spec: TaskSpec, seed: int) -> TaskSpec:
    return replace(spec, data_seed=seed)


def verify_segment(job: VerifyJob, start_state: tuple[Digests, Digests]) -> VerifyResult:
    """Re-execute a segment honestly from the (fetched) start checkpoint."""
    # The checkpoint must be the committed one before any work is spent on it.
    if (group_hash(start_state[0]), group_hash(start_state[1])) != (
        job.start.weights_hash,
        job.start.optimizer_hash,
    ):
        raise BlobError("start checkpoint does not match its Merkle leaf")
    run = SyntheticRun(job.spec)
    k = job.spec.checkpoint_interval
    start_step = job.segment * k
    run.seed_state(start_step, start_state)
    end = run.leaf(start_step + k)
    ok = (end.weights_hash, end.optimizer_hash) == (job.end.weights_hash, job.end.optimizer_hash)
    return VerifyResult(
        job.task_id,
        job.segment,
        ok,
        0.0 if ok else 1.0,
        1.0 if ok else 0.0,
        op_digest([end.weights_hash, end.optimizer_hash]),
    )


def referee(job: RefereeJob) -> RefereeResult:
    """Re-execute exactly one op from its input digests and compare with both claims."""
    if job.spec is None:
        raise ValueError("the synthetic referee has no crew ops")
    op = step_ops(job.spec)[job.op_index]
    outs = execute_op(job.spec, op, job.step, job.inputs)
    return RefereeResult(
        job.dispute_id,
        outs == job.defender_outputs.digests,
        outs == job.challenger_outputs.digests,
        op_digest(outs),
        0.0 if outs == job.defender_outputs.digests else 1.0,
        0.0 if outs == job.challenger_outputs.digests else 1.0,
    )
