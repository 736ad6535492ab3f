"""Tendermint-style BFT consensus as a sans-IO core.

Module map: `votes` (signed votes and commit certificates), `evidence` (equivocation),
`block` (block header and hash), `messages` (proposal and block-sync records),
`validators` (stake-weighted proposer rotation), `tendermint` (the round state machine of
Buchman, Kwon and Milosevic 2018), `mempool`, `sync` and `node` (the core a shell drives).
"""
