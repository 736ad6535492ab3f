"""Named scenarios, so that a failure's printed config can be replayed from the CLI.

A failure prints `polnet sim run --scenario NAME --seed N --config JSON`; the config
holds every knob, but the factory and checkers are code. A scenario module registers a
builder under NAME that turns a SimConfig into those pieces; `replay(config)` looks the
builder up by `config.scenario` and runs it. Scenario modules register themselves on
import; `_SCENARIO_MODULES` lists where to look, as protocol.messages does for messages.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from netsim.checks import Check, CheckFn
from netsim.compute import Executor
from netsim.config import SimConfig
from netsim.errors import SimConfigError
from netsim.report import Report
from netsim.sim import Factory, Sim, run
from netsim.toys import CounterCore, FloodCore


@dataclass(frozen=True, slots=True)
class Scenario:
    """The code half of a run (the config is the data half)."""

    factory: Factory
    checks: Sequence[Check | CheckFn] = ()
    executor: Executor | None = None
    setup: Callable[[Sim], None] | None = None
    #: Scenario figures for `polnet sim run` to print after the run (heights, slashes...).
    summary: Callable[[], dict[str, Any]] | None = None


Builder = Callable[[SimConfig], Scenario]

_BUILDERS: dict[str, Builder] = {}

#: Modules that call `register_scenario` when imported; missing ones are skipped.
_SCENARIO_MODULES: tuple[str, ...] = (
    "netsim.scenarios.consensus",
    "netsim.scenarios.ledger",
    "netsim.scenarios.market",
    "netsim.scenarios.market_chaos",
)


def register_scenario(name: str, builder: Builder) -> None:
    _BUILDERS[name] = builder


def scenario_names() -> list[str]:
    _load_all()
    return sorted(_BUILDERS)


def build(config: SimConfig) -> Scenario:
    _load_all()
    builder = _BUILDERS.get(config.scenario)
    if builder is None:
        raise SimConfigError(f"scenario: unknown {config.scenario!r}; known: {sorted(_BUILDERS)}")
    return builder(config)


def replay(config: SimConfig) -> Report:
    """Run the scenario named by `config.scenario` under `config`."""
    return replay_with_summary(config)[0]


def replay_with_summary(config: SimConfig) -> tuple[Report, dict[str, Any]]:
    """`replay`, plus the scenario's own figures (what `polnet sim run` prints)."""
    scenario = build(config)
    report = run(config, scenario.factory, scenario.checks, executor=scenario.executor, setup=scenario.setup)
    return report, (scenario.summary() if scenario.summary is not None else {})


def _load_all() -> None:
    for module in _SCENARIO_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


# --- the toy scenarios, runnable before any subsystem registers its own ---------------------


def _flood(config: SimConfig) -> Scenario:
    interval, count = int(config.param("interval_ms", 100)), int(config.param("count", 10))
    return Scenario(lambda i, key, disk: FloodCore(i, interval, count))


def _counter(config: SimConfig) -> Scenario:
    interval = int(config.param("interval_ms", 100))
    return Scenario(lambda i, key, disk: CounterCore(disk, interval))


register_scenario("toy.flood", _flood)
register_scenario("toy.counter", _counter)
