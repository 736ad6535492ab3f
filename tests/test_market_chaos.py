"""The market on the real stack under seeded network faults (the `market.chaos` scenario).

Fast: a bounded seed sweep of small swarms through the whole nemesis (partitions,
isolation, clogging, loss bursts, pauses, crashes with and without the last unsynced
write), the regression seeds that halted consensus, that slashed a restarted honest
solver and that slashed a validator killed right after it voted, a hand-scripted solver
crash, the
negative control of the stake checker, determinism and replay, and a TOML fault plan
run through the CLI. Slow (`-m slow`): more seeds, and 14-node swarms with Byzantine
workers, a lazy verifier and a false challenger.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import app
from netsim import faults as F
from netsim.config import SimConfig
from netsim.errors import InvariantViolation
from netsim.registry import replay
from netsim.scenarios.market_chaos import Chaos, ChaosReport, chaos_config, impairments, plan_of, run_chaos
from netsim.sim import Sim
from protocol.market.state import Status

#: The fast sweep: 24 seeds of 10 nodes / 3 tasks (about 1 s of CPU each).
FAST_SEEDS = range(24)
CHUNK = 8
#: The liveness bound the sweep states: after the heal at 40 s every task ends and every
#: live node reaches one height within this much virtual time (runs stop when they do).
LIVENESS_BOUND_MS = 600_000


def _ended(r: ChaosReport) -> None:
    assert r.tasks and all(s in ("SETTLED", "REFUNDED") for s in r.tasks.values()), r.tasks
    assert 0 <= r.ended_at_ms <= r.config.end_ms


@pytest.mark.parametrize("chunk", range(len(FAST_SEEDS) // CHUNK))
def test_chaos_sweep_keeps_safety_and_honest_stake_and_every_task_ends_after_the_heal(chunk: int) -> None:
    crashes = 0
    for seed in FAST_SEEDS[chunk * CHUNK : (chunk + 1) * CHUNK]:
        r = run_chaos(chaos_config(seed, liveness_ms=LIVENESS_BOUND_MS))  # a failed checker raises
        _ended(r)
        assert r.faults > 0
        plan = plan_of(r.config)
        crashes += sum(isinstance(a, F.Crash) for a in plan)
    assert crashes >= 2  # not vacuous: the nemesis did crash nodes


def test_validators_split_between_a_lock_and_a_restart_agree_again_after_the_heal() -> None:
    # Regression (consensus): in seed 5 two validators locked on a block while the other
    # two crashed and came back without the round's prevotes; nobody re-sent them, so no
    # round reached 2/3 ever again. Re-proposals now carry their proof of lock.
    config = chaos_config(5, liveness_ms=LIVENESS_BOUND_MS)
    crashed = {a.node for a in plan_of(config) if isinstance(a, F.Crash)}
    assert {1, 3} <= crashed  # the seed still crashes two of the four validators
    r = run_chaos(config)
    _ended(r)
    assert r.ended_at_ms < config.duration_ms + 60_000


def _crash_first_solver(crash: Any) -> Any:
    """A script that crashes the first task's solver as soon as it is elected."""
    state: dict[str, int] = {}

    def poll(sim: Sim, chaos: Chaos) -> None:
        node = chaos._tip_node(sim)
        market = node.view.market if node is not None and node.view is not None else None
        task = market.tasks.get(chaos.expected[0]) if market is not None else None
        if task is not None and task.status == Status.TRAINING and task.solver is not None:
            state["solver"] = [k.public for k in chaos.built.layout.keys].index(task.solver)
            crash(sim, chaos, state["solver"])
            return
        sim.call_at(sim.now + 200, lambda s: poll(s, chaos))

    def script(sim: Sim, chaos: Chaos) -> None:
        sim.call_at(1_000, lambda s: poll(s, chaos))

    script.state = state  # type: ignore[attr-defined]
    return script


def test_a_validator_killed_before_fsyncing_its_last_block_recovers_without_a_fork() -> None:
    # A nemesis crash rarely lands right after a write; this one waits for it: validator 1
    # is killed while the block it just committed (and its votes) are not yet synced.
    def poll(sim: Sim, chaos: Chaos) -> None:
        if sim.disk(1).unsynced and sim.stats(1).persists > 10:
            chaos.crash_for(sim, 1, 3_000, lose_unsynced=True)
            return
        sim.call_at(sim.now + 1, lambda s: poll(s, chaos))

    r = run_chaos(_calm(2), lambda sim, chaos: sim.call_at(5_000, lambda s: poll(s, chaos)))
    assert r.report.per_node[1].lost_writes >= 1
    _ended(r)  # and no_fork held: it re-committed the same block it had lost


def _calm(seed: int) -> SimConfig:
    return chaos_config(seed, nemesis=None, safety_ms=60_000, tasks=2)


def test_a_solver_crashed_through_its_training_deadline_is_replaced_and_slashed_for_silence() -> None:
    script = _crash_first_solver(lambda sim, chaos, node: chaos.crash_for(sim, node, 30_000))
    r = run_chaos(_calm(1), script)
    solver = script.state["solver"]
    assert r.config.nemesis is None and r.faults == 0  # the only fault is the scripted crash
    _ended(r)
    # Silence is punished by design: silence slashes of the crashed node (its training duty,
    # and any other duty that fell due while it was down), nothing else.
    kinds = [(node, kind) for _, node, _, kind, _ in r.slashes]
    assert kinds and set(kinds) == {(solver, "silence")}
    assert next(iter(r.tasks.values())) == "SETTLED"  # a replacement solver finished it


def test_the_stake_checker_fails_when_a_crash_it_was_not_told_about_costs_stake() -> None:
    # Negative control: the same crash by hand, hidden from the checkers, must be reported
    # as an honest worker losing stake, with the line that replays the run.
    script = _crash_first_solver(lambda sim, chaos, node: (
        sim.crash(node), sim.call_at(sim.now + 30_000, lambda s: s.restart(node))))
    with pytest.raises(InvariantViolation) as info:
        run_chaos(_calm(1), script)
    text = str(info.value)
    assert "no_honest_loss" in text and "honest worker" in text
    assert "--scenario market.chaos --seed 1" in text


def test_same_seed_gives_the_same_trace_and_the_printed_config_replays_it() -> None:
    config = chaos_config(3, nodes=8, tasks=1, safety_ms=15_000)
    a = run_chaos(config)
    b = replay(SimConfig.from_json(config.to_json()))
    c = run_chaos(config.replace(seed=4))
    assert a.report.trace_hash == b.trace_hash != c.report.trace_hash


def test_impairment_windows_follow_the_fault_plan_and_the_validator_quorum() -> None:
    power = {0: 1, 1: 1, 2: 1, 3: 1}
    plan = (
        F.Partition(100, ((0, 1, 2, 5), (3, 4))),  # 3 of 4 validators: {3, 4} are cut off
        F.Heal(200),
        F.Partition(300, ((0, 1), (2, 3, 4, 5))),  # no side has 2/3: no block, nobody impaired
        F.Heal(400),
        F.Crash(500, 5),
        F.Clog(600, 50, node=4),
        F.Pause(700, 2),
    )
    windows = {n: [(a, b) for a, b, _ in ws] for n, ws in impairments(plan, 6, power, 1_000).items()}
    assert windows == {3: [(100, 200)], 4: [(100, 200), (600, 650)], 5: [(500, 1_000)], 2: [(700, 1_000)]}


TOML_PLAN = """
seed = 2
nodes = 10
duration_ms = 30000
liveness_ms = 300000
scenario = "market.chaos"
chain_id = "polnet-market-chaos"
key_prefix = "market"

[network]
latency_ms = 40
jitter_ms = 20
loss = 0.02

[params]
tasks = 2

[[faults]]
at = 4000
action = "partition"
groups = [[0, 1, 2, 4, 5, 6], [3, 7, 8, 9]]

[[faults]]
at = 9000
action = "heal"

[[faults]]
at = 10000
action = "crash"
node = 2
lose_unsynced = true

[[faults]]
at = 12000
action = "clog"
node = 6
duration_ms = 3000

[[faults]]
at = 16000
action = "restart"
node = 2
"""


def test_a_scripted_toml_fault_plan_runs_from_the_cli(tmp_path: Any) -> None:
    path = tmp_path / "chaos.toml"
    path.write_text(TOML_PLAN)
    args = ["sim", "run", "--scenario", "market.chaos", "--config", str(path), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["scenario"] == "market.chaos" and summary["faults_applied"] == 5


#: Byzantine-sweep seeds that hit an open finding of docs/chaos.md (none open now).
OPEN_FINDING_SEEDS: tuple[int, ...] = ()
BYZANTINE = dict(nodes=14, tasks=5, byzantine_fraction=0.25, lazy_verifier=True, false_challenger=True)


def test_a_validator_killed_after_voting_keeps_its_vote_record_and_is_not_slashed() -> None:
    # Seed 128 (fixed finding 1 of docs/chaos.md): validator 2 proposed and prevoted at
    # height 20 and was killed with `lose_unsynced` in the same step. netsim used to roll
    # back its `consensus/own-votes` write although the prevote had left, so after the
    # restart it signed a second prevote and was slashed for a double vote. The daemon
    # writes before it publishes, and netsim now syncs a Persist that precedes a Publish.
    config = chaos_config(128, liveness_ms=LIVENESS_BOUND_MS, **BYZANTINE)
    assert any(isinstance(a, F.Crash) and a.node == 2 and a.lose_unsynced for a in plan_of(config))
    r = run_chaos(config)  # no_honest_loss: "validator 2 lost ledger stake" before the fix
    _ended(r)
    assert {node for _, node, role, _, _ in r.slashes if role == "worker"} == set()


def test_an_honest_solver_restarted_after_proving_still_defends_its_proof() -> None:
    # Seed 106 (fixed finding of docs/chaos.md): worker 12 crashes after committing its
    # proof; the false challenger disputes it later. It lost 50% of its stake by silence
    # when its checkpoint leaves lived only in memory; now it reloads them and wins.
    r = run_chaos(chaos_config(106, liveness_ms=LIVENESS_BOUND_MS, **BYZANTINE))
    _ended(r)
    assert 12 not in {node for _, node, _, _, _ in r.slashes}


@pytest.mark.slow
@pytest.mark.parametrize("seeds", [range(24, 50), range(100, 115), range(115, 130)])
def test_bigger_chaos_sweep_with_byzantine_workers_lazy_verifier_and_false_challenger(seeds: range) -> None:
    for seed in seeds:
        if seed in OPEN_FINDING_SEEDS:
            continue
        extra: dict[str, Any] = BYZANTINE if seed >= 100 else {}
        _ended(run_chaos(chaos_config(seed, liveness_ms=LIVENESS_BOUND_MS, **extra)))
