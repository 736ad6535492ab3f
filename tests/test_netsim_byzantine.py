"""netsim's Byzantine strategy library: each strategy does what it says, every kind of
invalid block is refused by an honest node, and a coalition can be put into any scenario
from its config (TOML, the CLI, the market chaos scenario)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import app
from netsim import Sim, SimConfig, SimConfigError, node_keys
from netsim.byzantine import Coalition
from netsim.byzantine import strategies as S
from netsim.byzantine.forge import FORGERS, Context
from netsim.config import BYZANTINE_STRATEGIES, INVALID_BLOCK_KINDS, ByzantineConfig
from netsim.scenarios.consensus import (
    ConsensusScenario,
    HashChainApp,
    Observations,
    forged_commits,
    genesis_validators,
    honest_nodes,
    run_scenario,
)
from netsim.scenarios.market_chaos import chaos_config, run_chaos
from protocol.app import Validator
from protocol.commands import (
    TOPIC_CONSENSUS,
    Command,
    Log,
    MessageReceived,
    Publish,
    SendTo,
    SetTimer,
    Tick,
    TimerFired,
)
from protocol.consensus.block import block_hash
from protocol.consensus.limits import MAX_FUTURE_ROUNDS
from protocol.consensus.messages import CommittedBlock, Proposal, Status
from protocol.consensus.node import PERSIST_BLOCK, ConsensusConfig, ConsensusNode
from protocol.consensus.tendermint import Step
from protocol.consensus.validation import InvalidBlock, check_block
from protocol.consensus.validators import ProposerSchedule, ValidatorSet
from protocol.consensus.votes import Vote, VoteType
from protocol.envelope import open_envelope, seal
from protocol.identity import Keypair
from protocol.records import decode_record, encode_record

CHAIN = "byz-lib"


# --- one wrapped node, driven by hand ------------------------------------------------------------


def _wrapped(
    strategy: str, round0_proposer: bool = True, **kw: Any
) -> tuple[Any, ConsensusNode, list[Keypair]]:
    """A 4-validator chain; node b (round 0's proposer, or not) runs `strategy`."""
    probe = SimConfig(nodes=4, chain_id=CHAIN)
    keys = node_keys(probe)
    vals = tuple(Validator(k.public, 1) for k in keys)
    p0 = ValidatorSet.genesis(vals).proposer(0)
    b = next(i for i, k in enumerate(keys) if (k.public == p0) == round0_proposer)
    config = probe.replace(byzantine=ByzantineConfig(strategy, (b,), **kw))
    cfg = ConsensusConfig(chain_id=CHAIN, genesis_validators=vals)
    node = ConsensusNode(cfg, HashChainApp(vals), keys[b])
    co = Coalition(config, keys)
    return co.wrap(b, node, keys[b]), node, keys


def _deliver(core: Any, msg: object, key: Keypair, now: int) -> list[Command]:
    raw = seal(msg, key, CHAIN)
    env = open_envelope(raw, CHAIN)
    return list(core.handle(now, MessageReceived(TOPIC_CONSENSUS, env.sender, env.body, raw)))


def _body(msg: Any) -> Any:
    return open_envelope(msg, CHAIN).body if isinstance(msg, bytes) else msg


def _to(cmds: list[Command], kind: type, vote_type: VoteType | None = None) -> dict[bytes, Any]:
    """peer -> message, for the SendTos of `kind` (and vote type) among `cmds`."""
    out: dict[bytes, Any] = {}
    for c in cmds:
        if isinstance(c, SendTo):
            body = _body(c.msg)
            if isinstance(body, kind) and (vote_type is None or body.vote_type == vote_type):
                out[c.peer] = body
    return out


def test_amnesia_feeds_its_proposal_and_prevote_to_f_plus_1_honest_and_precommits_nil() -> None:
    core, node, keys = _wrapped("amnesia")
    cmds = core.handle(0, Tick())
    assert not [c for c in cmds if isinstance(c, Publish) and isinstance(c.msg, (Proposal, Vote))]
    proposals, prevotes = _to(cmds, Proposal), _to(cmds, Vote, VoteType.PREVOTE)
    assert len(proposals) == 2 and set(prevotes) == set(proposals)  # f + 1 of 3 honest
    block = next(iter(proposals.values())).block
    out: list[Command] = []
    for k in keys:
        if k.public in proposals:
            out += _deliver(core, Vote(1, 0, VoteType.PREVOTE, block_hash(block), k.public), k, 10)
    assert node.machine.locked_round == 0  # its core locked (line 36)...
    core.handle(11, TimerFired("unrelated"))
    assert node.machine.locked_round == -1 and node.machine.valid_round == -1  # ...and forgot
    precommits = [c.msg for c in out if isinstance(c, Publish) and isinstance(c.msg, Vote)]
    assert precommits and all(v.vote_type == VoteType.PRECOMMIT and v.block_hash is None for v in precommits)


def test_a_late_proposal_reaches_f_honest_just_before_the_propose_timeout_and_the_rest_at_it() -> None:
    core, node, _ = _wrapped("late_proposal", lead_ms=60)
    cmds = core.handle(0, Tick())
    timers = sorted((c.at, c.key) for c in cmds if isinstance(c, SetTimer) and c.key.startswith("byzantine/"))
    timeout = node.machine.timeouts.duration(Step.PROPOSE, 0)
    assert [at for at, _ in timers] == [timeout - 60, timeout]
    assert not _to(cmds, Proposal)
    assert not [c for c in cmds if isinstance(c, Publish) and isinstance(c.msg, Proposal)]
    early = _to(core.handle(timeout - 60, TimerFired(timers[0][1])), Proposal)
    late = _to(core.handle(timeout, TimerFired(timers[1][1])), Proposal)
    assert len(early) == 1 and len(late) == 2 and not set(early) & set(late)  # f, then the others


def test_selective_equivocation_tells_each_honest_half_another_block() -> None:
    core, _, _ = _wrapped("equivocation")
    cmds = core.handle(0, Tick())
    proposals = _to(cmds, Proposal)
    assert len(proposals) == 3 and len({block_hash(p.block) for p in proposals.values()}) == 2
    for t in VoteType:  # both steps at once, each half its own block
        votes = _to(cmds, Vote, t)
        told = {p: block_hash(pr.block) for p, pr in proposals.items()}
        assert {p: v.block_hash for p, v in votes.items()} == told


def test_starvation_never_sends_its_victims_anything() -> None:
    core, node, keys = _wrapped("starvation", round0_proposer=True)
    victims = core.co.victims(node)
    assert len(victims) == 1  # f of them
    cmds = core.handle(0, Tick())
    assert not [c for c in cmds if isinstance(c, Publish) and c.topic == TOPIC_CONSENSUS]
    sent = {c.peer for c in cmds if isinstance(c, SendTo)}
    assert sent and not sent & set(victims)
    assert len(sent) == len(keys) - 1 - len(victims)


def test_future_spam_floods_future_rounds_heights_and_a_far_status_and_sends_nothing_else() -> None:
    core, node, _ = _wrapped("future_spam", spam_interval_ms=50)
    cmds = core.handle(0, Tick())
    timer = next(c for c in cmds if isinstance(c, SetTimer) and c.key.startswith("byzantine/"))
    assert not [c for c in cmds if isinstance(c, (Publish, SendTo))]
    burst = core.handle(timer.at, TimerFired(timer.key))
    bodies = [_body(c.msg) for c in burst if isinstance(c, Publish)]
    votes = [b for b in bodies if isinstance(b, Vote)]
    assert max(v.round for v in votes if v.height == node.height) == MAX_FUTURE_ROUNDS + 2
    assert {v.height for v in votes} == {node.height, node.height + 1, node.height + 2}
    assert any(isinstance(b, Status) and b.height >= node.height + 1000 for b in bodies)
    assert any(isinstance(c, SetTimer) and c.at == timer.at + 50 for c in burst)  # keeps going


# --- every kind of invalid block, against an honest node ------------------------------------------


def _chain() -> tuple[ConsensusScenario, list[CommittedBlock]]:
    sc = ConsensusScenario(seed=4, duration_ms=800)
    sims: list[Sim] = []
    run_scenario(sc, setup=sims.append)
    blocks = [decode_record(CommittedBlock, v) for _, v in sims[0].disk(0).items(PERSIST_BLOCK)]
    assert len(blocks) >= 3
    return sc, blocks[:2]


_SC, _BLOCKS = _chain()
_KEYS = node_keys(_SC.sim_config())


def _restored(i: int, now: int) -> ConsensusNode:
    vals = genesis_validators(_SC)
    cfg = ConsensusConfig(chain_id=_SC.sim_config().chain_id, genesis_validators=vals, timeouts=_SC.timeouts)
    node = ConsensusNode(cfg, HashChainApp(vals), _KEYS[i])
    node.restore([encode_record(cb) for cb in _BLOCKS], None)
    node.handle(now, Tick())
    return node


def _send(node: ConsensusNode, msg: object, key: Keypair, now: int) -> list[Command]:
    chain = _SC.sim_config().chain_id
    raw = seal(msg, key, chain)
    env = open_envelope(raw, chain)
    return list(node.handle(now, MessageReceived(TOPIC_CONSENSUS, env.sender, env.body, raw)))


#: The rule each kind breaks: check_block's message, or who else refuses it.
REFUSED_BY = {
    "wrong_proposer": "names a proposer other than that round's",
    "non_validator_proposer": "names a proposer other than that round's",
    "wrong_round": "check_proposal",
    "wrong_height": "the machine (another height)",
    "wrong_prev_hash": "does not extend the last committed block",
    "time_before_previous": "before the previous block's",
    "time_far_ahead": "the clock-drift rule",
    "wrong_app_hash": "app hash does not match",
    "tx_root_mismatch": "tx or evidence root does not match",
    "evidence_root_mismatch": "tx or evidence root does not match",
    "oversize_txs": "exceed the size budget",
    "missing_last_commit": "missing last commit",
    "last_commit_hash_mismatch": "last commit hash does not match",
    "last_commit_other_block": "last commit certifies another block",
    "last_commit_below_quorum": "below quorum",
    "last_commit_bad_signature": "bad precommit signature",
    "forged_evidence": "a vote signature does not verify",
    "evidence_from_the_future": "evidence from a height not yet decided",
    "duplicate_evidence": "duplicate evidence in block",
    "evidence_of_a_non_validator": "not a validator at that height",
    "unproven_valid_round": "line 28 (no proof of lock)",
}


@pytest.mark.parametrize("kind", INVALID_BLOCK_KINDS)
def test_an_honest_validator_refuses_every_kind_of_invalid_block(kind: str) -> None:
    now = _BLOCKS[-1].block.header.time + 1_000
    round_ = 1 if kind == "unproven_valid_round" else 0
    probe = _restored(0, now)
    schedule = ProposerSchedule(probe.vset)
    b = next(i for i, k in enumerate(_KEYS) if k.public == schedule(round_))
    h = next(i for i in range(4) if i != b)
    byz, honest = _restored(b, now), _restored(h, now)
    chain = _SC.sim_config().chain_id
    if round_ == 1:  # nil precommits of the others: round 0 fails, round 1 starts
        for i in (i for i in range(4) if i != h):
            _send(honest, Vote(honest.height, 0, VoteType.PRECOMMIT, None, _KEYS[i].public), _KEYS[i], now)
        assert honest.machine.round == 1
    mine = Proposal(byz.height, round_, -1, byz._get_value(round_))
    ctx = Context(byz, _KEYS[b], chain, now, _KEYS[h].public)
    forged = FORGERS[kind](mine, ctx)
    assert forged is not None and forged != mine
    out = _send(honest, forged, _KEYS[b], now)
    prevotes = [c.msg for c in out if isinstance(c, Publish) and isinstance(c.msg, Vote)
                and c.msg.vote_type == VoteType.PREVOTE]
    assert block_hash(forged.block) not in [v.block_hash for v in prevotes]
    assert all(v.block_hash is None for v in prevotes)  # nil, or ignored until the timeout
    reason = REFUSED_BY[kind]
    if kind == "wrong_round":
        assert any(isinstance(c, Log) and "fresh proposal" in str(c.fields) for c in out) and not prevotes
    elif kind in ("wrong_height", "unproven_valid_round"):
        assert not prevotes  # no prevote at all: the proposal never counts
    elif kind == "time_far_ahead":
        check_block(honest._tip(), forged.block, honest.evidence, honest.verifier)  # well formed...
        assert not honest._valid(forged.block)  # ...but from a clock too far ahead
    else:
        with pytest.raises(InvalidBlock, match=reason):
            check_block(honest._tip(), forged.block, honest.evidence, honest.verifier)
        assert [v.block_hash for v in prevotes] == [None]


def test_the_honest_proposal_the_forgeries_start_from_gets_a_prevote() -> None:
    # The control for the test above: the same setting without a forgery is accepted.
    now = _BLOCKS[-1].block.header.time + 1_000
    probe = _restored(0, now)
    b = next(i for i, k in enumerate(_KEYS) if k.public == ProposerSchedule(probe.vset)(0))
    h = (b + 1) % 4
    byz, honest = _restored(b, now), _restored(h, now)
    mine = Proposal(byz.height, 0, -1, byz._get_value(0))
    out = _send(honest, mine, _KEYS[b], now)
    assert [c.msg.block_hash for c in out if isinstance(c, Publish) and isinstance(c.msg, Vote)] == [
        block_hash(mine.block)
    ]


@pytest.mark.parametrize("kinds", [(), ("wrong_proposer",)])
def test_invalid_block_proposers_never_get_a_block_committed_and_every_block_names_its_maker(
    kinds: tuple[str, ...],
) -> None:
    # ("wrong_proposer",): issue 17's finding alone, a Byzantine proposer's well-formed
    # block naming an honest validator (who would be paid for it) in every round it leads.
    sc = ConsensusScenario(seed=3, powers=(1,) * 4, duration_ms=6_000,
                           byzantine=ByzantineConfig("invalid_blocks", (1,), kinds=kinds))
    obs = Observations()
    sims: list[Sim] = []
    run_scenario(sc, setup=sims.append, obs=obs)
    honest = honest_nodes(sc)
    assert sims[0].coalition is not None and len(sims[0].coalition.invalid) >= 5
    assert forged_commits(obs, sims[0], honest) == 0
    vset = ValidatorSet.genesis(genesis_validators(sc))
    for height in range(1, min(obs.height_of(i) for i in honest) + 1):
        raw = sims[0].disk(honest[0]).get(PERSIST_BLOCK, height.to_bytes(8, "big"))
        assert raw is not None
        cb = decode_record(CommittedBlock, raw)
        assert cb.block.header.proposer == ProposerSchedule(vset)(cb.block.header.round)
        vset = vset.next_height()
    assert min(obs.height_of(i) for i in honest) >= 10


# --- configuration, determinism, any scenario ----------------------------------------------------


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ({"strategy": "bribery", "nodes": [1]}, "byzantine.strategy"),
        ({"strategy": "amnesia", "nodes": []}, "byzantine.nodes"),
        ({"strategy": "amnesia", "nodes": [1, 1]}, "byzantine.nodes"),
        ({"strategy": "amnesia", "nodes": [9]}, "byzantine.nodes"),
        ({"strategy": "invalid_blocks", "nodes": [1], "kinds": ["wrong_colour"]}, "byzantine.kinds"),
        ({"strategy": "starvation", "nodes": [1], "victims": [1]}, "byzantine.victims"),
        ({"strategy": "amnesia", "nodes": [1], "mood": "grumpy"}, "unknown key"),
    ],
)
def test_a_bad_byzantine_table_is_refused_naming_the_field(table: dict[str, Any], error: str) -> None:
    with pytest.raises(SimConfigError, match=error):
        SimConfig.from_dict({"nodes": 4, "byzantine": table})


def test_every_configured_strategy_and_kind_has_an_implementation() -> None:
    assert tuple(S.STRATEGIES) == BYZANTINE_STRATEGIES
    assert tuple(FORGERS) == INVALID_BLOCK_KINDS


def test_the_same_seed_and_coalition_give_the_same_trace() -> None:
    def run(seed: int) -> str:
        sc = ConsensusScenario(seed=seed, duration_ms=1_500, byzantine=ByzantineConfig("amnesia", (2,)))
        return run_scenario(sc)[0].trace_hash

    assert run(5) == run(5) != run(6)


BYZANTINE_TOML = """
seed = 3
nodes = 7
duration_ms = 4000
scenario = "consensus"

[network]
latency_ms = 20
jitter_ms = 40
loss = 0.02

[byzantine]
strategy = "amnesia"
nodes = [1, 5]
"""


def test_a_byzantine_coalition_runs_from_a_toml_config_through_the_cli(tmp_path: Any) -> None:
    path = tmp_path / "byz.toml"
    path.write_text(BYZANTINE_TOML)
    result = CliRunner().invoke(app, ["sim", "run", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["byzantine"] == "amnesia" and summary["byzantine_nodes"] == [1, 5]
    assert summary["honest_slashed"] == 0 and summary["honest_height_min"] >= 5


def test_a_byzantine_validator_in_the_market_chaos_scenario_keeps_safety_and_every_task_ends() -> None:
    config = chaos_config(2, nemesis=None, safety_ms=20_000, tasks=1)
    config = config.replace(byzantine=ByzantineConfig("amnesia", (1,)))  # validators are 0-3
    report = run_chaos(config)  # no_fork, no_honest_loss, tasks_terminal raise on failure
    assert report.tasks and all(s in ("SETTLED", "REFUNDED") for s in report.tasks.values())


def test_honest_nodes_keep_only_a_bounded_window_of_future_rounds_under_spam() -> None:
    sc = ConsensusScenario(seed=2, duration_ms=3_000,
                           byzantine=ByzantineConfig("future_spam", (0,), spam_interval_ms=20))
    sims: list[Sim] = []
    run_scenario(sc, setup=sims.append)
    for i in honest_nodes(sc):
        core = sims[0].core(i)
        machine = core.inner.machine  # type: ignore[union-attr]
        assert max(r for r, _ in machine.votes) <= machine.round + MAX_FUTURE_ROUNDS
