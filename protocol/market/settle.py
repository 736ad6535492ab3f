"""Stage 8: judge every party against the decided truth, pay, slash, refund, release.

Truth is one bit per task, `proof_valid`: True when nobody accused the solver or every
accuser lost its bisection game, False when the solver lost a game (on `bad_segment`,
against `winner`). Each verifier and challenger is then right or wrong against that,
with two refinements: an ACCEPT is shown wrong only on the segment the solver lost (each
verifier checks one segment, and a good segment of a bad run is honestly accepted); and
a verifier that revealed a forced-error secret is paid for its work and never slashed,
while the first right challenger of its verdict wins the jackpot.

Who earns a slash's reward share. Only the party that supplied the proof: the solver's
slash and the slash of every ACCEPT the same game showed wrong go to `winner` (the
accuser whose game the solver lost by arbitration; after a silent defence, the first
unforced rejecting verifier); a REJECT shown wrong on a valid run goes to the first
right challenger of that REJECT (the whistleblower who re-checked it). Everyone
else who merely said the same thing gets its bond back and nothing more: paying every
"me too" accuser a share let a challenger who never checked anything profit from other
parties' proofs (the demo's false challenger ended +10,660 before this rule). An accuser
that lost its own game (silent, or shown wrong move by move) forfeits its bond whatever
the final truth, so a challenge that cannot be played costs its author.
"""

from __future__ import annotations

from protocol.market import crews, funds
from protocol.market.params import BPS
from protocol.market.stages import enter
from protocol.market.state import ChallengeRec, MarketState, PenaltyKind, ProvenProof, Status, Task


def compute_cost(task: Task) -> int:
    """What the solver earns at its own price, or the crew at its members' prices (the
    unused part of the budget is refunded)."""
    if task.is_crew:
        share = crews.member_gflops(task, crews.shape_of(task))
        return sum(share * price for price in task.crew_prices)
    return task.gflops * task.solver_price


def verifier_pay(state: MarketState, task: Task) -> int:
    """One verdict's pay: the verifier budget split over `verifier_count` slots, or over
    the crew's members (one slot each)."""
    p = state.params
    slots = task.crew_size if task.is_crew else p.verifier_count
    return compute_cost(task) * p.verifier_pay_bps // BPS // slots


def settle(state: MarketState, task: Task) -> None:
    valid = bool(task.proof_valid)
    reward_bps = state.params.whistleblower_reward_bps
    proven = _judge_solver(state, task, valid)
    proven += _judge_verifiers(state, task, valid)
    funds.distribute(state, proven, _provers(task, valid), reward_bps)
    _judge_challengers(state, task, valid)
    if valid and task.proof_root is not None and not task.is_crew:
        # Rule: an accepted proof can be named as a later task's base (for a while).
        accepted = ProvenProof(task.task_id, task.n_segments + 1, task.steps, state.height)
        state.proven[task.proof_root] = accepted
    for report in task.profile_reports:
        # Rule: a profiler is paid when its report agreed with the decided profile.
        if report.spec_ok:
            funds.pay_from_escrow(state, task, report.profiler, verifier_pay(state, task))
    _close(state, task, Status.SETTLED, "valid" if valid else "invalid")


def _provers(task: Task, valid: bool) -> list[bytes]:
    """Who earns the reward share of the slashes a lost defence caused: the accuser that
    won by arbitration; after a silent defence, the first unforced rejecting verifier
    (its elected check found the cheat before any game); else nobody (all to the jackpot)."""
    if valid:
        return []
    if task.winner is not None:
        return [task.winner]
    rejecting = (v.pubkey for v in task.verifiers if v.verdict is not None and not v.verdict.accept
                 and not v.forced_revealed and v.verdict.available)
    first = next(rejecting, None)
    return [first] if first is not None else []


def _judge_solver(state: MarketState, task: Task, valid: bool) -> int:
    """Pay a valid solver; slash a shown cheat (its reward goes to the game's winner)."""
    if task.is_crew:
        return _judge_crew(state, task)
    assert task.solver is not None
    if valid:
        funds.pay_from_escrow(state, task, task.solver, compute_cost(task))
        return 0
    return funds.penalise(state, task, task.solver, state.params.solver_slash_bps, PenaltyKind.SOLVER_CHEAT)


def _judge_crew(state: MarketState, task: Task) -> int:
    """Pay every member the validators did not convict, at its own price, for its share;
    slash only the convicted (`crews.crew_payout`). Their shares stay in the escrow,
    which goes back to the submitter when the task closes."""
    prices = dict(zip(task.crew, task.crew_prices, strict=True))
    payout = crews.crew_payout(task, crews.shape_of(task), prices, task.convicted)
    for member, amount in payout.paid:
        funds.pay_from_escrow(state, task, member, amount)
    return sum(funds.penalise(state, task, member, state.params.solver_slash_bps, PenaltyKind.SOLVER_CHEAT)
               for member in payout.slashed)


def _judge_verifiers(state: MarketState, task: Task, valid: bool) -> int:
    """Pay right (and revealed forced) verdicts. Returns the slashes the game's winner
    proved; a wrong REJECT's slash is distributed here to whoever challenged it first."""
    proven = 0
    pay = verifier_pay(state, task)
    reward_bps = state.params.whistleblower_reward_bps
    for index, slot in enumerate(task.verifiers):
        if slot.verdict is None:
            continue
        if not slot.verdict.available:
            # Rule: a verifier that could not fetch its segment checked nothing: it is neither
            # paid nor slashed (availability was settled by the validators, not by it).
            continue
        if slot.forced_revealed and verdict_shown_right(task, slot.verdict.accept, slot.verdict.segment):
            # Rule: a forced verifier whose verdict is shown right ignored its forcing (it
            # posted what it would post unforced, or never checked): slashed, not excused.
            state.jackpot += funds.penalise(state, task, slot.pubkey, state.params.verifier_slash_bps,
                                            PenaltyKind.IGNORED_FORCING)
            continue
        if slot.forced_revealed or not verdict_shown_wrong(task, slot.verdict.accept, slot.verdict.segment):
            funds.pay_from_escrow(state, task, slot.pubkey, pay)
            continue
        amount = funds.penalise(state, task, slot.pubkey, state.params.verifier_slash_bps,
                                PenaltyKind.WRONG_VERDICT)
        if slot.verdict.accept:
            proven += amount
            continue
        right = [c.challenger for c in task.challenges if c.target == index and challenge_right(task, c)]
        funds.distribute(state, amount, right[:1], reward_bps)
    return proven


def verdict_shown_wrong(task: Task, accept: bool, segment: int) -> bool:
    """A REJECT is wrong when the proof stood; an ACCEPT only when the solver lost a game on
    that very segment (an honest check of a good segment of a bad run is not wrong). On a
    crew, a verdict is about one member (`segment` is its rank): an ACCEPT is wrong when
    the member was convicted, a REJECT when it was not (every REJECT gets its game)."""
    if task.is_crew:
        return accept == (task.crew[segment] in task.convicted)
    if task.proof_valid:
        return not accept
    return accept and segment == task.bad_segment


def verdict_shown_right(task: Task, accept: bool, segment: int) -> bool:
    """An ACCEPT of a proof that stood, or a REJECT of the very segment the solver lost
    (on a crew: of a member the validators acquitted, or convicted)."""
    if task.is_crew:
        return accept != (task.crew[segment] in task.convicted)
    if task.proof_valid:
        return accept
    return not accept and segment == task.bad_segment


def challenge_right(task: Task, challenge: ChallengeRec) -> bool:
    """A challenge is right when its target verdict is shown wrong and it did not lose its
    own game."""
    slot = task.verifiers[challenge.target]
    if slot.verdict is None or challenge.challenger in task.lost:
        return False
    return verdict_shown_wrong(task, slot.verdict.accept, slot.verdict.segment)


def _judge_challengers(state: MarketState, task: Task, valid: bool) -> None:
    """Bonds back to right challengers, to the jackpot from wrong ones; the first right
    challenger of a revealed forced error wins the jackpot."""
    jackpot = state.params.jackpot_for(compute_cost(task))
    paid_targets: set[int] = set()
    for challenge in task.challenges:
        bond, challenge.bond = challenge.bond, 0
        if not challenge_right(task, challenge):
            funds.forfeit(state, task, challenge.challenger, bond)
            continue
        state.accounts.credit(challenge.challenger, bond)
        # Rule: the first right challenger of a revealed forced error wins the jackpot.
        if task.verifiers[challenge.target].forced_revealed and challenge.target not in paid_targets:
            paid_targets.add(challenge.target)
            funds.pay_from_jackpot(state, challenge.challenger, jackpot)


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
    enter(state, task, status, 0)
    task.outcome = why
    task.game = None


def _duties(task: Task) -> list[bytes | None]:
    return [task.solver, *task.profilers, *task.crew, *(v.pubkey for v in task.verifiers)]
