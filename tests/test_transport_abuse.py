"""A hostile peer (a stock py-libp2p host, not our code) sends garbage, oversized and
badly signed messages: every one is rejected before delivery or forwarding, the peer
is scored down and banned, honest traffic keeps flowing, and nothing crashes."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import multiaddr
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service
from libp2p.utils.varint import encode_varint_prefixed

from node.transport import Transport, TransportConfig
from node.transport.direct import DIRECT_PROTOCOL
from node.transport.errors import PeerUnavailable
from node.transport.gossip import EnvelopeValidator, GossipConfig
from node.transport.host import peer_id_of
from node.transport.localswarm import open_swarm, swarm_keys, wait_connected
from node.transport.police import PeerPolice
from protocol.commands import TOPIC_TXS
from protocol.envelope import seal
from protocol.identity import Keypair
from protocol.limits import MAX_MESSAGE_BYTES
from protocol.messages import Ping

CHAIN = "devnet-test"
pytestmark = pytest.mark.timeout(90)


def _bad_payloads() -> list[bytes]:
    good = seal(Ping(1), Keypair.derive("someone"), CHAIN)
    forged = bytearray(good)
    forged[-1] ^= 1  # flips a bit of the signature
    return [
        b"\x00garbage",
        b"\xff" * 100,
        b"\x91" + b"\xc0" * (MAX_MESSAGE_BYTES + 100),  # oversized (under the RPC cap)
        bytes(forged),  # bad signature
        seal(Ping(2), Keypair.derive("someone"), "another-chain"),  # wrong chain
    ]


def test_validator_rejects_every_bad_payload_without_raising() -> None:
    rejects: list[str] = []
    me = peer_id_of(Keypair.derive("me").public)
    v = EnvelopeValidator(CHAIN, GossipConfig(), lambda: 0.0, lambda p, r: rejects.append(r), me)
    peer = peer_id_of(Keypair.derive("peer").public)

    class Msg:
        def __init__(self, data: bytes) -> None:
            self.data = data

    assert not any(v(peer, Msg(p)) for p in _bad_payloads())  # type: ignore[arg-type]
    assert rejects == ["Malformed", "Malformed", "MessageTooLarge", "BadSignature", "WrongChain"]


@asynccontextmanager
async def rogue_peer(victim_addr: str, seed: bytes) -> AsyncIterator[tuple[IHost, Pubsub]]:
    """A stock py-libp2p host and gossipsub (library defaults, none of our code),
    connected to the victim and subscribed to the transactions topic."""
    rogue = new_host(key_pair=create_new_key_pair(seed))
    router = GossipSub(protocols=[TProtocol("/meshsub/1.1.0")], degree=3, degree_low=2, degree_high=4,
                       heartbeat_interval=1)
    pubsub = Pubsub(rogue, router)
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    async with background_trio_service(pubsub), background_trio_service(router), rogue.run(listen):
        try:
            await pubsub.wait_until_ready()
            await pubsub.subscribe(TOPIC_TXS)
            await rogue.connect(info_from_p2p_addr(multiaddr.Multiaddr(victim_addr)))
            with trio.fail_after(10):
                while not pubsub.peer_topics.get(TOPIC_TXS):
                    await trio.sleep(0.05)
            yield rogue, pubsub
        finally:
            await rogue.close()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_validator_verdict_on_arbitrary_bytes_is_a_bool_never_an_exception(data: bytes) -> None:
    me = peer_id_of(Keypair.derive("me").public)
    v = EnvelopeValidator(CHAIN, GossipConfig(), lambda: 0.0, lambda p, r: None, me)

    class Msg:
        def __init__(self, data: bytes) -> None:
            self.data = data

    assert v(peer_id_of(Keypair.derive("peer").public), Msg(data)) is False  # type: ignore[arg-type]


def test_hostile_stock_libp2p_peer_is_rejected_scored_down_and_banned() -> None:
    async def main() -> None:
        keys = swarm_keys(3, "honest")
        cfg = TransportConfig(chain_id=CHAIN, gossip=dataclasses.replace(GossipConfig(), ban_s=30.0))
        async with open_swarm(keys, cfg) as ts:
            await wait_connected(ts, TOPIC_TXS, 15)
            victim = ts[0]
            async with rogue_peer(victim.listen_addrs[0], b"r" * 32) as (rogue, pubsub):
                someone_elses = seal(Ping(5), Keypair.derive("someone"), CHAIN)  # valid, not first-hand
                for direct in (b"\x93junk", someone_elses):
                    stream = await rogue.new_stream(victim.peer_id, [DIRECT_PROTOCOL])
                    await stream.write(encode_varint_prefixed(direct))
                    await stream.close()
                for payload in _bad_payloads():
                    await pubsub.publish(TOPIC_TXS, payload)
                    await trio.sleep(0.05)
                with trio.fail_after(10):
                    while rogue.get_id() not in victim.banned_peers():
                        await trio.sleep(0.05)
                with trio.fail_after(10):
                    while rogue.get_id() in victim.host.get_connected_peers():
                        await trio.sleep(0.05)
            m = victim.metrics()
            assert victim.validator.counters.rejected >= 1 and victim.counters.direct_rejected == 2
            assert m["bans"] == 1
            assert m["messages_in"] == 0  # nothing bad was delivered
            assert all(t.metrics()["messages_in"] == 0 for t in ts[1:])  # nor forwarded
            await _swarm_still_works(ts, keys)

    trio.run(main)


def test_oversized_rpc_from_a_peer_is_dropped_without_delivery_or_crash() -> None:
    async def main() -> None:
        keys = swarm_keys(2, "big")
        async with open_swarm(keys, TransportConfig(chain_id=CHAIN)) as ts:
            await wait_connected(ts, TOPIC_TXS, 15)
            victim = ts[0]
            async with rogue_peer(victim.listen_addrs[0], b"b" * 32) as (rogue, pubsub):
                # Lift the stock library's own 1 MiB send cap so the bytes really go out.
                pubsub.peer_queues[victim.peer_id].max_message_size = 8 * MAX_MESSAGE_BYTES
                big = seal(Ping(3), Keypair.derive("someone"), CHAIN) + b"\x00" * (2 * MAX_MESSAGE_BYTES)
                await pubsub.publish(TOPIC_TXS, big)
                with trio.fail_after(10):
                    while rogue.get_id() in victim.pubsub.peers:
                        await trio.sleep(0.05)
            assert victim.metrics()["messages_in"] == 0
            await _swarm_still_works(ts, keys)

    trio.run(main)


async def _swarm_still_works(ts: list, keys: list) -> None:
    await ts[1].publish(TOPIC_TXS, Ping(99))
    with trio.fail_after(10):
        got = await ts[0].inbound.receive()
    assert got.body == Ping(99) and got.sender == keys[1].public


def test_police_bans_below_threshold_then_forgives_when_the_ban_expires() -> None:
    now = [0.0]
    police = PeerPolice(ban_threshold=-40.0, ban_s=60.0, clock=lambda: now[0])
    peer = peer_id_of(Keypair.derive("bad").public)
    police.penalise(peer, 30.0)
    assert police.app_score(peer) == -30.0 and peer in police.suspects
    assert not police.should_ban(-30.0) and police.should_ban(-41.0)
    police.ban(peer)
    now[0] = 59.9
    assert police.is_banned(peer) and police.expire() == []
    now[0] = 60.0
    assert police.expire() == [peer]
    assert not police.is_banned(peer) and police.app_score(peer) == 0.0


def test_direct_send_to_an_unreachable_peer_raises_peer_unavailable() -> None:
    async def main() -> None:
        cfg = TransportConfig(chain_id=CHAIN, direct_timeout_s=2.0)
        async with Transport.open(cfg, Keypair.derive("alone")) as t:
            with pytest.raises(PeerUnavailable):
                await t.send_to(Keypair.derive("nobody").public, Ping(1))

    trio.run(main)
