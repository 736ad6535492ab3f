"""One member of a two-member crew, run inside a network namespace by
tests/test_crew_netns.py (`ip netns exec NS python -m tests.crew_netns_member ...`):
joins the crew's store at HOST:PORT with its gloo traffic bound to BIND, the address of
its namespace's own interface, and prints what it sent and received as one JSON line."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from node.compute import datasets
from node.compute.crew.launch import run_member
from node.compute.crew.model import ModelShape
from node.compute.crew.pipeline import CrewConfig
from protocol.identity import Keypair

CFG = CrewConfig(stages=2, shape=ModelShape(blocks=2, width=16, heads=2, context=16), micro_batch=4,
                 micro_batches=2, epochs=1, n_train=16, n_val=8, lr=3e-3, seed=4, bits=2, segment_steps=1)
KEYS = [Keypair.derive(f"crew-netns/{rank}") for rank in range(CFG.world)]
NAME = b"crew-netns-test"


def main(rank: int, host: str, port: int, bind: str) -> None:
    with tempfile.TemporaryDirectory(prefix="crew-netns-") as root:
        result = run_member(CFG, datasets.corpus().tokens, rank, host, port, KEYS[rank].seed(),
                            [k.public for k in KEYS], NAME, Path(root), deadline_s=240, timeout_s=60,
                            bind=bind)
    print(json.dumps({"rank": result.rank, "steps": len(result.losses) or len(result.step_seconds),
                      "sent": {str(k): [h.hex() for h in v] for k, v in result.sent.items()},
                      "received": {str(k): [h.hex() for h in v] for k, v in result.received.items()}}))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4])
