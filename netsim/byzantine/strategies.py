"""The Byzantine strategies, one class each (what they do is in each docstring).

f coalition members run the same strategy. The crash reference (`crash`) is the yard
stick: the issue's liveness target is that no strategy commits fewer than 0.7 of the
heights the same validators commit when they are simply crashed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from netsim.byzantine.coalition import ByzantineCore, Coalition, is_consensus, is_message
from netsim.byzantine.forge import Context, forge
from netsim.config import INVALID_BLOCK_KINDS
from protocol.commands import TOPIC_CONSENSUS, Command, Event, MessageReceived, Publish, SendTo, Tick
from protocol.consensus.block import block_hash
from protocol.consensus.limits import MAX_FUTURE_ROUNDS
from protocol.consensus.messages import Proposal, Status
from protocol.consensus.signer import VoteSigner
from protocol.consensus.tendermint import Step
from protocol.consensus.votes import SignedVote, Vote, VoteType
from protocol.encoding import sha256
from protocol.identity import Keypair

#: Heights of plan state a strategy keeps below the current one (bounded memory).
KEEP_HEIGHTS = 2


class Crash(ByzantineCore):
    """The reference: the node never runs (a validator that crashed before the run)."""

    def handle(self, now: int, event: Event) -> list[Command]:
        return []


class Silence(ByzantineCore):
    """Runs the honest core and sends nothing (holds its stake, never votes)."""

    def rewrite(self, cmd: Command) -> list[Command]:
        return [] if is_message(cmd) else [cmd]


class _NilPrecommits(VoteSigner):
    """Signs a nil precommit wherever the honest core would precommit a value, so the
    core itself believes it precommitted nil (it neither decides nor locks by it)."""

    def sign(self, vote: Vote) -> SignedVote | None:
        if vote.vote_type == VoteType.PRECOMMIT and vote.block_hash is not None:
            vote = dataclasses.replace(vote, block_hash=None)
        return super().sign(vote)


class Amnesia(ByzantineCore):
    """Forgets its lock and valid value before every event, so it prevotes whatever is
    proposed and proposes fresh blocks; sends its proposals and prevotes only to f+1
    honest validators (the same ones for every member, rotating per round): with the
    coalition's f prevotes they make a quorum, so those f+1 lock on a block the other
    honest validators never saw. It precommits nil, never relays another node's prevotes
    (no proof of lock from it), and otherwise behaves."""

    def __init__(self, index: int, inner: Any, key: Keypair, coalition: Coalition) -> None:
        super().__init__(index, inner, key, coalition)
        signer = _NilPrecommits(coalition.chain_id, key)
        signer.load(self.node.signer.dump(), self.node.height)
        self.node.signer = signer

    def before(self, event: Event) -> None:
        m = self.node.machine
        m.locked_value, m.locked_hash, m.locked_round = None, b"", -1
        m.valid_value, m.valid_round = None, -1
        body = event.body if isinstance(event, MessageReceived) else None
        if isinstance(body, Vote) and body.vote_type == VoteType.PRECOMMIT:
            self.co.saw_precommit(body)

    def rewrite(self, cmd: Command) -> list[Command]:
        if not is_consensus(cmd):
            return [cmd]
        msg = cmd.msg
        if isinstance(msg, bytes):
            return []
        if isinstance(msg, Proposal) or (isinstance(msg, Vote) and msg.vote_type == VoteType.PREVOTE):
            targets = self.co.lock_targets(self.node, msg.height, msg.round)
            allowed = [*targets, *self.co.coalition_peers(self.me)]
            if isinstance(cmd, SendTo):
                return [cmd] if cmd.peer in allowed else []
            return self.send(msg, allowed)
        return [cmd]


class Equivocation(ByzantineCore):
    """Selective equivocation: the honest validators are split in two halves (rotating
    per height) and each half is told something else. As proposer it sends block A to
    one half and B (A one ms later) to the other, and votes A to the first and B to the
    second in both steps at once; in other rounds its own vote goes to one half and a
    conflicting one (nil for a value, the proposal for nil) to the other. Neither half
    sees both votes unless someone relays them."""

    def __init__(self, index: int, inner: Any, key: Keypair, coalition: Coalition) -> None:
        super().__init__(index, inner, key, coalition)
        self._voted: set[tuple[int, int]] = set()

    def rewrite(self, cmd: Command) -> list[Command]:
        if not is_consensus(cmd):
            return [cmd]
        msg = cmd.msg
        if isinstance(cmd, Publish) and isinstance(msg, Proposal) and self._mine(msg):
            return self._split_proposal(msg)
        if isinstance(msg, Vote) and msg.validator == self.me:
            return self._split_vote(msg, cmd.peer if isinstance(cmd, SendTo) else None)
        return [cmd]

    def after(self, event: Event) -> list[Command]:
        if isinstance(event, MessageReceived) and isinstance(event.body, Proposal):
            return self._split_votes(event.body.height, event.body.round)
        return []

    def _mine(self, p: Proposal) -> bool:
        return bool(self.node.machine.inp.proposer(p.round) == self.me)

    def _sides(self, height: int) -> tuple[list[bytes], list[bytes]]:
        a, b = self.co.halves(self.node, height)
        honest = set(a) | set(b)
        rest = [k for k in self.co.everyone_but(self.me) if k not in honest]
        return [*a, *rest], b  # the coalition and non-validators hear side A

    def _split_proposal(self, p: Proposal) -> list[Command]:
        a = p.block
        b = dataclasses.replace(a, header=dataclasses.replace(a.header, time=a.header.time + 1))
        key = (p.height, p.round)
        self.co.plan(self.co.splits, key, (block_hash(a), block_hash(b)))
        side_a, side_b = self._sides(p.height)
        out = self.send(p, side_a) + self.send(dataclasses.replace(p, block=b), side_b)
        return out + self._split_votes(p.height, p.round)

    def _split_votes(self, height: int, round_: int) -> list[Command]:
        split = self.co.splits.get((height, round_))
        if split is None or (height, round_) in self._voted:
            return []
        self._voted.add((height, round_))
        self._voted = {k for k in self._voted if k[0] + KEEP_HEIGHTS >= height}
        out: list[Command] = []
        side_a, side_b = self._sides(height)
        for t in (VoteType.PREVOTE, VoteType.PRECOMMIT):
            out += self.send(self.seal(Vote(height, round_, t, split[0], self.me)), side_a)
            out += self.send(self.seal(Vote(height, round_, t, split[1], self.me)), side_b)
        return out

    def _split_vote(self, v: Vote, only: bytes | None) -> list[Command]:
        if (v.height, v.round) in self.co.splits:
            return []  # sent by _split_votes, both steps at once
        prop = self.node.machine.proposals.get(v.round)
        if v.block_hash is not None:
            other: bytes | None = None
        elif prop is not None:
            other = prop[1]
        else:
            other = sha256(f"netsim/byzantine/other/{v.height}/{v.round}".encode())
        side_a, side_b = self._sides(v.height)
        raw = self.seal(dataclasses.replace(v, block_hash=other))
        out: list[Command] = [SendTo(k, v) for k in side_a if only in (None, k)]
        return out + [SendTo(k, raw) for k in side_b if only in (None, k)]


class LateProposal(ByzantineCore):
    """As proposer, holds its proposal back: f honest validators get it `lead_ms` before
    the honest propose timeout of that round (so it lands just in time), the others when
    the timeout fires (just too late), the coalition at once. Otherwise honest."""

    def __init__(self, index: int, inner: Any, key: Keypair, coalition: Coalition) -> None:
        super().__init__(index, inner, key, coalition)
        self._release: dict[tuple[int, int], int] = {}
        self._pending: dict[str, list[Command]] = {}

    def rewrite(self, cmd: Command) -> list[Command]:
        msg = cmd.msg if isinstance(cmd, Publish) else None
        if not (isinstance(msg, Proposal) and self.node.machine.inp.proposer(msg.round) == self.me):
            return [cmd]
        key = (msg.height, msg.round)
        if key in self._release:  # a rebroadcast: not before the late group's release
            return [] if self.now < self._release[key] else [cmd]
        timeout = self.node.machine.timeouts.duration(Step.PROPOSE, msg.round)
        early = self.co.early_group(self.node, msg.height, msg.round)
        mates = self.co.coalition_peers(self.me)
        late = [k for k in self.co.everyone_but(self.me) if k not in early and k not in mates]
        self._release = {k: t for k, t in self._release.items() if k[0] + KEEP_HEIGHTS >= msg.height}
        self._release[key] = self.now + timeout
        out = self.send(msg, mates)
        early_at = self.now + max(0, timeout - self.co.cfg.lead_ms)
        for at, peers in ((early_at, early), (self.now + timeout, late)):
            name, timer = self.timer(at)
            self._pending[name] = self.send(msg, peers)
            out.append(timer)
        return out

    def on_timer(self, key: str) -> list[Command]:
        return self._pending.pop(key, [])


class Starvation(ByzantineCore):
    """Honest towards everyone except its victims (f honest validators, the same for the
    whole run), who get nothing at all from the coalition: no proposal, vote, proof of
    lock, status or block-sync answer."""

    def rewrite(self, cmd: Command) -> list[Command]:
        if not is_consensus(cmd):
            return [cmd]
        victims = self.co.victims(self.node)
        if isinstance(cmd, SendTo):
            return [] if cmd.peer in victims else [cmd]
        return self.send(cmd.msg, [k for k in self.co.everyone_but(self.me) if k not in victims])


class FutureSpam(ByzantineCore):
    """Silent, except that every `spam_interval_ms` it floods every node with validly
    signed messages for the future: nil prevotes and precommits for each of the next
    MAX_FUTURE_ROUNDS + 2 rounds (and a conflicting prevote in each), votes for the next
    two heights, and a status claiming a height 1000 blocks ahead (bait for block-sync
    requests it never answers)."""

    SPAN = MAX_FUTURE_ROUNDS + 2
    FAR = 1_000

    def __init__(self, index: int, inner: Any, key: Keypair, coalition: Coalition) -> None:
        super().__init__(index, inner, key, coalition)
        self._sealed: dict[Any, bytes] = {}

    def rewrite(self, cmd: Command) -> list[Command]:
        return [] if is_message(cmd) else [cmd]

    def after(self, event: Event) -> list[Command]:
        if isinstance(event, Tick):
            return [self.timer(self.now + self.co.cfg.spam_interval_ms)[1]]
        return []

    def on_timer(self, key: str) -> list[Command]:
        return [self.timer(self.now + self.co.cfg.spam_interval_ms)[1], *self._burst()]

    def _burst(self) -> list[Command]:
        h, r = self.node.height, self.node.machine.round
        if len(self._sealed) > 64 * self.SPAN:
            self._sealed = {}
        msgs: list[Any] = []
        for k in range(1, self.SPAN + 1):
            junk = sha256(f"netsim/byzantine/spam/{h}/{r + k}".encode())
            msgs += [Vote(h, r + k, t, None, self.me) for t in (VoteType.PREVOTE, VoteType.PRECOMMIT)]
            msgs.append(Vote(h, r + k, VoteType.PREVOTE, junk, self.me))
        for dh in (1, 2):
            msgs += [Vote(h + dh, rr, t, None, self.me) for rr in (0, 1) for t in VoteType]
        msgs.append(Status(h + self.FAR, sha256(b"netsim/byzantine/spam/head")))
        out: list[Command] = []
        for m in msgs:
            raw = self._sealed.get(m)
            if raw is None:
                raw = self._sealed[m] = self.seal(m)
            out.append(Publish(TOPIC_CONSENSUS, raw))
        return out


class InvalidBlocks(ByzantineCore):
    """As proposer, replaces its proposal by one that breaks one consensus rule (the kind
    rotates per height and round through `kinds`, see netsim/byzantine/forge.py), and the
    whole coalition prevotes and precommits that forged block in that round, hoping for a
    quorum. Otherwise honest."""

    def __init__(self, index: int, inner: Any, key: Keypair, coalition: Coalition) -> None:
        super().__init__(index, inner, key, coalition)
        self.kinds = coalition.cfg.kinds or INVALID_BLOCK_KINDS
        self._sent: dict[tuple[int, int], Proposal] = {}
        #: (height, round, kind) of every forgery sent, for tests and the report.
        self.sent_kinds: list[tuple[int, int, str]] = []

    def rewrite(self, cmd: Command) -> list[Command]:
        if not is_consensus(cmd):
            return [cmd]
        msg = cmd.msg
        mine = isinstance(msg, Proposal) and self.node.machine.inp.proposer(msg.round) == self.me
        if isinstance(cmd, Publish) and isinstance(msg, Proposal) and mine:
            return [Publish(TOPIC_CONSENSUS, self._forged(msg))]
        if isinstance(msg, Vote) and msg.validator == self.me:
            target = self.co.forged.get((msg.height, msg.round))
            if target is not None:
                raw = self.seal(dataclasses.replace(msg, block_hash=target))
                return [SendTo(cmd.peer, raw) if isinstance(cmd, SendTo) else Publish(TOPIC_CONSENSUS, raw)]
        return [cmd]

    def _forged(self, p: Proposal) -> Proposal:
        key = (p.height, p.round)
        sent = self._sent.get(key)
        if sent is not None:
            return sent
        honest = self.co.rotation(self.co.honest_validators(self.node), p.height, p.round, "framed")
        ctx = Context(self.node, self.key, self.co.chain_id, self.now, honest[0] if honest else self.me)
        digest = sha256(f"netsim/byzantine/kind/{self.co.seed}/{p.height}/{p.round}".encode())
        start = int.from_bytes(digest[:4], "big")
        kind, forged = forge(self.kinds, start % len(self.kinds), p, ctx)
        self._sent = {k: v for k, v in self._sent.items() if k[0] + KEEP_HEIGHTS >= p.height}
        self._sent[key] = forged
        self.sent_kinds.append((p.height, p.round, kind))
        self.co.invalid.add(self.co.plan(self.co.forged, key, block_hash(forged.block)))
        return forged


STRATEGIES: dict[str, type[ByzantineCore]] = {
    "silence": Silence,
    "crash": Crash,
    "amnesia": Amnesia,
    "equivocation": Equivocation,
    "late_proposal": LateProposal,
    "starvation": Starvation,
    "future_spam": FutureSpam,
    "invalid_blocks": InvalidBlocks,
}
