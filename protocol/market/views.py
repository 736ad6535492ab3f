"""The one read model of the market: what reports, status pages and the CLI show.

netsim's report, the daemon's admin endpoint and `polnet swarm up`'s report each used
to count stages, payouts and slashes themselves, and their numbers could disagree. They
all read the committed `MarketState` through these functions instead (the CLI reads
them as JSON from the admin endpoint, which builds them here). Pure: no I/O, and the
money figures follow the rules in `protocol.market.settle`, not a second derivation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from protocol.market import crews
from protocol.market.elections import fits
from protocol.market.params import BPS
from protocol.market.process import budget
from protocol.market.settle import compute_cost, verifier_pay
from protocol.market.stages import STAGES
from protocol.market.state import TERMINAL, MarketState, PenaltyKind, Status, Task, Worker


def stage_counts(tasks: Iterable[Task]) -> dict[str, int]:
    """Tasks per status name (every status of the stage table, zeros included)."""
    counts = dict.fromkeys((s.name for s in STAGES), 0)
    for task in tasks:
        counts[task.status.name] += 1
    return counts


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """One task's outcome and money, as every report shows it."""

    task_id: str
    status: str
    outcome: str
    submitter: str
    solver: str | None
    proof_root: str | None
    proof_valid: bool | None
    gflops: int
    fee: int  # escrowed at submit
    paid: int  # to the solver
    verifier_paid: int  # to verifiers and profilers
    refunded: int  # back to the submitter (terminal tasks)
    submitted_at: int
    verifiers: int
    challenges: int
    forced_revealed: int
    penalties: tuple[tuple[str, int, str], ...]  # (who, amount, why)
    private: bool = False
    #: A private task's parties that were handed its key (wrap recipients), its elected
    #: watchers, and how many parties reported a wrap that did not open.
    key_holders: tuple[str, ...] = ()
    watchers: tuple[str, ...] = ()
    key_faults: int = 0  # every report on the ledger (a fresh wrap does not erase one)
    #: The elected parties besides the solver (who may hold a private task's key).
    verifier_keys: tuple[str, ...] = ()
    profiler_keys: tuple[str, ...] = ()
    #: A crew task: its members by rank, and those the validators convicted.
    crew: tuple[str, ...] = ()
    convicted: tuple[str, ...] = ()


def _paid_to_workers(task: Task) -> int:
    """What the solver, or the crew's unconvicted members, earned (settle.py)."""
    if task.status != Status.SETTLED:
        return 0
    if task.is_crew:
        prices = dict(zip(task.crew, task.crew_prices, strict=True))
        return sum(amount for _, amount in crews.crew_payout(task, crews.shape_of(task), prices,
                                                             task.convicted).paid)
    return compute_cost(task) if task.proof_valid else 0


def task_summary(market: MarketState, task: Task) -> TaskSummary:
    settled = task.status == Status.SETTLED
    paid = _paid_to_workers(task)
    vpay = 0
    if settled and (task.solver_price or task.crew_prices):
        per = verifier_pay(market, task)
        verdicts = sum(v.verdict is not None and _paid_verdict(task, i) for i, v in enumerate(task.verifiers))
        vpay = per * (verdicts + sum(r.spec_ok for r in task.profile_reports))
    fee = budget(market, task.gflops, task.max_price_per_gflop)
    tax = task.gflops * task.max_price_per_gflop * market.params.jackpot_tax_bps // BPS if task.taxed else 0
    refunded = max(0, fee - tax - paid - vpay) if task.status in TERMINAL else 0
    return TaskSummary(
        task.task_id.hex(), task.status.name, task.outcome, task.submitter.hex(),
        task.solver.hex() if task.solver else None, task.proof_root.hex() if task.proof_root else None,
        task.proof_valid, task.gflops, fee, paid, vpay, refunded, task.submitted_at, len(task.verifiers),
        len(task.challenges), sum(v.forced_revealed for v in task.verifiers),
        tuple((p.who.hex(), p.amount, p.kind.name.lower()) for p in task.penalties),
        task.private, tuple(sorted({w.recipient.hex() for w in task.wraps})),
        tuple(w.hex() for w in task.watchers), len(task.unkeyed),
        tuple(v.pubkey.hex() for v in task.verifiers), tuple(p.hex() for p in task.profilers),
        tuple(m.hex() for m in task.crew), tuple(m.hex() for m in task.convicted),
    )


def _paid_verdict(task: Task, index: int) -> bool:
    """Whether settle paid verifier `index` (a verdict not slashed; see settle.py)."""
    slot = task.verifiers[index]
    slashed = {p.who for p in task.penalties
               if p.kind in (PenaltyKind.WRONG_VERDICT, PenaltyKind.IGNORED_FORCING)}
    return slot.pubkey not in slashed


@dataclass(frozen=True, slots=True)
class Slash:
    task_id: str
    who: str
    amount: int
    why: str


def slashes(tasks: Iterable[Task]) -> list[Slash]:
    """Every stake slash and forfeited bond of the tasks still on record, in task order."""
    return [Slash(t.task_id.hex(), p.who.hex(), p.amount, p.kind.name.lower())
            for t in tasks for p in t.penalties]


def slashed_parties(tasks: Iterable[Task]) -> dict[str, list[str]]:
    """Who lost stake or a bond, and for what (pubkey hex -> reasons)."""
    out: dict[str, list[str]] = {}
    for s in slashes(tasks):
        out.setdefault(s.who, []).append(s.why)
    return out


def paid_to_solvers(market: MarketState, tasks: Iterable[Task]) -> int:
    return sum(task_summary(market, t).paid for t in tasks)


def placement_reason(market: MarketState, task: Task) -> str:
    """Why an OPEN task has no solver yet, in the operator's terms ("" if a worker fits:
    it will be placed at the next block). Checks each eligibility rule of
    `protocol.market.elections.fits` in turn over the registered workers."""
    if task.status != Status.OPEN:
        return ""
    if task.is_crew:
        return _crew_placement_reason(market, task)
    p = market.params
    workers = [w for w in market.workers.values()
               if w.pubkey != task.submitter and w.pubkey not in task.excluded]
    budget_ = task.gflops * task.max_price_per_gflop
    stake_needed = max(p.min_worker_stake, -(-budget_ * BPS // p.max_budget_per_stake_bps))
    rules: list[tuple[str, Callable[[Worker], bool]]] = [
        (f"no worker runs on {task.device.name}", lambda w: w.device == task.device),
        (f"no worker has {task.min_memory_mb} MB of memory", lambda w: w.memory_mb >= task.min_memory_mb),
        (f"no worker stakes the {stake_needed} a task of this budget needs",
         lambda w: w.stake >= stake_needed),
        (f"every worker asks more than the offered {task.max_price_per_gflop} per GFLOP",
         lambda w: w.price_per_gflop <= task.max_price_per_gflop),
        ("every fitting worker is busy", lambda w: w.jobs < p.max_jobs_per_worker),
    ]
    if not workers:
        return "no registered worker other than the submitter (or those excluded from it)"
    for why, rule in rules:
        workers = [w for w in workers if rule(w)]
        if not workers:
            return why
    fitting = [w for w in market.workers.values() if fits(w, task, p) and w.secret_commit is not None]
    if len(fitting) < p.verifier_count + 1:
        return f"{len(fitting)} workers fit; a solver and {p.verifier_count} verifiers are needed"
    return ""


def _crew_placement_reason(market: MarketState, task: Task) -> str:
    """A crew waits for `size` members whose own share fits them and a verifier each."""
    shape = crews.shape_of(task)
    fitting = [w for w in market.workers.values() if crews.member_fits(w, task, shape, market.params)]
    if len(fitting) < 2 * shape.size:
        return (f"{len(fitting)} workers fit a member's share; a crew of {shape.size} and a verifier for "
                f"each member ({2 * shape.size} in all) are needed")
    return ""
