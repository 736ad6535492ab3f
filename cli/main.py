"""The `polnet` command: one typer app with a sub-app per concern.

Sub-apps live in their own modules (cli/node_cmd.py, cli/wallet_cmd.py, ...) and are
attached here, so adding a command never means editing a large file.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="polnet",
    help="polnet: a peer-to-peer market for verifiable machine-learning compute.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# (module, attribute, name) of sub-apps; a module that is not there yet is skipped so
# a partially built tree still has a working CLI.
_SUBAPPS: tuple[tuple[str, str, str], ...] = (
    ("cli.node_cmd", "app", "node"),
    ("cli.genesis_cmd", "app", "genesis"),
    ("cli.wallet_cmd", "app", "wallet"),
    ("cli.task_cmd", "app", "task"),
    ("cli.swarm_cmd", "app", "swarm"),
    ("cli.sim_cmd", "app", "sim"),
    ("cli.model_cmd", "app", "model"),
    ("cli.crew_cmd", "app", "crew"),
)

# (module, attribute) of top-level commands.
_COMMANDS: tuple[tuple[str, str], ...] = (
    ("cli.init_cmd", "init"),
    ("cli.demo_cmd", "demo"),
    ("cli.schedule_cmd", "schedule"),
)


def _attach() -> None:
    for module, attr, name in _SUBAPPS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue
            raise
        app.add_typer(getattr(mod, attr), name=name)
    for module, attr in _COMMANDS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue
            raise
        app.command(name=attr)(getattr(mod, attr))


_attach()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
