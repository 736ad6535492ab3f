"""How every polnet command reports: results on stdout, errors on stderr as one line.

One place so that every command fails the same way: a `PolnetError` (bad config, bad
key file, node not running) is an operator's problem to fix, printed as one line naming
the value at fault, never as a traceback. Exit status says whose move it is:

- 2 (`EXIT_BAD_INPUT`): a bad argument, file, config or value (`ConfigError`, which
  covers genesis and key files, and `SpecError`), or a request the node refused as
  invalid; as typer and click use 2 for usage errors. Fix the input and run it again.
- 1 (`EXIT_ERROR`): the input was fine but the command could not do its job (no
  running node, a node that does not answer, a swarm that failed its checks).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from protocol.errors import ConfigError, PolnetError, SpecError

EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
#: Errors that mean "the input is wrong" (exit 2); every other PolnetError exits 1.
BAD_INPUT: tuple[type[PolnetError], ...] = (ConfigError, SpecError)

#: soft_wrap: long lines (node ids, hashes, paths) are never broken, so output can be
#: copied and grepped.
stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    stderr.print(f"[bold red]error:[/] {escape(_one_line(message))}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def bad_input(message: str) -> NoReturn:
    """Refuse an argument, file or value (exit 2)."""
    fail(message, EXIT_BAD_INPUT)


def exit_code(exc: BaseException) -> int:
    return EXIT_BAD_INPUT if isinstance(exc, BAD_INPUT) else EXIT_ERROR


def _one_line(message: str) -> str:
    """Errors may quote values from files or peers; one line whatever they hold."""
    return " ".join(message.split()) if "\n" in message or "\r" in message else message


@contextlib.contextmanager
def operator_errors() -> Iterator[None]:
    """Turn polnet's own errors into one clear line and its exit status."""
    try:
        yield
    except PolnetError as exc:
        fail(str(exc), exit_code(exc))
    except MemoryError as exc:
        # numpy's ArrayMemoryError says what it tried to allocate; that is the value.
        fail(f"not enough memory: {exc or 'allocation failed'}", EXIT_BAD_INPUT)
    except BaseExceptionGroup as group:
        # trio reports a service that failed at start as a group; unwrap ours.
        ours, rest = group.split(PolnetError)
        if ours is None or rest is not None:
            raise
        leaf = _first_leaf(ours)
        fail(str(leaf), exit_code(leaf))


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def emit_json(doc: Any) -> None:
    typer.echo(json.dumps(doc, indent=2, sort_keys=True))
