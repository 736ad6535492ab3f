"""The genesis ceremony's document steps: a draft, accounts, gentxs signed by each
validator's key, collect; every forged, misdirected or inconsistent gentx is refused."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from protocol.identity import Keypair
from protocol.ledger import Ledger, ceremony, parse_genesis
from protocol.ledger.errors import GenesisError
from protocol.ledger.genesis import genesis_from_dict, gentx_entry
from protocol.ledger.gentx import open_gentx, sign_gentx
from protocol.market.chain import market_genesis_state

KEYS = [Keypair.derive(f"ceremony/{i}") for i in range(4)]
BALANCE = 1_000_000_000
STAKE = 10_000_000


def _addr(i: int, key: Keypair) -> str:
    return f"/ip4/127.0.0.1/tcp/{4100 + i}/p2p/{key.node_id}"


def _draft(**overrides: dict[str, int]) -> dict[str, Any]:
    doc = ceremony.new_document("ceremony-net", "local", 1_700_000_000_000, overrides)
    for k in KEYS:
        doc = ceremony.add_account(doc, k.public, BALANCE)
    return doc


def _gentxs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [ceremony.make_gentx(doc, k, STAKE, _addr(i, k)) for i, k in enumerate(KEYS)]


def test_the_ceremony_makes_a_genesis_where_every_signer_is_a_validator() -> None:
    doc = _draft(market={"reveal_blocks": 12})
    final = ceremony.collect(doc, _gentxs(doc))
    genesis = genesis_from_dict(final)
    assert genesis.market.reveal_blocks == 12
    assert [(a.balance, a.stake) for a in genesis.accounts] == [(BALANCE - STAKE, STAKE)] * 4
    ledger = Ledger(market_genesis_state(genesis))
    assert sorted(v.pubkey for v in ledger.validators()) == sorted(k.public for k in KEYS)
    assert [t.address for t in genesis.gentxs] == [_addr(i, k) for i, k in enumerate(KEYS)]
    # The written document reads back as the same genesis.
    assert parse_genesis(json.dumps(final), "json").hash() == genesis.hash()


def test_a_draft_writes_every_parameter_out() -> None:
    doc = ceremony.new_document("x", "local")
    assert set(doc["market"]) >= {"reveal_blocks", "train_base_blocks", "min_price_per_gflop"}
    assert doc["market"]["train_base_blocks"] == 120
    assert set(doc["consensus"]) >= {"propose_timeout_ms", "max_block_txs"}


@pytest.mark.parametrize(
    ("preset", "overrides", "message"),
    [
        ("testnet", {}, "unknown preset 'testnet'"),
        ("local", {"market": {"reveal": 3}}, r"unknown market parameter market\.reveal"),
        ("local", {"ledger": {"epoch_length": 0}}, "epoch_length"),
    ],
)
def test_a_bad_draft_is_refused_before_it_is_written(preset: str, overrides: Any, message: str) -> None:
    with pytest.raises(GenesisError, match=message):
        ceremony.new_document("x", preset, 0, overrides)


def test_an_account_is_added_once() -> None:
    doc = _draft()
    with pytest.raises(GenesisError, match="already in the genesis"):
        ceremony.add_account(doc, KEYS[0].public, 5)


def test_a_draft_without_validators_is_not_a_genesis() -> None:
    with pytest.raises(GenesisError, match="no validators"):
        ceremony.collect(_draft(), [])


def _forged(entry: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(entry)
    out.update(changes)
    return out


def _with_gentx(doc: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "gentxs": [entry]}


def test_gentxs_that_do_not_say_what_they_sign_are_refused() -> None:
    doc = _draft()
    good = ceremony.make_gentx(doc, KEYS[0], STAKE, _addr(0, KEYS[0]))
    cases = [
        (_forged(good, stake=STAKE * 2), "stake is .* but the signed gentx says"),
        (_forged(good, node_id=KEYS[1].node_id), "node_id is .* but the signed gentx says"),
        (
            _forged(good, signed=good["signed"][:-2] + ("00" if good["signed"][-2:] != "00" else "11")),
            "not a valid signed gentx",
        ),
        (_forged(good, signed="zz"), "is not hex"),
        (_forged(good, extra=1), "unknown keys in gentxs"),
    ]
    for entry, message in cases:
        with pytest.raises(GenesisError, match=message):
            genesis_from_dict(_with_gentx(doc, entry))


def test_a_gentx_signed_for_another_chain_is_refused() -> None:
    doc = _draft()
    raw = sign_gentx(KEYS[0], "another-chain", STAKE)
    entry = gentx_entry(open_gentx(raw, "another-chain"))
    with pytest.raises(GenesisError, match="not a valid signed gentx for chain 'ceremony-net'"):
        genesis_from_dict(_with_gentx(doc, entry))


@pytest.mark.parametrize(
    ("key_index", "stake", "address", "message"),
    [
        (0, BALANCE + 1, "", "exceeds the account's balance"),
        (0, 50, "", "below min_validator_stake"),
        (0, STAKE, "/ip4/1.2.3.4/tcp/1/p2p/" + KEYS[1].node_id, "does not end in /p2p/"),
    ],
)
def test_a_gentx_the_genesis_cannot_honour_is_refused(
    key_index: int, stake: int, address: str, message: str
) -> None:
    with pytest.raises(GenesisError, match=message):
        ceremony.make_gentx(_draft(), KEYS[key_index], stake, address)


def test_a_gentx_without_an_account_or_twice_is_refused() -> None:
    doc = _draft()
    stranger = Keypair.derive("ceremony/stranger")
    with pytest.raises(GenesisError, match="no genesis account for this node"):
        ceremony.make_gentx(doc, stranger, STAKE)
    entry = ceremony.make_gentx(doc, KEYS[0], STAKE)
    with pytest.raises(GenesisError, match="a second gentx for this node"):
        ceremony.collect(doc, [entry, entry])


def test_format_2_accounts_carry_no_stake_of_their_own() -> None:
    doc = _draft()
    doc["accounts"][0]["stake"] = STAKE
    with pytest.raises(GenesisError, match="stake comes from a signed gentx"):
        genesis_from_dict(doc, draft=True)
