"""FLOPs estimated from the spec, like gas: cost and time are known before anything runs.

The estimate is deliberately simple and conservative (multiply-add = 2 FLOPs, backward =
2x forward, elementwise ops counted per element) because what matters is that every
node computes the same number from the same spec, so fees, deadlines and virtual compute
time agree network-wide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from protocol.errors import SpecError
from protocol.pol.spec import Layer, LayerKind, OptimizerKind, Shape, TaskSpec, param_shapes, validate_spec

#: Backward costs about twice the forward (grad wrt inputs and wrt weights).
BACKWARD_FACTOR = 2
#: Per-element costs of the cheap layers (GELU's tanh/erf dominates).
ELEMENTWISE_FLOPS = {LayerKind.RELU: 1, LayerKind.GELU: 8, LayerKind.DROPOUT: 2, LayerKind.LAYERNORM: 8}
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
    """Forward FLOPs of one layer for one sample."""
    if layer.kind is LayerKind.LINEAR:
        return 2 * layer.in_size * layer.out_size
    if layer.kind is LayerKind.CONV2D:
        return 2 * layer.in_size * layer.kernel * layer.kernel * math.prod(out_shape)
    if layer.kind is LayerKind.RESIDUAL:
        return 4 * layer.in_size * layer.out_size + layer.out_size + layer.in_size
    return ELEMENTWISE_FLOPS.get(layer.kind, 0) * math.prod(in_shape)


def estimate(spec: TaskSpec) -> FlopsEstimate:
    """Price a (valid) spec; raise SpecError if it exceeds MAX_TOTAL_FLOPS."""
    shapes = validate_spec(spec)
    fwd = sum(layer_forward_flops(lay, shapes[i], shapes[i + 1]) for i, lay in enumerate(spec.layers))
    params = sum(math.prod(s) for s in param_shapes(spec))
    per_sample = fwd * (1 + BACKWARD_FACTOR) + LOSS_FLOPS_PER_CLASS * spec.num_classes
    per_step = spec.batch_size * per_sample + OPTIMIZER_FLOPS_PER_PARAM[spec.optimizer.kind] * params
    total = per_step * spec.steps
    if total > MAX_TOTAL_FLOPS:
        raise SpecError(f"estimated {total:.3e} FLOPs exceeds the {MAX_TOTAL_FLOPS:.0e} cap")
    return FlopsEstimate(fwd, per_step, per_step * spec.checkpoint_interval, total, params)
