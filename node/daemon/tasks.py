"""The admin endpoint's market pages: accept a task from the local CLI, describe tasks.

A submitted task is checked here before it is queued, because once its SubmitTask is on
the ledger the fee is in escrow: the spec blob and the dataset blob must already be in
this node's blob directory (so workers can fetch them from us), the spec must be valid
and match the transaction, and the account must be able to pay the escrow.
"""

from __future__ import annotations

import json
from typing import Any

from protocol.errors import PolnetError, ValidationError
from protocol.ledger.primitives import audit_supply
from protocol.market.chain import audit_market
from protocol.market.node import MarketNode
from protocol.market.process import budget, task_id_of
from protocol.market.roles import SubmitterRole
from protocol.market.settle import compute_cost
from protocol.market.state import MarketState, Status, Task
from protocol.market.txs import SubmitTask
from protocol.pol.spec import TaskSpec, validate_spec
from protocol.records import decode_record

#: Tasks listed on one page (the ledger bounds open tasks; ended ones are pruned).
MAX_TASKS_LISTED = 256
#: Tasks waiting in a submitter's queue before the endpoint refuses more.
MAX_QUEUED = 64
MAX_SPEC_BLOB = 64 * 1024


def parse_task_request(body: bytes, compute: Any, core: MarketNode) -> SubmitTask:
    try:
        doc = json.loads(body)
        tx = decode_record(SubmitTask, bytes.fromhex(doc["submit"]))
    except (ValueError, KeyError, TypeError):
        raise ValidationError('expected {"submit": "<hex of an encoded SubmitTask>"}') from None
    blobs = getattr(compute, "blobs", None)
    if blobs is None:
        raise ValidationError("this node runs no compute, so it cannot serve the task's blobs")
    spec_blob = blobs.read(tx.spec_hash)
    if spec_blob is None or len(spec_blob) > MAX_SPEC_BLOB:
        raise ValidationError("the task spec blob is not in this node's blob directory")
    spec = decode_record(TaskSpec, spec_blob)
    validate_spec(spec)
    # Rule: the transaction declares the spec's own shape of work.
    if (tx.steps, tx.checkpoint_interval) != (spec.steps, spec.checkpoint_interval):
        raise ValidationError("steps and checkpoint interval differ from the spec's")
    # Rule: the dataset is here to be served.
    if blobs.read(spec.dataset_hash) is None:
        raise ValidationError("the dataset blob is not in this node's blob directory")
    market = core.market
    need = budget(market, tx.gflops, tx.max_price_per_gflop) + core.fee
    balance = core.ledger.state.account(core.me).balance
    # Rule: the account can pay the escrow (the ledger would refuse it later, silently).
    if need > balance:
        raise ValidationError(f"escrow of {need} exceeds this account's balance of {balance}")
    return tx


def queue_task(submitter: SubmitterRole, tx: SubmitTask) -> bytes:
    if len(submitter.queue) >= MAX_QUEUED:
        raise ValidationError(f"{MAX_QUEUED} tasks already wait in this node's queue")
    submitter.queue.append(tx)
    return task_id_of(submitter.me, tx)


def queued_ids(submitter: SubmitterRole) -> set[bytes]:
    return {task_id_of(submitter.me, tx) for tx in submitter.queue}


def task_doc(task: Task, compute: Any) -> dict[str, Any]:
    trained = getattr(compute, "trained", {}).get(task.task_id)
    valid = task.status == Status.SETTLED and bool(task.proof_valid)
    return {
        "task_id": task.task_id.hex(),
        "status": task.status.name,
        "outcome": task.outcome,
        "submitter": task.submitter.hex(),
        "solver": task.solver.hex() if task.solver else None,
        "proof_root": task.proof_root.hex() if task.proof_root else None,
        "proof_valid": task.proof_valid,
        "gflops": task.gflops,
        "paid": compute_cost(task) if valid else 0,
        "submitted_at": task.submitted_at,
        "verifiers": len(task.verifiers),
        "challenges": len(task.challenges),
        "forced_revealed": sum(v.forced_revealed for v in task.verifiers),
        "trained_here": {"accuracy": trained.accuracy, "attack": trained.attack} if trained else None,
    }


def workers_doc(market: MarketState) -> list[dict[str, Any]]:
    return [{"pubkey": w.pubkey.hex(), "stake": w.stake, "jobs": w.jobs, "price": w.price_per_gflop}
            for w in list(market.workers.values())[:MAX_TASKS_LISTED]]


def market_summary(core: MarketNode, me: bytes) -> dict[str, Any] | None:
    view = core.view
    if view is None:
        return None
    market = view.market
    stages: dict[str, int] = {}
    for task in market.tasks.values():
        stages[task.status.name] = stages.get(task.status.name, 0) + 1
    worker = market.workers.get(me)
    return {
        "height": view.height,
        "supply_audit_ok": _audits(core),
        "tasks": stages,
        "jackpot": market.jackpot,
        "workers": len(market.workers),
        "worker_stake": worker.stake if worker else None,
    }



def _audits(core: MarketNode) -> bool:
    """Whether the committed state conserves supply and the market's books balance."""
    try:
        audit_supply(core.ledger.state)
        audit_market(core.ledger.state)
    except PolnetError:
        return False
    return True
