"""Properties over random markets: supply is conserved by every block, every task ends
within its lifetime bound, and no honest worker ever loses stake."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.market.state import TERMINAL, Status
from tests.test_market_world import STAKE, world

BEHAVIOURS = st.sampled_from(["honest", "honest", "silent", "lazy", "false_accuser"])
TASKS = st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    behaviours=st.lists(BEHAVIOURS, min_size=6, max_size=6),
    silent_validators=st.integers(0, 4),
    watcher=st.booleans(),
    false_challenger=st.booleans(),
    tasks=TASKS,
)
def test_market_conserves_supply_ends_every_task_and_spares_honest_stake(
    behaviours: list[str], silent_validators: int, watcher: bool, false_challenger: bool,
    tasks: list[tuple[bool, bool]],
) -> None:
    w = world(watcher=watcher, false_challenger=false_challenger)
    for pk, kind in zip(w.workers, behaviours):
        w.behaviour[pk] = kind
    for v in list(w.validators)[:silent_validators]:
        w.behaviour[v] = "silent"
    submitted = {}
    for salt, (cheat, reproducible) in enumerate(tasks):
        tid = w.submit(cheat=cheat, reproducible=reproducible, salt=salt)
        submitted[tid] = (w.state.height, w.bound(tid))
    horizon = max(h + b for h, b in submitted.values())
    while w.state.height <= horizon and any(w.task(t).status not in TERMINAL for t in submitted):
        w.block()  # asserts supply after every block
    for tid, (start, bound) in submitted.items():
        task = w.task(tid)
        assert task.status in TERMINAL, f"{task.status.name} after {bound} blocks"
        assert task.deadline - start <= bound
        assert task.escrow == 0
        if task.status == Status.SETTLED and task.task_id in w.cheats and watcher:
            # a watching whistleblower never lets a cheat through unless validators stall
            assert task.proof_valid is False
    # The world makes whoever solves a cheat task commit a bad proof: that worker cheated.
    cheaters = {w.task(t).solver for t in submitted if t in w.cheats}
    for pk, kind in zip(w.workers, behaviours):
        if kind == "honest" and pk not in cheaters:
            assert w.stake(pk) == STAKE, "an honest worker lost stake"
        assert w.state.workers[pk].jobs == 0
