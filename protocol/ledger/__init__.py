"""The PoS ledger: accounts, stake, unbonding, slashing, pools and extension points.

Module map: `params` (economics; the chain presets are protocol.chain_params),
`entries` (state records), `state` (tables, journal, state root), `primitives`
(supply-preserving moves), `txs` (transaction records), `registry` (register_tx /
register_block_hook for other subsystems), `evidence` (consensus evidence ->
equivocation), `rules` (process_x functions and block boundaries), `genesis` (document
parsing, genesis hash), `gentx` (validators' signed genesis stakes), `ceremony` (the
genesis ceremony's document steps), `ledger` (the consensus Application).
See docs/ledger.md.
"""

from protocol.ledger.genesis import Genesis, GenesisAccount, genesis_hash, genesis_state, parse_genesis
from protocol.ledger.ledger import Ledger
from protocol.ledger.params import DEVNET, MAINNET, LedgerParams
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
    "genesis_hash",
    "genesis_state",
    "parse_genesis",
    "register_block_hook",
    "register_table",
    "register_tx",
]
