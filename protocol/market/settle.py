"""Stage 8: judge every party against the decided truth, pay, slash, refund, release.

Truth is one bit per task, `proof_valid`: True when nobody accused the solver or every
accuser lost its bisection game, False when the solver lost a game (on `bad_segment`).
Each verifier and challenger is then right or wrong against that, with two refinements:
an ACCEPT is shown wrong only on the segment the solver lost (each verifier checks one
segment, and a good segment of a bad run is honestly accepted); and a verifier that
revealed a forced-error secret is paid for its work and never slashed, while the first
right challenger of its verdict wins the jackpot.
"""

from __future__ import annotations

from protocol.market import funds
from protocol.market.params import BPS
from protocol.market.state import MarketState, Status, Task


def compute_cost(task: Task) -> int:
    """What the solver earns at its own price (the unused part of the budget is refunded)."""
    return task.gflops * task.solver_price


def verifier_pay(state: MarketState, task: Task) -> int:
    p = state.params
    return compute_cost(task) * p.verifier_pay_bps // BPS // p.verifier_count


def settle(state: MarketState, task: Task) -> None:
    valid = bool(task.proof_valid)
    slashed, winners = _judge_solver(state, task, valid)
    s2, w2 = _judge_verifiers(state, task, valid)
    s3, w3 = _judge_challengers(state, task, valid)
    funds.distribute(state, slashed + s2 + s3, winners + w2 + w3, state.params.whistleblower_reward_bps)
    if task.profiler is not None:
        funds.pay_from_escrow(state, task, task.profiler, verifier_pay(state, task))
    _close(state, task, Status.SETTLED, "valid" if valid else "invalid")


def _judge_solver(state: MarketState, task: Task, valid: bool) -> tuple[int, list[bytes]]:
    assert task.solver is not None
    if valid:
        funds.pay_from_escrow(state, task, task.solver, compute_cost(task))
        return 0, []
    amount = funds.slash(state.workers[task.solver], state.params.solver_slash_bps)
    accusers = [v.pubkey for v in task.verifiers if _accused(v.verdict) and not v.forced_revealed]
    accusers += [c.challenger for c in task.challenges if not c.claims_valid]
    return amount, accusers


def _accused(verdict: object) -> bool:
    return verdict is not None and not getattr(verdict, "accept", True)


def _judge_verifiers(state: MarketState, task: Task, valid: bool) -> tuple[int, list[bytes]]:
    slashed = 0
    winners: list[bytes] = []
    pay = verifier_pay(state, task)
    for index, slot in enumerate(task.verifiers):
        if slot.verdict is None:
            continue
        if slot.forced_revealed or not _shown_wrong(task, slot.verdict.accept, slot.verdict.segment, valid):
            funds.pay_from_escrow(state, task, slot.pubkey, pay)
            continue
        slashed += funds.slash(state.workers[slot.pubkey], state.params.verifier_slash_bps)
        winners += [c.challenger for c in task.challenges if c.target == index and c.claims_valid == valid]
    return slashed, winners


def _shown_wrong(task: Task, accept: bool, segment: int, valid: bool) -> bool:
    """A REJECT is wrong when the proof stood; an ACCEPT only when the solver lost a game on
    that very segment (an honest check of a good segment of a bad run is not wrong)."""
    if valid:
        return not accept
    return accept and segment == task.bad_segment


def _judge_challengers(state: MarketState, task: Task, valid: bool) -> tuple[int, list[bytes]]:
    forfeited = 0
    jackpot = state.params.jackpot_for(compute_cost(task))
    paid_targets: set[int] = set()
    for challenge in task.challenges:
        bond, challenge.bond = challenge.bond, 0
        if challenge.claims_valid != valid:
            forfeited += bond
            continue
        state.accounts.credit(challenge.challenger, bond)
        # Rule: the first right challenger of a revealed forced error wins the jackpot.
        if task.verifiers[challenge.target].forced_revealed and challenge.target not in paid_targets:
            paid_targets.add(challenge.target)
            funds.pay_from_jackpot(state, challenge.challenger, jackpot)
    return forfeited, []


def refund(state: MarketState, task: Task, why: str) -> None:
    """End a task without judging anyone: bonds back, escrow back to the submitter."""
    for challenge in task.challenges:
        state.accounts.credit(challenge.challenger, challenge.bond)
        challenge.bond = 0
    _close(state, task, Status.REFUNDED, why)


def _close(state: MarketState, task: Task, status: Status, why: str) -> None:
    funds.pay_from_escrow(state, task, task.submitter, task.escrow)
    for who in _duties(task):
        funds.release(state, who)
    task.status = status
    task.outcome = why
    task.game = None
    task.deadline = state.height


def _duties(task: Task) -> list[bytes | None]:
    return [task.solver, task.profiler, *(v.pubkey for v in task.verifiers)]
