"""Hypothesis stateful test: random blocks of transfers, bonds, unbonds, replays and
evidence against a small model of what must happen.

Invariants after every block: supply is conserved, no amount is negative, the state
root is a function of the state alone (a snapshot restores to the same root), no
unbonding entry outlives its release height, and every equivocation position is
slashed at most once.
"""

from __future__ import annotations

import contextlib
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from protocol.consensus.votes import VoteType
from protocol.errors import PolnetError
from protocol.ledger import Ledger
from protocol.ledger.params import DEVNET
from protocol.ledger.primitives import audit_supply
from protocol.ledger.rules import min_fee
from protocol.ledger.state import ACCOUNTS, EVIDENCE, POOLS, STAKES, UNBONDING
from protocol.ledger.txs import Bond, SubmitEvidence, Transfer, Unbond
from tests.test_ledger_support import KEYS, PUB, apply, equivocation, ledger, tx

PARAMS = DEVNET.replace(unbonding_period=6, max_evidence_age=5, epoch_length=3, max_unbonding_entries=3)
who = st.integers(0, len(KEYS) - 1)
amount = st.integers(0, 3_000)
fee = st.sampled_from([0, PARAMS.base_fee, PARAMS.base_fee + 7])
nonce_shift = st.sampled_from([0, 0, 0, -1, 1])


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.led: Ledger = ledger(PARAMS, balances=(5_000,) * 6, stakes=(1_000, 1_000, 1_000, 500, 0, 0))
        self.included: list[tuple[int, bytes]] = []  # (sender, raw) of txs that used a nonce
        self.unbond_release: dict[int, list[int]] = {}  # sender -> release heights requested
        self.slashed_positions: set[tuple[int, int, int, int]] = set()

    # --- helpers --------------------------------------------------------------------------------

    def _released_now(self, i: int) -> int:
        """Unbonding stake of account i that begin_block will pay out in the next block."""
        h = self.led.height + 1
        return sum(
            e.amount
            for _, e in self.led.state.items(UNBONDING)
            if e.owner == PUB[i] and e.release_height <= h
        )

    def _send(self, i: int, body: Any, stateless_ok: bool, body_ok: bool, proposer: int) -> bool:
        """Apply one tx in its own block; check the model's verdict; True if it applied."""
        acct = self.led.state.account(PUB[i])
        raw = tx(KEYS[i], body)
        ante_ok = (
            stateless_ok
            and body.nonce == acct.nonce
            and body.fee >= min_fee(PARAMS, len(raw))
            and (acct.balance + self._released_now(i) >= body.fee)
        )
        rejected = apply(self.led, raw, proposer=PUB[proposer])
        assert (rejected == ()) == (ante_ok and body_ok), (body, ante_ok, body_ok, rejected)
        assert self.led.state.account(PUB[i]).nonce == acct.nonce + (1 if ante_ok else 0)
        if ante_ok:
            self.included.append((i, raw))
        return rejected == ()

    def _nonce(self, i: int, shift: int) -> int:
        return max(self.led.state.account(PUB[i]).nonce + shift, 0)

    def _spendable(self, i: int, f: int) -> int:
        return self.led.state.account(PUB[i]).balance + self._released_now(i) - f

    # --- rules ----------------------------------------------------------------------------------

    @rule(i=who, j=who, a=amount, f=fee, s=nonce_shift, p=who)
    def transfer(self, i: int, j: int, a: int, f: int, s: int, p: int) -> None:
        to_before = self.led.state.account(PUB[j]).balance
        ok = a > 0 and i != j and self._spendable(i, f) >= a
        released = self._released_now(j)
        if self._send(i, Transfer(PUB[j], a, self._nonce(i, s), f), a > 0 and i != j, ok, p) and j != p:
            # the receiver got exactly the amount (plus its own unbonding release, if due)
            assert self.led.state.account(PUB[j]).balance - to_before == a + released

    @rule(i=who, a=amount, f=fee, p=who)
    def bond(self, i: int, a: int, f: int, p: int) -> None:
        ok = a >= PARAMS.min_bond and self._spendable(i, f) >= a
        self._send(i, Bond(a, self._nonce(i, 0), f), a > 0, ok, p)

    @rule(i=who, a=amount, p=who)
    def unbond(self, i: int, a: int, p: int) -> None:
        stake = self.led.state.stake(PUB[i])
        released = sum(
            1
            for _, e in self.led.state.items(UNBONDING)
            if e.owner == PUB[i] and e.release_height <= self.led.height + 1
        )
        ok = (
            a > 0
            and (a >= PARAMS.min_bond or a == stake.bonded)
            and stake.bonded - stake.locked >= a
            and stake.unbondings - released < PARAMS.max_unbonding_entries
        )
        nonce = self._nonce(i, 0)
        if self._send(i, Unbond(a, nonce, PARAMS.base_fee), a > 0, ok, p):
            self.unbond_release.setdefault(i, []).append(self.led.height + PARAMS.unbonding_period)

    @precondition(lambda self: self.included)
    @rule(k=st.integers(0, 10_000), p=who)
    def replay(self, k: int, p: int) -> None:
        i, raw = self.included[k % len(self.included)]
        nonce = self.led.state.account(PUB[i]).nonce
        assert apply(self.led, raw, proposer=PUB[p]) == (0,)
        assert self.led.state.account(PUB[i]).nonce == nonce

    @rule(
        v=st.integers(0, 3),
        back=st.integers(0, 3),
        rnd=st.integers(0, 1),
        step=st.sampled_from(list(VoteType)),
        salt=st.integers(0, 1),
        reporter=who,
        as_tx=st.booleans(),
    )
    def evidence(
        self, v: int, back: int, rnd: int, step: VoteType, salt: int, reporter: int, as_tx: bool
    ) -> None:
        height = max(self.led.height - back, 0)
        ev = equivocation(KEYS[v], height, rnd, step, salt)
        pos = (v, height, rnd, int(step))
        in_set = PUB[v] in {val.pubkey for val in _set_at(self.led, height)}
        fresh = pos not in self.slashed_positions and in_set
        before = self.led.state.stake(PUB[v]).bonded
        if as_tx:
            nonce = self._nonce(reporter, 0)
            ante = self._spendable(reporter, PARAMS.base_fee) >= 0
            rejected = apply(self.led, tx(KEYS[reporter], SubmitEvidence(ev, nonce, PARAMS.base_fee)))
            if ante:
                assert (rejected == ()) == fresh
        else:
            apply(self.led, evidence=(ev,), proposer=PUB[reporter])
        if fresh:
            self.slashed_positions.add(pos)
            assert self.led.state.stake(PUB[v]).jailed
        elif not in_set or pos in self.slashed_positions:
            assert self.led.state.stake(PUB[v]).bonded == before

    @rule(i=who, j=who, a=amount, s=nonce_shift, extra=st.integers(0, 3))
    def mempool_calls_leave_no_trace(self, i: int, j: int, a: int, s: int, extra: int) -> None:
        root, export = self.led.app_hash(), self.led.snapshot()
        nonce = self._nonce(i, s)
        raws = [tx(KEYS[i], Transfer(PUB[j], a, nonce + k, PARAMS.base_fee)) for k in range(extra + 1)]
        for raw in raws:
            with contextlib.suppress(PolnetError):
                self.led.check_tx(raw)
        self.led.select_txs(raws, 10**6)
        assert self.led.app_hash() == root and self.led.snapshot() == export

    @rule(n=st.integers(1, 4))
    def empty_blocks(self, n: int) -> None:
        for _ in range(n):
            apply(self.led)

    # --- invariants ------------------------------------------------------------------------------

    @invariant()
    def supply_is_conserved(self) -> None:
        audit_supply(self.led.state)

    @invariant()
    def nothing_is_negative(self) -> None:
        s = self.led.state
        assert all(a.balance >= 0 and a.nonce >= 0 for _, a in s.items(ACCOUNTS))
        assert all(0 <= st_.locked <= st_.bonded for _, st_ in s.items(STAKES))
        assert all(u.amount > 0 for _, u in s.items(UNBONDING))
        assert all(p.amount > 0 for _, p in s.items(POOLS))

    @invariant()
    def unbonding_is_released_at_its_height_and_not_before(self) -> None:
        h = self.led.height
        for _, e in self.led.state.items(UNBONDING):
            assert e.release_height > h
            owner = PUB.index(e.owner)
            assert e.release_height in self.unbond_release.get(owner, [])

    @invariant()
    def each_equivocation_recorded_once(self) -> None:
        assert self.led.state.count(EVIDENCE) <= len(self.slashed_positions)

    @invariant()
    def snapshot_restores_the_same_root(self) -> None:
        again = Ledger.restore(PARAMS, self.led.snapshot())
        assert again.app_hash() == self.led.app_hash()


def _set_at(led: Ledger, height: int) -> tuple[Any, ...]:
    from protocol.ledger.rules import validators_for

    try:
        return validators_for(led.state, max(height, 1))
    except KeyError:
        return ()


LedgerMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestLedgerStateful = LedgerMachine.TestCase
