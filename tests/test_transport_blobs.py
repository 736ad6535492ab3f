"""Blob transfer between real hosts: verified by hash, capped, bounded, typed errors."""

from __future__ import annotations

import contextlib

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited

from node.transport import BlobConfig, MemoryBlobStore, Transport, TransportConfig
from node.transport.blobs import BLOB_PROTOCOL, decode_header, decode_request
from node.transport.errors import BlobUnavailable
from node.transport.localswarm import open_swarm, swarm_keys
from protocol.commands import Fetch
from protocol.encoding import pack, sha256
from protocol.errors import BlobError, DecodeError

CHAIN = "devnet-test"
CFG = TransportConfig(chain_id=CHAIN)
pytestmark = pytest.mark.timeout(60)
BLOB = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB, several chunks


def _evil_server(t: Transport, answer) -> None:
    """Replace t's blob handler with one that reads the request and runs `answer`."""

    async def handler(stream) -> None:
        raw = await read_varint_prefixed_bytes_limited(stream, 128)
        digest, max_size = decode_request(raw)
        await answer(stream, digest, max_size)
        await stream.close()

    t.host.set_stream_handler(BLOB_PROTOCOL, handler)


async def _header(stream, status: int, size: int) -> None:
    await stream.write(encode_varint_prefixed(pack([status, size])))


def test_blob_moves_between_peers_and_arrives_verified() -> None:
    async def main() -> None:
        store = MemoryBlobStore()
        digest = store.put(BLOB)
        async with open_swarm(swarm_keys(2, "blob"), CFG, [store.get, None]) as ts:
            with trio.fail_after(10):
                while not ts[1].peers():
                    await trio.sleep(0.05)
            assert await ts[1].fetch_blob(digest, len(BLOB)) == BLOB
            assert ts[1].metrics()["blob_bytes_in"] == len(BLOB)
            assert ts[0].metrics()["blobs_served"] == 1
            fetched = await ts[1].execute_fetch(Fetch(sha256(b"absent"), 100))
            assert fetched.data is None

    trio.run(main)


def test_honest_refusals_are_typed_and_not_penalised() -> None:
    async def main() -> None:
        store = MemoryBlobStore()
        digest = store.put(BLOB)
        async with open_swarm(swarm_keys(2, "refuse"), CFG, [store.get, None]) as ts:
            with trio.fail_after(10):
                while not ts[1].peers():
                    await trio.sleep(0.05)
            with pytest.raises(BlobUnavailable) as missing:
                await ts[1].fetch_blob(sha256(b"nobody has this"), 1000)
            assert list(missing.value.reasons.values()) == ["BlobNotFound"]
            with pytest.raises(BlobUnavailable) as too_big:
                await ts[1].fetch_blob(digest, len(BLOB) - 1)
            assert list(too_big.value.reasons.values()) == ["BlobTooLarge"]
            assert ts[1].police.app_score(ts[0].peer_id) == 0.0

    trio.run(main)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("wrong bytes", "BlobHashMismatch"),
        ("announces more than asked", "BlobOversized"),
        ("sends more than announced", "BlobOversized"),
        ("stops early", "BlobTruncated"),
        ("garbage header", "BlobProtocolError"),
    ],
)
def test_lying_server_is_rejected_and_penalised(name: str, reason: str) -> None:
    async def answer(stream, digest: bytes, max_size: int) -> None:
        if name == "wrong bytes":
            await _header(stream, 0, 5)
            await stream.write(b"wrong")
        elif name == "announces more than asked":
            await _header(stream, 0, max_size + 1)
            await stream.write(b"x" * 100)
        elif name == "sends more than announced":
            await _header(stream, 0, len(BLOB))
            await stream.write(BLOB + b"extra")
        elif name == "stops early":
            await _header(stream, 0, len(BLOB))
            await stream.write(BLOB[:1000])
        else:
            await stream.write(encode_varint_prefixed(b"\xc1not msgpack"))

    async def main() -> None:
        async with open_swarm(swarm_keys(2, "liar"), TransportConfig(chain_id=CHAIN)) as ts:
            _evil_server(ts[0], answer)
            with trio.fail_after(10):
                while not ts[1].peers():
                    await trio.sleep(0.05)
            with pytest.raises(BlobUnavailable) as err:
                await ts[1].fetch_blob(sha256(BLOB), len(BLOB))
            assert list(err.value.reasons.values()) == [reason]
            assert ts[1].police.app_score(ts[0].peer_id) < 0
            assert ts[1].metrics()["blobs_rejected"] == 1

    trio.run(main)


def test_server_past_its_concurrency_limit_answers_busy() -> None:
    release = trio.Event()
    store = MemoryBlobStore()
    digest = store.put(b"slow blob")

    async def slow_get(d: bytes) -> bytes | None:
        await release.wait()
        return await store.get(d)

    async def main() -> None:
        cfg = TransportConfig(chain_id=CHAIN, blobs=BlobConfig(max_concurrent_serves=1))
        async with open_swarm(swarm_keys(2, "busy"), cfg, [slow_get, None]) as ts:
            with trio.fail_after(10):
                while not ts[1].peers():
                    await trio.sleep(0.05)
            results: list[object] = []

            async def fetch() -> None:
                try:
                    results.append(await ts[1].fetch_blob(digest, 100))
                except BlobError as exc:
                    results.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch)
                await trio.sleep(0.3)
                nursery.start_soon(fetch)
                await trio.sleep(0.3)
                release.set()
            busy = [r for r in results if isinstance(r, BlobUnavailable)]
            assert b"slow blob" in results and len(busy) == 1
            assert list(busy[0].reasons.values()) == ["BlobBusy"]

    trio.run(main)


def test_memory_store_evicts_oldest_past_its_budget() -> None:
    store = MemoryBlobStore(max_total_bytes=10)
    a = store.put(b"aaaaaa")
    b = store.put(b"bbbbbb")

    async def check() -> None:
        assert await store.get(a) is None
        assert await store.get(b) == b"bbbbbb"

    trio.run(check)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_request_and_header_decoders_raise_only_typed_errors(raw: bytes) -> None:
    for decode in (decode_request, decode_header):
        with contextlib.suppress(BlobError, DecodeError):  # anything else fails the test
            decode(raw)
