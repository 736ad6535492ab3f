"""How every polnet command reports: results on stdout, errors on stderr with exit 1.

One place so that every command fails the same way: a `PolnetError` (bad config, bad
key file, node not running) is an operator's problem to fix, printed as one line, never
as a traceback.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from protocol.errors import PolnetError

#: Exit status for an operator error (typer uses 2 for usage errors, as click does).
EXIT_ERROR = 1

stdout = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)


def fail(message: str) -> NoReturn:
    stderr.print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True)
    raise typer.Exit(EXIT_ERROR)


@contextlib.contextmanager
def operator_errors() -> Iterator[None]:
    """Turn polnet's own errors into one clear line and exit status 1."""
    try:
        yield
    except PolnetError as exc:
        fail(str(exc))
    except BaseExceptionGroup as group:
        # trio reports a service that failed at start as a group; unwrap ours.
        ours, rest = group.split(PolnetError)
        if ours is None or rest is not None:
            raise
        fail(str(_first_leaf(ours)))


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def emit_json(doc: Any) -> None:
    typer.echo(json.dumps(doc, indent=2, sort_keys=True))
