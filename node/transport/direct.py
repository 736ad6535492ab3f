"""Direct (point-to-point) messages: block-sync answers, pinpoint moves.

Protocol `/polnet/direct/1`: the sender opens a stream, writes one varint-prefixed
sealed envelope and closes. The receiver caps the length before reading, opens the
envelope (same checks as gossip) and requires the signer to be the connected peer, so
a direct message is always first-hand.
"""

from __future__ import annotations

from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.io.exceptions import IncompleteReadError, MessageTooLarge
from libp2p.utils.varint import read_varint_prefixed_bytes_limited

from node.transport.host import public_key_of
from protocol.envelope import Envelope, open_envelope
from protocol.errors import BadSignature, Malformed
from protocol.limits import MAX_MESSAGE_BYTES

DIRECT_PROTOCOL = TProtocol("/polnet/direct/1")
#: The `topic` of a MessageReceived that came over a direct stream.
DIRECT_TOPIC = "polnet/direct/1"


async def read_direct(
    stream: INetStream, chain_id: str, max_bytes: int = MAX_MESSAGE_BYTES, what: str = "direct"
) -> Envelope:
    """Read and verify one varint-prefixed envelope signed by the connected peer, or raise
    the DecodeError that says why not (also the discovery protocol's reader)."""
    try:
        raw = await read_varint_prefixed_bytes_limited(stream, max_bytes)
    except MessageTooLarge as exc:
        raise Malformed(f"{what} message over {max_bytes} bytes") from exc
    except (IncompleteReadError, BaseLibp2pError) as exc:
        raise Malformed(f"{what} stream ended early: {exc}") from exc
    env = open_envelope(raw, chain_id)
    if env.sender != public_key_of(stream.muxed_conn.peer_id):
        raise BadSignature(f"{what} message signed by someone other than the connected peer")
    return env

