"""Peer discovery: peer exchange towards a target peer count, and blob-provider lookup.

Why: an operator gives a node one bootstrap address; that must be enough for it to find
every other node (a verifier bootstrapped to one node used to stay at `peers 1` for
good and could not fetch the proof it had to check). Protocol `/polnet/peers/1`, one
request per stream, both ways a varint-prefixed sealed envelope (protocol/peers.py):

- `PeerRequest(addrs, want)` -> `PeerList`: "here is where I listen; whom do you know?"
  The answer names connected peers with the addresses they announced to us.
- `ProviderQuery(digest, hops)` -> `ProviderList`: "who serves this blob?" A peer names
  itself if it holds the blob and, with hops left, asks its own peers (one hop, bounded
  fan-out and deadline), so a blob two hops away is found without a DHT.

Every round (each `interval_s` while below the target or still learning new peers,
`settled_interval_s` once at the target with nothing new)
the node asks a few connected peers for theirs and dials known, unconnected peers (with
per-peer backoff; banned peers never) until it has `target_peers` connections. What
peers say about third parties is hearsay: addresses are only dialed, and the dial
authenticates the remote key, so a lie costs a dial. Bounded everywhere: the peer book
(`max_known`, oldest unpinned first out), records per answer, concurrent answers, and
every exchange has a deadline.

py-libp2p 0.8.1 ships a Kademlia DHT (libp2p.kad_dht); it is not used: for the tens of
nodes a polnet network has, one exchange round reaches a full view, while the DHT adds
random walks and an unbounded provider store to a process that already spends most of
its CPU in libp2p (DESIGN.md: 5-10 ms per delivered message).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.utils.varint import encode_varint_prefixed

from node.transport.dialer import Backoff, BackoffConfig
from node.transport.direct import read_direct
from node.transport.host import peer_id_of, public_key_of
from protocol.envelope import seal
from protocol.errors import DecodeError, Malformed
from protocol.identity import Keypair
from protocol.peers import (
    MAX_ADDRS,
    MAX_PEER_RECORDS,
    MAX_PROVIDER_HOPS,
    MAX_PROVIDERS,
    PeerList,
    PeerRecord,
    PeerRequest,
    ProviderList,
    ProviderQuery,
)

log = logging.getLogger(__name__)

DISCOVERY_PROTOCOL = TProtocol("/polnet/peers/1")
#: A request or answer: 32 records of 4 addresses of 128 bytes, with room.
MAX_DISCOVERY_BYTES = 32 * 1024
_DIALABLE = ("ip4", "ip6", "dns4", "dns6")


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    #: Connections a node keeps dialing towards (gossipsub's mesh degree is 6; a few
    #: more keep the mesh whole when peers leave).
    target_peers: int = 8
    #: Peers remembered (with their addresses) at most.
    max_known: int = 256
    interval_s: float = 1.0
    settled_interval_s: float = 10.0
    #: Connected peers asked for their peers per round, and new peers dialed per round.
    ask_per_round: int = 3
    dial_per_round: int = 4
    timeout_s: float = 5.0
    #: Requests answered at once (all peers), and per peer.
    max_inflight: int = 16
    max_inflight_per_peer: int = 2
    #: A peer whose address failed this many dials in a row is forgotten (unless pinned).
    forget_after_failures: int = 5
    backoff: BackoffConfig = field(default_factory=lambda: BackoffConfig(initial_s=1.0, max_s=60.0))


class PeerBook:
    """Known peers and the addresses they announced, bounded; bootstrap peers are pinned."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._addrs: OrderedDict[ID, tuple[multiaddr.Multiaddr, ...]] = OrderedDict()
        self._pinned: set[ID] = set()
        self._failures: dict[ID, int] = {}

    def __len__(self) -> int:
        return len(self._addrs)

    def __contains__(self, peer: object) -> bool:
        return peer in self._addrs

    def learn(self, peer: ID, addrs: Sequence[multiaddr.Multiaddr], *, pinned: bool = False) -> None:
        if not addrs:
            return
        self._addrs[peer] = tuple(addrs)[:MAX_ADDRS]
        self._addrs.move_to_end(peer)
        if pinned:
            self._pinned.add(peer)
        while len(self._addrs) > self._capacity:
            victim = next((p for p in self._addrs if p not in self._pinned), None)
            if victim is None:
                break
            self.forget(victim)

    def addrs(self, peer: ID) -> tuple[multiaddr.Multiaddr, ...]:
        return self._addrs.get(peer, ())

    def peers(self) -> list[ID]:
        return list(self._addrs)

    def failed(self, peer: ID, limit: int) -> None:
        self._failures[peer] = self._failures.get(peer, 0) + 1
        if self._failures[peer] >= limit and peer not in self._pinned:
            self.forget(peer)

    def succeeded(self, peer: ID) -> None:
        self._failures.pop(peer, None)

    def forget(self, peer: ID) -> None:
        self._addrs.pop(peer, None)
        self._failures.pop(peer, None)
        self._pinned.discard(peer)


def parse_record(record: PeerRecord, observed_ip: str | None = None) -> tuple[ID, list[multiaddr.Multiaddr]]:
    """The peer id and the dialable addresses of a record; malformed addresses are
    dropped (Malformed if none is left). An unspecified host (0.0.0.0, ::) means "the
    address you see me at": it is replaced by `observed_ip` when known."""
    peer = peer_id_of(record.pubkey)
    out = []
    for text in record.addrs:
        addr = parse_addr(text, observed_ip)
        if addr is not None:
            out.append(addr)
    if not out:
        raise Malformed("peer record has no dialable address")
    return peer, out


def parse_addr(text: str, observed_ip: str | None = None) -> multiaddr.Multiaddr | None:
    """`/ip4|ip6|dns4|dns6/HOST/tcp/PORT` only (no peer id, relay or other parts)."""
    parts = text.split("/")
    if len(parts) != 5 or parts[0] or parts[1] not in _DIALABLE or parts[3] != "tcp":
        return None
    if not parts[4].isdigit() or not 0 < int(parts[4]) < 65536:
        return None
    host = parts[2]
    if parts[1] in ("ip4", "ip6"):
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return None
        if ip.is_unspecified:
            if observed_ip is None:
                return None
            host = observed_ip
            parts[1] = "ip6" if ":" in host else "ip4"
    try:
        return multiaddr.Multiaddr(f"/{parts[1]}/{host}/tcp/{parts[4]}")
    except Exception:  # multiaddr raises a zoo of types for bad text
        return None


def announced(host: IHost) -> tuple[str, ...]:
    """Our listen addresses as we announce them (without the /p2p part)."""
    out = []
    for addr in host.get_addrs():
        text = str(addr).split("/p2p/")[0]
        if parse_addr(text, "127.0.0.1") is not None:
            out.append(text)
    return tuple(out[:MAX_ADDRS])


class Discovery:
    """The peer-exchange service of one transport (a task of its nursery)."""

    def __init__(
        self,
        host: IHost,
        key: Keypair,
        chain_id: str,
        cfg: DiscoveryConfig,
        bootstrap: Sequence[PeerInfo],
        is_banned: Callable[[ID], bool],
        has_blob: Callable[[bytes], bool],
        rng: random.Random,
    ) -> None:
        self.host = host
        self._key = key
        self._chain_id = chain_id
        self.cfg = cfg
        self._me = host.get_id()
        self.book = PeerBook(cfg.max_known)
        for info in bootstrap:
            if info.peer_id != self._me:
                self.book.learn(info.peer_id, info.addrs, pinned=True)
        self._is_banned = is_banned
        self._has_blob = has_blob
        self._rng = rng
        self._backoff = Backoff(cfg.backoff, rng)
        self._inflight = 0
        self._inflight_by: dict[ID, int] = {}
        self.rounds = 0
        host.set_stream_handler(DISCOVERY_PROTOCOL, self.handle)

    # --- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            learned = await self.round()
            connected = len(self.host.get_connected_peers())
            # Settled: at the target and the last round taught us nobody new.
            settled = connected >= self.cfg.target_peers and not learned
            await trio.sleep(self.cfg.settled_interval_s if settled else self.cfg.interval_s)

    async def round(self) -> int:
        """Ask a few connected peers for theirs, then dial towards the target; returns
        how many peers we had not known before."""
        self.rounds += 1
        before = len(self.book)
        known = set(self.book.peers())
        connected = [p for p in self.host.get_connected_peers() if not self._is_banned(p)]
        asked = self._rng.sample(connected, min(len(connected), self.cfg.ask_per_round))
        async with trio.open_nursery() as nursery:
            for peer in asked:
                nursery.start_soon(self._ask_peers, peer)
        await self._dial_towards_target()
        return max(len(self.book) - before, len(set(self.book.peers()) - known))

    async def _ask_peers(self, peer: ID) -> None:
        body = await self._request(peer, PeerRequest(announced(self.host), MAX_PEER_RECORDS))
        if not isinstance(body, PeerList):
            return
        for record in body.peers:
            self._learn(record)

    def _learn(self, record: PeerRecord, observed_ip: str | None = None) -> ID | None:
        try:
            peer, addrs = parse_record(record, observed_ip)
        except DecodeError:
            return None
        if peer == self._me or self._is_banned(peer):
            return None
        self.book.learn(peer, addrs)
        return peer

    async def _dial_towards_target(self) -> None:
        connected = set(self.host.get_connected_peers())
        missing = self.cfg.target_peers - len(connected)
        if missing <= 0:
            return
        now = trio.current_time()
        candidates = [
            p for p in self.book.peers()
            if p not in connected and p != self._me and not self._is_banned(p) and self._backoff.due(p, now)
        ]
        self._rng.shuffle(candidates)
        async with trio.open_nursery() as nursery:
            for peer in candidates[: min(missing, self.cfg.dial_per_round)]:
                nursery.start_soon(self.dial, peer)

    async def dial_if_known(self, peer: ID) -> bool:
        """Dial a peer we are not connected to when we know an address for it and its
        backoff is due (so a dead address costs one dial timeout per backoff period)."""
        if peer in self.host.get_connected_peers():
            return True
        if peer not in self.book or self._is_banned(peer) or not self._backoff.due(peer, trio.current_time()):
            return False
        return await self.dial(peer)

    async def dial(self, peer: ID) -> bool:
        """Connect to a known peer (with its announced addresses); False on failure."""
        addrs = list(self.book.addrs(peer))
        if not addrs:
            return False
        try:
            with trio.fail_after(self.cfg.timeout_s):
                await self.host.connect(PeerInfo(peer, addrs))
        except Exception as exc:  # libp2p dial failures have no common base
            wait = self._backoff.failed(peer, trio.current_time())
            self.book.failed(peer, self.cfg.forget_after_failures)
            log.debug("discovery dial %s failed (%s); retry in %.1fs", peer, type(exc).__name__, wait)
            return False
        self._backoff.succeeded(peer)
        self.book.succeeded(peer)
        return True

    # --- blob providers -------------------------------------------------------------------------

    async def find_providers(self, digest: bytes, exclude: Sequence[ID] = ()) -> list[ID]:
        """Peers that say they serve `digest` (asked: every connected peer, who asks its
        own peers once), learned into the book so they can be dialed; `exclude` (peers
        already tried) are left out of the answer, not out of the asking."""
        skip = set(exclude) | {self._me}
        me = {self._me}
        return await self._gather_providers(digest, MAX_PROVIDER_HOPS, me, skip, None, self.cfg.timeout_s)

    async def _gather_providers(
        self,
        digest: bytes,
        hops: int,
        dont_ask: set[ID],
        skip: set[ID],
        records: list[PeerRecord] | None,
        deadline_s: float,
    ) -> list[ID]:
        peers = [p for p in self.host.get_connected_peers() if p not in dont_ask and not self._is_banned(p)]
        self._rng.shuffle(peers)
        found: list[ID] = []
        answers: list[PeerRecord] = []

        async def ask(peer: ID) -> None:
            body = await self._request(peer, ProviderQuery(digest, hops))
            if isinstance(body, ProviderList) and body.digest == digest:
                answers.extend(body.providers[:MAX_PROVIDERS])

        with trio.move_on_after(deadline_s):
            async with trio.open_nursery() as nursery:
                for peer in peers[:MAX_PEER_RECORDS]:
                    nursery.start_soon(ask, peer)
        for record in answers:
            who = self._learn(record)
            if who is not None and who not in skip and who not in found and len(found) < MAX_PROVIDERS:
                found.append(who)
                if records is not None:
                    records.append(record)
        return found

    # --- answering ------------------------------------------------------------------------------

    async def handle(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        busy = self._inflight >= self.cfg.max_inflight
        if busy or self._inflight_by.get(peer, 0) >= self.cfg.max_inflight_per_peer or self._is_banned(peer):
            await reset_quietly(stream)
            return
        self._inflight += 1
        self._inflight_by[peer] = self._inflight_by.get(peer, 0) + 1
        try:
            with trio.fail_after(self.cfg.timeout_s * 2):
                request = await _read(stream, self._chain_id)
                answer = await self._answer(peer, request, _observed_ip(stream))
                if answer is not None:
                    await stream.write(encode_varint_prefixed(seal(answer, self._key, self._chain_id)))
            await close_quietly(stream)
        except (DecodeError, trio.TooSlowError, BaseLibp2pError) as exc:
            log.debug("discovery request from %s refused: %s", peer, exc)
            await reset_quietly(stream)
        finally:
            self._inflight -= 1
            left = self._inflight_by.get(peer, 1) - 1
            if left:
                self._inflight_by[peer] = left
            else:
                self._inflight_by.pop(peer, None)

    async def _answer(self, peer: ID, body: Any, observed_ip: str | None) -> Any:
        if isinstance(body, PeerRequest):
            if body.addrs:
                self._learn(PeerRecord(public_key_of(peer), body.addrs), observed_ip)
            limit = min(body.want, MAX_PEER_RECORDS)
            return PeerList(tuple(self._records(exclude={peer, self._me}, limit=limit)))
        if isinstance(body, ProviderQuery):
            records: list[PeerRecord] = []
            mine = announced(self.host)
            if self._has_blob(body.digest) and mine:
                records.append(PeerRecord(self._key.public, mine))
            if body.hops > 0:
                hops = min(body.hops, MAX_PROVIDER_HOPS) - 1
                # Half our asker's deadline, so our answer still reaches it in time.
                skip = {peer, self._me}
                await self._gather_providers(body.digest, hops, skip, skip, records, self.cfg.timeout_s / 2)
            return ProviderList(body.digest, tuple(records[:MAX_PROVIDERS]))
        return None

    def _records(self, exclude: set[ID], limit: int) -> list[PeerRecord]:
        """Connected peers first (they are alive), then other known ones."""
        connected = set(self.host.get_connected_peers())
        known = self.book.peers()
        order = [p for p in known if p in connected] + [p for p in known if p not in connected]
        out = []
        for peer in order:
            if peer in exclude or self._is_banned(peer):
                continue
            addrs = tuple(str(a) for a in self.book.addrs(peer))[:MAX_ADDRS]
            try:
                out.append(PeerRecord(public_key_of(peer), addrs))
            except DecodeError:
                continue
            if len(out) >= limit:
                break
        return out

    # --- the client side of one exchange -----------------------------------------------------------

    async def _request(self, peer: ID, body: Any) -> Any:
        """Send one request, return the verified answer's body (None on any failure)."""
        stream: INetStream | None = None
        try:
            with trio.fail_after(self.cfg.timeout_s):
                stream = await self.host.new_stream(peer, [DISCOVERY_PROTOCOL])
                await stream.write(encode_varint_prefixed(seal(body, self._key, self._chain_id)))
                return await _read(stream, self._chain_id)
        except (DecodeError, trio.TooSlowError) as exc:
            log.debug("discovery exchange with %s failed: %s", peer, exc)
            return None
        except Exception as exc:  # libp2p stream failures have no common base
            log.debug("discovery exchange with %s failed: %s", peer, type(exc).__name__)
            return None
        finally:
            if stream is not None:
                await close_quietly(stream)


async def _read(stream: INetStream, chain_id: str) -> Any:
    return (await read_direct(stream, chain_id, MAX_DISCOVERY_BYTES, "discovery")).body


def _observed_ip(stream: INetStream) -> str | None:
    try:
        remote = stream.get_remote_address()
    except Exception:  # not every muxer knows it
        return None
    return None if remote is None else str(remote[0])


async def reset_quietly(stream: INetStream) -> None:
    """Reset a stream whose peer may already be gone (nothing to report then)."""
    with contextlib.suppress(Exception):
        await stream.reset()


async def close_quietly(stream: INetStream) -> None:
    """Close a stream whose peer may already be gone (nothing to report then)."""
    with contextlib.suppress(Exception):
        await stream.close()
