"""The daemon's narrow view of the chain: genesis documents and the application.

protocol/ledger owns the genesis format and its validation; this module is the single
place the CLI and the daemon reach it, so that a format change touches one file.
"""

from __future__ import annotations

import json
from pathlib import Path

from protocol.errors import ConfigError
from protocol.identity import Keypair

#: A genesis file lists accounts and stakes; anything this large is not one.
MAX_GENESIS_BYTES = 4 * 1024 * 1024
#: Devnet balances: enough to pay fees and bond for a long demo.
DEVNET_BALANCE = 1_000_000_000
DEVNET_STAKE = 10_000_000


def genesis_document(chain_id: str, members: list[Keypair]) -> dict[str, object]:
    """A devnet genesis where every member is funded and bonded as a validator."""
    return {
        "chain_id": chain_id,
        "params": "devnet",
        "accounts": [{"pubkey": k.public.hex(), "balance": DEVNET_BALANCE} for k in members],
        "stakes": [{"pubkey": k.public.hex(), "amount": DEVNET_STAKE} for k in members],
    }


def single_node_genesis(chain_id: str, key: Keypair) -> bytes:
    return json.dumps(genesis_document(chain_id, [key]), indent=2, sort_keys=True).encode()


def read_genesis(path: Path) -> dict[str, object]:
    try:
        raw = path.read_bytes()[: MAX_GENESIS_BYTES + 1]
    except FileNotFoundError:
        raise ConfigError(f"{path}: genesis file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read genesis: {exc.strerror}") from None
    if len(raw) > MAX_GENESIS_BYTES:
        raise ConfigError(f"{path}: genesis larger than {MAX_GENESIS_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{path}: genesis is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: genesis must be a JSON object")
    return doc


def check_genesis_file(path: Path, chain_id: str) -> None:
    """Refuse a genesis for another chain before anything is written."""
    doc = read_genesis(path)
    if doc.get("chain_id") != chain_id:
        raise ConfigError(f"{path}: genesis is for chain {doc.get('chain_id')!r}, config says {chain_id!r}")
