"""Private tasks' blobs: stored and served sealed, found by locator, opened only by a key holder.

A sealed blob is kept under its own hash (sid) with an alias locator -> sid, served by
locator with no protocol change, checked by the fetcher by opening it, and no store
(the key holder's included) ever holds a byte sequence of the plaintext.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited

from netsim.scenarios.market.compute import SharedBlobs
from node.compute.sealedblobs import SealedBlobs
from node.daemon.blobdir import ALIAS_DIR, BlobDir
from node.daemon.compute import NetworkBlobs
from node.daemon.network import TransportNetwork
from node.transport import Transport, TransportConfig
from node.transport.blobs import BLOB_PROTOCOL, decode_request
from node.transport.errors import BlobUnavailable
from node.transport.localswarm import open_swarm, swarm_keys
from protocol.encoding import pack
from protocol.errors import BlobError, SealedBlobError
from protocol.errors import BlobUnavailable as ProtocolBlobUnavailable
from protocol.sealing import open_blob, seal_blob, sealed_locator, sealed_size

CHAIN = "devnet-test"
pytestmark = pytest.mark.timeout(90)
KEY = hashlib.sha256(b"the task's content key").digest()
OTHER_KEY = hashlib.sha256(b"another task's content key").digest()


def _dataset(n: int, label: bytes = b"dataset") -> bytes:
    """n pseudo-random bytes (so a 32-byte block of it turns up elsewhere only by copying)."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(label + i.to_bytes(8, "big")).digest()
        i += 1
    return bytes(out[:n])


PLAIN = _dataset(3 * (1 << 20) + 12345)  # several seal chunks and transport chunks
DIGEST = hashlib.sha256(PLAIN).digest()
LOCATOR = sealed_locator(KEY, DIGEST)
SEALED = seal_blob(KEY, PLAIN)
SID = hashlib.sha256(SEALED).digest()


def _leaks(plain: bytes, data: bytes) -> bool:
    """Whether `data` holds, at any offset, a 32-byte block of `plain` at an offset that is
    a multiple of 32: every 64-byte window of `plain` contains one, so False proves no
    64-byte window of it is in `data`."""
    blocks = {plain[k : k + 32] for k in range(0, len(plain) - 31, 32)}
    return any(data[i : i + 32] in blocks for i in range(len(data) - 31))


def _files(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if p.is_file()]


def _assert_no_plaintext(plain: bytes, *roots: Path) -> None:
    files = _files(*roots)
    assert files
    for path in files:
        assert not _leaks(plain, path.read_bytes()), f"{path} holds plaintext"


def _opens(key: bytes, digest: bytes, max_plain: int) -> Any:
    def check(sealed: bytes) -> bool:
        try:
            open_blob(key, digest, sealed, max_plain)
        except SealedBlobError:
            return False
        return True

    return check


# --- the blob directory's aliases -----------------------------------------------------------------


def test_blob_dir_keeps_a_sealed_blob_by_its_hash_and_finds_it_by_locator(tmp_path: Path) -> None:
    blobs = BlobDir(tmp_path)
    assert blobs.put_sealed(LOCATOR, SEALED) == SID
    assert blobs.path(SID).read_bytes() == SEALED
    assert (tmp_path / ALIAS_DIR / LOCATOR.hex()).read_bytes() == SID
    assert blobs.read_sealed(LOCATOR) == SEALED
    assert blobs.read(LOCATOR) == SEALED and blobs.read(SID) == SEALED
    assert blobs.has(LOCATOR) and blobs.has(SID)
    assert blobs.read(DIGEST) is None and not blobs.has(DIGEST)
    assert blobs.read_sealed(SID) is None  # a hash is not a locator
    plain_id = blobs.put(b"a public blob")  # public blobs beside the alias directory are unchanged
    assert blobs.read(plain_id) == b"a public blob" and blobs.read_sealed(plain_id) is None

    async def main() -> None:
        source = await blobs.open_source(LOCATOR)
        assert source is not None and source.size == len(SEALED)
        got = bytearray()
        while chunk := await source.read_chunk(1 << 16):
            got += chunk
        await source.aclose()
        assert bytes(got) == SEALED

    trio.run(main)
    with pytest.raises(BlobError):
        blobs.put_sealed(LOCATOR[:31], SEALED)


def test_a_sealed_blob_put_as_pieces_is_stored_as_if_put_whole(tmp_path: Path) -> None:
    whole, pieces = BlobDir(tmp_path / "whole"), BlobDir(tmp_path / "pieces")
    assert pieces.put_sealed_pieces(LOCATOR, iter([SEALED[:17], SEALED[17:100], SEALED[100:]])) == SID
    assert whole.put_sealed(LOCATOR, SEALED) == SID
    assert pieces.read_sealed(LOCATOR) == SEALED == whole.read_sealed(LOCATOR)
    assert sorted(p.name for p in (tmp_path / "pieces").iterdir()) == sorted(
        p.name for p in (tmp_path / "whole").iterdir())  # no staging file left behind


def test_a_sealed_blob_over_the_cap_put_as_pieces_stores_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from node.daemon import blobdir

    monkeypatch.setattr(blobdir, "MAX_SEALED_BLOB_BYTES", len(SEALED) - 1)
    blobs = BlobDir(tmp_path)
    with pytest.raises(BlobError, match="exceeds"):
        blobs.put_sealed_pieces(LOCATOR, iter([SEALED[:17], SEALED[17:]]))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    assert blobs.read_sealed(LOCATOR) is None


def test_a_tampered_sealed_file_is_not_served_by_locator(tmp_path: Path) -> None:
    blobs = BlobDir(tmp_path)
    blobs.put_sealed(LOCATOR, SEALED)
    blobs.path(SID).write_bytes(b"X" + SEALED[1:])
    assert blobs.read_sealed(LOCATOR) is None and blobs.read(LOCATOR) is None
    assert trio.run(blobs.open_source, LOCATOR) is None


@pytest.mark.parametrize("content", [SID[:31], SID + b"\x00", b"", b"\x00" * 32])
def test_a_bad_alias_file_is_ignored(tmp_path: Path, content: bytes) -> None:
    blobs = BlobDir(tmp_path)
    blobs.put(SEALED)
    (tmp_path / ALIAS_DIR).mkdir()
    (tmp_path / ALIAS_DIR / LOCATOR.hex()).write_bytes(content)  # short, long, empty, names nothing
    assert blobs.read_sealed(LOCATOR) is None and blobs.read(LOCATOR) is None
    assert not blobs.has(LOCATOR)
    assert trio.run(blobs.open_source, LOCATOR) is None


# --- SealedBlobs over the daemon's and netsim's stores ------------------------------------------


class _NoNetwork:
    async def fetch(self, digest: bytes, max_size: int, peers: Any = None, *, check: Any = None) -> bytes:
        raise AssertionError("asked the network for a blob we hold")


def test_sealed_blobs_round_trip_over_a_blob_dir(tmp_path: Path) -> None:
    store = NetworkBlobs(BlobDir(tmp_path), _NoNetwork().fetch, b"M" * 32, backoff_s=0.0)
    sealed = SealedBlobs(store, KEY)
    assert sealed.put(PLAIN) == DIGEST  # callers see plaintext ids
    assert sealed.get(DIGEST, len(PLAIN)) == PLAIN
    sealed.prefetch([(DIGEST, len(PLAIN))])  # held: nothing to fetch
    assert store.dir.read_sealed(LOCATOR) == SEALED
    _assert_no_plaintext(PLAIN, tmp_path)


def test_a_stored_sealed_blob_that_fails_its_check_is_fetched_again(tmp_path: Path) -> None:
    """Our own directory is checked too: a wrong blob under the locator is replaced by
    the one a peer serves that passes the check (and only a fetch with a check is sent)."""
    asked: list[Any] = []

    async def fetch(digest: bytes, max_size: int, peers: Any = None, *, check: Any = None) -> bytes:
        asked.append((digest, check is not None))
        assert check is not None and not check(b"junk") and check(SEALED)
        return SEALED

    store = NetworkBlobs(BlobDir(tmp_path), fetch, b"M" * 32, backoff_s=0.0)
    store.put_sealed(LOCATOR, seal_blob(KEY, b"something else"))
    sealed = SealedBlobs(store, KEY)
    assert trio.run(trio.to_thread.run_sync, sealed.get, DIGEST, len(PLAIN)) == PLAIN
    assert asked == [(LOCATOR, True)]
    assert store.dir.read_sealed(LOCATOR) == SEALED


def test_sealed_blobs_round_trip_over_netsims_store() -> None:
    shared = SharedBlobs()
    sealed = SealedBlobs(shared, KEY)
    assert sealed.put(PLAIN) == DIGEST
    assert sealed.get(DIGEST, len(PLAIN)) == PLAIN
    sealed.prefetch([(DIGEST, len(PLAIN))])
    assert shared.aliases == {LOCATOR: SID} and set(shared.blobs) == {SID}
    assert not any(_leaks(PLAIN, blob) for blob in shared.blobs.values())
    with pytest.raises(ProtocolBlobUnavailable):  # another task's key finds nothing
        SealedBlobs(shared, OTHER_KEY).get(DIGEST, len(PLAIN))
    with pytest.raises(BlobError):  # over the caller's cap
        sealed.get(DIGEST, len(PLAIN) - 1)


def test_a_blob_that_opens_to_another_digest_is_refused() -> None:
    shared = SharedBlobs()
    sealed = SealedBlobs(shared, KEY)
    other = sealed.put(b"another blob of the task")
    shared.aliases[LOCATOR] = shared.aliases[sealed.locator(other)]  # LOCATOR -> the wrong blob
    with pytest.raises(ProtocolBlobUnavailable, match="fails its check"):
        sealed.get(DIGEST, len(PLAIN))

    class Careless:
        """A store that returns what the locator names without running the check."""

        def get_sealed(self, locator: bytes, max_size: int, check: Any) -> bytes:
            return shared.blobs[shared.aliases[locator]]

        def put_sealed(self, locator: bytes, data: bytes) -> bytes:
            return shared.put_sealed(locator, data)

        def prefetch_sealed(self, wanted: Any) -> None:
            return None

    with pytest.raises(SealedBlobError):
        SealedBlobs(Careless(), KEY).get(DIGEST, len(PLAIN))


def test_the_check_opens_each_blob_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import node.compute.sealedblobs as mod

    shared = SharedBlobs()
    sealed = SealedBlobs(shared, KEY)
    sealed.put(PLAIN)
    opened: list[int] = []

    def counting(*a: Any) -> bytes:
        opened.append(1)
        return open_blob(*a)

    monkeypatch.setattr(mod, "open_blob", counting)
    assert sealed.get(DIGEST, len(PLAIN)) == PLAIN
    assert len(opened) == 1


# --- over real libp2p hosts -------------------------------------------------------------------------


async def _connected(ts: list[Transport], n: int) -> None:
    with trio.fail_after(15):
        while any(len(t.peers()) < n for t in ts):
            await trio.sleep(0.05)


def _holder(t: Transport, root: Path, me: bytes) -> tuple[SealedBlobs, NetworkBlobs]:
    blobs = BlobDir(root)
    store = NetworkBlobs(blobs, TransportNetwork(t, blobs).fetch_blob, me, backoff_s=0.0)
    return SealedBlobs(store, KEY), store


def test_a_key_holder_fetches_by_locator_from_a_node_that_stores_only_ciphertext(tmp_path: Path) -> None:
    storer = BlobDir(tmp_path / "storer")
    storer.put_sealed(LOCATOR, SEALED)  # it never had the key: it got S and its locator
    small = _dataset(1000, b"small")
    small_locator = sealed_locator(KEY, hashlib.sha256(small).digest())
    storer.put_sealed(small_locator, seal_blob(KEY, small))
    keys = swarm_keys(2, "sealed")

    async def main() -> None:
        async with open_swarm(keys, TransportConfig(chain_id=CHAIN), [storer.open_source, None]) as ts:
            await _connected(ts, 1)
            sealed, store = _holder(ts[1], tmp_path / "holder", keys[1].public)
            got = await trio.to_thread.run_sync(sealed.get, DIGEST, len(PLAIN))
            assert got == PLAIN
            assert store.dir.read_sealed(LOCATOR) == SEALED  # kept sealed, so it serves it too
            await trio.to_thread.run_sync(sealed.prefetch, [(hashlib.sha256(small).digest(), len(small))])
            assert store.dir.read_sealed(small_locator) is not None
            served = ts[0].metrics()["blobs_served"]
            assert await trio.to_thread.run_sync(sealed.get, DIGEST, len(PLAIN)) == PLAIN
            assert ts[0].metrics()["blobs_served"] == served  # the second read is local
            assert ts[1].blob_counters.rejected == 0

    trio.run(main)
    _assert_no_plaintext(PLAIN, tmp_path / "storer", tmp_path / "holder")
    _assert_no_plaintext(small, tmp_path / "storer", tmp_path / "holder")


def _junk_server(t: Transport, body: bytes) -> None:
    """t answers every blob request with `body`, announced as OK."""

    async def handler(stream: Any) -> None:
        decode_request(await read_varint_prefixed_bytes_limited(stream, 128))
        await stream.write(encode_varint_prefixed(pack([0, len(body)])))
        await stream.write(body)
        await stream.close()

    t.host.set_stream_handler(BLOB_PROTOCOL, handler)


@pytest.mark.parametrize("junk", ["another blob of the task", "tampered", "random bytes"])
def test_a_peer_serving_junk_under_the_locator_is_charged_and_the_next_peer_asked(
    tmp_path: Path, junk: str
) -> None:
    if junk == "another blob of the task":  # a storer of the task replaying one it holds
        body = seal_blob(KEY, _dataset(len(PLAIN), b"other"))
    elif junk == "tampered":
        body = SEALED[:-1] + bytes([SEALED[-1] ^ 1])
    else:
        body = _dataset(len(SEALED), b"junk")
    storer = BlobDir(tmp_path / "storer")
    storer.put_sealed(LOCATOR, SEALED)
    keys = swarm_keys(3, "junk")

    async def main() -> None:
        cfg = TransportConfig(chain_id=CHAIN, discover=False)
        async with open_swarm(keys, cfg, [None, storer.open_source, None]) as ts:
            _junk_server(ts[0], body)
            await _connected(ts, 2)
            sealed, store = _holder(ts[2], tmp_path / "holder", keys[2].public)
            store.prefer = (keys[0].public, keys[1].public)  # the liar is asked first
            assert await trio.to_thread.run_sync(sealed.get, DIGEST, len(PLAIN)) == PLAIN
            assert ts[2].blob_counters.by_error == {"BlobHashMismatch": 1}
            assert ts[2].police.app_score(ts[0].peer_id) < 0
            assert ts[2].police.app_score(ts[1].peer_id) == 0.0
            with pytest.raises(BlobUnavailable) as err:  # the liar alone: nothing passes the check
                await ts[2].fetch_blob(LOCATOR, sealed_size(len(PLAIN)), [keys[0].public],
                                       check=_opens(KEY, DIGEST, len(PLAIN)))
            assert list(err.value.reasons.values()) == ["BlobHashMismatch"]

    trio.run(main)


def test_without_the_key_a_stock_fetch_gets_nothing_or_only_ciphertext(tmp_path: Path) -> None:
    storer = BlobDir(tmp_path / "storer")
    storer.put_sealed(LOCATOR, SEALED)
    keys = swarm_keys(2, "nokey")

    async def main() -> None:
        cfg = TransportConfig(chain_id=CHAIN, discover=False)
        async with open_swarm(keys, cfg, [storer.open_source, None]) as ts:
            await _connected(ts, 1)
            with pytest.raises(BlobUnavailable) as err:  # by the plaintext's digest: nobody has it
                await ts[1].fetch_blob(DIGEST, 1 << 30, [keys[0].public])
            assert list(err.value.reasons.values()) == ["BlobNotFound"]
            got = await ts[1].fetch_blob(SID, 1 << 30, [keys[0].public])  # by its hash: ciphertext
            assert got == SEALED and not _leaks(PLAIN, got)
            with pytest.raises(BlobUnavailable):  # by locator, with another task's key's check
                await ts[1].fetch_blob(LOCATOR, 1 << 30, [keys[0].public],
                                       check=_opens(OTHER_KEY, DIGEST, len(PLAIN)))
            assert ts[0].metrics()["blobs_served"] == 2

    trio.run(main)
