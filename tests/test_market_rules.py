"""One test per market rule: refusals leave state untouched, and each judgement pays or slashes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from protocol.encoding import sha256
from protocol.market import elections
from protocol.market.errors import (
    BadProof,
    BadReveal,
    InsufficientFunds,
    NotAuthorized,
    OutOfBounds,
    UnknownTask,
    WrongStage,
)
from protocol.market.game import tally
from protocol.market.params import DEVNET, MAINNET, PPM, ConfigError, check_params
from protocol.market.process import challenge_bond, task_id_of
from protocol.market.state import NO_BASE, Status, market_root
from protocol.market.txs import (
    ArbitrationVote,
    BisectClaim,
    Challenge,
    DeregisterWorker,
    DeviceClass,
    ForcedErrorReveal,
    ProfileReport,
    ProveCommit,
    SubmitTask,
    Verdict,
    VerdictReveal,
)
from tests.test_market_world import STAKE, World, key, register_tx, world


def until(w: World, tid: bytes, status: Status, limit: int = 500) -> None:
    for _ in range(limit):
        if w.task(tid).status == status:
            return
        w.block()
    raise AssertionError(f"task never reached {status.name}")


def refused(w: World, sender: bytes, tx: object, err: type[Exception]) -> None:
    root = market_root(w.state)
    with pytest.raises(err):
        from protocol.market.process import process_tx

        process_tx(w.state, sender, tx)
    assert market_root(w.state) == root, "a refused tx changed the state"


# --- params ---------------------------------------------------------------------------------------


def test_presets_satisfy_the_jackpot_inequality() -> None:
    for p in (DEVNET, MAINNET):
        check_params(p)
        cost = 10_000
        assert p.jackpot_for(cost) * p.forced_error_ppm > p.check_cost(cost) * PPM


def test_params_with_a_jackpot_below_break_even_are_refused() -> None:
    with pytest.raises(ConfigError):
        check_params(replace(DEVNET, jackpot_margin_bps=9_000))


def test_params_whose_tax_cannot_fund_the_jackpot_are_refused() -> None:
    with pytest.raises(ConfigError):
        check_params(replace(DEVNET, jackpot_tax_bps=100))


# --- workers --------------------------------------------------------------------------------------


def test_register_below_minimum_stake_is_refused() -> None:
    w = World()
    refused(w, key("new"), register_tx(stake=DEVNET.min_worker_stake - 1), OutOfBounds)


def test_register_without_funds_is_refused() -> None:
    w = World()
    refused(w, key("pauper"), register_tx(), InsufficientFunds)


def test_register_with_zero_capacity_is_refused() -> None:
    w = World()
    refused(w, w.submitter, register_tx(flops=0), OutOfBounds)


def test_deregister_returns_stake_when_idle() -> None:
    w = World()
    pk = w.workers[0]
    before = w.state.accounts.balance(pk)
    assert w.apply(pk, DeregisterWorker(0, 0, 0)) is None
    assert w.state.accounts.balance(pk) == before + STAKE and pk not in w.state.workers


def test_deregister_with_open_duty_is_refused() -> None:
    w = world()
    tid = w.submit()
    until(w, tid, Status.TRAINING)
    solver = w.task(tid).solver
    assert solver is not None
    refused(w, solver, DeregisterWorker(0, 0, 0), WrongStage)


# --- submit and elections -------------------------------------------------------------------------


def test_submit_escrows_budget_and_tax_is_taken_only_at_placement() -> None:
    w = world()
    before = w.state.accounts.balance(w.submitter)
    tid = w.submit(gflops=1_000, price=40)
    work = 40_000
    assert before - w.state.accounts.balance(w.submitter) == work + work // 10 + work // 10
    assert w.state.jackpot == 0
    w.block()
    assert w.state.jackpot == work // 10 and w.task(tid).status == Status.TRAINING


def test_submit_below_price_floor_is_refused() -> None:
    w = World(params=replace(DEVNET, min_price_per_gflop=5))
    tx = SubmitTask(sha256(b"s"), 10, 640, 10, 4, DeviceClass.CPU, 1, True, 4, 0, NO_BASE, 0, 0)
    refused(w, w.submitter, tx, OutOfBounds)


def test_submit_with_too_few_segments_for_cheap_checks_is_refused() -> None:
    w = World()
    assert DEVNET.min_segments == 64  # one check re-executes at most 1/64 of the work
    tx = SubmitTask(sha256(b"s"), 10, 630, 10, 4, DeviceClass.CPU, 1, True, 40, 0, NO_BASE, 0, 0)
    refused(w, w.submitter, tx, OutOfBounds)
    assert w.apply(w.submitter, replace(tx, steps=640)) is None


def test_submit_with_interval_beyond_steps_is_refused() -> None:
    w = World()
    tx = SubmitTask(sha256(b"s"), 10, 10, 11, 4, DeviceClass.CPU, 1, True, 4, 0, NO_BASE, 0, 0)
    refused(w, w.submitter, tx, OutOfBounds)


def test_same_task_id_twice_is_refused() -> None:
    w = world()
    w.submit(salt=7)
    tx = SubmitTask(sha256(b"spec"), 1_000, 640, 10, 8, DeviceClass.CPU, 1024, True, 40, 7, NO_BASE, 0, 0)
    refused(w, w.submitter, tx, OutOfBounds)


def test_task_nobody_can_take_is_refunded_whole_at_the_placement_deadline() -> None:
    w = world()
    before = w.state.accounts.balance(w.submitter)
    tid = w.submit(device=DeviceClass.CUDA)  # every worker is CPU
    task = w.run(tid)
    assert task.status == Status.REFUNDED and task.outcome == "unplaceable"
    assert w.state.accounts.balance(w.submitter) == before
    assert w.state.height >= DEVNET.placement_blocks


def test_solver_price_above_the_offer_is_not_eligible() -> None:
    w = world(params=replace(DEVNET, min_price_per_gflop=1, verifier_pay_bps=3_000))
    tid = w.submit(price=4)  # every worker asks 5
    assert w.run(tid).outcome == "unplaceable"


def test_election_is_deterministic_and_stake_weighted() -> None:
    cands = [(bytes([i]) * 32, 1 if i else 1_000_000) for i in range(5)]
    picks = [elections.weighted_sample(cands, sha256(bytes([s])), 1)[0] for s in range(50)]
    assert picks == [elections.weighted_sample(cands, sha256(bytes([s])), 1)[0] for s in range(50)]
    assert picks.count(bytes([0]) * 32) >= 45


def test_weighted_sample_returns_distinct_keys() -> None:
    cands = [(bytes([i]) * 32, 10) for i in range(6)]
    got = elections.weighted_sample(cands, b"seed", 4)
    assert len(got) == len(set(got)) == 4


def test_verifiers_are_distinct_from_solver_and_each_other() -> None:
    w = world()
    tid = w.submit()
    until(w, tid, Status.COMMIT)
    task = w.task(tid)
    keys = [v.pubkey for v in task.verifiers]
    assert task.solver not in keys and len(set(keys)) == len(keys) == DEVNET.verifier_count


def test_non_reproducible_task_gets_several_profilers_distinct_from_the_solver() -> None:
    w = world()
    tid = w.submit(reproducible=False)
    until(w, tid, Status.TRAINING)
    task = w.task(tid)
    assert len(set(task.profilers)) == DEVNET.profiler_count and task.solver not in task.profilers
    assert w.run(tid).status == Status.SETTLED and task.threshold_ppm == 1_000


def test_one_profiler_refusing_a_good_spec_cannot_kill_the_task() -> None:
    w = world(n_workers=8)
    tid = w.submit(reproducible=False)
    until(w, tid, Status.TRAINING)
    refuser = w.task(tid).profilers[0]
    w.behaviour[refuser] = "refuser"
    task = w.run(tid)
    assert task.status == Status.SETTLED and task.outcome == "valid"
    before = w.state.accounts.balance(refuser)
    assert all(r.profiler != refuser or not r.spec_ok for r in task.profile_reports)
    assert w.state.accounts.balance(refuser) == before  # the refusal earned nothing


def test_a_majority_of_profilers_refusing_refunds_the_task() -> None:
    w = world(n_workers=8)
    tid = w.submit(reproducible=False)
    until(w, tid, Status.TRAINING)
    for profiler in w.task(tid).profilers[:2]:
        w.behaviour[profiler] = "refuser"
    assert w.run(tid).outcome == "spec refused by the profilers"


def test_threshold_is_the_median_of_the_accepting_reports() -> None:
    w = world(n_workers=8)
    tid = w.submit(reproducible=False)
    until(w, tid, Status.TRAINING)
    task = w.task(tid)
    for profiler, threshold in zip(task.profilers, (5, 900_000, 70), strict=True):
        assert w.apply(profiler, ProfileReport(tid, threshold, True, 0, 0)) is None
    assert task.threshold_ppm == 70  # the inflated 900_000 does not set it


# --- prove, verify --------------------------------------------------------------------------------


def test_prove_commit_by_someone_else_is_refused() -> None:
    w = world()
    tid = w.submit()
    until(w, tid, Status.TRAINING)
    refused(w, w.submitter, ProveCommit(tid, sha256(b"r"), 11, 0, 0), NotAuthorized)


def test_prove_commit_with_wrong_checkpoint_count_is_refused() -> None:
    w = world()
    tid = w.submit()
    until(w, tid, Status.TRAINING)
    solver = w.task(tid).solver
    assert solver is not None
    refused(w, solver, ProveCommit(tid, sha256(b"r"), 3, 0, 0), OutOfBounds)


def test_tx_for_unknown_task_is_refused() -> None:
    w = world()
    refused(w, w.workers[0], ProveCommit(b"\x01" * 32, sha256(b"r"), 11, 0, 0), UnknownTask)


def test_reveal_that_does_not_open_the_commitment_is_refused() -> None:
    w = world()
    tid = w.submit()
    until(w, tid, Status.REVEAL)
    slot = w.task(tid).verifiers[0]
    bad = VerdictReveal(tid, Verdict(False, slot.segment, 1), b"\x00" * 32, 0, 0)
    refused(w, slot.pubkey, bad, BadReveal)


def test_verdict_on_unassigned_segment_is_refused() -> None:
    w = world()
    tid = w.submit()
    until(w, tid, Status.COMMIT)
    w.block(auto=False)
    task = w.task(tid)
    slot = task.verifiers[0]
    other = (slot.segment + 1) % task.n_segments
    verdict, salt = Verdict(True, other, 0), b"\x05" * 32
    from protocol.market.txs import VerdictCommit

    for s in task.verifiers:
        mine = verdict if s is slot else Verdict(True, s.segment, 0)
        c = elections.verdict_commitment(tid, s.pubkey, mine, salt)
        assert w.apply(s.pubkey, VerdictCommit(tid, c, 0, 0)) is None
    refused(w, slot.pubkey, VerdictReveal(tid, verdict, salt, 0, 0), BadReveal)


# --- challenge, forced errors, disputes -----------------------------------------------------------


def test_challenge_below_its_bond_or_by_the_solver_is_refused() -> None:
    w = world()
    tid = w.submit()
    until(w, tid, Status.CHALLENGE)
    task = w.task(tid)
    need = challenge_bond(w.state, task, 0)
    refused(w, w.liar_key, Challenge(tid, 0, task.verifiers[0].segment, need - 1, 0, 0), OutOfBounds)
    assert task.solver is not None
    refused(w, task.solver, Challenge(tid, 0, task.verifiers[0].segment, need, 0, 0), NotAuthorized)
    refused(w, w.liar_key, Challenge(tid, 9, 0, need, 0, 0), OutOfBounds)


def test_an_unstaked_account_cannot_challenge() -> None:
    w = world()
    tid = w.submit()
    until(w, tid, Status.CHALLENGE)
    task = w.task(tid)
    need = challenge_bond(w.state, task, 0)
    refused(w, w.submitter, Challenge(tid, 0, task.verifiers[0].segment, need, 0, 0), NotAuthorized)


def test_challenge_bond_scales_with_what_the_accused_can_lose() -> None:
    w = world()
    tid = w.submit()
    until(w, tid, Status.CHALLENGE)
    task = w.task(tid)
    assert task.solver is not None and task.verifiers[0].verdict is not None
    solver_at_risk = w.stake(task.solver) * DEVNET.solver_slash_bps // 10_000
    bond = challenge_bond(w.state, task, 0)
    assert task.verifiers[0].verdict.accept
    scaled = solver_at_risk * DEVNET.challenge_bond_bps // 10_000
    assert bond == max(DEVNET.min_challenge_bond, scaled) > 1_028


def test_false_challenger_loses_its_bond_and_honest_parties_lose_nothing() -> None:
    w = world(false_challenger=True)
    before = w.state.accounts.balance(w.liar_key)
    task = w.run(w.submit())
    assert task.status == Status.SETTLED and task.proof_valid is True
    bonds = sum(p.amount for p in task.penalties if p.who == w.liar_key)
    assert bonds > 0 and w.state.accounts.balance(w.liar_key) == before - bonds
    assert all(w.stake(pk) == STAKE for pk in w.workers)


def test_lazy_verifier_is_slashed_when_its_accepted_segment_is_shown_bad() -> None:
    w = world()
    lazy = w.workers[0]
    w.behaviour[lazy] = "lazy"
    for salt in range(40):  # find a task where the lazy worker verifies
        tid = w.submit(cheat=True, salt=salt)
        until(w, tid, Status.COMMIT)
        if any(v.pubkey == lazy for v in w.task(tid).verifiers):
            break
        w.run(tid)
    else:
        pytest.skip("lazy worker never elected")
    stake = w.stake(lazy)
    task = w.run(tid)
    lazy_slot = next(v for v in task.verifiers if v.pubkey == lazy)
    assert task.proof_valid is False and task.bad_segment == lazy_slot.segment
    assert w.stake(lazy) == stake - stake * DEVNET.verifier_slash_bps // 10_000


def test_accept_of_a_segment_not_shown_bad_is_not_slashed() -> None:
    w = world(watcher=False)
    acceptor = w.workers[0]
    w.behaviour[acceptor] = "lazy"  # accepts; nobody shows its own segment bad
    for salt in range(60):
        tid = w.submit(cheat=True, salt=salt)
        until(w, tid, Status.COMMIT)
        slots = w.task(tid).verifiers
        mine = [v for v in slots if v.pubkey == acceptor]
        if mine and all(v.segment != mine[0].segment for v in slots if v is not mine[0]):
            break
        w.run(tid)
    else:
        pytest.skip("no suitable election")
    stake = w.stake(acceptor)
    task = w.run(tid)
    assert task.proof_valid is False and task.bad_segment != mine[0].segment
    assert w.stake(acceptor) == stake


def test_false_accusing_verifier_loses_the_game_and_is_slashed() -> None:
    w = world()
    liar = w.workers[1]
    w.behaviour[liar] = "false_accuser"
    for salt in range(40):
        tid = w.submit(salt=salt)
        until(w, tid, Status.COMMIT)
        if any(v.pubkey == liar for v in w.task(tid).verifiers):
            break
        w.run(tid)
    else:
        pytest.skip("liar never elected")
    stake = w.stake(liar)
    task = w.run(tid)
    assert task.proof_valid is True and task.status == Status.SETTLED
    assert w.stake(liar) == stake - stake * DEVNET.verifier_slash_bps // 10_000


def test_forced_error_is_caught_whistleblower_paid_from_jackpot_verifier_not_slashed() -> None:
    w = world(params=replace(DEVNET, forced_error_ppm=PPM))  # every verdict forced
    w.state.jackpot = 0
    tid = w.submit()
    until(w, tid, Status.FORCED_REVEAL)
    jackpot_before = w.state.jackpot
    watcher_before = w.state.accounts.balance(w.watcher_key)
    task = w.run(tid)
    assert task.status == Status.SETTLED and task.proof_valid is True
    assert all(v.forced_revealed for v in task.verifiers)
    assert all(w.stake(v.pubkey) == STAKE for v in task.verifiers)
    gain = w.state.accounts.balance(w.watcher_key) - watcher_before
    assert gain > 0 and w.state.jackpot < jackpot_before


def test_duty_reveal_with_a_wrong_secret_or_another_duty_is_refused() -> None:
    from tests.test_market_world import secret_of

    w = world()
    tid = w.submit()
    until(w, tid, Status.FORCED_REVEAL)
    slot = w.task(tid).verifiers[0]
    secret, proof = elections.duty_reveal(secret_of(slot.pubkey), slot.secret_index)
    refused(w, slot.pubkey, ForcedErrorReveal(tid, b"\x07" * 32, proof, 0, 0), BadReveal)
    other, other_proof = elections.duty_reveal(secret_of(slot.pubkey), slot.secret_index + 1)
    refused(w, slot.pubkey, ForcedErrorReveal(tid, other, other_proof, 0, 0), BadReveal)
    assert w.apply(slot.pubkey, ForcedErrorReveal(tid, secret, proof, 0, 0)) is None
    refused(w, slot.pubkey, ForcedErrorReveal(tid, secret, proof, 0, 0), BadReveal)  # once


def test_forced_verifier_that_ignores_its_forcing_is_slashed() -> None:
    w = world(params=replace(DEVNET, forced_error_ppm=PPM))  # every duty forced
    lazy = w.workers[0]
    w.behaviour[lazy] = "lazy"  # accepts everything, never flips
    for salt in range(20):
        tid = w.submit(salt=salt)
        until(w, tid, Status.COMMIT)
        if any(v.pubkey == lazy for v in w.task(tid).verifiers):
            break
        w.run(tid)
    else:
        pytest.skip("lazy worker never elected")
    stake = w.stake(lazy)
    task = w.run(tid)
    assert task.outcome == "valid" and next(v for v in task.verifiers if v.pubkey == lazy).forced_revealed
    assert w.stake(lazy) == stake - stake * DEVNET.verifier_slash_bps // 10_000
    assert all(w.stake(v.pubkey) == STAKE for v in task.verifiers if v.pubkey != lazy)  # obeyed: excused


def test_verifier_hiding_its_duty_secret_is_slashed_like_an_ignored_forcing() -> None:
    w = world(watcher=False)
    hider = w.workers[0]
    w.behaviour[hider] = "hides_secret"
    for salt in range(20):
        tid = w.submit(salt=salt)
        until(w, tid, Status.COMMIT)
        if any(v.pubkey == hider for v in w.task(tid).verifiers):
            break
        w.run(tid)
    else:
        pytest.skip("hider never elected")
    stake = w.stake(hider)
    assert w.run(tid).outcome == "valid"
    assert w.stake(hider) == stake - stake * DEVNET.verifier_slash_bps // 10_000


def test_older_duty_stays_provable_after_fresh_secret_commitments() -> None:
    from tests.test_market_world import secret_of

    w = world(params=replace(DEVNET, forced_error_ppm=PPM))
    tid = w.submit()
    until(w, tid, Status.FORCED_REVEAL)
    slot = w.task(tid).verifiers[0]
    for fresh in (b"second", b"third"):  # two re-registrations (each would reveal and move on)
        commit = elections.forced_error_commitment(sha256(fresh + slot.pubkey))
        assert w.apply(slot.pubkey, replace(register_tx(stake=0), secret_commit=commit)) is None
    secret, proof = elections.duty_reveal(secret_of(slot.pubkey), slot.secret_index)
    assert w.apply(slot.pubkey, ForcedErrorReveal(tid, secret, proof, 0, 0)) is None
    assert slot.forced_revealed


def test_bisection_move_out_of_turn_or_round_is_refused() -> None:
    w = world()
    tid = w.submit(cheat=True)
    until(w, tid, Status.DISPUTE)
    task = w.task(tid)
    assert task.game is not None and task.solver is not None
    refused(w, task.game.accuser, BisectClaim(tid, 0, b"\x01" * 32, 0, 0), NotAuthorized)
    refused(w, task.solver, BisectClaim(tid, 5, b"\x01" * 32, 0, 0), OutOfBounds)


def test_bisection_reaches_one_operation_within_log2_rounds() -> None:
    w = world()
    tid = w.submit(cheat=True)
    until(w, tid, Status.ARBITRATION)
    game = w.task(tid).game
    assert game is not None and game.hi - game.lo == 1
    assert game.round <= (10 * 8 - 1).bit_length()


def test_vote_by_a_non_validator_is_refused() -> None:
    w = world()
    tid = w.submit(cheat=True)
    until(w, tid, Status.ARBITRATION)
    game = w.task(tid).game
    assert game is not None
    refused(w, w.workers[0], ArbitrationVote(tid, game.round, True, 0, 0), NotAuthorized)


def test_reveal_by_another_party_or_not_opening_the_agreed_digest_is_refused() -> None:
    w = world()
    tid = w.submit(cheat=True)
    until(w, tid, Status.ARBITRATION)
    task = w.task(tid)
    game = task.game
    assert game is not None and task.solver is not None and game.reveal is None
    honest = w.solver_trace(task).reveal(game.segment, game.lo, game.round)
    refused(w, game.accuser, honest, NotAuthorized)
    refused(w, task.solver, replace(honest, round=game.round + 1), OutOfBounds)
    refused(w, task.solver, replace(honest, weights=(b"\x07" * 32,)), BadReveal)
    refused(w, task.solver, replace(honest, prefix=honest.prefix[:-1] or honest.prefix + honest.prefix),
            BadReveal)
    assert w.apply(task.solver, honest) is None and task.game is not None and task.game.reveal is not None


def test_vote_before_the_reveal_is_refused() -> None:
    w = world()
    tid = w.submit(cheat=True)
    until(w, tid, Status.ARBITRATION)
    game = w.task(tid).game
    assert game is not None and game.reveal is None
    refused(w, next(iter(w.validators)), ArbitrationVote(tid, game.round, True, 0, 0), WrongStage)


def test_defender_silent_at_the_reveal_loses_the_game() -> None:
    w = world()
    tid = w.submit(cheat=True)
    until(w, tid, Status.ARBITRATION)
    solver = w.task(tid).solver
    assert solver is not None
    w.behaviour[solver] = "silent"
    task = w.run(tid)
    assert task.status == Status.SETTLED and task.proof_valid is False and w.stake(solver) < STAKE


def test_a_verifier_that_could_not_fetch_is_neither_slashed_nor_slashes_an_honest_solver() -> None:
    w = world()
    for salt in range(40):  # a task where an unreachable worker is elected verifier
        tid = w.submit(salt=salt)
        until(w, tid, Status.COMMIT)
        if w.task(tid).verifiers:
            break
    cut_off = w.task(tid).verifiers[0].pubkey
    w.behaviour[cut_off] = "unreachable"
    task = w.run(tid)
    assert task.status == Status.SETTLED and task.proof_valid is True
    assert task.penalties == []  # nobody lost anything: the validators found the segment served
    assert w.stake(cut_off) == STAKE and task.solver is not None and w.stake(task.solver) == STAKE


def test_a_solver_that_serves_no_proof_loses_when_the_validators_cannot_fetch_it_either() -> None:
    w = world()
    tid = w.submit()
    w.withheld.add(tid)
    task = w.run(tid)
    assert task.status == Status.SETTLED and task.proof_valid is False
    assert task.solver is not None and w.stake(task.solver) < STAKE
    kinds = {(p.who, p.kind.name) for p in task.penalties}
    assert kinds == {(task.solver, "SOLVER_CHEAT")}, kinds


def test_an_unavailable_verdict_cannot_be_challenged() -> None:
    w = world()
    tid = w.submit()
    w.withheld.add(tid)
    until(w, tid, Status.CHALLENGE)
    task = w.task(tid)
    refused(w, w.watcher_key, Challenge(tid, 0, task.verifiers[0].segment, 10**6, 0, 0), OutOfBounds)


def test_a_fine_tune_may_name_only_an_accepted_proof_as_its_base() -> None:
    w = world()
    done = w.run(w.submit())
    assert done.status == Status.SETTLED and done.proof_valid and done.proof_root is not None
    assert w.state.proven[done.proof_root].n_checkpoints == done.n_segments + 1
    tune = SubmitTask(sha256(b"tune"), 1_000, 640, 10, 8, DeviceClass.CPU, 1024, True, 40, 1, done.proof_root,
                      0, 0)
    refused(w, w.submitter, replace(tune, base_root=b"\x05" * 32), BadProof)
    assert w.apply(w.submitter, tune) is None
    task = w.task(task_id_of(w.submitter, tune))
    assert (task.base_root, task.base_checkpoints, task.base_steps) == (done.proof_root, done.n_segments + 1,
                                                                       done.steps)


def test_a_refunded_or_invalid_proof_is_never_a_base() -> None:
    w = world()
    cheat = w.run(w.submit(cheat=True))
    assert cheat.proof_valid is False and cheat.proof_root is not None
    assert cheat.proof_root not in w.state.proven


def test_tally_needs_more_than_two_thirds_of_power() -> None:
    vals = {b"a": 1, b"b": 1, b"c": 1}
    assert tally(vals, {b"a": True, b"b": True}) is None
    assert tally(vals, {b"a": True, b"b": True, b"c": True}) is True
    assert tally({b"a": 3, b"b": 1}, {b"a": False}) is False


def test_silent_accuser_loses_and_silent_defender_loses() -> None:
    w = world()
    tid = w.submit(cheat=True)
    until(w, tid, Status.DISPUTE)
    solver = w.task(tid).solver
    assert solver is not None
    w.behaviour[solver] = "silent"
    task = w.run(tid)
    assert task.proof_valid is False and w.stake(solver) < STAKE


def test_undecided_arbitration_refunds_without_slashing() -> None:
    w = world()
    for v in w.validators:
        w.behaviour[v] = "silent"
    tid = w.submit(cheat=True)
    task = w.run(tid)
    assert task.status == Status.REFUNDED and task.outcome == "arbitration undecided"


# --- silence and replacement ----------------------------------------------------------------------


def test_silent_solver_is_replaced_and_partly_slashed() -> None:
    w = world()
    tid = w.submit()
    until(w, tid, Status.TRAINING)
    first = w.task(tid).solver
    assert first is not None
    w.behaviour[first] = "silent"
    task = w.run(tid)
    assert task.status == Status.SETTLED and task.solver != first
    assert w.stake(first) == STAKE - STAKE * DEVNET.silence_slash_bps // 10_000


def test_silent_verifier_is_replaced_and_partly_slashed() -> None:
    w = world()
    tid = w.submit()
    until(w, tid, Status.COMMIT)
    gone = w.task(tid).verifiers[0].pubkey
    w.behaviour[gone] = "silent"
    task = w.run(tid)
    assert task.status == Status.SETTLED and gone in task.excluded
    assert w.stake(gone) == STAKE - STAKE * DEVNET.silence_slash_bps // 10_000


def test_everyone_silent_ends_in_refund_within_bound() -> None:
    w = world()
    for pk in w.workers:
        w.behaviour[pk] = "silent"
    tid = w.submit()
    bound = w.bound(tid)
    task = w.run(tid, max_blocks=bound + 1)
    assert task.status == Status.REFUNDED


def test_capacity_advert_ttl_rules() -> None:
    from protocol.market.messages import CapacityAdvert, check_advert

    ad = CapacityAdvert(DeviceClass.CPU, 1024, 10**9, 5, 1, 1_000, 31_000)
    check_advert(ad, 2_000, 60_000)
    with pytest.raises(OutOfBounds):
        check_advert(ad, 31_000, 60_000)
    with pytest.raises(OutOfBounds):
        check_advert(replace(ad, expires_at=100_000), 2_000, 60_000)


def test_one_verifier_always_checks_the_final_segment() -> None:
    w = world()
    for salt in range(5):
        tid = w.submit(salt=salt)
        until(w, tid, Status.COMMIT)
        task = w.task(tid)
        assert task.n_segments - 1 in {v.segment for v in task.verifiers}
        w.run(tid)


def test_task_waits_for_placement_while_too_few_verifiers_are_eligible() -> None:
    w = world(n_workers=2)  # a solver plus one verifier: one short of verifier_count
    tid = w.submit()
    assert w.run(tid).outcome == "unplaceable"


def test_ended_tasks_are_forgotten_after_the_retention_window() -> None:
    w = world(params=replace(DEVNET, ended_retention_blocks=3))
    tid = w.submit()
    w.run(tid)
    assert tid in w.state.tasks
    for _ in range(5):
        w.block()
    assert tid not in w.state.tasks
