"""FLOPs estimated from the spec, like gas: cost and time are known before anything runs.

The estimate is deliberately simple and conservative (multiply-add = 2 FLOPs, backward =
2x forward, elementwise ops counted per element) because what matters is that every
node computes the same number from the same spec, so fees, deadlines and virtual compute
time agree network-wide. It is priced per primitive node (`protocol.pol.graph`): the
matrix products (linear, convolution, attention's q k^T and its weighted sum: the term
quadratic in the context) are counted exactly as torch's FLOP counter counts them, the
elementwise work per element. Version-1 specs price exactly as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from protocol.errors import SpecError
from protocol.pol.graph import Node, Prim, node_shapes, nodes
from protocol.pol.spec import (
    Layer,
    LayerKind,
    LossKind,
    OptimizerKind,
    Shape,
    TaskSpec,
    param_shapes,
    validate_spec,
)

#: Backward costs about twice the forward (grad wrt inputs and wrt weights).
BACKWARD_FACTOR = 2
#: Per-element costs of the cheap layers (GELU's tanh/erf dominates).
ELEMENTWISE_FLOPS = {LayerKind.RELU: 1, LayerKind.GELU: 8, LayerKind.DROPOUT: 2, LayerKind.LAYERNORM: 8}
#: Per-element costs of the version-2 primitives that are not matrix products.
SOFTMAX_FLOPS = 5  # max, subtract, exp, sum, divide
SCORE_SCALE_FLOPS = 2  # scale and causal mask
ADD_FLOPS = 1
#: Per-parameter optimizer cost: SGD+momentum vs the Adam family's moments and sqrt.
OPTIMIZER_FLOPS_PER_PARAM = {OptimizerKind.SGD: 4, OptimizerKind.ADAM: 12, OptimizerKind.ADAMW: 14}
LOSS_FLOPS_PER_CLASS = 6
#: No task may cost more than this in total (about a GPU-day at 1e13 FLOP/s).
MAX_TOTAL_FLOPS = 10**18


@dataclass(frozen=True, slots=True)
class FlopsEstimate:
    forward_per_sample: int
    per_step: int
    per_segment: int
    total: int
    params: int


def layer_forward_flops(layer: Layer, in_shape: Shape, out_shape: Shape) -> int:
    """Forward FLOPs of one version-1 layer for one sample."""
    if layer.kind is LayerKind.LINEAR:
        return 2 * layer.in_size * layer.out_size
    if layer.kind is LayerKind.CONV2D:
        return 2 * layer.in_size * layer.kernel * layer.kernel * math.prod(out_shape)
    if layer.kind is LayerKind.RESIDUAL:
        return 4 * layer.in_size * layer.out_size + layer.out_size + layer.in_size
    return ELEMENTWISE_FLOPS.get(layer.kind, 0) * math.prod(in_shape)


def node_matmul_flops(spec: TaskSpec, node: Node, ins: list[Shape], outs: tuple[Shape, ...]) -> int:
    """Forward FLOPs of a node's matrix products for one sample (torch's counter's count)."""
    prim, out = node.prim, outs[0]
    if prim in (Prim.LINEAR, Prim.HEAD):
        return 2 * ins[0][-1] * math.prod(out)
    if prim is Prim.CONV2D:
        layer = spec.layers[node.layer]
        return 2 * layer.in_size * layer.kernel * layer.kernel * math.prod(out)
    if prim is Prim.RESIDUAL:
        layer = spec.layers[node.layer]
        return 4 * layer.in_size * layer.out_size
    if prim is Prim.QKV:
        return 2 * ins[0][-1] * 3 * math.prod(ins[0])
    if prim is Prim.SCORES:  # (h, T, dh) x (h, dh, T): quadratic in the context
        h, t, dh = ins[0]
        return 2 * h * t * t * dh
    if prim is Prim.MIX:
        h, t, _ = ins[0]
        return 2 * h * t * t * ins[1][-1]
    return 0


def node_elementwise_flops(spec: TaskSpec, node: Node, ins: list[Shape], outs: tuple[Shape, ...]) -> int:
    prim, n_in, n_out = node.prim, math.prod(ins[0]), math.prod(outs[0])
    if prim is Prim.RESIDUAL:
        layer = spec.layers[node.layer]
        return layer.out_size + layer.in_size
    if prim in (Prim.RELU, Prim.GELU, Prim.DROPOUT, Prim.LAYERNORM):
        return ELEMENTWISE_FLOPS[LayerKind(int(prim))] * n_in
    if prim in (Prim.MAXPOOL2D, Prim.AVGPOOL2D):
        k = spec.layers[node.layer].kernel
        return k * k * n_out
    if prim is Prim.SCORES:
        return SCORE_SCALE_FLOPS * n_out
    if prim is Prim.SOFTMAX:
        return SOFTMAX_FLOPS * n_in
    if prim in (Prim.ADD, Prim.POS_ADD):
        return ADD_FLOPS * n_in
    return 0


def node_flops(spec: TaskSpec) -> list[tuple[int, int]]:
    """(matrix-product, elementwise) forward FLOPs per sample of every node."""
    graph = nodes(spec)
    shapes = node_shapes(spec, graph)
    x = tuple(spec.input_shape)
    out = []
    for node, outs in zip(graph, shapes, strict=True):
        ins = [x if r.node < 0 else shapes[r.node][r.slot] for r in node.inputs]
        out.append((node_matmul_flops(spec, node, ins, outs), node_elementwise_flops(spec, node, ins, outs)))
    return out


def estimate(spec: TaskSpec) -> FlopsEstimate:
    """Price a (valid) spec; raise SpecError if it exceeds MAX_TOTAL_FLOPS."""
    shapes = validate_spec(spec)
    if spec.version < 2:
        fwd = sum(layer_forward_flops(lay, shapes[i], shapes[i + 1]) for i, lay in enumerate(spec.layers))
    else:
        fwd = sum(m + e for m, e in node_flops(spec))
    params = sum(math.prod(s) for s in param_shapes(spec))
    positions = spec.input_shape[0] if spec.loss is LossKind.NEXT_TOKEN else 1
    per_sample = fwd * (1 + BACKWARD_FACTOR) + LOSS_FLOPS_PER_CLASS * spec.num_classes * positions
    per_step = spec.batch_size * per_sample + OPTIMIZER_FLOPS_PER_PARAM[spec.optimizer.kind] * params
    total = per_step * spec.steps
    if total > MAX_TOTAL_FLOPS:
        raise SpecError(f"estimated {total:.3e} FLOPs exceeds the {MAX_TOTAL_FLOPS:.0e} cap")
    return FlopsEstimate(fwd, per_step, per_step * spec.checkpoint_interval, total, params)
