"""Consensus bounds, named in one place.

Every collection consensus keeps or accepts from a peer has one of these as its cap, so
a hostile validator can cost memory only up to a known amount.
"""

from __future__ import annotations

#: Largest committee (Tendermint's default cap is of the same order).
MAX_VALIDATORS = 256
#: Transactions per block, and bytes per transaction.
MAX_BLOCK_TXS = 2048
MAX_TX_BYTES = 16 * 1024
#: Total transaction bytes per block, below the 1 MiB envelope cap with room for the header
#: and the last commit certificate (256 x ~100 bytes).
MAX_BLOCK_TX_BYTES = 768 * 1024
#: Evidence records per block.
MAX_BLOCK_EVIDENCE = 32
#: Blocks per block-sync response (each up to ~1 MiB is too much for one message, so the
#: responder also stops early by size).
MAX_SYNC_BATCH = 16
#: Bytes of blocks a single sync response may carry.
MAX_SYNC_RESPONSE_BYTES = 900 * 1024
#: How many rounds ahead of ours we keep votes for (round-skip needs some, a flood none).
MAX_FUTURE_ROUNDS = 8
#: Highest round a consensus message may name. Each round's timeouts grow, so a real
#: height never gets near it; without a bound, a vote for round 2**32 made a node compute
#: the proposer schedule round by round up to it (hypothesis found the stall).
MAX_ROUND = 4096
#: How many heights ahead of ours consensus messages are buffered (the next height's
#: messages often arrive before we commit ours; further ahead we catch up by block sync).
MAX_FUTURE_HEIGHTS = 2
#: Buffered future consensus messages per sender (3 per round: proposal, prevote,
#: precommit, over the round window, for each buffered height), and their bytes (a
#: proposal is up to one envelope), so one validator cannot evict another's messages.
MAX_FUTURE_PER_SENDER = 3 * (MAX_FUTURE_ROUNDS + 1) * MAX_FUTURE_HEIGHTS
MAX_FUTURE_SENDER_BYTES = 4 * 1024 * 1024
#: All buffered future messages together, in bytes.
MAX_FUTURE_BYTES = 64 * 1024 * 1024
#: Evidence older than this many heights is no longer accepted (bounds the
#: committed-evidence memory and matches an unbonding period that is longer).
MAX_EVIDENCE_AGE = 1000
#: Pending evidence kept for inclusion.
MAX_PENDING_EVIDENCE = 256
#: Relevance windows (protocol/consensus/relevance.py). Votes more than this many heights
#: below the one being decided are stale (the previous height's still prove equivocation).
STALE_VOTE_HEIGHTS = 1
#: A Status this many heights or more above ours, from a non-validator, is not acted on.
FAR_AHEAD_HEIGHTS = 2
