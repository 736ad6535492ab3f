"""The py-libp2p host: TCP, Noise, yamux, keyed by the node's own ed25519 seed.

DESIGN.md wants one key per node, so the libp2p host key is built from the same 32-byte
seed as the protocol signing key; the libp2p peer id then equals
`protocol.identity.node_id(public)` and a peer id seen on a connection names the same
party as an envelope sender. Only Noise and yamux are offered: the library's defaults
also offer TLS, secio and plaintext, and plaintext would let a peer claim any id.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

import multiaddr
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.crypto.keys import KeyPair as Libp2pKeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.rcmgr import new_resource_manager
from libp2p.rcmgr.connection_limits import ConnectionLimits
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from node.transport.errors import ListenFailed
from protocol.errors import ConfigError
from protocol.identity import Keypair, node_id, public_key_from_node_id

#: Seconds a multistream-select negotiation may take before the stream is dropped.
NEGOTIATE_TIMEOUT_S = 10
#: How long the "is anyone listening on our port" probe waits for an answer.
PORT_PROBE_TIMEOUT_S = 1.0
#: Connection caps, stated here rather than inherited: a node keeps a mesh of ~6 peers
#: per topic plus bootstrap and sync peers, so these leave ample room while bounding
#: what a flood of dialers can make it hold.
CONNECTION_LIMITS = ConnectionLimits(
    max_pending_inbound=64,
    max_pending_outbound=64,
    max_established_inbound=128,
    max_established_outbound=128,
    max_established_per_peer=4,
    max_established_total=256,
)


def libp2p_keypair(key: Keypair) -> Libp2pKeyPair:
    """The libp2p form of our key (same seed, so the same public key and peer id)."""
    private = Ed25519PrivateKey.from_bytes(key.seed())
    return Libp2pKeyPair(private, private.get_public_key())


def peer_id_of(public_key: bytes) -> ID:
    """The libp2p peer id of an ed25519 public key (a ledger or envelope identity)."""
    return ID.from_base58(node_id(public_key))


def public_key_of(peer: ID) -> bytes:
    """Inverse of `peer_id_of`; raises Malformed for non-ed25519 peer ids."""
    return public_key_from_node_id(peer.to_base58())


def build_host(key: Keypair) -> IHost:
    """A host that speaks only Noise + yamux over TCP, identified by `key`."""
    kp = libp2p_keypair(key)
    noise = NoiseTransport(kp, noise_privkey=create_x25519_key_pair().private_key)
    return new_host(
        key_pair=kp,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        enable_mDNS=False,
        enable_upnp=False,
        negotiate_timeout=NEGOTIATE_TIMEOUT_S,
        resource_manager=new_resource_manager(connection_limits=CONNECTION_LIMITS),
    )


def ensure_port_free(host: str, port: int) -> None:
    """Refuse a port another process already listens on. py-libp2p 0.8.1 listens (and
    dials out from its listen port) with SO_REUSEPORT, for hole punching, so a second
    node on the same port would bind "successfully" and the kernel would split inbound
    connections between the two. A bind probe cannot tell that apart from the
    half-closed connections a crashed predecessor leaves on the port, so probe the way
    a peer would: if something accepts a connection there, the port is taken."""
    if port == 0:
        return
    target = "127.0.0.1" if host in ("0.0.0.0", "") else host
    try:
        with socket.create_connection((target, port), timeout=PORT_PROBE_TIMEOUT_S):
            pass
    except OSError:
        return  # refused (or unreachable): nobody is listening
    raise ListenFailed(f"cannot listen on {host}:{port}: another process is listening there")


def tcp_listen_addr(host: str, port: int) -> multiaddr.Multiaddr:
    return multiaddr.Multiaddr(f"/ip4/{host}/tcp/{port}")


def parse_peer_addr(text: str) -> PeerInfo:
    """A bootstrap entry: `/ip4/H/tcp/P/p2p/<peer id>`; bad entries are config errors."""
    try:
        return info_from_p2p_addr(multiaddr.Multiaddr(text))
    except Exception as exc:  # multiaddr raises a zoo of types for bad text
        raise ConfigError(f"bad peer address {text!r}: {exc}") from exc


def full_addrs(host: IHost) -> Sequence[str]:
    """Dialable addresses including our peer id, as operators paste them into configs."""
    pid = host.get_id().to_base58()
    out = []
    for addr in host.get_addrs():
        text = str(addr)
        out.append(text if "/p2p/" in text else f"{text}/p2p/{pid}")
    return out
