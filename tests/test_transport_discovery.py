"""Peer discovery between real py-libp2p hosts: one bootstrap address is enough to find
every node, a node keeps dialing towards its target peer count, and a blob held two hops
away is found and fetched from a provider nobody named."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest
import trio

from node.transport import Transport, TransportConfig
from node.transport.blobs import MemoryBlobStore
from node.transport.dialer import BackoffConfig
from node.transport.discovery import DiscoveryConfig, PeerBook, parse_addr, parse_record
from node.transport.localswarm import swarm_keys
from protocol.errors import Malformed
from protocol.identity import Keypair
from protocol.peers import PeerRecord

CHAIN = "discovery-test"
pytestmark = pytest.mark.timeout(120)
FAST = DiscoveryConfig(interval_s=0.3, settled_interval_s=2.0, timeout_s=3.0)


@asynccontextmanager
async def _net(
    n: int, bootstrap_of: Sequence[int | None], cfg: DiscoveryConfig = FAST, label: str = "disc"
) -> AsyncIterator[tuple[list[Transport], list[MemoryBlobStore]]]:
    """n transports; node i bootstraps to node bootstrap_of[i] only (None: to nobody)."""
    keys = swarm_keys(n, label)
    stores = [MemoryBlobStore() for _ in range(n)]
    ts: list[Transport] = []
    base = TransportConfig(chain_id=CHAIN, discovery=cfg,
                           backoff=BackoffConfig(initial_s=0.2, max_s=1.0, check_interval_s=0.2))
    async with trio.open_nursery() as nursery:
        for i, key in enumerate(keys):
            j = bootstrap_of[i]
            boot = () if j is None else (ts[j].listen_addrs[0],)
            t = Transport(replace(base, bootstrap=boot), key, stores[i].get, stores[i].has)
            await nursery.start(t.run)
            ts.append(t)
        try:
            yield ts, stores
        finally:
            nursery.cancel_scope.cancel()


async def _until(pred: object, timeout_s: float) -> float:
    start = trio.current_time()
    with trio.fail_after(timeout_s):
        while not pred():  # type: ignore[operator]
            await trio.sleep(0.1)
    return trio.current_time() - start


def test_nodes_bootstrapped_to_one_node_each_find_all_the_others() -> None:
    async def main() -> None:
        # A chain: node i knows only node i-1, so no node is told of more than one.
        async with _net(6, [None, 0, 1, 2, 3, 4]) as (ts, _):
            await _until(lambda: all(len(t.peers()) == 5 for t in ts), 60)
            everyone = {t.peer_id for t in ts}
            for t in ts:
                assert set(t.host.get_connected_peers()) == everyone - {t.peer_id}

    trio.run(main)


def test_a_node_keeps_dialing_towards_its_target_but_not_beyond() -> None:
    async def main() -> None:
        cfg = replace(FAST, target_peers=2)
        # A star around node 0: the others learn each other from it.
        async with _net(6, [None, 0, 0, 0, 0, 0], cfg) as (ts, _):
            await _until(lambda: all(len(t.peers()) >= 2 for t in ts[1:]), 60)
            await trio.sleep(2.0)
            # Leaves stop at the target (inbound connections from others may add some).
            assert min(len(t.peers()) for t in ts[1:]) >= 2
            assert sum(t.discovery.rounds for t in ts) > 0

    trio.run(main)


def test_a_blob_two_hops_away_is_found_and_fetched_from_a_provider_nobody_named() -> None:
    async def main() -> None:
        cfg = replace(FAST, target_peers=1)  # nobody dials beyond its one bootstrap peer
        async with _net(3, [None, 0, 1], cfg, label="prov") as (ts, stores):
            a, b, c = ts
            await _until(lambda: a.peers() and b.peers() and c.peers(), 30)
            assert c.peer_id not in a.host.get_connected_peers()
            digest = stores[2].put(b"the proof segment" * 1000)
            data = await a.fetch_blob(digest, 1 << 20)
            assert data == b"the proof segment" * 1000
            assert c.peer_id in a.host.get_connected_peers()  # dialed the provider it found

    trio.run(main)


def test_peer_records_accept_only_plain_dialable_addresses() -> None:
    assert str(parse_addr("/ip4/10.0.0.1/tcp/4001")) == "/ip4/10.0.0.1/tcp/4001"
    assert str(parse_addr("/ip4/0.0.0.0/tcp/4001", "192.0.2.9")) == "/ip4/192.0.2.9/tcp/4001"
    for bad in ("/ip4/0.0.0.0/tcp/4001", "/ip4/1.2.3.4/udp/9", "/ip4/1.2.3.4/tcp/0", "/ip4/x/tcp/1",
                "/ip4/1.2.3.4/tcp/1/p2p/abc", "/unix/tmp/sock", "garbage"):
        assert parse_addr(bad) is None, bad
    key = Keypair.derive("rec")
    peer, addrs = parse_record(PeerRecord(key.public, ("garbage", "/ip4/127.0.0.1/tcp/9")))
    assert peer.to_base58() == key.node_id and [str(a) for a in addrs] == ["/ip4/127.0.0.1/tcp/9"]
    with pytest.raises(Malformed):
        parse_record(PeerRecord(key.public, ("garbage",)))


def test_peer_book_is_bounded_keeps_pinned_peers_and_forgets_failing_ones() -> None:
    import multiaddr

    from node.transport.host import peer_id_of

    book = PeerBook(capacity=3)
    ids = [peer_id_of(Keypair.derive(f"book/{i}").public) for i in range(5)]
    addr = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/9")]
    book.learn(ids[0], addr, pinned=True)
    for p in ids[1:]:
        book.learn(p, addr)
    assert len(book) == 3 and ids[0] in book and ids[1] not in book
    book.failed(ids[4], limit=2)
    book.failed(ids[4], limit=2)
    assert ids[4] not in book
    for _ in range(5):
        book.failed(ids[0], limit=2)
    assert ids[0] in book  # a bootstrap peer is never forgotten
