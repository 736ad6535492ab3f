"""A scripted market world for the market tests, and the end-to-end honest/Byzantine flows.

`World` drives `protocol.market` block by block with behaviours per party (honest,
silent, cheating solver, lazy verifier, false accuser, watching and false challengers,
validators voting the truth), so each rule test can set up exactly the stage it needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from protocol.encoding import sha256
from protocol.errors import ValidationError
from protocol.identity import Keypair
from protocol.market import elections
from protocol.market.blocks import begin_block, end_block, lifetime_bound
from protocol.market.params import DEVNET, MarketParams
from protocol.market.process import challenge_bond, process_tx, task_id_of
from protocol.market.state import NO_BASE, TERMINAL, GameKind, MarketState, MemoryAccounts, Status, Task
from protocol.market.txs import (
    ArbitrationVote,
    BisectClaim,
    BisectReply,
    Challenge,
    DeviceClass,
    ForcedErrorReveal,
    GameOpen,
    GameReveal,
    ProfileReport,
    ProveCommit,
    RegisterWorker,
    SubmitTask,
    Verdict,
    VerdictCommit,
    VerdictReveal,
)
from protocol.pol.merkle import CheckpointLeaf, inclusion_proof, leaf_hash, merkle_root
from protocol.pol.messages import OpOutputs
from protocol.pol.ops import chain_values, group_hash, state_hash

BALANCE = 10**9
STAKE = 1_000_000
FLOPS = 10**12
WATCHER_BOND = 50


def key(label: str) -> bytes:
    return Keypair.derive(label).public


def secret_of(pk: bytes) -> bytes:
    return sha256(b"forced-secret" + pk)


Digests = tuple[bytes, ...]


@dataclass
class Trace:
    """A party's training as a hash chain of the real shape (states, op outputs, the
    update op writing the next state, the STATE op's two group hashes), so the world's
    bisection moves and reveals are consistent with what the ledger checks. A cheat's
    last step of every segment writes a fake next state; an accuser re-executes a
    segment honestly from the defender's committed start state."""

    task: Task
    cheat: bool = False
    starts: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)  # step -> state to start from

    def _state(self, t: int) -> tuple[bytes, bytes]:
        base = max((s for s in self.starts if s <= t), default=None)
        if base is None:
            base, w, o = 0, sha256(self.task.task_id + b"w0"), sha256(self.task.task_id + b"o0")
        else:
            w, o = self.starts[base]
        for u in range(base, t):
            w, o = self._next(u, w, o)
        return w, o

    def _next(self, t: int, w: bytes, o: bytes) -> tuple[bytes, bytes]:
        last = (t + 1) % self.task.checkpoint_interval == 0
        return sha256(w + (b"cheat" if self.cheat and last else b"w")), sha256(o + b"o")

    def state(self, t: int) -> tuple[Digests, Digests]:
        w, o = self._state(t)
        return (w,), (o,)

    def outputs(self, t: int, j: int) -> Digests:
        ops = self.task.ops_per_step
        w, o = self._state(t)
        if j < ops - 2:
            return (sha256(w + o + bytes([j])),)
        nw, no = self._next(t, w, o)
        return (nw, no) if j == ops - 2 else (group_hash([nw]), group_hash([no]))

    def value(self, segment: int, position: int) -> bytes:
        i, j = divmod(position, self.task.ops_per_step)
        t = segment * self.task.checkpoint_interval + i
        w, o = self.state(t)
        start = state_hash(group_hash(w), group_hash(o))
        return start if j == 0 else chain_values(start, [self.outputs(t, q) for q in range(j)])[-1]

    def reveal(self, segment: int, lo: int, rnd: int) -> GameReveal:
        i, j = divmod(lo, self.task.ops_per_step)
        t = segment * self.task.checkpoint_interval + i
        w, o = self.state(t)
        prefix = tuple(OpOutputs(self.outputs(t, q)) for q in range(j))
        return GameReveal(self.task.task_id, rnd, w, o, prefix, OpOutputs(self.outputs(t, j)), 0, 0)


@dataclass
class World:
    n_workers: int = 6
    n_validators: int = 4
    params: MarketParams = DEVNET
    behaviour: dict[bytes, str] = field(default_factory=dict)
    watcher: bool = True  # an honest whistleblower checks every verdict
    false_challenger: bool = False  # challenges every ACCEPT
    on_ledger: bool = False  # keep balances in a protocol.ledger State (custody in its pool)
    state: MarketState = field(init=False)
    cheats: set[bytes] = field(default_factory=set)  # task ids whose solver cheated
    withheld: set[bytes] = field(default_factory=set)  # task ids whose solver serves no proof
    memo: dict[tuple[bytes, bytes], tuple[Verdict, bytes]] = field(default_factory=dict)
    errors: list[ValidationError] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workers = [key(f"w{i}") for i in range(self.n_workers)]
        self.submitter, self.watcher_key, self.liar_key = key("sub"), key("watch"), key("liar")
        self.validators = {key(f"v{i}"): 100 for i in range(self.n_validators)}
        everyone = list(dict.fromkeys([*self.workers, *self.validators, self.submitter, self.watcher_key,
                                       self.liar_key]))
        # Only a staked account may challenge: the watchers have a little stake bonded.
        bonded = {self.watcher_key: WATCHER_BOND, self.liar_key: WATCHER_BOND}
        memory = MemoryAccounts({k: BALANCE for k in everyone}, bonded)
        accounts = ledger_accounts(everyone, bonded) if self.on_ledger else memory
        self.state = MarketState(params=self.params, accounts=accounts)
        self.supply0 = self.state.supply()
        for pk in self.workers:
            self.apply(pk, register_tx())

    # --- driving ---------------------------------------------------------------------------------

    def apply(self, sender: bytes, tx: Any) -> ValidationError | None:
        try:
            process_tx(self.state, sender, tx)
        except ValidationError as exc:
            self.errors.append(exc)
            return exc
        return None

    def block(self, txs: list[tuple[bytes, Any]] = (), auto: bool = True) -> None:  # type: ignore[assignment]
        h = self.state.height + 1
        begin_block(self.state, h, sha256(b"beacon" + h.to_bytes(8, "big")), self.validators)
        for sender, tx in [*txs, *(self.auto_txs() if auto else [])]:
            self.apply(sender, tx)
        end_block(self.state)
        assert self.state.supply() == self.supply0, "supply changed"
        if self.on_ledger:
            from protocol.ledger.primitives import audit_supply
            from protocol.market.ledger_bridge import custody_matches

            ledger = self.state.accounts.state  # type: ignore[attr-defined]
            audit_supply(ledger)
            assert custody_matches(self.state, ledger)

    def submit(self, *, reproducible: bool = True, gflops: int = 1_000, price: int = 40, cheat: bool = False,
               salt: int = 0, device: DeviceClass = DeviceClass.CPU) -> bytes:
        tx = SubmitTask(sha256(b"spec"), gflops, 640, 10, 8, device, 1024, reproducible, price, salt, NO_BASE,
                        0, 0)
        task_id = task_id_of(self.submitter, tx)
        err = self.apply(self.submitter, tx)
        assert err is None, err
        if cheat:
            self.cheats.add(task_id)
        return task_id

    def run(self, task_id: bytes, max_blocks: int = 2_000) -> Task:
        for _ in range(max_blocks):
            if self.state.tasks[task_id].status in TERMINAL:
                break
            self.block()
        return self.state.tasks[task_id]

    def bound(self, task_id: bytes) -> int:
        return lifetime_bound(self.params, self.state.tasks[task_id], FLOPS)

    def task(self, task_id: bytes) -> Task:
        return self.state.tasks[task_id]

    def stake(self, pk: bytes) -> int:
        return self.state.workers[pk].stake

    # --- behaviours -----------------------------------------------------------------------------------

    def acts(self, pk: bytes | None) -> bool:
        return pk is not None and self.behaviour.get(pk) != "silent"

    def auto_txs(self) -> list[tuple[bytes, Any]]:
        out: list[tuple[bytes, Any]] = []
        for task in list(self.state.open_tasks()):
            step = getattr(self, f"_{task.status.name.lower()}", None)
            if step is not None:
                out += step(task)
        return out

    def _training(self, task: Task) -> list[tuple[bytes, Any]]:
        out: list[tuple[bytes, Any]] = []
        if task.proof_root is None and self.acts(task.solver):
            root = merkle_root([leaf_hash(x) for x in self.leaves(task)])
            out.append((task.solver, ProveCommit(task.task_id, root, task.n_segments + 1, 0, 0)))
        reported = {r.profiler for r in task.profile_reports}
        for profiler in task.profilers:
            if task.threshold_ppm is None and self.acts(profiler) and profiler not in reported:
                refuses = self.behaviour.get(profiler) == "refuser"
                out.append((profiler, ProfileReport(task.task_id, 1_000, not refuses, 0, 0)))
        return out

    def solver_trace(self, task: Task) -> Trace:
        return Trace(task, cheat=task.task_id in self.cheats)

    def accuser_trace(self, task: Task, segment: int) -> Trace:
        """An honest re-execution of `segment` from the solver's committed start state."""
        start = segment * task.checkpoint_interval
        return Trace(task, starts={start: self.solver_trace(task)._state(start)})

    def leaves(self, task: Task) -> list[CheckpointLeaf]:
        """The solver's checkpoints (a cheat's differ), committed as a real Merkle tree."""
        trace, k = self.solver_trace(task), task.checkpoint_interval
        out = []
        for i in range(task.n_segments + 1):
            step = min(i * k, task.steps)
            w, o = trace.state(step)
            out.append(CheckpointLeaf(step, group_hash(w), group_hash(o), 0))
        return out

    def game_open(self, task: Task) -> GameOpen:
        assert task.game is not None
        leaves, s = self.leaves(task), task.game.segment
        hashes = [leaf_hash(x) for x in leaves]
        return GameOpen(task.task_id, leaves[s], inclusion_proof(hashes, s), leaves[s + 1],
                        inclusion_proof(hashes, s + 1), 0, 0)

    def forced(self, task: Task, pk: bytes) -> bool:
        slot = next(v for v in task.verifiers if v.pubkey == pk)
        secret = elections.duty_secret(secret_of(pk), slot.secret_index)
        return elections.is_forced(secret, slot.beacon, task.task_id, self.params.forced_error_ppm)

    def verdict_for(self, task: Task, pk: bytes, segment: int) -> Verdict:
        truth = task.task_id not in self.cheats
        kind = self.behaviour.get(pk, "honest")
        if kind == "unreachable" or task.task_id in self.withheld:  # it could fetch nothing
            return Verdict(False, segment, 1_000_000, available=False)
        accept = {"lazy": True, "false_accuser": False}.get(kind, truth)
        if kind == "honest" and self.forced(task, pk):
            accept = not truth
        return Verdict(accept, segment, 0 if accept else 50_000)

    def _commit(self, task: Task) -> list[tuple[bytes, Any]]:
        out: list[tuple[bytes, Any]] = []
        for slot in task.verifiers:
            if slot.commitment is None and self.acts(slot.pubkey):
                verdict = self.verdict_for(task, slot.pubkey, slot.segment)
                salt = sha256(b"salt" + slot.pubkey + task.task_id)
                self.memo[(task.task_id, slot.pubkey)] = (verdict, salt)
                c = elections.verdict_commitment(task.task_id, slot.pubkey, verdict, salt)
                out.append((slot.pubkey, VerdictCommit(task.task_id, c, 0, 0)))
        return out

    def _reveal(self, task: Task) -> list[tuple[bytes, Any]]:
        out: list[tuple[bytes, Any]] = []
        for slot in task.verifiers:
            if slot.verdict is None and slot.commitment is not None and self.acts(slot.pubkey):
                verdict, salt = self.memo[(task.task_id, slot.pubkey)]
                out.append((slot.pubkey, VerdictReveal(task.task_id, verdict, salt, 0, 0)))
        return out

    def _challenge(self, task: Task) -> list[tuple[bytes, Any]]:
        truth = task.task_id not in self.cheats
        out: list[tuple[bytes, Any]] = []
        for i, slot in enumerate(task.verifiers):
            assert slot.verdict is not None
            mine = {c.target for c in task.challenges if c.challenger == self.watcher_key}
            bond = challenge_bond(self.state, task, i)
            if self.watcher and slot.verdict.accept != truth and i not in mine:
                out.append((self.watcher_key, Challenge(task.task_id, i, slot.segment, bond, 0, 0)))
            lied = {c.target for c in task.challenges if c.challenger == self.liar_key}
            if self.false_challenger and slot.verdict.accept and i not in lied:
                out.append((self.liar_key, Challenge(task.task_id, i, slot.segment, bond, 0, 0)))
        return out

    def _forced_reveal(self, task: Task) -> list[tuple[bytes, Any]]:
        """Every acting verifier reveals its duty secret (the lazy one too, hoping)."""
        out: list[tuple[bytes, Any]] = []
        for s in task.verifiers:
            if not s.secret_revealed and s.verdict is not None and self.acts(s.pubkey) \
                    and self.behaviour.get(s.pubkey) != "hides_secret":
                secret, proof = elections.duty_reveal(secret_of(s.pubkey), s.secret_index)
                out.append((s.pubkey, ForcedErrorReveal(task.task_id, secret, proof, 0, 0)))
        return out

    def _dispute(self, task: Task) -> list[tuple[bytes, Any]]:
        game = task.game
        assert game is not None
        if game.turn == 0:
            if not self.acts(task.solver):
                return []
            assert task.solver is not None
            if not game.opened:
                return [(task.solver, self.game_open(task))]
            digest = self.solver_trace(task).value(game.segment, (game.lo + game.hi) // 2)
            return [(task.solver, BisectClaim(task.task_id, game.round, digest, 0, 0))]
        if not self.acts(game.accuser) or game.mid_hash is None:
            return []
        digest = self.accuser_trace(task, game.segment).value(game.segment, (game.lo + game.hi) // 2)
        return [(game.accuser, BisectReply(task.task_id, game.round, digest, 0, 0))]

    def _arbitration(self, task: Task) -> list[tuple[bytes, Any]]:
        game = task.game
        assert game is not None
        if game.kind == GameKind.AVAILABILITY:  # validators try to fetch the segment themselves
            served = task.task_id not in self.withheld
            return [(v, ArbitrationVote(task.task_id, game.round, served, 0, 0))
                    for v in self.validators if self.behaviour.get(v) != "silent" and v not in game.votes]
        if game.reveal is None:
            if not self.acts(task.solver):
                return []
            assert task.solver is not None
            return [(task.solver, self.solver_trace(task).reveal(game.segment, game.lo, game.round))]
        truth = task.task_id not in self.cheats
        return [(v, ArbitrationVote(task.task_id, task.game.round, truth, 0, 0))
                for v in self.validators if self.behaviour.get(v) != "silent" and v not in task.game.votes]


def ledger_accounts(everyone: list[bytes], bonded: dict[bytes, int]) -> Any:
    from protocol.ledger.entries import Account, Stake, Supply
    from protocol.ledger.params import DEVNET as LEDGER_DEVNET
    from protocol.ledger.state import State
    from protocol.market.ledger_bridge import LedgerAccounts

    ledger = State(LEDGER_DEVNET)
    for pk in everyone:
        ledger.set_account(pk, Account(BALANCE, 0))
        if pk in bonded:
            ledger.set_stake(pk, Stake(bonded[pk], 0, False, 0))
    ledger.set_supply(Supply(BALANCE * len(everyone) + sum(bonded.values()), 0, 0))
    return LedgerAccounts(ledger)


def register_tx(stake: int = STAKE, price: int = 5, flops: int = FLOPS, secret: bytes | None = None,
                device: DeviceClass = DeviceClass.CPU) -> RegisterWorker:
    return RegisterWorker(device, 8192, flops, price, stake, secret or b"\x00" * 32, 0, 0)


def world(**kw: Any) -> World:
    w = World(**kw)
    for pk in w.workers:  # real secret commitments
        commit = elections.forced_error_commitment(secret_of(pk))
        w.apply(pk, replace(register_tx(stake=0), secret_commit=commit))
    w.block(auto=False)
    return w


# --- end-to-end flows -----------------------------------------------------------------------------


def test_honest_task_settles_valid_and_pays_by_the_rules() -> None:
    w = world()
    tid = w.submit()
    before = {pk: w.state.accounts.balance(pk) for pk in [*w.workers, w.submitter]}
    task = w.run(tid)
    assert task.status == Status.SETTLED and task.proof_valid is True
    cost = task.gflops * task.solver_price
    assert w.state.accounts.balance(task.solver) - before[task.solver] == cost  # type: ignore[index]
    assert all(w.stake(pk) == STAKE for pk in w.workers)
    assert task.escrow == 0


def test_cheating_solver_is_caught_and_slashed_and_submitter_refunded() -> None:
    w = world()
    tid = w.submit(cheat=True)
    task = w.run(tid)
    assert task.status == Status.SETTLED and task.proof_valid is False
    assert task.solver is not None
    assert w.stake(task.solver) == STAKE - STAKE * w.params.solver_slash_bps // 10_000
    honest = [pk for pk in w.workers if pk != task.solver]
    assert all(w.stake(pk) == STAKE for pk in honest)


def test_every_task_ends_within_the_lifetime_bound() -> None:
    w = world()
    tid = w.submit()
    bound = w.bound(tid)
    start = w.state.height
    task = w.run(tid, max_blocks=bound + 1)
    assert task.status in TERMINAL and w.state.height - start <= bound


def test_duties_released_after_settlement() -> None:
    w = world()
    w.run(w.submit())
    assert all(w.state.workers[pk].jobs == 0 for pk in w.workers)


def test_market_state_root_is_deterministic_across_identical_runs() -> None:
    from protocol.market.state import market_root

    roots = []
    for _ in range(2):
        w = world()
        w.run(w.submit(cheat=True))
        roots.append(market_root(w.state))
    assert roots[0] == roots[1]


def test_on_the_ledger_custody_equals_the_market_pool_and_the_ledger_audit_holds() -> None:
    w = world(on_ledger=True, false_challenger=True)
    tasks = [w.submit(cheat=True, salt=1), w.submit(salt=2)]
    w.run(tasks[0])
    w.run(tasks[1])
    assert w.task(tasks[0]).proof_valid is False and w.task(tasks[1]).proof_valid is True
