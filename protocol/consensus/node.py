"""The consensus core a shell drives: Tendermint + an Application + mempool + block sync.

`ConsensusNode.handle(now, event) -> list[Command]` is the whole interface. It owns one
`HeightMachine` at a time, signs its own votes (the same signature the envelope will
carry, so its own votes can go into certificates), applies decided blocks to the
application, persists each committed block before acting on it, and keeps recent
blocks to serve peers that fall behind.

Happy-path latency is three one-way delays: the next proposer proposes as soon as it
commits (no commit timeout), and messages for the next height that arrive before this
node commits are buffered, not dropped. Liveness under loss comes from rebroadcasting
this node's own latest messages when a height does not advance, and from block sync
whenever a peer is seen at a higher height.

Restarts and lagging nodes (issue 11 item 3): a node starts from its latest snapshot
plus the blocks after it (`restore`), listens for `startup_sync_ms` before it votes, and
while a certified Status says the chain is past its height it catches up by block sync
instead of voting (`_catching_up`). Messages it cannot count yet, for the next heights
or for rounds beyond the machine's window, wait in a buffer bounded per sender
(sync.FutureBuffer); when validators with more than 1/3 of the power are in rounds
beyond that window, the node jumps to the highest such round (the paper's round skip,
line 55, for rounds the machine would not even buffer), so a restarted validator at
round 0 rejoins validators that kept timing out into high rounds.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict, deque
from collections.abc import Iterable

from protocol.app import Application, BlockContext
from protocol.commands import (
    TOPIC_CONSENSUS,
    TOPIC_TXS,
    Command,
    Event,
    Log,
    MessageReceived,
    Persist,
    Publish,
    SendTo,
    SetTimer,
    Tick,
    TimerFired,
)
from protocol.encoding import unpack
from protocol.errors import DecodeError, ValidationError
from protocol.identity import Keypair, verify
from protocol.records import decode_record, encode_record

from .block import ZERO_HASH, Block, BlockHeader, block_hash, certificate_hash, evidence_root, tx_root
from .config import (
    OWN_VOTES_KEY,
    PERSIST_BLOCK,
    PERSIST_SNAPSHOT,
    PERSIST_VOTES,
    TIMER_NEXT_HEIGHT,
    TIMER_REBROADCAST,
    TIMER_SYNC,
    ConsensusConfig,
)
from .evidence import DuplicateVoteEvidence, EvidencePool, make_evidence
from .limits import (
    MAX_BLOCK_EVIDENCE,
    MAX_FUTURE_HEIGHTS,
    MAX_FUTURE_ROUNDS,
    MAX_ROUND,
    MAX_SYNC_BATCH,
    MAX_VALIDATORS,
)
from .mempool import Mempool
from .messages import BlockRequest, BlockResponse, CommittedBlock, Proposal, Status
from .signer import VoteSigner
from .snapshot import (
    BadSnapshot,
    Checkpoint,
    CommittedEvidence,
    encode_snapshot,
    members_of,
    power_spans,
    powers_of_spans,
    vset_of,
)
from .sync import BlockStore, FutureBuffer, FutureKey, vouched_by
from .tendermint import (
    Action,
    BroadcastProposal,
    BroadcastVote,
    Decide,
    HeightMachine,
    Inputs,
    ScheduleTimeout,
    Step,
    TimedOutTooSoon,
)
from .timeouts import Pacer
from .validation import ChainTip, InvalidBlock, check_block, check_committed, check_evidence, check_proposal
from .validators import ProposerSchedule, ValidatorSet
from .votes import (
    CommitCertificate,
    SignedVote,
    Verifier,
    VerifyCache,
    Vote,
    VoteType,
    certificate_votes,
    make_certificate,
    one_third_plus,
    verify_certificate,
)

__all__ = [
    "OWN_VOTES_KEY",
    "PERSIST_BLOCK",
    "PERSIST_SNAPSHOT",
    "PERSIST_VOTES",
    "TIMER_NEXT_HEIGHT",
    "TIMER_REBROADCAST",
    "TIMER_SYNC",
    "ConsensusConfig",
    "ConsensusNode",
]

#: Peers whose last block-sync answer time is remembered (for the serve rate limit).
MAX_SERVED_PEERS = 4 * MAX_VALIDATORS
#: Rounds of received prevote envelopes kept below the current round (besides the valid
#: round's), to prove a lock to validators that missed or forgot those prevotes.
POL_ROUNDS = 8


class ConsensusNode:
    """One validator (or observer, with `key` None) of one chain."""

    def __init__(
        self,
        config: ConsensusConfig,
        app: Application,
        key: Keypair | None,
        verifier: Verifier | None = None,
        mempool: Mempool | None = None,
    ) -> None:
        self.cfg = config
        self.app = app
        self.key = key
        self.me = None if key is None else key.public
        self.verifier: VerifyCache = VerifyCache(inner=verifier or verify)
        self.mempool = mempool if mempool is not None else Mempool()
        self.evidence = EvidencePool(max_age=config.max_evidence_age)
        # Validator powers of recent heights (sets are shared within an epoch, so this
        # costs one dict per epoch plus a reference per height).
        self._powers_at: OrderedDict[int, dict[bytes, int]] = OrderedDict()
        self.store = BlockStore(config.block_cache)
        self.height = 1
        self.vset = ValidatorSet.genesis(config.genesis_validators, config.max_validators)
        self.prev_vset: ValidatorSet | None = None
        self.last_block: Block | None = None
        self.last_commit: CommitCertificate | None = None
        self.last_hash = ZERO_HASH
        self.app_hash = app.app_hash()
        self.now = 0
        self.signer = VoteSigner(config.chain_id, key)
        #: This node's timeouts: the configured ones, lengthened where they proved too
        #: short and shortened back as heights succeed (protocol/consensus/timeouts.py).
        self.pacer = Pacer(config.timeouts)
        self._answered: set[tuple[bytes, int, int, int]] = set()  # bounded: validators x rounds x 2
        self._valid_cache: dict[bytes, bool] = {}
        self._future = FutureBuffer()
        # Validator -> the highest round beyond the machine's window it sent a vote for
        # at this height (bounded by the validator set): the far-round skip's input.
        self._far_rounds: dict[bytes, int] = {}
        # Catching up: the highest height a vouched-for Status showed committed, the peer
        # that showed it, and when sync last made progress.
        self._sync_target = 0
        self._sync_peer: bytes | None = None
        self._sync_progress_at = 0
        self._was_catching_up = False
        self._status_checked: OrderedDict[bytes, int] = OrderedDict()
        # (round, block hash) -> validator -> the envelope of its prevote: the proof of lock
        # (POL) this node re-sends with a re-proposal and while stuck (Tendermint's POL gossip).
        self._pol: dict[tuple[int, bytes], dict[bytes, bytes]] = {}
        # round -> the envelope of the proposal the machine accepted for it (recent rounds
        # and the valid round): re-sent with its POL so that others can adopt the block.
        self._proposal_raw: dict[int, bytes] = {}
        # peer -> when we may next ask it for blocks (bounded like _served).
        self._sync_asked: OrderedDict[bytes, int] = OrderedDict()
        self._served: OrderedDict[bytes, int] = OrderedDict()
        self._progress_mark: tuple[int, int, int] = (-1, -1, -1)
        self.machine = self._new_machine()
        self._prev_machine: HeightMachine | None = None
        self._started = False
        self._height_started = False

    # --- restart ------------------------------------------------------------------------------

    def restore(
        self, blocks: Iterable[bytes], own_votes: bytes | None, checkpoint: Checkpoint | None = None
    ) -> None:
        """Before the first Tick: start from `checkpoint` (a snapshot whose application
        state the caller restored into `app`) or from genesis, replay our own persisted
        blocks after it (in height order) through the application, and reload the votes
        we signed at the current height."""
        verify_next = checkpoint is not None
        if checkpoint is not None:
            self._start_from(checkpoint)
        for raw in blocks:
            cb = decode_record(CommittedBlock, raw)
            # Rule: the stored block extends our state (its header carries our state root).
            if cb.block.height != self.height or cb.block.header.app_hash != self.app_hash:
                raise ValidationError(f"stored block {cb.block.height} does not extend the restored state")
            if verify_next:
                # Rule: the first block after a snapshot is certified by the snapshot's
                # validator set and extends its block, so the snapshot's root and set are
                # the ones the chain's validators signed, not only what this node wrote.
                check_committed(self._tip(), cb.block, cb.commit, self.verifier)
                if cb.block.header.prev_hash != self.last_hash:
                    raise ValidationError("stored block after the snapshot does not extend it")
                verify_next = False
            self._apply_commit(cb.block, cb.commit, len(raw))
        if own_votes is not None:
            self.signer.load(own_votes, self.height)
            # Rule: a precommit for a value is a lock on it, and a lock survives restarts
            # (forgetting it would let this node prevote against its own precommit).
            for sv in self.signer.votes():
                if sv.vote.vote_type == VoteType.PRECOMMIT and sv.vote.block_hash is not None:
                    self.machine.restore_lock(sv.vote.round, sv.vote.block_hash)

    def _start_from(self, cp: Checkpoint) -> None:
        """Take over a snapshot's consensus state (the application already holds its state)."""
        # Rule: the application was restored to the state the snapshot names.
        if self.app.app_hash() != cp.app_hash:
            raise BadSnapshot(f"application root does not match the snapshot of height {cp.height}")
        # Rule: the snapshot's block carries a certificate of the set that committed it.
        prev_vset, vset = vset_of(cp.prev_vset), vset_of(cp.vset)
        try:
            verify_certificate(self.cfg.chain_id, cp.last.commit, prev_vset.powers(), self.verifier)
        except ValidationError as exc:
            raise BadSnapshot(f"snapshot block {cp.height}: {exc}") from None
        if cp.last.commit.block_hash != block_hash(cp.last.block):
            raise BadSnapshot(f"snapshot certificate is not for its block {cp.height}")
        self.height = cp.height + 1
        self.vset, self.prev_vset = vset, prev_vset
        self.last_block, self.last_commit = cp.last.block, cp.last.commit
        self.last_hash, self.app_hash = cp.last.commit.block_hash, cp.app_hash
        self._powers_at = OrderedDict(sorted(powers_of_spans(cp.powers).items()))
        committed = sorted(cp.committed_evidence, key=lambda e: e.height)
        self.evidence.restore_committed([(e.evidence_id, e.height) for e in committed], self.height)
        self.store.add(cp.last, len(encode_record(cp.last)))
        self.machine = self._new_machine()

    def _snapshot(self, block: Block, cert: CommitCertificate) -> list[Command]:
        """Persist a snapshot right after committing `block` (every `snapshot_every`)."""
        every = self.cfg.snapshot_every
        snap = getattr(self.app, "snapshot", None)
        if not every or block.height % every or snap is None:
            return []
        assert self.prev_vset is not None
        cp = Checkpoint(
            last=CommittedBlock(block, cert),
            app_hash=self.app_hash,
            vset=members_of(self.vset),
            prev_vset=members_of(self.prev_vset),
            powers=power_spans(dict(self._powers_at)),
            committed_evidence=tuple(CommittedEvidence(i, h) for i, h in self.evidence.committed()),
        )
        key = block.height.to_bytes(8, "big") + self.app_hash
        return [Persist(PERSIST_SNAPSHOT, key, encode_snapshot(cp, snap()))]

    # --- the shell's entry point ----------------------------------------------------------------

    def handle(self, now: int, event: Event) -> list[Command]:
        self.now = max(self.now, now)
        cmds = self._dispatch(event)
        # Loss recovery: whenever (height, round, step) moves, re-arm the rebroadcast timer;
        # it fires only if this node then stays stuck for rebroadcast_ms.
        mark = (self.height, self.machine.round, int(self.machine.step))
        if mark != self._progress_mark and self._started:
            if mark[:2] != self._progress_mark[:2] and mark[1] > 0:
                cmds += self._resend_valid(validators_only=True)  # a round failed: spread the best POL
            self._progress_mark = mark
            cmds.append(self._rebroadcast_timer())
        return cmds

    def _dispatch(self, event: Event) -> list[Command]:
        if isinstance(event, Tick):
            return self._on_tick()
        if isinstance(event, TimerFired):
            return self._on_timer(event.key)
        if isinstance(event, MessageReceived):
            try:
                return self._on_message(event)
            except (DecodeError, ValidationError) as exc:
                return [Log("debug", "consensus.rejected", (("reason", str(exc)),))]
        return []

    def submit_tx(self, tx: bytes) -> None:
        """Admit a transaction (raises the application's ValidationError if it is bad)."""
        self.app.check_tx(tx)
        self.mempool.add(tx)

    # --- events ---------------------------------------------------------------------------------

    def _on_tick(self) -> list[Command]:
        if self._started:
            return []
        self._started = True
        cmds: list[Command] = [Publish(TOPIC_CONSENSUS, self._status())]
        if self.cfg.startup_sync_ms > 0:
            # Listen first: peers ahead answer our Status with blocks and theirs.
            return [*cmds, SetTimer(self.now + self.cfg.startup_sync_ms, TIMER_NEXT_HEIGHT)]
        return cmds + self._start_height()

    def _on_timer(self, key: str) -> list[Command]:
        if key == TIMER_REBROADCAST:
            return self._rebroadcast()
        if key == TIMER_NEXT_HEIGHT:
            return self._start_height()
        if key == TIMER_SYNC:
            return self._sync_tick()
        parts = key.split("/")
        if len(parts) != 4 or parts[0] != "tm":
            return []
        try:
            step, height, round_ = Step(int(parts[1])), int(parts[2]), int(parts[3])
        except ValueError:  # not a key this core set: ignore it rather than fail
            return []
        return self._run(self.machine.on_timeout(step, height, round_))

    def _on_message(self, ev: MessageReceived) -> list[Command]:
        body = ev.body
        if ev.topic == TOPIC_TXS:
            return self._on_tx(ev.raw)
        if isinstance(body, (Proposal, Vote)):
            return self._on_consensus(ev.sender, body, ev.raw)
        if isinstance(body, DuplicateVoteEvidence):
            check_evidence(self._tip(), body, self.verifier)
            self.evidence.add(body, self.height)
            return []
        if isinstance(body, BlockRequest):
            return self._serve(ev.sender, body.from_height, body.count)
        if isinstance(body, BlockResponse):
            return self._on_blocks(ev.sender, body.blocks)
        if isinstance(body, Status):
            return self._on_status(ev.sender, body)
        return []

    def _on_tx(self, raw: bytes) -> list[Command]:
        with contextlib.suppress(ValidationError):  # a bad or unwanted tx is simply not relayed
            self.submit_tx(raw)
        return []

    def _on_consensus(self, sender: bytes, body: Proposal | Vote, raw: bytes) -> list[Command]:
        if body.height == self.height - 1 and isinstance(body, Vote) and sender == body.validator:
            return self._late_vote(SignedVote(body, _envelope_signature(raw)))
        if body.height < self.height:
            return self._serve(sender, body.height, MAX_SYNC_BATCH)
        # Rule: no round beyond MAX_ROUND (no height lasts that long; the proposer of a round
        # is found by walking the schedule to it).
        if body.round > MAX_ROUND:
            return [Log("debug", "consensus.rejected", (("reason", f"round {body.round} > {MAX_ROUND}"),))]
        if body.height > self.height or not self._height_started:
            return self._on_future(sender, body, raw)
        if body.round > self.machine.round + MAX_FUTURE_ROUNDS:
            return self._on_far_round(sender, body, raw)
        if isinstance(body, Proposal):
            try:
                check_proposal(body.round, body.valid_round, body.block)
            except InvalidBlock as exc:  # ignored like a proposal from a non-proposer
                return [Log("debug", "consensus.rejected", (("reason", str(exc)),))]
            cmds = self._run(self.machine.on_proposal(sender, body.round, body.valid_round, body.block))
            self._keep_proposal(body, raw)
            return cmds
        # Rule: a vote travels in an envelope signed by the voter itself.
        if sender != body.validator:
            return []
        signed = SignedVote(body, _envelope_signature(raw))
        # The shell verified the envelope, whose signature is the vote's: remember it so
        # the certificate that will carry this vote costs no second verify.
        self.verifier.remember_vote(signed)
        cmds = self._count_vote(signed)
        self._keep_prevote(body, raw)
        return cmds

    def _count_vote(self, signed: SignedVote) -> list[Command]:
        if self.machine.has_vote(signed):
            return self._answer_rebroadcast(signed.vote)
        actions, prior = self.machine.on_vote(signed)
        cmds: list[Command] = []
        if prior is not None and self.evidence.add(make_evidence(prior, signed), self.height):
            cmds.append(Log("warn", "consensus.equivocation", (("validator", signed.vote.validator.hex()),)))
        # An equivocation still counts for its own (known) value: it may complete a POL.
        return cmds + self._run(actions)

    def _certificate_evidence(self, cert: CommitCertificate, machine: HeightMachine | None) -> None:
        if machine is None or machine.height != cert.height:
            return
        logged = machine.votes.get((cert.round, VoteType.PRECOMMIT))
        if logged is None:
            return
        for signed in certificate_votes(cert):
            prior = logged.by_validator.get(signed.vote.validator)
            if prior is not None and prior.vote != signed.vote:
                self.evidence.add(make_evidence(prior, signed), self.height)

    def _late_vote(self, signed: SignedVote) -> list[Command]:
        """A vote for the height we just decided: too late to count, not too late to
        prove an equivocation (the conflicting twin often arrives after the decision)."""
        if self._prev_machine is None or self._prev_machine.has_vote(signed):
            return []
        _, prior = self._prev_machine.on_vote(signed)
        if prior is not None and self.evidence.add(make_evidence(prior, signed), self.height):
            return [Log("warn", "consensus.equivocation", (("validator", signed.vote.validator.hex()),))]
        return []

    def _answer_rebroadcast(self, vote: Vote) -> list[Command]:
        """A vote we already hold arrived again: its sender is stuck and rebroadcasting,
        probably because it lost some of ours, so send it our votes of that round directly
        (once per peer, round and vote type)."""
        key = (vote.validator, vote.height, vote.round, int(vote.vote_type))
        if key in self._answered or self.me is None or vote.validator == self.me:
            return []  # (our own vote, relayed back to us in a proof of lock: no one to answer)
        self._answered.add(key)
        return [SendTo(vote.validator, sv.vote) for sv in self.signer.votes_of_round(vote.round)]

    def _keep_prevote(self, vote: Vote, raw: bytes) -> None:
        """Keep the envelope of a counted prevote for a block: it may be needed later as
        part of a proof of lock. Only votes the machine counted are kept (an equivocator
        adds at most one per known block), and only the last POL_ROUNDS rounds plus the valid round."""
        if vote.vote_type != VoteType.PREVOTE or vote.block_hash is None:
            return
        counted = self.machine.votes.get((vote.round, VoteType.PREVOTE))
        if counted is None or not counted.holds(vote):
            return
        self._pol.setdefault((vote.round, vote.block_hash), {})[vote.validator] = raw
        floor, valid = self.machine.round - POL_ROUNDS, self.machine.valid_round
        for key in [k for k in self._pol if k[0] < floor and k[0] != valid]:
            del self._pol[key]

    def _keep_proposal(self, p: Proposal, raw: bytes) -> None:
        """Keep the envelope of a proposal the machine accepted (bounded like the POL
        prevotes: the last POL_ROUNDS rounds plus the valid round)."""
        held = self.machine.proposals.get(p.round)
        if p.height != self.height or held is None or held[0] != p.block or not raw:
            return
        self._proposal_raw[p.round] = raw
        floor, valid = self.machine.round - POL_ROUNDS, self.machine.valid_round
        for r in [r for r in self._proposal_raw if r < floor and r != valid]:
            del self._proposal_raw[r]

    def _resend_valid(self, validators_only: bool = False) -> list[Command]:
        """Re-send the proposal of our valid round with its proof of lock.

        Why (issue 17, lock splitting): a Byzantine proposer can feed its proposal and
        prevotes to just f+1 honest validators, who lock on a block the others never saw;
        an unlocked proposer then proposes a fresh block the locked ones prevote nil on,
        round after round. A validator that knows a valid value (a block with 2f+1
        prevotes in round vr; a locked one always does) sends that round's proposal and
        prevotes at every new round, so every honest validator adopts the block as its
        own valid value (HeightMachine._rule_valid_any_round) and the next honest
        proposer re-proposes it with valid round vr, which all honest validators accept
        (paper, line 28). Safety is unaffected: these are the signed messages of round
        vr, re-sent unchanged (Tendermint's gossip of proposals and POL prevotes).
        """
        m = self.machine
        if m.valid_round < 0 or m.valid_value is None or (validators_only and self.me not in m.inp.powers):
            return []
        prop = m.proposals.get(m.valid_round)
        if prop is None:
            return []
        cmds: list[Command] = []
        raw = self._proposal_raw.get(m.valid_round)
        if raw is not None:
            cmds.append(Publish(TOPIC_CONSENSUS, raw))
        elif m.inp.proposer(m.valid_round) == self.me:
            cmds.append(Publish(TOPIC_CONSENSUS, Proposal(self.height, m.valid_round, prop[2], prop[0])))
        return cmds + self._proof_of_lock(m.valid_round, prop[1])

    def _proof_of_lock(self, round_: int, h: bytes) -> list[Command]:
        """The prevotes of `round_` for `h` that this node holds, its own included.

        Why: a validator that restarted (or was cut off) during `round_` has lost those
        prevotes, so it can never accept a re-proposal of `h` with valid round `round_`
        (paper, line 28), while the validators locked on `h` refuse anything else: with
        two such halves no round ever gets a quorum. Tendermint's gossip re-sends the
        proposal's POL prevotes to peers that lack them; this is that re-send.
        """
        held = sorted(self._pol.get((round_, h), {}).items())
        cmds: list[Command] = [Publish(TOPIC_CONSENSUS, raw) for _, raw in held]
        own = self.signer.votes_of_round(round_)
        cmds += [Publish(TOPIC_CONSENSUS, sv.vote) for sv in own
                 if sv.vote.vote_type == VoteType.PREVOTE and sv.vote.block_hash == h]
        return cmds

    def _on_future(self, sender: bytes, body: Proposal | Vote, raw: bytes) -> list[Command]:
        cmds: list[Command] = []
        self._buffer(sender, body, raw)
        cert = body.block.last_commit if isinstance(body, Proposal) else None
        if body.height == self.height + 1 and cert is not None:
            cmds += self._commit_from_certificate(cert)
        if body.height > self.height and self._may_ask(sender):
            # A hint, not proof, that the sender is ahead: ask it (it answers with blocks
            # and its certified Status); this never makes us stop voting by itself.
            cmds.append(SendTo(sender, BlockRequest(self.height, MAX_SYNC_BATCH)))
        return cmds

    def _buffer(self, sender: bytes, body: Proposal | Vote, raw: bytes) -> bool:
        """Keep a message we cannot count yet, within the windows and the per-sender bounds."""
        # Rule: only for our height and the next MAX_FUTURE_HEIGHTS (further ahead we sync).
        if not self.height <= body.height <= self.height + MAX_FUTURE_HEIGHTS:
            return False
        # Rule: only from validators of our set, and a vote only from its own validator.
        if sender not in self.vset.powers() or (isinstance(body, Vote) and body.validator != sender):
            return False
        if isinstance(body, Proposal):
            key: FutureKey = (body.height, body.round, 0, b"")
        else:
            key = (body.height, body.round, int(body.vote_type) + 1, body.block_hash or b"")
        return self._future.add(sender, key, body, raw)

    def _on_far_round(self, sender: bytes, body: Proposal | Vote, raw: bytes) -> list[Command]:
        """A message of our height for a round beyond the machine's window. Why: validators
        that kept timing out while we were down are many rounds ahead, a restarted node
        starts at round 0, and the machine drops what is beyond its window, so neither side
        would ever hear the other. Buffer it; once validators with more than 1/3 of the
        power have voted in rounds past the window, start the highest round such that
        validators with more than 1/3 of the power voted in it or later (one of them is
        honest, so the chain really is there: the paper's line 55 with ">= round")."""
        if not self._buffer(sender, body, raw) or not isinstance(body, Vote):
            return []
        powers = self.vset.powers()
        self._far_rounds[sender] = max(body.round, self._far_rounds.get(sender, 0))
        need, power = one_third_plus(sum(powers.values())), 0
        for who, round_ in sorted(self._far_rounds.items(), key=lambda kv: -kv[1]):
            power += powers.get(who, 0)
            if power >= need:
                return self._skip_to(round_)
        return []

    def _skip_to(self, round_: int) -> list[Command]:
        if round_ <= self.machine.round:
            return []
        self._far_rounds = {v: r for v, r in self._far_rounds.items() if r > round_ + MAX_FUTURE_ROUNDS}
        fields = (("height", self.height), ("round", round_))
        cmds: list[Command] = [Log("info", "consensus.round_skip", fields)]
        cmds += self._run(self.machine.start(round_))
        return cmds + self._replay_future()

    def _status(self) -> Status:
        return Status(self.height - 1, self.last_hash, self.last_commit)

    def _on_status(self, sender: bytes, st: Status) -> list[Command]:
        if st.height + 1 < self.height:
            return self._serve(sender, st.height + 1, MAX_SYNC_BATCH)
        if st.height < self.height or not self._vouched(sender, st):
            return []
        fresh = st.height > self._sync_target
        self._sync_target = max(self._sync_target, st.height)
        cmds: list[Command] = []
        if fresh or self._sync_peer is None:
            self._sync_peer = sender
            self._sync_progress_at = self.now
            fields = (("height", self.height - 1), ("target", st.height), ("peer", sender.hex()[:16]))
            cmds.append(Log("info", "consensus.behind", fields))
        return cmds + self._request_blocks(sender) + self._arm_sync()

    def _vouched(self, sender: bytes, st: Status) -> bool:
        """Rule: a Status that claims the chain is at or past our height carries that
        height's certificate, signed by validators with more than 1/3 of our set's power
        (sync.vouched_by), before this node believes it, stops voting to catch up, or asks
        that peer for blocks. A certificate for exactly our height is checked in full.
        At most one check per peer per sync_retry_ms, so a flood of claims costs little."""
        cert = st.commit
        if cert is None or cert.height != st.height or cert.block_hash != st.head_hash:
            return False
        last = self._status_checked.get(sender)
        if last is not None and self.now - last < self.cfg.sync_retry_ms:
            return False
        self._status_checked[sender] = self.now
        self._status_checked.move_to_end(sender)
        if len(self._status_checked) > MAX_SERVED_PEERS:
            self._status_checked.popitem(last=False)
        if cert.height == self.height:
            try:
                verify_certificate(self.cfg.chain_id, cert, self.vset.powers(), self.verifier)
            except ValidationError:
                return False
            return True
        return vouched_by(self.cfg.chain_id, cert, self.vset.powers(), self.verifier)

    @property
    def catching_up(self) -> bool:
        """A vouched-for peer has committed our height, and sync is not stalled."""
        return self._sync_target >= self.height and self.now - self._sync_progress_at < self.cfg.sync_stall_ms

    def _request_blocks(self, peer: bytes) -> list[Command]:
        if not self._may_ask(peer):
            return []
        return [SendTo(peer, BlockRequest(self.height, MAX_SYNC_BATCH))]

    def _arm_sync(self) -> list[Command]:
        return [SetTimer(self.now + self.cfg.sync_retry_ms, TIMER_SYNC)] if self.catching_up else []

    def _sync_tick(self) -> list[Command]:
        """While catching up: ask the sync peer again (its answer may be lost), and tell
        everyone where we are (another peer ahead will answer); once sync stalls, vote."""
        if not self.catching_up:
            return self._start_height()
        assert self._sync_peer is not None
        cmds = [*self._request_blocks(self._sync_peer), Publish(TOPIC_CONSENSUS, self._status())]
        return cmds + self._arm_sync()

    def _may_ask(self, peer: bytes) -> bool:
        """Rule: ask a peer that claims to be ahead for blocks at most once per retry
        interval, per peer. One interval for all peers let a Byzantine validator that
        claims heights it never serves (netsim's future_spam) take every turn, so a node
        that fell behind could not ask an honest peer for a second at a time."""
        if self.now < self._sync_asked.get(peer, -1):
            return False
        self._sync_asked[peer] = self.now + self.cfg.sync_retry_ms
        self._sync_asked.move_to_end(peer)
        if len(self._sync_asked) > MAX_SERVED_PEERS:
            self._sync_asked.popitem(last=False)
        return True

    # --- block sync -------------------------------------------------------------------------------

    def _serve(self, peer: bytes, from_height: int, count: int) -> list[Command]:
        # Rule: one answer per peer per serve interval, so requests cannot be used to make
        # this node send megabytes per message received.
        last = self._served.get(peer)
        if peer == self.me or (last is not None and self.now - last < self.cfg.serve_interval_ms):
            return []
        blocks = self.store.range(from_height, min(count, MAX_SYNC_BATCH))
        if not blocks:
            return []
        self._served[peer] = self.now
        self._served.move_to_end(peer)
        if len(self._served) > MAX_SERVED_PEERS:
            self._served.popitem(last=False)
        cmds: list[Command] = [SendTo(peer, BlockResponse(tuple(blocks)))]
        if blocks[-1].block.height < self.height - 1:
            # More to come: our certified head tells the peer how far to sync (and that
            # it should catch up before it votes).
            cmds.append(SendTo(peer, self._status()))
        return cmds

    def _on_blocks(self, sender: bytes, blocks: tuple[CommittedBlock, ...]) -> list[Command]:
        cmds: list[Command] = []
        applied = 0
        for cb in blocks:
            if cb.block.height != self.height:
                continue
            check_committed(self._tip(), cb.block, cb.commit, self.verifier)
            check_block(self._tip(cb.commit.round), cb.block, self.evidence, self.verifier)
            cmds += self._commit(cb.block, cb.commit)
            applied += 1
        if applied:
            self._sync_progress_at = self.now
            if self._sync_target >= self.height:
                # A full batch and still behind: ask the same peer for the next one now.
                self._sync_asked.pop(sender, None)
                cmds += self._request_blocks(sender)
        return cmds

    def _commit_from_certificate(self, cert: CommitCertificate) -> list[Command]:
        """A next-height proposal carries the certificate of our height: if we hold the
        block it names, we can commit without waiting for the precommits ourselves."""
        block = self.machine.blocks.get(cert.block_hash)
        if cert.height != self.height or block is None:
            return []
        try:
            check_committed(self._tip(), block, cert, self.verifier)
            check_block(self._tip(cert.round), block, self.evidence, self.verifier)
        except ValidationError:
            return []
        return self._commit(block, cert)

    # --- running the machine ----------------------------------------------------------------------

    def _run(self, actions: list[Action]) -> list[Command]:
        cmds: list[Command] = []
        queue = deque(actions)
        waits: list[ScheduleTimeout] = []
        while queue:
            a = queue.popleft()
            if isinstance(a, BroadcastProposal):
                cmds.append(Publish(TOPIC_CONSENSUS, Proposal(self.height, a.round, a.valid_round, a.block)))
                if a.valid_round >= 0:
                    cmds += self._proof_of_lock(a.valid_round, block_hash(a.block))
            elif isinstance(a, BroadcastVote):
                signed = self.signer.sign(a.vote)
                if signed is None:
                    continue  # never a second, different vote for one position
                self.verifier.remember_vote(signed)
                cmds.append(Persist(PERSIST_VOTES, OWN_VOTES_KEY, self.signer.dump()))
                cmds.append(Publish(TOPIC_CONSENSUS, signed.vote))
                more, _ = self.machine.on_vote(signed)
                queue.extend(more)
            elif isinstance(a, ScheduleTimeout):
                cmds.append(SetTimer(self.now + a.duration, f"tm/{int(a.step)}/{a.height}/{a.round}"))
                if a.step != Step.PROPOSE:
                    waits.append(a)
            elif isinstance(a, TimedOutTooSoon):
                self.pacer.too_soon(a.step)
            elif isinstance(a, Decide):
                self.pacer.decided(a.round)
                cert = make_certificate(self.height, a.round, block_hash(a.block), list(a.precommits))
                cmds += self._commit(a.block, cert)
                return cmds  # the old machine is gone; _commit ran the new one
        for w in waits:
            cmds += self._ask_for_votes(w)
        return cmds

    def _ask_for_votes(self, wait: ScheduleTimeout) -> list[Command]:
        """2f+1 votes of a step are in (lines 34, 47) but no quorum for one value yet:
        re-send ours of that step to every validator, so that each one that already holds
        it answers with its own votes of the round (`_answer_rebroadcast`).

        Why: on a lossy network a lost prevote or precommit used to come back only with
        its sender's rebroadcast, after rebroadcast_ms without progress, which outlasts
        the timeout just scheduled; a Byzantine validator that votes nil ahead of time
        (netsim's future_spam) starts these timeouts at every round, so a single lost vote
        failed the round. This brings it back within one round trip. Nothing is sent when
        the quorum is already there (the usual case), and only once per step and round.
        """
        m = self.machine
        moved_on = wait.step == Step.PREVOTE and m.step != Step.PREVOTE
        if m.round != wait.round or m.decision is not None or moved_on:
            return []
        t = VoteType.PREVOTE if wait.step == Step.PREVOTE else VoteType.PRECOMMIT
        ours = [sv.vote for sv in self.signer.votes_of_round(wait.round) if sv.vote.vote_type == t]
        # Direct to each validator: a gossip layer drops a message it has seen (the daemon's
        # content-addressed seen-cache), a direct stream does not.
        peers = sorted(k for k in m.inp.powers if k != self.me)
        return [SendTo(peer, vote) for vote in ours for peer in peers]

    def _rebroadcast(self) -> list[Command]:
        cmds: list[Command] = [self._rebroadcast_timer()]
        m = self.machine
        prop = m.proposals.get(m.round)
        if prop is not None and m.me is not None and m.inp.proposer(m.round) == m.me:
            cmds.append(Publish(TOPIC_CONSENSUS, Proposal(self.height, m.round, prop[2], prop[0])))
        cmds += [Publish(TOPIC_CONSENSUS, sv.vote) for sv in self.signer.votes(m.round - 1)]
        cmds += self._resend_valid()
        cmds.append(Publish(TOPIC_CONSENSUS, self._status()))
        return cmds

    def _rebroadcast_timer(self) -> SetTimer:
        return SetTimer(self.now + self.cfg.rebroadcast_ms, TIMER_REBROADCAST)

    # --- committing -------------------------------------------------------------------------------

    def _commit(self, block: Block, cert: CommitCertificate) -> list[Command]:
        cb = CommittedBlock(block, cert)
        raw = encode_record(cb)
        cmds: list[Command] = [Persist(PERSIST_BLOCK, block.height.to_bytes(8, "big"), raw)]
        self._apply_commit(block, cert, len(raw))
        cmds += self._snapshot(block, cert)
        cmds.append(Persist(PERSIST_VOTES, OWN_VOTES_KEY, self.signer.dump()))
        # The next height starts from a timer, not recursively: with one validator (or a
        # buffered backlog) deciding is instant, and each height must return to the shell.
        cmds.append(SetTimer(self.now + self.cfg.block_interval_ms, TIMER_NEXT_HEIGHT))
        return cmds

    def _start_height(self) -> list[Command]:
        if self._height_started:
            return []
        if self.catching_up:
            # Rule: a node that a vouched-for peer showed to be behind catches up by
            # block sync before it votes (each applied block re-enters here).
            assert self._sync_peer is not None
            self._was_catching_up = True
            return self._request_blocks(self._sync_peer) + self._arm_sync()
        cmds: list[Command] = []
        if self._was_catching_up:
            self._was_catching_up = False
            fields = (("height", self.height), ("target", self._sync_target))
            cmds.append(Log("info", "consensus.caught_up", fields))
        self._height_started = True
        cmds += self._run(self.machine.start(0))
        return cmds + self._replay_future()

    def _apply_commit(self, block: Block, cert: CommitCertificate, size: int) -> None:
        h = block.header
        ctx = BlockContext(
            height=h.height,
            time=h.time,
            proposer=h.proposer,
            txs=block.txs,
            evidence=tuple(encode_record(ev) for ev in block.evidence),
            last_commit_hash=h.last_commit_hash,
        )
        # Certificates are checked before we get here; a precommit in one that conflicts
        # with a precommit we logged is an equivocation that targeted us (a split attack).
        self._certificate_evidence(cert, self.machine)
        if block.last_commit is not None:
            self._certificate_evidence(block.last_commit, self._prev_machine)
        outcome = self.app.finalize_block(ctx)
        self.store.add(CommittedBlock(block, cert), size)
        self.mempool.remove(block.txs)
        self.evidence.mark_committed(block.evidence, h.height + 1)
        self._remember_powers(h.height)
        self.prev_vset = self.vset
        nxt = self.vset.next_height()
        if h.height % self.cfg.epoch_length == 0:
            nxt = nxt.with_members(outcome.validators, self.cfg.max_validators)
        self.vset = nxt
        self.last_block, self.last_commit, self.app_hash = block, cert, outcome.app_hash
        self.last_hash = cert.block_hash
        self.height = h.height + 1
        self.signer.new_height()
        self._answered = set()
        self._valid_cache = {}
        self._pol = {}
        self._far_rounds = {}
        self._proposal_raw = {}
        self._prev_machine = self.machine
        self.machine = self._new_machine()
        self._height_started = False

    def _replay_future(self) -> list[Command]:
        """Feed the buffered messages of our height that the machine's window now admits."""
        cmds: list[Command] = []
        for sender, body, raw in self._future.take(self.height, self.machine.round + MAX_FUTURE_ROUNDS):
            cmds += self._on_consensus(sender, body, raw)
        return cmds

    # --- the machine's inputs ------------------------------------------------------------------

    def _new_machine(self) -> HeightMachine:
        self._proposer = ProposerSchedule(self.vset)
        inputs = Inputs(self.vset.powers(), self._proposer, self._get_value, self._valid)
        return HeightMachine(self.height, self.me, inputs, self.pacer)

    def _tip(self, certified_round: int | None = None) -> ChainTip:
        """The chain a block must extend; `certified_round` is the round of the verified
        certificate that committed it (block sync), else the live round window applies."""
        max_round = self.machine.round + MAX_FUTURE_ROUNDS if certified_round is None else certified_round
        return ChainTip(
            self.cfg.chain_id,
            self.height,
            self.last_block,
            self.last_hash,
            self.prev_vset,
            self.vset,
            self.app_hash,
            self.cfg.genesis_time,
            self._powers_of,
            self._proposer,
            max_round,
        )

    def _valid(self, block: Block, h: bytes | None = None) -> bool:
        h = block_hash(block) if h is None else h
        cached = self._valid_cache.get(h)
        if cached is None:
            try:
                check_block(self._tip(), block, self.evidence, self.verifier)
                # Rule (live blocks only, not block sync): the proposer's clock is not far
                # ahead of ours, so a proposer cannot drag the chain's time into the future.
                cached = block.header.time <= self.now + self.cfg.max_clock_drift_ms
            except ValidationError:
                cached = False
            self._valid_cache[h] = cached
        return cached

    def _get_value(self, round_: int = 0) -> Block:
        assert self.me is not None
        txs = tuple(
            self.app.select_txs(self.mempool.candidates(self.cfg.max_block_txs), self.cfg.max_block_bytes)
        )
        evidence = tuple(ev for ev in self.evidence.pending(MAX_BLOCK_EVIDENCE) if self._evidence_ok(ev))
        prev_time = self.cfg.genesis_time if self.last_block is None else self.last_block.header.time
        header = BlockHeader(
            height=self.height,
            time=max(self.now, prev_time),
            proposer=self.me,
            prev_hash=self.last_hash,
            tx_root=tx_root(txs),
            evidence_root=evidence_root(evidence),
            app_hash=self.app_hash,
            last_commit_hash=certificate_hash(self.last_commit),
            round=round_,
        )
        return Block(header, txs, evidence, self.last_commit)

    def _remember_powers(self, height: int) -> None:
        last = next(reversed(self._powers_at.values()), None) if self._powers_at else None
        powers = self.vset.powers()
        self._powers_at[height] = last if last == powers and last is not None else powers
        while len(self._powers_at) > self.cfg.max_evidence_age + 1:
            self._powers_at.popitem(last=False)

    def _powers_of(self, height: int) -> dict[bytes, int] | None:
        if height == self.height:
            return self.vset.powers()
        return self._powers_at.get(height)

    def _evidence_ok(self, ev: DuplicateVoteEvidence) -> bool:
        if ev.height >= self.height or self.evidence.is_stale(ev, self.height):
            return False
        try:
            check_evidence(self._tip(), ev, self.verifier)
        except ValidationError:
            return False
        return True


#: A canonical envelope ends with its signature as msgpack bin8 of 64 bytes.
_SIG_TRAILER = b"\xc4\x40"


def _envelope_signature(raw: bytes) -> bytes:
    """The signature of a verified envelope is the vote's own (see votes.vote_root).
    The envelope is canonical and the signature its last field, so it is the last 64
    bytes; anything else is decoded in full."""
    if len(raw) > 66 and raw[-66:-64] == _SIG_TRAILER:
        return raw[-64:]
    outer = unpack(raw)
    if type(outer) is not list or len(outer) != 6 or type(outer[5]) is not bytes:
        raise DecodeError("not an envelope")
    sig: bytes = outer[5]
    return sig
