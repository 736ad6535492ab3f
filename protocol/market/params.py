"""Market economics: every number the market rules use, named once, with its reason.

Two bundles here. `DEVNET` keeps windows a few blocks long so a netsim run settles a task
in seconds of virtual time; `MAINNET` gives humans and slow GPUs room to answer. Both must
pass `check_params`, which is where the incentive arithmetic lives as code, not prose.
The chain presets a genesis names (with ledger and consensus parameters, and the `local`
windows real daemons run) are one table: protocol.chain_params.PRESETS.

Units: money is integer base units; work is GFLOP (1e9 floating-point operations,
the "gas" of a task, rounded up: the smallest task is 1 GFLOP); fractions are basis
points (bps, 1/10_000) or parts per million (ppm) so that no float ever enters the
ledger; durations are block heights because deadlines are enforced at block boundaries
(a block clock cannot be skewed by one node).

Scale. Prices are set so that integer division never rounds a payment to nothing and
stakes are set in the same units as budgets, as multiples of the largest budget a worker
may take. With the devnet floor of 30 units/GFLOP the smallest task (1 GFLOP) still
pays each of 3 verifiers 30 * 10% / 3 = 1 unit (`check_params` refuses a floor that
pays 0). A worker may take a task whose budget is at most `max_budget_per_stake_bps`
(50%) of its stake, so a stake of S backs budgets up to S / 2: at the netsim scenario's
1_000 units/GFLOP asked (2_000 offered, 2_400 escrowed with verifier budget and tax), a
1 GFLOP torch task escrows 2_400 against worker stakes of 4 x the largest budget, and a
2_000 GFLOP synthetic task 4_800_000 against stakes of 19_200_000: fees and stakes are
of the same order, so a slash is visibly the price of a cheat, not noise next to it.

Verification cost and detection (issue 4's goal: verification <= 5% of training).
Every verifier re-executes one segment, and a task must have at least
ceil(10_000 / sampling_bps) segments (`process_submit_task`), so one check costs at most
sampling_bps of the training: 157 bps = 1/64 (64 segments of a 640-step run at k = 10).

    verifiers       2 x 1/64                                   = 3.1%
    whistleblower   every REJECT and the final segment's verdict:
                    honest network: 1 x 1/64                   = 1.6%
    network total   (honest)                                   ~ 4.7%   (goal 5%)

Detection. The first verifier elected always checks the final segment, which holds
the delivered weights: every attack of the catalog (skipped or truncated steps,
noise, copied or interpolated checkpoints, another data order) changes them, so an
honest final-segment verifier catches it with probability 1. If that verifier is lazy,
bribed or forced (p = 2%), the whistleblower's re-check of the final segment catches it
with probability 1 (a forced ACCEPT also turns its verifier into an accuser once
revealed), and the second verifier (a random segment) catches attacks that corrupt a
fraction f of the segments w.p. f. A cheat is missed only if the final verifier and
every whistleblower fail together. (With 25% of random ACCEPTs re-checked instead of the
final one, a lazy final verifier let a skip-every-other-step cheat through in the torch
demo, seed 5: f = 1/2, miss 1/2 x 3/4.) `bench/market.py` measures the fraction.

The jackpot rule (Truebit's forced errors, applied to verifiers). A whistleblower re-checks a
verifier's sampled segment; that costs at most what the verifier spent:

    check_cost  = task_compute_cost * sampling_bps / 10_000

A check finds a forced error with probability p = forced_error_ppm / 1e6 (an honest
network has no other errors to find), so a rational whistleblower keeps checking only if

    p * jackpot >= check_cost          i.e.   jackpot >= check_cost / p

We pay `jackpot = margin * check_cost / p` with margin > 1. Devnet numbers, for a task of
2_000 GFLOP at 1_000 units/GFLOP (compute cost 2_000_000 units):

    check_cost = 2_000_000 * 157 / 10_000       = 31_400 units
    p          = 20_000 / 1e6                    = 0.02
    jackpot    = 1.5 * 31_400 / 0.02             = 2_355_000 units   (> 31_400 / 0.02 = 1_570_000)

The pool that pays it is fed by a tax on each placed task. Per task the expected payout is
at most verifier_count * p * jackpot = verifier_count * margin * check_cost, i.e. a fraction
verifier_count * margin * sampling_bps of the compute cost: 2 * 1.5 * 1.57% = 4.7%. The
tax (10%) is set above that so the pool grows on average; slashed stakes also flow into it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from protocol.errors import ConfigError

BPS = 10_000
PPM = 1_000_000
#: 1 GFLOP: the unit of declared work (tasks declare FLOPs; fees are per GFLOP).
GFLOP = 10**9


@dataclass(frozen=True, slots=True)
class MarketParams:
    """One bundle of market economics; see the module docstring for the arithmetic."""

    # --- pricing (like gas) -------------------------------------------------------------
    #: Protocol floor on the price a submitter offers per GFLOP: below it no worker is
    #: paid enough to cover electricity, and dust tasks would only load the chain.
    min_price_per_gflop: int
    #: Verifiers are paid on top of the solver's price, as a share of it: verification is
    #: sampling_bps of the work per verifier, paid at twice its cost so verifying beats idling.
    verifier_pay_bps: int
    #: Share of the work budget moved to the jackpot pool when a task is placed.
    jackpot_tax_bps: int

    # --- verification -------------------------------------------------------------------
    #: Verifiers per task: one honest verifier out of n suffices to raise a dispute. n = 2
    #: (one on the final segment, one random) keeps verification under 5% of training;
    #: whistleblowers and forced errors watch the verifiers (see the module docstring).
    verifier_count: int
    #: Profilers of a task that is not bit-reproducible: the spec is refused only by a
    #: majority of them and the threshold is the median of the accepting reports, so one
    #: dishonest profiler can neither kill a task nor inflate its threshold.
    profiler_count: int
    #: Most of the training one segment may be (a task needs >= 10_000 / sampling_bps
    #: segments), so one verifier's check costs at most this share. Segments are picked by
    #: the beacon after the proof is committed, so the solver cannot guess which to do honestly.
    sampling_bps: int
    #: Probability that a verifier's secret obliges it to post a wrong verdict.
    forced_error_ppm: int
    #: Jackpot margin over break-even, in bps (15_000 = 1.5x): covers variance and gas.
    jackpot_margin_bps: int

    # --- stakes and slashing -------------------------------------------------------------
    #: Minimum worker stake: must exceed what one cheat can earn (a task's work budget),
    #: enforced per task at election time by `max_budget_per_stake_bps`.
    min_worker_stake: int
    #: A worker is eligible only for tasks whose budget is at most this share of its stake,
    #: so the slash for cheating always exceeds the payment cheating could bring.
    max_budget_per_stake_bps: int
    #: Bond a challenger posts (any staked node may challenge): makes false challenges cost.
    min_challenge_bond: int
    #: Share of stake lost by a solver shown to have cheated.
    solver_slash_bps: int
    #: Share of stake lost by a verifier whose (unforced) verdict was shown wrong.
    verifier_slash_bps: int
    #: Share of stake lost for silence past a deadline: smaller than cheating (a crash is
    #: not fraud) but more than the gain from delaying a task.
    silence_slash_bps: int
    #: Share of a slash paid to the parties who were right against the slashed one; the
    #: rest funds the jackpot pool (never burned, so it keeps paying whistleblowers).
    whistleblower_reward_bps: int

    # --- deadlines, in blocks ------------------------------------------------------------
    block_time_ms: int
    #: A task nobody eligible can take is refunded after this many blocks.
    placement_blocks: int
    profile_blocks: int
    #: Training deadline = base + slack * (declared FLOPs / solver's measured FLOPS).
    train_base_blocks: int
    train_slack_pct: int
    commit_blocks: int
    reveal_blocks: int
    challenge_window_blocks: int
    #: Forced verifiers reveal their secret only after the challenge window closes, so
    #: whistleblowers must check before they can know which verdicts were forced.
    forced_reveal_blocks: int
    move_blocks: int
    arbitration_blocks: int
    #: Silent parties are replaced at most this many times per task, then it is refunded.
    max_replacements: int

    # --- bounds ------------------------------------------------------------------------
    max_workers: int
    max_open_tasks: int
    max_challenges_per_task: int
    max_jobs_per_worker: int
    #: Capacity adverts live at most this long (ms): stale capacity must not attract tasks.
    advert_max_ttl_ms: int
    #: Ended tasks stay readable this long (roles and clients read outcomes), then go, so
    #: the task table is bounded by the open-task cap plus what ends in this window.
    ended_retention_blocks: int
    #: A challenge's bond is at least this share of what it can make the accused party
    #: lose (the solver's slash for an ACCEPT it disputes, the verifier's for a REJECT), so
    #: a false challenge costs in proportion to the harm it tries to do.
    challenge_bond_bps: int = 1_000
    #: Accepted proofs stay nameable as a fine-tuning base this long (blocks), then go,
    #: so the table of proven roots is bounded by what settles in this window.
    proven_retention_blocks: int = 100_000

    def jackpot_for(self, compute_cost: int) -> int:
        """Jackpot paid for catching a forced error on a task whose work costs `compute_cost`."""
        check_cost = compute_cost * self.sampling_bps // BPS
        return -(-check_cost * self.jackpot_margin_bps * PPM // (BPS * self.forced_error_ppm))

    def check_cost(self, compute_cost: int) -> int:
        return compute_cost * self.sampling_bps // BPS

    @property
    def min_segments(self) -> int:
        """Fewest segments a task may have, so that one check is at most sampling_bps of it."""
        return -(-BPS // self.sampling_bps)


def check_params(p: MarketParams) -> None:
    """Refuse parameter sets whose incentives do not hold (one check per inequality)."""
    # Rule: fractions are fractions.
    for name in ("verifier_pay_bps", "jackpot_tax_bps", "sampling_bps", "solver_slash_bps",
                 "verifier_slash_bps", "silence_slash_bps", "whistleblower_reward_bps",
                 "max_budget_per_stake_bps", "challenge_bond_bps"):
        if not 0 <= getattr(p, name) <= BPS:
            raise ConfigError(f"{name} must be within 0..{BPS}")
    # Rule: forced errors happen, but rarely enough that most verdicts are informative.
    if not 0 < p.forced_error_ppm <= PPM // 10:
        raise ConfigError("forced_error_ppm must be in (0, 10%]")
    # Rule: a whistleblower's expected jackpot beats its checking cost (margin > 1).
    if p.jackpot_margin_bps <= BPS:
        raise ConfigError("jackpot_margin_bps must exceed 1x (10_000)")
    # Rule: the tax covers the expected jackpot payouts per task.
    expected_payout_bps = p.verifier_count * p.sampling_bps * p.jackpot_margin_bps // BPS
    if p.jackpot_tax_bps < expected_payout_bps:
        raise ConfigError(f"jackpot_tax_bps {p.jackpot_tax_bps} < expected payout {expected_payout_bps} bps")
    # Rule: verifying pays more than it costs.
    if p.verifier_pay_bps < p.verifier_count * p.sampling_bps:
        raise ConfigError("verifier_pay_bps must cover verifier_count * sampling_bps")
    # Rule: cheating never pays: a solver's slash exceeds any budget it is allowed to take.
    if p.solver_slash_bps < p.max_budget_per_stake_bps:
        raise ConfigError("solver_slash_bps must be >= max_budget_per_stake_bps")
    # Rule: the smallest task (1 GFLOP at the floor price) pays each verifier something.
    if p.min_price_per_gflop * p.verifier_pay_bps // BPS // max(1, p.verifier_count) < 1:
        raise ConfigError("min_price_per_gflop too low: verifier pay of a 1-GFLOP task rounds to 0")
    # Rule: sampling is a fraction of a task (at least one segment in a whole one).
    if p.sampling_bps < 1:
        raise ConfigError("sampling_bps must be >= 1")
    # Rule: at least one verifier, and every window at least one block.
    if p.verifier_count < 1:
        raise ConfigError("verifier_count must be >= 1")
    # Rule: an odd number of profilers, so a majority and a median always exist.
    if p.profiler_count < 1 or p.profiler_count % 2 == 0:
        raise ConfigError("profiler_count must be odd and >= 1")
    for name in ("placement_blocks", "profile_blocks", "train_base_blocks", "commit_blocks",
                 "reveal_blocks", "challenge_window_blocks", "forced_reveal_blocks", "move_blocks",
                 "arbitration_blocks"):
        if getattr(p, name) < 1:
            raise ConfigError(f"{name} must be >= 1 block")


#: Short windows for netsim and local swarms: seconds of virtual time per task.
DEVNET = MarketParams(
    min_price_per_gflop=30,
    verifier_pay_bps=1_000,
    jackpot_tax_bps=1_000,
    verifier_count=2,
    profiler_count=3,
    sampling_bps=157,
    forced_error_ppm=20_000,
    jackpot_margin_bps=15_000,
    min_worker_stake=10_000,
    max_budget_per_stake_bps=5_000,
    min_challenge_bond=1_000,
    solver_slash_bps=5_000,
    verifier_slash_bps=3_000,
    silence_slash_bps=500,
    whistleblower_reward_bps=5_000,
    block_time_ms=1_000,
    placement_blocks=20,
    profile_blocks=10,
    train_base_blocks=5,
    train_slack_pct=300,
    commit_blocks=10,
    reveal_blocks=5,
    challenge_window_blocks=10,
    forced_reveal_blocks=5,
    move_blocks=5,
    arbitration_blocks=10,
    max_replacements=3,
    max_workers=4_096,
    max_open_tasks=1_024,
    max_challenges_per_task=8,
    max_jobs_per_worker=4,
    advert_max_ttl_ms=60_000,
    ended_retention_blocks=1_000,
)

#: Windows sized for people and slow devices at ~6 s blocks (challenge window ~1 h);
#: stakes sized so one slash outweighs a large task's budget.
MAINNET = replace(
    DEVNET,
    min_price_per_gflop=1_000,
    min_worker_stake=100_000_000,
    min_challenge_bond=5_000_000,
    block_time_ms=6_000,
    placement_blocks=600,
    profile_blocks=300,
    train_base_blocks=100,
    train_slack_pct=200,
    commit_blocks=300,
    reveal_blocks=100,
    challenge_window_blocks=600,
    forced_reveal_blocks=100,
    move_blocks=50,
    arbitration_blocks=200,
    max_workers=100_000,
    max_open_tasks=50_000,
    advert_max_ttl_ms=600_000,
    ended_retention_blocks=14_400,
)
