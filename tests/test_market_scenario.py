"""The market scenario: 32 nodes, 20 tasks, honest and with 25% Byzantine workers.

Fast seeds run in every test run; the wide sweep is marked slow (still run in CI).
"""

from __future__ import annotations

import pytest

from netsim.scenarios.market import MarketReport, MarketScenario, run_market

BYZANTINE = dict(byzantine_fraction=0.25, lazy_verifier=True, false_challenger=True)


def check_byzantine(r: MarketReport, seed: int) -> None:
    where = f"seed={seed}"
    assert r.supply_ok, where
    assert r.settled + r.refunded == r.tasks, where
    assert r.cheats_caught == r.cheats, where
    assert r.honest_stake_lost == 0, where


def test_honest_network_settles_every_task_with_supply_conserved() -> None:
    r = run_market(MarketScenario(seed=3))
    assert r.supply_ok and r.settled == r.tasks == 20
    assert r.cheats == 0 and r.slashes == 0 and r.honest_stake_lost == 0


@pytest.mark.parametrize("seed", range(6))
def test_byzantine_network_catches_every_cheat_and_spares_honest_stake(seed: int) -> None:
    check_byzantine(run_market(MarketScenario(seed=seed, **BYZANTINE)), seed)


def test_forced_errors_are_caught_and_paid_across_seeds() -> None:
    reports = [run_market(MarketScenario(seed=s, **BYZANTINE)) for s in range(6, 12)]
    assert sum(r.forced_errors for r in reports) > 0
    assert sum(r.jackpot_payouts for r in reports) == sum(r.forced_errors for r in reports)


def test_same_seed_same_outcome() -> None:
    a = run_market(MarketScenario(seed=5, **BYZANTINE))
    b = run_market(MarketScenario(seed=5, **BYZANTINE))
    assert (a.blocks, a.cheats, a.payments, a.submit_to_settle_blocks) == (
        b.blocks, b.cheats, b.payments, b.submit_to_settle_blocks)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 200))
def test_byzantine_sweep(seed: int) -> None:
    check_byzantine(run_market(MarketScenario(seed=seed, **BYZANTINE)), seed)
