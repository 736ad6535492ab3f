"""The PoS ledger: accounts, stake, unbonding, slashing, pools and extension points.

Module map: `params` (economics presets), `entries` (state records), `state` (tables,
journal, state root), `primitives` (supply-preserving moves), `txs` (transaction
records), `registry` (register_tx / register_block_hook for other subsystems),
`evidence` (consensus evidence -> equivocation), `rules` (process_x functions and
block boundaries), `genesis` (document parsing), `ledger` (the consensus Application).
See docs/ledger.md.
"""

from protocol.ledger.genesis import Genesis, GenesisAccount, genesis_state, parse_genesis
from protocol.ledger.ledger import Ledger
from protocol.ledger.params import DEVNET, MAINNET, LedgerParams, preset
from protocol.ledger.primitives import audit_supply
from protocol.ledger.registry import register_block_hook, register_tx
from protocol.ledger.state import State, register_table

__all__ = [
    "DEVNET",
    "MAINNET",
    "Genesis",
    "GenesisAccount",
    "Ledger",
    "LedgerParams",
    "State",
    "audit_supply",
    "genesis_state",
    "parse_genesis",
    "preset",
    "register_block_hook",
    "register_table",
    "register_tx",
]
