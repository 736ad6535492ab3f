"""Structured logging: one event per line with its fields, configured idempotently, and
peer-controlled values can neither flood nor forge lines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from node.logs import MAX_VALUE_CHARS, configure_logging, parse_level
from protocol.errors import ConfigError

log = logging.getLogger("polnet.test")


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _configured(json_lines: bool, level: str = "info") -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level, json=json_lines, stream=stream)
    return stream


def test_json_lines_carry_the_event_and_its_fields() -> None:
    stream = _configured(json_lines=True)
    log.info("block committed", extra={"height": 5, "hash": b"\xab\xcd", "peer": "12D3KooW"})
    event = json.loads(stream.getvalue())
    assert event["event"] == "block committed"
    assert (event["level"], event["logger"]) == ("info", "polnet.test")
    assert (event["height"], event["hash"], event["peer"]) == (5, "abcd", "12D3KooW")
    assert event["ts"].endswith("Z")


def test_key_value_lines_quote_only_what_needs_quoting() -> None:
    stream = _configured(json_lines=False)
    log.warning("peer penalised", extra={"score": -3.5, "reason": "bad signature"})
    line = stream.getvalue().strip()
    assert 'event="peer penalised"' in line
    assert "score=-3.5" in line and 'reason="bad signature"' in line
    assert "level=warning" in line and "logger=polnet.test" in line


def test_a_newline_in_a_peer_value_cannot_forge_a_second_line() -> None:
    for as_json in (True, False):
        stream = _configured(json_lines=as_json)
        log.info("hello", extra={"agent": "evil\nts=0 level=error event=forged"})
        assert stream.getvalue().count("\n") == 1


def test_huge_values_are_truncated() -> None:
    stream = _configured(json_lines=True)
    log.info("x", extra={"blob": "a" * 100_000})
    assert len(json.loads(stream.getvalue())["blob"]) <= MAX_VALUE_CHARS + 3


def test_exceptions_are_kept_inside_the_event() -> None:
    stream = _configured(json_lines=True)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    event = json.loads(stream.getvalue())
    assert "ValueError: boom" in event["exc"]


def test_configuring_twice_installs_one_handler_and_the_new_level() -> None:
    _configured(json_lines=True)
    stream = _configured(json_lines=False, level="warning")
    log.info("hidden")
    log.error("shown")
    assert stream.getvalue().count("\n") == 1 and "shown" in stream.getvalue()
    assert sum(h.get_name() == "polnet" for h in logging.getLogger().handlers) == 1


def test_third_party_chatter_is_held_at_warning_and_at_info_when_debugging() -> None:
    _configured(json_lines=True, level="info")
    assert logging.getLogger("libp2p").getEffectiveLevel() == logging.WARNING
    _configured(json_lines=True, level="debug")
    assert logging.getLogger("libp2p").getEffectiveLevel() == logging.INFO
    assert logging.getLogger("multiaddr").getEffectiveLevel() == logging.WARNING


def test_an_unknown_level_is_a_config_error() -> None:
    assert parse_level("DEBUG") == logging.DEBUG
    with pytest.raises(ConfigError, match="unknown log level"):
        parse_level("loud")
