"""Gossip across restarts between real py-libp2p hosts: a re-sent message is delivered
again, and a restarted publisher is not taken for an equivocator (and banned)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from node.transport import Transport, TransportConfig
from node.transport.budgets import Budget
from node.transport.dialer import BackoffConfig
from node.transport.errors import BlobUnavailable, ListenFailed
from node.transport.host import ensure_port_free, peer_id_of
from node.transport.localswarm import open_swarm, swarm_keys, wait_connected
from node.transport.msgids import restart_safe_seqnos
from node.transport.procswarm import free_ports
from protocol.commands import TOPIC_CONSENSUS
from protocol.envelope import seal
from protocol.messages import Ping
from protocol.schema import tag_of

CHAIN = "restart-test"
pytestmark = pytest.mark.timeout(90)


async def _receive(t: Transport, n: int, timeout_s: float) -> list[bytes]:
    got: list[bytes] = []
    with trio.move_on_after(timeout_s):
        while len(got) < n:
            got.append((await t.inbound.receive()).raw)
    return got


def test_a_byte_identical_envelope_published_again_is_delivered_again() -> None:
    """Consensus re-broadcasts are deterministic bytes; each publication must reach the
    peers (with content-addressed ids the second one never left the publisher)."""

    async def main() -> None:
        keys = swarm_keys(2, "resend")
        async with open_swarm(keys, TransportConfig(chain_id=CHAIN)) as (a, b):
            await wait_connected([a, b], TOPIC_CONSENSUS, 15)
            raw = seal(Ping(7), keys[0], CHAIN)
            for _ in range(3):
                await a.publish_sealed(TOPIC_CONSENSUS, raw)
                await trio.sleep(0.3)
            assert await _receive(b, 3, 10) == [raw, raw, raw]

    trio.run(main)


def test_restarted_publisher_continues_above_its_old_sequence_numbers() -> None:
    async def main() -> None:
        a_key, b_key = swarm_keys(2, "seqno")
        fast = BackoffConfig(initial_s=0.2, max_s=1.0, check_interval_s=0.1)
        [port] = free_ports(1)
        a_cfg = TransportConfig(chain_id=CHAIN, listen_port=port, backoff=fast)
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def run(t: Transport, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                with scope:
                    await t.run(task_status=task_status)

            first = Transport(a_cfg, a_key)
            [addr] = await nursery.start(run, first)
            b = Transport(TransportConfig(chain_id=CHAIN, bootstrap=(addr,), backoff=fast), b_key)
            # 40 Pings at once is a flood by the daemon's per-signer budget (issue 10):
            # this test is about sequence numbers, so b allows them.
            b.budgets.set_budget(tag_of(Ping), Budget(100, 100))
            await nursery.start(b.run)
            await wait_connected([first, b], TOPIC_CONSENSUS, 15)
            # Faster than one message a second: py-libp2p's int(time.time()) start would
            # hand the restarted node the same seqnos, now with other content.
            for i in range(40):
                await first.publish(TOPIC_CONSENSUS, Ping(i))
            assert len(await _receive(b, 40, 10)) == 40
            last = first.pubsub.counter
            scope.cancel()
            # Restart as soon as the port is free, as a supervisor would: b may not have
            # noticed the old connection die, and must still greet the new one.
            await _port_released(port)
            again = Transport(a_cfg, a_key)
            assert again.pubsub.counter > last
            scope = trio.CancelScope()
            await nursery.start(run, again)
            await wait_connected([again, b], TOPIC_CONSENSUS, 20)
            for i in range(40):
                await again.publish(TOPIC_CONSENSUS, Ping(1000 + i))
            assert len(await _receive(b, 40, 10)) == 40
            await trio.sleep(2 * b.config.police_interval_s)
            assert b.police.bans_total == 0 and a_key.public in b.peers()
            nursery.cancel_scope.cancel()

    trio.run(main)


async def _port_released(port: int) -> None:
    with trio.fail_after(10):
        while True:
            try:
                ensure_port_free("127.0.0.1", port)
                return
            except ListenFailed:
                await trio.sleep(0.02)


def test_seqno_start_is_the_wall_clock_in_nanoseconds_and_never_goes_down() -> None:
    class FakePubsub:
        counter = 5

    p = FakePubsub()
    restart_safe_seqnos(p, now_ns=1_700_000_000_000_000_000)  # type: ignore[arg-type]
    assert p.counter == 1_700_000_000_000_000_000
    restart_safe_seqnos(p, now_ns=10)  # type: ignore[arg-type]
    assert p.counter == 1_700_000_000_000_000_000
    with pytest.raises(OverflowError):
        restart_safe_seqnos(p, now_ns=1 << 64)  # type: ignore[arg-type]


def test_fetches_from_a_peer_that_is_down_or_restarting_cost_it_nothing() -> None:
    """After a restart a node fetched from peers it had no connection to yet; each failed
    stream open was scored as a protocol fault, eight at once banned an honest solver."""

    async def main() -> None:
        keys = swarm_keys(2, "unreach")
        async with open_swarm(keys[:1], TransportConfig(chain_id=CHAIN, discover=False)) as (a,):
            absent = keys[1].public  # a validator that is down: no connection, no address
            for _ in range(8):
                with pytest.raises(BlobUnavailable) as info:
                    await a.fetch_blob(b"\x01" * 32, 1024, peers=[absent])
                assert set(info.value.reasons.values()) == {"BlobStreamFailed"}
            await trio.sleep(2 * a.config.police_interval_s)
            assert a.police.app_score(peer_id_of(absent)) == 0.0 and not a.banned_peers()

    trio.run(main)
