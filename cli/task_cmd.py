"""`polnet task submit|status|cancel|result`: buy training from the network.

`submit` reads a spec file (see cli/task_spec.py), puts the spec and dataset blobs in the
local node's blob directory (workers fetch them from it by hash), and asks the node to
submit the task: the node checks the blobs and the escrow before queueing it, so a task
that could never run is refused at once with the reason. `result` writes the trained
weights of a settled task; every tensor has been checked, by hash, against the proof
root the solver committed on the ledger before it is written.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from cli.admin_http import request_json
from cli.init_cmd import DEFAULT_DATA_DIR
from cli.node_cmd import HTTP_TIMEOUT_S, admin_url, get_json
from cli.output import bad_input, emit_json, operator_errors, stdout
from node.daemon.blobdir import BlobDir
from node.datadir import DataDir, write_atomic
from protocol.errors import ConfigError, SealError
from protocol.market.state import NO_BASE
from protocol.market.txs import DeviceClass, SubmitTask
from protocol.pol.crew_spec import MAX_CREW_FILE
from protocol.records import encode_record
from protocol.sealing import open_blob, seal_pieces, sealed_locator

if TYPE_CHECKING:
    from cli.task_spec import BuiltTask

app = typer.Typer(help="Submit training tasks and fetch their results.", no_args_is_help=True)

DataDirOpt = typer.Option(DEFAULT_DATA_DIR, "--data-dir", "-d", help="Data dir of the local node.")
JsonOpt = typer.Option(False, "--json", help="Print the raw JSON answer.")
#: Where `submit` keeps the content keys of private tasks (one file per task id, 0600).
TASK_KEYS_DIR = "task-keys"
#: Fetching and checking the final weights can take a while on a busy node.
RESULT_TIMEOUT_S = 120.0


def _task_id(text: str) -> str:
    t = text.strip().lower()
    if len(t) != 64 or any(c not in "0123456789abcdef" for c in t):
        raise ConfigError(f"{text!r} is not a task id (64 hex characters, as `task submit` prints)")
    return t


def _post_json(url: str, doc: dict[str, Any]) -> dict[str, Any]:
    return request_json(url, timeout=HTTP_TIMEOUT_S, refused="the node refused the task",
                        body=json.dumps(doc).encode())


def _datadir(data_dir: Path) -> DataDir:
    if not Path(data_dir).is_dir():
        bad_input(f"{data_dir}: data directory not found")
    return DataDir(data_dir)


def submit_built(dd: DataDir, url: str, built: BuiltTask) -> str:
    """Put the task's blobs where the node serves them, then ask the node to submit it.

    A private task's dataset and base are sealed here, under the key `build_task` drew,
    before they reach the blob directory (nothing of them is stored in the clear); the
    spec stays public (it is priced and checked by everyone). The key goes to the local
    node, which wraps it to the parties the market elects, and to `task-keys/` in the
    data dir, from which `task result` opens the weights."""
    blobs = BlobDir(dd.blobs)
    blobs.put(encode_record(built.spec))
    doc = {"submit": encode_record(built.submit).hex()}
    key = built.content_key
    inputs = [built.dataset_blob] + ([built.base_blob] if built.base_blob is not None else [])
    for blob in inputs:  # a fine-tune's base weights: the solver fetches them too
        if key is None:
            blobs.put(blob)
        else:
            digest = hashlib.sha256(blob).digest()
            blobs.put_sealed_pieces(sealed_locator(key, digest), seal_pieces(key, blob, digest))
    if key is not None:
        doc["content_key"] = key.hex()
    answer = _post_json(f"{url}/task", doc)
    task_id = str(answer["task_id"])
    if key is not None:
        write_atomic(_key_path(dd, task_id), key, mode=0o600)
    return task_id


def _key_path(dd: DataDir, task_id: str) -> Path:
    return Path(dd.root) / TASK_KEYS_DIR / task_id


def _task_key(dd: DataDir, task_id: str) -> bytes | None:
    """The content key of a private task submitted from this data dir (None: public)."""
    try:
        key = _key_path(dd, task_id).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read this task's key: {exc.strerror}") from None
    if len(key) != 32:
        raise ConfigError(f"{_key_path(dd, task_id)}: not a 32-byte content key")
    return key


@app.command()
def submit(
    spec_file: Path = typer.Argument(..., help="Task spec (TOML, or JSON by suffix)."),
    data_dir: Path = DataDirOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Validate a spec file, price it from its FLOPs, and submit it through the local node."""
    from cli.task_spec import build_task, read_spec_file  # torch: only when submitting

    with operator_errors():
        doc = read_spec_file(spec_file)
        if "stages" in doc or "data_parallel" in doc:  # a crew task file (protocol/pol/crew_spec.py)
            _submit_crew(spec_file, data_dir, as_json)
            return
        built = build_task(doc, spec_file.resolve().parent)  # a bad spec fails before the node is asked
        dd = _datadir(data_dir)
        url = admin_url(data_dir)
        task_id = submit_built(dd, url, built)
    out = {"task_id": task_id, "gflops": built.gflops,
           "max_price_per_gflop": built.submit.max_price_per_gflop, "steps": built.spec.steps,
           "dataset": built.spec.dataset_hash.hex(), "private": built.content_key is not None}
    if as_json:
        emit_json(out)
    else:
        stdout.print(f"submitted task {out['task_id']} ({built.gflops} GFLOP at most "
                     f"{built.submit.max_price_per_gflop}/GFLOP); follow it with `polnet task status`")


#: What a crew member declares it needs: the byte-level models a crew file can describe
#: train in far less; workers advertise their memory and fit or not.
CREW_MEMORY_MB = 256


def crew_submission(raw: bytes, salt: int) -> SubmitTask:
    """The SubmitTask of a crew task file: its crew, steps and segments, its work by the
    usual estimate (`crew_gflops`), and the `[market]` price it offers (required)."""
    from protocol.pol.crew_spec import crew_gflops, crew_model_fields, crew_steps, parse_crew_spec

    settings = parse_crew_spec(raw, "crew task file")
    if not settings.price:
        raise ConfigError("a crew task file names its offer: [market] max_price_per_gflop = N")
    c = settings.crew
    return SubmitTask(hashlib.sha256(raw).digest(), crew_gflops(settings), crew_steps(settings),
                      c["segment_steps"], 1, DeviceClass.CPU, CREW_MEMORY_MB, True, settings.price, salt,
                      NO_BASE, 0, 0, stages=c["stages"], data_parallel=c["data_parallel"],
                      **crew_model_fields(settings))


def submit_crew_file(dd: DataDir, url: str, raw: bytes) -> tuple[str, SubmitTask]:
    """Put a crew task file where the node serves it (the members fetch it by its hash)
    and ask the node to submit it; the task id and what was submitted."""
    tx = crew_submission(raw, int.from_bytes(os.urandom(8), "big") >> 1)
    BlobDir(dd.blobs).put(raw)
    answer = _post_json(f"{url}/task", {"submit": encode_record(tx).hex()})
    return str(answer["task_id"]), tx


def _submit_crew(spec_file: Path, data_dir: Path, as_json: bool) -> None:
    """A crew task: the file itself is the spec blob the members fetch."""
    raw = spec_file.read_bytes()[: MAX_CREW_FILE + 1]
    crew_submission(raw, 0)  # a bad file fails before the node is asked
    task_id, tx = submit_crew_file(_datadir(data_dir), admin_url(data_dir), raw)
    out = {"task_id": task_id, "gflops": tx.gflops, "steps": tx.steps,
           "max_price_per_gflop": tx.max_price_per_gflop, "stages": tx.stages,
           "data_parallel": tx.data_parallel}
    if as_json:
        emit_json(out)
    else:
        stdout.print(f"submitted crew task {out['task_id']} ({tx.stages} x {tx.data_parallel} members, "
                     f"{tx.gflops} GFLOP at most {tx.max_price_per_gflop}/GFLOP); follow it with "
                     "`polnet task status`")


@app.command()
def status(task_id: str = typer.Argument(..., help="Task id."), data_dir: Path = DataDirOpt,
           as_json: bool = JsonOpt) -> None:
    """Show where a task is in its eight stages."""
    with operator_errors():
        tid = _task_id(task_id)
        _datadir(data_dir)
        doc = get_json(f"{admin_url(data_dir)}/task/{tid}")
    if as_json:
        emit_json(doc)
        return
    table = Table(show_header=False, box=None)
    for key in ("task_id", "status", "why_not_placed", "outcome", "solver", "proof_valid", "fee", "paid",
                "refunded", "verifiers", "challenges"):
        if key in doc and doc[key] not in (None, ""):
            table.add_row(key, str(doc[key]))
    for p in doc.get("penalties", []):
        table.add_row("slashed", f"{p['who'][:16]} lost {p['amount']} ({p['why']})")
    stdout.print(table)


@app.command()
def cancel(task_id: str = typer.Argument(..., help="Task id."), data_dir: Path = DataDirOpt,
           as_json: bool = JsonOpt) -> None:
    """Withdraw a task of this node's that nobody was elected for yet (escrow back whole)."""
    with operator_errors():
        tid = _task_id(task_id)
        _datadir(data_dir)
        answer = _post_json(f"{admin_url(data_dir)}/task/{tid}/cancel", {})
    if as_json:
        emit_json(answer)
        return
    stdout.print(f"cancel of task {tid[:16]} sent; `polnet task status` shows REFUNDED once it applies")


@app.command()
def result(
    task_id: str = typer.Argument(..., help="Task id."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the weights (.safetensors)."),
    data_dir: Path = DataDirOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Write a settled task's trained weights, checked against its committed proof."""
    with operator_errors():
        tid = _task_id(task_id)
        dd = _datadir(data_dir)
        if out.exists() and out.is_dir():
            raise ConfigError(f"{out}: is a directory; give a file name such as weights.safetensors")
        if not out.parent.is_dir():
            raise ConfigError(f"{out.parent}: directory not found")
        doc = get_json(f"{admin_url(data_dir)}/task/{tid}")
        if doc.get("status") != "SETTLED" or not doc.get("proof_valid"):
            raise ConfigError(f"task {tid[:16]} has no accepted result (status {doc.get('status')}, "
                              f"outcome {doc.get('outcome') or 'none yet'})")
        if doc.get("private") and _task_key(dd, tid) is None:
            raise ConfigError(f"task {tid[:16]} is private and its key is not in this data dir's "
                              f"{TASK_KEYS_DIR}/ (it was submitted from another data dir)")
        doc = _get_slow(f"{admin_url(data_dir)}/task/{tid}/result")
        data = _weights(dd, tid, bytes.fromhex(doc["weights_blob"]))
        write_atomic(out, data, mode=0o644)
    summary = {"task_id": tid, "out": str(out), "bytes": len(data), "accuracy": doc.get("accuracy"),
               "weights_blob": doc["weights_blob"]}
    if as_json:
        emit_json(summary)
    else:
        acc = doc.get("accuracy")
        stdout.print(f"wrote {out} ({len(data)} bytes); accuracy on the task's data {acc:.3f}")


def _weights(dd: DataDir, tid: str, digest: bytes) -> bytes:
    """The weights blob by its digest: as stored, or, for a private task, opened with
    the task's key (checked against the digest as it is opened)."""
    from node.compute.market_engine import MAX_DATASET_BLOB

    blobs = BlobDir(dd.blobs)
    key = _task_key(dd, tid)
    if key is None:
        data = blobs.read(digest)
    else:
        sealed = blobs.read_sealed(sealed_locator(key, digest))
        try:
            data = open_blob(key, digest, sealed, MAX_DATASET_BLOB) if sealed is not None else None
        except SealError as exc:
            raise ConfigError(f"the node's sealed weights do not open with this task's key: {exc}") from None
    if data is None:
        raise ConfigError("the node reported weights it does not hold (or they fail their hash)")
    return data


def _get_slow(url: str) -> dict[str, Any]:
    return request_json(url, timeout=RESULT_TIMEOUT_S, refused="the node could not produce the result")
