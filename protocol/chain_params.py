"""A chain's parameters: ledger, consensus and market, and the one table of presets.

Why one table: every number here is part of the state root, so two nodes that take
them from different places (a preset in the CLI, another in the daemon) fork at height
0. The genesis document names a preset from `PRESETS` and may override fields by name;
what it resolves to is checked by `check_chain_params` and stored in the state
(the ledger's params hash in `meta`, the consensus table, the market table).

Presets:

- `devnet`: netsim's windows, a few blocks each, because simulated compute costs
  virtual time only.
- `local`: real daemons on one machine or a LAN (`polnet init`, `polnet swarm up`):
  the devnet economics with market windows long enough for wall-clock training, proof
  fetching and re-execution on a box the whole swarm may share (blocks of about 1 s).
- `mainnet`: stakes and windows for people and slow devices at about 6 s blocks.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from protocol.consensus import params as consensus
from protocol.consensus.params import ConsensusParams, check_consensus_params
from protocol.errors import ConfigError
from protocol.ledger import params as ledger
from protocol.ledger.params import LedgerParams
from protocol.market import params as market
from protocol.market.params import MarketParams, check_params

#: The tables a genesis document may override, in document order.
SECTIONS = ("ledger", "consensus", "market")
#: Largest value any parameter may take (they are stored as u64 in the state).
MAX_PARAM = 2**63 - 1


@dataclass(frozen=True, slots=True)
class ChainParams:
    ledger: LedgerParams
    consensus: ConsensusParams
    market: MarketParams

    def section(self, name: str) -> Any:
        return getattr(self, name)

    def as_tables(self) -> dict[str, dict[str, int]]:
        """Every field of every section by name (what `polnet genesis new` writes out)."""
        return {name: dataclasses.asdict(self.section(name)) for name in SECTIONS}


#: The market's stage deadlines as real daemons run them. The devnet preset's windows
#: are sized for netsim, where compute costs virtual time; a daemon trains, fetches
#: proofs and re-executes segments in wall time, on a box it may share with the whole
#: swarm, so its deadlines (in blocks of about a second) leave room for that.
LOCAL_MARKET = replace(
    market.DEVNET,
    profile_blocks=30,
    train_base_blocks=120,
    commit_blocks=60,
    reveal_blocks=10,
    challenge_window_blocks=15,
    forced_reveal_blocks=10,
    move_blocks=15,
    arbitration_blocks=30,
)

PRESETS: dict[str, ChainParams] = {
    "devnet": ChainParams(ledger.DEVNET, consensus.DEVNET, market.DEVNET),
    "local": ChainParams(ledger.DEVNET, consensus.DEVNET, LOCAL_MARKET),
    "mainnet": ChainParams(ledger.MAINNET, consensus.MAINNET, market.MAINNET),
}


def chain_preset(name: str) -> ChainParams:
    """The named preset, or a ConfigError listing the known ones."""
    if not isinstance(name, str) or name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    return PRESETS[name]


def with_overrides(
    base: ChainParams, section: str, overrides: Mapping[str, Any], label: str | None = None
) -> ChainParams:
    """`base` with some fields of one section replaced; unknown names and non-integers
    are errors naming the field as `label.field` (a misspelt parameter silently left at
    its preset value would give a chain other economics than its operators agreed on)."""
    label = label or section
    if section not in SECTIONS:
        raise ConfigError(f"unknown parameter section {section!r} (known: {', '.join(SECTIONS)})")
    current = base.section(section)
    known = [f.name for f in dataclasses.fields(current)]
    for key, value in overrides.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown {section} parameter {label}.{key}{hint}")
        if type(value) is not int or not 0 <= value <= MAX_PARAM:
            raise ConfigError(f"{label}.{key} must be an integer in [0, {MAX_PARAM}], got {value!r}")
    if not overrides:
        return base
    try:
        updated = dataclasses.replace(current, **dict(overrides))
    except ValueError as exc:  # LedgerParams checks itself on construction
        raise ConfigError(f"invalid {section} parameters: {exc}") from None
    return replace(base, **{section: updated})


def check_chain_params(p: ChainParams) -> None:
    """Everything a chain needs of its parameters: the ledger's checks run when
    LedgerParams is built, the consensus and market ones here."""
    check_consensus_params(p.consensus)
    try:
        check_params(p.market)
    except ConfigError as exc:
        raise ConfigError(f"market: {exc}") from None
