"""netsim throughput: simulated seconds per wall second for a gossip flood.

Run: .venv/bin/python bench/netsim.py
Prints, side by side in one run, the simulator's cost per event against a bare heap
push+pop and its deliveries per second against raw ed25519 verifies (each distinct
envelope is verified once, however many nodes receive it), then one JSON line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netsim.bench import flood, raw_heap_us, raw_verify_per_s

#: (nodes, simulated ms): sized so the whole bench takes well under a minute.
SIZES = ((16, 30_000), (64, 10_000), (256, 2_000))


def main() -> None:
    heap_us = raw_heap_us()
    verifies = raw_verify_per_s()
    results = {nodes: flood(nodes, sim_ms) for nodes, sim_ms in SIZES}
    print(f"raw heap push+pop: {heap_us:.2f} us; raw ed25519 verify: {verifies:,.0f}/s")
    header = (
        "nodes",
        "sim s",
        "wall s",
        "sim-s/wall-s",
        "us/event",
        "x raw heap",
        "deliveries/s",
        "x raw verify",
    )
    widths = (6, 6, 7, 13, 9, 10, 13, 12)
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, widths)))
    for r in results.values():
        speed = f"{r.sim_s_per_wall_s:>13.2f} {r.us_per_event:>9.1f} {r.us_per_event / heap_us:>10.1f}"
        delivery = f"{r.deliveries_per_wall_s:>13,.0f} {r.deliveries_per_wall_s / verifies:>12.2f}"
        print(f"{r.nodes:>6} {r.sim_s:>6.1f} {r.wall_s:>7.2f} {speed} {delivery}")
    mid = results[64]
    print(
        json.dumps(
            {
                "sim_s_per_wall_s": round(mid.sim_s_per_wall_s, 3),
                "sim_s_per_wall_s_16": round(results[16].sim_s_per_wall_s, 3),
                "sim_s_per_wall_s_256": round(results[256].sim_s_per_wall_s, 3),
                "us_per_event_64": round(mid.us_per_event, 2),
                "event_cost_vs_raw_heap": round(mid.us_per_event / heap_us, 2),
                "deliveries_per_s_vs_raw_verify": round(mid.deliveries_per_wall_s / verifies, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
