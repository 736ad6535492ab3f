"""Run configuration: a frozen dataclass tree, loadable from a TOML/JSON dict.

Everything that can change a run's trace is in here (plus the scenario's factory,
named by `scenario`), so that printing `to_json()` is enough to reproduce a failure.
Fields are validated in `__post_init__`, so a config built in Python is checked exactly
like one read from a file, and every SimConfigError names the offending field.

Units: times are integer milliseconds of virtual time, sizes are bytes, bandwidths
bytes per second (0 = unlimited), probabilities are floats in [0, 1].
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from dataclasses import dataclass, field
from typing import Any

from netsim.errors import SimConfigError
from netsim.faults import FaultAction, action_from_dict, action_to_dict, check_nodes

MAX_NODES = 4096
MAX_PARAMS = 64
MAX_DURATION_MS = 10 * 24 * 3600 * 1000
JITTER_DISTS = ("uniform", "exponential")
GOSSIP_MODES = ("direct", "relay")
PAUSE_MODES = ("queue", "drop")
NEMESIS_KINDS = ("partition", "isolate", "crash", "pause", "clog", "loss")
#: Byzantine validator strategies (netsim/byzantine/ implements each; docs/netsim.md).
BYZANTINE_STRATEGIES = (
    "silence",
    "crash",
    "amnesia",
    "equivocation",
    "late_proposal",
    "starvation",
    "future_spam",
    "invalid_blocks",
)
#: The ways an `invalid_blocks` proposer breaks a block or proposal rule, one per rule of
#: protocol/consensus/validation.py (netsim/byzantine/forge.py builds each).
INVALID_BLOCK_KINDS = (
    "wrong_proposer",
    "non_validator_proposer",
    "wrong_round",
    "wrong_height",
    "wrong_prev_hash",
    "time_before_previous",
    "time_far_ahead",
    "wrong_app_hash",
    "tx_root_mismatch",
    "evidence_root_mismatch",
    "oversize_txs",
    "missing_last_commit",
    "last_commit_hash_mismatch",
    "last_commit_other_block",
    "last_commit_below_quorum",
    "last_commit_bad_signature",
    "forged_evidence",
    "evidence_from_the_future",
    "duplicate_evidence",
    "evidence_of_a_non_validator",
    "unproven_valid_round",
)


def _require(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise SimConfigError(f"{where}: {what}")


def _prob(value: float, where: str) -> None:
    _require(0.0 <= value <= 1.0, where, f"must be a probability in [0, 1], got {value!r}")


def _nonneg(value: int, where: str) -> None:
    _require(value >= 0, where, f"must be >= 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class LinkOverride:
    """Different parameters for one directed link (a slow or lossy path)."""

    src: int
    dst: int
    latency_ms: int = 50
    jitter_ms: int = 10
    loss: float = 0.0
    duplicate: float = 0.0
    bandwidth_bps: int = 0

    def __post_init__(self) -> None:
        for name in ("src", "dst", "latency_ms", "jitter_ms", "bandwidth_bps"):
            _nonneg(getattr(self, name), f"network.links.{name}")
        _prob(self.loss, "network.links.loss")
        _prob(self.duplicate, "network.links.duplicate")


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """The default link between any two nodes, and per-link exceptions.

    Reordering is not a separate knob: every copy draws its own jitter, so two messages
    on one link arrive out of order whenever the later one draws less jitter.
    """

    latency_ms: int = 50
    jitter_ms: int = 10
    jitter_dist: str = "uniform"
    loss: float = 0.0
    duplicate: float = 0.0
    bandwidth_bps: int = 0
    links: tuple[LinkOverride, ...] = ()
    #: "direct": a Publish reaches every peer in one hop. "relay": each node forwards a
    #: message it sees for the first time to `gossip_degree` peers (gossipsub-like mesh).
    gossip: str = "direct"
    gossip_degree: int = 6
    #: Blob transfers (Fetch): bandwidth of the serving peer, and how long a fetch
    #: waits before answering None when no reachable peer holds the blob.
    blob_bandwidth_bps: int = 12_500_000
    fetch_timeout_ms: int = 5_000

    def __post_init__(self) -> None:
        for name in ("latency_ms", "jitter_ms", "bandwidth_bps", "blob_bandwidth_bps", "fetch_timeout_ms"):
            _nonneg(getattr(self, name), f"network.{name}")
        _prob(self.loss, "network.loss")
        _prob(self.duplicate, "network.duplicate")
        _require(self.jitter_dist in JITTER_DISTS, "network.jitter_dist", f"must be one of {JITTER_DISTS}")
        _require(self.gossip in GOSSIP_MODES, "network.gossip", f"must be one of {GOSSIP_MODES}")
        _require(self.gossip_degree >= 1, "network.gossip_degree", "must be >= 1")


@dataclass(frozen=True, slots=True)
class NemesisConfig:
    """A seeded generator of fault episodes for the safety phase (see netsim.nemesis).

    Episodes run one after another: a fault is applied, lasts `min_fault_ms` to
    `max_fault_ms`, is undone, and the next one starts after a gap drawn around
    `mean_gap_ms`. At most `max_faulty` nodes are down (crashed, paused or isolated) at
    once; -1 means (nodes - 1) // 3, the BFT bound.
    """

    kinds: tuple[str, ...] = NEMESIS_KINDS
    mean_gap_ms: int = 1_000
    min_fault_ms: int = 200
    max_fault_ms: int = 3_000
    max_faulty: int = -1
    targets: tuple[int, ...] = ()
    lose_unsynced: float = 0.5
    loss: float = 0.3

    def __post_init__(self) -> None:
        bad = [k for k in self.kinds if k not in NEMESIS_KINDS]
        _require(not bad, "nemesis.kinds", f"unknown kind(s) {bad}; known: {NEMESIS_KINDS}")
        _require(len(self.kinds) > 0, "nemesis.kinds", "must name at least one kind")
        _nonneg(self.mean_gap_ms, "nemesis.mean_gap_ms")
        _require(self.min_fault_ms >= 1, "nemesis.min_fault_ms", "must be >= 1")
        _require(self.max_fault_ms >= self.min_fault_ms, "nemesis.max_fault_ms", "must be >= min_fault_ms")
        _require(self.max_faulty >= -1, "nemesis.max_faulty", "must be >= 0, or -1 for (nodes-1)//3")
        _prob(self.lose_unsynced, "nemesis.lose_unsynced")
        _prob(self.loss, "nemesis.loss")


@dataclass(frozen=True, slots=True)
class ByzantineConfig:
    """Byzantine validators: which nodes run which strategy of netsim/byzantine/.

    The simulator wraps these nodes' cores, whatever the scenario, so any scenario that
    runs `ConsensusNode`s (alone or inside a `MarketNode`) can be given a coalition from
    its config file. The nodes act as one coalition (they share their plan); keep their
    power below 1/3 unless the run is a negative control.
    """

    strategy: str
    nodes: tuple[int, ...]
    #: late_proposal: the early group's copy leaves this long before the honest propose
    #: timeout (about the network's largest one-way delay, so it lands just in time).
    lead_ms: int = 60
    #: future_spam: one burst of messages for future rounds and heights per interval.
    spam_interval_ms: int = 200
    #: invalid_blocks: the kinds to cycle through (empty: every kind).
    kinds: tuple[str, ...] = ()
    #: starvation: the honest nodes that get nothing (empty: f validators by the seed).
    victims: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _require(
            self.strategy in BYZANTINE_STRATEGIES,
            "byzantine.strategy",
            f"must be one of {BYZANTINE_STRATEGIES}, got {self.strategy!r}",
        )
        _require(0 < len(self.nodes) <= MAX_NODES, "byzantine.nodes", "must name at least one node")
        _require(len(set(self.nodes)) == len(self.nodes), "byzantine.nodes", "a node is listed twice")
        _nonneg(self.lead_ms, "byzantine.lead_ms")
        _require(self.spam_interval_ms >= 1, "byzantine.spam_interval_ms", "must be >= 1")
        bad = [k for k in self.kinds if k not in INVALID_BLOCK_KINDS]
        _require(not bad, "byzantine.kinds", f"unknown kind(s) {bad}; known: {INVALID_BLOCK_KINDS}")
        _require(
            not set(self.victims) & set(self.nodes), "byzantine.victims", "a victim is a Byzantine node"
        )


@dataclass(frozen=True, slots=True)
class SimConfig:
    """One reproducible run: `seed` + this config + the scenario's factory = one trace."""

    seed: int = 0
    nodes: int = 4
    #: Safety phase: the fault plan and the nemesis act during [0, duration_ms).
    duration_ms: int = 10_000
    #: Liveness phase: at duration_ms every fault is healed (partitions, clogs, loss
    #: back to the config's, crashed nodes restarted, paused resumed); the run goes
    #: on this long so checkers can demand progress.
    liveness_ms: int = 0
    scenario: str = ""
    chain_id: str = "netsim"
    #: Node keys are Keypair.derive(f"{key_prefix}/{i}"): independent of the seed, so a
    #: scenario can build its genesis before the run.
    key_prefix: str = "netsim"
    network: NetworkConfig = field(default_factory=NetworkConfig)
    faults: tuple[FaultAction, ...] = ()
    nemesis: NemesisConfig | None = None
    #: Byzantine validators (netsim/byzantine/), in any scenario.
    byzantine: ByzantineConfig | None = None
    #: Advertised FLOPS of every node, or per node (len == nodes) in `flops`.
    node_flops: int = 10**12
    flops: tuple[int, ...] = ()
    #: While paused, a node either queues its input (bounded) or drops incoming messages.
    pause_mode: str = "queue"
    pause_queue_limit: int = 100_000
    disk_limit_bytes: int = 1 << 30
    #: Hard bound on handled events: a livelocked core fails the run instead of hanging.
    max_events: int = 20_000_000
    #: Hard bound on scheduled-but-not-yet-run events (the heap).
    max_pending: int = 5_000_000
    #: How many recent events a failure message lists.
    trace_tail: int = 24
    #: Scenario parameters (Byzantine count, tx rate...): scalars only. They live in the
    #: config so that the config printed by a failure is all it takes to replay it.
    params: dict[str, int | float | str | bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(1 <= self.nodes <= MAX_NODES, "nodes", f"must be in 1..{MAX_NODES}, got {self.nodes}")
        _require(0 <= self.seed < 2**64, "seed", "must be in 0..2**64-1")
        _require(0 < self.duration_ms <= MAX_DURATION_MS, "duration_ms", f"must be in 1..{MAX_DURATION_MS}")
        _require(0 <= self.liveness_ms <= MAX_DURATION_MS, "liveness_ms", f"must be in 0..{MAX_DURATION_MS}")
        _require(0 < len(self.chain_id) <= 64, "chain_id", "must be 1..64 characters")
        _require(self.node_flops > 0, "node_flops", "must be > 0")
        _require(
            self.flops == () or (len(self.flops) == self.nodes and min(self.flops) > 0),
            "flops",
            f"must be empty or {self.nodes} positive numbers",
        )
        _require(self.pause_mode in PAUSE_MODES, "pause_mode", f"must be one of {PAUSE_MODES}")
        for name in ("pause_queue_limit", "disk_limit_bytes", "max_events", "max_pending", "trace_tail"):
            _require(getattr(self, name) > 0, name, "must be > 0")
        for link in self.network.links:
            _require(max(link.src, link.dst) < self.nodes, "network.links", "node index out of range")
        for i, action in enumerate(self.faults):
            check_nodes(action, self.nodes, f"faults[{i}]")
            _require(action.at < self.duration_ms, f"faults[{i}].at", "must be inside the safety phase")
        _require(len(self.params) <= MAX_PARAMS, "params", f"at most {MAX_PARAMS} entries")
        for key, value in self.params.items():
            ok = isinstance(key, str) and 0 < len(key) <= 64 and type(value) in (int, float, str, bool)
            _require(ok, f"params.{key}", "must be a string, number or boolean under a short name")
        if self.nemesis is not None:
            bad = [t for t in self.nemesis.targets if not 0 <= t < self.nodes]
            _require(not bad, "nemesis.targets", f"node index {bad[:1]} out of range")
        if self.byzantine is not None:
            for name in ("nodes", "victims"):
                bad = [t for t in getattr(self.byzantine, name) if not 0 <= t < self.nodes]
                _require(not bad, f"byzantine.{name}", f"node index {bad[:1]} out of range")

    def param(self, name: str, default: Any) -> Any:
        """A scenario parameter, or `default` when the config does not set it."""
        return self.params.get(name, default)

    def flops_of(self, node: int) -> int:
        return self.flops[node] if self.flops else self.node_flops

    @property
    def end_ms(self) -> int:
        return self.duration_ms + self.liveness_ms

    # --- serialisation -------------------------------------------------------------------

    @classmethod
    def from_dict(cls, raw: Any) -> SimConfig:
        """Build from a parsed TOML/JSON document; unknown keys are errors, not ignored."""
        loaded: SimConfig = _load(cls, raw, "config")
        return loaded

    @classmethod
    def from_toml(cls, text: str) -> SimConfig:
        try:
            return cls.from_dict(tomllib.loads(text))
        except tomllib.TOMLDecodeError as exc:
            raise SimConfigError(f"config: invalid TOML: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> SimConfig:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise SimConfigError(f"config: invalid JSON: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _dump(self)
        return out

    def to_json(self) -> str:
        """Compact, key-sorted JSON: the form printed in failure messages."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def replace(self, **changes: Any) -> SimConfig:
        return dataclasses.replace(self, **changes)


# --- generic load/dump over the dataclass tree -----------------------------------------------


def _load(cls: type[Any], raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise SimConfigError(f"{where}: must be a table, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise SimConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {key: _coerce(raw[key], hints[key], f"{where}.{key}") for key in raw}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise SimConfigError(f"{where}: {exc}") from exc


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        _require(type(value) is bool, where, f"must be true or false, got {value!r}")
        return value
    if hint is int:
        _require(type(value) is int, where, f"must be an integer, got {value!r}")
        return value
    if hint is float:
        _require(type(value) in (int, float), where, f"must be a number, got {value!r}")
        return float(value)
    if hint is str:
        _require(type(value) is str, where, f"must be a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return _load(typing.cast(type[Any], hint), value, where)
    if origin is tuple:
        _require(isinstance(value, list | tuple), where, f"must be a list, got {type(value).__name__}")
        _require(len(value) <= MAX_NODES * 4, where, "list too long")
        if args[0] is FaultAction or typing.get_origin(args[0]) in (typing.Union, _UnionType):
            return tuple(action_from_dict(v, f"{where}[{i}]") for i, v in enumerate(value))
        return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        _require(isinstance(value, dict), where, f"must be a table, got {type(value).__name__}")
        return dict(value)
    if origin in (typing.Union, _UnionType):  # X | None
        inner = [a for a in args if a is not type(None)]
        return None if value is None else _coerce(value, inner[0], where)
    raise SimConfigError(f"{where}: unsupported config type {hint!r}")


_UnionType = type(int | None)


def _dump(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        if type(obj).__module__ == "netsim.faults":
            return action_to_dict(typing.cast(FaultAction, obj))
        return {
            f.name: _dump(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if getattr(obj, f.name) is not None
        }
    if isinstance(obj, tuple):
        return [_dump(v) for v in obj]
    if isinstance(obj, dict):
        return dict(sorted(obj.items()))
    return obj
