"""The declarative, versioned training task spec and its validation.

A submitter never ships code: the model is a list of whitelisted layers with bounded
sizes, so every node can build the same network, price it (`protocol.pol.flops`) and
refuse it before anything runs. Shapes are inferred here, in the pure core, because
both pricing and validation depend on them and must agree on every node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated

from protocol.errors import SpecError
from protocol.schema import U8, U16, U32, U64, Hash32, Len, Text

#: Bumped whenever the meaning of a field or of a layer changes; old tasks keep theirs.
SPEC_VERSION = 1
SUPPORTED_SPEC_VERSIONS = frozenset({SPEC_VERSION})

# --- limits (a spec beyond these is refused, whatever fee it offers) -------------------------

MAX_LAYERS = 32
#: Widest feature vector or channel count; bounds parameter count per layer.
MAX_WIDTH = 4096
MAX_SPATIAL = 256
MAX_KERNEL = 11
MAX_STRIDE = 8
MAX_INPUT_DIMS = 3
#: Activations per sample at any layer; bounds memory and one op's input size.
MAX_ACTIVATIONS = 1 << 22
MAX_PARAMS = 1 << 26
MAX_BATCH = 4096
MAX_STEPS = 1_000_000
#: Merkle leaves per proof; together with MAX_STEPS this bounds k from below.
MAX_CHECKPOINTS = 4096
MAX_CLASSES = 4096
MAX_DATASET_SAMPLES = 1 << 24
#: Dropout rate is carried in parts per million to keep the spec free of float rounding.
PPM = 1_000_000
MAX_DROPOUT_PPM = 900_000
MAX_LR = 10.0
MAX_THREADS = 256


class LayerKind(IntEnum):
    LINEAR = 1
    CONV2D = 2
    RELU = 3
    GELU = 4
    LAYERNORM = 5
    DROPOUT = 6
    FLATTEN = 7
    #: x + Linear(hidden->width)(ReLU(Linear(width->hidden)(x))): the smallest useful skip.
    RESIDUAL = 8


class LossKind(IntEnum):
    CROSS_ENTROPY = 1
    MSE = 2  # against one-hot targets


class OptimizerKind(IntEnum):
    SGD = 1  # with (optional) momentum
    ADAM = 2
    ADAMW = 3


class DeviceClass(IntEnum):
    CPU = 1
    CUDA = 2


class DType(IntEnum):
    FLOAT32 = 1
    FLOAT64 = 2


@dataclass(frozen=True, slots=True)
class Layer:
    """One whitelisted layer. Unused size fields must be zero (one encoding per layer).

    in_size/out_size: Linear features, Conv2d channels, LayerNorm width (in_size),
    Residual width (in_size) and hidden width (out_size).
    """

    kind: LayerKind
    in_size: U32 = 0
    out_size: U32 = 0
    kernel: U8 = 0
    stride: U8 = 0
    padding: U8 = 0
    dropout_ppm: U32 = 0


@dataclass(frozen=True, slots=True)
class OptimizerSpec:
    kind: OptimizerKind
    lr: float
    momentum: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclass(frozen=True, slots=True)
class ReproProfile:
    """What a re-execution must match for bit-identical results (CPU, same torch build,
    same thread count, deterministic algorithms); anything else needs a threshold."""

    device: DeviceClass = DeviceClass.CPU
    dtype: DType = DType.FLOAT32
    threads: U16 = 1
    deterministic: bool = True
    torch_version: Text = "2.13.0"


@dataclass(frozen=True, slots=True)
class TaskSpec:
    version: U16
    input_shape: Annotated[tuple[U32, ...], Len(1, MAX_INPUT_DIMS)]
    num_classes: U32
    layers: Annotated[tuple[Layer, ...], Len(1, MAX_LAYERS)]
    loss: LossKind
    optimizer: OptimizerSpec
    batch_size: U32
    steps: U32
    checkpoint_interval: U32
    dataset_hash: Hash32
    dataset_size: U32
    model_seed: U64
    data_seed: U64
    dropout_seed: U64
    profile: ReproProfile

    @property
    def num_checkpoints(self) -> int:
        """Checkpoints including step 0 (the initial weights)."""
        return self.steps // self.checkpoint_interval + 1

    @property
    def num_segments(self) -> int:
        return self.steps // self.checkpoint_interval


# --- constructors that read like a model definition --------------------------------------------


def linear(i: int, o: int) -> Layer:
    return Layer(LayerKind.LINEAR, i, o)


def conv2d(ci: int, co: int, kernel: int, stride: int = 1, padding: int = 0) -> Layer:
    return Layer(LayerKind.CONV2D, ci, co, kernel, stride, padding)


def relu() -> Layer:
    return Layer(LayerKind.RELU)


def gelu() -> Layer:
    return Layer(LayerKind.GELU)


def layernorm(width: int) -> Layer:
    return Layer(LayerKind.LAYERNORM, width)


def dropout(rate: float) -> Layer:
    return Layer(LayerKind.DROPOUT, dropout_ppm=round(rate * PPM))


def flatten() -> Layer:
    return Layer(LayerKind.FLATTEN)


def residual(width: int, hidden: int) -> Layer:
    return Layer(LayerKind.RESIDUAL, width, hidden)


# --- shape inference and validation ---------------------------------------------------------------

Shape = tuple[int, ...]


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise SpecError(msg)


def _require_unused(layer: Layer, idx: int, *names: str) -> None:
    for name in names:
        _require(getattr(layer, name) == 0, f"layer {idx} ({layer.kind.name}): field {name} must be 0")


def _width_ok(n: int) -> bool:
    return 1 <= n <= MAX_WIDTH


def _linear_shape(layer: Layer, idx: int, shape: Shape) -> Shape:
    _require_unused(layer, idx, "kernel", "stride", "padding", "dropout_ppm")
    _require(
        _width_ok(layer.in_size) and _width_ok(layer.out_size), f"layer {idx}: Linear width out of range"
    )
    _require(shape == (layer.in_size,), f"layer {idx}: Linear expects ({layer.in_size},), got {shape}")
    return (layer.out_size,)


def _conv_shape(layer: Layer, idx: int, shape: Shape) -> Shape:
    _require_unused(layer, idx, "dropout_ppm")
    _require(len(shape) == 3, f"layer {idx}: Conv2d expects (C, H, W), got {shape}")
    _require(
        _width_ok(layer.in_size) and _width_ok(layer.out_size), f"layer {idx}: Conv2d channels out of range"
    )
    _require(
        shape[0] == layer.in_size, f"layer {idx}: Conv2d expects {layer.in_size} channels, got {shape[0]}"
    )
    _require(1 <= layer.kernel <= MAX_KERNEL, f"layer {idx}: kernel must be 1..{MAX_KERNEL}")
    _require(1 <= layer.stride <= MAX_STRIDE, f"layer {idx}: stride must be 1..{MAX_STRIDE}")
    _require(layer.padding < layer.kernel, f"layer {idx}: padding must be below the kernel size")
    h, w = ((d + 2 * layer.padding - layer.kernel) // layer.stride + 1 for d in shape[1:])
    _require(h >= 1 and w >= 1, f"layer {idx}: Conv2d output would be empty")
    return (layer.out_size, h, w)


def _same_shape(layer: Layer, idx: int, shape: Shape) -> Shape:
    _require_unused(layer, idx, "in_size", "out_size", "kernel", "stride", "padding", "dropout_ppm")
    return shape


def _layernorm_shape(layer: Layer, idx: int, shape: Shape) -> Shape:
    _require_unused(layer, idx, "out_size", "kernel", "stride", "padding", "dropout_ppm")
    _require(
        _width_ok(layer.in_size) and shape[-1] == layer.in_size,
        f"layer {idx}: LayerNorm({layer.in_size}) does not match last dim of {shape}",
    )
    return shape


def _dropout_shape(layer: Layer, idx: int, shape: Shape) -> Shape:
    _require_unused(layer, idx, "in_size", "out_size", "kernel", "stride", "padding")
    _require(0 < layer.dropout_ppm <= MAX_DROPOUT_PPM, f"layer {idx}: dropout rate must be in (0, 0.9]")
    return shape


def _flatten_shape(layer: Layer, idx: int, shape: Shape) -> Shape:
    _require_unused(layer, idx, "in_size", "out_size", "kernel", "stride", "padding", "dropout_ppm")
    return (math.prod(shape),)


def _residual_shape(layer: Layer, idx: int, shape: Shape) -> Shape:
    _require_unused(layer, idx, "kernel", "stride", "padding", "dropout_ppm")
    _require(
        _width_ok(layer.in_size) and _width_ok(layer.out_size), f"layer {idx}: Residual width out of range"
    )
    _require(shape == (layer.in_size,), f"layer {idx}: Residual expects ({layer.in_size},), got {shape}")
    return shape


_SHAPE_RULES = {
    LayerKind.LINEAR: _linear_shape,
    LayerKind.CONV2D: _conv_shape,
    LayerKind.RELU: _same_shape,
    LayerKind.GELU: _same_shape,
    LayerKind.LAYERNORM: _layernorm_shape,
    LayerKind.DROPOUT: _dropout_shape,
    LayerKind.FLATTEN: _flatten_shape,
    LayerKind.RESIDUAL: _residual_shape,
}


def layer_params(layer: Layer) -> list[Shape]:
    """Parameter tensor shapes of one layer, in the order the trainer registers them."""
    i, o, k = layer.in_size, layer.out_size, layer.kernel
    if layer.kind is LayerKind.LINEAR:
        return [(o, i), (o,)]
    if layer.kind is LayerKind.CONV2D:
        return [(o, i, k, k), (o,)]
    if layer.kind is LayerKind.LAYERNORM:
        return [(i,), (i,)]
    if layer.kind is LayerKind.RESIDUAL:
        return [(o, i), (o,), (i, o), (i,)]
    return []


def infer_shapes(spec: TaskSpec) -> list[Shape]:
    """Per-sample activation shapes: the input, then the output of every layer."""
    shape: Shape = tuple(spec.input_shape)
    _require(
        all(1 <= d <= MAX_SPATIAL or (len(shape) == 1 and d <= MAX_WIDTH) for d in shape),
        f"input shape {shape} out of range",
    )
    shapes = [shape]
    for idx, layer in enumerate(spec.layers):
        shape = _SHAPE_RULES[layer.kind](layer, idx, shape)
        _require(
            math.prod(shape) <= MAX_ACTIVATIONS, f"layer {idx}: {math.prod(shape)} activations exceed the cap"
        )
        shapes.append(shape)
    return shapes


def param_shapes(spec: TaskSpec) -> list[Shape]:
    return [s for layer in spec.layers for s in layer_params(layer)]


def _validate_optimizer(opt: OptimizerSpec) -> None:
    finite = all(
        math.isfinite(v) for v in (opt.lr, opt.momentum, opt.beta1, opt.beta2, opt.eps, opt.weight_decay)
    )
    _require(finite, "optimizer hyperparameters must be finite")
    _require(0.0 < opt.lr <= MAX_LR, f"learning rate must be in (0, {MAX_LR}]")
    _require(0.0 <= opt.momentum < 1.0, "momentum must be in [0, 1)")
    _require(0.0 <= opt.beta1 < 1.0 and 0.0 <= opt.beta2 < 1.0, "betas must be in [0, 1)")
    _require(0.0 < opt.eps <= 1.0, "eps must be in (0, 1]")
    _require(0.0 <= opt.weight_decay <= 1.0, "weight decay must be in [0, 1]")


def _validate_schedule(spec: TaskSpec) -> None:
    _require(1 <= spec.batch_size <= MAX_BATCH, f"batch size must be 1..{MAX_BATCH}")
    _require(1 <= spec.steps <= MAX_STEPS, f"steps must be 1..{MAX_STEPS}")
    k = spec.checkpoint_interval
    _require(1 <= k <= spec.steps, "checkpoint interval must be 1..steps")
    # Segments are equal so that every sampled segment costs the same to re-execute.
    _require(spec.steps % k == 0, "steps must be a multiple of the checkpoint interval")
    _require(spec.num_checkpoints <= MAX_CHECKPOINTS, f"more than {MAX_CHECKPOINTS} checkpoints")
    _require(1 <= spec.dataset_size <= MAX_DATASET_SAMPLES, "dataset size out of range")
    _require(spec.batch_size <= spec.dataset_size, "batch larger than the dataset")


def validate_spec(spec: TaskSpec) -> list[Shape]:
    """Refuse any spec outside the whitelist or the limits; return the activation shapes."""
    # Rule: only spec versions this node implements are trained or verified.
    _require(spec.version in SUPPORTED_SPEC_VERSIONS, f"unsupported spec version {spec.version}")
    # Rule: the model's output is one score per class.
    _require(1 <= spec.num_classes <= MAX_CLASSES, f"num_classes must be 1..{MAX_CLASSES}")
    shapes = infer_shapes(spec)
    _require(shapes[-1] == (spec.num_classes,), f"model output {shapes[-1]} != ({spec.num_classes},)")
    # Rule: a model must have something to train.
    n_params = sum(math.prod(s) for s in param_shapes(spec))
    _require(0 < n_params <= MAX_PARAMS, f"{n_params} parameters outside 1..{MAX_PARAMS}")
    _validate_optimizer(spec.optimizer)
    _validate_schedule(spec)
    # Rule: the profile must name something a verifier can reproduce.
    _require(1 <= spec.profile.threads <= MAX_THREADS, f"threads must be 1..{MAX_THREADS}")
    _require(len(spec.profile.torch_version) > 0, "profile must name a torch version")
    return shapes
