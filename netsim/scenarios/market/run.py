"""Running a market simulation: the watcher that reads the committed market as it goes,
`run_market` (what `polnet demo` calls) and the registered netsim scenario "market"
(`polnet sim run --scenario market --seed N --config JSON`; knobs in
`SimConfig.params`, see `MarketConfig.from_params`)."""

from __future__ import annotations

import time
from collections.abc import Callable

from netsim.checks import Check
from netsim.config import SimConfig
from netsim.registry import Scenario, register_scenario
from netsim.scenarios.market.build import Built, MarketConfig, build
from netsim.scenarios.market.crew import probe_links
from netsim.scenarios.market.report import MarketProgress, MarketReport, progress, report
from netsim.sim import Sim
from protocol.market.node import MarketNode
from protocol.market.process import task_id_of
from protocol.market.state import TERMINAL, MarketState, Task


class Watch:
    """Reads one validator's committed market: progress events, early stop, the report."""

    def __init__(self, built: Built, on_progress: Callable[[MarketProgress], None] | None) -> None:
        self.built = built
        self.on_progress = on_progress
        self.observer = built.layout.validators[0]
        subs = built.layout.submitters
        self.expected = {task_id_of(built.layout.keys[subs[j % len(subs)]].public, tx)
                         for j, tx in enumerate(built.submits)}
        self.ended: dict[bytes, Task] = {}
        self.ended_at: dict[bytes, int] = {}
        self.last_height = 0
        self.stopped_at = -1

    def market(self, sim: Sim) -> MarketState | None:
        core = sim.core(self.observer)
        return core.market if isinstance(core, MarketNode) else None

    def tick(self, sim: Sim) -> None:
        market = self.market(sim)
        if market is not None:
            self.record(market)
            if self.on_progress is not None:
                self.on_progress(progress(market, sim.now, self.built.stake))
        if len(self.ended) == len(self.expected):
            self.stopped_at = sim.now
            sim.stop()
            return
        sim.call_at(sim.now + self.built.cfg.progress_ms, self.tick)

    def record(self, market: MarketState) -> None:
        self.last_height = market.height
        for tid in self.expected:
            task = market.tasks.get(tid)
            if task is not None and task.status in TERMINAL and tid not in self.ended:
                self.ended[tid] = task
                self.ended_at[tid] = market.height


def run_market(
    config: MarketConfig, on_progress: Callable[[MarketProgress], None] | None = None
) -> MarketReport:
    """Run one market simulation on the real stack and report what happened."""
    built = build(config)
    watch = Watch(built, on_progress)
    sim = Sim(built.sim_config, built.factory, executor=built.compute)
    built.compute.sim = sim
    sim.call_at(config.progress_ms, watch.tick)
    start_probes(built, sim)
    wall0 = time.perf_counter()
    sim.run()
    wall = time.perf_counter() - wall0
    return report(built, watch, sim, wall)


def start_probes(built: Built, sim: Sim) -> None:
    """Crew workloads measure links (their placement reads them); the others draw and
    send exactly what they did before."""
    if built.cfg.workload == "crew":
        sim.call_at(0, probe_links(built))


# --- the registered netsim scenario -------------------------------------------------------------


def _scenario(config: SimConfig) -> Scenario:
    cfg = MarketConfig.from_params(config.seed, config.nodes, dict(config.params))
    built = build(cfg, config)
    watch = Watch(built, None)

    def setup(sim: Sim) -> None:
        built.compute.sim = sim
        sim.call_at(cfg.progress_ms, watch.tick)
        start_probes(built, sim)

    def all_ended(sim: Sim) -> None:
        market = watch.market(sim)
        if market is not None:
            watch.record(market)
        missing = len(watch.expected) - len(watch.ended)
        if missing:
            raise AssertionError(f"{missing} market tasks did not end")

    return Scenario(built.factory, [Check(all_ended, final=True)], built.compute, setup)


register_scenario("market", _scenario)
