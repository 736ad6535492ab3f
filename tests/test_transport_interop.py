"""Interop: a stock py-libp2p host, written here without any of node.transport, joins
our topics and receives our messages (and we receive its correctly sealed ones)."""

from __future__ import annotations

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from node.transport import Transport, TransportConfig
from protocol.commands import TOPIC_ADVERTS, TOPIC_CONSENSUS
from protocol.envelope import open_envelope, seal
from protocol.identity import Keypair
from protocol.messages import Hello, Ping

CHAIN = "devnet-test"
pytestmark = pytest.mark.timeout(60)


def test_stock_py_libp2p_host_receives_our_gossip_and_we_receive_its() -> None:
    async def main() -> None:
        ours_key = Keypair.derive("interop-ours")
        async with Transport.open(TransportConfig(chain_id=CHAIN), ours_key) as ours:
            # --- the stock host, as the library's own pubsub example builds it ---
            host = new_host()
            router = GossipSub(
                protocols=[TProtocol("/meshsub/1.0.0")],
                degree=3,
                degree_low=2,
                degree_high=4,
                heartbeat_initial_delay=0.1,
                heartbeat_interval=1,
            )
            pubsub = Pubsub(host, router)
            listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
            async with background_trio_service(pubsub), background_trio_service(router), host.run(listen):
                await pubsub.wait_until_ready()
                sub = await pubsub.subscribe(TOPIC_CONSENSUS)
                await pubsub.subscribe(TOPIC_ADVERTS)
                await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(ours.listen_addrs[0])))
                await ours.wait_for_mesh(TOPIC_CONSENSUS, 1, 15)

                hello = Hello("polnet/interop", 5, b"\x07" * 32, 4001)
                await ours.publish(TOPIC_CONSENSUS, hello)
                with trio.fail_after(10):
                    msg = await sub.get()
                env = open_envelope(msg.data, CHAIN)
                assert (env.body, env.sender) == (hello, ours_key.public)
                assert msg.from_id == ours.peer_id.to_bytes()

                theirs = Keypair.derive("interop-theirs")
                await pubsub.publish(TOPIC_ADVERTS, seal(Ping(11), theirs, CHAIN))
                with trio.fail_after(10):
                    got = await ours.inbound.receive()
                assert (got.topic, got.body, got.sender) == (TOPIC_ADVERTS, Ping(11), theirs.public)
                await host.close()

    trio.run(main)
