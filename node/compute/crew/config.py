"""A checked crew task file (protocol/pol/crew_spec.py) as the engine's `CrewConfig`.

One function for every reader of a task file: `polnet crew run` and the market's crew
engine (node/compute/crew/market.py) must build the same config from the same file, or a
verifier would re-execute another run than the crew trained.
"""

from __future__ import annotations

from node.compute.crew.model import ModelShape
from node.compute.crew.pipeline import CrewConfig
from protocol.errors import ConfigError
from protocol.pol.crew_spec import CrewSettings


def crew_config(settings: CrewSettings) -> CrewConfig:
    """The crew's config; ConfigError for what the settings' own bounds let through but
    the engine refuses (the file's checks mirror `CrewConfig.__post_init__`, so this is a
    backstop, not a second rule book)."""
    try:
        return CrewConfig(shape=ModelShape(**settings.model), **settings.crew)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"crew task: {exc}") from None
