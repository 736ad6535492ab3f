"""CometBFT-style perturbations on real daemon processes: one validator of four is
SIGKILLed and restarted, another SIGSTOPped for 10 s, a third cut off for 10 s. The
network keeps one chain (the same block at every common height), every node catches
up, blocks keep coming, and nobody bans an honest node (itself included).

The market version of the same (every task terminal, supply audited, no honest stake
lost) is `polnet swarm up --tasks N --perturb kill,pause,disconnect` (cli/swarm_attacks.py).
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

from node.adversary.harness import LocalNet
from node.adversary.perturb import Perturber

#: The heaviest multi-process suites run one at a time (the Makefile runs xdist with
#: --dist loadgroup): two of them at once starved a 12-daemon network on a 2-core CI box.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600), pytest.mark.xdist_group("heavy-daemons")]


def _block_hash(admin: str, height: int) -> str:
    with urllib.request.urlopen(f"{admin}/block/{height}", timeout=5) as resp:
        return str(json.loads(resp.read())["hash"])


def test_kill_pause_and_disconnect_leave_one_live_chain_and_no_honest_ban(tmp_path: Path) -> None:
    net = LocalNet(tmp_path / "net", 4)
    with net:
        net.start()
        net.wait_height(3, 120)
        faults = Perturber(net.nodes[1:], ["kill", "pause", "disconnect"], every_s=20.0, down_s=10.0,
                           start_after_s=2.0, max_faults=3)
        start = max(net.live_heights())
        while not faults.done:
            faults.tick(time.monotonic())
            for d in net.nodes:  # a restarted node reports ready on its own
                if d.proc is not None and d.proc.poll() is None and d.admin is None:
                    d.ready()
            time.sleep(0.2)
        deadline = time.monotonic() + 30
        while not all(d.ready() for d in net.nodes):
            assert time.monotonic() < deadline, "the killed node did not come back"
            time.sleep(0.5)
        faulty_end = max(net.heights())
        net.wait_height(faulty_end + 5, 120)  # everyone caught up, and the chain goes on
        common = min(net.heights())
        hashes = {_block_hash(d.admin or "", h) for d in net.nodes for h in (common,)}
        history = {_block_hash(d.admin or "", start + 1) for d in net.nodes}
        bans = net.honest_bans()
    assert len(hashes) == 1 and len(history) == 1
    assert [f["kind"] for f in faults.report()] == ["kill", "pause", "disconnect"]
    assert not bans, bans
