"""node.config: typed TOML with clear errors, env overrides, and a lossless round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.config import (
    ComputeConfig,
    MetricsConfig,
    NetworkConfig,
    NodeConfig,
    RolesConfig,
    config_to_toml,
    load_config,
)
from protocol.errors import ConfigError

PEER = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWSKHda9UXCBDCD999Utg8HqUde3k12agKEZ2kfnzSP1Cg"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return p


def test_an_empty_file_gives_the_documented_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == NodeConfig()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[network]\nlisen_port = 1\n", "did you mean 'listen_port'"),
        ("chian_id = 'x'\n", "did you mean 'chain_id'"),
        ("[netwrk]\n", "did you mean 'network'"),
        ("[network]\nlisten_port = 'abc'\n", "[network] listen_port must be an integer"),
        ("[network]\nlisten_port = true\n", "[network] listen_port must be an integer"),
        ("[network]\nlisten_port = 65536\n", "must be a port in 0..65535"),
        ("[network]\nbootstrap = 'x'\n", "must be a list of strings"),
        ("[network]\nbootstrap = ['/ip4/1.2.3.4/udp/1/p2p/xxxxxxxxxxxx']\n", "is not a peer address"),
        ("[metrics]\nhost = 'localhost'\n", "[metrics] host must be an IP address"),
        ("[compute]\nthreads = 0\n", "[compute] threads must be in 1.."),
        ("[compute]\ndevice = 'tpu'\n", "[compute] device must be one of"),
        ("[roles]\nvalidator = 'yes'\n", "[roles] validator must be true or false"),
        ("[log]\nlevel = 'loud'\n", "[log] level must be one of"),
        ("network = 3\n", "[network] must be a table"),
        ("chain_id = ''\n", "chain_id must be"),
        ("[network\n", "invalid TOML"),
    ],
)
def test_bad_config_values_are_named_in_the_error(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_missing_directory_binary_and_oversized_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(tmp_path / "bin.toml")
    (tmp_path / "big.toml").write_text("#" * 70_000)
    with pytest.raises(ConfigError, match="too large"):
        load_config(tmp_path / "big.toml")


def test_environment_overrides_win_over_the_file_and_are_typed(tmp_path: Path) -> None:
    path = write(tmp_path, "[network]\nlisten_port = 4001\n")
    env = {
        "POLNET_NETWORK_LISTEN_PORT": "4002",
        "POLNET_ROLES_WORKER": "yes",
        "POLNET_NETWORK_BOOTSTRAP": f"{PEER}, {PEER}",
        "POLNET_CHAIN_ID": "envnet",
    }
    cfg = load_config(path, env)
    assert cfg.network.listen_port == 4002
    assert cfg.roles.worker is True
    assert cfg.network.bootstrap == (PEER, PEER)
    assert cfg.chain_id == "envnet"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"POLNET_NETWORK_LISTEN_PORT": "four"},
            "POLNET_NETWORK_LISTEN_PORT ([network] listen_port) must be an integer",
        ),
        ({"POLNET_ROLES_WORKER": "maybe"}, "must be true or false"),
        ({"POLNET_COMPUTE_THREADS": "1000"}, "[compute] threads must be in"),
    ],
)
def test_bad_environment_overrides_are_named(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, ""), env)
    assert expected in str(info.value)


configs = st.builds(
    NodeConfig,
    chain_id=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=16),
    network=st.builds(
        NetworkConfig,
        listen_host=st.sampled_from(["0.0.0.0", "127.0.0.1", "::", "10.1.2.3"]),
        listen_port=st.integers(0, 65535),
        bootstrap=st.lists(st.just(PEER), max_size=3).map(tuple),
    ),
    metrics=st.builds(MetricsConfig, enabled=st.booleans(), port=st.integers(0, 65535)),
    compute=st.builds(
        ComputeConfig, threads=st.integers(1, 256), device=st.sampled_from(["auto", "cpu", "cuda"])
    ),
    roles=st.builds(RolesConfig, validator=st.booleans(), worker=st.booleans(), verifier=st.booleans()),
)


@settings(max_examples=60, deadline=None)
@given(cfg=configs)
def test_any_valid_config_survives_a_write_and_read(
    tmp_path_factory: pytest.TempPathFactory, cfg: NodeConfig
) -> None:
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    path.write_text(config_to_toml(cfg))
    assert load_config(path) == cfg
