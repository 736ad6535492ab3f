"""The role machines drive the market end to end through a synthetic compute shell.

No scripted behaviour here: every transaction comes from a role machine's Publish, and
every verdict, bisection move and vote from a RunCompute the shell answers with a
synthetic trainer (true state hash = H(task, position); a cheating solver's states
diverge from position `DIVERGE` on).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from protocol.commands import ComputeDone, Publish, RunCompute
from protocol.encoding import sha256
from protocol.errors import ValidationError
from protocol.market import elections
from protocol.market.blocks import begin_block, end_block
from protocol.market.jobs import (
    ArbitrationJob,
    ArbitrationResult,
    MarketTrainJob,
    MarketTrainResult,
    ProfileJob,
    ProfileResult,
    SegmentCheckJob,
    SegmentCheckResult,
    StateHashJob,
    StateHashResult,
)
from protocol.market.params import DEVNET, PPM, MarketParams
from protocol.market.process import process_tx
from protocol.market.roles import (
    ArbiterRole,
    ChainView,
    NodeRoles,
    SolverRole,
    SubmitterRole,
    VerifierRole,
    Wallet,
    WhistleblowerRole,
)
from protocol.market.state import TERMINAL, MarketState, MemoryAccounts, Status
from protocol.market.txs import DeviceClass, RegisterWorker, SubmitTask
from protocol.pol.merkle import CheckpointLeaf, leaf_hash, merkle_root
from tests.test_market_world import BALANCE, STAKE, key

DIVERGE = 37


def true_hash(tid: bytes, pos: int) -> bytes:
    return sha256(tid + pos.to_bytes(4, "big"))


class Swarm:
    """Workers, validators, one whistleblower and one submitter, all driven by roles."""

    def __init__(self, params: MarketParams = DEVNET, cheaters: frozenset[bytes] = frozenset()) -> None:
        self.workers = [key(f"rw{i}") for i in range(6)]
        self.validators = {key(f"rv{i}"): 100 for i in range(4)}
        self.submitter, self.watcher = key("rsub"), key("rwatch")
        everyone = [*self.workers, *self.validators, self.submitter, self.watcher]
        self.state = MarketState(params=params, accounts=MemoryAccounts({k: BALANCE for k in everyone}))
        self.cheaters = cheaters
        self.nodes: dict[bytes, NodeRoles] = {}
        self.rejected: list[ValidationError] = []
        self.inbox: list[tuple[bytes, Any]] = []
        for pk in self.workers:
            secret = sha256(b"role-secret" + pk)
            commit = elections.forced_error_commitment(secret)
            process_tx(self.state, pk, RegisterWorker(DeviceClass.CPU, 8192, 10**12, 5, STAKE, commit, 0, 0))
            self.nodes[pk] = NodeRoles([SolverRole(pk, Wallet()), VerifierRole(pk, Wallet(), secret=secret)])
        for pk in self.validators:
            self.nodes[pk] = NodeRoles([ArbiterRole(pk, Wallet())])
        self.nodes[self.watcher] = NodeRoles([WhistleblowerRole(self.watcher, Wallet(), bond=1_000)])
        self.sub = SubmitterRole(self.submitter, Wallet())
        self.nodes[self.submitter] = NodeRoles([self.sub])
        self.supply0 = self.state.supply()

    def compute(self, node: bytes, job: Any) -> Any:
        tid = job.task_id
        task = self.state.tasks[tid]
        cheat = task.solver in self.cheaters
        if isinstance(job, MarketTrainJob):
            k = task.checkpoint_interval
            leaves = tuple(CheckpointLeaf(i * k, sha256(tid + bytes([cheat, i])), sha256(tid), 0)
                           for i in range(task.n_segments + 1))
            return MarketTrainResult(tid, merkle_root([leaf_hash(x) for x in leaves]), len(leaves), leaves)
        if isinstance(job, ProfileJob):
            return ProfileResult(tid, 1_000, True)
        if isinstance(job, SegmentCheckJob):
            return SegmentCheckResult(tid, job.segment, not cheat, 50_000 if cheat else 0)
        if isinstance(job, StateHashJob):
            lies = node == task.solver and cheat and job.position >= DIVERGE
            digest = sha256(b"lie" + true_hash(tid, job.position)) if lies else true_hash(tid, job.position)
            return StateHashResult(tid, job.position, digest)
        if isinstance(job, ArbitrationJob):
            expected = true_hash(tid, job.position + 1)
            right = job.defender_output == expected if job.defender_output else not cheat
            return ArbitrationResult(tid, right)
        raise AssertionError(job)

    def feed(self, node: bytes, commands: list[Any]) -> None:
        """Execute commands: compute inline (results fed back), txs into the next block."""
        queue = list(commands)
        while queue:
            cmd = queue.pop(0)
            if isinstance(cmd, RunCompute):
                done = ComputeDone(cmd.job_id, self.compute(node, cmd.job))
                queue += self.nodes[node].handle(0, done)
            elif isinstance(cmd, Publish):
                self.inbox.append((node, cmd.msg))

    def block(self) -> None:
        h = self.state.height + 1
        begin_block(self.state, h, sha256(b"rb" + h.to_bytes(8, "big")), self.validators)
        txs, self.inbox = self.inbox, []
        for sender, tx in txs:
            try:
                process_tx(self.state, sender, tx)
            except ValidationError as exc:
                self.rejected.append(exc)
        end_block(self.state)
        assert self.state.supply() == self.supply0
        for pk, node in self.nodes.items():
            self.feed(pk, node.handle(h, ChainView(h, self.state)))

    def run(self, tasks: int, max_blocks: int = 1_500) -> None:
        spec = sha256(b"role-spec")
        self.sub.queue = [SubmitTask(spec, 1_000, 640, 10, 8, DeviceClass.CPU, 1024, True, 40, s, 0, 0)
                          for s in range(tasks)]
        for _ in range(max_blocks):
            self.block()
            if len(self.sub.outcomes) == tasks:
                return
        raise AssertionError(f"only {len(self.sub.outcomes)} of {tasks} tasks ended")


def test_roles_settle_honest_tasks_with_no_rejected_tx() -> None:
    swarm = Swarm()
    swarm.run(tasks=5)
    assert set(swarm.sub.outcomes.values()) == {"valid"}
    assert swarm.rejected == []
    assert all(swarm.state.workers[pk].stake == STAKE for pk in swarm.workers)


def test_roles_catch_a_cheating_solver_by_bisection_and_arbitration() -> None:
    cheater = key("rw1")  # elected solver under the task ids (which exclude nonce and fee)
    swarm = Swarm(cheaters=frozenset({cheater}))
    swarm.run(tasks=6)
    cheated = [t for t in swarm.state.tasks.values() if t.solver == cheater]
    assert cheated, "the cheater was never elected solver"
    assert all(t.outcome == "invalid" for t in cheated)
    assert all(t.winner is not None for t in cheated)  # decided by arbitration, not by silence
    assert all(t.outcome == "valid" for t in swarm.state.tasks.values() if t.solver != cheater)
    assert swarm.state.workers[cheater].stake < STAKE
    assert all(swarm.state.workers[pk].stake == STAKE for pk in swarm.workers if pk != cheater)


def test_whistleblower_role_catches_forced_errors_and_is_paid_from_jackpot() -> None:
    swarm = Swarm(params=replace(DEVNET, forced_error_ppm=PPM // 2))
    before = swarm.state.accounts.balance(swarm.watcher)
    swarm.run(tasks=4)
    forced = [v for t in swarm.state.tasks.values() for v in t.verifiers if v.forced_revealed]
    assert forced, "no forced error drawn at 50%"
    assert swarm.state.accounts.balance(swarm.watcher) > before
    assert set(swarm.sub.outcomes.values()) == {"valid"}
    assert all(swarm.state.workers[pk].stake == STAKE for pk in swarm.workers)


def test_roles_keep_no_memory_of_ended_tasks() -> None:
    swarm = Swarm()
    swarm.run(tasks=3)
    swarm.block()
    for node in swarm.nodes.values():
        for role in node.roles:
            assert not role.pending and not role.done
    assert all(t.status in TERMINAL for t in swarm.state.tasks.values())
    assert all(t.status == Status.SETTLED for t in swarm.state.tasks.values())
