"""GossipSub with every parameter chosen here, and the validator that guards forwarding.

py-libp2p 0.8.1's defaults are wrong for us in ways that silently drop traffic: a
120 s heartbeat (meshes take minutes to form), a 10 msg/s per-peer-per-topic spam
limiter that also counts our *own* publishes, "adaptive gossip" that shrinks the mesh
and stretches the heartbeat when it thinks the network is unhealthy, and an eclipse
guard that wants three distinct IPs in every mesh (a loopback swarm has one). So no
parameter is left to the library: the limiter is replaced by a per-forwarder token
bucket inside our validator, adaptive gossip and the IP-diversity guard are off, and
peer scoring is configured so that a peer whose messages fail validation first loses
the right to have its messages looked at (publish threshold) and then the connection
(ban threshold, enforced by `Transport`).

The validator runs `protocol.envelope.open_envelope` (size, shape, version, chain,
type, schema, then signature) before the message is delivered or forwarded. The
verified envelope is cached by content hash so the subscription reader does not
decode and verify a second time.

One override of the library (`GatedPubsub.push_msg`): py-libp2p 0.8.1 validators
return a bool, so a message can only be accepted or rejected, and a rejection is cached
by message id and charged to *every* peer that forwards the same bytes afterwards. For
"valid but over budget or useless here" (go-libp2p's ValidationIgnore) that would
punish honest relays for an attacker's messages. The gate runs first on each new
message (`EnvelopeValidator.gate`: per-forwarder rate, verify, per-type budgets,
relevance; node/transport/budgets.py) and can drop it quietly; everything else takes
the library's path unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import libp2p.pubsub.pubsub as _pubsub_module
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.io.exceptions import MessageTooLarge
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import DefaultMaxMessageSize
from libp2p.pubsub.score import ScoreParams, TopicScoreParams

from node.transport import hotspots
from node.transport.budgets import IGNORED_CACHE, MessageBudgets, TokenBucket
from node.transport.msgids import publication_id, restart_safe_seqnos
from protocol.commands import TOPICS
from protocol.consensus.relevance import Relevance
from protocol.encoding import sha256
from protocol.envelope import Envelope, open_envelope
from protocol.errors import DecodeError
from protocol.limits import MAX_MESSAGE_BYTES

#: py-libp2p (like go-libp2p) refuses to send or read a pubsub RPC over 1 MiB, silently
#: on the sending side; stock peers read with the same cap.
LIBP2P_MAX_RPC_BYTES = DefaultMaxMessageSize
#: Room for the RPC framing around one envelope (topic, from, seqno, key, signature,
#: the sender's signed peer record).
RPC_OVERHEAD_BYTES = 16 * 1024
#: The largest envelope we gossip; bigger ones are refused at publish instead of being
#: dropped on the floor by the library. Blobs carry anything larger.
MAX_GOSSIP_ENVELOPE_BYTES = min(MAX_MESSAGE_BYTES, LIBP2P_MAX_RPC_BYTES - RPC_OVERHEAD_BYTES)


@dataclass(frozen=True, slots=True)
class GossipConfig:
    """Every GossipSub and Pubsub knob, with the reason for each value."""

    # meshsub 1.1 (scoring) and 1.0 (stock peers). Not 1.2: py-libp2p 0.8.1 sends an
    # IDONTWANT RPC to every mesh peer for every message, whatever its size (go-libp2p
    # only for messages over 1 KiB); for our small votes and transactions that doubled
    # the CPU per delivered message (12-14 ms vs 6-7 ms, 6 hosts in one process).
    protocols: tuple[str, ...] = (PROTOCOL_ID_V11, PROTOCOL_ID)

    # Mesh degree: go-libp2p's D=6, Dlo=5, Dhi=12 keep delivery at ~log6(N) hops.
    degree: int = 6
    degree_low: int = 4
    degree_high: int = 12
    # Fanout entries for topics we publish on without subscribing expire after this.
    fanout_ttl_s: int = 60
    # IHAVE advertises the last `gossip_window` heartbeats of the `gossip_history` kept.
    gossip_window: int = 3
    gossip_history: int = 5
    # go-libp2p's 1 s heartbeat instead of the library's 120 s: meshes form in seconds.
    heartbeat_initial_delay_s: float = 0.1
    heartbeat_interval_s: int = 1
    direct_connect_initial_delay_s: float = 0.1
    direct_connect_interval_s: int = 30
    # Peer exchange off: peers come from config and reconnect, not from strangers' lists
    # (PX from a hostile peer is an eclipse vector).
    do_px: bool = False
    px_peers_count: int = 16
    prune_back_off_s: int = 60
    unsubscribe_back_off_s: int = 10
    max_idontwant_messages: int = 64
    # Off: adaptive gossip shrinks the mesh and stretches the heartbeat on its own idea
    # of network health; the built-in limiter is replaced by our token bucket.
    adaptive_gossip_enabled: bool = False
    spam_protection_enabled: bool = False
    library_rate_limit_per_topic: float = 1000.0
    # Off: wants >= N distinct IPs per mesh, meaningless on loopback and behind NAT.
    eclipse_protection_enabled: bool = False
    min_mesh_diversity_ips: int = 1
    max_pending_messages_per_peer: int = 100
    pending_messages_ttl_s: float = 30.0
    # Pubsub core.
    seen_ttl_s: int = 120
    seen_sweep_interval_s: int = 60
    max_concurrent_validators: int = 32
    validation_cache_ttl_s: int = 120
    validation_cache_size: int = 4096
    validation_timeout_s: float = 2.0
    max_subscriptions_per_rpc: int = 16
    max_subscriptions_per_peer: int = 16
    max_inbound_rpc_bytes: int = LIBP2P_MAX_RPC_BYTES
    # Our per-forwarder limiter (token bucket): sustained rate and burst.
    peer_msgs_per_s: float = 200.0
    peer_burst: float = 400.0
    # Scoring (see `score_params`).
    invalid_message_weight: float = 20.0
    invalid_message_decay: float = 0.99
    first_delivery_weight: float = 1.0
    first_delivery_cap: float = 50.0
    publish_threshold: float = -40.0
    gossip_threshold: float = -10.0
    graylist_threshold: float = -60.0
    # Below this the transport disconnects the peer and refuses it for `ban_s`. Not
    # below `publish_threshold`: past that gate a peer's messages are no longer
    # validated, so its score would stop falling.
    ban_threshold: float = -40.0
    ban_s: float = 60.0
    # Same-IP penalty off: every peer of a loopback swarm shares 127.0.0.1.
    ip_colocation_weight: float = 0.0
    ip_colocation_threshold: int = 10
    topics: tuple[str, ...] = field(default=TOPICS)


def score_params(cfg: GossipConfig, app_score: Callable[[ID], float]) -> ScoreParams:
    """Peer-score weights. Invalid messages dominate: with weight 20 and publish and
    ban thresholds of -40, a fresh peer's third invalid message gets its further
    messages dropped unread and the peer banned. Credit for first deliveries (capped
    at 50) buys a long-standing honest peer room for a few mistakes."""
    return ScoreParams(
        p1_time_in_mesh=TopicScoreParams(weight=0.1, cap=10.0, decay=0.99),
        p2_first_message_deliveries=TopicScoreParams(
            weight=cfg.first_delivery_weight, cap=cfg.first_delivery_cap, decay=0.9
        ),
        # The library adds (not subtracts) mesh deliveries; no deficit penalty exists.
        p3_mesh_message_deliveries=TopicScoreParams(weight=0.0, cap=0.0, decay=0.9),
        p4_invalid_messages=TopicScoreParams(
            weight=cfg.invalid_message_weight, cap=1000.0, decay=cfg.invalid_message_decay
        ),
        p5_behavior_penalty_weight=1.0,
        p5_behavior_penalty_decay=0.9,
        p5_behavior_penalty_threshold=0.0,
        p6_appl_slack_weight=1.0,
        p6_appl_slack_decay=0.99,
        p7_ip_colocation_weight=cfg.ip_colocation_weight,
        p7_ip_colocation_threshold=cfg.ip_colocation_threshold,
        publish_threshold=cfg.publish_threshold,
        gossip_threshold=cfg.gossip_threshold,
        graylist_threshold=cfg.graylist_threshold,
        accept_px_threshold=math.inf if not cfg.do_px else 0.0,
        app_specific_score_fn=app_score,
    )


def build_router(cfg: GossipConfig, app_score: Callable[[ID], float]) -> GossipSub:
    return GossipSub(
        protocols=[TProtocol(p) for p in cfg.protocols],
        degree=cfg.degree,
        degree_low=cfg.degree_low,
        degree_high=cfg.degree_high,
        direct_peers=None,
        time_to_live=cfg.fanout_ttl_s,
        gossip_window=cfg.gossip_window,
        gossip_history=cfg.gossip_history,
        heartbeat_initial_delay=cfg.heartbeat_initial_delay_s,
        heartbeat_interval=cfg.heartbeat_interval_s,
        direct_connect_initial_delay=cfg.direct_connect_initial_delay_s,
        direct_connect_interval=cfg.direct_connect_interval_s,
        do_px=cfg.do_px,
        px_peers_count=cfg.px_peers_count,
        prune_back_off=cfg.prune_back_off_s,
        unsubscribe_back_off=cfg.unsubscribe_back_off_s,
        score_params=score_params(cfg, app_score),
        max_idontwant_messages=cfg.max_idontwant_messages,
        adaptive_gossip_enabled=cfg.adaptive_gossip_enabled,
        spam_protection_enabled=cfg.spam_protection_enabled,
        max_messages_per_topic_per_second=cfg.library_rate_limit_per_topic,
        eclipse_protection_enabled=cfg.eclipse_protection_enabled,
        min_mesh_diversity_ips=cfg.min_mesh_diversity_ips,
        my_extensions=None,
        max_pending_messages_per_peer=cfg.max_pending_messages_per_peer,
        pending_messages_ttl=cfg.pending_messages_ttl_s,
    )


#: Which pubsub (and peer) the current task reads RPCs for: set by GatedPubsub's stream
#: handler, read by the size-cap wrapper below.
_reading: contextvars.ContextVar[tuple[GatedPubsub, ID] | None] = contextvars.ContextVar(
    "polnet_pubsub_reading", default=None
)
_library_read = getattr(_pubsub_module, "read_varint_prefixed_bytes_limited")


async def _read_rpc_reporting_oversize(reader: Any, max_length: int) -> bytes:
    """py-libp2p's RPC reader, telling the reading GatedPubsub who broke the size cap.
    Without this, a peer could send 2 MiB RPCs forever: each is read up to its length
    prefix, the stream reset, the peer re-registered, and nobody scored."""
    try:
        rpc: bytes = await _library_read(reader, max_length)
        return rpc
    except MessageTooLarge:
        current = _reading.get()
        if current is not None and current[0].on_oversized is not None:
            current[0].on_oversized(current[1])
        raise


class GatedPubsub(Pubsub):
    """py-libp2p's Pubsub with a gate in front of its message processing that may
    drop a new message without scoring anyone or caching it as invalid (see the
    module docstring). Messages from banned peers and duplicates skip the gate.

    Also fixes a race that let any peer we ban kill the node: `add_to_blacklist` runs
    `_teardown_if_connected`, which deletes the peer's entry *after* awaiting its
    stream reset; our ban also disconnects the peer, whose dead-peer handler removes
    the entry meanwhile, and the KeyError then ended the whole pubsub service (and the
    daemon with it; seen twice in one adversary run)."""

    gate: Callable[[ID, rpc_pb2.Message], bool] | None = None
    #: Called with a peer whose inbound RPC exceeded the size cap (the library only
    #: resets that stream, re-registers the peer at once, and reads the next one).
    on_oversized: Callable[[ID], None] | None = None

    async def stream_handler(self, stream: INetStream) -> None:
        token = _reading.set((self, stream.muxed_conn.peer_id))
        try:
            await super().stream_handler(stream)
        finally:
            _reading.reset(token)

    async def _teardown_if_connected(self, peer_id: ID) -> None:
        stream = self.peers.get(peer_id)
        if stream is not None:
            with contextlib.suppress(Exception):  # the peer may be gone already
                await stream.reset()
        if peer_id in self.peers:
            # The library's full cleanup (its version forgot the outbound queue and the
            # router's mesh entry); it does not re-open a stream to a blacklisted peer.
            self._handle_dead_peer(peer_id)
        self._forget_all_subscriptions(peer_id)

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        gate = self.gate
        if gate is not None and msg_forwarder != self.my_id:
            if self.is_peer_blacklisted(msg_forwarder):
                return
            if not self._is_msg_seen(msg) and not gate(msg_forwarder, msg):
                return
        await super().push_msg(msg_forwarder, msg)


def build_pubsub(host: IHost, router: GossipSub, cfg: GossipConfig) -> GatedPubsub:
    """Pubsub with per-publication message ids and sequence numbers that a restart does
    not reuse (node/transport/msgids.py says why), strict libp2p signing (what stock
    py-libp2p peers expect), and the library hot spots of node/transport/hotspots.py cut."""
    hotspots.install()
    setattr(_pubsub_module, "read_varint_prefixed_bytes_limited", _read_rpc_reporting_oversize)
    pubsub = GatedPubsub(
        host,
        router,
        cache_size=cfg.validation_cache_size,
        seen_ttl=cfg.seen_ttl_s,
        sweep_interval=cfg.seen_sweep_interval_s,
        strict_signing=True,
        msg_id_constructor=publication_id,
        max_concurrent_validator_count=cfg.max_concurrent_validators,
        validation_cache_ttl=cfg.validation_cache_ttl_s,
        validation_cache_size=cfg.validation_cache_size,
        validation_timeout=cfg.validation_timeout_s,
        max_subscriptions_per_rpc=cfg.max_subscriptions_per_rpc,
        max_subscriptions_per_peer=cfg.max_subscriptions_per_peer,
        max_inbound_rpc_size=cfg.max_inbound_rpc_bytes,
        allowed_topics=frozenset(cfg.topics),
    )
    restart_safe_seqnos(pubsub)
    return pubsub


@dataclass(slots=True)
class VerdictCounters:
    accepted: int = 0
    rejected: int = 0
    rate_limited: int = 0
    ignored: int = 0
    by_error: dict[str, int] = field(default_factory=dict)


class EnvelopeValidator:
    """The synchronous topic validator: libp2p calls it before delivering or forwarding.

    A False verdict makes py-libp2p drop the message and count an invalid message
    against the forwarding peer's score; `on_reject` lets the transport check whether
    that peer has now crossed the ban threshold.
    """

    def __init__(
        self,
        chain_id: str,
        cfg: GossipConfig,
        clock: Callable[[], float],
        on_reject: Callable[[ID, str], None],
        self_id: ID,
        cache_size: int = 4096,
        cache_bytes: int = 64 * 1024 * 1024,
        budgets: MessageBudgets | None = None,
    ) -> None:
        self._chain_id = chain_id
        self._self_id = self_id
        self._clock = clock
        self._on_reject = on_reject
        self._bucket = TokenBucket(cfg.peer_msgs_per_s, cfg.peer_burst)
        self._verified: OrderedDict[bytes, Envelope] = OrderedDict()
        # id -> why it was ignored (RELEVANT here means: over its sender's budget)
        self._ignored: OrderedDict[bytes, Relevance] = OrderedDict()
        self._cache_size = cache_size
        self._cache_bytes = cache_bytes
        self._cached_bytes = 0
        self.budgets = budgets
        self.counters = VerdictCounters()

    def gate(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """The pre-validation gate (GatedPubsub): False drops a new message quietly.
        An envelope that does not open passes here, so that the library's validator
        rejects it and scores the forwarder the usual way."""
        if forwarder == self._self_id or self.budgets is None:
            return True
        mid = sha256(msg.data)
        why = self._ignored.get(mid)
        if why is not None:
            if why is not Relevance.RELEVANT:  # useless bytes again: they count again
                self.budgets.useless(forwarder, why)
            return False
        if mid in self._verified:
            return True
        if not self.take_forwarder(forwarder):
            return False
        try:
            env = open_envelope(msg.data, self._chain_id)
        except DecodeError:
            return True
        verdict = self.budgets.judge(forwarder, env)
        if verdict is not None:
            self.counters.ignored += 1
            self._ignored[mid] = verdict
            if len(self._ignored) > IGNORED_CACHE:
                self._ignored.popitem(last=False)
            return False
        self._remember(env)
        return True

    def take_forwarder(self, forwarder: ID) -> bool:
        """Check 1 of node/transport/budgets.py: the connection's total rate."""
        if self._bucket.take(forwarder.to_bytes(), self._clock()):
            return True
        self.counters.rate_limited += 1
        if self.budgets is not None:
            self.budgets.over_forwarder_budget(forwarder)
        return False

    def __call__(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        if forwarder == self._self_id:
            return True  # our own publish: sealed by us a moment ago
        if self.budgets is not None and sha256(msg.data) in self._verified:
            self.counters.accepted += 1  # the gate verified it and took its budgets
            return True
        if not self._bucket.take(forwarder.to_bytes(), self._clock()):
            self.counters.rate_limited += 1
            self._reject(forwarder, "RateLimited")
            return False
        try:
            env = open_envelope(msg.data, self._chain_id)
        except DecodeError as exc:
            self._reject(forwarder, type(exc).__name__)
            return False
        self.counters.accepted += 1
        self._remember(env)
        return True

    def take_verified(self, data: bytes) -> Envelope | None:
        """The envelope the validator already opened for these bytes, if still cached."""
        env = self._verified.pop(sha256(data), None)
        if env is not None:
            self._cached_bytes -= len(env.raw)
        return env

    def _remember(self, env: Envelope) -> None:
        """Bounded by count and by bytes: validated messages that the library then
        drops (full subscription queue) are never taken, and each may be ~1 MiB."""
        old = self._verified.pop(env.message_id, None)
        if old is not None:
            self._cached_bytes -= len(old.raw)
        self._verified[env.message_id] = env
        self._cached_bytes += len(env.raw)
        while len(self._verified) > self._cache_size or self._cached_bytes > self._cache_bytes:
            _, evicted = self._verified.popitem(last=False)
            self._cached_bytes -= len(evicted.raw)

    def _reject(self, forwarder: ID, reason: str) -> None:
        self.counters.rejected += 1
        self.counters.by_error[reason] = self.counters.by_error.get(reason, 0) + 1
        self._on_reject(forwarder, reason)
