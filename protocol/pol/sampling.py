"""Which segments a verifier re-executes, and when a re-execution counts as a match.

The seed is derived from the beacon *after* the proof root is on the ledger, so a solver
cannot know which segments will be checked while it decides where to cut corners. The
last segment is always checked: it produced the model the submitter receives, and
every shortcut that saves real work (truncation, skipped or interpolated steps, noise
on the delivered weights, copied checkpoints) shows there. Random segments on top catch
cheats confined to the middle with probability ~ count/segments per verifier.
"""

from __future__ import annotations

import math

from protocol.encoding import sha256
from protocol.errors import ValidationError

SEED_DOMAIN = b"polnet/pol/segments/v1\x00"
#: Default share of segments a verifier re-executes (last one included).
DEFAULT_SAMPLE_FRACTION = 1 / 32
MIN_SAMPLES = 2
#: Profiling noise times this is the threshold: honest reruns stay far below it.
THRESHOLD_SAFETY_FACTOR = 10.0
#: A profile is usable when the smallest real-difference distance (another seed) is at
#: least this many thresholds away; otherwise the task cannot be verified by distance.
MIN_SEPARATION = 10.0
#: Relative tolerance of one operation's output at arbitration when the profile is not
#: bit-reproducible (float32 reduction-order noise is ~1e-7 relative per op).
OP_REL_TOLERANCE = 1e-4


def sample_seed(beacon: bytes, proof_root: bytes, verifier: bytes) -> bytes:
    """Per-verifier seed: verifiers check different segments, none known before commit."""
    return sha256(SEED_DOMAIN + beacon + proof_root + verifier)


def sample_count(num_segments: int, fraction: float = DEFAULT_SAMPLE_FRACTION) -> int:
    if num_segments < 1:
        raise ValidationError("no segments to sample")
    return min(num_segments, max(MIN_SAMPLES, math.ceil(num_segments * fraction)))


def _draw(seed: bytes, counter: int, bound: int) -> int:
    """Uniform integer below `bound` from the seed (bound <= 2**32, so bias < 2**-32)."""
    return int.from_bytes(sha256(seed + counter.to_bytes(8, "big")), "big") % bound


def choose_segments(seed: bytes, num_segments: int, count: int) -> tuple[int, ...]:
    """The last segment plus count-1 distinct others, sorted; deterministic in the seed."""
    if not 1 <= count <= num_segments:
        raise ValidationError(f"cannot choose {count} of {num_segments} segments")
    chosen = {num_segments - 1}
    # Partial Fisher-Yates over the other segments: exactly count-1 draws, no retry loop.
    pool = list(range(num_segments - 1))
    for i in range(count - 1):
        j = i + _draw(seed, i, len(pool) - i)
        pool[i], pool[j] = pool[j], pool[i]
        chosen.add(pool[i])
    return tuple(sorted(chosen))


def escape_probability(num_segments: int, count: int, bad_segments: int) -> float:
    """Chance one verifier misses every bad segment (none of them the last one)."""
    others = num_segments - 1
    good = others - bad_segments
    if good < count - 1:
        return 0.0
    return math.comb(good, count - 1) / math.comb(others, count - 1)


def threshold_from_profile(noise: list[float], signal: list[float]) -> float:
    """Set a task's distance threshold from profiling reruns.

    `noise`: distances between reruns that differ only in what the profile allows
    (thread count); `signal`: distances to reruns with another seed (real differences).
    Zero when every rerun was bit-identical.
    """
    if not noise or any(not math.isfinite(d) or d < 0 for d in [*noise, *signal]):
        raise ValidationError("profiling produced no usable distances")
    worst = max(noise)
    if worst == 0.0:
        return 0.0
    threshold = worst * THRESHOLD_SAFETY_FACTOR
    if signal and min(signal) < threshold * MIN_SEPARATION:
        raise ValidationError(f"profile noise {worst:.3g} too close to real differences {min(signal):.3g}")
    return threshold


def segment_passes(distance: float, cosine: float, threshold: float) -> bool:
    """The verification rule: re-execution matches the claim within the task's threshold."""
    if not (math.isfinite(distance) and math.isfinite(cosine)):
        return False
    if threshold == 0.0:
        return distance == 0.0
    # The claimed update must both be close and point the same way as the re-executed one.
    return distance <= threshold and cosine >= 1.0 - threshold


def op_tolerance(threshold: float) -> float:
    """Per-operation tolerance for the referee: exact when the profile is bit-reproducible."""
    return 0.0 if threshold == 0.0 else OP_REL_TOLERANCE
