"""Byzantine proposers against the consensus rules, message by message: the proposer rule
(a block names the proposer of its round, who signed its proposal) on the live path and
on block sync, with forged headers (issue 17)."""

from __future__ import annotations

import dataclasses

import pytest

from netsim.scenarios.consensus import HashChainApp
from protocol.app import Validator
from protocol.commands import TOPIC_CONSENSUS, Command, MessageReceived, Publish, SendTo, Tick
from protocol.consensus.block import Block, block_hash
from protocol.consensus.messages import BlockRequest, BlockResponse, CommittedBlock, Proposal, Status
from protocol.consensus.node import ConsensusConfig, ConsensusNode
from protocol.consensus.validation import InvalidBlock, check_block, check_committed, check_proposal
from protocol.consensus.votes import Vote, VoteType, make_certificate, sign_vote
from protocol.envelope import open_envelope, seal
from protocol.identity import Keypair

CHAIN = "byz-unit"
DIRECT = "polnet/direct/1"
KEYS = [Keypair.derive(f"byz-unit/{i}") for i in range(4)]
VALIDATORS = tuple(Validator(k.public, 1) for k in KEYS)


def _node(i: int | None) -> ConsensusNode:
    cfg = ConsensusConfig(chain_id=CHAIN, genesis_validators=VALIDATORS)
    node = ConsensusNode(cfg, HashChainApp(VALIDATORS), None if i is None else KEYS[i])
    node.handle(0, Tick())
    return node


def _index(node: ConsensusNode, round_: int) -> int:
    """The index in KEYS of the proposer of `round_` at the node's height."""
    who = node.machine.inp.proposer(round_)
    return next(i for i, k in enumerate(KEYS) if k.public == who)


def _deliver(node: ConsensusNode, msg: object, key: Keypair, now: int = 10) -> list[Command]:
    raw = seal(msg, key, CHAIN)
    env = open_envelope(raw, CHAIN)
    return list(node.handle(now, MessageReceived(TOPIC_CONSENSUS, env.sender, env.body, raw)))


def _prevotes(cmds: list[Command]) -> list[Vote]:
    return [c.msg for c in cmds if isinstance(c, Publish) and isinstance(c.msg, Vote)
            and c.msg.vote_type == VoteType.PREVOTE]


def _forge(block: Block, **header: object) -> Block:
    return dataclasses.replace(block, header=dataclasses.replace(block.header, **header))  # type: ignore[arg-type]


def _setting() -> tuple[ConsensusNode, int, int, Block]:
    """A validator (not round 0's proposer), round 0's proposer p and its honest block."""
    probe = _node(None)
    p = _index(probe, 0)
    me = (p + 1) % 4
    maker = _node(p)
    block = maker._get_value(0)
    assert block.header.proposer == KEYS[p].public and block.header.round == 0
    return _node(me), p, me, block


def test_an_honest_proposal_gets_a_prevote_for_its_block() -> None:
    node, p, _, block = _setting()
    assert [v.block_hash for v in _prevotes(_deliver(node, Proposal(1, 0, -1, block), KEYS[p]))] == [
        block_hash(block)
    ]


@pytest.mark.parametrize("named", ["another validator", "the receiver itself", "a non-validator"])
def test_a_block_naming_anyone_but_its_rounds_proposer_gets_a_nil_prevote(named: str) -> None:
    # Before issue 17 any validator in header.proposer passed, and the ledger paid the
    # validator a Byzantine proposer named: the proposal's signer is round 0's proposer.
    node, p, me, block = _setting()
    other = {"another validator": KEYS[(p + 2) % 4].public, "the receiver itself": KEYS[me].public,
             "a non-validator": Keypair.derive("stranger").public}[named]
    forged = _forge(block, proposer=other)
    assert [v.block_hash for v in _prevotes(_deliver(node, Proposal(1, 0, -1, forged), KEYS[p]))] == [None]


def test_a_block_of_another_round_whose_proposer_it_names_is_refused_as_a_fresh_proposal() -> None:
    # Round 1's proposer cannot pass off a block "of round 0" (naming round 0's proposer)
    # as its fresh proposal, nor a block of its own with a round in the header it lies about.
    node, _, _, block = _setting()
    q = _index(node, 1)
    node.handle(10, Tick())
    cmds = _deliver(node, Proposal(1, 1, -1, block), KEYS[q])  # block says round 0, proposer p
    assert _prevotes(cmds) == [] and 1 not in node.machine.proposals
    with pytest.raises(InvalidBlock, match="fresh proposal of round 1"):
        check_proposal(1, -1, block)
    with pytest.raises(InvalidBlock, match="re-proposal with valid round 0"):
        check_proposal(2, 0, _forge(block, round=1))
    check_proposal(2, 0, block)  # a re-proposal keeps its maker's header


def test_check_block_pins_the_header_proposer_to_the_proposer_of_the_header_round() -> None:
    node, p, _, block = _setting()
    tip = node._tip()
    check_block(tip, block, node.evidence, node.verifier)
    q = _index(node, 1)
    assert q != p  # equal stakes rotate
    with pytest.raises(InvalidBlock, match="names a proposer other than that round's"):
        check_block(tip, _forge(block, proposer=KEYS[q].public), node.evidence, node.verifier)
    with pytest.raises(InvalidBlock, match="names a proposer other than that round's"):
        check_block(tip, _forge(block, round=1), node.evidence, node.verifier)  # p does not lead round 1
    check_block(tip, _forge(block, round=1, proposer=KEYS[q].public), node.evidence, node.verifier)
    with pytest.raises(InvalidBlock, match="beyond round"):  # no proposer schedule for round 2**31
        check_block(tip, _forge(block, round=2**31), node.evidence, node.verifier)


def _certify(block: Block, round_: int = 0) -> CommittedBlock:
    h = block_hash(block)
    votes = [sign_vote(CHAIN, Vote(block.height, round_, VoteType.PRECOMMIT, h, k.public), k.sign)
             for k in KEYS]
    return CommittedBlock(block, make_certificate(block.height, round_, h, votes))


def test_block_sync_refuses_a_certified_block_that_names_the_wrong_proposer() -> None:
    # Even with precommits of every validator (beyond the fault model), a synced block
    # must name its round's proposer: every honest node checks the same header rule.
    node, p, _, block = _setting()
    observer = _node(None)
    forged = _forge(block, proposer=KEYS[(p + 1) % 4].public)
    observer.handle(20, MessageReceived(DIRECT, KEYS[p].public, BlockResponse((_certify(forged),)), b""))
    assert observer.height == 1
    observer.handle(20, MessageReceived(DIRECT, KEYS[p].public, BlockResponse((_certify(block),)), b""))
    assert observer.height == 2  # the honest block with the same certificate shape applies
    with pytest.raises(InvalidBlock, match="committed in round 0"):
        check_committed(node._tip(), _forge(block, round=3), _certify(_forge(block, round=3)).commit,
                        node.verifier)


def test_a_locked_validator_re_sends_its_locked_proposal_and_its_proof_of_lock_at_each_new_round() -> None:
    # Lock splitting (issue 17): the others may never have seen the block we locked on.
    node, p, me, block = _setting()
    proposal = seal(Proposal(1, 0, -1, block), KEYS[p], CHAIN)
    _deliver(node, Proposal(1, 0, -1, block), KEYS[p])
    others = [i for i in range(4) if i not in (p, me)]
    prevotes = [seal(Vote(1, 0, VoteType.PREVOTE, block_hash(block), KEYS[i].public), KEYS[i], CHAIN)
                for i in (p, others[0])]
    for i in (p, others[0]):
        _deliver(node, Vote(1, 0, VoteType.PREVOTE, block_hash(block), KEYS[i].public), KEYS[i])
    assert node.machine.locked_round == 0
    cmds: list[Command] = []
    for i in (p, *others):  # nil precommits: round 0 fails, round 1 starts at once
        cmds += _deliver(node, Vote(1, 0, VoteType.PRECOMMIT, None, KEYS[i].public), KEYS[i], now=20)
    assert node.machine.round == 1
    sent = [c.msg for c in cmds if isinstance(c, Publish)]
    assert proposal in sent and all(pv in sent for pv in prevotes)


def test_a_peer_that_claims_heights_it_never_serves_does_not_stop_us_asking_the_others() -> None:
    # future_spam sends a status 1000 heights ahead every 200 ms and answers nothing; with
    # one retry interval for all peers it took every turn, and a node that fell behind could
    # not ask an honest peer for blocks. The interval is per peer now.
    def asked(cmds: list[Command]) -> list[bytes]:
        return [c.peer for c in cmds if isinstance(c, SendTo) and isinstance(c.msg, BlockRequest)]

    node = _node(0)
    liar, honest = KEYS[1], KEYS[2]
    # Since issue 11.3 a claim to be ahead must carry a certificate signed by more than 1/3
    # of our validators before we ask for blocks: the liar's bare claims get nothing.
    assert asked(_deliver(node, Status(1000, b"\x07" * 32), liar, now=10)) == []
    head = b"\x08" * 32
    cert = make_certificate(2, 0, head, [
        sign_vote(CHAIN, Vote(2, 0, VoteType.PRECOMMIT, head, k.public), k.sign) for k in KEYS[1:3]])
    assert asked(_deliver(node, Status(2, head, cert), liar, now=20)) == [liar.public]
    assert asked(_deliver(node, Status(2, head, cert), liar, now=500)) == []  # once per interval
    assert asked(_deliver(node, Status(2, head, cert), honest, now=600)) == [honest.public]


def test_with_2f_plus_1_prevotes_but_no_proof_of_lock_a_node_re_sends_its_prevote_to_pull_lost_ones() -> None:
    # The peers that already hold our prevote answer with their votes of the round, so a
    # prevote lost on the way to us comes back before the prevote timeout (issue 17, spam).
    node, p, me, block = _setting()
    h = block_hash(block)
    _deliver(node, Proposal(1, 0, -1, block), KEYS[p])  # we prevote the block
    _deliver(node, Vote(1, 0, VoteType.PREVOTE, h, KEYS[p].public), KEYS[p])
    nil_voter = next(i for i in range(4) if i not in (p, me))
    cmds = _deliver(node, Vote(1, 0, VoteType.PREVOTE, None, KEYS[nil_voter].public), KEYS[nil_voter])
    ours = {(c.peer, c.msg) for c in cmds if isinstance(c, SendTo) and isinstance(c.msg, Vote)}
    mine = Vote(1, 0, VoteType.PREVOTE, h, KEYS[me].public)
    assert ours == {(KEYS[i].public, mine) for i in range(4) if i != me}  # 3 of 4 in, 2 for the block
    peer = _node(p)  # round 0's proposer: it proposed this block and prevoted it at Tick
    ours_again = Vote(1, 0, VoteType.PREVOTE, h, KEYS[me].public)

    def answers(cmds: list[Command]) -> list[object]:
        return [c.msg for c in cmds if isinstance(c, SendTo) and c.peer == KEYS[me].public]

    assert answers(_deliver(peer, ours_again, KEYS[me])) == []  # the first copy is just counted
    assert answers(_deliver(peer, ours_again, KEYS[me])) == [Vote(1, 0, VoteType.PREVOTE, h, KEYS[p].public)]
    assert answers(_deliver(peer, ours_again, KEYS[me])) == []  # once per peer, round and type


def test_a_node_with_its_proof_of_lock_asks_for_nothing() -> None:
    node, p, me, block = _setting()
    h = block_hash(block)
    _deliver(node, Proposal(1, 0, -1, block), KEYS[p])
    _deliver(node, Vote(1, 0, VoteType.PREVOTE, h, KEYS[p].public), KEYS[p])
    other = next(i for i in range(4) if i not in (p, me))
    cmds = _deliver(node, Vote(1, 0, VoteType.PREVOTE, h, KEYS[other].public), KEYS[other])
    sent = [c.msg for c in cmds if isinstance(c, (Publish, SendTo)) and isinstance(c.msg, Vote)]
    assert [v.vote_type for v in sent] == [VoteType.PRECOMMIT]  # line 36 at once, no re-sent prevote
