"""Byzantine validators for any netsim scenario: a coalition of strategies around honest cores.

Put a `[byzantine]` table in a run's config (or `SimConfig(byzantine=ByzantineConfig(...))`)
and the simulator wraps those nodes' cores, whatever the scenario builds:

```toml
[byzantine]
strategy = "amnesia"      # netsim.config.BYZANTINE_STRATEGIES
nodes = [2, 5]            # the coalition (keep its power below 1/3)
```

Strategies (netsim/byzantine/strategies.py): `silence`, `crash` (the reference),
`amnesia`, `equivocation` (selective), `late_proposal`, `starvation`, `future_spam`,
`invalid_blocks` (every kind in netsim/byzantine/forge.py). docs/netsim.md describes each.
"""

from netsim.byzantine.coalition import TIMER_PREFIX, ByzantineCore, Coalition, consensus_of

__all__ = ["TIMER_PREFIX", "ByzantineCore", "Coalition", "consensus_of"]
