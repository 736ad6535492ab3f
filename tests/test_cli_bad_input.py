"""Bad input the node only meets at start (a port in use) or at allocation (a dataset
too large) exits 2 with one line naming the value, never a traceback or an
ExceptionGroup."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from node.config import AdminConfig, MetricsConfig, NetworkConfig
from node.daemon.layout import init_datadir
from tests.daemon_harness import loopback_config

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout + result.stderr


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another process (this one) listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _error_line(out: str) -> str:
    """The one error line (a daemon that got as far as starting also logs, as key=value
    lines, that it stopped)."""
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    others = [line for line in out.splitlines() if line.strip() and not line.startswith(("error:", "ts="))]
    assert len(errors) == 1 and not others, out
    return errors[0]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("network", "[network] listen_port: cannot listen on 127.0.0.1:{port}"),
        ("admin", "[admin] port {port} on 127.0.0.1: Address already in use"),
        ("metrics", "[metrics] port {port} on 127.0.0.1: Address already in use"),
    ],
)
@pytest.mark.timeout(120)
def test_a_port_in_use_is_one_line_naming_it_with_exit_2(
    tmp_path: Path, busy_port: int, section: str, message: str
) -> None:
    cfg = loopback_config()
    if section == "network":
        cfg = dataclasses.replace(cfg, network=NetworkConfig("127.0.0.1", busy_port))
    elif section == "admin":
        cfg = dataclasses.replace(cfg, admin=AdminConfig(port=busy_port))
    else:
        cfg = dataclasses.replace(cfg, metrics=MetricsConfig(port=busy_port))
    init_datadir(tmp_path / "n", cfg)
    code, out = invoke("node", "run", "-d", str(tmp_path / "n"))
    assert code == 2, out
    line = _error_line(out)
    assert message.format(port=busy_port) in line
    assert "Traceback" not in out and "ExceptionGroup" not in out


def test_an_oversized_synthetic_dataset_is_named_before_numpy_allocates_it(tmp_path: Path) -> None:
    spec = tmp_path / "task.toml"
    spec.write_text('dataset = "synthetic"\n[synthetic]\nsamples = 1048576\nfeatures = 4096\n')
    code, out = invoke("task", "submit", str(spec), "-d", str(tmp_path))
    assert code == 2
    line = _error_line(out)
    assert "samples = 1048576 x features = 4096 is a 16392 MiB dataset" in line
    assert "workers fetch at most 256 MiB" in line
