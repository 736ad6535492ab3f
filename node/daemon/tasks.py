"""The admin endpoint's market pages: accept a task from the local CLI, describe tasks.

A submitted task is checked here before it is handed to the core, because once its
SubmitTask is on the ledger the fee is in escrow: the spec blob and the dataset blob
must already be in this node's blob directory (so workers can fetch them from us), and
the spec must be valid and match the transaction. The core then checks it against the
ledger's rules (price floor, segments, escrow against the balance) and stores it before
the endpoint answers (`MarketNode._local`), so what is accepted is never dropped.

Every count and sum on these pages comes from `protocol.market.views`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from node.daemon.iface import MarketCompute, MarketCore
from protocol.errors import PolnetError, ValidationError
from protocol.ledger.primitives import audit_supply
from protocol.market.chain import audit_market
from protocol.market.keyring import PrivateSubmit, key_commitment
from protocol.market.state import MarketState, Status, Task
from protocol.market.txs import SubmitTask
from protocol.market.views import placement_reason, slashed_parties, stage_counts, task_summary
from protocol.pol.crew_spec import crew_steps, parse_crew_spec
from protocol.pol.ops import step_ops
from protocol.pol.spec import TaskSpec, validate_spec
from protocol.records import decode_record
from protocol.sealing import CONTENT_KEY_LEN, sealed_locator

#: Tasks listed on one page (the ledger bounds open tasks; ended ones are pruned).
MAX_TASKS_LISTED = 256
MAX_SPEC_BLOB = 64 * 1024


def parse_task_request(body: bytes, compute: MarketCompute | None) -> SubmitTask | PrivateSubmit:
    """`{"submit": hex}`, or for a private task `{"submit": hex, "content_key": hex}` (the
    key its blobs were sealed under, which this node keeps to wrap to the elected)."""
    try:
        doc = json.loads(body)
        tx = decode_record(SubmitTask, bytes.fromhex(doc["submit"]))
        key = bytes.fromhex(doc["content_key"]) if "content_key" in doc else None
    except (ValueError, KeyError, TypeError, AttributeError, PolnetError):
        raise ValidationError('expected {"submit": "<hex of an encoded SubmitTask>"} '
                              '(and "content_key": "<64 hex>" for a private task)') from None
    # Rule: a private task comes with the key it commits to, a public one with none.
    if (key is not None) != bool(tx.key_commit):
        raise ValidationError("a private task (key_commit set) needs its content_key, a public one none")
    if key is not None and (len(key) != CONTENT_KEY_LEN or key_commitment(key) != tx.key_commit):
        raise ValidationError("content_key is not the key this task's key_commit commits to")
    if compute is None:
        raise ValidationError("this node runs no compute, so it cannot serve the task's blobs")
    if tx.stages or tx.data_parallel:
        return _crew_request(tx, key, compute)
    spec_blob = compute.blobs.read(tx.spec_hash)
    if spec_blob is None or len(spec_blob) > MAX_SPEC_BLOB:
        raise ValidationError("the task spec blob is not in this node's blob directory")
    spec = decode_record(TaskSpec, spec_blob)
    validate_spec(spec)
    # Rule: the transaction declares the spec's own shape of work.
    if (tx.steps, tx.checkpoint_interval) != (spec.steps, spec.checkpoint_interval):
        raise ValidationError("steps and checkpoint interval differ from the spec's")
    # Rule: the game's positions are the spec's own ops (validators map them to ops).
    if tx.ops_per_step != len(step_ops(spec)):
        raise ValidationError(f"ops_per_step {tx.ops_per_step} is not the spec's {len(step_ops(spec))}")
    if key is None:
        # Rule: the dataset is here to be served.
        if compute.blobs.read(spec.dataset_hash) is None:
            raise ValidationError("the dataset blob is not in this node's blob directory")
        return tx
    # Rule: a private task's dataset is here sealed, and not in the clear (any peer may
    # fetch a plain blob by its hash).
    if compute.blobs.read(sealed_locator(key, spec.dataset_hash)) is None:
        raise ValidationError("the sealed dataset blob is not in this node's blob directory")
    if compute.blobs.read(spec.dataset_hash) is not None:
        raise ValidationError("this private task's dataset is in this node's blob directory in the clear, "
                              "where any peer can fetch it; remove it first")
    return PrivateSubmit(tx, key)


def _crew_request(tx: SubmitTask, key: bytes | None, compute: MarketCompute) -> SubmitTask:
    """A crew task: its spec is a crew task file (protocol/pol/crew_spec.py) in this node's
    blob directory, whose shape the transaction declares (the corpus is built in)."""
    # Rule: not private (the ledger refuses it too; said here before anything is stored).
    if key is not None:
        raise ValidationError("a crew task cannot be private (not built)")
    spec_blob = compute.blobs.read(tx.spec_hash)
    if spec_blob is None:
        raise ValidationError("the crew task file is not in this node's blob directory")
    settings = parse_crew_spec(spec_blob, "crew task file")
    crew = settings.crew
    # Rule: the transaction's crew is the file's, and so are its steps and segments.
    if (tx.stages, tx.data_parallel) != (crew["stages"], crew["data_parallel"]):
        raise ValidationError(f"the crew is {tx.stages} x {tx.data_parallel}; the file says "
                              f"{crew['stages']} x {crew['data_parallel']}")
    if (tx.steps, tx.checkpoint_interval) != (crew_steps(settings), crew["segment_steps"]):
        raise ValidationError(f"steps and checkpoint interval must be the file's {crew_steps(settings)} "
                              f"and {crew['segment_steps']}")
    return tx


def task_doc(market: MarketState, task: Task, compute: MarketCompute | None) -> dict[str, Any]:
    trained = compute.trained.get(task.task_id) if compute is not None else None
    doc = asdict(task_summary(market, task))
    doc["penalties"] = [{"who": w, "amount": a, "why": why} for w, a, why in doc["penalties"]]
    doc["trained_here"] = {"accuracy": trained.accuracy, "attack": trained.attack} if trained else None
    if task.status == Status.OPEN:
        doc["why_not_placed"] = placement_reason(market, task)
    return doc


def workers_doc(market: MarketState) -> list[dict[str, Any]]:
    return [{"pubkey": w.pubkey.hex(), "stake": w.stake, "jobs": w.jobs, "price": w.price_per_gflop}
            for w in list(market.workers.values())[:MAX_TASKS_LISTED]]


def market_summary(core: MarketCore, me: bytes) -> dict[str, Any] | None:
    view = core.view
    if view is None:
        return None
    market = view.market
    worker = market.workers.get(me)
    return {
        "height": view.height,
        "supply_audit_ok": _audits(core),
        "tasks": {k: v for k, v in stage_counts(market.tasks.values()).items() if v},
        "jackpot": market.jackpot,
        "workers": len(market.workers),
        "worker_stake": worker.stake if worker else None,
        "slashed": slashed_parties(market.tasks.values()),
    }


def _audits(core: MarketCore) -> bool:
    """Whether the committed state conserves supply and the market's books balance."""
    try:
        audit_supply(core.ledger.state)
        audit_market(core.ledger.state)
    except PolnetError:
        return False
    return True
