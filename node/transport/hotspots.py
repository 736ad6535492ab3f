"""Three py-libp2p 0.8.1 hot spots, cut from our side (profiled under bench/transport.py's load).

A profile of one host in an 8-process swarm receiving 180 gossip messages showed the
library, not our decode + verify, spending the CPU:

1. **Message ids.** `get_content_addressed_msg_id` multibase-encodes the SHA-256 with
   a pure-Python big-integer base conversion (`baseconv`), about 0.9 ms per call, and
   pubsub asks for a message's id 3-4 times per received copy. Our id is
   node/transport/msgids.py's `publication_id` (origin + seqno as raw bytes: a byte
   concatenation, no hashing or text encoding; IHAVE and IWANT carry it as opaque
   bytes, which the library accepts), chosen there for restarts.
2. **Yamux window updates.** py-libp2p's yamux sends a WINDOW_UPDATE frame (a
   Noise-encrypted write) after nearly *every* read (its "partial slack" branch fires
   whenever any byte was consumed since the last update, and `PY_YAMUX_RELEASE_ON_READ`
   does the same for the rest), and pubsub reads each RPC's varint length prefix one
   byte per read: ~20 window updates per delivered message. Override:
   `batched_window_update` replaces `YamuxStream._auto_tune_and_send_window_update`
   with go-yamux's rule: credit consumed bytes and send one update once they reach
   half the receive window (with the library's own window auto-tuning). A sender can
   never stall on it: a full window buffered means at least half of it read.
3. **Signed peer records.** Every pubsub RPC carries the sender's signed peer record,
   and every received RPC re-verifies it (an ed25519 verify, a protobuf parse, and the
   peer's addresses cleared and re-added), while each sent RPC rebuilds the local
   host's address list to decide whether its own record is current. Override:
   `install()` wraps the two module-level functions the pubsub read and publish paths
   call (`maybe_consume_signed_record`, `env_to_send_in_RPC`) with caches that return
   exactly what the originals would: a record byte-identical to the one this peer
   sent last, accepted less than RECORD_RECHECK_S ago, is not verified again; our
   own record is rebuilt at most every LOCAL_RECORD_TTL_S. The originals still run on
   every first, changed or stale record.

`install()` is idempotent and process-wide (a stock host in the same process gets the
same caches and window rule, which change nothing it can observe: the wire protocol is
unchanged); tests/test_transport_interop.py keeps a stock host exchanging gossip with
ours, tests/test_transport_hotspots.py pins each override.
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import libp2p.pubsub.gossipsub as _gossipsub
import libp2p.pubsub.pubsub as _pubsub
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.stream_muxer.yamux.yamux import YamuxStream

#: How long a verified peer record is trusted before the same bytes are checked again.
RECORD_RECHECK_S = 60.0
#: How long our own signed peer record is reused before the address list is re-read.
LOCAL_RECORD_TTL_S = 5.0
#: Peers whose last record is remembered.
MAX_RECORDS = 4096



_installed = False
_original_consume: Callable[..., bool] = getattr(_pubsub, "maybe_consume_signed_record")
_original_env: Callable[..., tuple[bytes, bool]] = getattr(_pubsub, "env_to_send_in_RPC")
_verified: OrderedDict[tuple[bytes, bytes], float] = OrderedDict()  # (peer, record) -> when
_local: weakref.WeakKeyDictionary[Any, tuple[bytes, float]] = weakref.WeakKeyDictionary()


def cached_consume_signed_record(msg: rpc_pb2.RPC, host: IHost, peer_id: ID) -> bool:
    """`maybe_consume_signed_record`, skipping a record this peer sent us, byte for
    byte, and that passed less than RECORD_RECHECK_S ago."""
    if not msg.HasField("senderRecord"):
        return True
    key = (peer_id.to_bytes(), msg.senderRecord)
    now = time.monotonic()
    seen = _verified.get(key)
    if seen is not None and now - seen < RECORD_RECHECK_S:
        return True
    ok = _original_consume(msg, host, peer_id)
    if ok:
        _verified[key] = now
        _verified.move_to_end(key)
        while len(_verified) > MAX_RECORDS:
            _verified.popitem(last=False)
    return ok


def cached_env_to_send(host: IHost) -> tuple[bytes, bool]:
    """`env_to_send_in_RPC`, rebuilt at most every LOCAL_RECORD_TTL_S per host."""
    now = time.monotonic()
    hit = _local.get(host)
    if hit is not None and now - hit[1] < LOCAL_RECORD_TTL_S:
        return hit[0], False
    env, fresh = _original_env(host)
    _local[host] = (env, now)
    return env, fresh


async def batched_window_update(self: YamuxStream, *, bytes_read: int = 0) -> None:
    """go-yamux's receive-window rule (see the module docstring, item 2)."""
    async with self.window_lock:
        self._pending_recv_release += max(0, bytes_read)
        pending = self._pending_recv_release
        if pending <= 0 or pending < self.target_recv_window // 2:
            return
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        self.recv_window += pending
        self._pending_recv_release = 0
        delta = pending + self._apply_autotune_epoch(buffered)
    await self.send_window_update(delta, skip_lock=True)


def install() -> None:
    """Apply the yamux rule and the two caches (once per process)."""
    global _installed
    if _installed:
        return
    YamuxStream._auto_tune_and_send_window_update = batched_window_update  # type: ignore[method-assign]
    for mod in (_pubsub, _gossipsub):
        if hasattr(mod, "maybe_consume_signed_record"):
            setattr(mod, "maybe_consume_signed_record", cached_consume_signed_record)
        if hasattr(mod, "env_to_send_in_RPC"):
            setattr(mod, "env_to_send_in_RPC", cached_env_to_send)
    _installed = True
