"""CometBFT-style perturbations of a running local network: kill -9 and restart, pause
(SIGSTOP) for a while, disconnect for a while.

A `Perturber` is a small state machine driven by `tick(now)` from whatever loop watches
the network (`polnet swarm up --perturb`, tests/test_adversary_perturb.py), so it never
blocks that loop: every `every_s` it starts the next fault of its list on the next
target in turn, and `down_s` later it heals it (restart, SIGCONT; a disconnect heals
itself: the node's isolation expires). Targets are anything with the `Target` methods,
so the CLI's swarm nodes and the test harness's daemons share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

KINDS = ("kill", "pause", "disconnect")


class Target(Protocol):
    index: int

    def kill(self) -> None:
        """SIGKILL the node's process (no goodbye to anyone)."""

    def restart(self) -> None:
        """Start the node again on its data dir (returns at once)."""

    def pause(self) -> None:
        """SIGSTOP it."""

    def resume(self) -> None:
        """SIGCONT it."""

    def isolate(self, seconds: float) -> None:
        """Make it drop and refuse every peer for `seconds`."""


@dataclass
class Fault:
    kind: str
    node: int
    started: float
    healed: float | None = None


@dataclass
class Perturber:
    targets: Sequence[Target]
    kinds: Sequence[str]
    every_s: float = 25.0
    down_s: float = 10.0
    start_after_s: float = 10.0
    #: Faults started at most this many times in all (then the network is left to recover).
    max_faults: int = 6
    log: list[Fault] = field(default_factory=list)
    _t0: float | None = None
    _active: Fault | None = None

    def __post_init__(self) -> None:
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ValueError(f"perturbations must be some of {', '.join(KINDS)}, got {list(self.kinds)}")
        if not self.targets:
            raise ValueError("no node to perturb")

    def tick(self, now: float) -> None:
        if self._t0 is None:
            self._t0 = now
        active = self._active
        if active is not None:
            if now - active.started >= self.down_s:
                self._heal(active, now)
            return
        n = len(self.log)
        if n >= self.max_faults:
            return
        if now - self._t0 >= self.start_after_s + n * self.every_s:
            kind = self.kinds[n % len(self.kinds)]
            target = self.targets[n % len(self.targets)]
            fault = Fault(kind, target.index, now)
            if kind == "kill":
                target.kill()
            elif kind == "pause":
                target.pause()
            else:
                target.isolate(self.down_s)
            self.log.append(fault)
            self._active = fault

    def _heal(self, fault: Fault, now: float) -> None:
        target = next(t for t in self.targets if t.index == fault.node)
        if fault.kind == "kill":
            target.restart()
        elif fault.kind == "pause":
            target.resume()
        fault.healed = now
        self._active = None

    def finish(self, now: float) -> None:
        """Heal whatever is still broken (before the final report)."""
        if self._active is not None:
            self._heal(self._active, now)

    @property
    def done(self) -> bool:
        return len(self.log) >= self.max_faults and self._active is None

    def report(self) -> list[dict[str, object]]:
        return [{"kind": f.kind, "node": f.node, "down_s": round((f.healed or f.started) - f.started, 1)}
                for f in self.log]
