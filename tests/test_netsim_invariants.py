"""Invariant checkers run during the run; a failure names the seed and config that
reproduce it, and replaying that config fails the same way."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from netsim import (
    Check,
    CoreFailure,
    Crash,
    InvariantViolation,
    NetworkConfig,
    ReproducibleFailure,
    Sim,
    SimConfig,
    run,
)
from netsim.disk import Disk
from netsim.toys import CounterCore, FloodCore, flood_factory
from protocol.commands import Command, Event, SetTimer, Tick, TimerFired
from protocol.identity import Keypair


def counter_factory(index: int, key: Keypair, disk: Disk) -> CounterCore:
    return CounterCore(disk, interval_ms=100)


def counters_stay_below_five(sim: Sim) -> None:
    for i in sim.up_nodes():
        core = sim.core(i)
        assert isinstance(core, CounterCore)
        assert core.value < 5, f"node {i} counted to {core.value}"


CONFIG = SimConfig(
    seed=4242,
    nodes=3,
    duration_ms=5_000,
    scenario="toy.counter",
    network=NetworkConfig(loss=0.1),
    faults=(Crash(200, 2),),
)


def test_failed_invariant_prints_seed_config_and_reproduction_command() -> None:
    with pytest.raises(InvariantViolation) as info:
        run(CONFIG, counter_factory, [counters_stay_below_five])
    text = str(info.value)
    assert "invariant 'counters_stay_below_five' failed: node 0 counted to 5" in text
    assert "t=500ms" in text and "phase safety" in text
    assert "reproduce with: polnet sim run --scenario toy.counter --seed 4242 --config '" in text
    config_json = re.search(r"--config '(\{.*?\})'", text)
    assert config_json is not None
    assert SimConfig.from_json(config_json.group(1)) == CONFIG
    assert "timer" in text  # the tail of the trace is shown


def test_replaying_the_printed_config_fails_identically() -> None:
    messages = []
    for _ in range(2):
        with pytest.raises(InvariantViolation) as info:
            run(CONFIG, counter_factory, [counters_stay_below_five])
        messages.append(re.sub(r"0x[0-9a-f]+", "", str(info.value)))  # object ids in pytest's assert text
    assert messages[0] == messages[1]


def test_a_check_every_n_events_runs_less_often() -> None:
    seen: list[int] = []
    run(
        SimConfig(nodes=2, duration_ms=1_000),
        counter_factory,
        [Check(lambda s: seen.append(s.events), every=5)],
    )
    assert seen and all(e % 5 == 0 for e in seen)


def test_final_checks_run_once_after_the_liveness_phase() -> None:
    seen: list[tuple[int, str]] = []
    config = SimConfig(nodes=2, duration_ms=1_000, liveness_ms=500)
    run(config, counter_factory, [Check(lambda s: seen.append((s.now, s.phase)), final=True)])
    assert seen == [(1_500, "liveness")]


def test_a_failing_final_check_is_reported_as_an_invariant_violation() -> None:
    def everyone_got_ten(sim: Sim) -> None:
        lowest = min(len(c.received) for c in (sim.core(i) for i in range(sim.n)) if isinstance(c, FloodCore))
        assert lowest >= 10, f"a node received only {lowest} pings"

    config = SimConfig(seed=5, nodes=3, duration_ms=300)
    with pytest.raises(InvariantViolation, match=r"everyone_got_ten.*received only \d+ pings[\s\S]*--seed 5"):
        run(config, flood_factory(), [Check(everyone_got_ten, final=True)])


class ReturnsAnEvent:
    def handle(self, now: int, event: Event) -> Sequence[Command]:
        return [TimerFired("an event is not a command")]  # type: ignore[list-item]


def test_a_core_returning_a_non_command_is_a_reproducible_core_failure() -> None:
    with pytest.raises(CoreFailure, match=r"returned a non-command[\s\S]*--seed 8"):
        run(SimConfig(seed=8, nodes=1), lambda i, k, d: ReturnsAnEvent())


def test_a_core_that_raises_is_a_reproducible_core_failure() -> None:
    class Raises:
        def handle(self, now: int, event: Event) -> Sequence[Command]:
            raise ValueError("boom")

    with pytest.raises(CoreFailure, match=r"node 0 raised ValueError: boom[\s\S]*--seed 9"):
        run(SimConfig(seed=9, nodes=1), lambda i, k, d: Raises())


def test_a_livelocked_core_hits_the_event_bound_instead_of_hanging() -> None:
    class Spinner:
        def handle(self, now: int, event: Event) -> Sequence[Command]:
            return [SetTimer(now, "again")] if isinstance(event, (Tick, TimerFired)) else []

    with pytest.raises(ReproducibleFailure, match="event bound hit"):
        run(SimConfig(nodes=1, max_events=1_000), lambda i, k, d: Spinner())


def test_a_named_scenario_replays_from_its_config_alone() -> None:
    from netsim.registry import replay, scenario_names

    assert {"toy.flood", "toy.counter"} <= set(scenario_names())
    config = SimConfig(seed=3, nodes=4, duration_ms=1_000, scenario="toy.flood", params={"count": 3})
    first, again = replay(config), replay(SimConfig.from_json(config.to_json()))
    assert first.trace_hash == again.trace_hash
    assert first.counters.published == 4 * 3


def test_an_unknown_scenario_name_is_a_config_error() -> None:
    from netsim import SimConfigError
    from netsim.registry import replay

    with pytest.raises(SimConfigError, match="unknown 'nope'"):
        replay(SimConfig(scenario="nope"))


def test_a_core_sending_an_unregistered_or_out_of_range_message_is_a_core_failure() -> None:
    from netsim.toys import ScriptCore
    from protocol.commands import TOPIC_TXS, Publish
    from protocol.messages import Ping

    def factory(i: int, k: Keypair, d: Disk) -> ScriptCore:
        return ScriptCore([(5, Publish(TOPIC_TXS, Ping(-1)))])  # U64 field, negative value

    with pytest.raises(CoreFailure, match=r"node 0 sent an unencodable message Ping\(nonce=-1\)"):
        run(SimConfig(seed=1, nodes=2), factory)
