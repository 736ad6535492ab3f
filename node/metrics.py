"""The node's Prometheus metrics, on a registry of its own.

A private `CollectorRegistry` (not the library's global one) so that several daemons in
one process (`polnet swarm up` for small N, tests) each report their own numbers.
Label values come from a closed set (topics, rejection reasons): an attacker who could
choose label values could grow the registry without bound.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from protocol import errors
from protocol.commands import TOPICS

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: Rejection reasons are folded into this closed set (error class names otherwise).
REJECT_REASONS = (
    "too_large",
    "malformed",
    "unknown_type",
    "wrong_chain",
    "unsupported_version",
    "bad_signature",
    "invalid",
    "replay",
    "internal",
    "gossip",
    "other",
)
OTHER_TOPIC = "other"
#: Outcomes of a queued direct send (node/daemon/peerqueue.py).
SEND_OUTCOMES = ("sent", "failed", "timed_out", "dropped")


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.peers = Gauge("polnet_peers", "Connected peers.", registry=r)
        self.height = Gauge("polnet_height", "Height of the last committed block.", registry=r)
        self.tasks = Gauge("polnet_tasks", "Tasks known to the ledger, by state.", ["state"], registry=r)
        self.stake = Gauge("polnet_stake", "This node's bonded stake.", registry=r)
        self.worker_stake = Gauge("polnet_worker_stake", "This node's stake as a market worker.", registry=r)
        self.validators = Gauge("polnet_validators", "Size of the current validator set.", registry=r)
        self.messages_in = Counter("polnet_messages_in", "Verified messages received.", ["topic"], registry=r)
        self.messages_out = Counter("polnet_messages_out", "Messages published.", ["topic"], registry=r)
        self.messages_rejected = Counter(
            "polnet_messages_rejected", "Messages refused, by reason.", ["reason"], registry=r
        )
        self.compute_jobs = Counter("polnet_compute_jobs", "Compute jobs finished.", ["outcome"], registry=r)
        self.command_errors = Counter(
            "polnet_command_errors", "Core commands the shell failed to execute.", ["command"], registry=r
        )
        self.direct_sends = Counter(
            "polnet_direct_sends", "Direct sends by outcome (sent, failed, timed_out, dropped).", ["outcome"],
            registry=r,
        )
        self.capacity_flops = Gauge("polnet_capacity_flops", "Measured matmul FLOPS.", registry=r)
        self.uptime_boots = Gauge("polnet_boots", "Times this data dir has been started.", registry=r)

    def message_in(self, topic: str) -> None:
        self.messages_in.labels(_topic(topic)).inc()

    def message_out(self, topic: str) -> None:
        self.messages_out.labels(_topic(topic)).inc()

    def direct_send(self, outcome: str) -> None:
        self.direct_sends.labels(outcome if outcome in SEND_OUTCOMES else "failed").inc()

    def rejected(self, reason: str) -> None:
        self.messages_rejected.labels(reason if reason in REJECT_REASONS else "other").inc()

    def render(self) -> bytes:
        out: bytes = generate_latest(self.registry)
        return out


def _topic(topic: str) -> str:
    return topic if topic in TOPICS else OTHER_TOPIC


def reject_reason(exc: BaseException) -> str:
    """Map an error to a metric label from the closed set."""
    table: tuple[tuple[type[BaseException], str], ...] = (
        (errors.MessageTooLarge, "too_large"),
        (errors.UnknownType, "unknown_type"),
        (errors.WrongChain, "wrong_chain"),
        (errors.UnsupportedVersion, "unsupported_version"),
        (errors.BadSignature, "bad_signature"),
        (errors.Malformed, "malformed"),
        (errors.ReplayError, "replay"),
        (errors.ValidationError, "invalid"),
    )
    for cls, reason in table:
        if isinstance(exc, cls):
            return reason
    return "other"
