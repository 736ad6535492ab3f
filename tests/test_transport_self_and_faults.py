"""A node never penalises or bans itself, never fetches from itself over the network,
and only charges a blob server for what proves a lie (not for a reset or a refusal)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import trio

from node.daemon.blobdir import BlobDir
from node.daemon.network import TransportNetwork
from node.transport import MemoryBlobStore, TransportConfig
from node.transport.blobs import BLOB_PROTOCOL
from node.transport.errors import BlobUnavailable
from node.transport.host import peer_id_of
from node.transport.localswarm import open_swarm, swarm_keys
from node.transport.police import PeerPolice
from protocol.encoding import sha256
from protocol.identity import Keypair

CHAIN = "devnet-test"
pytestmark = pytest.mark.timeout(60)
BLOB = bytes(range(256)) * 2048


def test_police_never_charges_or_bans_its_own_id() -> None:
    me = peer_id_of(Keypair.derive("me").public)
    other = peer_id_of(Keypair.derive("other").public)
    police = PeerPolice(-40.0, 60.0, lambda: 0.0, self_id=me)
    for _ in range(10):
        police.penalise(me, 30.0)
        police.penalise(other, 30.0)
    police.note_invalid(me)
    police.ban(me)
    police.ban(other)
    assert police.app_score(me) == 0.0 and not police.is_banned(me) and me not in police.suspects
    assert police.app_score(other) == -300.0 and police.is_banned(other)


def test_penalties_decay_so_a_trickle_never_adds_up_but_a_burst_does() -> None:
    now = [0.0]
    peer = peer_id_of(Keypair.derive("p").public)
    police = PeerPolice(-40.0, 60.0, lambda: now[0], decay_half_life_s=60.0)
    for _ in range(600):  # one junk message every 10 s for 100 minutes
        police.penalise(peer, 2.0)
        now[0] += 10.0
    assert police.app_score(peer) > -20.0
    for _ in range(30):  # thirty in one second
        police.penalise(peer, 2.0)
    assert police.should_ban(police.app_score(peer))


def test_fetch_skips_our_own_id_and_nobody_is_charged_for_it() -> None:
    async def main() -> None:
        store = MemoryBlobStore()
        digest = store.put(BLOB)
        keys = swarm_keys(2, "selffetch")
        async with open_swarm(keys, TransportConfig(chain_id=CHAIN), [None, store.get]) as ts:
            with trio.fail_after(10):
                while not ts[0].peers():
                    await trio.sleep(0.05)
            me, other = keys[0].public, keys[1].public
            # The compute runner names the task's solver first, which may be this node.
            assert await ts[0].fetch_blob(digest, len(BLOB), [me, other]) == BLOB
            with pytest.raises(BlobUnavailable) as err:
                await ts[0].fetch_blob(sha256(b"absent"), 10, [me])
            assert err.value.reasons == {}
            assert ts[0].police.app_score(ts[0].peer_id) == 0.0
            assert ts[0].peer_id not in ts[0].banned_peers()
            assert ts[0].blob_counters.rejected == 0

    trio.run(main)


def test_a_reset_or_refused_stream_is_not_charged_to_the_server() -> None:
    async def main() -> None:
        async with open_swarm(swarm_keys(2, "resetter"), TransportConfig(chain_id=CHAIN)) as ts:

            async def resets(stream) -> None:
                await stream.reset()  # what a restarting, busy or banning server may do

            ts[0].host.set_stream_handler(BLOB_PROTOCOL, resets)
            with trio.fail_after(10):
                while not ts[1].peers():
                    await trio.sleep(0.05)
            for _ in range(3):  # three of these used to ban an honest peer (3 x 30 > 40)
                with pytest.raises(BlobUnavailable) as err:
                    await ts[1].fetch_blob(sha256(BLOB), len(BLOB))
                assert list(err.value.reasons.values()) == ["BlobStreamFailed"]
            assert ts[1].police.app_score(ts[0].peer_id) == 0.0

    trio.run(main)


def test_network_adapter_reads_its_own_blob_dir_before_asking_anyone(tmp_path: Path) -> None:
    blobs = BlobDir(tmp_path)
    digest = blobs.put(BLOB)

    class NoTransport:
        async def fetch_blob(self, *a: object) -> bytes:
            raise AssertionError("asked the network for a blob we hold")

    net = TransportNetwork(NoTransport(), blobs)  # type: ignore[arg-type]
    assert trio.run(net.fetch_blob, digest, len(BLOB), [b"\x01" * 32]) == BLOB


def test_blob_dir_streams_a_checked_file_and_refuses_a_corrupt_one(tmp_path: Path) -> None:
    blobs = BlobDir(tmp_path)
    digest = blobs.put(BLOB)

    async def main() -> None:
        source = await blobs.open_source(digest)
        assert source is not None and source.size == len(BLOB)
        got = bytearray()
        while chunk := await source.read_chunk(4096):
            assert len(chunk) <= 4096
            got += chunk
        await source.aclose()
        assert hashlib.sha256(got).digest() == digest
        blobs.path(digest).write_bytes(b"swapped" + BLOB[7:])
        assert await blobs.open_source(digest) is None
        assert await blobs.open_source(sha256(b"absent")) is None

    trio.run(main)


def test_a_blob_served_from_disk_reaches_a_peer_verified(tmp_path: Path) -> None:
    blobs = BlobDir(tmp_path)
    big = bytes(range(256)) * 16 * 1024  # 4 MiB: sixteen chunks
    digest = blobs.put(big)

    async def main() -> None:
        async with open_swarm(swarm_keys(2, "disk"), TransportConfig(chain_id=CHAIN),
                              [blobs.open_source, None]) as ts:
            with trio.fail_after(10):
                while not ts[1].peers():
                    await trio.sleep(0.05)
            assert await ts[1].fetch_blob(digest, len(big)) == big
            assert ts[0].metrics()["blob_bytes_out"] == len(big)

    trio.run(main)
