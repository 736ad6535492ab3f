"""Narrow a disputed segment of one crew member to one op inside its stage, and decide it.

A verifier's re-execution (proof.check_segment) says *that* member r's segment j does not
match its commitment. The dispute says *where*: the single-node pinpoint game
(protocol/pol/pinpoint.py, played by arena.play) over the member's op chain
(protocol/pol/crew_ops.py), bisecting to one step and one op (one module's forward or
backward of one micro-batch, one codec op, one parameter's update), which the referee
re-executes alone. Both sides start from the member's opened start state, which matches
its commitment; the defender stands behind its committed end state and sent messages,
the challenger behind its honest re-execution from the same recorded inputs.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from node.compute.crew.optrace import (
    CrewReferee,
    CrewSource,
    StepContext,
    Value,
    ValueStore,
    game_state,
    neighbours,
)
from node.compute.crew.pipeline import HONEST, Behaviour, CrewConfig, schedule, windows
from node.compute.crew.proof import (
    Commitment,
    ProofError,
    ReplayChannel,
    SegmentInputs,
    fresh_worker,
    load_blob,
    member_profile,
    restore,
    state_digest,
)
from protocol.encoding import sha256
from protocol.pol.arena import DisputeReport, Oracle, play
from protocol.pol.crew_ops import SENT_START, crew_geometry, sent_next
from protocol.pol.messages import DisputeOpen
from protocol.pol.ops import OpDesc
from protocol.pol.oracle import HonestOracle, state_hash_of

DEFENDER_KEY = b"\xd0" * 32
CHALLENGER_KEY = b"\xc1" * 32


@dataclass(frozen=True)
class CrewDisputeReport:
    """The game's report, and the op it ended at."""

    report: DisputeReport
    op: OpDesc


def received_by_step(ctx: StepContext, inputs: SegmentInputs, a: int, b: int) -> dict[int, dict[int, bytes]]:
    """Each step's received messages by RECV index (layout.recv_source), from a segment's
    recorded inputs."""
    m, out = ctx.cfg.micro_batches, {}
    for s in range(a, b):
        i, got = s - a, {}
        for base, src in ((0, ctx.prev), (m, ctx.next)):
            for k, msg in enumerate(inputs.messages.get(src, [])[i * m : (i + 1) * m]):
                got[base + k] = msg
        for k, r in enumerate(ctx.others):
            if len(inputs.messages.get(r, [])) > i:
                got[2 * m + k] = inputs.messages[r][i]
        out[s] = got
    return out


def step_sent(cfg: CrewConfig, rank: int, sent: dict[int, list[bytes]], step: int) -> list[bytes]:
    """Hashes of what a member sent in `step` (global numbering), in the chain's order:
    to the next stage, to the previous, to each other replica."""
    prev, nxt, others = neighbours(cfg, rank)
    m = cfg.micro_batches
    out = list(sent.get(nxt, [])[step * m : (step + 1) * m]) + sent.get(prev, [])[step * m : (step + 1) * m]
    return out + [sent[r][step] for r in others if len(sent.get(r, [])) > step]


def committed_chain(cfg: CrewConfig, c: Commitment, a: int, b: int) -> bytes:
    chain = SENT_START
    for s in range(a, b):
        chain = sent_next(chain, step_sent(cfg, c.rank, c.sent, s))
    return chain


def replay_states(ctx: StepContext, start: dict[str, torch.Tensor], inputs: SegmentInputs, a: int, b: int,
                  behaviour: Behaviour) -> dict[int, list[Value]]:
    """The game state at every step a..b of a re-execution with `behaviour` from `start`."""
    cfg = ctx.cfg
    channel = ReplayChannel(inputs.messages)
    with member_profile(), fresh_worker(cfg, ctx.rank, ctx.train, channel) as worker:
        worker.behaviour = behaviour
        restore(worker, start)
        chain, states = SENT_START, {a: game_state(worker, SENT_START)}
        for s, micro in enumerate(itertools.islice(schedule(cfg), a, b), start=a):
            worker.step(micro[worker.replica])
            chain = sent_next(chain, step_sent(cfg, ctx.rank, channel.sent, s - a))  # lists start at a
            states[s + 1] = game_state(worker, chain)
    return states


def state_of_blob(ctx: StepContext, blob: dict[str, torch.Tensor], chain: bytes) -> list[Value]:
    with fresh_worker(ctx.cfg, ctx.rank, ctx.train, ReplayChannel({})) as worker:
        restore(worker, blob)
        return game_state(worker, chain)


def pinpoint_member(cfg: CrewConfig, tokens: torch.Tensor, c: Commitment, segment: int, start_blob: bytes,
                    end_blob: bytes, inputs_blob: bytes, behaviour: Behaviour = HONEST,
                    challenger: Behaviour = HONEST, steps: int | None = None,
                    challenger_oracle: Oracle | None = None) -> CrewDisputeReport | None:
    """Play the dispute about member c.rank's `segment`: the defender runs `behaviour` (its
    own hooks; its claimed end is its committed one), the challenger `challenger` from the
    same opened start and inputs. None when both claim the same end (nothing to dispute).
    ProofError when the opened blobs do not match the commitment (that is decided before
    any game: the member did not open what it committed)."""
    train, _ = windows(tokens, cfg)
    bounds = cfg.boundaries(steps)
    a, b = bounds[segment], bounds[segment + 1]
    start, end = load_blob(start_blob), load_blob(end_blob)
    if state_digest(start) != c.state_digests[segment] or state_digest(end) != c.state_digests[segment + 1]:
        raise ProofError("opened states do not match the commitment")
    inputs = SegmentInputs.from_blob(inputs_blob)
    ctx = StepContext(cfg, c.rank, train)
    store = ValueStore()
    received = received_by_step(ctx, inputs, a, b)
    d_states = replay_states(ctx, start, inputs, a, b, behaviour)
    d_states[b] = state_of_blob(ctx, end, committed_chain(cfg, c, a, b))
    c_states = replay_states(ctx, start, inputs, a, b, challenger)
    d_src = CrewSource(ctx, d_states, received, store, behaviour)
    c_src = CrewSource(ctx, c_states, received, store, challenger)
    d_end, c_end = state_hash_of(d_src.state_digests(b)), state_hash_of(c_src.state_digests(b))
    if d_end == c_end:
        return None
    opened = DisputeOpen(sha256(b"crew-dispute" + c.rank.to_bytes(4, "big") + segment.to_bytes(4, "big")),
                         sha256(b"crew" + cfg.seed.to_bytes(8, "big")), segment, a, b - a,
                         state_hash_of(d_src.state_digests(a)), d_end, c_end, DEFENDER_KEY, CHALLENGER_KEY)
    geometry = crew_geometry(ctx.layout)
    with member_profile():
        report = play(None, opened, 0.0, HonestOracle(d_src), challenger_oracle or HonestOracle(c_src),
                      CrewReferee(ctx, store, c.received), geometry)
    return CrewDisputeReport(report, geometry.ops[report.op_index])
