"""Seeded random streams, one per purpose.

A single `random.Random(seed)` shared by everything would make the network's draws
depend on how many nemesis draws happened before, so adding a fault would reshuffle
every latency. Each purpose gets its own stream derived from (seed, purpose) through
SHA-256 instead, which keeps unrelated parts of a run stable when one part changes.
"""

from __future__ import annotations

import random

from protocol.encoding import sha256


def substream(seed: int, purpose: str) -> random.Random:
    """An independent, reproducible RNG for `purpose` under `seed`."""
    digest = sha256(f"netsim/rng/v1\x00{seed}\x00{purpose}".encode())
    return random.Random(int.from_bytes(digest, "big"))
