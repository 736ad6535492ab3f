"""`polnet swarm up --attack NAME` and `--perturb kill,pause,disconnect`.

`--attack` funds an attacker account in the swarm's genesis (a balance, no stake) and,
once every node is up, runs `python -m node.adversary` against all of them for the
whole run: a stock py-libp2p host with its own key, speaking our signed envelopes, doing
one attack of node/adversary/attacks.py. `--perturb` injects CometBFT's faults into the
running swarm in turn, on nodes 1..N-1 (node 0 is the one the market view reads):
`kill` is kill -9 and an immediate restart, `pause` SIGSTOP for 10 s, `disconnect` the
node's own isolation switch (POST /net/isolate) for 10 s.

The report gets a `faults` section: the perturbations done, whether the attacker was
banned, and every ban of an honest node (from the nodes' logs), which makes the run
fail. The rest of the verdict is swarm up's own: one chain (the same block at the
common height), the supply and market audits, every task ended, no honest stake lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node.adversary.attacks import ATTACKS
from node.adversary.harness import AttackerProc, fund_in_genesis
from node.adversary.perturb import KINDS, Perturber
from node.daemon.blobdir import BlobDir
from node.datadir import DataDir
from protocol.errors import ConfigError
from protocol.identity import Keypair

#: The blob slow readers ask for (put in every node's blob directory before start).
SLOW_BLOB_BYTES = 32 * 1024 * 1024
FAULT_EVERY_S = 30.0
FAULT_DOWN_S = 10.0
FAULTS_START_AFTER_S = 15.0
HTTP_TIMEOUT_S = 3.0
_BAN = "banning peer "

Spawn = Callable[[DataDir], "subprocess.Popen[bytes]"]


class _NodeTarget:
    """A swarm node (cli/swarm_cmd.SwarmNode) as a node.adversary.perturb.Target."""

    def __init__(self, node: Any, spawn: Spawn) -> None:
        self.node = node
        self.index: int = node.index
        self._spawn = spawn

    def kill(self) -> None:
        """kill -9, then restart at once (CometBFT's "kill"; a node swarm up sees exit
        for longer than that counts as a failure of the run)."""
        self.node.proc.kill()
        self.node.proc.wait()
        self.restart()

    def restart(self) -> None:
        if self.node.proc.poll() is None:
            return  # already running again
        self.node.proc = self._spawn(self.node.datadir)
        self.node.admin = None  # the new process writes new endpoints

    def pause(self) -> None:
        self.node.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.node.proc.send_signal(signal.SIGCONT)

    def isolate(self, seconds: float) -> None:
        if self.node.admin is None:
            return
        req = urllib.request.Request(f"{self.node.admin}/net/isolate", method="POST",
                                     data=json.dumps({"seconds": seconds}).encode())
        try:
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
                resp.read()
        except OSError:
            pass  # a node too busy to answer is not isolated; the report says what was done


class SwarmFaults:
    def __init__(self, attack: str, perturb: str, root: Path, chain_id: str, spawn: Spawn) -> None:
        if attack and attack not in ATTACKS:
            raise ConfigError(f"--attack must be one of {', '.join(ATTACKS)}, got {attack!r}")
        kinds = [k.strip() for k in perturb.split(",") if k.strip()]
        bad = [k for k in kinds if k not in KINDS]
        if bad:
            raise ConfigError(f"--perturb takes a comma list of {', '.join(KINDS)}, got {', '.join(bad)}")
        self.attack = attack
        self.kinds = kinds
        self.root = root
        self.chain_id = chain_id
        self._spawn = spawn
        self.key = Keypair.from_seed(os.urandom(32)) if attack else None
        self._blob = ""
        self._attacker: AttackerProc | None = None
        self._perturber: Perturber | None = None
        self._attack_error: str | None = None

    def prepare(self, dirs: list[DataDir]) -> None:
        """Before the nodes start: fund the attacker, give the nodes the blob to read slowly."""
        if self.key is not None:
            fund_in_genesis(dirs, [self.key])
        if self.attack == "slow-blobs":
            blob = bytes(range(256)) * (SLOW_BLOB_BYTES // 256)
            for dd in dirs:
                digest = BlobDir(dd.blobs).put(blob)
            self._blob = f"{digest.hex()}:{len(blob)}"

    def start(self, nodes: list[Any], duration_s: float) -> None:
        """Once every node is up."""
        if self.key is not None:
            addrs = [p for n in nodes for p in (n.last.get("endpoints") or {}).get("p2p", [])[:1]]
            log = self.root / "attacker.log"
            self._attacker = AttackerProc(self.key, self.chain_id, addrs, self._blob, log=log)
            self._attacker.run(self.attack, duration_s)
        if self.kinds:
            targets = [_NodeTarget(n, self._spawn) for n in nodes[1:]]
            self._perturber = Perturber(targets, self.kinds, every_s=FAULT_EVERY_S, down_s=FAULT_DOWN_S,
                                        start_after_s=FAULTS_START_AFTER_S, max_faults=2 * len(self.kinds))

    def tick(self) -> None:
        if self._perturber is not None:
            self._perturber.tick(time.monotonic())

    def close(self) -> None:
        """Before the final report: heal what is broken, stop the attacker."""
        if self._perturber is not None:
            self._perturber.finish(time.monotonic())
        if self._attacker is not None:
            self._attacker.stop()

    def report(self, nodes: list[Any]) -> dict[str, Any]:
        ids = {str(n.last.get("node_id", "")): n.index for n in nodes if n.last.get("node_id")}
        honest: list[list[int]] = []
        banned_attacker = False
        for n in nodes:
            for banned in _bans(n.datadir):
                if banned in ids:
                    honest.append([n.index, ids[banned]])
                elif self.key is not None and banned == self.key.node_id:
                    banned_attacker = True
        out: dict[str, Any] = {"honest_bans": honest}
        if self.attack:
            out.update(attack=self.attack, attacker=self.key.node_id if self.key else None,
                       attacker_banned=banned_attacker)
        if self._perturber is not None:
            out["perturbations"] = self._perturber.report()
        return out

    @staticmethod
    def problem(report: dict[str, Any]) -> str | None:
        faults = report.get("faults") or {}
        if faults.get("honest_bans"):
            return f"honest nodes were banned (banner, banned): {faults['honest_bans']}"
        return None


def _bans(dd: DataDir) -> list[str]:
    """Peer ids a node logged banning (node.transport: "banning peer <id> (score ...)")."""
    try:
        text = (dd.root / "node.log").read_text(errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        at = line.find(_BAN)
        if at >= 0:
            out.append(line[at + len(_BAN):].split(" ", 1)[0].strip('"'))
    return out
