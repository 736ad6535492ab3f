"""`polnet genesis`: start a network the way Cosmos/CometBFT networks start.

    coordinator  polnet genesis new genesis.json --chain-id mynet --preset local
    each node    polnet init -d DIR --chain-id mynet --port 4001      # prints its node id
    coordinator  polnet genesis add-account genesis.json NODE_ID 1010000000   # per node
    each node    polnet genesis gentx genesis.json -d DIR --stake 10000000 \\
                     --address /ip4/203.0.113.7/tcp/4001              # signs with its key
    coordinator  polnet genesis collect genesis.json gentx-*.json
    each node    polnet genesis verify genesis.json                   # compare the hash
    each node    polnet genesis install genesis.json -d DIR --set-bootstrap
                 polnet node run -d DIR

Every step re-validates the whole document (protocol/ledger/ceremony.py), so a mistake
is reported by the step that made it, naming the value, with exit status 2. Nobody
writes another validator's stake: each gentx is signed by that node's key, and every
node checks every signature when it loads the genesis.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from cli.init_cmd import DEFAULT_DATA_DIR
from cli.output import emit_json, operator_errors, stdout
from cli.wallet_cmd import parse_account
from node.config import config_to_toml, load_config, with_overrides
from node.daemon.chain import (
    check_genesis_file,
    document_bytes,
    read_genesis,
    read_genesis_document,
    recorded_genesis,
)
from node.daemon.keyfile import load_key_file
from node.datadir import DataDir, write_atomic
from protocol.chain_params import PRESETS, SECTIONS
from protocol.errors import ConfigError, PolnetError
from protocol.identity import node_id
from protocol.ledger import Genesis, ceremony
from protocol.ledger.gentx import MAX_GENTX_BYTES
from protocol.ledger.params import MAX_SUPPLY

app = typer.Typer(help="Create a network's genesis: new, add-account, gentx, collect, verify, install.",
                  no_args_is_help=True)

#: Overrides given on the command line, at most (a genesis has about 60 parameters).
MAX_SETS = 128


def _write(path: Path, doc: dict[str, Any]) -> None:
    write_atomic(path, document_bytes(doc), mode=0o644)


def _parse_set(items: list[str]) -> dict[str, dict[str, int]]:
    """`section.field=value` pairs (`market.reveal_blocks=20`) as section -> field -> int."""
    if len(items) > MAX_SETS:
        raise ConfigError(f"--set given {len(items)} times, at most {MAX_SETS}")
    out: dict[str, dict[str, int]] = {}
    for item in items:
        name, sep, text = item.partition("=")
        section, dot, fieldname = name.partition(".")
        if not sep or not dot or not fieldname:
            raise ConfigError(f"--set {item!r}: expected SECTION.FIELD=INTEGER, e.g. market.reveal_blocks=20")
        if section not in SECTIONS:
            raise ConfigError(f"--set {item!r}: unknown section {section!r} (known: {', '.join(SECTIONS)})")
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"--set {item!r}: {text!r} is not an integer") from None
        out.setdefault(section, {})[fieldname] = value
    return out


@app.command()
def new(
    path: Path = typer.Argument(..., help="Genesis file to create (JSON)."),
    chain_id: str = typer.Option(..., "--chain-id", help="The network's name (1..64 bytes)."),
    preset: str = typer.Option("local", help=f"Parameter preset: {', '.join(PRESETS)}."),
    genesis_time: int = typer.Option(0, "--time", min=0, max=MAX_SUPPLY, help="Genesis time (ms, Unix)."),
    sets: list[str] = typer.Option([], "--set", help="Override: SECTION.FIELD=INTEGER; repeatable."),
    force: bool = typer.Option(False, help="Overwrite an existing file."),
) -> None:
    """Write a draft genesis (every parameter written out, no accounts yet).

    The preset's values with any --set overrides; accounts and validators follow."""
    with operator_errors():
        if path.exists() and not force:
            raise ConfigError(f"{path}: already exists (use --force to overwrite it)")
        doc = ceremony.new_document(chain_id, preset, genesis_time, _parse_set(sets))
        _write(path, doc)
    stdout.print(f"wrote draft genesis [bold]{path}[/] for chain {chain_id!r} (preset {preset})")
    stdout.print("next: polnet genesis add-account, once per participant")


@app.command("add-account")
def add_account(
    path: Path = typer.Argument(..., help="The draft genesis."),
    account: str = typer.Argument(..., help="Node id (12D3KooW...) or 64-hex public key."),
    balance: int = typer.Argument(..., min=1, max=MAX_SUPPLY, help="Balance (a validator bonds from it)."),
) -> None:
    """Add a funded account to the draft (in place)."""
    with operator_errors():
        pubkey = parse_account(account)
        doc = ceremony.add_account(read_genesis_document(path), pubkey, balance)
        _write(path, doc)
    stdout.print(f"added {node_id(pubkey)} with balance {balance}")


def _default_address(data_dir: Path, key_id: str) -> str:
    """Where this node listens, if its config names a dialable address."""
    cfg = load_config(DataDir(data_dir).config, {})
    host, port = cfg.network.listen_host, cfg.network.listen_port
    if host in ("0.0.0.0", "::") or port == 0:
        return ""
    proto = "ip6" if ":" in host else "ip4"
    return f"/{proto}/{host}/tcp/{port}/p2p/{key_id}"


def _full_address(address: str, key_id: str) -> str:
    if not address or "/p2p/" in address:
        return address
    return f"{address.rstrip('/')}/p2p/{key_id}"


@app.command()
def gentx(
    path: Path = typer.Argument(..., help="The draft genesis (with this node's account)."),
    stake: int = typer.Option(..., min=1, max=MAX_SUPPLY, help="Stake to bond at genesis, from the balance."),
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, "--data-dir", "-d", help="This node's data directory."),
    address: str | None = typer.Option(
        None, help="Where it is dialable, /ip4/H/tcp/P (default: from its config; '' for none)."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Gentx file (default: DIR/gentx.json)."),
) -> None:
    """Sign this validator's gentx with its node key (node id, stake, chain id)."""
    with operator_errors():
        dd = DataDir(data_dir)
        if not dd.root.is_dir():
            raise ConfigError(f"{data_dir}: data directory not found (run `polnet init -d {data_dir}`)")
        key = load_key_file(dd.node_key, passphrase=os.environ.get("POLNET_KEY_PASSPHRASE"))
        me = key.node_id
        addr = _default_address(data_dir, me) if address is None else _full_address(address, me)
        entry = ceremony.make_gentx(read_genesis_document(path), key, stake, addr)
        target = out if out is not None else dd.root / "gentx.json"
        write_atomic(target, (json.dumps(entry, indent=2) + "\n").encode(), mode=0o644)
    stdout.print(f"wrote gentx [bold]{target}[/]: {key.node_id} bonds {stake}")
    if not addr:
        stdout.print("(no address: other validators must be told where this node listens)")


def _read_gentx(path: Path) -> Any:
    try:
        raw = path.read_bytes()[: 4 * MAX_GENTX_BYTES + 1]
    except FileNotFoundError:
        raise ConfigError(f"{path}: gentx file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if len(raw) > 4 * MAX_GENTX_BYTES:
        raise ConfigError(f"{path}: too large to be a gentx file")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{path}: not a JSON gentx file: {exc}") from None


@app.command()
def collect(
    path: Path = typer.Argument(..., help="The draft genesis."),
    gentxs: list[Path] = typer.Argument(..., help="Gentx files, one per validator."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write here instead of in place."),
) -> None:
    """Fold the validators' gentxs into the genesis (which must then be complete)."""
    with operator_errors():
        entries = [_read_gentx(p) for p in gentxs]
        try:
            doc = ceremony.collect(read_genesis_document(path), entries)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        target = out or path
        _write(target, doc)
        genesis = read_genesis(target)
    stdout.print(f"wrote genesis [bold]{target}[/] with {len(genesis.gentxs)} validators")
    _print_summary(genesis)


def _validators(genesis: Genesis) -> list[dict[str, Any]]:
    return [{"node_id": node_id(t.pubkey), "stake": t.stake, "address": t.address} for t in genesis.gentxs]


def _summary(genesis: Genesis, path: Path) -> dict[str, Any]:
    preset = PRESETS.get(genesis.preset)
    tables = genesis.chain_params.as_tables()
    changed = {} if preset is None else {
        f"{s}.{k}": v for s in SECTIONS for k, v in tables[s].items() if preset.as_tables()[s][k] != v
    }
    return {
        "file": str(path),
        "chain_id": genesis.chain_id,
        "genesis_hash": genesis.hash().hex(),
        "format": genesis.format,
        "preset": genesis.preset,
        "changed_from_preset": changed,
        "genesis_time": genesis.time,
        "accounts": len(genesis.accounts),
        "supply": genesis.supply,
        "validators": _validators(genesis),
        "params": tables,
    }


def _print_summary(genesis: Genesis, path: Path | None = None) -> None:
    doc = _summary(genesis, path or Path("."))
    table = Table(show_header=False, box=None)
    for key in ("chain_id", "genesis_hash", "format", "preset", "genesis_time", "accounts", "supply"):
        table.add_row(key, str(doc[key]))
    changed = doc["changed_from_preset"]
    table.add_row("changed", ", ".join(f"{k}={v}" for k, v in changed.items()) or "nothing")
    stdout.print(table)
    for v in doc["validators"]:
        stdout.print(f"validator {v['node_id']} stake {v['stake']} address {v['address'] or '-'}")


@app.command()
def verify(
    path: Path = typer.Argument(..., help="Genesis file to check."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Check a genesis completely and print its hash.

    Every field and every gentx signature; nodes of one network must see one hash."""
    with operator_errors():
        genesis = read_genesis(path)
    if as_json:
        emit_json(_summary(genesis, path))
        return
    stdout.print(f"[bold]{path}[/] is a valid genesis")
    _print_summary(genesis, path)


@app.command()
def install(
    path: Path = typer.Argument(..., help="The final genesis."),
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, "--data-dir", "-d", help="The node's data directory."),
    set_bootstrap: bool = typer.Option(
        False, "--set-bootstrap", help="Bootstrap to the other validators' gentx addresses."
    ),
    reset_db: bool = typer.Option(
        False, "--reset-db", help="Move a chain database of another genesis aside (db.replaced-TIME)."
    ),
) -> None:
    """Make this genesis the node's (checked, copied to DIR/genesis.json).

    --set-bootstrap also points the node at the other validators' gentx addresses."""
    with operator_errors():
        dd = DataDir(data_dir)
        if not dd.config.is_file():
            raise ConfigError(f"{data_dir}: not a node's data directory (run `polnet init -d {data_dir}`)")
        cfg = load_config(dd.config, {})
        genesis = check_genesis_file(path, cfg.chain_id)
        moved = _check_db(dd, genesis, reset_db)
        write_atomic(dd.genesis, path.read_bytes(), mode=0o644)
        peers: tuple[str, ...] = ()
        if set_bootstrap:
            me = load_key_file(dd.node_key, passphrase=os.environ.get("POLNET_KEY_PASSPHRASE")).public
            peers = tuple(t.address for t in genesis.gentxs if t.address and t.pubkey != me)
            if not peers:
                raise ConfigError(f"{path}: no other validator's gentx gives an address to bootstrap to")
            updated = with_overrides(cfg, network={"bootstrap": peers})
            write_atomic(dd.config, config_to_toml(updated).encode(), mode=0o600)
    stdout.print(f"installed genesis {genesis.hash().hex()[:16]} in [bold]{dd.genesis}[/]")
    if moved is not None:
        stdout.print(f"moved the old chain database to {moved}")
    if peers:
        stdout.print(f"bootstrap peers: {len(peers)} (from the gentxs)")


def _check_db(dd: DataDir, genesis: Genesis, reset: bool) -> Path | None:
    """A chain database of another genesis would be refused at start: say so now, and
    move it aside only when asked (it is the node's history of another chain)."""
    ours = genesis.hash()
    try:
        recorded = recorded_genesis(dd.chain_db, genesis.chain_id)
        problem = None if recorded is None or recorded == ours else (
            f"{dd.chain_db}: holds the chain of genesis {recorded.hex()[:16]}, "
            f"not this one ({ours.hex()[:16]})")
    except PolnetError as exc:  # another chain id's database, or an unreadable one
        problem = str(exc)
    if problem is None:
        return None
    if not reset:
        raise ConfigError(f"{problem}; pass --reset-db to move it aside")
    target = dd.root / f"db.replaced-{int(time.time())}"
    dd.db.rename(target)
    dd.db.mkdir(mode=0o700)
    return target
