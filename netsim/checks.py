"""Invariant checkers: callables the simulator runs while a run goes on.

A checker is `fn(sim) -> None` that raises (AssertionError, or any exception) when a
property does not hold. Wrap it in `Check` to run it every N events instead of after
every event, or only once at the end (liveness: "every honest node reached height h").
The simulator turns a failure into InvariantViolation, whose message carries the seed,
the config and the last events of the trace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: A checker receives the running `netsim.sim.Sim`. Typed `Any` here so that this module
#: does not import the simulator that imports it (one direction of dependency only).
CheckFn = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Check:
    fn: CheckFn
    every: int = 1
    final: bool = False
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or getattr(self.fn, "__name__", repr(self.fn))


def as_check(item: Check | CheckFn) -> Check:
    return item if isinstance(item, Check) else Check(item)
