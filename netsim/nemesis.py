"""The seeded nemesis: random fault episodes for the safety phase.

TigerBeetle's VOPR splits a run into a safety phase, where the nemesis may do anything
the fault model allows and only safety invariants are checked, and a liveness phase,
where every fault is healed and the system must make progress. This module writes the
safety phase's plan; the simulator heals everything at `duration_ms` (see sim.py).

Episodes are sequential (one fault, then its undo, then a gap) so that the plan is easy
to read in a failure message and the number of faulty nodes is bounded by construction.
"""

from __future__ import annotations

import random

from netsim.config import NemesisConfig, SimConfig
from netsim.faults import (
    Clog,
    Crash,
    FaultAction,
    Heal,
    Isolate,
    Partition,
    Pause,
    Restart,
    Resume,
    SetLoss,
)
from netsim.rng import substream

#: Bound on episodes so a tiny mean gap cannot produce an unbounded plan.
MAX_EPISODES = 100_000


def max_faulty(config: SimConfig, nemesis: NemesisConfig) -> int:
    return (config.nodes - 1) // 3 if nemesis.max_faulty < 0 else nemesis.max_faulty


def generate(config: SimConfig) -> tuple[FaultAction, ...]:
    """The nemesis plan for `config` (empty without a nemesis); same seed, same plan."""
    nemesis = config.nemesis
    if nemesis is None:
        return ()
    rng = substream(config.seed, "nemesis")
    targets = list(nemesis.targets) or list(range(config.nodes))
    budget = min(max_faulty(config, nemesis), len(targets))
    plan: list[FaultAction] = []
    t = _gap(rng, nemesis)
    for _ in range(MAX_EPISODES):
        length = rng.randint(nemesis.min_fault_ms, nemesis.max_fault_ms)
        end = t + length
        if end >= config.duration_ms:
            break
        kind = rng.choice(nemesis.kinds)
        plan.extend(_episode(rng, kind, t, end, targets, budget, config, nemesis))
        t = end + _gap(rng, nemesis)
    return tuple(plan)


def _gap(rng: random.Random, nemesis: NemesisConfig) -> int:
    return 1 + int(rng.expovariate(1.0 / nemesis.mean_gap_ms)) if nemesis.mean_gap_ms else 1


def _episode(
    rng: random.Random,
    kind: str,
    start: int,
    end: int,
    targets: list[int],
    budget: int,
    config: SimConfig,
    nemesis: NemesisConfig,
) -> list[FaultAction]:
    if kind == "partition":
        nodes = list(range(config.nodes))
        rng.shuffle(nodes)
        cut = rng.randint(1, max(1, config.nodes - 1))
        return [Partition(start, (tuple(sorted(nodes[:cut])), tuple(sorted(nodes[cut:])))), Heal(end)]
    if kind == "clog":
        return [Clog(start, end - start, node=rng.choice(targets))]
    if kind == "loss":
        return [SetLoss(start, nemesis.loss), SetLoss(end, config.network.loss)]
    if budget == 0:
        return []
    victims = sorted(rng.sample(targets, rng.randint(1, budget)))
    if kind == "isolate":
        return [*(Isolate(start, v) for v in victims), Heal(end)]
    if kind == "pause":
        return [*(Pause(start, v) for v in victims), *(Resume(end, v) for v in victims)]
    crashes: list[FaultAction] = [Crash(start, v, rng.random() < nemesis.lose_unsynced) for v in victims]
    return [*crashes, *(Restart(end, v) for v in victims)]
