"""The role machines drive the market end to end through the synthetic compute contract.

No scripted behaviour here: every transaction comes from a role machine's Publish, and
every verdict, bisection move, reveal and vote from a RunCompute that netsim's
`SyntheticMarketCompute` (the hash-chain implementation of the compute contract)
answers; a cheating solver trains with a synthetic attack from the catalog.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from netsim.scenarios.market.compute import SyntheticMarketCompute, SyntheticNetwork
from protocol.commands import ComputeDone, Publish, RunCompute
from protocol.encoding import sha256
from protocol.errors import ValidationError
from protocol.market import elections
from protocol.market.assembly import Duties, roles_for, submit_for
from protocol.market.blocks import begin_block, end_block
from protocol.market.params import DEVNET, PPM, MarketParams
from protocol.market.process import process_tx
from protocol.market.roles import ChainView, NodeRoles
from protocol.market.state import TERMINAL, MarketState, MemoryAccounts, Status
from protocol.market.txs import DeviceClass, RegisterWorker
from protocol.pol.spec import LossKind, OptimizerKind, OptimizerSpec, ReproProfile, TaskSpec, linear, relu
from tests.test_market_world import BALANCE, STAKE, WATCHER_BOND, key


def spec_for(i: int) -> TaskSpec:
    return TaskSpec(1, (4,), 2, (linear(4, 4), relu(), linear(4, 2)), LossKind.CROSS_ENTROPY,
                    OptimizerSpec(OptimizerKind.SGD, 0.1), 8, 640, 10, sha256(b"roles-data" + bytes([i])), 64,
                    1 + i, 2 + i, 3 + i, ReproProfile(threads=1))


class Swarm:
    """Workers, validators, one whistleblower and one submitter, all driven by roles."""

    def __init__(self, params: MarketParams = DEVNET, cheaters: frozenset[bytes] = frozenset()) -> None:
        self.workers = [key(f"rw{i}") for i in range(6)]
        self.validators = {key(f"rv{i}"): 100 for i in range(4)}
        self.submitter, self.watcher = key("rsub"), key("rwatch")
        everyone = [*self.workers, *self.validators, self.submitter, self.watcher]
        accounts = MemoryAccounts({k: BALANCE for k in everyone}, {self.watcher: WATCHER_BOND})
        self.state = MarketState(params=params, accounts=accounts)
        self.specs = [spec_for(i) for i in range(8)]
        network = SyntheticNetwork({submit_for(sp, max_price_per_gflop=40, salt=0).spec_hash: sp
                                    for sp in self.specs})
        self.nodes: dict[bytes, NodeRoles] = {}
        self.shells: dict[bytes, SyntheticMarketCompute] = {}
        self.rejected: list[ValidationError] = []
        self.inbox: list[tuple[bytes, Any]] = []
        for pk in self.workers:
            secret = sha256(b"role-secret" + pk)
            commit = elections.forced_error_commitment(secret)
            process_tx(self.state, pk, RegisterWorker(DeviceClass.CPU, 8192, 10**12, 5, STAKE, commit, 0, 0))
            self.nodes[pk] = roles_for(pk, Duties(worker=True, submitter=False), secret=secret).roles
        for pk in self.validators:
            self.nodes[pk] = roles_for(pk, Duties(validator=True, submitter=False)).roles
        self.nodes[self.watcher] = roles_for(self.watcher, Duties(whistleblower=True, submitter=False)).roles
        assembled = roles_for(self.submitter, Duties())
        assert assembled.submitter is not None
        self.sub = assembled.submitter
        self.nodes[self.submitter] = assembled.roles
        for pk in self.nodes:
            self.shells[pk] = SyntheticMarketCompute(pk, network, "skipped_steps" if pk in cheaters else None)
        self.supply0 = self.state.supply()

    def feed(self, node: bytes, commands: list[Any]) -> None:
        """Execute commands: compute inline (results fed back), txs into the next block."""
        queue = list(commands)
        while queue:
            cmd = queue.pop(0)
            if isinstance(cmd, RunCompute):
                done = ComputeDone(cmd.job_id, self.shells[node].run(cmd.job.task, cmd.job.job))
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
        self.sub.queue = [submit_for(self.specs[s], max_price_per_gflop=40, salt=s, gflops=1_000)
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
    cheater = key("rw2")  # elected solver of two of the six tasks (task ids exclude nonce and fee)
    swarm = Swarm(cheaters=frozenset({cheater}))
    swarm.run(tasks=6)
    cheated = [t for t in swarm.state.tasks.values() if t.solver == cheater]
    assert cheated, "the cheater was never elected solver"
    assert all(t.outcome == "invalid" for t in cheated)
    assert all(t.winner is not None for t in cheated)  # decided by arbitration, not by silence
    # Every move and reveal applied once; only votes that came after the 2/3 decision are late.
    assert all("ArbitrationVote needs ARBITRATION" in str(e) for e in swarm.rejected), swarm.rejected
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
