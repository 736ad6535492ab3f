"""The torch semantics of every op in `protocol.pol.ops.step_ops`.

Each op is a pure function of its input tensors (plus the spec, the step and, for
BATCH, the dataset), so the referee can run exactly one of them from hash-checked
inputs. A node's forward is `node_forward`; its backward is `autograd.grad` through that
node alone; the optimizers are written out as formulas (not torch.optim) so an update of
one tensor is self-contained. The fast trainer (`node.compute.fast`) runs the same node
functions in one autograd graph and the same update formulas, which is why its
checkpoints equal the op-by-op replay bit for bit.

Every node output is contiguous, and so is every gradient one node's backward hands to
another (the nodes are written so: attention's k is kept transposed so that no
gradient comes out as a transposed view; tests check it on random specs). An op's
inputs then have one memory layout whichever way they were produced (computed in the
step, or fetched by digest), so a kernel cannot take another path on replay.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from node.compute.datasets import AnyDataset, TextDataset
from protocol.encoding import pack, sha256
from protocol.pol.graph import INPUT, Node, Plan, Prim, plan
from protocol.pol.ops import START, OpDesc, OpKind, state_slots_per_param
from protocol.pol.spec import PPM, DType, Layer, LayerKind, LossKind, OptimizerKind, TaskSpec, layer_params

Tensors = tuple[torch.Tensor, ...]
TORCH_DTYPES = {DType.FLOAT32: torch.float32, DType.FLOAT64: torch.float64}
#: Standard deviation of embedding tables at init (GPT-2's; N(0, 1) would swamp the logits).
EMBED_INIT_STD = 0.02


def derived_seed(*parts: object) -> int:
    """A 63-bit seed from labelled parts: one generator per purpose, never global RNG."""
    return int.from_bytes(sha256(pack(["polnet/pol/seed/v1", *parts]))[:8], "big") >> 1


def generator(*parts: object) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(*parts))


def dtype_of(spec: TaskSpec) -> torch.dtype:
    return TORCH_DTYPES[spec.profile.dtype]


@functools.lru_cache(maxsize=64)
def plan_of(spec: TaskSpec) -> Plan:
    return plan(spec)


def graph_of(spec: TaskSpec) -> tuple[Node, ...]:
    return plan_of(spec).nodes


# --- layers and primitive nodes ------------------------------------------------------------------


def layer_forward(
    layer: Layer, idx: int, spec: TaskSpec, step: int, x: torch.Tensor, p: Sequence[torch.Tensor]
) -> torch.Tensor:
    """A version-1 layer (one node each)."""
    k = layer.kind
    if k is LayerKind.LINEAR:
        return F.linear(x, p[0], p[1])
    if k is LayerKind.CONV2D:
        return F.conv2d(x, p[0], p[1], stride=layer.stride, padding=layer.padding)
    if k is LayerKind.RELU:
        return F.relu(x)
    if k is LayerKind.GELU:
        return F.gelu(x)
    if k is LayerKind.LAYERNORM:
        return F.layer_norm(x, (layer.in_size,), p[0], p[1])
    if k is LayerKind.DROPOUT:
        rate = layer.dropout_ppm / PPM
        keep = torch.rand(x.shape, generator=generator("dropout", spec.dropout_seed, step, idx)) >= rate
        return x * keep.to(x.device, x.dtype) / (1.0 - rate)
    if k is LayerKind.FLATTEN:
        return x.flatten(1)
    if k is LayerKind.RESIDUAL:
        return x + F.linear(F.relu(F.linear(x, p[0], p[1])), p[2], p[3])
    raise AssertionError(f"unhandled layer kind {k}")


@functools.lru_cache(maxsize=16)
def _causal_mask(t: int, device: str) -> torch.Tensor:
    return torch.ones(t, t, dtype=torch.bool, device=device).triu(1)


def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
    """(B, T, d) -> (B, h, T, d/h), contiguous."""
    b, t, d = x.shape
    return x.reshape(b, t, h, d // h).transpose(1, 2).contiguous()


def node_forward(
    spec: TaskSpec, node: Node, step: int, xs: Sequence[torch.Tensor], ps: Sequence[torch.Tensor]
) -> Tensors:
    """One primitive node on a batch; every output contiguous."""
    layer = spec.layers[node.layer]
    prim = node.prim
    x = xs[0]
    # Linear, LayerNorm and the activations also run inside composite layers (blocks).
    if prim is Prim.LINEAR:
        return (F.linear(x, ps[0], ps[1]).contiguous(),)
    if prim is Prim.LAYERNORM:
        return (F.layer_norm(x, (ps[0].shape[0],), ps[0], ps[1]).contiguous(),)
    if prim is Prim.GELU:
        return (F.gelu(x).contiguous(),)
    if prim is Prim.RELU:
        return (F.relu(x).contiguous(),)
    if prim <= Prim.RESIDUAL:  # the other version-1 layers: one node each
        return (layer_forward(layer, node.layer, spec, step, x, ps).contiguous(),)
    if prim is Prim.MAXPOOL2D:
        return (F.max_pool2d(x, layer.kernel, layer.stride, layer.padding).contiguous(),)
    if prim is Prim.AVGPOOL2D:
        return (F.avg_pool2d(x, layer.kernel, layer.stride, layer.padding).contiguous(),)
    if prim is Prim.EMBED:
        return (F.embedding(x, ps[0]).contiguous(),)
    if prim is Prim.POS_ADD:
        return ((x + ps[0][: x.shape[1]]).contiguous(),)
    if prim is Prim.QKV:  # k comes out transposed, (B, h, dh, T): see SCORES
        q, k, v = F.linear(x, ps[0], ps[1]).chunk(3, dim=-1)
        kt = _heads(k, layer.heads).transpose(-1, -2).contiguous()
        return _heads(q, layer.heads), kt, _heads(v, layer.heads)
    if prim is Prim.SCORES:
        # q @ k^T with k^T stored as such: the gradients of q and k^T are plain matrix
        # products, contiguous, as every gradient handed between nodes is (module doc).
        q, kt = xs
        scores = (q @ kt) * (1.0 / math.sqrt(q.shape[-1]))
        return (scores.masked_fill(_causal_mask(q.shape[-2], str(q.device)), float("-inf")).contiguous(),)
    if prim is Prim.SOFTMAX:
        return (F.softmax(x, dim=-1).contiguous(),)
    if prim is Prim.MIX:
        out = xs[0] @ xs[1]  # (B, h, T, T) @ (B, h, T, dh)
        b, h, t, dh = out.shape
        return (out.transpose(1, 2).reshape(b, t, h * dh).contiguous(),)
    if prim is Prim.ADD:
        return ((xs[0] + xs[1]).contiguous(),)
    if prim is Prim.HEAD:
        return (F.linear(x, ps[0]).contiguous(),)
    raise AssertionError(f"unhandled node kind {prim}")


def _init_kind(layer: Layer, pi: int) -> str:
    kind = layer.kind
    if kind is LayerKind.LAYERNORM or (kind is LayerKind.TRANSFORMER_BLOCK and pi in (0, 1, 6, 7)):
        return "ones" if pi in (0, 6) else "zeros"
    if kind in (LayerKind.EMBEDDING, LayerKind.POS_EMBEDDING):
        return "normal"
    return "uniform"


def init_params(spec: TaskSpec) -> list[torch.Tensor]:
    """PyTorch's default init bounds (uniform +-1/sqrt(fan_in)), from the model seed;
    LayerNorm ones and zeros; embedding tables N(0, 0.02)."""
    out: list[torch.Tensor] = []
    dt = dtype_of(spec)
    for li, layer in enumerate(spec.layers):
        shapes = layer_params(layer)
        for pi, shape in enumerate(shapes):
            kind = _init_kind(layer, pi)
            if kind in ("ones", "zeros"):
                out.append(torch.ones(shape, dtype=dt) if kind == "ones" else torch.zeros(shape, dtype=dt))
                continue
            g = generator("init", spec.model_seed, li, pi)
            if kind == "normal":
                out.append(torch.randn(shape, generator=g, dtype=dt) * EMBED_INIT_STD)
                continue
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else math.prod(shapes[pi - 1][1:])
            bound = 1.0 / math.sqrt(fan_in)
            out.append((torch.rand(shape, generator=g, dtype=dt) * 2.0 - 1.0) * bound)
    return out


def model_forward(
    spec: TaskSpec, params: Sequence[torch.Tensor], x: torch.Tensor, step: int = 0, train: bool = False
) -> torch.Tensor:
    """The model's output for a batch; dropout only when `train` (evaluation, sampling)."""
    outs: list[Tensors] = []
    for node in graph_of(spec):
        ins = [x if r.node == INPUT else outs[r.node][r.slot] for r in node.inputs]
        if node.prim is Prim.DROPOUT and not train:
            outs.append((ins[0],))
            continue
        outs.append(node_forward(spec, node, step, ins, [params[j] for j in node.params]))
    return outs[-1][0]


# --- ops --------------------------------------------------------------------------------------


def batch(spec: TaskSpec, data: AnyDataset, step: int) -> Tensors:
    """(x, y) of one step. Samples: a seeded permutation's first rows. Text: seeded
    window starts in the training split, y being x shifted by one token."""
    g = generator("batch", spec.data_seed, step)
    if isinstance(data, TextDataset):
        t = spec.input_shape[0]
        starts = torch.randint(0, spec.train_size - t, (spec.batch_size,), generator=g)
        chunk = data.tokens[starts[:, None] + torch.arange(t + 1)].long()
        return chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()
    n = len(data) if spec.version < 2 else spec.train_size
    idx = torch.randperm(n, generator=g)[: spec.batch_size]
    return data.x[idx].to(dtype_of(spec)), data.y[idx]


def loss_value(spec: TaskSpec, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if spec.loss is LossKind.CROSS_ENTROPY:
        return F.cross_entropy(z, y)
    if spec.loss is LossKind.NEXT_TOKEN:
        return F.cross_entropy(z.reshape(-1, z.shape[-1]), y.reshape(-1))
    return F.mse_loss(z, F.one_hot(y, spec.num_classes).to(z.dtype))


def _loss(spec: TaskSpec, logits: torch.Tensor, y: torch.Tensor) -> Tensors:
    with torch.enable_grad():
        z = logits.detach().requires_grad_(True)
        loss = loss_value(spec, z, y)
        (g,) = torch.autograd.grad(loss, [z])
    return loss.detach(), g


def _sum(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """Two gradient contributions are added as a + b (commutative: order-free)."""
    return grads[0] if len(grads) == 1 else grads[0] + grads[1]


def _backward(spec: TaskSpec, idx: int, step: int, ins: Sequence[torch.Tensor]) -> Tensors:
    pl = plan_of(spec)
    node, diff = pl.nodes[idx], pl.diff[idx]
    n_in, n_p = len(node.inputs), len(node.params)
    grads, pos = [], n_in + n_p
    for srcs in pl.out_grads[idx]:
        grads.append(_sum(ins[pos : pos + len(srcs)]).contiguous())
        pos += len(srcs)
    with torch.enable_grad():
        xs = [a.detach().requires_grad_(i in diff) for i, a in enumerate(ins[:n_in])]
        params = [p.detach().requires_grad_(True) for p in ins[n_in : n_in + n_p]]
        outs = node_forward(spec, node, step, xs, params)
        wrt = [xs[i] for i in diff] + params
        result = torch.autograd.grad(outs, wrt, grads)
    return tuple(g.detach().contiguous() for g in result)


def update(
    spec: TaskSpec, step: int, p: torch.Tensor, g: torch.Tensor, state: Sequence[torch.Tensor]
) -> Tensors:
    """The optimizer step of one tensor, as formulas: (new value, *new state).

    Version 2 uses torch.optim's single-tensor arithmetic (lerp, addcmul, addcdiv: half
    the passes over memory of the version-1 formulas, which keep their bits). Inputs are
    never modified: they are a checkpoint's tensors.
    """
    if spec.version < 2:
        return _update_v1(spec, step, p, g, state)
    o = spec.optimizer
    if o.kind is OptimizerKind.SGD:
        if o.weight_decay:
            g = g.add(p, alpha=o.weight_decay)
        if o.momentum > 0.0:
            buf = torch.mul(state[0], o.momentum).add_(g)
            return torch.add(p, buf, alpha=-o.lr), buf
        return (torch.add(p, g, alpha=-o.lr),)
    if o.kind is OptimizerKind.ADAMW:
        if o.weight_decay:
            p = p * (1.0 - o.lr * o.weight_decay)
    elif o.weight_decay:
        g = g.add(p, alpha=o.weight_decay)
    t = step + 1
    m = torch.lerp(state[0], g, 1.0 - o.beta1)
    v = torch.mul(state[1], o.beta2).addcmul_(g, g, value=1.0 - o.beta2)
    denom = (v.sqrt() / math.sqrt(1.0 - o.beta2**t)).add_(o.eps)
    return torch.addcdiv(p, m, denom, value=-o.lr / (1.0 - o.beta1**t)), m, v


def _update_v1(
    spec: TaskSpec, step: int, p: torch.Tensor, g: torch.Tensor, state: Sequence[torch.Tensor]
) -> Tensors:
    o = spec.optimizer
    if o.kind is OptimizerKind.SGD:
        g = g + o.weight_decay * p if o.weight_decay else g
        if o.momentum > 0.0:
            buf = o.momentum * state[0] + g
            return p - o.lr * buf, buf
        return (p - o.lr * g,)
    if o.kind is OptimizerKind.ADAMW:
        p = p * (1.0 - o.lr * o.weight_decay)
    elif o.weight_decay:
        g = g + o.weight_decay * p
    t = step + 1
    m = o.beta1 * state[0] + (1.0 - o.beta1) * g
    v = o.beta2 * state[1] + (1.0 - o.beta2) * g * g
    m_hat = m / (1.0 - o.beta1**t)
    v_hat = v / (1.0 - o.beta2**t)
    return p - o.lr * m_hat / (v_hat.sqrt() + o.eps), m, v


def _update(spec: TaskSpec, step: int, ins: Sequence[torch.Tensor]) -> Tensors:
    n_grads = len(ins) - 1 - state_slots_per_param(spec)
    return update(spec, step, ins[0], _sum(ins[1 : 1 + n_grads]), ins[1 + n_grads :])


def execute(
    spec: TaskSpec, data: AnyDataset | None, op: OpDesc, step: int, ins: Sequence[torch.Tensor]
) -> Tensors:
    """Run one op. STATE returns its inputs (its digest is computed by the caller)."""
    with torch.no_grad():
        if op.kind is OpKind.BATCH:
            if data is None:
                raise ValueError("BATCH needs the dataset")
            return batch(spec, data, step)
        if op.kind is OpKind.FORWARD:
            node = graph_of(spec)[op.index]
            n_in = len(node.inputs)
            return node_forward(spec, node, step, ins[:n_in], ins[n_in:])
        if op.kind is OpKind.LOSS:
            return _loss(spec, ins[0], ins[1])
        if op.kind is OpKind.BACKWARD:
            return _backward(spec, op.index, step, ins)
        if op.kind is OpKind.UPDATE:
            return _update(spec, step, ins)
        return tuple(ins)


def gather(op: OpDesc, start: Sequence[torch.Tensor], outs: Sequence[Tensors]) -> list[torch.Tensor]:
    return [start[r.slot] if r.op == START else outs[r.op][r.slot] for r in op.inputs]
