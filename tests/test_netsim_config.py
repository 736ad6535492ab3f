"""Configs load from TOML/JSON, round-trip, and reject bad input with the field named."""

from __future__ import annotations

import pytest

from netsim import Crash, NemesisConfig, NetworkConfig, Partition, SimConfig, SimConfigError
from netsim.faults import Heal, Isolate, Restart
from netsim.nemesis import generate

TOML = """
seed = 9
nodes = 5
duration_ms = 20000
liveness_ms = 5000
scenario = "toy.flood"

[network]
latency_ms = 30
jitter_ms = 5
loss = 0.01
links = [{src = 0, dst = 1, latency_ms = 200}]

[nemesis]
kinds = ["crash", "partition"]

[[faults]]
at = 1000
action = "partition"
groups = [[0, 1], [2, 3, 4]]

[[faults]]
at = 3000
action = "crash"
node = 2
lose_unsynced = true
"""


def test_toml_config_loads_every_section() -> None:
    config = SimConfig.from_toml(TOML)
    assert config.nodes == 5 and config.end_ms == 25_000
    assert config.network.links[0].latency_ms == 200
    assert config.faults == (Partition(1000, ((0, 1), (2, 3, 4))), Crash(3000, 2, lose_unsynced=True))
    assert config.nemesis == NemesisConfig(kinds=("crash", "partition"))


def test_json_round_trip_is_exact() -> None:
    config = SimConfig.from_toml(TOML)
    assert SimConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"nodes": 0}, "nodes"),
        ({"nodes": "four"}, "config.nodes"),
        ({"network": {"loss": 1.5}}, "network.loss"),
        ({"network": {"jitter_dist": "cauchy"}}, "network.jitter_dist"),
        ({"colour": "blue"}, "unknown key"),
        ({"faults": [{"at": 1, "action": "explode"}]}, "faults[0].action"),
        ({"faults": [{"at": 1, "action": "crash", "node": 7}]}, "out of range"),
        ({"faults": [{"at": 1, "action": "crash"}]}, "faults[0]"),
        ({"faults": [{"at": 99_999, "action": "heal"}]}, "safety phase"),
        ({"faults": [{"at": 1, "action": "partition", "groups": [[0, 1], [1, 2]]}]}, "more than one group"),
        ({"faults": [{"at": 1, "action": "clog", "duration_ms": 5}]}, "exactly one of"),
        ({"nemesis": {"kinds": ["meteor"]}}, "nemesis.kinds"),
        ({"flops": [1, 2]}, "flops"),
    ],
)
def test_bad_config_is_refused_with_the_field_named(raw: dict[str, object], field: str) -> None:
    with pytest.raises(SimConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        SimConfig.from_dict(raw)


def test_invalid_toml_is_a_config_error() -> None:
    with pytest.raises(SimConfigError, match="invalid TOML"):
        SimConfig.from_toml("nodes = [")


def test_nemesis_never_takes_down_more_than_its_budget() -> None:
    config = SimConfig(
        seed=3,
        nodes=10,
        duration_ms=200_000,
        nemesis=NemesisConfig(kinds=("crash", "isolate"), mean_gap_ms=100),
    )
    down: set[int] = set()
    worst = 0
    for action in generate(config):
        if isinstance(action, (Crash, Isolate)):
            down.add(action.node)
        elif isinstance(action, Restart):
            down.discard(action.node)
        elif isinstance(action, Heal):
            down.clear()
        worst = max(worst, len(down))
    assert worst == 3  # (10 - 1) // 3, and the budget is actually used


def test_network_config_rejects_negative_latency() -> None:
    with pytest.raises(SimConfigError, match=r"network\.latency_ms"):
        NetworkConfig(latency_ms=-1)


def test_scenario_params_travel_with_the_config() -> None:
    config = SimConfig.from_toml('[params]\nbyzantine = 2\nattack = "equivocate"\n')
    assert config.param("byzantine", 0) == 2 and config.param("tx_rate", 5) == 5
    assert SimConfig.from_json(config.to_json()) == config


def test_non_scalar_scenario_params_are_refused() -> None:
    with pytest.raises(SimConfigError, match=r"params\.x"):
        SimConfig.from_dict({"params": {"x": [1, 2]}})
