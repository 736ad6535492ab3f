"""Stage 7 on the ledger: the bisection game's moves, deadlines and the arbitration tally.

The disputed segment is flattened into positions (step x operation): position
`p = i * ops_per_step + j` is the digest a party holds before op j of the segment's step
i (j = 0: the state hash at the step boundary, from protocol/pol's `state_hash`; j > 0:
the op-chain value after op j-1, pol's `chain_values`). The defender opens each game
with the segment's two committed checkpoint leaves and their Merkle membership proofs
against the task's proof root (`GameOpen`, checked here), which fixes the digests at
position 0 and at the segment's end to what was committed before anyone was elected to
look. Each round both parties post their own digest at the midpoint (defender first);
the ledger compares them and keeps the half where they first differ, so after
ceil(log2(k * ops)) rounds (at most ceil(log2 k) + ceil(log2 ops)) one operation is
left: validators re-execute it from the agreed input digest and vote. A party that
misses a move's deadline loses the game (see `protocol.market.blocks`).

The ledger only sequences moves, checks the Merkle proofs, enforces turns and deadlines,
and counts stake; the digests come from the parties' real traces (node/compute's
`TorchSource`, or pol's `SyntheticRun` in sweeps). Accusers are played one at a time so
a solver cannot escape by staging a weak accuser: it must beat every one of them.
"""

from __future__ import annotations

from protocol.market.errors import BadProof, NotAuthorized, OutOfBounds, WrongStage
from protocol.market.settle import settle
from protocol.market.state import Game, MarketState, Status, Task, Turn
from protocol.market.txs import GameOpen
from protocol.pol.merkle import CheckpointLeaf, MerkleProof, leaf_hash, verify_inclusion
from protocol.pol.ops import state_hash


def positions(task: Task) -> int:
    return task.checkpoint_interval * task.ops_per_step


def max_rounds(task: Task) -> int:
    """ceil(log2(k * ops)): never more than ceil(log2 k) + ceil(log2 ops)."""
    return (positions(task) - 1).bit_length()


def start_next_game(state: MarketState, task: Task) -> bool:
    """Open a game against the next accuser in the queue; False when none is left."""
    if not task.accusers:
        return False
    accuser = task.accusers.pop(0)
    task.game = Game(accuser, _segment_of(task, accuser), 0, positions(task), b"", b"")
    _set_stage(state, task, Status.DISPUTE, state.params.move_blocks)
    return True


def apply_open(state: MarketState, task: Task, sender: bytes, tx: GameOpen) -> None:
    game = task.game
    # Rule: only the defender opens, once, before any bisection move.
    if game is None or game.opened or sender != task.solver or game.turn != Turn.DEFENDER:
        raise NotAuthorized("not the defender, or the game is already open")
    assert task.proof_root is not None  # a game needs a committed proof
    k = task.checkpoint_interval
    start_step, end_step = game.segment * k, min((game.segment + 1) * k, task.steps)
    # Rule: the leaves are the segment's two checkpoints, each proven in the committed tree.
    _check_leaf(task, task.proof_root, tx.start, tx.start_proof, game.segment, start_step)
    _check_leaf(task, task.proof_root, tx.end, tx.end_proof, game.segment + 1, end_step)
    game.lo_hash = state_hash(tx.start.weights_hash, tx.start.optimizer_hash)
    game.hi_hash = state_hash(tx.end.weights_hash, tx.end.optimizer_hash)
    game.opened = True
    task.deadline = state.height + state.params.move_blocks
    if game.hi - game.lo <= 1:
        _to_arbitration(state, task)


def _check_leaf(task: Task, root: bytes, leaf: CheckpointLeaf, proof: MerkleProof, index: int,
                step: int) -> None:
    if proof.index != index or proof.size != task.n_segments + 1:
        raise BadProof(f"proof for leaf {proof.index} of {proof.size}, need {index} of {task.n_segments + 1}")
    if leaf.step != step:
        raise BadProof(f"checkpoint at step {leaf.step}, the segment needs step {step}")
    if not verify_inclusion(root, leaf_hash(leaf), proof):
        raise BadProof("checkpoint is not in the committed proof")


def _segment_of(task: Task, accuser: bytes) -> int:
    for slot in task.verifiers:
        if slot.pubkey == accuser and slot.verdict is not None:
            return slot.verdict.segment
    for challenge in task.challenges:
        if challenge.challenger == accuser:
            return challenge.segment
    return 0


def _set_stage(state: MarketState, task: Task, status: Status, blocks: int) -> None:
    task.status = status
    task.stage_since = state.height
    task.deadline = state.height + blocks


def _check_move(task: Task, rnd: int, turn: Turn, sender: bytes) -> Game:
    game = task.game
    if game is None:
        raise WrongStage("no game in progress")
    party = task.solver if turn == Turn.DEFENDER else game.accuser
    # Rule: only the party whose turn it is moves.
    if game.turn != turn or sender != party:
        raise NotAuthorized("not this party's move")
    # Rule: the move is for the current round (no replays of old rounds).
    if rnd != game.round:
        raise OutOfBounds(f"move for round {rnd}, game is at round {game.round}")
    return game


def apply_claim(state: MarketState, task: Task, sender: bytes, rnd: int, digest: bytes) -> None:
    game = _check_move(task, rnd, Turn.DEFENDER, sender)
    # Rule: bisection starts from the committed checkpoints.
    if not game.opened:
        raise WrongStage("the defender must open the game with its checkpoints first")
    game.mid_hash = digest
    game.turn = Turn.ACCUSER
    task.deadline = state.height + state.params.move_blocks


def apply_reply(state: MarketState, task: Task, sender: bytes, rnd: int, digest: bytes) -> None:
    game = _check_move(task, rnd, Turn.ACCUSER, sender)
    assert game.mid_hash is not None  # the defender moved: turns alternate
    mid = (game.lo + game.hi) // 2
    if digest == game.mid_hash:
        game.lo, game.lo_hash = mid, game.mid_hash
    else:
        game.hi, game.hi_hash, game.accuser_hi = mid, game.mid_hash, digest
    game.mid_hash, game.turn, game.round = None, Turn.DEFENDER, game.round + 1
    if game.hi - game.lo <= 1:
        _to_arbitration(state, task)
    else:
        task.deadline = state.height + state.params.move_blocks


def _to_arbitration(state: MarketState, task: Task) -> None:
    _set_stage(state, task, Status.ARBITRATION, state.params.arbitration_blocks)


def apply_vote(state: MarketState, task: Task, sender: bytes, rnd: int, defender_right: bool) -> None:
    game = task.game
    if game is None:
        raise WrongStage("no game in progress")
    power = state.validators.get(sender, 0)
    # Rule: only current validators vote, once per game.
    if power == 0 or sender in game.votes:
        raise NotAuthorized("not a validator, or already voted")
    # Rule: the vote is for this game's final round.
    if rnd != game.round:
        raise OutOfBounds(f"vote for round {rnd}, game ended at round {game.round}")
    game.votes[sender] = defender_right
    decision = tally(state.validators, game.votes)
    if decision is not None:
        finish_game(state, task, defender_won=decision)


def tally(validators: dict[bytes, int], votes: dict[bytes, bool]) -> bool | None:
    """The side with more than 2/3 of all validator power, or None while neither has it."""
    total = sum(validators.values())
    for side in (True, False):
        power = sum(validators.get(v, 0) for v, choice in votes.items() if choice == side)
        if 3 * power > 2 * total:
            return side
    return None


def finish_game(state: MarketState, task: Task, *, defender_won: bool, proved: bool = True) -> None:
    """A game ended: a lost defender decides the task; a lost accuser hands over to the next.

    `proved` is False when the game ended by the defender's silence: the solver is still a
    cheat (it could not defend its own proof), but nothing was shown about the accuser's
    claim or the segment, so the accuser is not the one who proved it (a challenger that
    never checked anything would otherwise be paid for a solver's silence) and no ACCEPT
    is judged on that segment (an honest check of a good segment must not be slashed
    because a cheating solver went quiet in a game about it)."""
    game, task.game = task.game, None
    if game is not None and defender_won:
        task.lost.append(game.accuser)
    if not defender_won:
        task.proof_valid = False
        if game is not None and proved:
            task.bad_segment, task.winner = game.segment, game.accuser
        settle(state, task)
        return
    if not start_next_game(state, task):
        task.proof_valid = True
        settle(state, task)
