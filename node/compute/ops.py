"""The torch semantics of every op in `protocol.pol.ops.step_ops`.

Each op is a pure function of its input tensors (plus the spec, the step and, for
BATCH, the dataset), so the referee can run exactly one of them from hash-checked
inputs. Training uses the same functions in sequence: backward per layer is
`autograd.grad` through that layer alone, and the optimizers are written out as formulas
(not torch.optim) so an update of one tensor is self-contained and bit-identical to the
update inside a full step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from node.compute.datasets import Dataset
from protocol.encoding import pack, sha256
from protocol.pol.ops import START, OpDesc, OpKind
from protocol.pol.spec import PPM, DType, Layer, LayerKind, LossKind, OptimizerKind, TaskSpec, layer_params

Tensors = tuple[torch.Tensor, ...]
TORCH_DTYPES = {DType.FLOAT32: torch.float32, DType.FLOAT64: torch.float64}


def derived_seed(*parts: object) -> int:
    """A 63-bit seed from labelled parts: one generator per purpose, never global RNG."""
    return int.from_bytes(sha256(pack(["polnet/pol/seed/v1", *parts]))[:8], "big") >> 1


def generator(*parts: object) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(*parts))


def dtype_of(spec: TaskSpec) -> torch.dtype:
    return TORCH_DTYPES[spec.profile.dtype]


# --- layers -----------------------------------------------------------------------------------


def layer_forward(
    layer: Layer, idx: int, spec: TaskSpec, step: int, x: torch.Tensor, p: Sequence[torch.Tensor]
) -> torch.Tensor:
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
        return x * keep.to(x.dtype) / (1.0 - rate)
    if k is LayerKind.FLATTEN:
        return x.flatten(1)
    if k is LayerKind.RESIDUAL:
        return x + F.linear(F.relu(F.linear(x, p[0], p[1])), p[2], p[3])
    raise AssertionError(f"unhandled layer kind {k}")


def init_params(spec: TaskSpec) -> list[torch.Tensor]:
    """PyTorch's default init bounds (uniform +-1/sqrt(fan_in)), from the model seed."""
    out: list[torch.Tensor] = []
    dt = dtype_of(spec)
    for li, layer in enumerate(spec.layers):
        for pi, shape in enumerate(layer_params(layer)):
            if layer.kind is LayerKind.LAYERNORM:
                out.append(torch.ones(shape, dtype=dt) if pi == 0 else torch.zeros(shape, dtype=dt))
                continue
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else (math.prod(layer_params(layer)[pi - 1][1:]))
            bound = 1.0 / math.sqrt(fan_in)
            g = generator("init", spec.model_seed, li, pi)
            out.append((torch.rand(shape, generator=g, dtype=dt) * 2.0 - 1.0) * bound)
    return out


# --- ops --------------------------------------------------------------------------------------


def _batch(spec: TaskSpec, data: Dataset, step: int) -> Tensors:
    idx = torch.randperm(len(data), generator=generator("batch", spec.data_seed, step))[: spec.batch_size]
    return data.x[idx].to(dtype_of(spec)), data.y[idx]


def _loss(spec: TaskSpec, logits: torch.Tensor, y: torch.Tensor) -> Tensors:
    with torch.enable_grad():
        z = logits.detach().requires_grad_(True)
        if spec.loss is LossKind.CROSS_ENTROPY:
            loss = F.cross_entropy(z, y)
        else:
            loss = F.mse_loss(z, F.one_hot(y, spec.num_classes).to(z.dtype))
        (g,) = torch.autograd.grad(loss, [z])
    return loss.detach(), g


def _backward(spec: TaskSpec, idx: int, step: int, ins: Sequence[torch.Tensor]) -> Tensors:
    layer = spec.layers[idx]
    with torch.enable_grad():
        x = ins[0].detach().requires_grad_(True)
        params = [p.detach().requires_grad_(True) for p in ins[1:-1]]
        out = layer_forward(layer, idx, spec, step, x, params)
        grads = torch.autograd.grad(out, [x, *params], ins[-1])
    return tuple(g.detach() for g in grads)


def _update(spec: TaskSpec, step: int, ins: Sequence[torch.Tensor]) -> Tensors:
    o = spec.optimizer
    p, g, state = ins[0], ins[1], ins[2:]
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


def execute(
    spec: TaskSpec, data: Dataset | None, op: OpDesc, step: int, ins: Sequence[torch.Tensor]
) -> Tensors:
    """Run one op. STATE returns its inputs (its digest is computed by the caller)."""
    with torch.no_grad():
        if op.kind is OpKind.BATCH:
            if data is None:
                raise ValueError("BATCH needs the dataset")
            return _batch(spec, data, step)
        if op.kind is OpKind.FORWARD:
            return (layer_forward(spec.layers[op.index], op.index, spec, step, ins[0], ins[1:]),)
        if op.kind is OpKind.LOSS:
            return _loss(spec, ins[0], ins[1])
        if op.kind is OpKind.BACKWARD:
            return _backward(spec, op.index, step, ins)
        if op.kind is OpKind.UPDATE:
            return _update(spec, step, ins)
        return tuple(ins)


def gather(op: OpDesc, start: Sequence[torch.Tensor], outs: Sequence[Tensors]) -> list[torch.Tensor]:
    return [start[r.slot] if r.op == START else outs[r.op][r.slot] for r in op.inputs]
