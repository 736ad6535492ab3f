"""AQ-SGD: what crosses a pipeline boundary, compressed (Wang et al., arXiv 2206.01299).

Forward, a stage sends the next one its activations for a micro-batch. Quantizing them
directly to 2-4 bits biases every gradient downstream and training stalls; AQ-SGD instead
sends, for each training sample, the quantized *change* of its activation since the last
time that sample crossed the boundary. Both sides keep the same per-sample cache `m`:

    first pass of sample i:   send a_i in full (fp32);                m_i = a_i
    later passes:             q = Q(a_i - m_i) is sent;  m_i = m_i + deq(q) on both sides

and the receiver uses m_i (after the update) as the activation. As training converges the
activations of a sample change slowly, so the quantization error of the delta shrinks
with them, which is why 2 bits suffice where direct 2-bit quantization does not.
Backward, the gradient of the activation is quantized directly (8 bits by default): its
error is unbiased enough for SGD and it has no cache to lean on.

Quantizer Q (one for both directions): one max-abs scale s per token (over the last,
channel, dimension), then 2^b evenly spaced levels covering [-s, s] (b = 2: -s, -s/3, s/3,
s), round to nearest (torch.round: half to even). No randomness: a re-execution (a
verifier, a dispute) reproduces every sent tensor bit for bit, which the crew's proofs
hash. Chosen by measurement (bench/RESULTS.md, "crew"): on the bench's 6-epoch run the
2-bit AQ-SGD held-out loss was 1.982 with per-token scales and nearest rounding, 2.047
per channel, and 2.13 to 2.52 with stochastic rounding or a zero level (fp32 1.815).

Wire size of a quantized tensor: b bits per element (packed into bytes) plus one fp32
scale per channel; `wire_bytes` counts exactly what `encode` produces.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

#: Bits a boundary may use for activation deltas, and the default for gradients.
ACTIVATION_BITS = (2, 3, 4, 8)
GRAD_BITS = 8
#: A cache bigger than this many bytes lives in a file (torch.from_file), not in RAM.
MAX_RAM_CACHE_BYTES = 256 << 20
_HEAD = struct.Struct(">BBI")  # bits, ndim, n scales (tokens)


class CodecError(ValueError):
    """A boundary message that does not decode (wrong size, bits, shape): a peer fault."""


@dataclass(frozen=True)
class Quantized:
    """Q(x): uint8 level codes (one per element, unpacked), per-token scales, bits."""

    codes: torch.Tensor  # uint8, x's shape
    scale: torch.Tensor  # float32, x's shape less its last dimension (one per token)
    bits: int

    def dequantize(self) -> torch.Tensor:
        top = float((1 << self.bits) - 1)
        return self.scale.unsqueeze(-1) * (self.codes.to(torch.float32) * (2.0 / top) - 1.0)


def quantize(x: torch.Tensor, bits: int) -> Quantized:
    """One max-abs scale per token (the last dimension), 2^bits evenly spaced levels on
    [-s, s], round to nearest."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be 1..8, got {bits}")
    x = x.detach().to(torch.float32)
    scale = x.abs().amax(dim=-1)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale)).unsqueeze(-1)
    top = float((1 << bits) - 1)
    codes = torch.round((x / safe + 1.0) * (top / 2.0)).clamp_(0, top).to(torch.uint8)
    return Quantized(codes, scale, bits)


def _pack(codes: torch.Tensor, bits: int) -> bytes:
    """b-bit codes, little-endian within each byte, padded with zero bits to a byte."""
    flat = codes.reshape(-1).to(torch.int64)
    if bits == 8:
        return flat.to(torch.uint8).numpy().tobytes()
    per_byte = 8 // bits if 8 % bits == 0 else 0
    if per_byte:
        pad = (-flat.numel()) % per_byte
        flat = torch.cat([flat, flat.new_zeros(pad)]).reshape(-1, per_byte)
        shifts = torch.arange(per_byte, dtype=torch.int64) * bits
        return (flat << shifts).sum(dim=1).to(torch.uint8).numpy().tobytes()
    # 3 bits: spread over a bit stream
    bitpos = torch.arange(bits, dtype=torch.int64)
    stream = ((flat.unsqueeze(1) >> bitpos) & 1).reshape(-1)
    pad = (-stream.numel()) % 8
    stream = torch.cat([stream, stream.new_zeros(pad)]).reshape(-1, 8)
    return (stream << torch.arange(8, dtype=torch.int64)).sum(dim=1).to(torch.uint8).numpy().tobytes()


def _unpack(data: bytes, n: int, bits: int) -> torch.Tensor:
    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.int64)
    if bits == 8:
        return raw[:n].to(torch.uint8)
    per_byte = 8 // bits if 8 % bits == 0 else 0
    mask = (1 << bits) - 1
    if per_byte:
        shifts = torch.arange(per_byte, dtype=torch.int64) * bits
        return ((raw.unsqueeze(1) >> shifts) & mask).reshape(-1)[:n].to(torch.uint8)
    stream = ((raw.unsqueeze(1) >> torch.arange(8, dtype=torch.int64)) & 1).reshape(-1)[: n * bits]
    weights = torch.arange(bits, dtype=torch.int64)
    return (stream.reshape(n, bits) << weights).sum(dim=1).to(torch.uint8)


def packed_len(n: int, bits: int) -> int:
    return -(-n * bits // 8)


def encode(q: Quantized) -> bytes:
    """header | fp32 scales | packed codes. The shape travels with the schedule, not here."""
    scales = q.scale.numel()
    return (_HEAD.pack(q.bits, q.codes.dim(), scales) + q.scale.contiguous().numpy().astype("<f4").tobytes()
            + _pack(q.codes, q.bits))


def decode(data: bytes, shape: tuple[int, ...]) -> Quantized:
    """The inverse of `encode` for a tensor of `shape`; CodecError on anything else."""
    if len(data) < _HEAD.size:
        raise CodecError("boundary message shorter than its header")
    bits, ndim, scales = _HEAD.unpack_from(data)
    if not 1 <= bits <= 8 or ndim != len(shape) or not shape or scales != math.prod(shape[:-1]):
        raise CodecError(f"boundary header (bits {bits}, ndim {ndim}, scales {scales}) "
                         f"does not fit shape {shape}")
    n = math.prod(shape)
    want = _HEAD.size + 4 * scales + packed_len(n, bits)
    if len(data) != want:
        raise CodecError(f"boundary message is {len(data)} bytes, {want} expected")
    start = _HEAD.size
    raw = torch.frombuffer(bytearray(data[start : start + 4 * scales]), dtype=torch.float32)
    scale = raw.clone().reshape(shape[:-1])
    codes = _unpack(data[start + 4 * scales :], n, bits).reshape(shape)
    if not torch.isfinite(scale).all() or bool((scale < 0).any()):
        raise CodecError("boundary scales must be finite and non-negative")
    return Quantized(codes, scale, bits)


def wire_bytes(shape: tuple[int, ...], bits: int) -> int:
    return _HEAD.size + 4 * math.prod(shape[:-1]) + packed_len(math.prod(shape), bits)


class ActivationCache:
    """m: one activation per training sample, the same on both sides of a boundary.

    Fixed shape [n_samples, *sample_shape] fp32, allocated once: in RAM up to
    MAX_RAM_CACHE_BYTES, else in a file (`spill_dir`) mapped with torch.from_file, so a big
    dataset's cache costs disk, not memory. `seen[i]` says whether sample i has crossed yet
    (its first pass goes in full)."""

    def __init__(self, n_samples: int, sample_shape: tuple[int, ...], spill_dir: Path | None = None,
                 max_ram: int = MAX_RAM_CACHE_BYTES) -> None:
        numel = n_samples * math.prod(sample_shape)
        self.nbytes = numel * 4
        self.on_disk = self.nbytes > max_ram
        if self.on_disk:
            if spill_dir is None:
                raise ValueError(f"a {self.nbytes}-byte activation cache needs a spill directory")
            spill_dir.mkdir(parents=True, exist_ok=True)
            path = spill_dir / f"aqsgd-cache-{id(self):x}.f32"
            self.m = torch.from_file(str(path), shared=True, size=numel, dtype=torch.float32)
            self.m = self.m.view(n_samples, *sample_shape)
            self.path: Path | None = path
        else:
            self.m = torch.zeros(n_samples, *sample_shape, dtype=torch.float32)
            self.path = None
        self.seen = torch.zeros(n_samples, dtype=torch.bool)

    def close(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class BoundarySender:
    """The sending side of one forward boundary."""

    def __init__(self, cache: ActivationCache, bits: int | None, direct: bool = False) -> None:
        self.cache, self.bits, self.direct = cache, bits, direct

    def encode(self, sample_ids: torch.Tensor, act: torch.Tensor) -> bytes:
        """What goes on the wire for these samples' activations (`act` [batch, ...])."""
        cache = self.cache
        msg, m, seen = encode_rows(cache.m[sample_ids], cache.seen[sample_ids], act, self.bits, self.direct)
        cache.m[sample_ids], cache.seen[sample_ids] = m, seen
        return msg


def encode_rows(m: torch.Tensor, seen: torch.Tensor, act: torch.Tensor, bits: int | None,
                direct: bool) -> tuple[bytes, torch.Tensor, torch.Tensor]:
    """One micro-batch's message, and its samples' cache rows (m, seen) after it: the
    sender's rule as a pure function of the rows it reads, so the crew's op chain
    (node/compute/crew/optrace.py) and the sender run the same code."""
    act = act.detach().to(torch.float32)
    if bits is None:  # fp32 baseline
        return _fp32_message(act), m, seen
    if direct:
        return b"D" + encode(quantize(act, bits)), m, seen
    if not bool(seen.all()):
        if bool(seen.any()):
            raise ValueError("a micro-batch mixes first and later passes (batch by epoch)")
        return _fp32_message(act), act, torch.ones_like(seen)
    q = quantize(act - m, bits)
    return b"Q" + encode(q), m + q.dequantize(), seen


class BoundaryReceiver:
    """The receiving side: the same cache updates, so it holds the sender's m bit for bit."""

    def __init__(self, cache: ActivationCache) -> None:
        self.cache = cache

    def decode(self, sample_ids: torch.Tensor, data: bytes, shape: tuple[int, ...]) -> torch.Tensor:
        cache = self.cache
        act, m, seen = decode_rows(cache.m[sample_ids], cache.seen[sample_ids], data, shape)
        cache.m[sample_ids], cache.seen[sample_ids] = m, seen
        return act


def decode_rows(m: torch.Tensor, seen: torch.Tensor, data: bytes,
                shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The activation a message stands for, and its samples' cache rows after it (the
    receiver's rule as a pure function, like `encode_rows`); CodecError on a bad message."""
    if not data:
        raise CodecError("empty boundary message")
    kind, body = data[:1], data[1:]
    if kind == b"F":
        act = _fp32(body, shape)
        return act, act, torch.ones_like(seen)
    if kind == b"D":
        return decode(body, shape).dequantize(), m, seen
    if kind == b"Q":
        if not bool(seen.all()):
            raise CodecError("a delta for a sample whose first pass never arrived")
        after = m + decode(body, shape).dequantize()
        return after, after, seen
    raise CodecError(f"unknown boundary message kind {kind!r}")


def encode_grad(grad: torch.Tensor, bits: int | None = GRAD_BITS) -> bytes:
    """A boundary gradient (or an evaluation activation, with bits=None) on the wire."""
    if bits is None:
        return _fp32_message(grad)
    return b"D" + encode(quantize(grad, bits))


def decode_grad(data: bytes, shape: tuple[int, ...]) -> torch.Tensor:
    """The inverse of `encode_grad`; CodecError on anything else."""
    kind, body = data[:1], data[1:]
    if kind == b"D":
        return decode(body, shape).dequantize()
    if kind == b"F":
        return _fp32(body, shape)
    raise CodecError(f"unknown gradient message kind {kind!r}")


def _fp32_message(x: torch.Tensor) -> bytes:
    return b"F" + x.detach().to(torch.float32).contiguous().numpy().tobytes()


def _fp32(body: bytes, shape: tuple[int, ...]) -> torch.Tensor:
    n = math.prod(shape)
    if len(body) != 4 * n:
        raise CodecError(f"fp32 boundary message is {len(body)} bytes, {4 * n} expected")
    x = torch.frombuffer(bytearray(body), dtype=torch.float32).reshape(shape).clone()
    if not bool(torch.isfinite(x).all()):  # one NaN from a peer would poison every later step
        raise CodecError("fp32 boundary message holds a value that is not finite")
    return x
