"""Chain parameters live in genesis: one preset table, overrides by field, checked on
load, covered by the state root, and format-1 documents keep the parameters they
implied."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from node.daemon.chain import Chain, document_bytes, genesis_document, read_genesis
from protocol.chain_params import LOCAL_MARKET, PRESETS, chain_preset, check_chain_params, with_overrides
from protocol.consensus import params as consensus
from protocol.errors import ConfigError
from protocol.identity import Keypair
from protocol.ledger import Ledger, genesis_hash, parse_genesis
from protocol.ledger.errors import GenesisError
from protocol.ledger.genesis import CONSENSUS_PARAMS, LEGACY_PRESET, consensus_params
from protocol.market import params as market
from protocol.market.chain import load_market, market_genesis_state

KEYS = [Keypair.derive(f"chain-params/{i}") for i in range(3)]


def _doc(**changes: object) -> dict[str, object]:
    doc = genesis_document("params-test", KEYS)
    doc.update(changes)
    return doc


def _root(doc: dict[str, object]) -> bytes:
    return Ledger(market_genesis_state(parse_genesis(json.dumps(doc), "json"))).app_hash()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_passes_its_own_checks(name: str) -> None:
    check_chain_params(PRESETS[name])


def test_local_preset_is_devnet_with_wall_clock_windows() -> None:
    local, dev = PRESETS["local"], PRESETS["devnet"]
    assert local.ledger == dev.ledger and local.consensus == dev.consensus
    assert local.market == LOCAL_MARKET
    assert (LOCAL_MARKET.train_base_blocks, LOCAL_MARKET.commit_blocks) == (120, 60)
    assert LOCAL_MARKET.min_price_per_gflop == market.DEVNET.min_price_per_gflop
    assert PRESETS["mainnet"].consensus == consensus.MAINNET


def test_an_unknown_preset_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown preset 'testnet' \(known: devnet, local, mainnet\)"):
        chain_preset("testnet")


@pytest.mark.parametrize(
    ("section", "overrides", "message"),
    [
        (
            "market",
            {"reveal_block": 3},
            r"unknown market parameter market\.reveal_block; did you mean 'reveal_blocks'",
        ),
        ("market", {"reveal_blocks": "3"}, r"market\.reveal_blocks must be an integer"),
        ("consensus", {"propose_timeout_ms": -1}, r"consensus\.propose_timeout_ms must be an integer"),
        ("ledger", {"unbonding_period": 1}, "unbonding_period must exceed max_evidence_age"),
        ("chain", {"x": 1}, "unknown parameter section 'chain'"),
    ],
)
def test_overrides_name_the_field_they_got_wrong(
    section: str, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        with_overrides(PRESETS["local"], section, overrides)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            dataclasses.replace(consensus.DEVNET, timeout_max_ms=10),
            "timeout_max_ms 10 is below a base timeout",
        ),
        (dataclasses.replace(consensus.DEVNET, max_block_txs=0), "max_block_txs must be in 1"),
        (dataclasses.replace(consensus.DEVNET, max_clock_drift_ms=0), "max_clock_drift_ms"),
    ],
)
def test_consensus_params_that_cannot_run_a_chain_are_refused(
    params: consensus.ConsensusParams, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        check_chain_params(dataclasses.replace(PRESETS["local"], consensus=params))


def test_a_market_override_reaches_the_state_and_changes_the_root() -> None:
    base = _root(_doc())
    doc = _doc(market={"reveal_blocks": 11})
    genesis = parse_genesis(json.dumps(doc), "json")
    assert genesis.market.reveal_blocks == 11
    assert load_market(market_genesis_state(genesis)).params.reveal_blocks == 11
    assert _root(doc) != base


def test_consensus_and_ledger_overrides_change_the_root_too() -> None:
    base = _root(_doc())
    assert _root(_doc(consensus={"propose_timeout_ms": 1500})) != base
    assert _root(_doc(ledger={"base_fee": 11})) != base
    state = market_genesis_state(
        parse_genesis(json.dumps(_doc(consensus={"propose_timeout_ms": 1500})), "json")
    )
    stored = consensus_params(state)
    assert stored is not None and stored.propose_timeout_ms == 1500
    assert state.get(CONSENSUS_PARAMS, b"") == stored


def test_an_invalid_override_in_a_genesis_is_refused_naming_it() -> None:
    with pytest.raises(GenesisError, match=r"market: verifier_count must be >= 1"):
        parse_genesis(json.dumps(_doc(market={"verifier_count": 0})), "json")
    with pytest.raises(GenesisError, match=r"unknown consensus parameter consensus\.propose_ms"):
        parse_genesis(json.dumps(_doc(consensus={"propose_ms": 5})), "json")
    with pytest.raises(GenesisError, match="unknown genesis keys: economics"):
        parse_genesis(json.dumps(_doc(economics={})), "json")


def test_a_format_1_genesis_gets_the_local_consensus_and_market_it_implied() -> None:
    legacy = {
        "chain_id": "old-chain",
        "preset": "devnet",
        "params": {"epoch_length": 5},
        "accounts": [{"pubkey": KEYS[0].public.hex(), "balance": 10, "stake": 500}],
    }
    genesis = parse_genesis(json.dumps(legacy), "json")
    assert LEGACY_PRESET == "local"
    assert genesis.format == 1
    assert genesis.market == PRESETS["local"].market
    assert genesis.consensus == PRESETS["local"].consensus
    assert genesis.params.epoch_length == 5
    with pytest.raises(GenesisError, match="market need format = 2"):
        parse_genesis(json.dumps({**legacy, "market": {}}), "json")


def test_the_genesis_hash_is_syntax_free_and_covers_every_parameter() -> None:
    doc = _doc()
    genesis = parse_genesis(json.dumps(doc), "json")
    shuffled = {**doc, "accounts": list(reversed(doc["accounts"])), "gentxs": list(reversed(doc["gentxs"]))}
    assert parse_genesis(json.dumps(shuffled, indent=None), "json").hash() == genesis.hash()
    assert genesis_hash(genesis) == genesis.hash()
    for section, field, value in (
        ("market", "reveal_blocks", 11),
        ("consensus", "prevote_timeout_ms", 600),
        ("ledger", "epoch_length", 7),
    ):
        other = parse_genesis(json.dumps(_doc(**{section: {field: value}})), "json")
        assert other.hash() != genesis.hash(), section


def test_the_daemon_chain_runs_the_genesis_market_and_consensus(tmp_path: Path) -> None:
    doc = _doc(market={"reveal_blocks": 13}, consensus={"propose_timeout_ms": 1700})
    path = tmp_path / "genesis.json"
    path.write_bytes(document_bytes(doc))
    chain = Chain.open(read_genesis(path), KEYS[0], tmp_path / "chain.db", 0)
    try:
        assert chain.market.reveal_blocks == 13
        assert chain.core.market.params.reveal_blocks == 13
        assert chain.node.cfg.timeouts.propose_ms == 1700
    finally:
        chain.store.close()


def test_a_chain_database_refuses_another_genesis_of_the_same_chain_id(tmp_path: Path) -> None:
    first = tmp_path / "a.json"
    first.write_bytes(document_bytes(_doc()))
    Chain.open(read_genesis(first), KEYS[0], tmp_path / "chain.db", 0).store.close()
    second = tmp_path / "b.json"
    second.write_bytes(document_bytes(_doc(market={"reveal_blocks": 11})))
    with pytest.raises(ConfigError, match=r"holds the chain of genesis .* but the genesis file is"):
        Chain.open(read_genesis(second), KEYS[0], tmp_path / "chain.db", 0)


def test_presets_have_one_home_and_the_cli_names_none_of_the_daemons() -> None:
    from protocol.ledger import params as ledger_params
    from protocol.market import params as market_params

    assert not hasattr(market_params, "PRESETS") and not hasattr(ledger_params, "PRESETS")
    assert not hasattr(ledger_params, "preset")
    cli = Path(__file__).resolve().parent.parent / "cli"
    for path in cli.glob("*.py"):
        text = path.read_text()
        assert "REALTIME_MARKET" not in text and "node.daemon.chain import PRESETS" not in text, path
