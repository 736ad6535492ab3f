"""Content-addressed blob transfer over a libp2p stream protocol.

Datasets, checkpoints and operation inputs are far bigger than a gossip message, so
they move point to point, fetched by SHA-256 digest from any peer that has them.

Wire (protocol `/polnet/blobs/1`, one request per stream):

    client -> server   varint-prefixed canonical msgpack [digest: bin32, max_size: u64]
    server -> client   varint-prefixed canonical msgpack [status: u8, size: u64]
                       then, when status is OK, exactly `size` raw bytes, then EOF

The client refuses a header announcing more than it asked for before reading a byte
of the body, caps every read at what is still owed, hashes incrementally, and accepts
the blob only if the stream ends exactly at `size` bytes whose SHA-256 is the
digest. A blob is never trusted because of who sent it. Both sides bound concurrency
(a server answers BUSY past its limits; a client queues on a semaphore) and every
step has a deadline.

Sealed blobs (a private task's): the 32 bytes of a request may instead be a locator,
an HMAC of the plaintext's digest under the task key (protocol/sealing.py). The wire
does not change and does not say which it is: the daemon's provider (its blob
directory, node/daemon/blobdir.py) looks the 32 bytes up as a digest, then as a
locator alias, and serves a file that hashes to its own name either way, so a serving
node checks what it stores without reading it. The client cannot hash-check a body
against a locator, so the caller passes `check` (it opens the sealed blob with the
key): with a check, the body is accepted only if the stream ends exactly at `size`
bytes and `check(body)` is True (run in a worker thread: it decrypts), and its hash
need not be the requested id; a body the check refuses is a `BlobHashMismatch`,
scored like any wrong blob, and the caller's next peer is asked.

Memory: the server streams. A provider may hand back an open `BlobSource` (the daemon's
blob directory does: a file it reads one chunk at a time) instead of the whole blob, so
a serve holds at most one chunk (`chunk_bytes`), and the node at most
`max_concurrent_serves` chunks, however large the blob and however slowly the peer
reads (yamux's send window is the only other buffer, and a writer waits on it). Four
slow readers of a 32 MiB blob used to pin 4 x 32 MiB plus copies.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.io.exceptions import IncompleteReadError, MessageTooLarge
from libp2p.peer.id import ID
from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited

from node.transport.errors import (
    BlobBusy,
    BlobHashMismatch,
    BlobNotFound,
    BlobOversized,
    BlobProtocolError,
    BlobStreamFailed,
    BlobTimeout,
    BlobTooLarge,
    BlobTruncated,
)
from protocol.encoding import pack, sha256, unpack
from protocol.errors import BlobError, DecodeError, PolnetError
from protocol.limits import MiB

BLOB_PROTOCOL = TProtocol("/polnet/blobs/1")
DIGEST_LEN = 32
#: A request or a response header is a few dozen bytes; anything longer is hostile.
MAX_HEADER_BYTES = 128
#: The largest blob this node will ever serve or accept (a checkpoint or a dataset).
MAX_BLOB_BYTES = 1024 * MiB



class BlobSource(Protocol):
    """An open blob a server streams from: its size, then its bytes a chunk at a time."""

    @property
    def size(self) -> int: ...

    async def read_chunk(self, n: int) -> bytes:
        """Up to `n` further bytes (b"" at the end)."""

    async def aclose(self) -> None: ...


#: digest -> the blob (in memory, or an open source to stream from), or None if absent.
BlobProvider = Callable[[bytes], Awaitable["bytes | BlobSource | None"]]
#: A body fetched by locator -> whether it is the blob wanted (a PolnetError it raises,
#: such as a blob that does not open, counts as False).
BlobCheck = Callable[[bytes], bool]


class BytesSource:
    """A blob already in memory, served in chunks without copying it whole."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._pos = 0

    @property
    def size(self) -> int:
        return len(self._view)

    async def read_chunk(self, n: int) -> bytes:
        chunk = bytes(self._view[self._pos : self._pos + n])
        self._pos += len(chunk)
        return chunk

    async def aclose(self) -> None:
        self._view.release()


class Status(IntEnum):
    OK = 0
    NOT_FOUND = 1
    TOO_LARGE = 2
    BUSY = 3


@dataclass(frozen=True, slots=True)
class BlobConfig:
    chunk_bytes: int = 256 * 1024
    max_blob_bytes: int = MAX_BLOB_BYTES
    max_concurrent_serves: int = 16
    max_serves_per_peer: int = 4
    max_concurrent_fetches: int = 8
    request_timeout_s: float = 10.0
    #: Slowest accepted transfer rate; the body deadline is size / rate + timeout.
    min_rate_bytes_per_s: int = 1 * MiB


@dataclass(slots=True)
class BlobCounters:
    served: int = 0
    served_bytes: int = 0
    serve_timeouts: int = 0
    refused_busy: int = 0
    fetched: int = 0
    fetched_bytes: int = 0
    rejected: int = 0
    by_error: dict[str, int] = field(default_factory=dict)


class MemoryBlobStore:
    """A bounded in-memory blob provider (tests, the standalone peer, small swarms)."""

    def __init__(self, max_total_bytes: int = 256 * MiB) -> None:
        self._blobs: OrderedDict[bytes, bytes] = OrderedDict()
        self._total = 0
        self._max_total = max_total_bytes

    def put(self, data: bytes) -> bytes:
        """Store `data`, evicting the oldest blobs past the byte budget; returns its digest."""
        if len(data) > self._max_total:
            raise BlobTooLarge(f"{len(data)} bytes exceeds the store's {self._max_total}-byte budget")
        digest = sha256(data)
        if digest not in self._blobs:
            self._blobs[digest] = data
            self._total += len(data)
        while self._total > self._max_total:
            _, old = self._blobs.popitem(last=False)
            self._total -= len(old)
        return digest

    async def get(self, digest: bytes) -> bytes | None:
        return self._blobs.get(digest)

    def has(self, digest: bytes) -> bool:
        """Whether it holds `digest` (a provider query must not read the blob)."""
        return digest in self._blobs


def encode_request(digest: bytes, max_size: int) -> bytes:
    return encode_varint_prefixed(pack([digest, max_size]))


def decode_request(raw: bytes) -> tuple[bytes, int]:
    value = unpack(raw)
    if type(value) is not list or len(value) != 2:
        raise BlobProtocolError("request must be [digest, max_size]")
    digest, max_size = value
    if type(digest) is not bytes or len(digest) != DIGEST_LEN:
        raise BlobProtocolError("digest must be 32 bytes")
    if type(max_size) is not int or max_size < 0:
        raise BlobProtocolError("max_size must be a u64")
    return digest, max_size


def decode_header(raw: bytes) -> tuple[Status, int]:
    value = unpack(raw)
    if type(value) is not list or len(value) != 2:
        raise BlobProtocolError("header must be [status, size]")
    status, size = value
    if type(status) is not int or status not in Status._value2member_map_:
        raise BlobProtocolError(f"unknown status {status!r}")
    if type(size) is not int or size < 0:
        raise BlobProtocolError("size must be a u64")
    return Status(status), size


async def _read_frame(stream: INetStream) -> bytes:
    try:
        return await read_varint_prefixed_bytes_limited(stream, MAX_HEADER_BYTES)
    except MessageTooLarge as exc:
        raise BlobProtocolError(f"header longer than {MAX_HEADER_BYTES} bytes") from exc
    except IncompleteReadError as exc:
        raise BlobStreamFailed("stream ended inside a header") from exc


class BlobServer:
    """Serves blobs from a provider, with global and per-peer concurrency limits."""

    def __init__(self, provider: BlobProvider | None, cfg: BlobConfig, counters: BlobCounters) -> None:
        self._provider = provider
        self._cfg = cfg
        self._counters = counters
        self._active = 0
        self._per_peer: dict[ID, int] = {}

    async def handle(self, stream: INetStream) -> None:
        """Stream handler: one request, one answer; never raises into libp2p."""
        peer = stream.muxed_conn.peer_id
        if not self._admit(peer):
            self._counters.refused_busy += 1
            await _answer_and_close(stream, Status.BUSY, 0, None)
            return
        try:
            with trio.move_on_after(self._cfg.request_timeout_s) as scope:
                digest, max_size = decode_request(await _read_frame(stream))
            if scope.cancelled_caught:
                await _reset(stream)
                return
            await self._serve(stream, digest, max_size)
        except (BlobError, DecodeError, BaseLibp2pError, trio.BrokenResourceError):
            await _reset(stream)
        finally:
            self._release(peer)

    async def _serve(self, stream: INetStream, digest: bytes, max_size: int) -> None:
        found = await self._provider(digest) if self._provider is not None else None
        if found is None:
            await _answer_and_close(stream, Status.NOT_FOUND, 0, None)
            return
        source: BlobSource = BytesSource(found) if isinstance(found, bytes) else found
        try:
            size = source.size
            if size > min(max_size, self._cfg.max_blob_bytes):
                await _answer_and_close(stream, Status.TOO_LARGE, size, None)
                return
            deadline = self._cfg.request_timeout_s + size / self._cfg.min_rate_bytes_per_s
            with trio.move_on_after(deadline) as scope:
                await _answer_and_close(stream, Status.OK, size, source, self._cfg.chunk_bytes)
            if scope.cancelled_caught:
                self._counters.serve_timeouts += 1
                await _reset(stream)  # a reader this slow gets the stream cut, not our memory
                return
            self._counters.served += 1
            self._counters.served_bytes += size
        finally:
            await source.aclose()

    def _admit(self, peer: ID) -> bool:
        if self._active >= self._cfg.max_concurrent_serves:
            return False
        if self._per_peer.get(peer, 0) >= self._cfg.max_serves_per_peer:
            return False
        self._active += 1
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        return True

    def _release(self, peer: ID) -> None:
        self._active -= 1
        left = self._per_peer.get(peer, 1) - 1
        if left:
            self._per_peer[peer] = left
        else:
            self._per_peer.pop(peer, None)


async def _answer_and_close(
    stream: INetStream, status: Status, size: int, source: BlobSource | None, chunk: int = 256 * 1024
) -> None:
    """Header, then (for OK) exactly `size` bytes read from `source` one chunk at a time:
    at most one chunk of the blob is in memory for this stream."""
    await stream.write(encode_varint_prefixed(pack([int(status), size])))
    sent = 0
    while source is not None and sent < size:
        data = await source.read_chunk(min(chunk, size - sent))
        if not data:
            raise BlobTruncated(f"blob source ended after {sent} of {size} bytes")
        await stream.write(data)
        sent += len(data)
    await stream.close()


async def _reset(stream: INetStream) -> None:
    with contextlib.suppress(BaseLibp2pError, trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.reset()


class BlobClient:
    """Fetches one blob from one peer and verifies it; callers choose the peers."""

    def __init__(self, host: IHost, cfg: BlobConfig, counters: BlobCounters) -> None:
        self._host = host
        self._cfg = cfg
        self._counters = counters
        self._slots = trio.Semaphore(cfg.max_concurrent_fetches)

    async def fetch_from(
        self, peer: ID, digest: bytes, max_size: int, *, check: BlobCheck | None = None
    ) -> bytes:
        """The blob `digest` names from `peer`: bytes hashing to `digest`, or, with
        `check` (`digest` is then a sealed blob's locator), bytes `check` accepts."""
        if len(digest) != DIGEST_LEN:
            raise BlobProtocolError("digest must be 32 bytes")
        max_size = min(max_size, self._cfg.max_blob_bytes)
        async with self._slots:
            try:
                data = await self._fetch(peer, digest, max_size, check)
            except BlobError as exc:
                self._counters.rejected += 1
                name = type(exc).__name__
                self._counters.by_error[name] = self._counters.by_error.get(name, 0) + 1
                raise
        self._counters.fetched += 1
        self._counters.fetched_bytes += len(data)
        return data

    async def _fetch(self, peer: ID, digest: bytes, max_size: int, check: BlobCheck | None = None) -> bytes:
        timeout = self._cfg.request_timeout_s
        try:
            with trio.fail_after(timeout):
                stream = await self._host.new_stream(peer, [BLOB_PROTOCOL])
        except trio.TooSlowError as exc:
            raise BlobTimeout(f"no stream to {peer} within {timeout}s") from exc
        except Exception as exc:  # libp2p dial/negotiation failures have no common base
            # A peer that is down or restarting is unreachable, not lying: after a restart
            # every fetch to peers not yet reconnected failed here, was scored as a protocol
            # fault, and got honest solvers banned (restart-liveness finding).
            raise BlobStreamFailed(f"cannot open a blob stream to {peer}: {exc}") from exc
        try:
            with trio.fail_after(timeout):
                await stream.write(encode_request(digest, max_size))
                status, size = decode_header(await _read_frame(stream))
        except trio.TooSlowError as exc:
            raise BlobTimeout(f"no answer from {peer} within {timeout}s") from exc
        except DecodeError as exc:
            if isinstance(exc, BlobError):
                raise
            raise BlobProtocolError(f"bad answer from {peer}: {exc}") from exc
        except (BaseLibp2pError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            # Refused, reset or broken before any answer: the peer may be down, busy
            # banning us, or restarting; none of that proves a lie.
            raise BlobStreamFailed(f"no stream to {peer}: {type(exc).__name__}: {exc}") from exc
        try:
            return await self._body(stream, peer, digest, status, size, max_size, check)
        finally:
            await _reset(stream)

    async def _body(
        self, stream: INetStream, peer: ID, digest: bytes, status: Status, size: int, max_size: int,
        check: BlobCheck | None = None,
    ) -> bytes:
        if status is Status.NOT_FOUND:
            raise BlobNotFound(f"{peer} does not have {digest.hex()[:16]}")
        if status is Status.BUSY:
            raise BlobBusy(f"{peer} is busy")
        if status is Status.TOO_LARGE:
            raise BlobTooLarge(f"{peer} has {size} bytes, cap is {max_size}")
        if size > max_size:
            raise BlobOversized(f"{peer} announces {size} bytes, cap is {max_size}")
        deadline = self._cfg.request_timeout_s + size / self._cfg.min_rate_bytes_per_s
        try:
            with trio.fail_after(deadline):
                data = await _read_verified(stream, digest, size, check is None)
        except trio.TooSlowError as exc:
            raise BlobTimeout(f"{peer} did not deliver {size} bytes within {deadline:.1f}s") from exc
        if check is not None and not await trio.to_thread.run_sync(_passes, check, data):
            raise BlobHashMismatch(f"{peer}'s {size} bytes under locator {digest.hex()[:16]} fail the check")
        return data


def _passes(check: BlobCheck, data: bytes) -> bool:
    """`check(data)`, a project error it raises (a blob that does not open) counting as a
    refusal."""
    try:
        return check(data)
    except PolnetError:
        return False


async def _read_verified(stream: INetStream, digest: bytes, size: int, hashed: bool = True) -> bytes:
    """Exactly `size` bytes then end of stream; with `hashed`, bytes hashing to `digest`
    (without, the caller checks them: a locator names no hash)."""
    hasher = hashlib.sha256()
    buf = bytearray()
    while len(buf) < size:
        chunk = await _read_some(stream, size - len(buf))
        if not chunk:
            raise BlobTruncated(f"stream ended after {len(buf)} of {size} bytes")
        if hashed:
            hasher.update(chunk)
        buf.extend(chunk)
    if await _read_some(stream, 1):
        raise BlobOversized(f"peer sent more than the announced {size} bytes")
    if hashed and hasher.digest() != digest:
        raise BlobHashMismatch(f"received bytes hash to {hasher.hexdigest()[:16]}, not {digest.hex()[:16]}")
    return bytes(buf)


async def _read_some(stream: INetStream, n: int) -> bytes:
    """Up to n bytes; b"" at end of stream (py-libp2p signals EOF by raising)."""
    try:
        data: bytes = await stream.read(n)
    except EOFError:
        return b""  # a clean close: if it comes early, the peer chose to stop (BlobTruncated)
    except BaseLibp2pError as exc:
        raise BlobStreamFailed(f"stream failed mid-blob: {exc}") from exc
    if len(data) > n:
        raise BlobProtocolError("stream returned more bytes than requested")
    return data
