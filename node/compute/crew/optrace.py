"""A crew member's step run op by op (protocol/pol/crew_ops.py), with torch.

The crew trains with fused steps (pipeline.StageWorker.step); a dispute needs the same
step as the op chain the game bisects, each op re-executable alone from its inputs. So
each op runs its piece of the fused step: a module's forward or backward through
torch.func.functional_call and autograd.grad on that module alone, one AdamW update of
one parameter, the AQ-SGD codec's row rules (aqsgd.encode_rows/decode_rows, which the
fused step uses too). Under the member profile (one thread, deterministic algorithms)
the chain reproduces the fused step bit for bit (tests/test_crew_pinpoint.py pins it),
so honest parties agree on every op and the referee's judgement is equality of hashes.

`CrewSource` is a party's view for the game (protocol/pol/oracle.TraceSource): the state
at every step of the segment, and each step's op outputs under its `Behaviour` (the crew
catalog's hooks act at the ops they change), ending in the state it claims for the next
step: a cheat's trace then differs from an honest one at the op its hook changed, or at
the UPDATE its claimed end contradicts. `CrewReferee` re-executes one op honestly.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.func import functional_call

from node.compute.crew import aqsgd
from node.compute.crew.model import build_stage
from node.compute.crew.pipeline import HONEST, Behaviour, CrewConfig, StageWorker, schedule
from node.compute.crew.proof import member_profile
from node.compute.tensors import digest as tensor_digest
from protocol.errors import BlobError
from protocol.pol.crew_ops import ADAM_SLOTS, StageLayout, crew_step_ops, pure_outputs
from protocol.pol.jobs import RefereeJob, RefereeResult
from protocol.pol.ops import START, OpDesc, OpKind, op_digest

_ADAM_KEYS = ("exp_avg", "exp_avg_sq", "step")


@dataclass(frozen=True)
class Chain:
    """The sent chain's value: a hash that is its own digest."""

    value: bytes


Value = torch.Tensor | bytes | Chain
Digests = tuple[bytes, ...]


def digest(v: Value) -> bytes:
    if isinstance(v, Chain):
        return v.value
    if isinstance(v, bytes):
        return hashlib.sha256(v).digest()  # what the crew's transcripts commit to
    return tensor_digest(v)


class ValueStore:
    """Content-addressed op values shown to the referee, re-hashed on the way out."""

    def __init__(self) -> None:
        self._items: dict[bytes, Value] = {}

    def put(self, v: Value) -> bytes:
        d = digest(v)
        self._items.setdefault(d, v)
        return d

    def get(self, d: bytes) -> Value:
        v = self._items.get(d)
        if v is None or digest(v) != d:
            raise BlobError(f"value {d.hex()[:16]} is not available")
        return v


def neighbours(cfg: CrewConfig, rank: int) -> tuple[int, int, list[int]]:
    """(previous stage's member or -1, next stage's or -1, the other replicas in order)."""
    stage, replica = cfg.position(rank)
    prev = cfg.rank(stage - 1, replica) if stage > 0 else -1
    nxt = cfg.rank(stage + 1, replica) if stage < cfg.stages - 1 else -1
    return prev, nxt, [cfg.rank(stage, d) for d in range(cfg.data_parallel) if d != replica]


class StepContext:
    """What every op of member `rank`'s steps needs: its stage's modules (for their
    structure; the weights are op inputs), layout, op list and the schedule."""

    def __init__(self, cfg: CrewConfig, rank: int, train: torch.Tensor) -> None:
        stage, self.replica = cfg.position(rank)
        self.cfg, self.rank, self.train = cfg, rank, train
        self.module = build_stage(cfg.shape, cfg.stages, stage, cfg.seed)
        self.names = [[n for n, _ in part.named_parameters()] for part in self.module]
        self.layout = StageLayout(stage == 0, stage == cfg.stages - 1, cfg.micro_batches, cfg.data_parallel,
                                  tuple(len(n) for n in self.names))
        self.ops = crew_step_ops(self.layout)
        self.act_shape = (cfg.micro_batch, cfg.shape.context, cfg.shape.width)
        self.prev, self.next, self.others = neighbours(cfg, rank)
        shapes = [p.shape for p in self.module.parameters()]
        self.numel = [s.numel() for s in shapes]

    def ids(self, step: int) -> list[torch.Tensor]:
        return next(itertools.islice(schedule(self.cfg), step, None))[self.replica]

    def grad_offset(self, param: int) -> int:
        """Where parameter `param`'s gradient starts in its UPDATE's gradient input: the
        stage's all-reduced flat with replicas, else its module's accumulated flat."""
        lay = self.layout
        if lay.replicas > 1:
            return sum(self.numel[:param])
        module, _ = lay.owner(param)
        return sum(self.numel[lay.param_base(module) : param])

    def recv_address(self, step: int, index: int) -> tuple[int, int]:
        """(source rank, index in its received list) of RECV `index` of `step`."""
        kind, k = self.layout.recv_source(index)
        m = self.cfg.micro_batches
        if kind == "prev":
            return self.prev, step * m + k
        if kind == "next":
            return self.next, step * m + k
        return self.others[k], step


def game_state(worker: StageWorker, chain: bytes) -> list[Value]:
    """A worker's state in the slot order of crew_ops: weights, AdamW state (zeros before
    the first step, as AdamW initialises it), caches, the sent chain."""
    params = [p.detach().clone() for p in worker.module.parameters()]
    st = worker.opt.state_dict()["state"]
    out: list[Value] = list(params)
    for which, key in enumerate(_ADAM_KEYS):
        for i, p in enumerate(params):
            if i in st:
                out.append(st[i][key].detach().clone())
            else:
                out.append(torch.zeros_like(p) if which < 2 else torch.tensor(0.0))
    for codec in (worker.sender, worker.receiver):
        if codec is not None:
            out += [codec.cache.m.clone(), codec.cache.seen.to(torch.uint8)]
    out.append(Chain(chain))
    return out


# --- the ops --------------------------------------------------------------------------------------


def _call(ctx: StepContext, module: int, x: torch.Tensor, params: list[torch.Tensor]
          ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Module `module`'s forward on leaves made from `x` and `params` (x a leaf that wants
    its gradient when it is an activation, as in the fused step)."""
    leaves = [p.detach().requires_grad_(True) for p in params]
    xin = x.detach().requires_grad_(True) if x.is_floating_point() else x
    out = functional_call(ctx.module[module], dict(zip(ctx.names[module], leaves, strict=True)), (xin,))
    return out, xin, leaves


def _as_tensor(v: Value) -> torch.Tensor:
    if not isinstance(v, torch.Tensor):
        raise BlobError("an op input that should be a tensor is not")
    return v


def _as_bytes(v: Value) -> bytes:
    if not isinstance(v, bytes):
        raise BlobError("an op input that should be a message is not")
    return v


def execute(ctx: StepContext, op: OpDesc, step: int, ins: list[Value],
            behaviour: Behaviour = HONEST) -> tuple[Value, ...]:
    """Outputs of one op of `step` from its input values, as `behaviour` computes them
    (RECV, SENT and STATE are not computed here: see CrewSource and pure_outputs)."""
    cfg, lay, kind = ctx.cfg, ctx.layout, op.kind
    t = [v for v in ins if isinstance(v, torch.Tensor)]
    if kind is OpKind.BATCH:
        ids = ctx.ids(step)[op.index]
        out: list[Value] = [ctx.train[behaviour.input_ids(ids, step), :-1]] if lay.first else []
        return (*out, ctx.train[ids, 1:]) if lay.last else tuple(out)
    if kind is OpKind.DECODE:
        ids = ctx.ids(step)[op.index]
        m, seen, msg = _as_tensor(ins[0]), _as_tensor(ins[1]), _as_bytes(ins[2])
        act, rows, flags = aqsgd.decode_rows(m[ids], seen[ids].bool(), msg, ctx.act_shape)
        return act, rows, flags.to(torch.uint8)
    if kind is OpKind.ENCODE:
        ids = ctx.ids(step)[op.index]
        m, seen = t[1], t[2]
        msg, rows, flags = aqsgd.encode_rows(m[ids], seen[ids].bool(), t[0], cfg.bits, cfg.direct)
        return msg, rows, flags.to(torch.uint8)
    if kind is OpKind.FORWARD:
        with torch.enable_grad():
            y, _, _ = _call(ctx, op.index % lay.modules, t[0], t[1:])
        return (y.detach(),)
    if kind is OpKind.LOSS:
        with torch.enable_grad():
            logits = t[0].detach().requires_grad_(True)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), t[1].reshape(-1))
            (g,) = torch.autograd.grad(loss / cfg.micro_batches, logits)
        return loss.detach(), g
    if kind is OpKind.BACKWARD:
        return _backward(ctx, op, step, t, behaviour)
    if kind is OpKind.UNPACK:
        return (aqsgd.decode_grad(_as_bytes(ins[0]), ctx.act_shape),)
    if kind is OpKind.PACK:
        return (aqsgd.encode_grad(behaviour.boundary_grad(t[0], step), cfg.grad_bits),)
    if kind is OpKind.CONTRIB:
        flat = torch.cat([a.reshape(-1) for a in t])
        behaviour.contribution(flat, step)
        return (aqsgd.encode_grad(flat, None),)
    if kind is OpKind.REDUCE:
        n = (sum(ctx.numel),)
        parts = [aqsgd.decode_grad(_as_bytes(v), n) for v in ins[1:]]
        parts.insert(ctx.replica, aqsgd.decode_grad(_as_bytes(ins[0]), n))
        total = parts[0].clone()
        for part in parts[1:]:
            total += part
        total /= cfg.data_parallel
        return (total,)
    if kind is OpKind.UPDATE:
        return _update(ctx, op.index, step, t, behaviour)
    if kind is OpKind.CACHE:
        m2, seen2 = t[0].clone(), t[1].clone()
        for k, ids in enumerate(ctx.ids(step)):
            m2[ids], seen2[ids] = t[2 + 2 * k], t[3 + 2 * k]
        return m2, seen2
    raise ValueError(f"{kind.name} is not computed from tensors")


def _backward(ctx: StepContext, op: OpDesc, step: int, t: list[torch.Tensor],
              behaviour: Behaviour) -> tuple[Value, ...]:
    """A module's input gradient and its parameters' gradients added to the micro-batches'
    sum so far (the fused step's .grad accumulation), zeros where the behaviour skips."""
    lay = ctx.layout
    module = op.index % lay.modules
    n = lay.module_params[module]
    x, params, g = t[0], t[1 : 1 + n], t[1 + n]
    prior = t[2 + n] if len(t) > 2 + n else None
    has_in = not (lay.first and module == 0)
    if behaviour.skip_backward(step):
        size = sum(p.numel() for p in params)
        zeros = torch.zeros(size)
        return (torch.zeros_like(x), zeros) if has_in else (zeros,)
    with torch.enable_grad():
        y, xin, leaves = _call(ctx, module, x, params)
        grads = torch.autograd.grad(y, ([xin] if has_in else []) + leaves, g)
    pgrads = grads[1:] if has_in else grads
    flat = torch.cat([gr.reshape(-1) for gr in pgrads])
    acc = flat if prior is None else prior + flat
    return (grads[0], acc) if has_in else (acc,)


def _update(ctx: StepContext, param: int, step: int, t: list[torch.Tensor],
            behaviour: Behaviour) -> tuple[Value, ...]:
    """One parameter's AdamW step with the crew's hyper-parameters and its loaded state."""
    p, grad_src = t[0], t[1]
    state = t[2 : 2 + ADAM_SLOTS]
    if behaviour.skip_update(step):
        return (p, *state)
    off = ctx.grad_offset(param)
    leaf = p.detach().clone().requires_grad_(True)
    opt = torch.optim.AdamW([leaf], lr=ctx.cfg.lr, weight_decay=0.0)
    opt.state[leaf] = {k: v.clone() for k, v in zip(_ADAM_KEYS, state, strict=True)}
    leaf.grad = grad_src[off : off + p.numel()].view_as(p).clone()
    opt.step()
    st = opt.state[leaf]
    return (leaf.detach().clone(), *(st[k].clone() for k in _ADAM_KEYS))


# --- a party's view ----------------------------------------------------------------------------


@dataclass
class CrewSource:
    """A party's TraceSource over one segment: `states` at every step boundary it claims,
    `received[step]` the messages it consumed by RECV index, `behaviour` its op hooks."""

    ctx: StepContext
    states: dict[int, list[Value]]
    received: dict[int, dict[int, bytes]]
    store: ValueStore
    behaviour: Behaviour = HONEST
    _traces: dict[int, list[Digests]] = field(default_factory=dict)

    def state_digests(self, step: int) -> tuple[Digests, Digests]:
        ds = tuple(self.store.put(v) for v in self.states[step])
        n = self.ctx.layout.n_weights
        return ds[:n], ds[n:]

    def step_trace(self, step: int) -> list[Digests]:
        if step not in self._traces:
            with member_profile():  # the fused step's thread count, or the low bits differ
                values = self.step_values(step, claimed=True)
            self._traces[step] = [tuple(self.store.put(v) for v in outs) for outs in values]
        return self._traces[step]

    def step_values(self, step: int, claimed: bool) -> list[tuple[Value, ...]]:
        """Every op's outputs of `step`. `claimed`: the ops that write the state (UPDATE,
        CACHE, SENT) give the state claimed for step + 1, as the party must defend it."""
        ctx, lay = self.ctx, self.ctx.layout
        start, end = self.states[step], self.states.get(step + 1)
        values: list[tuple[Value, ...]] = []

        def value(ref_op: int, slot: int) -> Value:
            return start[slot] if ref_op == START else values[ref_op][slot]

        for op in ctx.ops:
            ins = [value(r.op, r.slot) for r in op.inputs]
            claim = _claimed(lay, op, end) if claimed and end is not None else None
            if claim is not None:
                values.append(claim)
            elif op.kind is OpKind.RECV:
                values.append((self.received[step][op.index],))
            elif op.kind in (OpKind.SENT, OpKind.STATE):
                pure = pure_outputs(lay, op, tuple(digest(v) for v in ins))
                assert pure is not None
                values.append(tuple(Chain(d) for d in pure))
            else:
                values.append(execute(ctx, op, step, ins, self.behaviour))
        return values


def _claimed(lay: StageLayout, op: OpDesc, end: list[Value]) -> tuple[Value, ...] | None:
    if op.kind is OpKind.UPDATE:
        return (end[op.index], *(end[lay.adam_slot(op.index, s)] for s in range(ADAM_SLOTS)))
    if op.kind is OpKind.CACHE:
        at = lay.send_slot if op.index == 0 else lay.recv_slot
        return end[at], end[at + 1]
    if op.kind is OpKind.SENT:
        return (end[lay.sent_slot],)
    return None


class CrewReferee:
    """Re-executes one op of a member's step honestly and judges both claims by equality.
    RECV's truth is what the member committed to receiving (`received`, by source)."""

    def __init__(self, ctx: StepContext, store: ValueStore, received: dict[int, list[bytes]]) -> None:
        self.ctx, self.store, self.received = ctx, store, received

    def truth(self, job: RefereeJob) -> Digests:
        op = self.ctx.ops[job.op_index]
        if op.kind is OpKind.RECV:
            src, i = self.ctx.recv_address(job.step, op.index)
            return (self.received.get(src, [])[i],)
        pure = pure_outputs(self.ctx.layout, op, job.inputs)
        if pure is not None:
            return pure
        ins = [self.store.get(d) for d in job.inputs]
        return tuple(digest(v) for v in execute(self.ctx, op, job.step, ins))

    def __call__(self, job: RefereeJob) -> RefereeResult:
        try:
            with member_profile():
                truth = self.truth(job)
        except (BlobError, IndexError, ValueError):  # inputs nobody can show: no claim stands
            return RefereeResult(job.dispute_id, False, False, b"\x00" * 32, 1.0, 1.0)
        dok, cok = job.defender_outputs.digests == truth, job.challenger_outputs.digests == truth
        return RefereeResult(job.dispute_id, dok, cok, op_digest(truth), 0.0 if dok else 1.0,
                             0.0 if cok else 1.0)
