"""The Byzantine consensus sweep: every strategy against the crash reference, same seeds.

Issue 17's measure of liveness under Byzantine validators: n = 4, 7, 10 equal
validators, f = (n-1)//3 of them Byzantine (the same f, chosen by the seed, in every run
of that seed), a 40 +- 20 ms network with and without 2% loss, the real ConsensusNode.
A strategy's liveness is the heights the honest validators committed (the lowest of
them: a node the coalition starved counts too) divided by the heights they commit when
the same f validators are simply crashed. Safety is absolute: no fork, no committed
evidence against an honest validator, no forged invalid block committed.

Used by tests/test_consensus_byzantine_sweep.py (a few seeds, slow suite) and
bench/byzantine.py (the wide sweep).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

from netsim import NetworkConfig, Sim
from netsim.config import BYZANTINE_STRATEGIES, ByzantineConfig
from netsim.errors import InvariantViolation
from netsim.rng import substream
from netsim.scenarios.consensus import (
    ConsensusScenario,
    Observations,
    forged_commits,
    honest_nodes,
    honest_slashes,
    run_scenario,
)

#: 40 +- 20 ms one way: 20 ms plus uniform jitter in [0, 40].
NETWORK = NetworkConfig(latency_ms=20, jitter_ms=40)
LOSSES = (0.0, 0.02)
SIZES = (4, 7, 10)
#: Every strategy but the reference itself.
STRATEGIES = tuple(s for s in BYZANTINE_STRATEGIES if s != "crash")
REFERENCE = "crash"
#: Liveness target: committed heights >= this fraction of the crash reference's.
TARGET = 0.7


def faulty(n: int) -> int:
    return (n - 1) // 3


def members(n: int, seed: int) -> tuple[int, ...]:
    """The f Byzantine validators of seed `seed` (the same for every strategy)."""
    return tuple(sorted(substream(seed, "byzantine/members").sample(range(n), faulty(n))))


def scenario(n: int, strategy: str, seed: int, loss: float, duration_ms: int) -> ConsensusScenario:
    byz = ByzantineConfig(strategy=strategy, nodes=members(n, seed))
    return ConsensusScenario(seed=seed, powers=(1,) * n, duration_ms=duration_ms,
                             network=replace(NETWORK, loss=loss), byzantine=byz)


@dataclass(frozen=True)
class Case:
    n: int
    strategy: str
    seed: int
    loss: float
    heights: int  # the lowest honest validator's committed height
    forks: int
    honest_slashed: int
    forged_committed: int
    wall_s: float
    failure: str = ""


def run_case(n: int, strategy: str, seed: int, loss: float, duration_ms: int) -> Case:
    """One run; a safety violation is counted (and its message kept), not raised."""
    sc = scenario(n, strategy, seed, loss, duration_ms)
    obs = Observations()
    sims: list[Sim] = []
    t0 = time.perf_counter()
    failure, forks = "", 0
    try:
        run_scenario(sc, setup=sims.append, obs=obs)
    except InvariantViolation as exc:
        failure = str(exc).splitlines()[0]
        forks = int("different blocks" in failure or "disagree" in failure)
    honest = honest_nodes(sc)
    return Case(
        n=n, strategy=strategy, seed=seed, loss=loss,
        heights=min(obs.height_of(i) for i in honest),
        forks=forks,
        honest_slashed=len({v for _, v in honest_slashes(sc, obs)}),
        forged_committed=forged_commits(obs, sims[0], honest) if sims else 0,
        wall_s=time.perf_counter() - t0,
        failure=failure,
    )


@dataclass(frozen=True)
class Ratio:
    """One strategy on one (n, seed, loss) against the crash reference."""

    case: Case
    reference: Case

    @property
    def value(self) -> float:
        return self.case.heights / max(1, self.reference.heights)


def sweep(
    sizes: Iterable[int], seeds: Iterable[int], losses: Iterable[float], strategies: Iterable[str],
    duration_ms: int,
) -> list[Ratio]:
    out: list[Ratio] = []
    for n in sizes:
        for loss in losses:
            for seed in seeds:
                ref = run_case(n, REFERENCE, seed, loss, duration_ms)
                out += [Ratio(run_case(n, s, seed, loss, duration_ms), ref) for s in strategies]
    return out
