"""What a run returns: counts, per-node stats, the trace hash and the timings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class NodeStats:
    """Counters for one node across all its incarnations."""

    handled: int = 0
    published: int = 0
    sent_direct: int = 0
    received: int = 0
    rejected: int = 0
    timers_fired: int = 0
    computes: int = 0
    compute_ms: int = 0
    fetches: int = 0
    persists: int = 0
    crashes: int = 0
    restarts: int = 0
    lost_writes: int = 0


@dataclass(slots=True)
class Counters:
    """Network-wide message accounting; `copies` is per recipient, before any fault."""

    published: int = 0
    direct: int = 0
    copies: int = 0
    delivered: int = 0
    rejected: int = 0
    duplicated: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


@dataclass(frozen=True, slots=True)
class LogRecord:
    time: int
    node: int
    level: str
    event: str
    fields: tuple[tuple[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Report:
    seed: int
    nodes: int
    virtual_ms: int
    wall_s: float
    events: int
    trace_hash: str
    counters: Counters
    per_node: tuple[NodeStats, ...]
    faults_applied: int
    logs: tuple[LogRecord, ...]
    logs_dropped: int

    @property
    def sim_s_per_wall_s(self) -> float:
        """Simulated seconds per wall second (wall time is measured, never used to decide)."""
        return (self.virtual_ms / 1000) / self.wall_s if self.wall_s > 0 else float("inf")

    @property
    def dropped(self) -> int:
        return sum(self.counters.dropped.values())

    def summary(self) -> str:
        c = self.counters
        drops = ", ".join(f"{k}={v}" for k, v in sorted(c.dropped.items())) or "none"
        return (
            f"seed={self.seed} nodes={self.nodes} virtual={self.virtual_ms}ms wall={self.wall_s:.3f}s "
            f"({self.sim_s_per_wall_s:.1f} sim-s/wall-s) events={self.events} published={c.published} "
            f"direct={c.direct} delivered={c.delivered} rejected={c.rejected} duplicated={c.duplicated} "
            f"dropped: {drops}; faults={self.faults_applied} trace={self.trace_hash[:16]}"
        )
