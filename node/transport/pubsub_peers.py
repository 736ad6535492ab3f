"""Drop pubsub streams that outlived their connection, so a restarted peer is re-greeted.

py-libp2p 0.8.1 keeps one outbound pubsub stream per peer id (`Pubsub.peers`) and only
opens one, sending its hello with our subscriptions, for a peer id it does not hold yet
(`Pubsub._handle_new_peer`). The entry is removed when the library hears of the
disconnect, and that notice can be late or lost: measured in tests/test_transport_restart.py,
one time in four the entry of a peer that had restarted was still there after its old
connection was gone. The restarted peer (same key, same peer id) then reconnects, we
skip it as "already have a stream", it never hears our subscriptions, and so it can
neither graft us nor publish to us: it receives everything and reaches nobody, the
one-sided mesh that stalled restarted networks (calimero-network/core#3508 describes the
same bug in rust-libp2p). Every `interval_s` we look for streams whose connection is no
longer among the host's live connections to that peer and hand them to the library's own
dead-peer path, which forgets the peer's router state and, when the peer is connected
again, opens a fresh stream with a fresh hello.
"""

from __future__ import annotations

import logging

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.pubsub.pubsub import Pubsub

log = logging.getLogger(__name__)

#: How often pubsub streams are checked against the live connections.
CHECK_INTERVAL_S = 0.5


def stale_stream_peers(host: IHost, pubsub: Pubsub) -> list[ID]:
    """Peers whose pubsub stream runs over a connection that is closed or gone."""
    network = host.get_network()
    stale = []
    for peer, stream in list(pubsub.peers.items()):
        muxed = getattr(stream, "muxed_conn", None)
        live = [
            c.muxed_conn
            for c in network.get_connections(peer)
            if getattr(c, "muxed_conn", None) is not None and not getattr(c.muxed_conn, "is_closed", False)
        ]
        if muxed is None or not any(m is muxed for m in live):
            stale.append(peer)
    return stale


def drop_stale_streams(host: IHost, pubsub: Pubsub) -> list[ID]:
    """Send each stale peer through the library's dead-peer path (re-greets if connected)."""
    stale = stale_stream_peers(host, pubsub)
    for peer in stale:
        log.debug("pubsub stream to %s outlived its connection; re-establishing", peer)
        pubsub._handle_dead_peer(peer)  # the library's own cleanup (py-libp2p pinned at 0.8.1)
    return stale


async def keep_streams_fresh(host: IHost, pubsub: Pubsub, interval_s: float = CHECK_INTERVAL_S) -> None:
    """Runs forever (a task of the transport's nursery)."""
    while True:
        await trio.sleep(interval_s)
        drop_stale_streams(host, pubsub)
