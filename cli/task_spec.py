"""A task spec file (TOML or JSON) -> the protocol's TaskSpec, its dataset and SubmitTask.

The file is declarative and small on purpose: a model is a stack of whitelisted layers
described by widths, never code; the dataset is a built-in one, a safetensors file
holding `x` (float32, [N, C, H, W] for images) and `y` (int64), or any UTF-8 text file
(byte tokens). Every key is checked, unknown keys are errors (a misspelt `stpes` must
not silently train the default), the fee follows from the spec's estimated FLOPs, as
the market prices it, and the memory a worker needs from its peak-memory estimate.

A `[model]` table describes an MLP, a CNN, a transformer or an explicit layer list, and
`[base]` a model to fine-tune (see cli/model_spec.py and docs/examples/); such a file is
a version-2 task. Without `[model]`, `hidden` gives a version-1 ReLU MLP:

    dataset = "digits"               # "digits", "digit-images", "synthetic", "corpus" (text),
                                     #   a .safetensors file, or any UTF-8 text file
    val_fraction = 0.1               # with [model]: the held-out tail of the dataset
    hidden = [32]                    # hidden layer widths (ReLU between layers)
    steps = 128                      # at least 64 checkpoint segments (the chain's
    checkpoint_interval = 2          #   min_segments): steps / interval >= 64
    batch_size = 32
    optimizer = "adam"               # "adam", "adamw" or "sgd"
    lr = 0.01
    seed = 1                         # model init, data order and dropout seeds derive from it
    max_price_per_gflop = 120        # at least the chain's floor (devnet: 30)
    private = false                  # true: the dataset, checkpoints and weights are sealed
                                     #   to the parties the market elects (docs/privacy.md)
    [synthetic]                      # only for dataset = "synthetic"
    samples = 512
    features = 16
    classes = 4
    seed = 1
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from protocol.chain_params import PRESETS
from protocol.errors import ConfigError, PolnetError
from protocol.market.params import MarketParams
from protocol.market.txs import SubmitTask
from protocol.pol.spec import (
    MAX_BATCH,
    MAX_STEPS,
    MAX_WIDTH,
    SPEC_V1,
    SPEC_VERSION,
    LossKind,
    OptimizerKind,
    OptimizerSpec,
    ReproProfile,
    TaskSpec,
    linear,
    relu,
    validate_spec,
)

MAX_SPEC_FILE = 64 * 1024
MAX_HIDDEN_LAYERS = 8
MAX_PRICE = 10**9
#: Largest share of the dataset a task may hold out for validation.
MAX_VAL_FRACTION = 0.5
BUILT_IN_DATASETS = ("digits", "digit-images", "synthetic", "corpus")
OPTIMIZERS = {"adam": OptimizerKind.ADAM, "adamw": OptimizerKind.ADAMW, "sgd": OptimizerKind.SGD}
DEFAULTS: dict[str, Any] = {
    "hidden": [32], "steps": 128, "checkpoint_interval": 2, "batch_size": 32, "optimizer": "adam",
    "lr": 0.01, "seed": 1, "max_price_per_gflop": 120,
}
SYNTHETIC_DEFAULTS = {"samples": 512, "features": 16, "classes": 4, "seed": 1}
_KEYS = {"dataset", "synthetic", "model", "base", "val_fraction", "private", *DEFAULTS}


@dataclass(frozen=True)
class BuiltTask:
    spec: TaskSpec
    dataset_blob: bytes
    submit: SubmitTask
    gflops: int
    #: a fine-tuning task's base weights (served like the dataset), else None
    base_blob: bytes | None = None
    #: a private task's content key (drawn here; its blobs are sealed under it), else None
    content_key: bytes | None = field(default=None, repr=False)


def read_spec_file(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()[: MAX_SPEC_FILE + 1]
    except FileNotFoundError:
        raise ConfigError(f"{path}: spec file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a spec file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_SPEC_FILE:
        raise ConfigError(f"{path}: larger than {MAX_SPEC_FILE} bytes; a spec is a page of settings")
    try:
        text = raw.decode("utf-8")
        doc = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise ConfigError(f"{path}: invalid {kind}: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the spec must be a table of settings")
    return doc


def _int(doc: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = doc[key]
    if type(v) is not int or not lo <= v <= hi:
        raise ConfigError(f"{key} must be an integer in {lo}..{hi}, got {v!r}")
    return v


def _dataset(doc: dict[str, Any], base: Path) -> Any:
    from node.compute import datasets

    name = doc.get("dataset")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"dataset is required: {', '.join(BUILT_IN_DATASETS)}, a .safetensors file "
                          "or a UTF-8 text file")
    if name == "digits":
        return datasets.digits()
    if name == "digit-images":
        return datasets.digit_images()
    if name == "corpus":
        return datasets.corpus()
    from node.compute.market_engine import MAX_DATASET_BLOB  # what a worker fetches, at most

    if name == "synthetic":
        syn = {**SYNTHETIC_DEFAULTS, **_table(doc.get("synthetic", {}), "synthetic", SYNTHETIC_DEFAULTS)}
        samples, features = _int(syn, "samples", 1, 1 << 20), _int(syn, "features", 1, MAX_WIDTH)
        size = samples * (features * 4 + 8)  # float32 x, int64 y
        # Rule: the dataset fits what workers fetch (checked before numpy allocates it).
        if size > MAX_DATASET_BLOB:
            raise ConfigError(
                f"[synthetic] samples = {samples} x features = {features} is a {size / 2**20:.0f} MiB "
                f"dataset; workers fetch at most {MAX_DATASET_BLOB // 2**20} MiB (lower samples or features)")
        classes, seed = _int(syn, "classes", 2, 1000), _int(syn, "seed", 0, 2**63)
        return datasets.synthetic(samples, (features,), classes, seed)
    path = (base / name) if not Path(name).is_absolute() else Path(name)
    if not path.is_file():
        raise ConfigError(f"dataset {name!r}: not a built-in name and no such file")
    from node.compute.tensors import blob_id

    if path.suffix != ".safetensors":  # any other file is text: byte tokens
        return datasets.text(_read_capped(path, datasets.MAX_TEXT_BYTES, "text dataset"))
    blob = _read_capped(path, MAX_DATASET_BLOB, "dataset")
    x_shape = _peek_shape(blob)
    return datasets.load(blob, blob_id(blob), x_shape)


def _read_capped(path: Path, cap: int, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            raw = f.read(cap + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if len(raw) > cap:
        raise ConfigError(f"{path}: a {what} is at most {cap} bytes")
    return raw


def _peek_shape(blob: bytes) -> tuple[int, ...]:
    from node.compute.tensors import decode_blob

    arrays = decode_blob(blob)
    if "tokens" in arrays:
        return (1,)  # a token blob: any context fits once the model says which
    if "x" not in arrays:
        raise ConfigError("dataset file must hold tensors 'x' and 'y', or 'tokens'")
    return tuple(arrays["x"].shape[1:])


def _table(value: Any, where: str, known: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"[{where}] must be a table")
    for key in value:
        if key not in known:
            raise ConfigError(f"unknown key {key!r} in [{where}]; known: {', '.join(sorted(known))}")
    return value


def _common(doc: dict[str, Any], market: MarketParams | None = None) -> dict[str, Any]:
    """The schedule, optimizer and price keys every task has, checked against the chain's
    market parameters (`market`; by default those of the `local` preset that `polnet
    init` and the swarm write into genesis)."""
    d = {**DEFAULTS, **doc}
    if d["optimizer"] not in OPTIMIZERS:
        raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {d['optimizer']!r}")
    lr = d["lr"]
    if type(lr) not in (int, float) or not 0 < lr <= 10:
        raise ConfigError(f"lr must be a number in (0, 10], got {lr!r}")
    steps = _int(d, "steps", 1, MAX_STEPS)
    interval = _int(d, "checkpoint_interval", 1, steps)
    if steps % interval:
        raise ConfigError(f"steps ({steps}) must be a multiple of checkpoint_interval ({interval})")
    need = (market or PRESETS["local"].market).min_segments
    if steps // interval < need:
        raise ConfigError(f"steps / checkpoint_interval must be at least {need} on this chain (so one "
                          f"verifier's check is a small share of the work), got {steps // interval}")
    val = d.get("val_fraction", 0.0)
    if type(val) not in (int, float) or not 0.0 <= val <= MAX_VAL_FRACTION:
        raise ConfigError(f"val_fraction must be a number in [0, {MAX_VAL_FRACTION}], got {val!r}")
    return {"lr": float(lr), "steps": steps, "interval": interval, "val": float(val),
            "batch": _int(d, "batch_size", 1, MAX_BATCH), "seed": _int(d, "seed", 0, 2**62),
            "price": _int(d, "max_price_per_gflop", 1, MAX_PRICE), "optimizer": OPTIMIZERS[d["optimizer"]],
            "hidden": d["hidden"]}


def _legacy_layers(hidden: Any, data: Any) -> tuple[tuple[int, ...], tuple[Any, ...], int]:
    """The version-1 task file: `hidden` widths of a ReLU MLP on flat samples."""
    if (not isinstance(hidden, list) or len(hidden) > MAX_HIDDEN_LAYERS
            or not all(type(w) is int and 1 <= w <= MAX_WIDTH for w in hidden)):
        raise ConfigError(f"hidden must be a list of at most {MAX_HIDDEN_LAYERS} widths in 1..{MAX_WIDTH}")
    if not hasattr(data, "x") or len(data.x.shape) != 2:
        raise ConfigError("dataset x must be 2-D [samples, features] for a stack of linear layers "
                          "(or describe the model in a [model] table)")
    d_in, classes = int(data.x.shape[1]), int(data.y.max()) + 1
    widths = [d_in, *hidden, classes]
    layers = []
    for i in range(len(widths) - 1):
        layers += [linear(widths[i], widths[i + 1])] + ([relu()] if i < len(widths) - 2 else [])
    return (d_in,), tuple(layers), classes


def build_spec(doc: dict[str, Any], base: Path,
               market: MarketParams | None = None) -> tuple[TaskSpec, Any, bytes | None]:
    """Validate a parsed spec file: (the TaskSpec, its dataset, the base weights blob).

    Without a [model] table the file means what it always did (a version-1 MLP task);
    with one, the task is version 2.
    """
    from cli.model_spec import base_model, model_layers
    from node.compute.datasets import TextDataset

    for key in doc:
        if key not in _KEYS:
            raise ConfigError(f"unknown key {key!r}; known: {', '.join(sorted(_KEYS))}")
    if "model" in doc and "hidden" in doc:
        raise ConfigError('hidden belongs in the [model] table (kind = "mlp") when there is one')
    if "model" not in doc and ("base" in doc or "val_fraction" in doc):
        raise ConfigError("[base] and val_fraction need a [model] table (a version-2 task)")
    c = _common(doc, market)
    data = _dataset(doc, base)
    text = isinstance(data, TextDataset)
    if "model" not in doc:
        shape, layers, classes = _legacy_layers(c["hidden"], data)
        version, loss, val = SPEC_V1, LossKind.CROSS_ENTROPY, 0
    else:
        x_shape = (1,) if text else tuple(int(n) for n in data.x.shape[1:])
        classes = 1 if text else int(data.y.max()) + 1
        shape, layers, loss, classes = model_layers(doc["model"], x_shape, classes, text)
        version = SPEC_VERSION
        n = len(data)
        val = round(n * c["val"])
        if text and c["val"] > 0:
            val = max(val, shape[0] + 1)  # at least one window to evaluate
    seed = c["seed"]
    spec = TaskSpec(version, shape, classes, layers, loss, OptimizerSpec(c["optimizer"], c["lr"]), c["batch"],
                    c["steps"], c["interval"], data.digest, len(data), seed, seed + 1, seed + 2,
                    ReproProfile(threads=1), val_size=val)
    base_blob = None
    try:
        validate_spec(spec)
        if "base" in doc:
            from node.compute.checkpoints import decode_weights, weights_hash

            bm, base_blob = base_model(doc["base"], base, lambda b: weights_hash(decode_weights(spec, b)))
            spec = replace(spec, base=bm)
            validate_spec(spec)
    except PolnetError as exc:
        raise ConfigError(f"the spec is not a valid task: {exc}") from None
    return spec, data, base_blob


def build_task(doc: dict[str, Any], base: Path, market: MarketParams | None = None) -> BuiltTask:
    """Validate a parsed spec file and build everything a submission needs (the
    SubmitTask from `protocol.market.assembly`, as every shell builds it)."""
    from protocol.market.assembly import submit_for
    from protocol.pol.memory import peak_memory_mb

    private = doc.get("private", False)
    if type(private) is not bool:
        raise ConfigError(f"private must be true or false, got {private!r}")
    spec, data, base_blob = build_spec({k: v for k, v in doc.items() if k != "private"}, base, market)
    salt = int.from_bytes(os.urandom(8), "big") >> 1  # the same spec twice is two tasks
    # Workers that advertise less memory than the task's peak are never elected.
    submit = submit_for(spec, max_price_per_gflop=_common(doc, market)["price"], salt=salt,
                        min_memory_mb=peak_memory_mb(spec))
    content_key = None
    if private:  # a fresh key per task: its blobs are sealed under it before they leave
        from protocol.market.keyring import key_commitment

        content_key = os.urandom(32)
        submit = replace(submit, key_commit=key_commitment(content_key))
    return BuiltTask(spec, data.blob, submit, submit.gflops, base_blob, content_key)
