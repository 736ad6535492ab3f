"""The three py-libp2p hot-spot cuts of node/transport/hotspots.py each do what they
claim, and change nothing a peer can observe (the interop test covers a stock host)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from libp2p.pubsub.pb import rpc_pb2
from libp2p.stream_muxer.yamux.yamux import YamuxStream

from node.transport import TransportConfig, hotspots
from node.transport.budgets import Budget
from node.transport.host import peer_id_of
from node.transport.localswarm import open_swarm, swarm_keys, wait_connected
from protocol.commands import TOPIC_TXS
from protocol.identity import Keypair
from protocol.messages import Ping

CHAIN = "devnet-test"
pytestmark = pytest.mark.timeout(60)


def test_a_peer_record_seen_before_from_the_same_peer_is_not_verified_again(monkeypatch: Any) -> None:
    calls: list[bytes] = []

    def original(msg: rpc_pb2.RPC, host: Any, peer: Any) -> bool:
        calls.append(msg.senderRecord)
        return msg.senderRecord != b"forged"

    monkeypatch.setattr(hotspots, "_original_consume", original)
    monkeypatch.setattr(hotspots, "_verified", type(hotspots._verified)())
    a, b = (peer_id_of(Keypair.derive(x).public) for x in ("a", "b"))
    rec = rpc_pb2.RPC(senderRecord=b"record-1")
    for _ in range(5):
        assert hotspots.cached_consume_signed_record(rec, None, a)  # type: ignore[arg-type]
    assert calls == [b"record-1"]
    assert hotspots.cached_consume_signed_record(rec, None, b)  # type: ignore[arg-type]
    assert hotspots.cached_consume_signed_record(rpc_pb2.RPC(senderRecord=b"record-2"), None, a)  # type: ignore[arg-type]
    assert calls == [b"record-1", b"record-1", b"record-2"]
    for _ in range(2):  # a failing record is never cached
        assert not hotspots.cached_consume_signed_record(rpc_pb2.RPC(senderRecord=b"forged"), None, a)  # type: ignore[arg-type]
    assert calls[-2:] == [b"forged", b"forged"]
    assert hotspots.cached_consume_signed_record(rpc_pb2.RPC(), None, a)  # type: ignore[arg-type]  # none sent


def test_our_own_record_is_rebuilt_at_most_once_per_ttl(monkeypatch: Any) -> None:
    built: list[int] = []

    def original(host: Any) -> tuple[bytes, bool]:
        built.append(1)
        return b"our-record", True

    class Host:
        pass

    monkeypatch.setattr(hotspots, "_original_env", original)
    host = Host()
    assert [hotspots.cached_env_to_send(host)[0] for _ in range(50)] == [b"our-record"] * 50  # type: ignore[arg-type]
    assert len(built) == 1


def test_reading_small_rpcs_sends_window_updates_per_half_window_not_per_read(monkeypatch: Any) -> None:
    updates: list[int] = []
    real = YamuxStream.send_window_update

    async def counting(self: YamuxStream, increment: int, skip_lock: bool = False) -> None:
        updates.append(increment)
        await real(self, increment, skip_lock)

    monkeypatch.setattr(YamuxStream, "send_window_update", counting)

    async def main() -> None:
        async with open_swarm(swarm_keys(2, "yamux"), TransportConfig(chain_id=CHAIN)) as ts:
            await wait_connected(ts, TOPIC_TXS, 15)
            ts[1].budgets.set_budget(Ping.TYPE_TAG, Budget(1e6, 1e6))  # a flood on purpose
            updates.clear()
            for i in range(300):
                await ts[0].publish(TOPIC_TXS, Ping(i))
            with trio.fail_after(20):
                for _ in range(300):
                    await ts[1].inbound.receive()
        # ~300 RPCs of ~2 KiB (with the sender's peer record) each way are ~600 KiB:
        # a few half-window credits, where the library's rule sent one per read.
        assert len(updates) < 30, len(updates)

    trio.run(main)
