"""Block-boundary transitions: elections, deadlines, replacements, settlement.

`begin_block` gives the market the block's height, beacon and validator set; `end_block`
walks every open task in id order and moves it on if its stage allows or its deadline
passed. Every non-terminal stage has a deadline, and every deadline either advances the
task or spends one of its bounded replacements, so every task ends (settled or refunded)
within `lifetime_bound` blocks: nothing waits forever.
"""

from __future__ import annotations

from typing import Any

from protocol.market import crews, elections, funds
from protocol.market.elections import Role
from protocol.market.game import finish_game, max_rounds, start_next_game
from protocol.market.params import BPS, GFLOP, MarketParams
from protocol.market.process import decide_profile
from protocol.market.settle import refund, settle
from protocol.market.stages import block_step, enter, on_block
from protocol.market.state import (
    TERMINAL,
    GameKind,
    LazyTable,
    MarketState,
    PenaltyKind,
    Status,
    Task,
    Turn,
    VerifierSlot,
)
from protocol.market.wraps import PRIVATE_WATCHERS, excused, keyed

#: Accepted proofs are swept for age every this many blocks (one pass over the table).
PROVEN_SWEEP_BLOCKS = 100

def begin_block(state: MarketState, height: int, beacon: bytes, validators: dict[bytes, int]) -> None:
    state.height = height
    state.beacon = beacon
    state.validators = dict(validators)


def end_block(state: MarketState) -> None:
    state.seatings_left = crews.MAX_SEATINGS_PER_BLOCK
    for task_id in sorted(t.task_id for t in state.open_tasks()):
        task = state.tasks[task_id]
        block_step(task.status)(state, task)
    _forget_ended(state)


def _forget_ended(state: MarketState) -> None:
    """Drop ended tasks past the retention window (they hold no value: escrow and bonds
    were paid out when they ended), and accepted proofs past theirs."""
    horizon = state.height - state.params.ended_retention_blocks
    for task_id in state.task_keys_where(lambda t: t.status in TERMINAL and t.deadline < horizon):
        del state.tasks[task_id]
    if state.height % PROVEN_SWEEP_BLOCKS == 0:
        too_old = state.height - state.params.proven_retention_blocks
        proven = state.proven

        def old(p: Any) -> bool:
            return bool(p.settled_at < too_old)

        if isinstance(proven, LazyTable):
            stale = proven.keys_where(old, old)
        else:
            stale = [k for k in proven if old(proven[k])]
        for root in stale:
            del proven[root]


def train_blocks(params: MarketParams, gflops: int, flops: int) -> int:
    """Training deadline: the solver's own measured speed, times a slack, plus a base."""
    ms = -(-gflops * GFLOP * 1_000 // max(1, flops))
    return params.train_base_blocks + -(-ms * params.train_slack_pct // (100 * params.block_time_ms))


def crew_train_blocks(params: MarketParams, task: Task, slowest_flops: int) -> int:
    """A crew's training deadline: its slowest member's share, and a second base for what
    the FLOPs leave out (the rendezvous, each member's process starting, its proof
    published), so an honest member on a loaded box is not taken for a silent one."""
    share = crews.member_gflops(task, crews.shape_of(task))
    return train_blocks(params, share, slowest_flops) + params.train_base_blocks


def lifetime_bound(params: MarketParams, task: Task, slowest_flops: int) -> int:
    """Most blocks from submit to a terminal state (each term: one stage's worst case)."""
    tries = params.max_replacements + 1
    train = train_blocks(params, task.gflops, slowest_flops) + params.profile_blocks
    if task.is_crew:
        train += params.train_base_blocks  # crew_train_blocks' second base
    # A try's verification may end in a forced-only check, which is verified again.
    verify = (params.placement_blocks + params.commit_blocks + params.reveal_blocks + 2
              + params.challenge_window_blocks + params.forced_reveal_blocks + 1)
    games = params.verifier_count + params.max_challenges_per_task
    if task.is_crew:  # a verifier per member and try, each game straight to the validators
        games = task.crew_size * tries + params.max_challenges_per_task
    dispute = games * ((2 * max_rounds(task) + 2) * params.move_blocks + params.arbitration_blocks + 1)
    tail = params.challenge_window_blocks + params.forced_reveal_blocks + dispute
    return tries * (params.placement_blocks + train + verify + 2) + tail + 2


# --- stage steps ---------------------------------------------------------------------------------


@on_block(Status.OPEN)
def _open(state: MarketState, task: Task) -> None:
    # Rule: elect from a beacon fixed after the submit (a strictly later block).
    if state.height <= task.stage_since:
        return
    if _place(state, task):
        return
    # Rule: a task nobody eligible can take is refunded at its placement deadline.
    if state.height >= task.deadline:
        refund(state, task, "unplaceable")


def _place(state: MarketState, task: Task) -> bool:
    """Elect the missing solver and profiler together, or neither."""
    if task.is_crew:
        return _place_crew(state, task)
    p = state.params
    solver = task.solver
    if solver is None:
        picked = elections.weighted_sample(
            keyed(state, task, elections.eligible_solvers(state.workers.values(), task, p)),
            elections.election_seed(state.beacon, task.task_id, Role.SOLVER), 1)
        if not picked:
            return False
        solver = picked[0]
    # Rule: place a task only when enough verifiers could check it right now (plus the
    # profilers still needed), so solved work is rarely refunded for want of verifiers.
    decided = task.reproducible or task.threshold_ppm is not None
    missing = 0 if decided else p.profiler_count - len(task.profilers)
    needed = p.verifier_count + missing
    if sum(1 for c in _verifier_candidates(state, task) if c[0] != solver) < needed:
        return False
    if task.reproducible:
        task.threshold_ppm = 0
    elif missing > 0:
        candidates = [c for c in _verifier_candidates(state, task) if c[0] != solver]
        seed = elections.election_seed(state.beacon, task.task_id, Role.PROFILER + bytes([task.replacements]))
        picked = elections.weighted_sample(candidates, seed, missing)
        if len(picked) < missing:
            return False
        for key in picked:
            state.workers[key].jobs += 1
        task.profilers += picked
    if task.solver is None:
        state.workers[solver].jobs += 1
        task.solver_price = state.workers[solver].price_per_gflop
    task.solver = solver
    _tax_once(state, task)
    blocks = train_blocks(p, task.gflops, state.workers[solver].flops)
    if task.proof_root is not None:
        blocks = p.profile_blocks
    enter(state, task, Status.TRAINING, blocks)
    return True


def _place_crew(state: MarketState, task: Task) -> bool:
    """Elect a whole crew, or nobody: `stages x data_parallel` members by stake among the
    workers whose own share of the task fits them (`crews.elect_crew`), each at its own
    price, each rank given by the scheduler over the members' committed links when the
    task declared its model (`crews.seat_crew`), else in draw order."""
    p = state.params
    shape = crews.shape_of(task)
    members = crews.elect_crew(state.workers.values(), task, shape, p, state.beacon)
    if members is None:
        return False
    # Rule: place a crew only when every member's verifier could be elected right now
    # (one verifier per member, none of them in the crew).
    if sum(1 for c in _verifier_candidates(state, task) if c[0] not in members) < shape.size:
        return False
    # Rule: at most MAX_SEATINGS_PER_BLOCK crews are seated by the scheduler in one block
    # (each search costs every node a fraction of a second); the others wait a block.
    if task.model:
        if state.seatings_left <= 0:
            return False
        state.seatings_left -= 1
    members = crews.seat_crew(members, state.workers, state.links, task, state.height, state.beacon)
    for key in members:
        state.workers[key].jobs += 1
    task.crew = list(members)
    task.crew_prices = [state.workers[k].price_per_gflop for k in members]
    task.crew_commits = [b""] * shape.size
    task.crew_aborts = []
    task.threshold_ppm = 0  # bit for bit (check_crew_submit: a crew task is reproducible)
    _tax_once(state, task)
    slowest = min(state.workers[k].flops for k in members)
    enter(state, task, Status.TRAINING, crew_train_blocks(p, task, slowest))
    return True


def _verifier_candidates(state: MarketState, task: Task) -> list[tuple[bytes, int]]:
    # Rule: the secret was committed before this block's beacon was known.
    candidates = [(k, w) for k, w in elections.eligible_verifiers(state.workers.values(), task, state.params)
                  if state.workers[k].secret_height < state.height]
    # Rule: a private task elects only parties with a key to wrap its content key to.
    return keyed(state, task, candidates)


def _tax_once(state: MarketState, task: Task) -> None:
    """The jackpot tax is taken when a task is first placed (an unplaced task is refunded whole)."""
    if not task.taxed:
        tax = task.gflops * task.max_price_per_gflop * state.params.jackpot_tax_bps // BPS
        funds.escrow_to_jackpot(state, task, tax)
        task.taxed = True


def _penalise_silence(state: MarketState, task: Task, who: bytes) -> None:
    """A silent party loses a share of stake (to the jackpot), its duty, and its eligibility.
    On a private task, a party that never had a working key is excused the slash
    (`protocol.market.wraps`): it loses the duty, not stake."""
    if who in state.workers and not excused(state, task, who):
        state.jackpot += funds.penalise(state, task, who, state.params.silence_slash_bps, PenaltyKind.SILENCE)
    funds.release(state, who)
    task.excluded.append(who)


def _replacements_left(state: MarketState, task: Task) -> bool:
    task.replacements += 1
    if task.replacements > state.params.max_replacements:
        refund(state, task, "too many silent parties")
        return False
    return True


@on_block(Status.TRAINING)
def _training(state: MarketState, task: Task) -> None:
    if task.is_crew:
        _crew_training(state, task)
        return
    if state.height < task.deadline:
        return
    if task.proof_root is None and task.solver is not None:
        _penalise_silence(state, task, task.solver)
        task.solver = None
    if task.threshold_ppm is None:
        reported = {r.profiler for r in task.profile_reports}
        for silent in [k for k in task.profilers if k not in reported]:
            _penalise_silence(state, task, silent)
            task.profilers.remove(silent)
        if task.profile_reports and task.proof_root is not None:
            decide_profile(state, task)  # decide on the reports that came
            if task.status != Status.TRAINING:
                return
    if _replacements_left(state, task):
        enter(state, task, Status.OPEN, state.params.placement_blocks)


def _crew_training(state: MarketState, task: Task) -> None:
    """A crew that did not commit whole is dissolved: at the deadline, or as soon as
    every member has committed or said the crew stopped. A member that said nothing is
    slashed for silence and never elected for the task again; the members that spoke are
    released (neither paid nor slashed: a crew's partial work verifies nothing). The task
    is then placed again with a new crew, or refunded when replacements run out."""
    spoke = [m for r, m in enumerate(task.crew) if task.crew_commits[r] or m in task.crew_aborts]
    if state.height < task.deadline and len(spoke) < len(task.crew):
        return
    for member in task.crew:
        if member in spoke:
            funds.release(state, member)
        else:
            _penalise_silence(state, task, member)
    task.crew, task.crew_prices, task.crew_commits, task.crew_aborts = [], [], [], []
    if _replacements_left(state, task):
        enter(state, task, Status.OPEN, state.params.placement_blocks)


@on_block(Status.PROVED)
def _proved(state: MarketState, task: Task) -> None:
    # Rule: verifiers (and their segments) come from a beacon fixed after the proof.
    if state.height <= task.stage_since:
        return
    if task.verify_beacon == b"":
        task.verify_beacon = state.beacon
    if _elect_verifiers(state, task, state.params.verifier_count):
        _elect_watchers(state, task)
        enter(state, task, Status.COMMIT, state.params.commit_blocks)
    elif state.height >= task.deadline:
        refund(state, task, "no eligible verifiers")


def _elect_verifiers(state: MarketState, task: Task, count: int) -> bool:
    seed = elections.election_seed(state.beacon, task.task_id, Role.VERIFIER + bytes([task.replacements]))
    if task.is_crew:
        return _elect_crew_verifiers(state, task, seed)
    picked = elections.weighted_sample(_verifier_candidates(state, task), seed, count)
    for key in picked:
        segment = elections.sample_segment(task.verify_beacon, task.task_id, key, task.n_segments)
        # Rule: someone always checks the final segment: the delivered weights, and where
        # every shortcut (truncating, skipping, a late perturbation) shows (a forced
        # verdict on it does not count: it checked nothing the ledger can use).
        if all(v.segment != task.n_segments - 1 for v in task.verifiers if not v.forced_revealed):
            segment = task.n_segments - 1
        task.verifiers.append(_new_slot(state, key, segment))
    return bool(picked)


def _new_slot(state: MarketState, key: bytes, segment: int) -> VerifierSlot:
    worker = state.workers[key]
    worker.jobs += 1
    slot = VerifierSlot(key, segment=segment, beacon=state.beacon, elected_at=state.height,
                        secret_commit=worker.secret_commit or b"", secret_index=worker.duty_index)
    worker.duty_index += 1
    return slot


def unchecked_ranks(task: Task) -> list[int]:
    """A crew's ranks that no verifier is checking or has checked unforced: each member
    is verified on its own, so each needs a live slot (`VerifierSlot.segment` is the rank)."""
    def covers(slot: VerifierSlot, rank: int) -> bool:
        live = slot.verdict is None or (slot.verdict.available and not slot.forced_revealed)
        return slot.segment == rank and live

    return [r for r in range(task.crew_size) if not any(covers(v, r) for v in task.verifiers)]


def _elect_crew_verifiers(state: MarketState, task: Task, seed: bytes) -> bool:
    """One verifier per unchecked member, none of them in the crew, ranks in draw order."""
    ranks = unchecked_ranks(task)
    candidates = [c for c in _verifier_candidates(state, task) if c[0] not in task.crew]
    picked = elections.weighted_sample(candidates, seed, len(ranks))
    for key, rank in zip(picked, ranks, strict=False):
        task.verifiers.append(_new_slot(state, key, rank))
    return bool(picked)


def _elect_watchers(state: MarketState, task: Task) -> None:
    """A private task's whistleblowers are elected (nobody else can read what they check):
    workers that are none of its other parties, from the verifiers' beacon. A watcher has
    no deadline (whistleblowing is voluntary, paid from the jackpot when it catches)."""
    if not task.private or task.watchers:
        return
    seed = elections.election_seed(state.beacon, task.task_id, Role.WATCHER)
    task.watchers = elections.weighted_sample(_verifier_candidates(state, task), seed, PRIVATE_WATCHERS)


def _drop_silent(state: MarketState, task: Task, silent: list[VerifierSlot]) -> None:
    for slot in silent:
        _penalise_silence(state, task, slot.pubkey)
        task.verifiers.remove(slot)


@on_block(Status.COMMIT)
def _commit(state: MarketState, task: Task) -> None:
    if state.height < task.deadline:
        return
    silent = [v for v in task.verifiers if v.commitment is None]
    _drop_silent(state, task, silent)
    spare = task.replacements < state.params.max_replacements
    if silent and spare and _elect_verifiers(state, task, len(silent)):
        task.replacements += 1
        enter(state, task, Status.COMMIT, state.params.commit_blocks)
    elif task.verifiers:
        enter(state, task, Status.REVEAL, state.params.reveal_blocks)
    else:
        refund(state, task, "no verifier committed")


@on_block(Status.REVEAL)
def _reveal(state: MarketState, task: Task) -> None:
    if state.height < task.deadline:
        return
    _drop_silent(state, task, [v for v in task.verifiers if v.verdict is None])
    if task.verifiers:
        enter(state, task, Status.CHALLENGE, state.params.challenge_window_blocks)
    elif _replacements_left(state, task):
        enter(state, task, Status.PROVED, state.params.placement_blocks)


@on_block(Status.CHALLENGE)
def _challenge(state: MarketState, task: Task) -> None:
    if state.height >= task.deadline:
        enter(state, task, Status.FORCED_REVEAL, state.params.forced_reveal_blocks)


@on_block(Status.FORCED_REVEAL)
def _forced_reveal(state: MarketState, task: Task) -> None:
    if state.height < task.deadline:
        return
    # Rule: a verifier that hides its duty secret is treated like one that ignored its
    # forcing (hiding is the only way to escape that check), not like a mere crash.
    hid = {p.who for p in task.penalties if p.kind == PenaltyKind.HIDDEN_SECRET}
    for slot in task.verifiers:  # (once: a task verified again passes here again)
        if slot.verdict is not None and not slot.secret_revealed and slot.pubkey not in hid:
            state.jackpot += funds.penalise(state, task, slot.pubkey, state.params.verifier_slash_bps,
                                            PenaltyKind.HIDDEN_SECRET)
    # Challengers of an ACCEPT play first: their game judges the very verdict they named
    # (an ACCEPT is only shown wrong on the segment where the solver loses).
    accusers = [c.challenger for c in task.challenges if not c.claims_valid]
    # A verifier's true finding is its verdict, or the opposite when it revealed a forced
    # error: a forced ACCEPT hid a failed check, so that verifier accuses too (otherwise a
    # cheat whose other verifier is lazy would pass whenever no whistleblower re-checked).
    accusers += [v.pubkey for v in task.verifiers
                 if v.verdict and v.verdict.available and v.verdict.accept == v.forced_revealed]
    # Verifiers that could not fetch their segment come last: the validators settle whether
    # the solver serves it (only if no bisection game has shown a cheat first).
    accusers += [v.pubkey for v in task.verifiers if v.verdict and not v.verdict.available]
    task.accusers = list(dict.fromkeys(accusers))
    if task.accusers:
        start_next_game(state, task)
    elif not _checked(task):
        # Rule: a proof nobody checked unforced is verified again (a forced verdict says
        # nothing of the segment: a verifier that always REJECTs, forced, reads as ACCEPT).
        if _replacements_left(state, task):
            enter(state, task, Status.PROVED, state.params.placement_blocks)
    else:
        task.proof_valid = True
        settle(state, task)


def _checked(task: Task) -> bool:
    """Someone checked the proof for the ledger: a verifier's unforced verdict, or a
    bonded challenge that a REJECT is wrong (a whistleblower's re-check, what forced errors
    pay for). Forced verdicts alone say nothing of the segments they name. A crew is
    checked when every member is (each by an unforced verdict on its own rank)."""
    if task.is_crew:
        return not unchecked_ranks(task)
    unforced = any(v.verdict is not None and v.verdict.available and not v.forced_revealed
                   for v in task.verifiers)
    return unforced or any(c.claims_valid for c in task.challenges)


@on_block(Status.DISPUTE)
def _dispute(state: MarketState, task: Task) -> None:
    # Rule: the party that misses its move's deadline loses the game.
    if state.height >= task.deadline and task.game is not None:
        finish_game(state, task, defender_won=task.game.turn == Turn.ACCUSER, proved=False)


@on_block(Status.ARBITRATION)
def _arbitration(state: MarketState, task: Task) -> None:
    if state.height < task.deadline or task.game is None:
        return
    # Rule: a defender that does not reveal the disputed operation's inputs loses the game.
    if task.game.kind == GameKind.BISECT and task.game.reveal is None:
        finish_game(state, task, defender_won=False, proved=False)
        return
    # Rule: validators that cannot reach 2/3 in time void the task (nobody is judged): an
    # undecided availability vote means no party is shown at fault either.
    refund(state, task, "arbitration undecided")

