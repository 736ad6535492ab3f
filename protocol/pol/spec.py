"""The declarative, versioned training task spec and its validation.

A submitter never ships code: the model is a list of whitelisted layers with bounded
sizes, so every node can build the same network, price it (`protocol.pol.flops`) and
refuse it before anything runs. Shapes are inferred here, in the pure core, because
both pricing and validation depend on them and must agree on every node.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated

from protocol.errors import SpecError
from protocol.pol.merkle import CheckpointLeaf, MerkleProof, leaf_hash, verify_inclusion
from protocol.schema import U8, U16, U32, U64, Hash32, Len, Text, Trailing

#: Bumped whenever the meaning of a field or of a layer changes; old tasks keep theirs.
#: Version 2 adds the transformer and pooling layers, next-token loss, a held-out split
#: (`val_size`), a base model to fine-tune (`base`), Linear on the last dim of any shape,
#: and BACKWARD ops that differentiate only inputs that need a gradient (not the batch).
SPEC_VERSION = 2
#: Version 1 (MLP/CNN layers only, every new field at its default) keeps its encoding,
#: its hash, its op sequence and its training bit for bit.
SPEC_V1 = 1
SUPPORTED_SPEC_VERSIONS = frozenset({SPEC_V1, SPEC_VERSION})

# --- limits (a spec beyond these is refused, whatever fee it offers) -------------------------

MAX_LAYERS = 32
#: A layer expands into at most this many primitive nodes and parameter tensors (a
#: transformer block: 12 and 12), which bounds a step's op sequence and reveal.
MAX_NODES_PER_LAYER = 12
MAX_PARAMS_PER_LAYER = 12
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
#: Token models: vocabulary, context (positions) and attention geometry. The attention
#: scores are context^2 per head, so context is bounded by what one op may hold.
MAX_VOCAB = 65_536
MAX_CONTEXT = 2048
MAX_HEADS = 64
MAX_HEAD_DIM = 256
ZERO_HASH = b"\x00" * 32


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
    # --- version 2 ---
    MAXPOOL2D = 9
    AVGPOOL2D = 10
    #: token ids (T,) -> rows of a (vocab, d) table: (T, d)
    EMBEDDING = 11
    #: (T, d) + a learned (context, d) table's first T rows
    POS_EMBEDDING = 12
    #: causal multi-head self-attention: QKV projection, scores, softmax, weighted sum, output
    ATTENTION = 13
    #: Linear(d->hidden), GELU, Linear(hidden->d)
    GELU_MLP = 14
    #: pre-norm residual block: x + ATTENTION(LN(x)), then h + GELU_MLP(LN(h))
    TRANSFORMER_BLOCK = 15
    #: logits = x @ W.T with its own (vocab, d) weight, no bias
    LM_HEAD = 16
    #: logits = x @ E.T with the EMBEDDING layer's table (tied weights)
    LM_HEAD_TIED = 17


#: Layer kinds a version-1 spec may use (anything else needs version 2).
V1_LAYERS = frozenset(range(1, 9))


class LossKind(IntEnum):
    CROSS_ENTROPY = 1
    MSE = 2  # against one-hot targets
    #: version 2: mean cross-entropy of every position's logits against the next token
    NEXT_TOKEN = 3


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
    Residual width (in_size) and hidden width (out_size); Embedding vocabulary and width;
    PosEmbedding context and width; Attention width (in_size, `heads` heads); GeluMLP and
    TransformerBlock width and hidden width (plus `heads` for the block); LmHead width and
    vocabulary. Pooling uses kernel, stride and padding.
    """

    kind: LayerKind
    in_size: U32 = 0
    out_size: U32 = 0
    kernel: U8 = 0
    stride: U8 = 0
    padding: U8 = 0
    dropout_ppm: U32 = 0
    heads: Annotated[U16, Trailing()] = 0


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


class BaseKind(IntEnum):
    #: the final checkpoint of an earlier task's proof (stacked proofs)
    PROVEN = 1
    #: weights the submitter uploads as a safetensors blob
    UPLOADED = 2


@dataclass(frozen=True, slots=True)
class BaseModel:
    """The weights a fine-tuning task starts from: its checkpoint 0 (optimizer state zero).

    `weights_hash` is the group hash of the base's weight digests, so checkpoint 0 is
    checked by hash alone; `blob_hash` names the safetensors blob (`w.0000`, ...) the
    solver fetches. A PROVEN base also names the earlier proof's root, that proof's final
    leaf and the leaf's inclusion proof: the spec checks the proof itself, and the market
    checks that the root belongs to a settled, valid task (see protocol/pol/base.py).
    """

    kind: BaseKind
    weights_hash: Hash32
    blob_hash: Hash32
    proof_root: Hash32 = ZERO_HASH
    final_leaf: CheckpointLeaf | None = None
    proof: MerkleProof | None = None


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
    #: version 2: the last `val_size` samples (tokens, for text) are held out of training
    val_size: Annotated[U32, Trailing()] = 0
    #: version 2: fine-tune from these weights instead of the seeded initialisation
    base: Annotated[BaseModel | None, Trailing()] = None

    @property
    def train_size(self) -> int:
        """Samples (tokens) training draws from: the dataset minus the held-out tail."""
        return self.dataset_size - self.val_size

    @property
    def is_token_model(self) -> bool:
        return self.layers[0].kind is LayerKind.EMBEDDING

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


def maxpool2d(kernel: int, stride: int | None = None, padding: int = 0) -> Layer:
    return Layer(LayerKind.MAXPOOL2D, kernel=kernel, stride=stride or kernel, padding=padding)


def avgpool2d(kernel: int, stride: int | None = None, padding: int = 0) -> Layer:
    return Layer(LayerKind.AVGPOOL2D, kernel=kernel, stride=stride or kernel, padding=padding)


def embedding(vocab: int, width: int) -> Layer:
    return Layer(LayerKind.EMBEDDING, vocab, width)


def pos_embedding(context: int, width: int) -> Layer:
    return Layer(LayerKind.POS_EMBEDDING, context, width)


def attention(width: int, heads: int) -> Layer:
    return Layer(LayerKind.ATTENTION, width, heads=heads)


def gelu_mlp(width: int, hidden: int) -> Layer:
    return Layer(LayerKind.GELU_MLP, width, hidden)


def transformer_block(width: int, heads: int, hidden: int) -> Layer:
    return Layer(LayerKind.TRANSFORMER_BLOCK, width, hidden, heads=heads)


def lm_head(width: int, vocab: int, tied: bool = False) -> Layer:
    return Layer(LayerKind.LM_HEAD_TIED if tied else LayerKind.LM_HEAD, width, vocab)


def transformer_layers(
    vocab: int,
    context: int,
    width: int,
    heads: int,
    blocks: int,
    hidden: int | None = None,
    tied: bool = True,
) -> tuple[Layer, ...]:
    """A GPT-style decoder: token + position embeddings, pre-norm blocks, final LN, head."""
    return (
        embedding(vocab, width),
        pos_embedding(context, width),
        *[transformer_block(width, heads, hidden or 4 * width) for _ in range(blocks)],
        layernorm(width),
        lm_head(width, vocab, tied),
    )


# --- shape inference and validation ---------------------------------------------------------------

Shape = tuple[int, ...]
_SIZES = ("in_size", "out_size", "kernel", "stride", "padding", "dropout_ppm", "heads")


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise SpecError(msg)


def _uses(layer: Layer, idx: int, *used: str) -> None:
    """Every size field a layer kind does not use must be 0 (one encoding per layer)."""
    for name in _SIZES:
        if name not in used:
            _require(getattr(layer, name) == 0, f"layer {idx} ({layer.kind.name}): field {name} must be 0")


def _width_ok(n: int) -> bool:
    return 1 <= n <= MAX_WIDTH


def _last_dim(layer: Layer, idx: int, shape: Shape, width: int, what: str) -> None:
    _require(len(shape) >= 1 and shape[-1] == width, f"layer {idx}: {what}({width}) does not match {shape}")


def _linear_shape(layer: Layer, idx: int, shape: Shape, version: int) -> Shape:
    _uses(layer, idx, "in_size", "out_size")
    _require(
        _width_ok(layer.in_size) and _width_ok(layer.out_size), f"layer {idx}: Linear width out of range"
    )
    if version >= 2:  # on the last dim of any shape, as F.linear
        _last_dim(layer, idx, shape, layer.in_size, "Linear")
        return (*shape[:-1], layer.out_size)
    _require(shape == (layer.in_size,), f"layer {idx}: Linear expects ({layer.in_size},), got {shape}")
    return (layer.out_size,)


def _conv_shape(layer: Layer, idx: int, shape: Shape, version: int) -> Shape:
    _uses(layer, idx, "in_size", "out_size", "kernel", "stride", "padding")
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


def _pool_shape(layer: Layer, idx: int, shape: Shape, version: int) -> Shape:
    _uses(layer, idx, "kernel", "stride", "padding")
    _require(len(shape) == 3, f"layer {idx}: pooling expects (C, H, W), got {shape}")
    _require(1 <= layer.kernel <= MAX_KERNEL, f"layer {idx}: kernel must be 1..{MAX_KERNEL}")
    _require(1 <= layer.stride <= MAX_STRIDE, f"layer {idx}: stride must be 1..{MAX_STRIDE}")
    # torch's own rule: padding at most half the kernel (a window never lies in padding only)
    _require(2 * layer.padding <= layer.kernel, f"layer {idx}: pooling padding must be at most kernel/2")
    h, w = ((d + 2 * layer.padding - layer.kernel) // layer.stride + 1 for d in shape[1:])
    _require(h >= 1 and w >= 1, f"layer {idx}: pooling output would be empty")
    return (shape[0], h, w)


def _same_shape(layer: Layer, idx: int, shape: Shape, version: int) -> Shape:
    _uses(layer, idx)
    return shape


def _layernorm_shape(layer: Layer, idx: int, shape: Shape, version: int) -> Shape:
    _uses(layer, idx, "in_size")
    _require(
        _width_ok(layer.in_size) and shape[-1] == layer.in_size,
        f"layer {idx}: LayerNorm({layer.in_size}) does not match last dim of {shape}",
    )
    return shape


def _dropout_shape(layer: Layer, idx: int, shape: Shape, version: int) -> Shape:
    _uses(layer, idx, "dropout_ppm")
    _require(0 < layer.dropout_ppm <= MAX_DROPOUT_PPM, f"layer {idx}: dropout rate must be in (0, 0.9]")
    return shape


def _flatten_shape(layer: Layer, idx: int, shape: Shape, version: int) -> Shape:
    _uses(layer, idx)
    return (math.prod(shape),)


def _residual_shape(layer: Layer, idx: int, shape: Shape, version: int) -> Shape:
    _uses(layer, idx, "in_size", "out_size")
    _require(
        _width_ok(layer.in_size) and _width_ok(layer.out_size), f"layer {idx}: Residual width out of range"
    )
    _require(shape == (layer.in_size,), f"layer {idx}: Residual expects ({layer.in_size},), got {shape}")
    return shape


def _embedding_shape(layer: Layer, idx: int, shape: Shape, version: int) -> Shape:
    _uses(layer, idx, "in_size", "out_size")
    # Rule: token ids come only from the batch, so an embedding is the model's first layer.
    _require(idx == 0, f"layer {idx}: Embedding must be the first layer (it reads token ids)")
    _require(
        len(shape) == 1 and 1 <= shape[0] <= MAX_CONTEXT,
        f"layer {idx}: Embedding expects (context,) token ids with context 1..{MAX_CONTEXT}, got {shape}",
    )
    _require(1 <= layer.in_size <= MAX_VOCAB, f"layer {idx}: vocabulary must be 1..{MAX_VOCAB}")
    _require(_width_ok(layer.out_size), f"layer {idx}: Embedding width out of range")
    return (shape[0], layer.out_size)


def _sequence(layer: Layer, idx: int, shape: Shape, what: str) -> tuple[int, int]:
    _require(len(shape) == 2, f"layer {idx}: {what} expects (context, width), got {shape}")
    return shape[0], shape[1]


def _pos_shape(layer: Layer, idx: int, shape: Shape, version: int) -> Shape:
    _uses(layer, idx, "in_size", "out_size")
    t, d = _sequence(layer, idx, shape, "PosEmbedding")
    _require(1 <= layer.in_size <= MAX_CONTEXT, f"layer {idx}: positions must be 1..{MAX_CONTEXT}")
    _require(t <= layer.in_size, f"layer {idx}: context {t} exceeds the {layer.in_size} learned positions")
    _require(d == layer.out_size, f"layer {idx}: PosEmbedding width {layer.out_size} != {d}")
    return shape


def _heads_ok(layer: Layer, idx: int, shape: Shape, width: int) -> None:
    t, d = _sequence(layer, idx, shape, layer.kind.name)
    _require(_width_ok(width) and d == width, f"layer {idx}: attention width {width} does not match {shape}")
    h = layer.heads
    _require(1 <= h <= MAX_HEADS, f"layer {idx}: heads must be 1..{MAX_HEADS}")
    _require(d % h == 0, f"layer {idx}: width {d} is not a multiple of {h} heads")
    _require(d // h <= MAX_HEAD_DIM, f"layer {idx}: head width {d // h} exceeds {MAX_HEAD_DIM}")
    _require(t <= MAX_CONTEXT, f"layer {idx}: context {t} exceeds {MAX_CONTEXT}")
    # Rule: the score matrix (heads x T x T per sample) is an activation like any other.
    _require(h * t * t <= MAX_ACTIVATIONS, f"layer {idx}: {h}x{t}x{t} attention scores exceed the cap")


def _attention_shape(layer: Layer, idx: int, shape: Shape, version: int) -> Shape:
    _uses(layer, idx, "in_size", "heads")
    _heads_ok(layer, idx, shape, layer.in_size)
    return shape


def _mlp_ok(layer: Layer, idx: int, shape: Shape) -> None:
    _last_dim(layer, idx, shape, layer.in_size, layer.kind.name)
    _require(_width_ok(layer.in_size) and _width_ok(layer.out_size), f"layer {idx}: MLP width out of range")
    hidden = math.prod(shape[:-1]) * layer.out_size
    _require(hidden <= MAX_ACTIVATIONS, f"layer {idx}: {hidden} hidden activations exceed the cap")


def _gelu_mlp_shape(layer: Layer, idx: int, shape: Shape, version: int) -> Shape:
    _uses(layer, idx, "in_size", "out_size")
    _mlp_ok(layer, idx, shape)
    return shape


def _block_shape(layer: Layer, idx: int, shape: Shape, version: int) -> Shape:
    _uses(layer, idx, "in_size", "out_size", "heads")
    _heads_ok(layer, idx, shape, layer.in_size)
    _mlp_ok(layer, idx, shape)
    return shape


def _lm_head_shape(layer: Layer, idx: int, shape: Shape, version: int) -> Shape:
    _uses(layer, idx, "in_size", "out_size")
    _last_dim(layer, idx, shape, layer.in_size, "LmHead")
    _require(1 <= layer.out_size <= MAX_VOCAB, f"layer {idx}: vocabulary must be 1..{MAX_VOCAB}")
    return (*shape[:-1], layer.out_size)


_ShapeRule = Callable[[Layer, int, Shape, int], Shape]
_SHAPE_RULES: dict[LayerKind, _ShapeRule] = {
    LayerKind.LINEAR: _linear_shape,
    LayerKind.CONV2D: _conv_shape,
    LayerKind.RELU: _same_shape,
    LayerKind.GELU: _same_shape,
    LayerKind.LAYERNORM: _layernorm_shape,
    LayerKind.DROPOUT: _dropout_shape,
    LayerKind.FLATTEN: _flatten_shape,
    LayerKind.RESIDUAL: _residual_shape,
    LayerKind.MAXPOOL2D: _pool_shape,
    LayerKind.AVGPOOL2D: _pool_shape,
    LayerKind.EMBEDDING: _embedding_shape,
    LayerKind.POS_EMBEDDING: _pos_shape,
    LayerKind.ATTENTION: _attention_shape,
    LayerKind.GELU_MLP: _gelu_mlp_shape,
    LayerKind.TRANSFORMER_BLOCK: _block_shape,
    LayerKind.LM_HEAD: _lm_head_shape,
    LayerKind.LM_HEAD_TIED: _lm_head_shape,
}


def _attention_params(d: int) -> list[Shape]:
    return [(3 * d, d), (3 * d,), (d, d), (d,)]


def _mlp_params(d: int, h: int) -> list[Shape]:
    return [(h, d), (h,), (d, h), (d,)]


def layer_params(layer: Layer) -> list[Shape]:
    """Parameter tensor shapes of one layer, in the order the trainer registers them.

    A tied LM head has none: it reads the embedding's table (one tensor, two uses).
    """
    i, o, k = layer.in_size, layer.out_size, layer.kernel
    kind = layer.kind
    if kind is LayerKind.LINEAR:
        return [(o, i), (o,)]
    if kind is LayerKind.CONV2D:
        return [(o, i, k, k), (o,)]
    if kind is LayerKind.LAYERNORM:
        return [(i,), (i,)]
    if kind is LayerKind.RESIDUAL:
        return [(o, i), (o,), (i, o), (i,)]
    if kind in (LayerKind.EMBEDDING, LayerKind.POS_EMBEDDING):
        return [(i, o)]
    if kind is LayerKind.ATTENTION:
        return _attention_params(i)
    if kind is LayerKind.GELU_MLP:
        return _mlp_params(i, o)
    if kind is LayerKind.TRANSFORMER_BLOCK:
        return [(i,), (i,), *_attention_params(i), (i,), (i,), *_mlp_params(i, o)]
    if kind is LayerKind.LM_HEAD:
        return [(o, i)]
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
        # Rule: layers added in version 2 need a version-2 spec (old nodes refuse them).
        _require(
            spec.version >= 2 or layer.kind in V1_LAYERS,
            f"layer {idx}: {layer.kind.name} needs spec version 2",
        )
        shape = _SHAPE_RULES[layer.kind](layer, idx, shape, spec.version)
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
    # Rule: the held-out split leaves something to train on (and is new in version 2).
    _require(spec.version >= 2 or spec.val_size == 0, "a validation split needs spec version 2")
    _require(spec.val_size < spec.dataset_size, "the validation split takes the whole dataset")
    if spec.is_token_model:
        window = spec.input_shape[0] + 1  # a context and its next tokens
        _require(spec.train_size >= window, f"the training split has fewer than {window} tokens")
        _require(spec.val_size == 0 or spec.val_size >= window, f"a validation split needs {window} tokens")
    else:
        _require(spec.batch_size <= spec.train_size, "batch larger than the dataset")


def _validate_outputs(spec: TaskSpec, shapes: list[Shape]) -> None:
    # Rule: the model's output is one score per class (per position, for a language model).
    _require(
        1 <= spec.num_classes <= MAX_CLASSES or spec.is_token_model, f"num_classes must be 1..{MAX_CLASSES}"
    )
    first = spec.layers[0]
    # Rule: token ids in, next-token loss out, and only then (text datasets mean token models).
    _require(
        spec.is_token_model == (spec.loss is LossKind.NEXT_TOKEN),
        "a next-token loss needs an Embedding first layer, and an Embedding needs the next-token loss",
    )
    _require(
        spec.version >= 2 or spec.loss is not LossKind.NEXT_TOKEN, "next-token loss needs spec version 2"
    )
    if spec.is_token_model:
        t = spec.input_shape[0]
        _require(
            first.in_size == spec.num_classes, f"vocabulary {first.in_size} != num_classes {spec.num_classes}"
        )
        _require(
            shapes[-1] == (t, spec.num_classes), f"model output {shapes[-1]} != ({t}, {spec.num_classes})"
        )
    else:
        _require(shapes[-1] == (spec.num_classes,), f"model output {shapes[-1]} != ({spec.num_classes},)")
    for idx, layer in enumerate(spec.layers):
        if layer.kind is LayerKind.LM_HEAD_TIED:
            # Rule: a tied head reads the embedding's table, so their shapes agree.
            _require(
                first.kind is LayerKind.EMBEDDING
                and (first.in_size, first.out_size) == (layer.out_size, layer.in_size),
                f"layer {idx}: a tied head needs an Embedding({layer.out_size}, {layer.in_size}) first layer",
            )


def _validate_base(spec: TaskSpec) -> None:
    base = spec.base
    if base is None:
        return
    # Rule: fine-tuning is new in version 2.
    _require(spec.version >= 2, "a base model needs spec version 2")
    if base.kind is BaseKind.UPLOADED:
        # Rule: an uploaded base names its blob only (one encoding per base).
        _require(
            base.proof_root == ZERO_HASH and base.final_leaf is None and base.proof is None,
            "an uploaded base has no proof root, leaf or proof",
        )
        return
    # Rule: a proven base shows, by Merkle proof, that its weights are the final checkpoint
    # of the named proof (the market checks that the root belongs to a settled valid task).
    leaf, proof = base.final_leaf, base.proof
    _require(leaf is not None and proof is not None, "a proven base needs its final leaf and its proof")
    assert leaf is not None and proof is not None
    _require(leaf.weights_hash == base.weights_hash, "the base's weights are not its leaf's weights")
    _require(
        is_final_checkpoint(base.proof_root, leaf, proof),
        "the base leaf is not the final checkpoint of its proof",
    )


def is_final_checkpoint(root: bytes, leaf: CheckpointLeaf, proof: MerkleProof) -> bool:
    """True iff `proof` shows `leaf` is the last leaf of the proof tree with this root.

    The last leaf of a proof is its final checkpoint (leaves are in step order, the
    final one at index size - 1). What this cannot say, and the market must check, is
    that `root` is the committed root of a settled task whose proof was accepted, that
    `proof.size` is that task's number of checkpoints and `leaf.step` its step count.
    """
    return (
        proof.size >= 1 and proof.index == proof.size - 1 and verify_inclusion(root, leaf_hash(leaf), proof)
    )


def validate_spec(spec: TaskSpec) -> list[Shape]:
    """Refuse any spec outside the whitelist or the limits; return the activation shapes."""
    # Rule: only spec versions this node implements are trained or verified.
    _require(spec.version in SUPPORTED_SPEC_VERSIONS, f"unsupported spec version {spec.version}")
    shapes = infer_shapes(spec)
    _validate_outputs(spec, shapes)
    # Rule: a model must have something to train.
    n_params = sum(math.prod(s) for s in param_shapes(spec))
    _require(0 < n_params <= MAX_PARAMS, f"{n_params} parameters outside 1..{MAX_PARAMS}")
    _validate_optimizer(spec.optimizer)
    _validate_schedule(spec)
    _validate_base(spec)
    # Rule: the profile must name something a verifier can reproduce.
    _require(1 <= spec.profile.threads <= MAX_THREADS, f"threads must be 1..{MAX_THREADS}")
    _require(len(spec.profile.torch_version) > 0, "profile must name a torch version")
    return shapes
