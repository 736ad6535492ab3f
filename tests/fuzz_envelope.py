"""Structure-aware mutation fuzzer for `open_envelope`.

    python -m tests.fuzz_envelope --seconds 60 [--seed N] [--crashes DIR]

Seeds are valid sealed envelopes of every registered message type, with field values
drawn from the schema annotations. Each round mutates one seed at the byte level (bit
flips, hostile msgpack header bytes, inserts, deletes, splices, truncation) or at the
structure level: mutate the *body* and re-sign it with the sender's real key, so that
the input gets past the signature check and exercises schema decoding and the
canonical check fully, which byte noise alone almost never does.

Oracle: `open_envelope` either raises a DecodeError subclass, or returns an envelope
whose canonical re-encoding is exactly the input. Anything else (another exception, or
an accepted non-canonical input) is a finding. atheris is not used: a pure-Python
mutator needs no native build and runs in CI unchanged on any platform.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import random
import sys
import time
import traceback
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import msgpack

from protocol.encoding import sha256
from protocol.envelope import Envelope, open_envelope, seal, signing_root
from protocol.errors import DecodeError
from protocol.identity import Keypair
from protocol.limits import MAX_ARRAY_LEN, MAX_BIN_LEN, MAX_INT, MAX_STR_LEN, MIN_INT
from protocol.records import encode_record
from protocol.schema import IntRange, Len
from tests.wire_strategies import message_classes

CHAIN = "fuzznet"
KEYS = [Keypair.derive(f"fuzz-{i}") for i in range(3)]
KEY_BY_PUBLIC = {k.public: k for k in KEYS}
SEEDS_PER_TYPE = 3
MAX_INPUT = 4096
#: msgpack lead bytes that make decoders work hardest: wide headers, ext, reserved, floats.
HOSTILE_BYTES = bytes.fromhex(
    "007f808f909fa0bfc0c1c2c3c4c5c6c7"  # fix-ranges, nil, reserved, bools, bin, ext8
    "cacbcccdcecfd0d3d4d8d9dadbdcddde"  # floats, ints, fixext, str/array/map 8/16/32
    "dfe0ff"
)


# --- seeds: random valid values from the schema --------------------------------------------------


def random_value(tp: Any, rng: random.Random, bound: Any = None) -> Any:
    """A random valid value of schema type `tp` (a small mirror of schema._codec_for)."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *extras = get_args(tp)
        bounds = [e for e in extras if isinstance(e, (IntRange, Len))]
        return random_value(base, rng, bounds[0] if bounds else None)
    if origin in (Union, types.UnionType):
        (inner,) = [a for a in get_args(tp) if a is not type(None)]
        return None if rng.random() < 0.3 else random_value(inner, rng, bound)
    if origin is tuple:
        items = get_args(tp)
        if len(items) == 2 and items[1] is Ellipsis:
            ln = bound if isinstance(bound, Len) else Len(0, MAX_ARRAY_LEN)
            n = rng.randint(ln.lo, min(ln.hi, ln.lo + 3))
            return tuple(random_value(items[0], rng) for _ in range(n))
        return tuple(random_value(a, rng) for a in items)
    if tp is bool:
        return rng.random() < 0.5
    if isinstance(tp, type) and issubclass(tp, enum.IntEnum):
        return rng.choice(list(tp))
    if tp is int:
        rng_ = bound if isinstance(bound, IntRange) else IntRange(MIN_INT, MAX_INT)
        edge = [rng_.lo, rng_.hi, max(rng_.lo, min(rng_.hi, 0))]
        return rng.choice(edge) if rng.random() < 0.3 else rng.randint(rng_.lo, rng_.hi)
    if tp is bytes:
        ln = bound if isinstance(bound, Len) else Len(0, MAX_BIN_LEN)
        return rng.randbytes(rng.randint(ln.lo, min(ln.hi, ln.lo + 40)))
    if tp is str:
        ln = bound if isinstance(bound, Len) else Len(0, MAX_STR_LEN)
        n = rng.randint(ln.lo, min(ln.hi, ln.lo + 20))
        return "".join(rng.choice("abcxyz019-_") for _ in range(n))
    if tp is float:
        return rng.uniform(-1e6, 1e6) or 1.0
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return random_record(tp, rng)
    raise TypeError(f"no generator for schema type {tp!r}")


def random_record(cls: type[Any], rng: random.Random) -> Any:
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    for _ in range(50):  # __post_init__ may reject some draws
        try:
            return cls(*[random_value(hints[f.name], rng) for f in fields])
        except Exception:
            continue
    raise RuntimeError(f"could not build a valid {cls.__name__} in 50 tries")


def make_seeds(rng: random.Random) -> list[bytes]:
    seeds = []
    for cls in message_classes():
        for i in range(SEEDS_PER_TYPE):
            try:
                msg = random_record(cls, rng)
            except RuntimeError:
                continue
            seeds.append(seal(msg, KEYS[i % len(KEYS)], CHAIN))
    return seeds


# --- mutations ----------------------------------------------------------------------------------------


def _flip(data: bytearray, rng: random.Random) -> None:
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(data) * 8)
        data[i // 8] ^= 1 << (i % 8)


def _hostile_byte(data: bytearray, rng: random.Random) -> None:
    data[rng.randrange(len(data))] = rng.choice(HOSTILE_BYTES)


def _insert(data: bytearray, rng: random.Random) -> None:
    at = rng.randrange(len(data) + 1)
    chunk = bytes([rng.choice(HOSTILE_BYTES)]) + rng.randbytes(rng.randint(0, 8))
    data[at:at] = chunk


def _delete(data: bytearray, rng: random.Random) -> None:
    at = rng.randrange(len(data))
    del data[at : at + rng.randint(1, 8)]


def _truncate(data: bytearray, rng: random.Random) -> None:
    del data[rng.randrange(len(data)) :]


def _duplicate(data: bytearray, rng: random.Random) -> None:
    at = rng.randrange(len(data))
    piece = data[at : at + rng.randint(1, 16)]
    to = rng.randrange(len(data) + 1)
    data[to:to] = piece


BYTE_MUTATORS: list[Callable[[bytearray, random.Random], None]] = [
    _flip,
    _hostile_byte,
    _insert,
    _delete,
    _truncate,
    _duplicate,
]


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        if not out:
            out.append(rng.choice(HOSTILE_BYTES))
        rng.choice(BYTE_MUTATORS)(out, rng)
    return bytes(out[:MAX_INPUT])


def resign_mutated_body(seed: bytes, rng: random.Random) -> bytes:
    """Mutate the body (or the type tag) and produce a *valid* signature over the result,
    so the mutation reaches the schema decoder and the canonical check."""
    version, chain, tag, sender, body, _ = msgpack.unpackb(seed)
    if rng.random() < 0.2:
        tag = rng.choice(message_classes()).TYPE_TAG  # a body decoded under another schema
    else:
        body = mutate_bytes(body, rng)
    sig = KEY_BY_PUBLIC[sender].sign(signing_root(chain, tag, sender, body))
    return bytes(msgpack.packb([version, chain, tag, sender, body, sig], use_bin_type=True))


def splice(a: bytes, b: bytes, rng: random.Random) -> bytes:
    return a[: rng.randrange(len(a) + 1)] + b[rng.randrange(len(b) + 1) :]


# --- the loop --------------------------------------------------------------------------------------------


@dataclass
class Report:
    execs: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    findings: list[tuple[bytes, str]] = field(default_factory=list)


def canonical_bytes(env: Envelope) -> bytes:
    tag = type(env.body).TYPE_TAG
    fields = [env.version, env.chain_id, tag, env.sender, encode_record(env.body), env.signature]
    return bytes(msgpack.packb(fields, use_bin_type=True))


def check_one(data: bytes, report: Report, target: Callable[[bytes, str], Envelope]) -> None:
    report.execs += 1
    try:
        env = target(data, CHAIN)
    except DecodeError as exc:
        name = type(exc).__name__
        report.rejected[name] = report.rejected.get(name, 0) + 1
        return
    except Exception:
        report.findings.append((data, traceback.format_exc()))
        return
    report.accepted += 1
    if canonical_bytes(env) != data:
        report.findings.append((data, "accepted an input that is not its own canonical encoding"))


def next_input(seeds: list[bytes], rng: random.Random) -> bytes:
    seed = rng.choice(seeds)
    roll = rng.random()
    if roll < 0.35:
        return resign_mutated_body(seed, rng)
    if roll < 0.45:
        return splice(seed, rng.choice(seeds), rng)
    if roll < 0.5:
        return rng.randbytes(rng.randint(0, 64))
    return mutate_bytes(seed, rng)


def run(
    seconds: float,
    seed: int = 0,
    target: Callable[[bytes, str], Envelope] = open_envelope,
    max_findings: int = 20,
) -> Report:
    """Fuzz for `seconds` of wall time from a fixed `seed`; stops early on many findings."""
    rng = random.Random(seed)
    seeds = make_seeds(rng)
    report = Report()
    for s in seeds:  # the seeds themselves must be accepted
        check_one(s, report, target)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(report.findings) < max_findings:
        for _ in range(64):
            check_one(next_input(seeds, rng), report, target)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--crashes", type=Path, default=None, help="write findings here")
    args = parser.parse_args(argv)
    report = run(args.seconds, args.seed)
    print(f"seed={args.seed} execs={report.execs} accepted={report.accepted} rejected={report.rejected}")
    for data, why in report.findings:
        print(f"FINDING {data.hex()}\n{why}")
        if args.crashes is not None:
            args.crashes.mkdir(parents=True, exist_ok=True)
            (args.crashes / f"crash-{sha256(data).hex()[:16]}").write_bytes(data)
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
