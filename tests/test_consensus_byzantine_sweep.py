"""Consensus under Byzantine validators, swept (issue 17): every strategy of netsim/byzantine/
against the crash reference on the same seeds, n = 4, 7, 10, f = (n-1)//3, a 40 +- 20 ms
network with and without 2% loss. Zero forks, zero honest validators slashed, no forged
block committed, and every strategy at >= 0.7 of the crash reference's committed heights
on every seed. The slow suite runs two seeds per (n, loss) and the regression seeds; the
wide sweep is bench/byzantine.py."""

from __future__ import annotations

import pytest

from netsim.scenarios.byzantine_sweep import LOSSES, SIZES, STRATEGIES, TARGET, Ratio, run_case, sweep

#: Virtual time per run: long enough for 30 to 90 heights, so one failed height moves
#: a ratio by a few percent, not by the 0.3 the target allows.
DURATION_MS = 12_000
SWEEP_SEEDS = (0, 1)

#: (n, strategy, seed, loss) where the consensus before issue 17's fixes committed less
#: than 0.7 of the crash reference (amnesia: 0.66 at n=7 seed 6 and n=10 seed 5, 0.68 at
#: n=10 seed 9, over 20 s), kept as regressions.
REGRESSIONS = ((7, "amnesia", 6, 0.0), (10, "amnesia", 5, 0.0), (10, "amnesia", 9, 0.0))


def _judge(r: Ratio) -> None:
    c = r.case
    where = f"{c.strategy} n={c.n} loss={c.loss} seed={c.seed}"
    assert c.forks == 0 and r.reference.forks == 0, f"{where}: {c.failure or r.reference.failure}"
    assert c.honest_slashed == 0 and r.reference.honest_slashed == 0, f"{where}: an honest validator slashed"
    assert c.forged_committed == 0, f"{where}: a forged invalid block was committed"
    assert not c.failure, f"{where}: {c.failure}"
    assert r.value >= TARGET, f"{where}: {c.heights} heights vs {r.reference.heights} with the same f crashed"


@pytest.mark.slow
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("n", SIZES)
def test_every_strategy_keeps_safety_and_at_least_0_7_of_the_crash_references_heights(
    n: int, loss: float
) -> None:
    ratios = sweep((n,), SWEEP_SEEDS, (loss,), STRATEGIES, DURATION_MS)
    assert {r.case.strategy for r in ratios} == set(STRATEGIES)
    for r in ratios:
        _judge(r)
    assert min(r.reference.heights for r in ratios) >= 10  # not vacuous: the chain moved


@pytest.mark.slow
@pytest.mark.parametrize(("n", "strategy", "seed", "loss"), REGRESSIONS)
def test_regression_seeds_where_lock_splitting_cost_a_third_of_the_heights(
    n: int, strategy: str, seed: int, loss: float
) -> None:
    _judge(Ratio(run_case(n, strategy, seed, loss, 20_000), run_case(n, "crash", seed, loss, 20_000)))


def test_an_amnesiac_coalition_no_longer_splits_the_locks_for_rounds_on_end() -> None:
    # Regression (fast): seven validators, two amnesiac; before issue 17's fixes this seed
    # committed 0.78 of the crash reference's heights over 12 s (0.66 over 20 s), now 1.27:
    # the locked ones re-send their block and POL, and the next honest proposer adopts it.
    r = Ratio(run_case(7, "amnesia", 6, 0.0, 12_000), run_case(7, "crash", 6, 0.0, 12_000))
    _judge(r)
    assert r.value >= 1.0
