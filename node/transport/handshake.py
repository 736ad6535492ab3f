"""The chain handshake on the wire (protocol/handshake.py has the message and the rule).

Protocol `/polnet/handshake/1`: when a connection opens, each side opens a stream and
writes its varint-prefixed `ChainHello`; the other side reads it, answers with its own
and both compare. Doing it from both ends costs one more stream but needs no notion of
who dialed. A peer whose hello differs (another genesis under the same chain id, another
chain id, another handshake version) or is not a hello is refused: one warning naming
both values, then `on_refused` (the transport bans and disconnects it,
so it is not redialed until the ban expires, and a connection it opens again is dropped).

Until its hello arrives a fresh peer is treated like any other (gossip from it is
verified as always and consensus ignores votes of non-validators), which bounds what a
peer of another genesis can do to one round trip.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited
from multiaddr import Multiaddr

from protocol.errors import DecodeError
from protocol.handshake import ChainHello, hello_mismatch
from protocol.records import decode_record, encode_record

log = logging.getLogger("polnet.transport.handshake")

HANDSHAKE_PROTOCOL = TProtocol("/polnet/handshake/1")
#: A hello is ~100 bytes; anything longer is not one.
MAX_HELLO_BYTES = 512
#: A peer that has not completed the handshake by then is refused.
HANDSHAKE_TIMEOUT_S = 10.0
#: New connections waiting for their handshake; past this, the oldest wait (a flood of
#: dialers must not make the node open unbounded streams).
MAX_PENDING = 256
#: Handshakes in flight at once.
MAX_INFLIGHT = 32

Refuse = Callable[[ID, str], Awaitable[None]]


class Handshake:
    """Greets every new connection and refuses peers of another chain or genesis."""

    def __init__(
        self,
        host: IHost,
        hello: ChainHello,
        on_refused: Refuse,
        timeout_s: float = HANDSHAKE_TIMEOUT_S,
        is_banned: Callable[[ID], bool] = lambda _: False,
    ) -> None:
        self.host = host
        self._is_banned = is_banned
        self.hello = hello
        self._raw = encode_varint_prefixed(encode_record(hello))
        self._on_refused = on_refused
        self._timeout_s = timeout_s
        self.agreed: set[ID] = set()
        self._refusing: set[ID] = set()  # one refusal per connection, from either side
        self.refused_total = 0
        self._send, self._recv = trio.open_memory_channel[ID](MAX_PENDING)
        self._limit = trio.Semaphore(MAX_INFLIGHT)
        host.set_stream_handler(HANDSHAKE_PROTOCOL, self._on_stream)
        host.get_network().register_notifee(_Notifee(self))

    async def run(self) -> None:
        """Greet each new connection (runs until cancelled)."""
        async with trio.open_nursery() as nursery:
            async for peer in self._recv:
                # A refused peer that dials again is already banned: the transport hangs up
                # on it (its police loop), and it is not greeted or logged a second time.
                if peer not in self.agreed and not self._is_banned(peer):
                    await self._limit.acquire()
                    nursery.start_soon(self._greet, peer)

    def _connected(self, peer: ID) -> None:
        try:
            self._send.send_nowait(peer)
        except trio.WouldBlock:  # flooded: its connection stays unverified until it speaks
            log.debug("handshake queue full", extra={"peer": str(peer)})

    def _disconnected(self, peer: ID) -> None:
        if peer not in self.host.get_connected_peers():
            self.agreed.discard(peer)
            self._refusing.discard(peer)

    async def _greet(self, peer: ID) -> None:
        try:
            with trio.move_on_after(self._timeout_s) as scope:
                stream = await self.host.new_stream(peer, [HANDSHAKE_PROTOCOL])
                try:
                    await stream.write(self._raw)
                    theirs = await _read_hello(stream)
                finally:
                    await _close(stream)
            if scope.cancelled_caught:
                _unfinished(peer, f"no answer within {self._timeout_s:.0f} s")
                return
            await self._judge(peer, theirs)
        except DecodeError as exc:
            await self._refuse(peer, f"bad handshake: {exc}")
        except Exception as exc:  # libp2p stream failures have no common base
            _unfinished(peer, f"{type(exc).__name__}: {exc}")
        finally:
            self._limit.release()

    async def _on_stream(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        if self._is_banned(peer):
            await _close(stream)
            return
        try:
            with trio.fail_after(self._timeout_s):
                theirs = await _read_hello(stream)
                await stream.write(self._raw)
        except DecodeError as exc:
            await _close(stream)
            await self._refuse(peer, f"bad handshake: {exc}")
            return
        except Exception as exc:  # too slow, or gone mid-handshake: no verdict on it
            await _close(stream)
            _unfinished(peer, f"{type(exc).__name__}: {exc}")
            return
        await _close(stream)
        await self._judge(peer, theirs)

    async def _judge(self, peer: ID, theirs: ChainHello) -> None:
        reason = hello_mismatch(self.hello, theirs)
        if reason is None:
            self.agreed.add(peer)
            return
        await self._refuse(peer, reason)

    async def _refuse(self, peer: ID, reason: str) -> None:
        if peer in self._refusing:
            return
        self._refusing.add(peer)
        self.agreed.discard(peer)
        self.refused_total += 1
        log.warning(f"refusing peer: {reason}", extra={"peer": str(peer)})
        await self._on_refused(peer, reason)


def _unfinished(peer: ID, why: str) -> None:
    """A handshake that got no answer proves nothing about the peer (it may be busy, or
    gone): no refusal, no ban, which would cut an honest validator off for the ban time.
    Its other direction, or its next connection, decides."""
    log.info("handshake did not complete", extra={"peer": str(peer), "why": why})


async def _read_hello(stream: INetStream) -> ChainHello:
    try:
        raw = await read_varint_prefixed_bytes_limited(stream, MAX_HELLO_BYTES)
    except Exception as exc:  # too long, truncated, reset: none of them is a hello
        raise DecodeError(f"no valid hello ({type(exc).__name__})") from None
    return decode_record(ChainHello, raw)


async def _close(stream: INetStream) -> None:
    try:
        await stream.close()
    except Exception:  # the peer may already be gone
        return


class _Notifee(INotifee):
    """Tells the handshake about connections; never blocks the swarm's event path."""

    def __init__(self, handshake: Handshake) -> None:
        self._h = handshake

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._h._connected(conn.muxed_conn.peer_id)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._h._disconnected(conn.muxed_conn.peer_id)

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None
