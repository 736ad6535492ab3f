"""Third-party output goes through our log format at a sane level: libp2p's warnings
are log lines, not raw stderr text, and debug is not libp2p or multiaddr noise."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import node.transport  # noqa: F401 - imports libp2p, which configures its loggers on import
from node.logs import configure_logging


@pytest.fixture(autouse=True)
def _restore_loggers() -> Iterator[None]:
    names = ["", "libp2p", "libp2p.pubsub.gossipsub", "multiaddr"]
    saved = {
        n: (list(logging.getLogger(n).handlers), logging.getLogger(n).level, logging.getLogger(n).propagate)
        for n in names
    }
    yield
    for n, (handlers, level, propagate) in saved.items():
        lg = logging.getLogger(n)
        lg.handlers[:], lg.propagate = handlers, propagate
        lg.setLevel(level)


def _stream(level: str) -> io.StringIO:
    # What py-libp2p's setup_logging leaves without LIBP2P_DEBUG: detached, no handlers.
    lib = logging.getLogger("libp2p")
    lib.handlers.clear()
    lib.propagate = False
    gossip = logging.getLogger("libp2p.pubsub.gossipsub")
    gossip.addHandler(logging.StreamHandler(io.StringIO()))  # a foreign handler, as LIBP2P_DEBUG adds
    gossip.propagate = False
    stream = io.StringIO()
    configure_logging(level, stream=stream)
    return stream


def test_a_libp2p_warning_is_one_of_our_log_lines() -> None:
    stream = _stream("info")
    logging.getLogger("libp2p.pubsub.gossipsub").warning(
        "pending message queue for peer %s exceeded limit (%d > %d), dropping oldest messages", "P", 65, 64
    )
    logging.getLogger("libp2p.pubsub.gossipsub").info("per-message chatter")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("ts=") and "level=warning logger=libp2p.pubsub.gossipsub" in lines[0]
    assert 'event="pending message queue for peer P exceeded limit (65 > 64)' in lines[0]


def test_debug_level_shows_our_debug_but_not_library_noise() -> None:
    stream = _stream("debug")
    logging.getLogger("multiaddr.codecs").debug("parsing /ip4")
    logging.getLogger("libp2p.network").debug("frame")
    logging.getLogger("libp2p.network").info("connection opened")
    logging.getLogger("polnet.test").debug("ours")
    text = stream.getvalue()
    assert "parsing /ip4" not in text and "event=frame" not in text
    assert 'event="connection opened"' in text and "event=ours" in text


def test_python_warnings_become_log_lines() -> None:
    # In a fresh interpreter: pytest keeps its own hold on the warnings module.
    code = (
        "import warnings; from node.logs import configure_logging; configure_logging('info'); "
        "warnings.warn('deprecated thing', DeprecationWarning, stacklevel=1)"
    )
    out = subprocess.run(
        [sys.executable, "-W", "always", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
        check=True,
    )
    assert (
        out.stderr.startswith("ts=")
        and "logger=py.warnings" in out.stderr
        and "deprecated thing" in out.stderr
    )


def test_a_routine_dial_failure_is_not_an_error_line() -> None:
    stream = _stream("info")
    tcp = logging.getLogger("libp2p.transport.tcp.tcp")
    tcp.error("Failed to open TCP stream: all attempts to connect to 127.0.0.1:4001 failed")
    tcp.error("something else broke")
    assert stream.getvalue().count("\n") == 1 and "something else broke" in stream.getvalue()
    stream = _stream("debug")
    tcp.error("Failed to open TCP stream: all attempts to connect to 127.0.0.1:4001 failed")
    assert "level=debug logger=libp2p.transport.tcp.tcp" in stream.getvalue()
