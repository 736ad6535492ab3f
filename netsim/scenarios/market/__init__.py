"""The market end to end in netsim: every node runs `protocol.market.node.MarketNode`.

That is the real stack: Tendermint consensus over netsim's network model (latency,
jitter, loss), the PoS ledger with the market installed as its extension (market state
in the ledger's tables, supply and custody audited after every block by every node),
and each node's role machines, whose RunCompute netsim executes through
`MarketCompute` (the daemon's torch engine for tiny models, or the synthetic hash model
for sweeps).

- `build.py`: the config, the layout of roles, the tasks, genesis and each node's core;
- `compute.py`: the executor and the synthetic implementation of the compute contract;
- `run.py`: `run_market` and the registered scenario "market";
- `report.py`: what a run reports (counts from `protocol.market.views`).
"""

from netsim.scenarios.market.build import (
    BALANCE,
    OFFERED_PRICE,
    TORCH_ATTACKS,
    VALIDATOR_STAKE,
    WORKER_PRICE,
    Built,
    Layout,
    MarketConfig,
    build,
    build_tasks,
    layout,
    node_roles,
)
from netsim.scenarios.market.compute import (
    BISECTION_ATTACKS,
    SYNTHETIC_ATTACKS,
    MarketCompute,
    SyntheticMarketCompute,
    TorchTask,
)
from netsim.scenarios.market.report import MarketProgress, MarketReport, NodeOutcome, TaskOutcome, progress
from netsim.scenarios.market.run import Watch, run_market

__all__ = [
    "BALANCE",
    "BISECTION_ATTACKS",
    "OFFERED_PRICE",
    "SYNTHETIC_ATTACKS",
    "TORCH_ATTACKS",
    "VALIDATOR_STAKE",
    "WORKER_PRICE",
    "Built",
    "Layout",
    "MarketCompute",
    "MarketConfig",
    "MarketProgress",
    "MarketReport",
    "NodeOutcome",
    "SyntheticMarketCompute",
    "TaskOutcome",
    "TorchTask",
    "Watch",
    "build",
    "build_tasks",
    "layout",
    "node_roles",
    "progress",
    "run_market",
]
