"""Genesis: the initial state, from a TOML or JSON document.

Parsing takes text, never a path: protocol/ does no I/O (node/storage reads files).
Every mistake an operator can make in the document gets a GenesisError naming the
field, because a wrong genesis silently forks a network.

    chain_id = "polnet-devnet"
    preset = "devnet"            # or "mainnet"
    genesis_time = 0             # ms
    [params]                     # optional overrides of the preset, by name
    epoch_length = 20
    [[accounts]]
    pubkey = "<64 hex chars>"    # or node_id = "12D3KooW..."
    balance = 1000000
    stake = 5000                 # optional, bonded at genesis
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from typing import Any

from protocol.encoding import sha256
from protocol.errors import DecodeError
from protocol.identity import public_key_from_node_id
from protocol.ledger.entries import Account, ChainMeta, Stake, Supply, ValidatorSnapshot
from protocol.ledger.errors import GenesisError
from protocol.ledger.evidence import EvidenceVerifier, consensus_evidence
from protocol.ledger.params import MAX_SUPPLY, LedgerParams, preset
from protocol.ledger.rules import compute_validator_set
from protocol.ledger.state import VALIDATOR_SETS, State

GENESIS_BEACON_DOMAIN = b"polnet/beacon/genesis/v1\x00"
MAX_GENESIS_ACCOUNTS = 100_000
MAX_GENESIS_BYTES = 64 * 1024 * 1024
MAX_CHAIN_ID_LEN = 64
_TOP_KEYS = {"chain_id", "preset", "genesis_time", "params", "accounts"}
_ACCOUNT_KEYS = {"pubkey", "node_id", "balance", "stake"}


@dataclass(frozen=True, slots=True)
class GenesisAccount:
    pubkey: bytes
    balance: int
    stake: int


@dataclass(frozen=True, slots=True)
class Genesis:
    chain_id: str
    params: LedgerParams
    time: int
    accounts: tuple[GenesisAccount, ...]

    @property
    def supply(self) -> int:
        return sum(a.balance + a.stake for a in self.accounts)


def parse_genesis(text: str, fmt: str = "toml") -> Genesis:
    """Parse and validate a genesis document (`fmt` is "toml" or "json")."""
    if len(text) > MAX_GENESIS_BYTES:
        raise GenesisError(f"genesis document larger than {MAX_GENESIS_BYTES} bytes")
    try:
        if fmt == "toml":
            doc: Any = tomllib.loads(text)
        elif fmt == "json":
            doc = json.loads(text)
        else:
            raise GenesisError(f"unknown genesis format {fmt!r} (toml or json)")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise GenesisError(f"genesis is not valid {fmt}: {exc}") from exc
    return genesis_from_dict(doc)


def genesis_from_dict(doc: Any) -> Genesis:
    if not isinstance(doc, dict):
        raise GenesisError("genesis must be a table/object at the top level")
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise GenesisError(f"unknown genesis keys: {', '.join(sorted(unknown))}")
    chain_id = doc.get("chain_id")
    if not isinstance(chain_id, str) or not 0 < len(chain_id.encode()) <= MAX_CHAIN_ID_LEN:
        raise GenesisError(f"chain_id must be a string of 1..{MAX_CHAIN_ID_LEN} bytes")
    params = _params(doc.get("preset", "devnet"), doc.get("params", {}))
    time = _int(doc.get("genesis_time", 0), "genesis_time")
    accounts = _accounts(doc.get("accounts"))
    genesis = Genesis(chain_id, params, time, accounts)
    _check_economics(genesis)
    return genesis


def _params(name: Any, overrides: Any) -> LedgerParams:
    if not isinstance(name, str):
        raise GenesisError("preset must be a string")
    if not isinstance(overrides, dict):
        raise GenesisError("params must be a table/object")
    try:
        base = preset(name)
        for key, value in overrides.items():
            _int(value, f"params.{key}")
        return base.replace(**overrides)
    except ValueError as exc:
        raise GenesisError(f"invalid params: {exc}") from exc


def _int(value: Any, name: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_SUPPLY:
        raise GenesisError(f"{name} must be an integer in [0, {MAX_SUPPLY}], got {value!r}")
    return value


def _accounts(raw: Any) -> tuple[GenesisAccount, ...]:
    if not isinstance(raw, list) or not raw:
        raise GenesisError("accounts must be a non-empty list")
    if len(raw) > MAX_GENESIS_ACCOUNTS:
        raise GenesisError(f"more than {MAX_GENESIS_ACCOUNTS} genesis accounts")
    seen: set[bytes] = set()
    out = []
    for i, entry in enumerate(raw):
        acct = _account(i, entry)
        if acct.pubkey in seen:
            raise GenesisError(f"accounts[{i}]: duplicate account {acct.pubkey.hex()}")
        seen.add(acct.pubkey)
        out.append(acct)
    return tuple(out)


def _account(i: int, entry: Any) -> GenesisAccount:
    where = f"accounts[{i}]"
    if not isinstance(entry, dict):
        raise GenesisError(f"{where} must be a table/object")
    unknown = set(entry) - _ACCOUNT_KEYS
    if unknown:
        raise GenesisError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    if ("pubkey" in entry) == ("node_id" in entry):
        raise GenesisError(f"{where}: give exactly one of pubkey (hex) or node_id")
    balance = _int(entry.get("balance", 0), f"{where}.balance")
    stake = _int(entry.get("stake", 0), f"{where}.stake")
    return GenesisAccount(_pubkey(where, entry), balance, stake)


def _pubkey(where: str, entry: dict[str, Any]) -> bytes:
    try:
        if "node_id" in entry:
            if not isinstance(entry["node_id"], str):
                raise GenesisError(f"{where}.node_id must be a string")
            return public_key_from_node_id(entry["node_id"])
        if not isinstance(entry["pubkey"], str):
            raise GenesisError(f"{where}.pubkey must be a hex string")
        key = bytes.fromhex(entry["pubkey"])
    except (ValueError, DecodeError) as exc:
        raise GenesisError(f"{where}: invalid key: {exc}") from exc
    if len(key) != 32:
        raise GenesisError(f"{where}.pubkey must be 32 bytes (64 hex chars), got {len(key)}")
    return key


def _check_economics(genesis: Genesis) -> None:
    if genesis.supply > MAX_SUPPLY:
        raise GenesisError(f"total supply {genesis.supply} exceeds {MAX_SUPPLY}")
    p = genesis.params
    validators = [a for a in genesis.accounts if a.stake >= p.min_validator_stake]
    if not validators:
        raise GenesisError(f"no account stakes min_validator_stake={p.min_validator_stake}: no validators")
    for i, a in enumerate(genesis.accounts):
        if 0 < a.stake < p.min_bond:
            raise GenesisError(f"accounts[{i}].stake {a.stake} below min_bond {p.min_bond}")


def genesis_state(genesis: Genesis, verify_evidence: EvidenceVerifier = consensus_evidence) -> State:
    """The state at height 0, with the epoch-0 validator set already snapshotted."""
    p = genesis.params
    state = State(p, verify_evidence)
    beacon = sha256(GENESIS_BEACON_DOMAIN + genesis.chain_id.encode() + p.params_hash())
    state.set_meta(ChainMeta(genesis.chain_id, 0, genesis.time, beacon, p.params_hash()))
    state.set_supply(Supply(genesis.supply, 0, 0))
    for a in genesis.accounts:
        state.set_account(a.pubkey, Account(a.balance, 0))
        state.set_stake(a.pubkey, Stake(a.stake, 0, False, 0))
    state.put(VALIDATOR_SETS, (0).to_bytes(8, "big"), ValidatorSnapshot(0, compute_validator_set(state)))
    return state
