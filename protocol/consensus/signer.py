"""The validator's own signing record (Tendermint's "privval"): never two votes for one
position.

A restarted validator that forgot what it signed could sign a different vote for the
same (height, round, type) and be slashed for equivocating. So every vote is recorded
(and persisted by the node, before the vote is sent) and a later request to sign the same
position returns the recorded vote or nothing.
"""

from __future__ import annotations

from protocol.encoding import pack, unpack
from protocol.identity import Keypair
from protocol.records import decode_record, encode_record

from .votes import SignedVote, Vote, sign_vote

Position = tuple[int, int, int]  # (height, round, vote type)


def position(vote: Vote) -> Position:
    return (vote.height, vote.round, int(vote.vote_type))


class VoteSigner:
    """Signs and remembers this node's votes of the current height (bounded by rounds x 2)."""

    def __init__(self, chain_id: str, key: Keypair | None) -> None:
        self._chain_id = chain_id
        self._key = key
        self._votes: dict[Position, SignedVote] = {}

    def sign(self, vote: Vote) -> SignedVote | None:
        """The signed vote, or None when a *different* vote was signed for its position."""
        if self._key is None:
            return None
        prior = self._votes.get(position(vote))
        if prior is not None:
            return prior if prior.vote == vote else None
        signed = sign_vote(self._chain_id, vote, self._key.sign)
        self._votes[position(vote)] = signed
        return signed

    def votes(self, min_round: int = 0) -> list[SignedVote]:
        """Our votes from `min_round` on, in position order (for rebroadcasts)."""
        return [sv for pos, sv in sorted(self._votes.items()) if pos[1] >= min_round]

    def votes_of_round(self, round_: int) -> list[SignedVote]:
        return [sv for pos, sv in sorted(self._votes.items()) if pos[1] == round_]

    def new_height(self) -> None:
        self._votes = {}

    def dump(self) -> bytes:
        return pack([encode_record(v) for v in self._votes.values()])

    def load(self, blob: bytes, height: int) -> None:
        """Reload what we signed at `height` (older votes can no longer matter)."""
        for item in unpack(blob):
            sv = decode_record(SignedVote, item)
            if sv.vote.height == height:
                self._votes[position(sv.vote)] = sv
