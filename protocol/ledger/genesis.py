"""Genesis: the initial state and the chain's parameters, from a TOML or JSON document.

Parsing takes text, never a path: protocol/ does no I/O (node/ reads files). Every
mistake an operator can make in the document gets a GenesisError naming the field,
because a wrong genesis silently forks a network.

The document (format 2, what `polnet init`, `polnet genesis ...` and the swarm write):

    format = 2
    chain_id = "mynet"
    genesis_time = 0             # ms
    preset = "local"             # devnet | local | mainnet (protocol.chain_params)
    [ledger]                     # optional overrides of the preset, field by field;
    epoch_length = 20            #   unknown fields are errors. Tools write every field.
    [consensus]
    propose_timeout_ms = 1000
    [market]
    reveal_blocks = 10
    [[accounts]]
    node_id = "12D3KooW..."      # or pubkey = "<64 hex chars>"
    balance = 1000000
    [[gentxs]]                   # one per genesis validator, signed by its node key
    node_id = "12D3KooW..."      #   (protocol.ledger.gentx); the stake is bonded
    stake = 5000                 #   out of that account's balance
    address = "/ip4/.../tcp/4001/p2p/12D3KooW..."
    signed = "<hex of the sealed GenTx>"

A document without `format` was written before the chain's parameters were in genesis:
its `preset` names the ledger preset, `[params]` overrides ledger fields, accounts carry
their `stake` directly, and the consensus and market parameters are those of the
`local` preset (`LEGACY_PRESET`), which is what every daemon ran with such a file (the
market windows then lived in node/daemon/chain.py as REALTIME_MARKET).

What the document resolves to is hashed (`genesis_hash`): nodes exchange it when they
connect and refuse peers of another genesis.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from typing import Any

from protocol import chain_params as cp  # a module object: protocol.chain_params imports this package
from protocol.consensus.params import DEVNET as CONSENSUS_DEVNET
from protocol.consensus.params import ConsensusParams
from protocol.encoding import canonical_hash, sha256
from protocol.errors import ConfigError, DecodeError
from protocol.identity import node_id, public_key_from_node_id
from protocol.ledger.entries import Account, ChainMeta, Stake, Supply, ValidatorSnapshot
from protocol.ledger.errors import GenesisError
from protocol.ledger.evidence import EvidenceVerifier, consensus_evidence
from protocol.ledger.gentx import SignedGenTx, open_gentx
from protocol.ledger.params import MAX_SUPPLY, LedgerParams
from protocol.ledger.rules import compute_validator_set
from protocol.ledger.state import VALIDATOR_SETS, State, register_table
from protocol.market.params import DEVNET as MARKET_DEVNET
from protocol.market.params import MarketParams

GENESIS_BEACON_DOMAIN = b"polnet/beacon/genesis/v1\x00"
GENESIS_HASH_DOMAIN = b"polnet/genesis/v1\x00"
MAX_GENESIS_ACCOUNTS = 100_000
MAX_GENESIS_BYTES = 64 * 1024 * 1024
MAX_CHAIN_ID_LEN = 64
#: The document format this module writes; documents without `format` are format 1.
FORMAT = 2
#: Preset whose consensus and market parameters a format-1 document implies.
LEGACY_PRESET = "local"
#: The state table holding the consensus parameters (one record under key b"").
CONSENSUS_PARAMS = "consensus/params"
_TOP_KEYS_V1 = {"chain_id", "preset", "genesis_time", "params", "accounts"}
_ACCOUNT_KEYS_V1 = {"pubkey", "node_id", "balance", "stake"}
_ACCOUNT_KEYS = {"pubkey", "node_id", "balance"}
_GENTX_KEYS = {"node_id", "stake", "address", "signed"}

register_table(CONSENSUS_PARAMS, ConsensusParams)


@dataclass(frozen=True, slots=True)
class GenesisAccount:
    pubkey: bytes
    balance: int  # liquid at genesis (a gentx's stake already taken out)
    stake: int  # bonded at genesis


@dataclass(frozen=True, slots=True)
class Genesis:
    chain_id: str
    params: LedgerParams
    time: int
    accounts: tuple[GenesisAccount, ...]
    #: None: not stored in the state. A simulation that builds a Genesis itself and
    #: configures its consensus core directly leaves it out (and keeps its state roots,
    #: hence its seeded runs, as they were); every genesis document sets it.
    consensus: ConsensusParams | None = None
    market: MarketParams = MARKET_DEVNET
    gentxs: tuple[SignedGenTx, ...] = ()
    #: The preset the document named (provenance only: the resolved values count).
    preset: str = "devnet"
    #: The document format it was read from (1: written before params were in genesis).
    format: int = FORMAT
    _hash: list[bytes] = field(default_factory=list, repr=False, compare=False)

    @property
    def supply(self) -> int:
        return sum(a.balance + a.stake for a in self.accounts)

    @property
    def consensus_params(self) -> ConsensusParams:
        """The consensus parameters to run (the devnet ones where none were given)."""
        return CONSENSUS_DEVNET if self.consensus is None else self.consensus

    @property
    def chain_params(self) -> cp.ChainParams:
        return cp.ChainParams(self.params, self.consensus_params, self.market)

    def hash(self) -> bytes:
        """`genesis_hash(self)`, computed once."""
        if not self._hash:
            self._hash.append(genesis_hash(self))
        return self._hash[0]


def genesis_hash(g: Genesis) -> bytes:
    """What nodes compare when they connect: everything the genesis resolves to (chain
    id, time, every parameter, every account and gentx), independent of the document's
    syntax, field order or account order, so TOML and JSON of one genesis agree."""
    tables = g.chain_params.as_tables()
    header = canonical_hash([g.chain_id, g.time, [[s, sorted(tables[s].items())] for s in cp.SECTIONS]])
    accounts = sha256(b"".join(
        a.pubkey + a.balance.to_bytes(8, "big") + a.stake.to_bytes(8, "big")
        for a in sorted(g.accounts, key=lambda a: a.pubkey)
    ))
    gentxs = sha256(b"".join(sha256(t.raw) for t in sorted(g.gentxs, key=lambda t: t.pubkey)))
    return sha256(GENESIS_HASH_DOMAIN + header + accounts + gentxs)


def parse_genesis(text: str, fmt: str = "toml", *, draft: bool = False) -> Genesis:
    """Parse and validate a genesis document (`fmt` is "toml" or "json"); `draft`
    accepts one still being assembled (no accounts or validators yet)."""
    if len(text) > MAX_GENESIS_BYTES:
        raise GenesisError(f"genesis document larger than {MAX_GENESIS_BYTES} bytes")
    return genesis_from_dict(load_document(text, fmt), draft=draft)


def load_document(text: str, fmt: str) -> dict[str, Any]:
    """The document as a table, before any validation."""
    try:
        if fmt == "toml":
            doc: Any = tomllib.loads(text)
        elif fmt == "json":
            doc = json.loads(text)
        else:
            raise GenesisError(f"unknown genesis format {fmt!r} (toml or json)")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise GenesisError(f"genesis is not valid {fmt}: {exc}") from exc
    if not isinstance(doc, dict):
        raise GenesisError("genesis must be a table/object at the top level")
    return doc


def genesis_from_dict(doc: Any, *, draft: bool = False) -> Genesis:
    if not isinstance(doc, dict):
        raise GenesisError("genesis must be a table/object at the top level")
    version = doc.get("format", 1)
    if version == 1 and "format" not in doc:
        return _legacy(doc, draft)
    if type(version) is not int or version != FORMAT:
        raise GenesisError(f"format must be {FORMAT} (or absent: a format-1 document), got {version!r}")
    _unknown(doc, _top_keys(), "genesis keys")
    chain_id = _chain_id(doc.get("chain_id"))
    preset = doc.get("preset", "devnet")
    params = _params(preset, {s: (s, doc.get(s, {})) for s in cp.SECTIONS})
    time = _int(doc.get("genesis_time", 0), "genesis_time")
    balances = _accounts(doc.get("accounts", []), _ACCOUNT_KEYS, draft)
    gentxs = _gentxs(doc.get("gentxs", []), chain_id)
    accounts = _bond(balances, gentxs, params.ledger)
    genesis = Genesis(chain_id, params.ledger, time, accounts, params.consensus, params.market, gentxs,
                      preset)
    _check_economics(genesis, draft)
    return genesis


def _legacy(doc: dict[str, Any], draft: bool) -> Genesis:
    """A format-1 document: ledger preset and overrides, stakes written directly."""
    if set(doc) - _TOP_KEYS_V1:
        extra = sorted(set(doc) - _TOP_KEYS_V1)
        newer = set(extra) & _top_keys()
        hint = f" ({', '.join(sorted(newer))} need format = {FORMAT})" if newer else ""
        raise GenesisError(f"unknown genesis keys: {', '.join(extra)}{hint}")
    chain_id = _chain_id(doc.get("chain_id"))
    preset = doc.get("preset", "devnet")
    ledger = _params(preset, {"ledger": ("params", doc.get("params", {}))}).ledger
    implied = cp.chain_preset(LEGACY_PRESET)
    params = cp.ChainParams(ledger, implied.consensus, implied.market)
    _check(params)
    time = _int(doc.get("genesis_time", 0), "genesis_time")
    raw = _accounts(doc.get("accounts"), _ACCOUNT_KEYS_V1, draft)
    accounts = tuple(GenesisAccount(pub, bal, stake) for pub, bal, stake in raw)
    genesis = Genesis(chain_id, ledger, time, accounts, params.consensus, params.market, (), preset, 1)
    _check_economics(genesis, draft)
    return genesis


def _top_keys() -> set[str]:
    return {"format", "chain_id", "preset", "genesis_time", *cp.SECTIONS, "accounts", "gentxs"}


def _unknown(doc: dict[str, Any], known: set[str], what: str) -> None:
    unknown = set(doc) - known
    if unknown:
        raise GenesisError(f"unknown {what}: {', '.join(sorted(unknown))}")


def _chain_id(chain_id: Any) -> str:
    if not isinstance(chain_id, str) or not 0 < len(chain_id.encode()) <= MAX_CHAIN_ID_LEN:
        raise GenesisError(f"chain_id must be a string of 1..{MAX_CHAIN_ID_LEN} bytes, got {chain_id!r}")
    return chain_id


def _params(name: Any, sections: dict[str, tuple[str, Any]]) -> cp.ChainParams:
    """The preset with each section's overrides; `sections` maps a section to the
    document key it came from and its table."""
    try:
        params = cp.chain_preset(name)
        for section, (key, overrides) in sections.items():
            if not isinstance(overrides, dict):
                raise GenesisError(f"{key} must be a table/object of parameter overrides")
            params = cp.with_overrides(params, section, overrides, key)
    except GenesisError:
        raise
    except ConfigError as exc:
        raise GenesisError(str(exc)) from None
    _check(params)
    return params


def _check(params: cp.ChainParams) -> None:
    try:
        cp.check_chain_params(params)
    except ConfigError as exc:
        raise GenesisError(f"invalid parameters: {exc}") from None


def _int(value: Any, name: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_SUPPLY:
        raise GenesisError(f"{name} must be an integer in [0, {MAX_SUPPLY}], got {value!r}")
    return value


def _accounts(raw: Any, keys: set[str], draft: bool) -> list[tuple[bytes, int, int]]:
    if not isinstance(raw, list) or (not raw and not draft):
        raise GenesisError("accounts must be a non-empty list")
    if len(raw) > MAX_GENESIS_ACCOUNTS:
        raise GenesisError(f"more than {MAX_GENESIS_ACCOUNTS} genesis accounts")
    seen: set[bytes] = set()
    out = []
    for i, entry in enumerate(raw):
        acct = _account(i, entry, keys)
        if acct[0] in seen:
            raise GenesisError(f"accounts[{i}]: duplicate account {node_id(acct[0])}")
        seen.add(acct[0])
        out.append(acct)
    return out


def _account(i: int, entry: Any, keys: set[str]) -> tuple[bytes, int, int]:
    where = f"accounts[{i}]"
    if not isinstance(entry, dict):
        raise GenesisError(f"{where} must be a table/object")
    unknown = set(entry) - keys
    if unknown:
        hint = " (stake comes from a signed gentx in format 2)" if "stake" in unknown else ""
        raise GenesisError(f"{where}: unknown keys {', '.join(sorted(unknown))}{hint}")
    if ("pubkey" in entry) == ("node_id" in entry):
        raise GenesisError(f"{where}: give exactly one of pubkey (hex) or node_id")
    balance = _int(entry.get("balance", 0), f"{where}.balance")
    stake = _int(entry.get("stake", 0), f"{where}.stake")
    return _pubkey(where, entry), balance, stake


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


def _gentxs(raw: Any, chain_id: str) -> tuple[SignedGenTx, ...]:
    if not isinstance(raw, list):
        raise GenesisError("gentxs must be a list")
    if len(raw) > MAX_GENESIS_ACCOUNTS:
        raise GenesisError(f"more than {MAX_GENESIS_ACCOUNTS} gentxs")
    return tuple(gentx_from_entry(entry, chain_id, f"gentxs[{i}]") for i, entry in enumerate(raw))


def gentx_from_entry(entry: Any, chain_id: str, where: str = "gentx") -> SignedGenTx:
    """A gentx as a genesis document (or a gentx file) lists it: the signed record plus
    readable copies of its fields, which must say what the signature covers."""
    if not isinstance(entry, dict):
        raise GenesisError(f"{where} must be a table/object")
    _unknown(entry, _GENTX_KEYS, f"keys in {where}")
    signed = entry.get("signed")
    if not isinstance(signed, str):
        raise GenesisError(f"{where}.signed must be the hex of a sealed gentx")
    try:
        raw = bytes.fromhex(signed)
    except ValueError:
        raise GenesisError(f"{where}.signed is not hex") from None
    tx = open_gentx(raw, chain_id, where)
    # Rule: the readable fields are the signed ones (a reader must not be misled).
    shown = {"node_id": node_id(tx.pubkey), "stake": tx.stake, "address": tx.address}
    for key, value in shown.items():
        if key in entry and entry[key] != value:
            raise GenesisError(f"{where}.{key} is {entry[key]!r} but the signed gentx says {value!r}")
    return tx


def gentx_entry(tx: SignedGenTx) -> dict[str, Any]:
    """The document form of a gentx (inverse of `gentx_from_entry`)."""
    return {"node_id": node_id(tx.pubkey), "stake": tx.stake, "address": tx.address, "signed": tx.raw.hex()}


def _bond(
    balances: list[tuple[bytes, int, int]], gentxs: tuple[SignedGenTx, ...], p: LedgerParams
) -> tuple[GenesisAccount, ...]:
    """Bond each gentx's stake out of its signer's balance."""
    stakes: dict[bytes, int] = {}
    index = {pub: i for i, (pub, _, _) in enumerate(balances)}
    for i, tx in enumerate(gentxs):
        where = f"gentxs[{i}] ({node_id(tx.pubkey)})"
        # Rule: one gentx per validator.
        if tx.pubkey in stakes:
            raise GenesisError(f"{where}: a second gentx for this node")
        # Rule: the validator has a genesis account to bond from.
        if tx.pubkey not in index:
            raise GenesisError(f"{where}: no genesis account for this node (polnet genesis add-account)")
        balance = balances[index[tx.pubkey]][1]
        # Rule: the stake comes out of the validator's own balance.
        if tx.stake > balance:
            raise GenesisError(f"{where}: stake {tx.stake} exceeds the account's balance {balance}")
        # Rule: a gentx makes a validator, so it bonds at least the validator minimum.
        if tx.stake < p.min_validator_stake:
            raise GenesisError(f"{where}: stake {tx.stake} below min_validator_stake {p.min_validator_stake}")
        # Rule: the address a gentx gives is the signer's own node (others will dial it).
        if tx.address and not tx.address.endswith(f"/p2p/{node_id(tx.pubkey)}"):
            raise GenesisError(f"{where}: address {tx.address!r} does not end in /p2p/{node_id(tx.pubkey)}")
        stakes[tx.pubkey] = tx.stake
    return tuple(GenesisAccount(pub, bal - stakes.get(pub, 0), stakes.get(pub, 0))
                 for pub, bal, _ in balances)


def _check_economics(genesis: Genesis, draft: bool) -> None:
    if genesis.supply > MAX_SUPPLY:
        raise GenesisError(f"total supply {genesis.supply} exceeds {MAX_SUPPLY}")
    p = genesis.params
    validators = [a for a in genesis.accounts if a.stake >= p.min_validator_stake]
    if not validators and not draft:
        raise GenesisError(f"no account stakes min_validator_stake={p.min_validator_stake}: no validators")
    for i, a in enumerate(genesis.accounts):
        if 0 < a.stake < p.min_bond:
            raise GenesisError(f"accounts[{i}].stake {a.stake} below min_bond {p.min_bond}")


def genesis_state(genesis: Genesis, verify_evidence: EvidenceVerifier = consensus_evidence) -> State:
    """The state at height 0, with the epoch-0 validator set already snapshotted and the
    consensus parameters stored (so the state root covers them; the ledger's are in
    `meta.params_hash`, the market's in its own table once it is installed)."""
    _check(genesis.chain_params)
    p = genesis.params
    state = State(p, verify_evidence)
    beacon = sha256(GENESIS_BEACON_DOMAIN + genesis.chain_id.encode() + p.params_hash())
    state.set_meta(ChainMeta(genesis.chain_id, 0, genesis.time, beacon, p.params_hash()))
    state.set_supply(Supply(genesis.supply, 0, 0))
    for a in genesis.accounts:
        state.set_account(a.pubkey, Account(a.balance, 0))
        state.set_stake(a.pubkey, Stake(a.stake, 0, False, 0))
    state.put(VALIDATOR_SETS, (0).to_bytes(8, "big"), ValidatorSnapshot(0, compute_validator_set(state)))
    if genesis.consensus is not None:
        state.put(CONSENSUS_PARAMS, b"", genesis.consensus)
    return state


def consensus_params(state: State) -> ConsensusParams | None:
    """The consensus parameters this chain's genesis stored (None in a bare test state)."""
    value: ConsensusParams | None = state.get(CONSENSUS_PARAMS, b"")
    return value
