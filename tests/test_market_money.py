"""Every balance and stake change of a scripted market run matches the written rules.

The oracle below re-derives each node's expected payments from the ended tasks' records
and docs/market.md ("Money") alone, walking tasks in the order they ended, and the test
compares it with what the ledger actually did: per node, balance delta plus the tx fees
it paid, and stake delta. Validators earn nothing from the market, only the proposers'
share of all tx fees, which is checked in total. The runs include cheating solvers, a
lazy verifier, a false challenger and a forced error paid from the jackpot. Workers
register by transaction, so their deltas are against the registered position.
"""

from __future__ import annotations

from collections import Counter

import pytest

from netsim.scenarios.market import MarketConfig, MarketReport, run_market
from protocol.chain_params import chain_preset
from protocol.ledger.rules import share
from protocol.market.params import BPS, MarketParams
from protocol.market.process import budget
from protocol.market.state import MarketState, Task

BYZANTINE = dict(byzantine_fraction=0.34, lazy_verifier=True, false_challenger=True, compute="synthetic")


class Oracle:
    """Expected balances, stakes and jackpot pool, from the rules as documented."""

    def __init__(self, params: MarketParams, stakes: dict[bytes, int]) -> None:
        self.p = params
        self.balance: Counter[bytes] = Counter()
        self.stake = dict(stakes)
        self.pool = 0

    def slash(self, who: bytes, bps: int) -> int:
        amount = self.stake[who] * bps // BPS
        self.stake[who] -= amount
        return amount

    def reward(self, amount: int, to: bytes | None) -> None:
        """Half of a slash (whistleblower_reward_bps) to the one prover, the rest to the pool."""
        share_ = amount * self.p.whistleblower_reward_bps // BPS if to is not None else 0
        if to is not None:
            self.balance[to] += share_
        self.pool += amount - share_

    def task(self, t: Task) -> None:
        p = self.p
        escrow = budget(MarketState(params=p), t.gflops, t.max_price_per_gflop)
        self.balance[t.submitter] -= escrow
        if t.taxed:
            tax = t.gflops * t.max_price_per_gflop * p.jackpot_tax_bps // BPS
            escrow -= tax
            self.pool += tax
        for silent in t.excluded:  # silence: a share of stake to the pool
            self.pool += self.slash(silent, p.silence_slash_bps)
        if t.status.name == "SETTLED":
            escrow -= self.settle(t)
        self.balance[t.submitter] += escrow  # the unused budget back

    def settle(self, t: Task) -> int:
        p = self.p
        cost = t.gflops * t.solver_price
        per_verifier = cost * p.verifier_pay_bps // BPS // p.verifier_count
        valid = bool(t.proof_valid)
        paid = 0
        assert t.solver is not None
        if valid:
            self.balance[t.solver] += cost
            paid += cost
        proven = 0 if valid else self.slash(t.solver, p.solver_slash_bps)
        for v in t.verifiers:  # a hidden duty secret costs like an ignored forcing
            if v.verdict is not None and not v.secret_revealed:
                self.pool += self.slash(v.pubkey, p.verifier_slash_bps)
        for i, v in enumerate(t.verifiers):
            if v.verdict is None:
                continue
            accept = v.verdict.accept
            wrong = (not accept) if valid else (accept and v.verdict.segment == t.bad_segment)
            right = accept if valid else (not accept and v.verdict.segment == t.bad_segment)
            if v.forced_revealed and right:  # ignored its forcing
                self.pool += self.slash(v.pubkey, p.verifier_slash_bps)
            elif v.forced_revealed or not wrong:
                self.balance[v.pubkey] += per_verifier
                paid += per_verifier
            elif accept:
                proven += self.slash(v.pubkey, p.verifier_slash_bps)
            else:
                first = next((c.challenger for c in t.challenges if c.target == i and self.right(t, c.target)
                              and c.challenger not in t.lost), None)
                self.reward(self.slash(v.pubkey, p.verifier_slash_bps), first)
        rejecting = [v.pubkey for v in t.verifiers
                     if v.verdict and not v.verdict.accept and not v.forced_revealed]
        prover = None if valid else t.winner or next(iter(rejecting), None)
        self.reward(proven, prover)
        jackpot_paid: set[int] = set()
        for c in t.challenges:
            bond = c.posted
            if not self.right(t, c.target) or c.challenger in t.lost:
                self.balance[c.challenger] -= bond
                self.pool += bond
            elif t.verifiers[c.target].forced_revealed and c.target not in jackpot_paid:
                jackpot_paid.add(c.target)
                won = p.jackpot_for(cost)  # the pool's level is checked once, at the end
                self.pool -= won
                self.balance[c.challenger] += won
        for report in t.profile_reports:
            if report.spec_ok:
                self.balance[report.profiler] += per_verifier
                paid += per_verifier
        return paid

    @staticmethod
    def right(t: Task, target: int) -> bool:
        v = t.verifiers[target].verdict
        assert v is not None
        return (not v.accept) if t.proof_valid else (v.accept and v.segment == t.bad_segment)


def audit(r: MarketReport, keys: list[bytes], stake0: int) -> None:
    cfg = r.config
    workers = {keys[n.index] for n in r.nodes if n.role not in ("validator", "submitter", "whistleblower",
                                                                    "false_challenger")}
    oracle = Oracle(cfg.params, {k: stake0 for k in workers})
    # In the order the ledger ended them: the block a task ended in (its last stage_since;
    # the report's ended_at only has the watcher's tick), then id order, as end_block walks
    # them (a slash's size depends on the stake earlier slashes left).
    for t in sorted(r.final_tasks, key=lambda t: (t.stage_since, t.task_id)):
        oracle.task(t)
    where = f"seed={r.seed}"
    fee_income = 0
    for n in r.nodes:
        who = keys[n.index]
        if n.role == "validator":
            fee_income += n.balance_delta + n.fees_paid
            continue
        assert n.balance_delta + n.fees_paid == oracle.balance[who], f"node {n.index} ({n.role}) {where}"
        expected_stake = oracle.stake.get(who, 0) - (stake0 if who in workers else 0)
        assert n.stake_delta == expected_stake, f"node {n.index} ({n.role}) {where}"
    assert oracle.pool == r.jackpot_end, f"jackpot pool {where}"
    txs = sum(n.fees_paid // r.tx_fee for n in r.nodes)
    per_tx = r.tx_fee - share(r.tx_fee, chain_preset("devnet").ledger.fee_burn_ppm)
    assert fee_income == txs * per_tx, where


@pytest.mark.parametrize("seed", [1, 6])
def test_every_balance_and_stake_change_matches_the_rules(seed: int) -> None:
    r = run_market(MarketConfig(seed=seed, nodes=12, tasks=6, **BYZANTINE))  # type: ignore[arg-type]
    assert r.ok and r.cheats >= 1
    audit(r, r.node_keys, r.worker_stake)


@pytest.mark.slow
def test_a_slashed_lazy_verifier_and_a_jackpot_payout_are_audited_too() -> None:
    """The rarer money paths (a lazy verifier slashed, a forced error paid from the jackpot)
    on the first seed of a bounded range that has both, so protocol changes that move the
    elections never leave them unaudited."""
    for seed in range(60):
        r = run_market(MarketConfig(seed=seed, nodes=12, tasks=6, **BYZANTINE))  # type: ignore[arg-type]
        lazy = next(n for n in r.nodes if n.role == "lazy_verifier")
        if lazy.slashed and r.jackpot_payouts >= 1 and r.cheats >= 2:
            assert r.ok, f"seed={seed}"
            audit(r, r.node_keys, r.worker_stake)
            return
    raise AssertionError("no seed in 0..59 slashed the lazy verifier and paid a jackpot")


@pytest.mark.parametrize("seed", [0, 2, 5, 7])
def test_a_false_challenger_never_profits(seed: int) -> None:
    r = run_market(MarketConfig(seed=seed, nodes=12, tasks=6, **BYZANTINE))  # type: ignore[arg-type]
    liar = next(n for n in r.nodes if n.role == "false_challenger")
    assert liar.balance_delta + liar.fees_paid < 0, f"seed={seed}"


@pytest.mark.slow
#: Not strict: which seeds show the attack follows torch's numerics, which differ between
#: CPUs (this run XPASSes on some boxes, at the same commit where CI shows the attack);
#: synthetic compute, the same everywhere, did not show it in seeds 0-97.
@pytest.mark.xfail(strict=False, reason="open attack, docs/market.md 'Open: a thrown game': a cheating "
                   "solver that lies in bisection to a blind challenger gets the honest verifier of a good "
                   "segment slashed (seen at this seed on some CPUs, not all)")
def test_a_solver_that_throws_a_game_to_a_blind_challenger_cannot_slash_an_honest_verifier(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from protocol.market.adversaries import FalseChallenger

    # The blind challenger, but playing its games honestly (what any attacker can write).
    blind = FalseChallenger.on_view
    monkeypatch.setattr(FalseChallenger, "on_view",
                        lambda self, market: [*self._play(market), *blind(self, market)])
    # Seed 29: a run where the cheating solver throws a game (of 0-60 also 16, 24, 32, 34,
    # 36, 37, 56; the trajectory, and so which seeds show it, moves with any change to what
    # nodes send: seed 2 showed it before private tasks' worker keys).
    r = run_market(MarketConfig(seed=29, nodes=12, tasks=3, compute="torch", byzantine_fraction=0.25,
                                lazy_verifier=True, false_challenger=True))
    honest = [n for n in r.nodes if n.role == "worker"]
    assert all(n.stake_delta == 0 for n in honest), [n for n in honest if n.stake_delta]



def test_fees_and_stakes_are_of_the_same_order() -> None:
    r = run_market(MarketConfig(seed=1, nodes=10, tasks=2))
    for t in r.tasks:
        assert t.fee * 20 >= r.worker_stake >= t.fee  # a slash is visibly the price of a cheat
        assert t.verifier_paid > 0  # no payment rounds to nothing
