"""The genesis ceremony's steps as pure functions over the genesis document.

As Cosmos/CometBFT networks start: a coordinator writes a draft (`new_document`), adds
each participant's account (`add_account`), every validator signs its own stake with its
node key (`make_gentx`, on its own machine), the coordinator folds the signed gentxs in
(`collect`), and everyone checks the result (`protocol.ledger.genesis.parse_genesis`)
and compares its hash. Each step re-validates the whole draft, so a mistake is caught
at the step that made it, not at the first block. The CLI (`polnet genesis ...`) reads
and writes the files; nothing here does I/O.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from protocol import chain_params as cp
from protocol.errors import ConfigError
from protocol.identity import Keypair, node_id
from protocol.ledger.errors import GenesisError
from protocol.ledger.genesis import FORMAT, genesis_from_dict, gentx_entry, gentx_from_entry
from protocol.ledger.gentx import open_gentx, sign_gentx


def new_document(
    chain_id: str,
    preset: str = "local",
    genesis_time: int = 0,
    overrides: Mapping[str, Mapping[str, int]] | None = None,
) -> dict[str, Any]:
    """A draft with every parameter written out (the preset's values plus `overrides`,
    section -> field -> value), no accounts and no gentxs. Writing every field, not just
    the preset's name, keeps the chain's parameters in the file: a later build whose
    preset changed cannot change this chain."""
    try:
        params = cp.chain_preset(preset)
        for section, fields in (overrides or {}).items():
            params = cp.with_overrides(params, section, fields)
    except ConfigError as exc:
        raise GenesisError(str(exc)) from None
    doc: dict[str, Any] = {"format": FORMAT, "chain_id": chain_id, "genesis_time": genesis_time,
                           "preset": preset}
    doc.update(params.as_tables())
    doc["accounts"] = []
    doc["gentxs"] = []
    genesis_from_dict(doc, draft=True)
    return doc


def add_account(doc: dict[str, Any], pubkey: bytes, balance: int) -> dict[str, Any]:
    """The draft with one more funded account (a validator's, or anyone's)."""
    genesis = genesis_from_dict(doc, draft=True)
    # Rule: one entry per account (a second one would be ambiguous, not additive).
    if any(a.pubkey == pubkey for a in genesis.accounts):
        raise GenesisError(f"account {node_id(pubkey)} is already in the genesis")
    out = copy.deepcopy(doc)
    out.setdefault("accounts", []).append({"node_id": node_id(pubkey), "balance": balance})
    genesis_from_dict(out, draft=True)
    return out


def make_gentx(doc: dict[str, Any], key: Keypair, stake: int, address: str = "") -> dict[str, Any]:
    """This validator's signed gentx for the draft's chain, checked against the draft
    (its account exists and can bond `stake`) before it is signed."""
    genesis = genesis_from_dict(doc, draft=True)
    raw = sign_gentx(key, genesis.chain_id, stake, address)
    entry = gentx_entry(open_gentx(raw, genesis.chain_id))
    trial = copy.deepcopy(doc)
    trial["gentxs"] = [e for e in trial.get("gentxs", []) if e.get("node_id") != key.node_id] + [entry]
    genesis_from_dict(trial, draft=True)
    return entry


def collect(doc: dict[str, Any], entries: list[Any]) -> dict[str, Any]:
    """The final genesis: the draft with the validators' gentxs added. It must now be a
    complete genesis (accounts, at least one validator), or nothing is written."""
    out = copy.deepcopy(doc)
    gentxs = out.setdefault("gentxs", [])
    if not isinstance(gentxs, list):
        raise GenesisError("gentxs must be a list")
    chain_id = genesis_from_dict(doc, draft=True).chain_id
    for i, entry in enumerate(entries):
        gentxs.append(gentx_entry(gentx_from_entry(entry, chain_id, f"gentx file {i + 1}")))
    genesis_from_dict(out)
    return out
