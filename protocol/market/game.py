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
left. The defender then reveals the digests behind the agreed position (the step's
state and every earlier op output of the step) and its claim for the op's outputs
(`GameReveal`); the ledger checks by hashing alone that they open the agreed digest and
chain to the defender's own digest at the next position, so the op's inputs are fixed
by what both sides agreed to. Validators fetch exactly those input tensors by digest,
re-execute that one operation, and vote. A party that misses a move's deadline (the
reveal included) loses the game (see `protocol.market.blocks`).

The ledger only sequences moves, checks the Merkle proofs, enforces turns and deadlines,
and counts stake; the digests come from the parties' real traces (node/compute's
`TorchSource`, or pol's `SyntheticRun` in sweeps). Accusers are played one at a time so
a solver cannot escape by staging a weak accuser: it must beat every one of them.
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol.market.errors import BadProof, BadReveal, NotAuthorized, OutOfBounds, WrongStage
from protocol.market.settle import settle
from protocol.market.stages import enter, extend
from protocol.market.state import Game, GameKind, MarketState, Reveal, Status, Task, Turn
from protocol.market.txs import GameOpen, GameReveal
from protocol.pol.merkle import CheckpointLeaf, MerkleProof, leaf_hash, verify_inclusion
from protocol.pol.ops import chain_next, chain_start, chain_values, group_hash, op_digest, state_hash

Digests = tuple[bytes, ...]


def positions(task: Task) -> int:
    return task.checkpoint_interval * task.ops_per_step


def max_rounds(task: Task) -> int:
    """ceil(log2(k * ops)): never more than ceil(log2 k) + ceil(log2 ops)."""
    return (positions(task) - 1).bit_length()


def start_next_game(state: MarketState, task: Task) -> bool:
    """Open a game against the next accuser in the queue; False when none is left.

    An accuser whose verdict says it could not fetch its segment plays no bisection: the
    validators try to fetch the segment themselves and vote on whether the solver serves
    it (a disconnected verifier's poor connectivity is not evidence of a cheat)."""
    if task.is_crew:
        return _start_crew_game(state, task)
    if not task.accusers:
        return False
    accuser = task.accusers.pop(0)
    if _unavailable_verdict(task, accuser):
        task.game = Game(accuser, _segment_of(task, accuser), 0, 1, b"", b"", kind=GameKind.AVAILABILITY)
        enter(state, task, Status.ARBITRATION, state.params.arbitration_blocks)
        return True
    task.game = Game(accuser, _segment_of(task, accuser), 0, positions(task), b"", b"")
    enter(state, task, Status.DISPUTE, state.params.move_blocks)
    return True


def _start_crew_game(state: MarketState, task: Task) -> bool:
    """A crew member's game: no bisection (a stage's step is not written as an op chain
    yet), the validators re-execute the member's sampled segments themselves. Accusers
    of a member already convicted have nothing left to show and are skipped."""
    while task.accusers:
        accuser = task.accusers.pop(0)
        rank = _segment_of(task, accuser)
        if rank < len(task.crew) and task.crew[rank] not in task.convicted:
            task.game = Game(accuser, rank, 0, 1, b"", b"", kind=GameKind.CREW)
            enter(state, task, Status.ARBITRATION, state.params.arbitration_blocks)
            return True
    return False


def _unavailable_verdict(task: Task, accuser: bytes) -> bool:
    return any(v.pubkey == accuser and v.verdict is not None and not v.verdict.available
               for v in task.verifiers)


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
    extend(state, task, state.params.move_blocks)
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
    extend(state, task, state.params.move_blocks)


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
        extend(state, task, state.params.move_blocks)


def _to_arbitration(state: MarketState, task: Task) -> None:
    """One operation is left: the defender's reveal is due within one move's deadline."""
    assert task.game is not None
    task.game.turn = Turn.DEFENDER
    enter(state, task, Status.ARBITRATION, state.params.move_blocks)


def disputed_op(task: Task, game: Game) -> tuple[int, int]:
    """(step within the segment, op index within that step) of the one disputed op:
    the op that takes position `lo` to `lo + 1`."""
    return divmod(game.lo, task.ops_per_step)


def reveal_opens(task: Task, game: Game, tx: GameReveal) -> tuple[bool, str]:
    """Whether a reveal's digests open the agreed hash at `lo` (pure hashing; what the
    digests mean, and whether the claimed outputs are right, is for the validators)."""
    _, j = disputed_op(task, game)
    if len(tx.prefix) != j:
        return False, f"the prefix lists {len(tx.prefix)} ops, the disputed op is op {j} of its step"
    if agreed_digest(tx.weights, tx.optimizer, [o.digests for o in tx.prefix]) != game.lo_hash:
        return False, "the revealed digests do not open the agreed hash"
    return True, ""


def agreed_digest(weights: Digests, optimizer: Digests, prefix: Sequence[Digests]) -> bytes:
    """The game digest at a position, from the digests behind it: the step's state hash
    (no earlier op), else the op-chain value after the last listed op."""
    start = state_hash(group_hash(weights), group_hash(optimizer))
    return chain_values(start, list(prefix))[-1] if prefix else start


def next_digest(ops_per_step: int, j: int, weights: Digests, optimizer: Digests, prefix: Sequence[Digests],
                outputs: Digests) -> bytes:
    """The game digest one position after the digests behind it, if op `j` of the step
    outputs `outputs` (the last op of a step, STATE, yields the next step's state hash
    itself). Validators compare this, for the outputs they re-executed, with the
    defender's own digest at that position."""
    claim = op_digest(outputs)
    if j == ops_per_step - 1:
        return claim
    start = state_hash(group_hash(weights), group_hash(optimizer))
    before = chain_values(start, list(prefix))[-1] if prefix else chain_start(start)
    return chain_next(before, claim)


def apply_reveal(state: MarketState, task: Task, sender: bytes, tx: GameReveal) -> None:
    game = task.game
    # Rule: only the defender reveals, once per game, in a bisection game.
    if game is None or sender != task.solver or game.reveal is not None or game.kind != GameKind.BISECT:
        raise NotAuthorized("not the defender, or already revealed")
    # Rule: the reveal is for the game's final round.
    if tx.round != game.round:
        raise OutOfBounds(f"reveal for round {tx.round}, game ended at round {game.round}")
    # Rule: the digests open the agreed position (the op's inputs are then fixed).
    ok, why = reveal_opens(task, game, tx)
    if not ok:
        raise BadReveal(why)
    game.reveal = Reveal(tx.weights, tx.optimizer, tuple(o.digests for o in tx.prefix), tx.claimed.digests)
    extend(state, task, state.params.arbitration_blocks)


def apply_vote(state: MarketState, task: Task, sender: bytes, rnd: int, defender_right: bool) -> None:
    game = task.game
    if game is None:
        raise WrongStage("no game in progress")
    power = state.validators.get(sender, 0)
    # Rule: only current validators vote, once per game.
    if power == 0 or sender in game.votes:
        raise NotAuthorized("not a validator, or already voted")
    # Rule: validators vote on a revealed operation only (its inputs are fixed by then);
    # on availability they vote once they tried to fetch the segment themselves.
    if game.kind == GameKind.BISECT and game.reveal is None:
        raise WrongStage("the defender has not revealed the operation's inputs")
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
    if task.is_crew:
        _finish_crew_game(state, task, game, defender_won)
        return
    if not defender_won:
        task.proof_valid = False
        if game is not None and proved:
            task.bad_segment, task.winner = game.segment, game.accuser
        settle(state, task)
        return
    if not start_next_game(state, task):
        task.proof_valid = True
        settle(state, task)


def _finish_crew_game(state: MarketState, task: Task, game: Game | None, defender_won: bool) -> None:
    """A crew member who loses its game is convicted; the games go on, one per accuser,
    so every cheating member is found (each one's own verdict decides only its rank),
    and the crew is settled when none is left."""
    if game is not None and not defender_won:
        task.convicted.append(task.crew[game.segment])
        if task.winner is None:
            task.winner = game.accuser
    if not start_next_game(state, task):
        task.proof_valid = not task.convicted
        settle(state, task)
