"""Gossip and direct messages between real py-libp2p hosts over loopback TCP."""

from __future__ import annotations

import random

import pytest
import trio

from node.transport import Transport, TransportConfig
from node.transport.dialer import Backoff, BackoffConfig
from node.transport.direct import DIRECT_TOPIC
from node.transport.errors import ListenFailed, NotRunning, TransportError
from node.transport.gossip import TokenBucket
from node.transport.host import build_host, peer_id_of, public_key_of
from node.transport.localswarm import open_swarm, swarm_keys, wait_connected
from node.transport.procswarm import free_ports
from protocol.commands import TOPIC_CONSENSUS, TOPIC_TXS
from protocol.envelope import seal
from protocol.errors import BadSignature, WrongChain
from protocol.identity import Keypair
from protocol.messages import Ping, Pong

CHAIN = "devnet-test"
pytestmark = pytest.mark.timeout(60)


def test_libp2p_peer_id_is_the_node_id_of_the_same_key() -> None:
    key = Keypair.derive("id")
    host = build_host(key)
    assert host.get_id().to_base58() == key.node_id
    assert public_key_of(peer_id_of(key.public)) == key.public


def test_backoff_doubles_to_its_cap_and_resets_on_success() -> None:
    cfg = BackoffConfig(initial_s=1.0, max_s=8.0, factor=2.0, jitter=0.0)
    b = Backoff(cfg, random.Random(1))
    peer = peer_id_of(Keypair.derive("p").public)
    waits = [b.failed(peer, 0.0) for _ in range(6)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert not b.due(peer, 7.9) and b.due(peer, 8.0)
    b.succeeded(peer)
    assert b.due(peer, 0.0) and b.failed(peer, 0.0) == 1.0


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=3.0)
    assert [bucket.take(b"p", 0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(b"p", 0.1) and not bucket.take(b"p", 0.1)
    assert bucket.take(b"other", 0.1)


async def _collect(t: Transport, n: int, timeout_s: float) -> list:
    got = []
    with trio.move_on_after(timeout_s):
        while len(got) < n:
            got.append(await t.inbound.receive())
    return got


def test_four_hosts_form_a_mesh_and_each_gets_every_message_exactly_once() -> None:
    async def main() -> None:
        keys = swarm_keys(4, "mesh")
        async with open_swarm(keys, TransportConfig(chain_id=CHAIN)) as ts:
            await wait_connected(ts, TOPIC_TXS, 15)
            for i, t in enumerate(ts):
                await t.publish(TOPIC_TXS, Ping(i))
            for i, t in enumerate(ts):
                got = await _collect(t, 3, 10)
                got += await _collect(t, 1, 0.5)  # anything extra would be a duplicate
                assert sorted(m.body.nonce for m in got) == [j for j in range(4) if j != i]
                assert all(m.topic == TOPIC_TXS for m in got)
                assert {m.sender for m in got} == {k.public for j, k in enumerate(keys) if j != i}
            assert all(t.metrics()["messages_rejected"] == 0 for t in ts)

    trio.run(main)


def test_direct_message_reaches_only_its_addressee_verified() -> None:
    async def main() -> None:
        keys = swarm_keys(3, "direct")
        async with open_swarm(keys, TransportConfig(chain_id=CHAIN)) as ts:
            await wait_connected(ts, TOPIC_CONSENSUS, 15)
            await ts[2].connect(ts[0].listen_addrs[0])
            await ts[0].send_to(keys[2].public, Pong(42))
            [msg] = await _collect(ts[2], 1, 5)
            assert (msg.topic, msg.sender, msg.body) == (DIRECT_TOPIC, keys[0].public, Pong(42))
            assert await _collect(ts[1], 1, 0.5) == []

    trio.run(main)


def test_publish_is_refused_before_start_on_unknown_topics_and_for_forged_envelopes() -> None:
    async def main() -> None:
        t = Transport(TransportConfig(chain_id=CHAIN), Keypair.derive("lonely"))
        with pytest.raises(NotRunning):
            await t.publish(TOPIC_TXS, Ping(1))
        async with Transport.open(TransportConfig(chain_id=CHAIN), Keypair.derive("lonely2")) as t2:
            with pytest.raises(TransportError):
                await t2.publish("not/a/topic", Ping(1))
            forged = bytearray(seal(Ping(1), Keypair.derive("wallet"), CHAIN))
            forged[-1] ^= 1
            with pytest.raises(BadSignature):
                await t2.publish_sealed(TOPIC_TXS, bytes(forged))
            with pytest.raises(WrongChain):
                await t2.publish_sealed(TOPIC_TXS, seal(Ping(1), Keypair.derive("wallet"), "other"))
            assert t2.metrics()["messages_out"] == 0

    trio.run(main)


def test_bootstrap_peer_is_redialed_after_it_restarts() -> None:
    async def main() -> None:
        a_key, b_key = Keypair.derive("restart-a"), Keypair.derive("restart-b")
        fast = BackoffConfig(initial_s=0.2, max_s=1.0, check_interval_s=0.1)
        async with trio.open_nursery() as nursery:
            a = Transport(TransportConfig(chain_id=CHAIN, backoff=fast), a_key)
            a_scope = trio.CancelScope()

            async def run_a(t: Transport, task_status=trio.TASK_STATUS_IGNORED) -> None:
                with a_scope:
                    await t.run(task_status=task_status)

            [addr] = await nursery.start(run_a, a)
            port = int(addr.split("/tcp/")[1].split("/")[0])
            b = Transport(TransportConfig(chain_id=CHAIN, bootstrap=(addr,), backoff=fast), b_key)
            await nursery.start(b.run)
            with trio.fail_after(10):
                while not b.peers():
                    await trio.sleep(0.05)
            a_scope.cancel()
            with trio.fail_after(10):
                while b.peers():
                    await trio.sleep(0.05)
            a2 = Transport(TransportConfig(chain_id=CHAIN, listen_port=port, backoff=fast), a_key)
            a_scope = trio.CancelScope()
            await nursery.start(run_a, a2)
            with trio.fail_after(15):
                while a_key.public not in b.peers():
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_second_node_on_a_port_in_use_fails_to_start_instead_of_sharing_it() -> None:
    async def main() -> None:
        [port] = free_ports(1)
        cfg = TransportConfig(chain_id=CHAIN, listen_port=port)
        async with Transport.open(cfg, Keypair.derive("first")):
            with pytest.raises(ListenFailed):
                async with Transport.open(cfg, Keypair.derive("second")):
                    pass

    trio.run(main)


def test_a_silent_bootstrap_address_does_not_delay_dialing_the_others() -> None:
    async def main() -> None:
        silent = trio.socket.socket()
        await silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts TCP, never answers the Noise handshake
        silent_addr = f"/ip4/127.0.0.1/tcp/{silent.getsockname()[1]}/p2p/{Keypair.derive('mute').node_id}"
        slow = BackoffConfig(dial_timeout_s=20.0, check_interval_s=0.1)
        async with Transport.open(TransportConfig(chain_id=CHAIN), Keypair.derive("target")) as target:
            both = (silent_addr, target.listen_addrs[0])
            cfg = TransportConfig(chain_id=CHAIN, bootstrap=both, backoff=slow)
            async with Transport.open(cfg, Keypair.derive("dialer")) as t:
                with trio.fail_after(5):  # well under the 20 s the silent dial may take
                    while Keypair.derive("target").public not in t.peers():
                        await trio.sleep(0.05)
        silent.close()

    trio.run(main)
