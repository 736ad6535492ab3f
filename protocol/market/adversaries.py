"""Hostile role machines that both shells run: the same adversary in netsim and on daemons.

A property of the market holds only if it holds against the same adversaries on both
shells, so the Byzantine roles live here, next to the honest ones, and netsim's
scenarios and the daemon's `[roles]` config build them through the same assembly
(`protocol.market.assembly`). Cheating *solvers* are not here: a solver cheats in what
it computes, so its attack is a shell's compute mode (node/compute's attack catalog,
or netsim's synthetic equivalents), while its role machine is the honest one.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.commands import Command
from protocol.encoding import sha256
from protocol.market import elections
from protocol.market.courier import KeyCourierRole
from protocol.market.process import challenge_bond
from protocol.market.roles import VerifierRole, WhistleblowerRole
from protocol.market.state import MarketState, Status, Task
from protocol.market.txs import Challenge, Verdict, VerdictCommit


@dataclass
class LazyVerifier(VerifierRole):
    """Accepts everything without computing and never obeys a forced error (it reveals its
    duty secrets like everyone, hoping it was not forced)."""

    def on_view(self, market: MarketState) -> list[Command]:
        out: list[Command] = []
        for task in market.open_tasks():
            slot = self._slot(task)
            if task.status == Status.COMMIT and slot is not None and slot.commitment is None:
                verdict = Verdict(True, slot.segment, 0)
                salt = sha256(self.secret + task.task_id)
                self.verdicts[task.task_id] = (verdict, salt)
                commitment = elections.verdict_commitment(task.task_id, self.me, verdict, salt)
                out += self._once(task, "lazy", VerdictCommit(task.task_id, commitment, 0, 0))
            elif task.status in (Status.REVEAL, Status.FORCED_REVEAL):
                out += self._verify(task)
        return out


@dataclass
class FalseChallenger(WhistleblowerRole):
    """Challenges every accepting verdict without checking anything (posting the bond each
    challenge requires) and never plays the games that follow: each ends when its move
    deadline passes, the solver keeps its stake and the bond goes to the jackpot.

    It does not play on purpose. A blind challenger that plays honestly is an open attack
    (docs/market.md, "Open: a thrown game"): a cheating solver that colludes with it can
    lose the game by lying in bisection about a segment whose committed checkpoint is
    right, and the rules then slash the honest verifier that ACCEPTed that segment
    (tests/test_market_money.py pins it as an xfail)."""

    def on_view(self, market: MarketState) -> list[Command]:
        out: list[Command] = []  # it never plays its games: each ends in its forfeit
        for task in market.open_tasks():
            if task.status != Status.CHALLENGE:
                continue
            for i, slot in enumerate(task.verifiers):
                if slot.verdict is not None and slot.verdict.accept and slot.pubkey != self.me:
                    bond = challenge_bond(market, task, i)
                    out += self._once(task, f"false{i}", Challenge(task.task_id, i, slot.segment, bond, 0, 0))
        return out


@dataclass
class BadWrapper(KeyCourierRole):
    """A submitter whose wraps to a private task's verifiers and watchers open to a wrong
    key (a broken client, or one that wants its task checked by nobody). The right key
    still reaches the solver, whose courier re-wraps for each party that reports the fault
    (`KeyWrapFault`), so the duty is done late rather than silently dropped."""

    def _wrap_key(self, task: Task, party: bytes, key: bytes) -> bytes:
        if task.submitter != self.me or party == task.solver or party in task.profilers:
            return key  # honest as a holder of others' tasks, and to whoever trains
        return sha256(b"not the task key" + key)


#: Adversarial role names the assembly knows (config files and `swarm up` use these).
ADVERSARY_ROLES = ("lazy_verifier", "false_challenger", "bad_wrapper")
