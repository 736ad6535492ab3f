"""Errors the simulator raises.

Every failure that a test can hit carries the seed and the config that reproduce it,
because a netsim failure that cannot be replayed is almost worthless: the whole point
of a deterministic simulator is that the failing run can be run again under a debugger.
"""

from __future__ import annotations

from protocol.errors import ConfigError, PolnetError


class NetsimError(PolnetError):
    """The simulation itself cannot go on (harness misuse, exhausted limits)."""


class SimConfigError(ConfigError):
    """A netsim config (TOML/JSON or dataclass) is invalid; the message names the field."""


class ReproducibleFailure(NetsimError):
    """A run failed; the message ends with the command line that replays it exactly."""

    def __init__(self, headline: str, *, seed: int, config_json: str, scenario: str, recent: str) -> None:
        self.headline = headline
        self.seed = seed
        self.config_json = config_json
        scenario_arg = f" --scenario {scenario}" if scenario else ""
        super().__init__(
            f"netsim: {headline}\n"
            f"reproduce with: polnet sim run{scenario_arg} --seed {seed} --config '{config_json}'\n"
            f"config: {config_json}\n"
            f"last events (t_ms, node, kind, id):\n{recent}"
        )


class InvariantViolation(ReproducibleFailure):
    """A checker callable reported that a safety or liveness property does not hold."""


class CoreFailure(ReproducibleFailure):
    """A core raised, or returned something that is not a Command: a bug in the core."""
