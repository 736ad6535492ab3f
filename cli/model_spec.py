"""The `[model]` and `[base]` tables of a task file -> layers, loss and a fine-tuning base.

    [model]
    kind = "transformer"   # "mlp", "cnn", "transformer", or "layers" (an explicit list)
    blocks = 4             # transformer: pre-norm blocks
    d_model = 128          #   width
    heads = 4              #   attention heads (d_model must be a multiple)
    context = 128          #   tokens per window (and learned positions)
    hidden = 512           #   MLP width (default 4 * d_model)
    tied = true            #   LM head shares the embedding table

    kind = "mlp":  hidden = [64, 32], activation = "relu" | "gelu"
    kind = "cnn":  channels = [16, 32], kernel = 3, pool = "max" | "avg" | "none",
                   pool_size = 2, hidden = [64]
    kind = "layers": layers = [{type = "conv2d", in_size = 1, out_size = 8, kernel = 3,
                   padding = 1}, {type = "relu"}, {type = "maxpool2d", kernel = 2}, ...],
                   loss = "cross_entropy" | "mse" | "next_token"

    [base]                 # fine-tune: checkpoint 0 is these weights (optimizer state zero)
    weights = "w.safetensors"      # w.0000, ... as `polnet task result` writes them
    # and, for the proven final checkpoint of an earlier task (checked by Merkle proof):
    proof_root = "<hex>"           # that task's proof root
    checkpoints = 65               # leaves in its proof; the final one is the base
    proof = ["<hex>", ...]         # the final leaf's inclusion proof
    final_leaf = {step = 128, optimizer_hash = "<hex>", data_order_seed = 2}

Every key is checked and unknown keys are errors naming the key, as for the rest of the
file. Sizes are checked again, with the rule named, by the spec's own validation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from protocol.errors import ConfigError
from protocol.pol.spec import (
    MAX_CONTEXT,
    MAX_HEADS,
    MAX_KERNEL,
    MAX_LAYERS,
    MAX_WIDTH,
    PPM,
    BaseKind,
    BaseModel,
    Layer,
    LayerKind,
    LossKind,
    avgpool2d,
    conv2d,
    flatten,
    gelu,
    linear,
    maxpool2d,
    relu,
    transformer_layers,
)

KINDS = ("mlp", "cnn", "transformer", "layers")
MAX_HIDDEN_LAYERS = 8
MAX_CONV_LAYERS = 6
MAX_BLOCKS = MAX_LAYERS - 4
LOSSES = {"cross_entropy": LossKind.CROSS_ENTROPY, "mse": LossKind.MSE, "next_token": LossKind.NEXT_TOKEN}
MODEL_KEYS: dict[str, set[str]] = {
    "mlp": {"kind", "hidden", "activation"},
    "cnn": {"kind", "channels", "kernel", "pool", "pool_size", "hidden"},
    "transformer": {"kind", "blocks", "d_model", "heads", "context", "hidden", "tied"},
    "layers": {"kind", "layers", "loss"},
}
LAYER_TYPES = {k.name.lower(): k for k in LayerKind}
LAYER_FIELDS = {"type", "in_size", "out_size", "kernel", "stride", "padding", "rate", "heads"}
BASE_KEYS = {"weights", "proof_root", "checkpoints", "proof", "final_leaf"}
LEAF_KEYS = {"step", "optimizer_hash", "data_order_seed"}


def _known(table: dict[str, Any], known: set[str], where: str) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(f"unknown key {key!r} in [{where}]; known: {', '.join(sorted(known))}")


def _int(table: dict[str, Any], key: str, lo: int, hi: int, where: str, default: int | None = None) -> int:
    v = table.get(key, default)
    if type(v) is not int or not lo <= v <= hi:
        raise ConfigError(f"[{where}] {key} must be an integer in {lo}..{hi}, got {v!r}")
    return v


def _widths(table: dict[str, Any], key: str, most: int, where: str, default: list[int]) -> list[int]:
    v = table.get(key, default)
    if not isinstance(v, list) or len(v) > most or not all(type(w) is int and 1 <= w <= MAX_WIDTH for w in v):
        raise ConfigError(f"[{where}] {key} must be a list of at most {most} widths in 1..{MAX_WIDTH}")
    return v


def _choice(table: dict[str, Any], key: str, options: tuple[str, ...], where: str, default: str) -> str:
    v = table.get(key, default)
    if v not in options:
        raise ConfigError(f"[{where}] {key} must be one of {', '.join(options)}, got {v!r}")
    return str(v)


def _dense(widths: list[int], act: Layer) -> list[Layer]:
    out: list[Layer] = []
    for i in range(len(widths) - 1):
        out.append(linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            out.append(act)
    return out


def model_layers(
    table: Any, x_shape: tuple[int, ...], classes: int, text: bool
) -> tuple[tuple[int, ...], tuple[Layer, ...], LossKind, int]:
    """(input shape, layers, loss, num_classes) of a [model] table for this dataset."""
    if not isinstance(table, dict):
        raise ConfigError("[model] must be a table")
    kind = _choice(table, "kind", KINDS, "model", "")
    _known(table, MODEL_KEYS[kind], "model")
    where = "model"
    if kind == "transformer":
        if not text:
            raise ConfigError('[model] kind = "transformer" needs a text dataset (e.g. dataset = "corpus")')
        d = _int(table, "d_model", 1, MAX_WIDTH, where)
        heads = _int(table, "heads", 1, MAX_HEADS, where)
        context = _int(table, "context", 1, MAX_CONTEXT, where)
        blocks = _int(table, "blocks", 1, MAX_BLOCKS, where)
        hidden = _int(table, "hidden", 1, MAX_WIDTH, where, default=min(MAX_WIDTH, 4 * d))
        tied = table.get("tied", True)
        if type(tied) is not bool:
            raise ConfigError("[model] tied must be true or false")
        from node.compute.datasets import BYTE_VOCAB

        layers = transformer_layers(BYTE_VOCAB, context, d, heads, blocks, hidden, tied)
        return (context,), layers, LossKind.NEXT_TOKEN, BYTE_VOCAB
    if text and kind != "layers":
        raise ConfigError(f'[model] kind = "{kind}" cannot read a text dataset; use "transformer"')
    if kind == "mlp":
        act = relu() if _choice(table, "activation", ("relu", "gelu"), where, "relu") == "relu" else gelu()
        widths = _widths(table, "hidden", MAX_HIDDEN_LAYERS, where, [32])
        flat = 1
        for n in x_shape:
            flat *= n
        front = [flatten()] if len(x_shape) > 1 else []
        return x_shape, (*front, *_dense([flat, *widths, classes], act)), LossKind.CROSS_ENTROPY, classes
    if kind == "cnn":
        return (x_shape, *_cnn(table, x_shape, classes))
    return _explicit(table, x_shape, classes, text)


def _cnn(
    table: dict[str, Any], x_shape: tuple[int, ...], classes: int
) -> tuple[tuple[Layer, ...], LossKind, int]:
    if len(x_shape) != 3:
        raise ConfigError(
            f'[model] kind = "cnn" needs images [C, H, W] (e.g. dataset = "digit-images"), '
            f"got samples of shape {list(x_shape)}"
        )
    where = "model"
    channels = _widths(table, "channels", MAX_CONV_LAYERS, where, [16, 32])
    k = _int(table, "kernel", 1, MAX_KERNEL, where, default=3)
    pool = _choice(table, "pool", ("max", "avg", "none"), where, "max")
    size = _int(table, "pool_size", 1, MAX_KERNEL, where, default=2)
    hidden = _widths(table, "hidden", MAX_HIDDEN_LAYERS, where, [])
    c, h, w = x_shape
    layers: list[Layer] = []
    for co in channels:
        layers += [conv2d(c, co, k, padding=k // 2), relu()]  # "same" padding for odd kernels
        h, w = h + 2 * (k // 2) - k + 1, w + 2 * (k // 2) - k + 1
        if pool != "none" and h >= size and w >= size:
            layers.append(maxpool2d(size) if pool == "max" else avgpool2d(size))
            h, w = h // size, w // size
        c = co
    layers.append(flatten())
    return (*layers, *_dense([c * h * w, *hidden, classes], relu())), LossKind.CROSS_ENTROPY, classes


def _explicit(
    table: dict[str, Any], x_shape: tuple[int, ...], classes: int, text: bool
) -> tuple[tuple[int, ...], tuple[Layer, ...], LossKind, int]:
    rows = table.get("layers")
    if not isinstance(rows, list) or not 1 <= len(rows) <= MAX_LAYERS:
        raise ConfigError(f"[model] layers must be a list of 1..{MAX_LAYERS} layer tables")
    layers = []
    for i, row in enumerate(rows):
        where = f"model.layers[{i}]"
        if not isinstance(row, dict):
            raise ConfigError(
                f'[{where}] must be a table such as {{type = "linear", in_size = 8, out_size = 4}}'
            )
        _known(row, LAYER_FIELDS, where)
        kind = LAYER_TYPES.get(str(row.get("type")))
        if kind is None:
            raise ConfigError(
                f"[{where}] type must be one of {', '.join(LAYER_TYPES)}, got {row.get('type')!r}"
            )
        rate = row.get("rate", 0.0)
        if type(rate) not in (int, float) or not 0.0 <= rate < 1.0:
            raise ConfigError(f"[{where}] rate must be a number in [0, 1)")
        sizes = {
            k: _int(row, k, 0, 2**16 - 1 if k == "heads" else 2**32 - 1, where, default=0)
            for k in ("in_size", "out_size", "heads")
        }
        small = {k: _int(row, k, 0, 255, where, default=0) for k in ("kernel", "stride", "padding")}
        if kind in (LayerKind.MAXPOOL2D, LayerKind.AVGPOOL2D) and small["stride"] == 0:
            small["stride"] = small["kernel"]  # torch's default: stride = kernel
        if kind is LayerKind.CONV2D and small["stride"] == 0:
            small["stride"] = 1
        layers.append(
            Layer(
                kind,
                sizes["in_size"],
                sizes["out_size"],
                small["kernel"],
                small["stride"],
                small["padding"],
                round(rate * PPM),
                sizes["heads"],
            )
        )
    default = "next_token" if layers[0].kind is LayerKind.EMBEDDING else "cross_entropy"
    loss = LOSSES[_choice(table, "loss", tuple(LOSSES), "model", default)]
    if loss is LossKind.NEXT_TOKEN:
        if not text or layers[0].kind is not LayerKind.EMBEDDING:
            raise ConfigError("a next-token model needs a text dataset and an embedding first layer")
        return (_context(layers),), tuple(layers), loss, layers[0].in_size
    return x_shape, tuple(layers), loss, classes


def _context(layers: list[Layer]) -> int:
    for layer in layers:
        if layer.kind is LayerKind.POS_EMBEDDING:
            return layer.in_size
    raise ConfigError("an explicit language model needs a pos_embedding layer (its in_size is the context)")


def base_model(table: Any, base_dir: Path, params_hash: Any) -> tuple[BaseModel, bytes]:
    """The [base] table -> BaseModel and the weights blob. `params_hash(blob)` decodes the
    weights against the spec and returns their weights hash."""
    from protocol.pol.merkle import CheckpointLeaf, MerkleProof
    from protocol.pol.spec import MAX_CHECKPOINTS

    if not isinstance(table, dict):
        raise ConfigError("[base] must be a table")
    _known(table, BASE_KEYS, "base")
    name = table.get("weights")
    if not isinstance(name, str) or not name:
        raise ConfigError('[base] weights is required: a weights file such as "w.safetensors"')
    path = Path(name) if Path(name).is_absolute() else base_dir / name
    if not path.is_file():
        raise ConfigError(f"[base] weights {name!r}: no such file")
    from node.compute.tensors import MAX_BLOB_BYTES, blob_id

    with path.open("rb") as f:
        blob = f.read(MAX_BLOB_BYTES + 1)
    if len(blob) > MAX_BLOB_BYTES:
        raise ConfigError(f"[base] weights {name!r} exceed {MAX_BLOB_BYTES} bytes")
    weights = params_hash(blob)
    if "proof_root" not in table:
        extra = sorted(set(table) - {"weights"})
        if extra:
            raise ConfigError(f"[base] {', '.join(extra)} only go with proof_root (a proven base)")
        return BaseModel(BaseKind.UPLOADED, weights, blob_id(blob)), blob
    root = _hex32(table.get("proof_root"), "proof_root")
    n = _int(table, "checkpoints", 1, MAX_CHECKPOINTS, "base")
    path_hashes = table.get("proof")
    if not isinstance(path_hashes, list) or len(path_hashes) > 32:
        raise ConfigError("[base] proof must be a list of at most 32 hex hashes")
    leaf_t = table.get("final_leaf")
    if not isinstance(leaf_t, dict):
        raise ConfigError("[base] final_leaf must be a table {step, optimizer_hash, data_order_seed}")
    _known(leaf_t, LEAF_KEYS, "base.final_leaf")
    leaf = CheckpointLeaf(
        _int(leaf_t, "step", 0, 2**32 - 1, "base.final_leaf"),
        weights,
        _hex32(leaf_t.get("optimizer_hash"), "final_leaf.optimizer_hash"),
        _int(leaf_t, "data_order_seed", 0, 2**64 - 1, "base.final_leaf"),
    )
    proof = MerkleProof(n - 1, n, tuple(_hex32(h, "proof") for h in path_hashes))
    return BaseModel(BaseKind.PROVEN, weights, blob_id(blob), root, leaf, proof), blob


def _hex32(v: Any, key: str) -> bytes:
    try:
        raw = bytes.fromhex(v) if isinstance(v, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ConfigError(f"[base] {key} must be 64 hex characters")
    return raw
