"""How crew members pass boundary tensors: torch.distributed point-to-point, optionally
through an emulated slow link.

`GlooChannel` sends one message as two gloo sends (an int64 length, then the bytes as a
uint8 tensor) to a neighbour rank; gloo keeps the order of messages between a pair, which
the pipeline schedule relies on (it sends and receives in one fixed order). A message over
MAX_MESSAGE bytes is refused on both sides (a peer announcing more is a fault, not an
allocation).

`EmulatedLinks` wraps a channel with a per-pair link model (one-way delay and bandwidth,
as the scheduler's scenarios give them): each message is handed to the inner channel, by
a per-destination thread, at the time it would arrive over that link (after the link has
finished carrying the previous messages and then this one's bytes, plus the delay), so a
crew on one box runs as if spread over continents without any kernel set-up. (A first
version stamped messages and let the receiver sleep; gloo's blocking sends then waited
on that sleep, serialising every delay: bench/RESULTS.md, "crew".) Link emulation is only for
benchmarks and tests; a real crew has real links.

`SignedChannel` signs every message with the sender's ed25519 key, over the crew, both
ranks, the message's index on that pair and its hash, and checks the signature on
arrival. The receiver keeps the signatures: when two members' records of one message
disagree (crosscheck.py), the receiver's signed record settles which of them lied.
"""

from __future__ import annotations

import hashlib
import queue
import struct
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.distributed as dist

from protocol.identity import SIGNATURE_LEN, Keypair, verify

#: The largest boundary message a member accepts (a micro-batch's activations in fp32).
MAX_MESSAGE = 256 << 20
#: Bytes one emulated link holds queued before a send to it blocks (its "send buffer").
MAX_QUEUED_BYTES = 64 << 20


class ChannelError(RuntimeError):
    """A neighbour sent something the channel refuses (too big, malformed)."""


class Channel(Protocol):
    def send(self, dst: int, data: bytes) -> None: ...

    def recv(self, src: int) -> bytes: ...


class GlooChannel:
    """Point-to-point over an initialised gloo process group."""

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self.max_message = max_message

    def send(self, dst: int, data: bytes) -> None:
        if len(data) > self.max_message:
            raise ChannelError(f"message of {len(data)} bytes over the limit {self.max_message}")
        dist.send(torch.tensor([len(data)], dtype=torch.int64), dst)
        if data:
            dist.send(torch.frombuffer(bytearray(data), dtype=torch.uint8), dst)

    def recv(self, src: int) -> bytes:
        n = torch.zeros(1, dtype=torch.int64)
        dist.recv(n, src)
        size = int(n.item())
        if not 0 <= size <= self.max_message:
            raise ChannelError(f"neighbour {src} announced {size} bytes (limit {self.max_message})")
        if size == 0:
            return b""
        buf = torch.empty(size, dtype=torch.uint8)
        dist.recv(buf, src)
        return buf.numpy().tobytes()


@dataclass(frozen=True)
class Link:
    delay_s: float  # one way
    bits_per_s: float

    def __post_init__(self) -> None:
        if self.delay_s < 0 or self.bits_per_s <= 0:
            raise ValueError(f"a link needs delay >= 0 and bandwidth > 0, got {self}")


class EmulatedLinks:
    """A channel whose messages arrive as if over `links[(src, dst)]`.

    A send returns at once, as into a NIC's buffer: the message goes to the destination's
    sender thread, which hands it to the inner channel at the moment it would arrive (after
    the link has carried the messages before it and then this one's bytes, plus the delay).
    So delay overlaps with the next sends, as on a real link, and a receiver never holds up
    a sender. Like a socket's send buffer, what waits for one link is bounded
    (`max_queued` bytes): past it a send blocks until the link has drained, so a member
    producing faster than its link carries holds a bounded backlog, not an unbounded one.
    `close()` waits until every message has been handed over."""

    def __init__(self, inner: Channel, rank: int, links: dict[tuple[int, int], Link],
                 max_queued: int = MAX_QUEUED_BYTES) -> None:
        self.inner, self.rank, self.links, self.max_queued = inner, rank, links, max_queued
        self._free_at: dict[int, float] = {}  # per destination: link busy until
        self._queues: dict[int, queue.Queue[tuple[float, bytes] | None]] = {}
        self._queued: dict[int, int] = {}  # per destination: bytes not yet handed over
        self._drained = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._error: BaseException | None = None

    def _sender(self, dst: int, q: queue.Queue[tuple[float, bytes] | None]) -> None:
        while (item := q.get()) is not None:
            arrive, data = item
            wait = arrive - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                self.inner.send(dst, data)
            except BaseException as exc:  # surfaced on the next send or at close
                self._error = exc
                with self._drained:
                    self._drained.notify_all()
                return
            with self._drained:
                self._queued[dst] -= len(data)
                self._drained.notify_all()

    def _wait_for_room(self, dst: int, size: int) -> None:
        """Block while this link's backlog is full (one message alone always fits)."""
        with self._drained:
            while (self._queued.get(dst, 0) and self._queued[dst] + size > self.max_queued
                   and self._error is None):
                self._drained.wait()
            self._queued[dst] = self._queued.get(dst, 0) + size

    def send(self, dst: int, data: bytes) -> None:
        if self._error is not None:
            raise ChannelError(f"an earlier send to a neighbour failed: {self._error}")
        link = self.links[(self.rank, dst)]
        self._wait_for_room(dst, len(data))
        start = max(time.monotonic(), self._free_at.get(dst, 0.0))
        done = start + 8 * len(data) / link.bits_per_s
        self._free_at[dst] = done
        if dst not in self._queues:
            self._queues[dst] = queue.Queue()
            thread = threading.Thread(target=self._sender, args=(dst, self._queues[dst]), daemon=True)
            thread.start()
            self._threads.append(thread)
        self._queues[dst].put((done + link.delay_s, data))

    def recv(self, src: int) -> bytes:
        return self.inner.recv(src)

    def close(self) -> None:
        for q in self._queues.values():
            q.put(None)
        for thread in self._threads:
            thread.join()
        if self._error is not None:
            raise ChannelError(f"a send to a neighbour failed: {self._error}")


class LyingChannel:
    """A boundary liar, for tests and benchmarks: the `index`-th message this member sends
    to `dst` goes out with one byte flipped, while the member's transcript (written before
    the channel sees the message) keeps the hash of the honest bytes."""

    def __init__(self, inner: Channel, dst: int, index: int) -> None:
        self.inner, self.dst, self.index = inner, dst, index
        self._sent = 0

    def send(self, dst: int, data: bytes) -> None:
        if dst == self.dst:
            if self._sent == self.index and data:
                data = data[:-1] + bytes([data[-1] ^ 0x01])
            self._sent += 1
        self.inner.send(dst, data)

    def recv(self, src: int) -> bytes:
        return self.inner.recv(src)


SIG_DOMAIN = b"polnet/crew/boundary/v1\x00"


def boundary_statement(crew: bytes, src: int, dst: int, index: int, digest: bytes) -> bytes:
    """What the sender of the `index`-th message from `src` to `dst` signs."""
    return SIG_DOMAIN + crew + struct.pack(">IIQ", src, dst, index) + digest


class SignedChannel:
    """Every message signed by its sender and checked by its receiver; a message without a
    valid signature from the member it claims to come from is refused (ChannelError)."""

    def __init__(self, inner: Channel, rank: int, key_seed: bytes, publics: list[bytes], crew: bytes) -> None:
        self.inner, self.rank, self.publics, self.crew = inner, rank, publics, crew
        self.key = Keypair.from_seed(key_seed)
        self._sent: dict[int, int] = {}
        self.received_sigs: dict[int, list[bytes]] = {}

    def send(self, dst: int, data: bytes) -> None:
        index = self._sent.get(dst, 0)
        self._sent[dst] = index + 1
        statement = boundary_statement(self.crew, self.rank, dst, index, hashlib.sha256(data).digest())
        self.inner.send(dst, self.key.sign(statement) + data)

    def recv(self, src: int) -> bytes:
        raw = self.inner.recv(src)
        sigs = self.received_sigs.setdefault(src, [])
        sig, data = raw[:SIGNATURE_LEN], raw[SIGNATURE_LEN:]
        statement = boundary_statement(self.crew, src, self.rank, len(sigs), hashlib.sha256(data).digest())
        if len(raw) < SIGNATURE_LEN or not verify(self.publics[src], sig, statement):
            raise ChannelError(f"message {len(sigs)} from member {src} does not carry its signature")
        sigs.append(sig)
        return data
