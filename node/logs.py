"""Structured logging for the daemon and the CLI, configured once per process.

Every line is one event with fields, either as JSON (for log shippers) or as
`key=value` pairs (for people). Fields come from `extra=` on the stdlib logging call,
so code logs with plain `logging.getLogger("polnet.x").info("event", extra={...})` and
never depends on this module; only the entry points (node/, cli/) call
`configure_logging`, and protocol/ never logs at all (it returns `Log` commands).

Values can come from peers (agent strings, error messages), so each one is truncated
and rendered on a single line: a hostile peer can neither flood the log with one
field nor forge extra log lines with embedded newlines.
"""

from __future__ import annotations

import json as jsonlib
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

from protocol.errors import ConfigError

#: Longest rendering of one field value, in characters.
MAX_VALUE_CHARS = 512
#: Third-party loggers and their levels (node at info or above, node at debug). Their
#: warnings matter to an operator (libp2p dropping a peer's queued messages, a failed
#: dial); libp2p's debug output is per-frame noise and multiaddr's is parsing noise, so
#: a node at debug still holds libp2p at INFO and multiaddr at WARNING: its own debug
#: lines stay readable.
LIBRARY_LEVELS: dict[str, tuple[int, int]] = {
    "libp2p": (logging.WARNING, logging.INFO),
    "multiaddr": (logging.WARNING, logging.WARNING),
    "async_service": (logging.WARNING, logging.WARNING),
    "trio_websocket": (logging.WARNING, logging.INFO),
    "urllib3": (logging.WARNING, logging.INFO),
}
NOISY_LOGGERS = tuple(LIBRARY_LEVELS)
#: Library records logged above their weight, as (logger prefix, message start): a dial
#: that fails because the peer is not up (yet) is routine for a node that redials with
#: backoff (node/transport/dialer.py), yet libp2p logs it as an ERROR. Shown at DEBUG.
DEMOTED: tuple[tuple[str, str], ...] = (("libp2p.transport.tcp", "Failed to open TCP stream"),)
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

# Attributes every LogRecord has; anything else on a record came in through `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_HANDLER_NAME = "polnet"


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a caller attached with `extra=`."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _plain(value: Any) -> Any:
    """A JSON-ready, bounded version of a field value."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).hex()
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "..."


def _timestamp(record: logging.LogRecord) -> str:
    stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _event(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": _timestamp(record),
        "level": record.levelname.lower(),
        "logger": record.name,
        "event": _plain(record.getMessage()),
    }
    for key, value in record_fields(record).items():
        out.setdefault(key, _plain(value))
    if record.exc_info:
        out["exc"] = logging.Formatter().formatException(record.exc_info)
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line (newlines inside values are escaped by JSON itself)."""

    def format(self, record: logging.LogRecord) -> str:
        return jsonlib.dumps(_event(record), ensure_ascii=False, separators=(",", ":"))


class KeyValueFormatter(logging.Formatter):
    """`ts=... level=info logger=polnet.x event="..." key=value`, one event per line."""

    def format(self, record: logging.LogRecord) -> str:
        event = _event(record)
        exc = event.pop("exc", None)
        line = " ".join(f"{key}={_kv_value(value)}" for key, value in event.items())
        return line if exc is None else f"{line} exc={_kv_value(exc)}"


def _kv_value(value: Any) -> str:
    if value is None or isinstance(value, (bool, int, float)):
        return jsonlib.dumps(value)
    text = str(value)
    if text and all(c.isalnum() or c in "-_.:/@+" for c in text):
        return text
    return jsonlib.dumps(text, ensure_ascii=False)  # quoted, with \n and " escaped


def parse_level(level: str | int) -> int:
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    try:
        return LEVELS[str(level).lower()]
    except KeyError:
        raise ConfigError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}") from None


def configure_logging(level: str | int = "info", json: bool = False, stream: IO[str] | None = None) -> None:
    """Send every log record to `stream` (stderr) as structured lines.

    Idempotent: calling it again (the CLI, then the daemon it starts) replaces the
    handler it installed instead of adding a second one, and leaves handlers that
    others installed (pytest's capture, for one) alone.
    """
    numeric = parse_level(level)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if json else KeyValueFormatter())
    handler.addFilter(_demote)
    root.addHandler(handler)
    root.setLevel(numeric)
    logging.captureWarnings(True)  # Python warnings become log records, not raw stderr text
    route_library_logs()


def _demote(record: logging.LogRecord) -> bool:
    """Show DEMOTED records at DEBUG (and only when the node runs at debug)."""
    for prefix, text in DEMOTED:
        if record.name.startswith(prefix) and str(record.msg).startswith(text):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    return True


def route_library_logs() -> None:
    """Send third-party libraries' records through our handler, at LIBRARY_LEVELS.

    py-libp2p configures its loggers when it is imported (libp2p.utils.logging): without
    LIBP2P_DEBUG it detaches the `libp2p` logger (no handlers, propagate off), so its
    warnings fall through to Python's last-resort handler and come out as raw text on
    stderr, outside the log format and over the swarm's live view; with LIBP2P_DEBUG it
    adds its own handlers and format. Either way, re-attach every `libp2p.*` logger to
    the root and set the levels; libp2p modules imported later are children of an
    attached `libp2p` logger, so this is needed again only if libp2p itself is imported
    after it (node.transport calls it once it has imported libp2p).
    """
    debug = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    for name, (normal, at_debug) in LIBRARY_LEVELS.items():
        logging.getLogger(name).setLevel(at_debug if debug else normal)
    manager = logging.Logger.manager
    for name, logger in list(manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and (name == "libp2p" or name.startswith("libp2p.")):
            for handler in [h for h in logger.handlers if h.get_name() != _HANDLER_NAME]:
                logger.removeHandler(handler)
            logger.propagate = True
            if name != "libp2p":
                logger.setLevel(logging.NOTSET)  # the `libp2p` level above decides
