"""The chain handshake between real py-libp2p hosts: same genesis agrees, another
genesis (same chain id) is refused with both hashes named, banned and not kept."""

from __future__ import annotations

import logging

import pytest
import trio

from node.transport import Transport, TransportConfig
from node.transport.dialer import BackoffConfig
from protocol.handshake import HANDSHAKE_VERSION, ChainHello, hello_mismatch
from protocol.identity import Keypair

CHAIN = "handshake-test"
GENESIS_A = b"\xaa" * 32
GENESIS_B = b"\xbb" * 32
FAST = BackoffConfig(initial_s=0.2, max_s=1.0, check_interval_s=0.1)
pytestmark = pytest.mark.timeout(60)


def test_hello_rules_name_what_differs() -> None:
    ours = ChainHello(HANDSHAKE_VERSION, CHAIN, GENESIS_A)
    assert hello_mismatch(ours, ours) is None
    assert "different genesis: peer has " + GENESIS_B.hex() + ", this node has " + GENESIS_A.hex() == (
        hello_mismatch(ours, ChainHello(HANDSHAKE_VERSION, CHAIN, GENESIS_B))
    )
    assert "peer is on chain 'other'" in str(
        hello_mismatch(ours, ChainHello(HANDSHAKE_VERSION, "other", GENESIS_A))
    )
    assert "handshake version 9" in str(hello_mismatch(ours, ChainHello(9, CHAIN, GENESIS_A)))


async def _pair(genesis_b: bytes, watch_s: float) -> tuple[Transport, Transport, list[int], bool]:
    """A listens, B bootstraps to A; returns both, B's peer counts sampled over watch_s
    and whether either banned the other."""
    a = Transport(
        TransportConfig(chain_id=CHAIN, genesis_hash=GENESIS_A, backoff=FAST), Keypair.derive("hs-a")
    )
    counts: list[int] = []
    async with trio.open_nursery() as nursery:
        [addr] = await nursery.start(a.run)
        cfg = TransportConfig(chain_id=CHAIN, bootstrap=(addr,), genesis_hash=genesis_b, backoff=FAST)
        b = Transport(cfg, Keypair.derive("hs-b"))
        await nursery.start(b.run)
        with trio.move_on_after(watch_s):
            while True:
                counts.append(len(b.peers()))
                await trio.sleep(0.05)
        banned = a.police.is_banned(b.peer_id) or b.police.is_banned(a.peer_id)
        nursery.cancel_scope.cancel()
    return a, b, counts, banned


def test_peers_of_one_genesis_agree_and_stay_connected() -> None:
    a, b, counts, banned = trio.run(_pair, GENESIS_A, 3.0)
    assert not banned
    assert a.handshake is not None and b.handshake is not None
    assert b.peer_id in a.handshake.agreed and a.peer_id in b.handshake.agreed
    assert counts[-10:] == [1] * 10
    assert a.handshake.refused_total == b.handshake.refused_total == 0


def test_a_peer_of_another_genesis_is_refused_naming_both_hashes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="polnet.transport.handshake")
    _, _, counts, banned = trio.run(_pair, GENESIS_B, 4.0)
    lines = [r.getMessage() for r in caplog.records if r.name == "polnet.transport.handshake"]
    assert lines, "no refusal logged"
    assert all(GENESIS_A.hex() in line and GENESIS_B.hex() in line for line in lines)
    assert all("different genesis" in line for line in lines)
    # One line per side per connection, not one per retry: the refused peer is banned.
    assert len(lines) <= 2
    assert banned
    assert counts[-10:] == [0] * 10  # and not connected at the end
