"""Gossip message identity that survives restarts and lets a node re-send a message.

Two py-libp2p 0.8.1 behaviours stalled restarted networks (docs/transport.md,
"Restarts"; measured in /work/shared/findings/restart-liveness.md):

- `Pubsub` starts its per-publisher sequence number at `int(time.time())` and adds one
  per message, so a node that published more than one message a second restarts with
  sequence numbers its peers have already seen from it; gossipsub's equivocation check
  (same origin and seqno, other content) then penalises it by 100 and our transport
  bans it. We start the counter at the wall clock in *nanoseconds* instead: a node
  cannot publish more than one message per nanosecond of uptime, so after a restart its
  first seqno is above every one it used before (unless the clock steps back by more
  than its previous uptime).
- With content-addressed message ids (SHA-256 of the bytes) a re-sent envelope has the
  id of the first send, and `Pubsub.push_msg` drops a message whose id is in its
  seen-cache, *its own publishes included*; that cache renews an entry's expiry on every
  lookup, so a vote re-sent every 2 s by a stuck validator never left the process. Our
  envelopes are deterministic (a vote re-signed is byte-identical), so every re-broadcast
  of consensus, every Status and every re-gossiped own transaction was silently dropped.
  The id is therefore the publication's (origin, seqno), as in the libp2p spec's default:
  relays of one publication share it (so loops are still cut), and each re-publication
  is a new message. Duplicates reaching the core are cheap (the consensus core and the
  mempool deduplicate), and only the origin, who signs the libp2p message, can mint new
  ids, at the rate our per-forwarder token bucket allows.
"""

from __future__ import annotations

import time

from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub

#: libp2p sequence numbers are 8 bytes big-endian; ns since 1970 fit until 2262.
SEQNO_BYTES = 8


def publication_id(msg: rpc_pb2.Message) -> bytes:
    """The message id: origin peer id and its sequence number (one per publication)."""
    return bytes(msg.from_id) + bytes(msg.seqno)


def restart_safe_seqnos(pubsub: Pubsub, now_ns: int | None = None) -> None:
    """Start `pubsub`'s sequence numbers above any a previous run of this node used."""
    start = time.time_ns() if now_ns is None else now_ns
    if start >= 1 << (8 * SEQNO_BYTES):
        raise OverflowError("wall clock beyond the 8-byte seqno range")
    pubsub.counter = max(pubsub.counter, start)
