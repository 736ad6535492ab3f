"""`polnet wallet`: balances and stake, and signed ledger transactions.

Transactions are built and signed here, with the key in the data dir (or --key), and
handed to the local node's admin endpoint, which checks them against its ledger before
gossiping them: a transaction the ledger would refuse is refused at once, with the
ledger's reason, instead of vanishing from a mempool.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from cli.admin_http import request_json
from cli.init_cmd import DEFAULT_DATA_DIR
from cli.node_cmd import HTTP_TIMEOUT_S, admin_url, get_json
from cli.output import emit_json, operator_errors, stdout
from node.daemon.chain import read_genesis
from node.daemon.keyfile import load_key_file
from node.datadir import DataDir
from protocol.envelope import seal
from protocol.errors import ConfigError, PolnetError
from protocol.identity import Keypair, public_key_from_node_id
from protocol.ledger.params import LedgerParams
from protocol.ledger.rules import min_fee
from protocol.ledger.txs import Bond, Transfer, Unbond

app = typer.Typer(help="Balances, stake and signed transactions.", no_args_is_help=True)

MAX_U64 = 2**64 - 1
#: Sealing twice settles the fee: the fee's own encoding changes the tx size at most once.
FEE_ROUNDS = 3

DataDirOpt = typer.Option(DEFAULT_DATA_DIR, "--data-dir", "-d", help="Data dir of the local node.")
KeyOpt = typer.Option(None, "--key", help="Key file to sign with (default: the node's key).")
FeeOpt = typer.Option(None, "--fee", min=0, max=MAX_U64, help="Fee (default: the chain's minimum).")
NonceOpt = typer.Option(None, "--nonce", min=0, max=MAX_U64, help="Nonce (default: the account's next).")
JsonOpt = typer.Option(False, "--json", help="Print the raw JSON answer.")


def parse_account(text: str) -> bytes:
    """An account is a 64-hex-char public key or a node id (12D3KooW...)."""
    try:
        if len(text) == 64:
            return bytes.fromhex(text)
        return public_key_from_node_id(text)
    except (ValueError, PolnetError):
        raise ConfigError(f"{text!r} is not an account: give 64 hex chars or a node id") from None


def _key(data_dir: Path, key_file: Path | None) -> Keypair:
    path = key_file if key_file is not None else DataDir(data_dir).node_key
    return load_key_file(path, passphrase=os.environ.get("POLNET_KEY_PASSPHRASE"))


def _account(data_dir: Path, pubkey: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = get_json(f"{admin_url(data_dir)}/account/{pubkey.hex()}")
    return doc


def _show(doc: dict[str, Any], fields: tuple[str, ...], as_json: bool) -> None:
    if as_json:
        emit_json(doc)
        return
    table = Table(show_header=False, box=None)
    for f in fields:
        table.add_row(f, str(doc.get(f)))
    stdout.print(table)


@app.command()
def balance(
    account: str | None = typer.Argument(None, help="Account (hex or node id); default: this node."),
    data_dir: Path = DataDirOpt,
    key_file: Path | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show an account's balance and next nonce."""
    with operator_errors():
        pubkey = parse_account(account) if account else _key(data_dir, key_file).public
        _show(_account(data_dir, pubkey), ("pubkey", "balance", "nonce", "height"), as_json)


@app.command()
def stake(
    account: str | None = typer.Argument(None, help="Account (hex or node id); default: this node."),
    data_dir: Path = DataDirOpt,
    key_file: Path | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show an account's bonded, locked and unbonding stake."""
    with operator_errors():
        pubkey = parse_account(account) if account else _key(data_dir, key_file).public
        fields = ("pubkey", "bonded", "locked", "unbondings", "jailed", "height")
        _show(_account(data_dir, pubkey), fields, as_json)


def seal_with_fee(make: Any, key: Keypair, chain_id: str, params: LedgerParams, fee: int | None) -> bytes:
    """Seal `make(fee)`; without an explicit fee, the smallest one the chain accepts."""
    if fee is not None:
        return seal(make(fee), key, chain_id)
    fee = params.base_fee
    for _ in range(FEE_ROUNDS):
        raw = seal(make(fee), key, chain_id)
        needed = min_fee(params, len(raw))
        if needed <= fee:
            return raw
        fee = needed
    return seal(make(fee), key, chain_id)


def post_tx(data_dir: Path, raw: bytes) -> dict[str, Any]:
    return request_json(f"{admin_url(data_dir)}/tx", timeout=HTTP_TIMEOUT_S,
                        refused="the node refused the transaction", body=raw,
                        content_type="application/msgpack")


def _submit(data_dir: Path, key_file: Path | None, fee: int | None, nonce: int | None, make: Any) -> None:
    with operator_errors():
        dd = DataDir(data_dir)
        key = _key(data_dir, key_file)
        genesis = read_genesis(dd.genesis)
        if nonce is None:
            nonce = int(_account(data_dir, key.public)["nonce"])
        raw = seal_with_fee(lambda f: make(nonce, f), key, genesis.chain_id, genesis.params, fee)
        answer = post_tx(data_dir, raw)
    stdout.print(f"submitted {answer.get('accepted')} (nonce {nonce})")


@app.command()
def transfer(
    to: str = typer.Argument(..., help="Recipient (hex public key or node id)."),
    amount: int = typer.Argument(..., min=1, max=MAX_U64, help="Amount to send."),
    data_dir: Path = DataDirOpt,
    key_file: Path | None = KeyOpt,
    fee: int | None = FeeOpt,
    nonce: int | None = NonceOpt,
) -> None:
    """Send funds to another account."""
    with operator_errors():
        dest = parse_account(to)
    _submit(data_dir, key_file, fee, nonce, lambda n, f: Transfer(dest, amount, n, f))


@app.command()
def bond(
    amount: int = typer.Argument(..., min=1, max=MAX_U64, help="Balance to move into stake."),
    data_dir: Path = DataDirOpt,
    key_file: Path | None = KeyOpt,
    fee: int | None = FeeOpt,
    nonce: int | None = NonceOpt,
) -> None:
    """Bond balance as stake (validators are the top stakers)."""
    _submit(data_dir, key_file, fee, nonce, lambda n, f: Bond(amount, n, f))


@app.command()
def unbond(
    amount: int = typer.Argument(..., min=1, max=MAX_U64, help="Stake to start releasing."),
    data_dir: Path = DataDirOpt,
    key_file: Path | None = KeyOpt,
    fee: int | None = FeeOpt,
    nonce: int | None = NonceOpt,
) -> None:
    """Start unbonding stake; it returns to the balance after the unbonding period."""
    _submit(data_dir, key_file, fee, nonce, lambda n, f: Unbond(amount, n, f))
