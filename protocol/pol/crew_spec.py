"""A crew task file: one model trained by `stages x data_parallel` member processes.

    stages = 4            # pipeline stages (1..16)
    data_parallel = 2     # replicas of each stage (1..8); stages x data_parallel <= 16
    epochs = 4
    n_train = 256         # training windows of the built-in corpus; a multiple of the batch
    n_val = 64
    micro_batch = 4
    micro_batches = 4     # per replica and step (GPipe)
    bits = 3              # AQ-SGD activation bits (2, 3, 4, 8) or "fp32"
    grad_bits = 8         # backward gradient bits (1..8) or "fp32"
    segment_steps = 4     # steps between two committed checkpoints
    lr = 0.003
    seed = 1

    [model]               # the byte-level transformer
    blocks = 4            # at least `stages`
    width = 64
    heads = 4
    context = 64

    [links]               # optional: every pair of members over an emulated link
    delay_ms = 50
    mbit = 100

    [market]              # optional: what `polnet task submit` offers for it
    max_price_per_gflop = 120

Every key is optional but known (a typo is an error, not a silent default); every value
is bounded, so a file cannot ask a box for more processes or memory than a crew on one
machine can have. Parsing is pure (no torch, no I/O): `parse_crew_spec` takes the file's
bytes, whether `polnet crew run` read them from disk or a market shell fetched them by a
task's spec hash, and `crew_settings` returns plain values that
node/compute/crew/config.py turns into a `CrewConfig`. One parser for both, so the
command and the market read a task file alike.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from typing import Any, TypedDict

from protocol.errors import ConfigError

MAX_CREW_FILE = 16 * 1024
#: The byte-level model's vocabulary (node/compute/crew/model.py).
BYTE_VOCAB = 256
#: Highest price a file may offer per GFLOP (the ledger's u64 escrow arithmetic is far above).
MAX_PRICE = 10**12
MAX_MEMBERS = 16
ACTIVATION_BITS = (2, 3, 4, 8)
_BOUNDS: dict[str, tuple[int, int]] = {
    "stages": (1, 16), "data_parallel": (1, 8), "epochs": (1, 1000), "n_train": (1, 1 << 20),
    "n_val": (1, 1 << 16), "micro_batch": (1, 1024), "micro_batches": (1, 256), "segment_steps": (1, 1 << 20),
    "seed": (0, 2**31 - 1),
}
_MODEL_BOUNDS: dict[str, tuple[int, int]] = {
    "blocks": (1, 64), "width": (8, 1024), "heads": (1, 64), "context": (2, 1024),
}
DEFAULTS: dict[str, Any] = {
    "stages": 4, "data_parallel": 1, "epochs": 2, "n_train": 64, "n_val": 16, "micro_batch": 4,
    "micro_batches": 2, "bits": 3, "grad_bits": 8, "segment_steps": 4, "lr": 3e-3, "seed": 1,
}
MODEL_DEFAULTS = {"blocks": 4, "width": 32, "heads": 2, "context": 32}


@dataclass(frozen=True)
class CrewSettings:
    """A checked crew task file."""

    crew: dict[str, Any]  # CrewConfig's fields but `shape`
    model: dict[str, int]  # ModelShape's fields
    delay_ms: float | None
    mbit: float | None
    #: `[market] max_price_per_gflop`: what a submitter offers (`polnet task submit`); the
    #: members' training ignores it. 0: not given.
    price: int = 0


def _int(doc: dict[str, Any], key: str, bounds: tuple[int, int], where: str) -> int:
    value = doc[key]
    lo, hi = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{where}{key} must be an integer in {lo}..{hi}, got {value!r}")
    return value


def _bits(value: Any, key: str, allowed: tuple[int, ...]) -> int | None:
    if value == "fp32":
        return None
    if isinstance(value, bool) or value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(map(str, allowed))} or \"fp32\", got {value!r}")
    return int(value)


def _number(doc: dict[str, Any], key: str, lo: float, hi: float) -> float:
    value = doc[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ConfigError(f"{key} must be a number in {lo}..{hi}, got {value!r}")
    return float(value)


def _known(doc: dict[str, Any], keys: set[str], where: str) -> None:
    unknown = sorted(set(doc) - keys)
    if unknown:
        raise ConfigError(f"unknown {where}key(s): {', '.join(unknown)}; known: {', '.join(sorted(keys))}")


def crew_gflops(settings: CrewSettings) -> int:
    """The work a crew task declares: the usual transformer estimate, 6 FLOPs per parameter
    per token trained (forward and backward), over the blocks (12 width^2 each) and the
    byte embedding and head (2 x 256 x width), rounded up to GFLOPs and to a multiple of
    the members (each member's share is its pay)."""
    c, m = settings.crew, settings.model
    params = m["blocks"] * 12 * m["width"] ** 2 + 2 * BYTE_VOCAB * m["width"]
    tokens = crew_steps(settings) * c["micro_batch"] * c["micro_batches"] * c["data_parallel"] * m["context"]
    members = int(c["stages"] * c["data_parallel"])
    gflops = max(1, -(-6 * params * tokens // 10**9))
    return int(-(-gflops // members) * members)


class CrewModelFields(TypedDict):
    """SubmitTask's model fields, by name."""

    model_blocks: int
    model_width: int
    model_context: int
    micro_batch: int
    micro_batches: int


def crew_model_fields(settings: CrewSettings) -> CrewModelFields:
    """The model a crew task's SubmitTask declares (its `model_*` and micro-batch fields),
    which the ledger's placement prices links with (protocol/market/crews.workload_of)."""
    c, m = settings.crew, settings.model
    return CrewModelFields(model_blocks=m["blocks"], model_width=m["width"], model_context=m["context"],
                           micro_batch=c["micro_batch"], micro_batches=c["micro_batches"])


def crew_steps(settings: CrewSettings) -> int:
    """The run's optimizer steps (CrewConfig.total_steps, without torch): what a crew
    task's `steps` must declare, and its `checkpoint_interval` is `segment_steps`."""
    c = settings.crew
    return int(c["epochs"] * (c["n_train"] // (c["micro_batch"] * c["micro_batches"] * c["data_parallel"])))


def crew_settings(doc: dict[str, Any]) -> CrewSettings:
    """Check a parsed crew task file (ConfigError names the first bad key)."""
    _known(doc, set(DEFAULTS) | {"model", "links", "market"}, "")
    merged = {**DEFAULTS, **{k: v for k, v in doc.items() if k in DEFAULTS}}
    crew: dict[str, Any] = {k: _int(merged, k, b, "") for k, b in _BOUNDS.items()}
    crew["bits"] = _bits(merged["bits"], "bits", ACTIVATION_BITS)
    crew["grad_bits"] = _bits(merged["grad_bits"], "grad_bits", tuple(range(1, 9)))
    crew["lr"] = _number(merged, "lr", 1e-6, 1.0)
    if crew["stages"] * crew["data_parallel"] > MAX_MEMBERS:
        raise ConfigError(f"stages x data_parallel is {crew['stages'] * crew['data_parallel']}; a crew on "
                          f"one machine has at most {MAX_MEMBERS} members")
    model_doc = doc.get("model", {})
    if not isinstance(model_doc, dict):
        raise ConfigError("[model] must be a table")
    _known(model_doc, set(MODEL_DEFAULTS), "model ")
    model_merged = {**MODEL_DEFAULTS, **model_doc}
    model = {k: _int(model_merged, k, b, "model.") for k, b in _MODEL_BOUNDS.items()}
    if model["width"] % model["heads"]:
        raise ConfigError(f"model.width {model['width']} must be a multiple of model.heads {model['heads']}")
    if model["blocks"] < crew["stages"]:
        raise ConfigError(f"model.blocks {model['blocks']} cannot be cut into {crew['stages']} stages")
    batch = crew["micro_batch"] * crew["micro_batches"] * crew["data_parallel"]
    if crew["n_train"] % batch:
        raise ConfigError(f"n_train {crew['n_train']} must be a multiple of the batch {batch} "
                          "(micro_batch x micro_batches x data_parallel)")
    delay = mbit = None
    if "links" in doc:
        links = doc["links"]
        if not isinstance(links, dict):
            raise ConfigError("[links] must be a table")
        _known(links, {"delay_ms", "mbit"}, "links ")
        delay = _number({**{"delay_ms": 0}, **links}, "delay_ms", 0.0, 10_000.0)
        mbit = _number({**{"mbit": 1000}, **links}, "mbit", 0.01, 100_000.0)
    price = 0
    if "market" in doc:
        market = doc["market"]
        if not isinstance(market, dict):
            raise ConfigError("[market] must be a table")
        _known(market, {"max_price_per_gflop"}, "market ")
        price = _int(market, "max_price_per_gflop", (1, MAX_PRICE), "market.")
    return CrewSettings(crew, model, delay, mbit, price)


def parse_crew_spec(blob: bytes, name: str = "crew task") -> CrewSettings:
    """Check a crew task file from its bytes (at most MAX_CREW_FILE, UTF-8 TOML). Every
    fault is a ConfigError prefixed with `name` (a path, or the spec hash a shell fetched),
    so the command and the market report the same fault in the same words."""
    if len(blob) > MAX_CREW_FILE:
        raise ConfigError(f"{name}: larger than {MAX_CREW_FILE} bytes; a crew task is a page of settings")
    try:
        doc = tomllib.loads(blob.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: not TOML: {exc}") from None
    try:
        return crew_settings(doc)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None
