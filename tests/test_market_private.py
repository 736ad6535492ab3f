"""Private tasks (protocol/market/wraps.py, keyring.py, courier.py) in the core and in netsim.

What is pinned: the ledger's key-wrap rules, each refusal by name; the keyring opens only
wraps to its own keys that open to the committed key; a silent party that never had a
working key is excused, not slashed; in netsim, private tasks settle (and a cheat on one
is caught) with every wrap on the ledger made to a party the market elected, no other
node able to open the key, and, with torch, the shared blob store holding no byte
window of a private dataset or checkpoint in the clear.
"""

from __future__ import annotations

import pytest

from netsim.scenarios.market import MarketConfig
from netsim.scenarios.market.build import build, content_key_of
from netsim.scenarios.market.report import report
from netsim.scenarios.market.run import Watch
from netsim.sim import Sim
from protocol.errors import KeyWrapError
from protocol.identity import Keypair
from protocol.market.blocks import _penalise_silence
from protocol.market.errors import NotAuthorized, OutOfBounds, WrongStage
from protocol.market.jobs import TaskFacts, check_content_key
from protocol.market.keyring import Keyring, key_commitment
from protocol.market.process import process_tx
from protocol.market.state import MarketState, PenaltyKind, Status, Task, VerifierSlot, Worker
from protocol.market.txs import DeviceClass, KeyWrap, KeyWrapFault, SetEncKey
from protocol.market.wraps import entitled, excused, parties
from protocol.sealing import enc_public_key, wrap_content_key

CHAIN = "polnet-test"
TID = b"\x07" * 32
KEY = b"\x42" * 32
SUBMITTER, SOLVER, VERIFIER, OUTSIDER, VALIDATOR = (Keypair.derive(n) for n in
                                                    ("sub", "solver", "verifier", "outsider", "validator"))


def _ring(kp: Keypair, generation: int = 0) -> Keyring:
    return Keyring(kp.seed(), CHAIN, generation)


def _state(status: Status = Status.TRAINING, private: bool = True) -> MarketState:
    state = MarketState()
    task = Task(TID, SUBMITTER.public, b"\x03" * 32, 1, 640, 10, 8, DeviceClass.CPU, 0, True, 40, 1, 0,
                status=status, key_commit=key_commitment(KEY) if private else b"")
    task.solver = SOLVER.public
    task.verifiers = [VerifierSlot(VERIFIER.public)]
    state.tasks[TID] = task
    for kp in (SOLVER, VERIFIER, OUTSIDER, VALIDATOR):
        state.enc_keys[kp.public] = _ring(kp).public
    state.validators = {VALIDATOR.public: 10}
    return state


def _wrap_to(kp: Keypair, key: bytes = KEY) -> bytes:
    return wrap_content_key(key, _ring(kp).public, CHAIN, TID)


# --- the ledger's rules ----------------------------------------------------------------------------


def test_the_submitter_wraps_to_the_solver_and_the_solver_rewraps_for_a_verifier() -> None:
    state = _state()
    process_tx(state, SUBMITTER.public, KeyWrap(TID, SOLVER.public, _wrap_to(SOLVER), 0, 0))
    process_tx(state, SOLVER.public, KeyWrap(TID, VERIFIER.public, _wrap_to(VERIFIER), 0, 0))
    assert [(w.wrapper, w.recipient) for w in state.tasks[TID].wraps] == [
        (SUBMITTER.public, SOLVER.public), (SOLVER.public, VERIFIER.public)]


@pytest.mark.parametrize(("sender", "recipient", "why"), [
    (OUTSIDER, SOLVER, "holds no wrap"),  # only a key holder wraps
    (SUBMITTER, OUTSIDER, "not a party"),  # only to an elected party
    (SUBMITTER, VALIDATOR, "not a party"),  # validators only while a game is played
])
def test_a_wrap_from_a_non_holder_or_to_a_non_party_is_refused(sender: Keypair, recipient: Keypair,
                                                                why: str) -> None:
    state = _state()
    with pytest.raises(NotAuthorized, match=why):
        process_tx(state, sender.public, KeyWrap(TID, recipient.public, _wrap_to(recipient), 0, 0))
    assert state.tasks[TID].wraps == []


def test_validators_may_receive_the_key_only_while_a_game_is_judged() -> None:
    state = _state(Status.ARBITRATION)
    assert VALIDATOR.public in entitled(state, state.tasks[TID])
    process_tx(state, SUBMITTER.public, KeyWrap(TID, VALIDATOR.public, _wrap_to(VALIDATOR), 0, 0))
    assert VALIDATOR.public not in parties(state.tasks[TID])


def test_a_public_task_takes_no_wrap_and_a_keyless_recipient_gets_none() -> None:
    state = _state(private=False)
    with pytest.raises(WrongStage, match="not a private task"):
        process_tx(state, SUBMITTER.public, KeyWrap(TID, SOLVER.public, _wrap_to(SOLVER), 0, 0))
    state = _state()
    del state.enc_keys[SOLVER.public]
    with pytest.raises(NotAuthorized, match="no encryption key"):
        process_tx(state, SUBMITTER.public, KeyWrap(TID, SOLVER.public, _wrap_to(SOLVER), 0, 0))


def test_the_same_wrapper_wraps_again_only_after_the_recipient_reports_a_fault() -> None:
    state = _state()
    tx = KeyWrap(TID, SOLVER.public, _wrap_to(SOLVER, b"\x01" * 32), 0, 0)  # a wrong key
    process_tx(state, SUBMITTER.public, tx)
    with pytest.raises(OutOfBounds, match="already wrapped"):
        process_tx(state, SUBMITTER.public, tx)
    process_tx(state, SOLVER.public, KeyWrapFault(TID, 0, 0))
    with pytest.raises(OutOfBounds, match="already reported"):
        process_tx(state, SOLVER.public, KeyWrapFault(TID, 0, 0))
    process_tx(state, SUBMITTER.public, KeyWrap(TID, SOLVER.public, _wrap_to(SOLVER), 0, 0))
    task = state.tasks[TID]
    assert len(task.wraps) == 1 and task.unkeyed == [SOLVER.public]  # the report stays on record
    assert _ring(SOLVER).content_key(task, SOLVER.public) == KEY


def test_only_an_elected_party_reports_a_fault_and_only_on_a_private_task() -> None:
    with pytest.raises(NotAuthorized):
        process_tx(_state(), OUTSIDER.public, KeyWrapFault(TID, 0, 0))
    with pytest.raises(NotAuthorized):
        process_tx(_state(private=False), SOLVER.public, KeyWrapFault(TID, 0, 0))


def test_an_encryption_key_is_32_nonzero_bytes_and_a_rotation_changes_it() -> None:
    state = _state()
    with pytest.raises(OutOfBounds, match="not all zero"):
        process_tx(state, OUTSIDER.public, SetEncKey(b"\x00" * 32, 0, 0))
    with pytest.raises(OutOfBounds, match="low-order"):
        process_tx(state, OUTSIDER.public, SetEncKey(b"\x01" + b"\x00" * 31, 0, 0))
    with pytest.raises(OutOfBounds, match="already on record"):
        process_tx(state, OUTSIDER.public, SetEncKey(_ring(OUTSIDER).public, 0, 0))
    process_tx(state, OUTSIDER.public, SetEncKey(_ring(OUTSIDER, 1).public, 0, 0))
    assert state.enc_keys[OUTSIDER.public] == _ring(OUTSIDER, 1).public


def test_a_silent_party_without_a_working_key_is_replaced_but_not_slashed() -> None:
    state = _state()
    state.workers[SOLVER.public] = Worker(SOLVER.public, DeviceClass.CPU, 1, 1, 1, 10_000, None, jobs=1)
    state.workers[VERIFIER.public] = Worker(VERIFIER.public, DeviceClass.CPU, 1, 1, 1, 10_000, None, jobs=1)
    task = state.tasks[TID]
    process_tx(state, SUBMITTER.public, KeyWrap(TID, VERIFIER.public, _wrap_to(VERIFIER), 0, 0))
    assert excused(state, task, SOLVER.public) and not excused(state, task, VERIFIER.public)
    _penalise_silence(state, task, SOLVER.public)  # no wrap ever came: excused
    _penalise_silence(state, task, VERIFIER.public)  # it had its key: slashed
    assert state.workers[SOLVER.public].stake == 10_000 and SOLVER.public in task.excluded
    assert [p.who for p in task.penalties if p.kind == PenaltyKind.SILENCE] == [VERIFIER.public]


# --- the keyring and the shells' refusal --------------------------------------------------------


def test_the_keyring_opens_only_its_own_wraps_to_the_committed_key() -> None:
    state = _state()
    task = state.tasks[TID]
    process_tx(state, SUBMITTER.public, KeyWrap(TID, VERIFIER.public, _wrap_to(VERIFIER, b"\x09" * 32), 0, 0))
    found = _ring(VERIFIER).lookup(task, VERIFIER.public)
    assert found.key is None and found.fault and "did not commit" in found.why
    assert _ring(OUTSIDER).lookup(task, OUTSIDER.public).key is None  # nothing to it: no fault, no key
    assert not _ring(OUTSIDER).lookup(task, OUTSIDER.public).fault


def test_a_rotated_keyring_still_opens_a_wrap_made_to_its_older_key() -> None:
    state = _state()
    process_tx(state, SUBMITTER.public, KeyWrap(TID, SOLVER.public, _wrap_to(SOLVER), 0, 0))
    rotated = _ring(SOLVER, 3)
    assert rotated.public != _ring(SOLVER).public == enc_public_key(rotated._privates[0])
    assert rotated.content_key(state.tasks[TID], SOLVER.public) == KEY


def test_no_shell_runs_a_private_job_without_its_committed_key() -> None:
    facts = TaskFacts(TID, b"\x03" * 32, SUBMITTER.public, SOLVER.public, None, 640, 10, 8, 0,
                      key_commit=key_commitment(KEY))
    with pytest.raises(KeyWrapError):
        check_content_key(facts)
    from dataclasses import replace

    with pytest.raises(KeyWrapError):
        check_content_key(replace(facts, content_key=b"\x01" * 32))
    assert check_content_key(replace(facts, content_key=KEY)) == KEY


# --- netsim: the whole market with private tasks --------------------------------------------------


def _run(cfg: MarketConfig) -> tuple[object, object, Sim]:
    built = build(cfg)
    watch = Watch(built, None)
    sim = Sim(built.sim_config, built.factory, executor=built.compute)
    built.compute.sim = sim
    sim.call_at(cfg.progress_ms, watch.tick)  # records the tasks as they end, stops at the last
    sim.run()
    return report(built, watch, sim, 0.0), built, sim


def _check_keys_reach_only_the_elected(r: object, built: object, sim: Sim) -> None:
    tasks = [t for t in r.final_tasks if t.private]  # type: ignore[attr-defined]
    assert tasks
    validators = set(built.layout.keys[i].public for i in built.layout.validators)  # type: ignore[attr-defined]
    for t in tasks:
        allowed = parties(t) | validators | set(t.excluded)
        assert t.wraps and {w.recipient for w in t.wraps} <= allowed, t.task_id.hex()
        for i, kp in enumerate(built.layout.keys):  # type: ignore[attr-defined]
            core = sim.core(i)
            holds = core is not None and core.keyring.held.get(t.task_id) is not None
            if holds:
                assert kp.public in allowed | {t.submitter}, f"node {i} holds a key it was never elected for"


def test_private_tasks_settle_with_keys_wrapped_only_to_the_parties_the_market_elected() -> None:
    r, built, sim = _run(MarketConfig(seed=1, nodes=12, tasks=4, private_tasks=4))
    assert r.ok and r.settled == 4, r.invariants  # type: ignore[attr-defined]
    assert all(t.outcome == "valid" for t in r.final_tasks)  # type: ignore[attr-defined]
    _check_keys_reach_only_the_elected(r, built, sim)
    assert all(t.watchers for t in r.final_tasks)  # type: ignore[attr-defined]


def test_a_cheat_on_a_private_task_is_caught_and_only_the_cheater_loses_stake() -> None:
    cfg = MarketConfig(seed=4, nodes=16, tasks=8, private_tasks=8, byzantine_fraction=0.25,
                       lazy_verifier=True, false_challenger=True)
    r, built, sim = _run(cfg)
    assert r.ok, f"seed={cfg.seed} {r.invariants}"  # type: ignore[attr-defined]
    assert r.cheats >= 1 and r.cheats_caught == r.cheats and r.honest_stake_lost == 0  # type: ignore[attr-defined]
    _check_keys_reach_only_the_elected(r, built, sim)


def test_torch_private_task_leaves_no_plaintext_window_in_the_shared_store() -> None:
    cfg = MarketConfig(seed=3, nodes=10, tasks=1, private_tasks=1, compute="torch", dataset="synthetic")
    r, built, _sim = _run(cfg)
    assert r.ok and r.settled == 1 and r.final_tasks[0].outcome == "valid", r.invariants  # type: ignore[attr-defined]
    store = built.compute.shared_blobs()  # type: ignore[attr-defined]
    data = next(iter(built.compute.torch_tasks.values())).data.blob  # type: ignore[attr-defined]
    windows = {data[i:i + 64] for i in range(0, len(data) - 64, 61)}
    for blob in store.blobs.values():
        assert not any(w in blob for w in windows), "a private dataset window is stored in the clear"
    assert content_key_of(cfg, 0) not in b"".join(store.blobs.values())


def test_wrong_wraps_are_reported_and_the_solver_rewraps_so_the_private_task_still_settles() -> None:
    r, built, sim = _run(MarketConfig(seed=1, nodes=12, tasks=2, private_tasks=2, bad_wrapper=True))
    assert r.ok and r.settled == 2, r.invariants  # type: ignore[attr-defined]
    assert r.honest_stake_lost == 0  # type: ignore[attr-defined]
    tasks = r.final_tasks  # type: ignore[attr-defined]
    assert all(t.outcome == "valid" for t in tasks)
    # Every verifier got the key from the solver (the submitter's wraps to it are wrong);
    # those the submitter's wrong wrap reached first reported it on the ledger.
    reported = 0
    for t in tasks:
        for v in t.verifiers:
            wrappers = {w.wrapper for w in t.wraps if w.recipient == v.pubkey}
            assert t.solver in wrappers, "the solver wrapped for the verifier"
            reported += v.pubkey in t.unkeyed
    assert reported >= 1
    _check_keys_reach_only_the_elected(r, built, sim)


def test_parties_elected_after_the_submitter_went_offline_get_the_key_from_a_holder() -> None:
    """The submitter crashes for good once each solver holds the key, and one solver
    restarts (its keyring empty: it opens its wrap from the ledger again); every verifier,
    elected after, gets its wrap from the solver, and the tasks settle valid."""
    from protocol.market.wraps import wraps_to

    cfg = MarketConfig(seed=1, nodes=12, tasks=2, private_tasks=2)
    built = build(cfg)
    watch = Watch(built, None)
    sim = Sim(built.sim_config, built.factory, executor=built.compute)
    built.compute.sim = sim
    subs = list(built.layout.submitters)
    crashed: list[int] = []

    def poll(s: Sim) -> None:
        market = watch.market(s)
        tasks = [market.tasks.get(t) for t in watch.expected] if market is not None else []
        if tasks and all(t is not None and t.solver and wraps_to(t, t.solver) for t in tasks):
            for i in subs:
                s.crash(i)
            solver = built.layout.keys.index(next(  # type: ignore[union-attr]
                k for k in built.layout.keys if k.public == tasks[0].solver))  # type: ignore[union-attr]
            s.crash(solver)
            s.call_at(s.now + 2_000, lambda s2: s2.restart(solver))
            crashed.extend(subs)
            return
        s.call_at(s.now + 500, poll)

    sim.call_at(500, poll)
    sim.call_at(cfg.progress_ms, watch.tick)
    sim.run()
    r = report(built, watch, sim, 0.0)
    assert crashed, "the solvers never held the key"
    assert r.settled == 2 and all(t.outcome == "valid" for t in r.final_tasks), r.invariants
    submitters = {built.layout.keys[i].public for i in subs}
    for t in r.final_tasks:
        for v in t.verifiers:
            assert {w.wrapper for w in t.wraps if w.recipient == v.pubkey} - submitters, "no holder wrapped"
