"""MarketNode, the composite core: roles see committed blocks, their txs keep flowing."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Any

from protocol.chain_params import chain_preset
from protocol.commands import (
    TOPIC_ADVERTS,
    TOPIC_TXS,
    Command,
    ComputeDone,
    Event,
    MessageReceived,
    Persist,
    Publish,
    RunCompute,
    SetTimer,
    Tick,
    TimerFired,
)
from protocol.consensus.node import ConsensusConfig
from protocol.identity import Keypair
from protocol.ledger.genesis import Genesis, GenesisAccount
from protocol.ledger.ledger import Ledger
from protocol.market import elections
from protocol.market.adverts import AdvertBook
from protocol.market.chain import market_genesis_state
from protocol.market.jobs import MarketTrainResult, SegmentCheckResult
from protocol.market.messages import CapacityAdvert
from protocol.market.node import MarketNode
from protocol.market.params import DEVNET
from protocol.market.process import task_id_of
from protocol.market.roles import (
    DURABLE_SLOTS,
    PERSIST_SOLVER_PROOF,
    PERSIST_VERDICT,
    ChainView,
    NodeRoles,
    RegistrarRole,
    Role,
    SolverRole,
    SubmitterRole,
    VerifierRole,
)
from protocol.market.state import NO_BASE, Game, MarketState, Status, Task, VerifierSlot
from protocol.market.txs import DeviceClass, GameOpen, RegisterWorker, SubmitTask, VerdictReveal
from protocol.pol.merkle import CheckpointLeaf, leaf_hash, merkle_root

KEY = Keypair.derive("market-node-test/0")
CHAIN = "market-node-test"


@dataclass
class Scripted(Role):
    """Publishes a scripted list of txs at the first view, then records what it sees."""

    script: list[Any] = field(default_factory=list)
    views: list[ChainView] = field(default_factory=list)

    def handle(self, now: int, event: Any) -> list[Command]:
        if isinstance(event, ChainView):
            self.views.append(event)
            out = [Publish(TOPIC_TXS, tx) for tx in self.script]
            self.script = []
            return out
        return []


def register(stake: int) -> RegisterWorker:
    secret = elections.forced_error_commitment(b"x")
    return RegisterWorker(DeviceClass.CPU, 1024, 10**12, 5, stake, secret, 0, 0)


def drive(node: MarketNode, until_ms: int) -> list[Command]:
    """A one-node shell: timers in time order; gossip goes nowhere (one validator)."""
    timers: list[tuple[int, int, str]] = []
    seq = 0
    sent: list[Command] = []
    pending: list[tuple[int, Event]] = [(0, Tick())]
    while pending:
        now, event = pending.pop()
        for cmd in node.handle(now, event):
            sent.append(cmd)
            if isinstance(cmd, SetTimer):
                seq += 1
                heapq.heappush(timers, (cmd.at, seq, cmd.key))
        if not pending and timers:
            at, _, key = heapq.heappop(timers)
            if at <= until_ms:
                pending.append((at, TimerFired(key)))
    return sent


def make_node(role: Role) -> MarketNode:
    g = Genesis(CHAIN, chain_preset("devnet").ledger, 0, (GenesisAccount(KEY.public, 10**9, 1_000),))
    state = market_genesis_state(g, DEVNET)
    ccfg = ConsensusConfig(chain_id=CHAIN, genesis_validators=Ledger(state.copy()).validators(),
                           block_interval_ms=1_000)
    return MarketNode.create(state, ccfg, KEY, NodeRoles([role]), audit=True)


def test_a_tx_that_cannot_apply_is_dropped_and_the_next_one_still_commits() -> None:
    role = Scripted(KEY.public, script=[register(stake=10**12), register(stake=50_000)])
    node = make_node(role)
    sent = drive(node, 5_000)
    gossiped = [c for c in sent if isinstance(c, Publish) and c.topic == TOPIC_TXS]
    assert len(gossiped) == 1 and type(gossiped[0].msg) is bytes  # sealed envelope bytes
    market: MarketState = node.market
    assert market.workers[KEY.public].stake == 50_000
    assert node.ledger.state.account(KEY.public).nonce == 1


def test_roles_see_every_committed_height_in_order() -> None:
    role = Scripted(KEY.public)
    node = make_node(role)
    drive(node, 5_000)
    heights = [v.height for v in role.views]
    assert heights == sorted(set(heights)) and len(heights) >= 3


def test_a_worker_registered_by_tx_gossips_capacity_adverts_every_half_ttl() -> None:
    role = RegistrarRole(KEY.public, registration=register(stake=50_000))
    node = make_node(role)
    sent = drive(node, 70_000)
    assert KEY.public in node.market.workers  # registered by transaction, not at genesis
    adverts = [c.msg for c in sent if isinstance(c, Publish) and c.topic == TOPIC_ADVERTS]
    ttl = DEVNET.advert_max_ttl_ms
    assert len(adverts) >= 2 and all(a.expires_at - a.issued_at == ttl for a in adverts)
    assert all(b.issued_at - a.issued_at >= ttl // 2 for a, b in pairwise(adverts))
    assert adverts[0].flops == 10**12 and adverts[0].free_slots == DEVNET.max_jobs_per_worker


def test_advert_book_keeps_live_adverts_of_registered_workers_only() -> None:
    ttl = DEVNET.advert_max_ttl_ms
    book = AdvertBook(ttl, capacity=2)
    ad = CapacityAdvert(DeviceClass.CPU, 1024, 10**12, 5, 4, 1_000, 1_000 + ttl)
    assert not book.offer(1_000, b"a" * 32, ad, registered=False)  # not a worker: spam
    assert not book.offer(1_000, b"a" * 32, replace(ad, expires_at=1_000 + ttl + 1), True)  # TTL too long
    assert book.offer(1_000, b"a" * 32, ad, True)
    assert not book.offer(1_500, b"a" * 32, replace(ad, issued_at=900), True)  # older than held
    assert book.offer(1_000, b"b" * 32, replace(ad, expires_at=1_000 + ttl // 2), True)
    assert book.offer(1_000, b"c" * 32, ad, True)  # full: the soonest to expire makes room
    assert set(book.live(1_000)) == {b"a" * 32, b"c" * 32}
    assert book.live(1_000 + ttl) == {}  # expired adverts go on their own


def test_node_ignores_adverts_from_non_workers_and_keeps_workers_adverts() -> None:
    role = RegistrarRole(KEY.public, registration=register(stake=50_000))
    node = make_node(role)
    drive(node, 5_000)
    stranger = Keypair.derive("market-node-test/stranger").public
    ad = CapacityAdvert(DeviceClass.CPU, 1024, 10**12, 5, 4, 5_000, 5_000 + 1_000)
    assert node.handle(5_000, MessageReceived(TOPIC_ADVERTS, stranger, ad, b"")) == []
    assert stranger not in node.adverts.live(5_000) and KEY.public in node.adverts.live(5_000)


# --- role state that survives a restart ------------------------------------------------------------

ME = KEY.public
OTHER = Keypair.derive("market-node-test/1").public


class FakeDisk:
    """What a shell does with the roles' Persist commands, and what it hands back."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, bytes], bytes] = {}

    def run(self, cmds: list[Command]) -> list[Command]:
        for c in cmds:
            if isinstance(c, Persist):
                self.records[(c.kind, c.key)] = c.value
        return cmds

    def load(self, kind: str) -> list[bytes]:
        return [v for (k, _), v in sorted(self.records.items()) if k == kind]


def task(tid: bytes, status: Status, **kw: Any) -> Task:
    return Task(tid, OTHER, b"\x01" * 32, 1, 8, 2, 1, DeviceClass.CPU, 0, True, 1, 1, 0, status=status, **kw)


def view(height: int, *tasks: Task) -> ChainView:
    return ChainView(height, MarketState(height=height, tasks={t.task_id: t for t in tasks}))


LEAVES = tuple(CheckpointLeaf(2 * i, bytes([i]) * 32, bytes([i + 1]) * 32, i) for i in range(5))
ROOT = merkle_root([leaf_hash(x) for x in LEAVES])
TID = b"\x07" * 32


def prove(role: SolverRole, disk: FakeDisk, tid: bytes = TID) -> list[Command]:
    started = role.handle(0, view(1, task(tid, Status.TRAINING, solver=ME)))
    job = next(c for c in started if isinstance(c, RunCompute))
    return disk.run(role.handle(0, ComputeDone(job.job_id, MarketTrainResult(tid, ROOT, 5, LEAVES))))


def test_a_solver_stores_its_leaves_before_its_proof_commit_leaves() -> None:
    disk = FakeDisk()
    cmds = prove(SolverRole(ME), disk)
    kinds = [type(c).__name__ if not isinstance(c, Publish) else type(c.msg).__name__ for c in cmds]
    assert kinds == ["Persist", "ProveCommit"]


def test_a_restarted_solver_opens_the_dispute_against_its_proof() -> None:
    disk = FakeDisk()
    prove(SolverRole(ME), disk)
    restarted = SolverRole(ME)
    restarted.restore(disk.load)
    game = Game(OTHER, 1, 0, 2, b"", b"")
    disputed = task(TID, Status.DISPUTE, solver=ME, proof_root=ROOT, game=game)
    out = restarted.handle(0, view(9, disputed))
    opens = [c.msg for c in out if isinstance(c, Publish) and isinstance(c.msg, GameOpen)]
    assert len(opens) == 1 and (opens[0].start, opens[0].end) == (LEAVES[1], LEAVES[2])


def test_a_solver_reuses_the_record_of_an_ended_task_so_storage_stays_bounded() -> None:
    disk = FakeDisk()
    role = SolverRole(ME)
    for i in range(3 * DURABLE_SLOTS):
        tid = bytes([i % 256, i // 256]) * 16
        prove(role, disk, tid)
        role.handle(0, view(2, task(tid, Status.SETTLED, solver=ME)))  # ended: its record is free
    assert len(disk.records) == 1 and role.leaves == {}


def test_a_corrupt_stored_record_is_dropped_not_fatal() -> None:
    disk = FakeDisk()
    disk.records[(PERSIST_SOLVER_PROOF, b"\x00\x00")] = b"\xc1garbage"
    disk.records[(PERSIST_VERDICT, b"\x00\x00")] = b""
    roles = NodeRoles([SolverRole(ME), VerifierRole(ME, secret=b"s")])
    roles.restore(disk.load)
    assert roles.handle(0, view(1)) == []


def test_a_restarted_verifier_reveals_the_verdict_it_committed() -> None:
    disk = FakeDisk()
    verifier = VerifierRole(ME, secret=b"s" * 32)
    slot = VerifierSlot(ME, segment=1)
    committing = task(TID, Status.COMMIT, proof_root=b"\x09" * 32, verifiers=[slot])
    job = next(c for c in verifier.handle(0, view(1, committing)) if isinstance(c, RunCompute))
    result = SegmentCheckResult(TID, 1, True, 10)
    sent = disk.run(verifier.handle(0, ComputeDone(job.job_id, result)))
    assert isinstance(sent[0], Persist) and isinstance(sent[1], Publish)
    restarted = VerifierRole(ME, secret=b"s" * 32)
    restarted.restore(disk.load)
    revealing = task(TID, Status.REVEAL, proof_root=b"\x09" * 32, verifiers=[replace(slot, commitment=b"c")])
    reveals = [c.msg for c in restarted.handle(0, view(2, revealing)) if isinstance(c, Publish)]
    assert [type(r) for r in reveals] == [VerdictReveal]
    assert (reveals[0].verdict, reveals[0].salt) == verifier.verdicts[TID]


def submits(n: int) -> list[SubmitTask]:
    return [SubmitTask(b"\x01" * 32, 1 + i, 8, 2, 1, DeviceClass.CPU, 0, True, 1, 0, NO_BASE, 0, 0)
            for i in range(n)]


def test_a_restarted_submitter_does_not_publish_its_queue_again() -> None:
    disk = FakeDisk()
    first = SubmitterRole(ME, queue=submits(3), max_in_flight=2)
    sent = disk.run(first.handle(0, view(1)))
    assert [type(c).__name__ for c in sent] == ["Persist", "Publish", "Publish"]
    on_chain = [task(tid, Status.TRAINING) for tid in first.mine]
    restarted = SubmitterRole(ME, queue=submits(3), max_in_flight=2)
    restarted.restore(disk.load)
    assert [c for c in restarted.handle(0, view(3, *on_chain)) if isinstance(c, Publish)] == []
    ended = [task(t.task_id, Status.SETTLED) for t in on_chain]
    again = [c.msg for c in restarted.handle(0, view(4, *ended)) if isinstance(c, Publish)]
    assert [task_id_of(ME, tx) for tx in again] == [task_id_of(ME, submits(3)[2])]


def test_a_restarted_submitter_resends_a_submit_that_died_with_it() -> None:
    disk = FakeDisk()
    first = SubmitterRole(ME, queue=submits(1))
    disk.run(first.handle(0, view(1)))
    restarted = SubmitterRole(ME, queue=submits(1))
    restarted.restore(disk.load)
    resent = [c for c in restarted.handle(0, view(2)) if isinstance(c, Publish)]
    assert len(resent) == 1 and restarted.mine == first.mine


def test_market_node_hands_the_stored_role_state_back_to_its_roles_on_create() -> None:
    disk = FakeDisk()
    prove(SolverRole(ME), disk)
    g = Genesis(CHAIN, chain_preset("devnet").ledger, 0, (GenesisAccount(KEY.public, 10**9, 1_000),))
    state = market_genesis_state(g, DEVNET)
    ccfg = ConsensusConfig(chain_id=CHAIN, genesis_validators=Ledger(state.copy()).validators(),
                           block_interval_ms=1_000)
    solver = SolverRole(ME)
    MarketNode.create(state, ccfg, KEY, NodeRoles([solver]), role_state=disk.load)
    assert solver.leaves == {TID: LEAVES}


def test_a_verifier_whose_stored_verdict_was_lost_rechecks_and_reveals_it() -> None:
    verifier = VerifierRole(ME, secret=b"s" * 32)
    slot = VerifierSlot(ME, segment=1)
    committing = task(TID, Status.COMMIT, proof_root=b"\x09" * 32, verifiers=[slot])
    job = next(c for c in verifier.handle(0, view(1, committing)) if isinstance(c, RunCompute))
    sent = verifier.handle(0, ComputeDone(job.job_id, SegmentCheckResult(TID, 1, False, 10)))
    commit = next(c.msg for c in sent if isinstance(c, Publish))
    restarted = VerifierRole(ME, secret=b"s" * 32)  # nothing restored
    revealing = task(TID, Status.REVEAL, proof_root=b"\x09" * 32,
                     verifiers=[replace(slot, commitment=commit.commitment)])
    recheck = next(c for c in restarted.handle(0, view(2, revealing)) if isinstance(c, RunCompute))
    out = restarted.handle(0, ComputeDone(recheck.job_id, SegmentCheckResult(TID, 1, False, 10)))
    verdict, salt = verifier.verdicts[TID]
    assert [c.msg for c in out if isinstance(c, Publish)] == [VerdictReveal(TID, verdict, salt, 0, 0)]
