"""The attacker: a stock py-libp2p host and gossipsub with a key of its own.

None of node.transport's defences run here (no validator, no budgets, no police): it
is the library as anyone can install it, configured only so that it can actually
send what it wants (a 1 s heartbeat so its mesh forms, the library's own spam limiter
off so its floods leave the process). It speaks our protocol: every message is a
canonical envelope sealed with its ed25519 key (the same key as its libp2p identity,
so its direct messages are first-hand and its gossip is signed by a known account,
which the test funds on the ledger).

`freeze` blocks the whole process (a plain `time.sleep` on the trio thread): the host
then reads nothing from any socket, which is what a peer that "stops reading" looks
like from the other side, down to unanswered stream negotiations.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service
from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited

from node.transport.blobs import BLOB_PROTOCOL, encode_request
from node.transport.direct import DIRECT_PROTOCOL
from node.transport.host import libp2p_keypair
from protocol.commands import TOPIC_CONSENSUS, TOPICS
from protocol.consensus.messages import Proposal, Status
from protocol.consensus.votes import Vote
from protocol.envelope import open_envelope, seal
from protocol.errors import DecodeError
from protocol.identity import Keypair
from protocol.messages import load_all

#: How long the attacker waits for a stream to one victim before giving up on it.
STREAM_TIMEOUT_S = 5.0
#: A victim that dropped us is dialed again this often (its ban may have expired).
REDIAL_S = 2.0


@dataclass(slots=True)
class AttackCounters:
    published: int = 0
    direct_sent: int = 0
    direct_failed: int = 0
    blob_streams: int = 0
    blob_bytes_read: int = 0
    frozen_s: float = 0.0
    by_attack: dict[str, int] = field(default_factory=dict)


class Attacker:
    def __init__(self, key: Keypair, chain_id: str, host: IHost, pubsub: Pubsub) -> None:
        self.key = key
        self.chain_id = chain_id
        self.host = host
        self.pubsub = pubsub
        self.counters = AttackCounters()
        #: Highest height seen in the victims' consensus gossip (what "old" and "ahead" mean).
        self.height = 0
        self.round = 0
        self.victims: list[ID] = []

    async def publish(self, topic: str, body: Any) -> None:
        await self.pubsub.publish(topic, seal(body, self.key, self.chain_id))
        self.counters.published += 1

    async def direct(self, peer: ID, body: Any) -> bool:
        raw = seal(body, self.key, self.chain_id)
        try:
            with trio.fail_after(STREAM_TIMEOUT_S):
                stream = await self.host.new_stream(peer, [DIRECT_PROTOCOL])
                await stream.write(encode_varint_prefixed(raw))
                await stream.close()
        except Exception:  # a victim that banned us resets: that is the expected answer
            self.counters.direct_failed += 1
            return False
        self.counters.direct_sent += 1
        return True

    async def read_blob_slowly(self, peer: ID, digest: bytes, max_size: int, bytes_per_s: int,
                               seconds: float) -> None:
        """Ask for a blob, then read it at `bytes_per_s` for `seconds` (or until the victim
        cuts us off): a slow reader holding the victim's serving slot and buffers."""
        try:
            with trio.fail_after(STREAM_TIMEOUT_S):
                stream = await self.host.new_stream(peer, [BLOB_PROTOCOL])
                await stream.write(encode_request(digest, max_size))
                await read_varint_prefixed_bytes_limited(stream, 128)
        except Exception:
            return
        self.counters.blob_streams += 1
        step = max(1, bytes_per_s // 4)
        with contextlib.suppress(Exception), trio.move_on_after(seconds):
            while True:
                data = await stream.read(step)
                if not data:
                    break
                self.counters.blob_bytes_read += len(data)
                await trio.sleep(0.25)
        with contextlib.suppress(Exception):
            await stream.reset()

    def freeze(self, seconds: float) -> None:
        """Stop reading anything, from anyone, for `seconds` (blocks the whole process)."""
        time.sleep(seconds)
        self.counters.frozen_s += seconds

    async def follow_consensus(self, sub: Any) -> None:
        """Track the chain's height from the gossip we receive (and keep our queue drained)."""
        async for msg in sub:
            try:
                env = open_envelope(msg.data, self.chain_id)
            except DecodeError:
                continue
            body = env.body
            if isinstance(body, (Vote, Proposal)) and body.height >= self.height:
                if body.height > self.height:
                    self.round = 0
                self.height, self.round = body.height, max(self.round, body.round)
            elif isinstance(body, Status):
                self.height = max(self.height, body.height + 1)

    async def drain(self, sub: Any) -> None:
        async for _ in sub:
            pass


@asynccontextmanager
async def open_attacker(
    key: Keypair, chain_id: str, targets: list[str], listen: str = "/ip4/127.0.0.1/tcp/0"
) -> AsyncIterator[Attacker]:
    """A started attacker connected to every target (`/ip4/.../p2p/<id>`), subscribed
    to our topics and following the consensus topic."""
    load_all()
    host = new_host(key_pair=libp2p_keypair(key))
    router = GossipSub(
        protocols=[TProtocol(PROTOCOL_ID_V11), TProtocol(PROTOCOL_ID)],
        degree=6, degree_low=4, degree_high=12,
        heartbeat_initial_delay=0.1, heartbeat_interval=1,
        spam_protection_enabled=False,
    )
    pubsub = Pubsub(host, router)
    async with background_trio_service(pubsub), background_trio_service(router), \
            host.run([multiaddr.Multiaddr(listen)]):
        attacker = Attacker(key, chain_id, host, pubsub)
        await pubsub.wait_until_ready()
        async with trio.open_nursery() as nursery:
            for topic in TOPICS:
                sub = await pubsub.subscribe(topic)
                nursery.start_soon(attacker.follow_consensus if topic == TOPIC_CONSENSUS else attacker.drain,
                                   sub)
            infos = [info_from_p2p_addr(multiaddr.Multiaddr(addr)) for addr in targets]
            attacker.victims = [info.peer_id for info in infos]
            await _dial_all(host, infos)
            nursery.start_soon(_keep_dialing, host, infos)
            try:
                yield attacker
            finally:
                nursery.cancel_scope.cancel()
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await host.close()


async def _dial_all(host: IHost, infos: list[PeerInfo]) -> None:
    connected = set(host.get_connected_peers())
    for info in infos:
        if info.peer_id not in connected:
            with contextlib.suppress(Exception), trio.move_on_after(STREAM_TIMEOUT_S):
                await host.connect(info)


async def _keep_dialing(host: IHost, infos: list[PeerInfo]) -> None:
    while True:
        await trio.sleep(REDIAL_S)
        await _dial_all(host, infos)
