"""`MarketNode`: the whole node as one sans-IO core (consensus + ledger/market + roles).

Why one composite core: netsim and the daemon must drive exactly the same thing, or a
simulation proves nothing about the daemon. A shell feeds `handle(now, event)` and
executes the commands (Publish, SendTo, SetTimer, Persist, RunCompute, Log), as for the
bare consensus core; this wrapper adds what the market needs on top:

- events go to the consensus core (`ComputeDone` goes to the roles instead);
- after every committed block the roles see the committed market (`ChainView`, a fresh
  object thawed from the ledger tables, so a role can never touch consensus state);
- the roles' transactions are stamped with this account's nonces and a fee, sealed,
  admitted to the local mempool and gossiped on TOPIC_TXS as envelope bytes;
- it keeps its own transactions flowing: a tx whose nonce was skipped or that no
  longer applies is re-stamped or dropped, and pending ones are re-gossiped, so a lost
  message or a role that acted on a stale view cannot stall the account's nonce chain;
- after every block it rechecks the mempool against the new state (as Tendermint's
  recheck), so txs that can never apply again stop costing every proposal a simulation;
- a registered worker gossips a signed `CapacityAdvert` (its registered capacity and
  price, its free job slots) every half TTL on TOPIC_ADVERTS, and every node keeps the
  live adverts of registered workers in `adverts` (an `AdvertBook`; expired ones go).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from protocol.commands import (
    TOPIC_ADVERTS,
    TOPIC_TXS,
    Command,
    ComputeDone,
    Event,
    LocalRequest,
    Log,
    MessageReceived,
    Publish,
    Tick,
)
from protocol.consensus.node import ConsensusConfig, ConsensusNode
from protocol.consensus.snapshot import decode_snapshot
from protocol.envelope import seal
from protocol.errors import DecodeError, ValidationError
from protocol.identity import Keypair
from protocol.ledger.ledger import Ledger
from protocol.ledger.state import State
from protocol.market.adverts import AdvertBook
from protocol.market.chain import load_market
from protocol.market.keyring import Keyring, PrivateSubmit
from protocol.market.linkcommit import LinkCommitter, MeasuredLinks
from protocol.market.messages import CapacityAdvert
from protocol.market.process import budget, check_submit
from protocol.market.roles import ChainView, Loader, NodeRoles, RegistrarRole, SubmitterRole
from protocol.market.stages import task_for
from protocol.market.state import MarketState
from protocol.market.txs import CancelTask, CommitLinks, SubmitTask

#: Own transactions waiting for inclusion, at most (a role publishes a handful per block).
MAX_PENDING_TXS = 256
#: Re-gossip an own tx still pending after this many blocks (gossip does not retransmit).
REBROADCAST_BLOCKS = 3
#: Largest market tx, for the per-byte part of the fee (market txs are a few hundred bytes).
FEE_SIZE_BOUND = 2048
#: Mempool entries rechecked per block (bounds the work one block can cause).
MAX_RECHECK = 4096


@dataclass(slots=True)
class _Pending:
    body: Any
    raw: bytes
    nonce: int
    sent_at: int  # height at which it was last gossiped


class MarketNode:
    """Consensus over the ledger (with the market installed) plus this node's roles."""

    def __init__(self, consensus: ConsensusNode, ledger: Ledger, key: Keypair, roles: NodeRoles,
                 enc_generation: int = 0) -> None:
        self.consensus = consensus
        self.ledger = ledger
        self.key = key
        self.me = key.public
        self.roles = roles
        self.chain_id = consensus.cfg.chain_id
        self.keyring = self._keyring(enc_generation)
        params = ledger.state.params
        self.fee = params.base_fee + params.fee_per_byte * FEE_SIZE_BOUND
        self.view: ChainView | None = None
        self._pending: list[_Pending] = []
        self._seen_height = -1
        self.adverts = AdvertBook(load_market(ledger.state).params.advert_max_ttl_ms)
        self._next_advert = 0
        self.link_committer = LinkCommitter()

    @classmethod
    def create(
        cls,
        genesis: State,
        config: ConsensusConfig,
        key: Keypair,
        roles: NodeRoles,
        *,
        blocks: Iterable[bytes] = (),
        own_votes: bytes | None = None,
        audit: bool = False,
        role_state: Loader | None = None,
        snapshot: bytes | None = None,
        enc_generation: int = 0,
    ) -> MarketNode:
        """A node from the chain's genesis state, or from a consensus snapshot
        (protocol.consensus.snapshot: its ledger state and consensus state), replaying its
        own persisted blocks after that; the roles read back what they persisted
        (`role_state(kind)` yields its records). A snapshot that does not decode or fit
        raises DecodeError/ValidationError before the roles are touched."""
        checkpoint = None
        state = genesis.copy()
        if snapshot is not None:
            checkpoint, app_state = decode_snapshot(snapshot)
            state = State.restore(genesis.params, app_state, genesis.verify_evidence)
        ledger = Ledger(state, audit=audit)
        consensus = ConsensusNode(config, ledger, key)
        consensus.restore(blocks, own_votes, checkpoint)
        if role_state is not None:
            roles.restore(role_state)
        return cls(consensus, ledger, key, roles, enc_generation)

    def _keyring(self, generation: int) -> Keyring:
        """One keyring for every role: the node's X25519 keys and the content keys it holds
        (its submitter's, shared by reference, so a submit's key is there at once); a
        worker registers its X25519 key with its registration."""
        keyring = Keyring(self.key.seed(), self.chain_id, generation)
        submitter = self.submitter
        if submitter is not None:
            keyring.held = submitter.content_keys
        for role in self.roles.roles:
            role.keyring = keyring
            reg = role.registration if isinstance(role, RegistrarRole) else None
            if isinstance(role, RegistrarRole) and reg is not None and not reg.enc_key:
                role.registration = replace(reg, enc_key=keyring.public)
        return keyring

    # --- the shell's entry point ---------------------------------------------------------------

    def handle(self, now: int, event: Event) -> list[Command]:
        if isinstance(event, ComputeDone):
            return self._from_roles(self.roles.handle(now, event))
        if isinstance(event, LocalRequest) and isinstance(event.body, MeasuredLinks):
            self.link_committer.offer(event.body, self.me)
            return []
        if isinstance(event, LocalRequest):
            return self._local(event.body)
        if isinstance(event, MessageReceived) and event.topic == TOPIC_ADVERTS:
            if isinstance(event.body, CapacityAdvert):
                registered = event.sender in load_market(self.ledger.state).workers
                self.adverts.offer(now, event.sender, event.body, registered)
            return []
        out = list(self.consensus.handle(now, event))
        if self.ledger.height != self._seen_height or isinstance(event, Tick):
            out += self._after_block(now)
        return out

    @property
    def market(self) -> MarketState:
        """The committed market (a fresh copy)."""
        return load_market(self.ledger.state)

    # --- after each block ----------------------------------------------------------------------

    def _after_block(self, now: int) -> list[Command]:
        self._seen_height = self.ledger.height
        self._recheck_mempool()
        out = self._refresh_pending()
        self.view = ChainView(self.ledger.height, load_market(self.ledger.state))
        out += self._advertise(now) + self._commit_links()
        return out + self._from_roles(self.roles.handle(now, self.view))

    def _advertise(self, now: int) -> list[Command]:
        """Every half TTL, a registered worker tells the network what it can take now."""
        assert self.view is not None
        market = self.view.market
        worker = market.workers.get(self.me)
        if worker is None or now < self._next_advert:
            return []
        ttl = market.params.advert_max_ttl_ms
        self._next_advert = now + ttl // 2
        free = max(0, market.params.max_jobs_per_worker - worker.jobs)
        advert = CapacityAdvert(worker.device, worker.memory_mb, worker.flops, worker.price_per_gflop, free,
                                now, now + ttl)
        self.adverts.offer(now, self.me, advert, True)
        return [Publish(TOPIC_ADVERTS, advert)]

    def _commit_links(self) -> list[Command]:
        """A registered worker commits its measured links when they are due (linkcommit)."""
        assert self.view is not None
        if any(isinstance(p.body, CommitLinks) for p in self._pending):
            return []
        tx = self.link_committer.due(self.view.market, self.me)
        return self._send(tx) if tx is not None else []

    def _recheck_mempool(self) -> None:
        pool = self.consensus.mempool
        stale = []
        for raw in pool.candidates(MAX_RECHECK):
            try:
                self.ledger.check_tx(raw)
            except (ValidationError, DecodeError):
                stale.append(raw)
        pool.remove(stale)

    def _refresh_pending(self) -> list[Command]:
        """Drop committed txs; re-stamp the rest if the chain of nonces broke; re-gossip."""
        committed = self.ledger.state.account(self.me).nonce
        self._pending = [p for p in self._pending if p.nonce >= committed]
        raws = [p.raw for p in self._pending]
        if self._pending and (self._pending[0].nonce != committed or self._applies(raws) != len(raws)):
            bodies = [p.body for p in self._pending]
            self.consensus.mempool.remove(raws)
            self._pending = []
            return [cmd for body in bodies for cmd in self._send(body)]
        out: list[Command] = []
        for p in self._pending:
            if self.ledger.height - p.sent_at >= REBROADCAST_BLOCKS:
                p.sent_at = self.ledger.height
                out.append(Publish(TOPIC_TXS, p.raw))
        return out

    def _applies(self, raws: list[bytes]) -> int:
        """How many of `raws`, in order, apply on top of the committed state."""
        chosen = self.ledger.select_txs(raws, len(raws) * 16 * 1024 + 1)
        n = 0
        for a, b in zip(raws, chosen):
            if a != b:
                break
            n += 1
        return n

    # --- the operator's requests ------------------------------------------------------------

    @property
    def submitter(self) -> SubmitterRole | None:
        return next((r for r in self.roles.roles if isinstance(r, SubmitterRole)), None)

    def _local(self, body: Any) -> list[Command]:
        """A sealed tx from the node's wallet, or a task to submit or cancel, from this
        node's operator: refused now (a ValidationError the shell hands back) if the
        ledger would refuse it later."""
        if isinstance(body, bytes):  # a sealed tx from the node's own wallet
            self.consensus.submit_tx(body)
            return [Publish(TOPIC_TXS, body)]
        if isinstance(body, SubmitTask):
            return self._submit_checked(body, None)
        if isinstance(body, PrivateSubmit):
            return self._submit_checked(body.submit, body.content_key)
        market = load_market(self.ledger.state)
        if isinstance(body, CancelTask):
            task = task_for(market, body.task_id, body)
            if task.submitter != self.me or task.solver is not None or task.taxed:
                raise ValidationError("only an unplaced task of this node's own can be cancelled")
            return self._send(body)
        raise ValidationError(f"not a local request: {type(body).__name__}")

    def _submit_checked(self, tx: SubmitTask, content_key: bytes | None) -> list[Command]:
        submitter = self.submitter
        if submitter is None:
            raise ValidationError("this node runs no submitter")
        market = load_market(self.ledger.state)
        escrow = check_submit(market, self.me, tx)
        queued = sum(budget(market, q.gflops, q.max_price_per_gflop) for q in submitter.queue)
        balance = self.ledger.state.account(self.me).balance
        # Rule: the account can pay this escrow and the fee, on top of what already waits.
        if escrow + queued + self.fee > balance:
            raise ValidationError(f"escrow {escrow} (+{queued} already queued, +{self.fee} fee) "
                                  f"exceeds this account's balance of {balance}")
        # Rule: a private task comes with the content key it commits to (and only then).
        if bool(tx.key_commit) != (content_key is not None):
            raise ValidationError("a private task is submitted with its content key (PrivateSubmit), "
                                  "a public one without")
        return submitter.accept(tx, content_key)

    # --- the roles' transactions ---------------------------------------------------------------

    def _from_roles(self, cmds: Sequence[Command]) -> list[Command]:
        out: list[Command] = []
        for cmd in cmds:
            if isinstance(cmd, Publish) and cmd.topic == TOPIC_TXS and type(cmd.msg) is not bytes:
                out += self._send(cmd.msg)
            else:
                out.append(cmd)
        return out

    def _send(self, body: Any) -> list[Command]:
        """Stamp, seal and admit one tx; one that cannot apply on top of ours is dropped."""
        if len(self._pending) >= MAX_PENDING_TXS:
            return [Log("warning", "market.outbox_full", (("tx", type(body).__name__),))]
        nonce = self._pending[-1].nonce + 1 if self._pending else self.ledger.state.account(self.me).nonce
        stamped = replace(body, nonce=nonce, fee=self.fee)
        raw = seal(stamped, self.key, self.chain_id)
        raws = [p.raw for p in self._pending] + [raw]
        if self._applies(raws) != len(raws):
            return [Log("debug", "market.tx_dropped", (("tx", type(body).__name__),))]
        try:
            self.consensus.submit_tx(raw)
        except ValidationError as exc:
            return [Log("debug", "market.tx_refused", (("tx", type(body).__name__), ("reason", str(exc))))]
        self._pending.append(_Pending(body, raw, nonce, self.ledger.height))
        return [Publish(TOPIC_TXS, raw)]
