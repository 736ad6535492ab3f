"""Genesis documents: valid TOML and JSON agree; every operator mistake is a GenesisError."""

from __future__ import annotations

import json

import pytest

from protocol.ledger import Ledger, parse_genesis
from protocol.ledger.errors import GenesisError
from protocol.ledger.params import DEVNET, MAINNET
from protocol.ledger.primitives import audit_supply
from tests.test_ledger_support import KEYS, PUB

GOOD_TOML = f"""
chain_id = "polnet-devnet"
preset = "devnet"
genesis_time = 1700000000000
[params]
epoch_length = 5
[[accounts]]
pubkey = "{PUB[0].hex()}"
balance = 1000
stake = 500
[[accounts]]
node_id = "{KEYS[1].node_id}"
balance = 20
"""


def _doc(**changes: object) -> str:
    doc: dict[str, object] = {
        "chain_id": "c",
        "accounts": [{"pubkey": PUB[0].hex(), "balance": 10, "stake": 200}],
    }
    doc.update(changes)
    return json.dumps(doc)


def test_toml_genesis_builds_a_state_with_supply_and_validators() -> None:
    g = parse_genesis(GOOD_TOML)
    assert g.chain_id == "polnet-devnet"
    assert g.params == DEVNET.replace(epoch_length=5)
    assert g.accounts[1].pubkey == PUB[1]
    led = Ledger.from_genesis(g)
    assert led.state.supply.genesis == 1520
    audit_supply(led.state)
    assert [(v.pubkey, v.power) for v in led.validators()] == [(PUB[0], 500)]


def test_json_and_toml_of_the_same_genesis_give_the_same_root() -> None:
    g = parse_genesis(GOOD_TOML)
    as_json = json.dumps(
        {
            "chain_id": "polnet-devnet",
            "preset": "devnet",
            "genesis_time": 1700000000000,
            "params": {"epoch_length": 5},
            "accounts": [
                {"pubkey": PUB[0].hex(), "balance": 1000, "stake": 500},
                {"node_id": KEYS[1].node_id, "balance": 20},
            ],
        }
    )
    assert Ledger.from_genesis(parse_genesis(as_json, "json")).app_hash() == Ledger.from_genesis(g).app_hash()


def test_mainnet_preset_and_different_params_change_the_genesis_root() -> None:
    dev = Ledger.from_genesis(parse_genesis(_doc(), "json")).app_hash()
    assert (
        parse_genesis(
            _doc(preset="mainnet", accounts=[{"pubkey": PUB[0].hex(), "stake": 10**7}]), "json"
        ).params
        == MAINNET
    )
    tweaked = Ledger.from_genesis(parse_genesis(_doc(params={"base_fee": 11}), "json")).app_hash()
    assert dev != tweaked


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        ("chain_id = ", "toml", "not valid toml"),
        ("{", "json", "not valid json"),
        ("[]", "json", "top level"),
        (_doc(), "yaml", "unknown genesis format"),
        (_doc(extra=1), "json", "unknown genesis keys: extra"),
        (_doc(chain_id=""), "json", "chain_id"),
        (_doc(chain_id="x" * 65), "json", "chain_id"),
        (_doc(preset="testnet"), "json", "unknown preset 'testnet'"),
        (_doc(params={"block_reward": 5}), "json", r"unknown ledger parameter params\.block_reward"),
        (_doc(params={"base_fee": -1}), "json", "params.base_fee"),
        (_doc(params={"unbonding_period": 1}), "json", "unbonding_period must exceed"),
        (_doc(params={"fee_burn_ppm": 2_000_000}), "json", "fee_burn_ppm"),
        (_doc(genesis_time="now"), "json", "genesis_time"),
        (_doc(accounts=[]), "json", "non-empty"),
        (_doc(accounts=[5]), "json", r"accounts\[0\] must be"),
        (_doc(accounts=[{"balance": 1}]), "json", "exactly one of pubkey"),
        (_doc(accounts=[{"pubkey": PUB[0].hex(), "node_id": KEYS[0].node_id}]), "json", "exactly one"),
        (_doc(accounts=[{"pubkey": "zz", "stake": 200}]), "json", "invalid key"),
        (_doc(accounts=[{"pubkey": "ab" * 31, "stake": 200}]), "json", "32 bytes"),
        (_doc(accounts=[{"node_id": "12D3KooWnot-a-key", "stake": 200}]), "json", "invalid key"),
        (_doc(accounts=[{"pubkey": PUB[0].hex(), "balance": -5, "stake": 200}]), "json", "balance"),
        (_doc(accounts=[{"pubkey": PUB[0].hex(), "balance": 1.5, "stake": 200}]), "json", "balance"),
        (_doc(accounts=[{"pubkey": PUB[0].hex(), "stake": 200, "role": "x"}]), "json", "unknown keys role"),
        (
            _doc(accounts=[{"pubkey": PUB[0].hex(), "stake": 200}, {"pubkey": PUB[0].hex(), "balance": 1}]),
            "json",
            "duplicate account",
        ),
        (_doc(accounts=[{"pubkey": PUB[0].hex(), "balance": 10}]), "json", "no validators"),
        (
            _doc(
                accounts=[
                    {"pubkey": PUB[0].hex(), "stake": 2**62},
                    {"pubkey": PUB[1].hex(), "balance": 2**62},
                ]
            ),
            "json",
            "exceeds",
        ),
        (
            _doc(
                params={"min_bond": 5},
                accounts=[{"pubkey": PUB[0].hex(), "stake": 200}, {"pubkey": PUB[1].hex(), "stake": 3}],
            ),
            "json",
            "below min_bond",
        ),
    ],
)
def test_invalid_genesis_is_refused_with_a_clear_message(text: str, fmt: str, message: str) -> None:
    with pytest.raises(GenesisError, match=message):
        parse_genesis(text, fmt)
