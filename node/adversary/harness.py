"""Real daemons and a real attacker, each its own process, on loopback.

`LocalNet` lays out N validator daemons (node.daemon.layout), adds the attacker's
account to the genesis (funded, not staked: a peer with money and no vote), starts
every daemon as `polnet node run` and reads what the checks need: heights, RSS, who
banned whom (the transport logs `banning peer <id>`). `AttackerProc` runs
`python -m node.adversary` against them. `measure` runs a window and returns the
honest nodes' block rate and peak RSS in it. The tests (tests/test_adversary_*.py),
bench/adversary.py and `polnet swarm up --attack` share this.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.daemon.blobdir import BlobDir
from node.daemon.layout import layout_localnet
from node.datadir import DataDir, write_atomic
from protocol.identity import Keypair

REPO = Path(__file__).resolve().parent.parent.parent
READY_TIMEOUT_S = 120.0
HTTP_TIMEOUT_S = 3.0
ATTACKER_BALANCE = 10_000_000
_BAN_LINE = re.compile(r"banning peer (\w+)")


def rss_kb(pid: int) -> int:
    """Resident set size of a process in kB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as resp:
        return json.loads(resp.read(4 * 1024 * 1024))


def fund_in_genesis(dirs: list[DataDir], keys: list[Keypair], balance: int = ATTACKER_BALANCE) -> None:
    """Give each key a balance (no stake) in every node's copy of the genesis, before start."""
    for dd in dirs:
        doc = json.loads(dd.genesis.read_text())
        doc["accounts"] += [{"pubkey": k.public.hex(), "balance": balance} for k in keys]
        write_atomic(dd.genesis, json.dumps(doc, indent=2).encode(), mode=0o644)


@dataclass
class Daemon:
    index: int
    dd: DataDir
    node_id: str
    proc: subprocess.Popen[bytes] | None = None
    admin: str | None = None
    p2p: list[str] = field(default_factory=list)

    def start(self) -> None:
        log = open(self.dd.root / "node.log", "ab")  # noqa: SIM115 - the child owns it
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.admin = None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "node", "run", "-d", str(self.dd.root)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"node {self.index} exited with {self.proc.returncode}: {self.log_tail()}")
        try:
            doc = json.loads(self.dd.endpoints.read_text())
        except (OSError, ValueError):
            return False
        if doc.get("pid") != self.proc.pid:
            return False
        self.admin, self.p2p = doc["admin"], list(doc["p2p"])
        return True

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = _get(f"{self.admin}/status")
        return doc

    def height(self, tries: int = 3) -> int:
        """The node's committed height; raises if the process died (a crash under attack
        is a finding, not a slow window)."""
        for _ in range(tries):
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"node {self.index} exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                return int(self.status()["height"])
            except (OSError, ValueError, KeyError):
                time.sleep(0.2)
        raise RuntimeError(f"node {self.index} did not answer /status {tries} times")

    def rss_kb(self) -> int:
        return 0 if self.proc is None else rss_kb(self.proc.pid)

    def banned(self) -> list[str]:
        """Peer ids this node has banned so far (from its log)."""
        try:
            return _BAN_LINE.findall((self.dd.root / "node.log").read_text(errors="replace"))
        except OSError:
            return []

    def log_tail(self, n: int = 2000) -> str:
        try:
            return (self.dd.root / "node.log").read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    # --- node.adversary.perturb.Target ---------------------------------------------------

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.start()

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def isolate(self, seconds: float) -> None:
        body = json.dumps({"seconds": seconds}).encode()
        req = urllib.request.Request(f"{self.admin}/net/isolate", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
            resp.read()

    def stop(self, timeout_s: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        self.signal(signal.SIGCONT)  # a paused node cannot stop
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


class LocalNet:
    def __init__(self, root: Path, n: int, chain_id: str = "polnet-adversary", block_interval_ms: int = 500,
                 attackers: list[Keypair] | None = None, blob: bytes | None = None) -> None:
        from node.daemon.keyfile import load_key_file

        self.root = root
        self.chain_id = chain_id
        dirs = layout_localnet(root, n, chain_id=chain_id, block_interval_ms=block_interval_ms)
        if attackers:
            fund_in_genesis(dirs, attackers)
        self.blob_digest = None
        if blob is not None:
            for dd in dirs:
                self.blob_digest = BlobDir(dd.blobs).put(blob)
        self.nodes = [Daemon(i, dd, load_key_file(dd.node_key).node_id) for i, dd in enumerate(dirs)]

    @property
    def node_ids(self) -> set[str]:
        return {d.node_id for d in self.nodes}

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        for d in self.nodes:
            d.start()
        deadline = time.monotonic() + timeout_s
        while not all(d.ready() for d in self.nodes):
            if time.monotonic() > deadline:
                raise TimeoutError("not every daemon was ready in time")
            time.sleep(0.2)

    def restart(self, i: int, timeout_s: float = READY_TIMEOUT_S) -> None:
        d = self.nodes[i]
        d.start()
        deadline = time.monotonic() + timeout_s
        while not d.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {i} not ready after restart")
            time.sleep(0.2)

    def heights(self) -> list[int]:
        return [d.height() for d in self.nodes]

    def live_heights(self) -> list[int]:
        """Heights of the nodes that are up and answering (-1 for the others)."""
        out = []
        for d in self.nodes:
            try:
                out.append(d.height(tries=1))
            except RuntimeError:
                out.append(-1)
        return out

    def wait_height(self, h: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while min(self.heights()) < h:
            if time.monotonic() > deadline:
                raise TimeoutError(f"heights {self.heights()} did not all reach {h}")
            time.sleep(0.5)

    def honest_bans(self) -> list[tuple[int, str]]:
        """(banning node, banned honest id) pairs: must stay empty, self-bans included."""
        ids = self.node_ids
        return [(d.index, b) for d in self.nodes for b in d.banned() if b in ids]

    def addrs(self) -> list[str]:
        return [d.p2p[0] for d in self.nodes if d.p2p]

    def stop(self) -> list[int | None]:
        return [d.stop() for d in self.nodes]

    def __enter__(self) -> LocalNet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Window:
    """One measured stretch: honest block rate (min over nodes) and peak RSS per node."""

    name: str
    seconds: float
    blocks: int
    rate: float
    rss_kb: list[int]
    heights: list[int]


def measure(net: LocalNet, name: str, seconds: float, during: Callable[[], None] | None = None,
            sample_s: float = 1.0, nodes: list[int] | None = None) -> Window:
    """Run `seconds` (calling `during` once at the start), sampling RSS; the block rate is
    the smallest advance of any measured node's height over the window, per second."""
    idx = nodes if nodes is not None else list(range(len(net.nodes)))
    start_h = [net.nodes[i].height() for i in idx]
    t0 = time.monotonic()
    if during is not None:
        during()
    peak = [net.nodes[i].rss_kb() for i in idx]
    while time.monotonic() - t0 < seconds:
        time.sleep(min(sample_s, max(0.0, seconds - (time.monotonic() - t0))))
        peak = [max(p, net.nodes[i].rss_kb()) for p, i in zip(peak, idx, strict=True)]
    end_h = [net.nodes[i].height() for i in idx]
    elapsed = time.monotonic() - t0
    blocks = min(e - s for s, e in zip(start_h, end_h, strict=True))
    return Window(name, elapsed, blocks, blocks / elapsed, peak, end_h)


class AttackerProc:
    """`python -m node.adversary` against `targets`, driven over stdin."""

    def __init__(self, key: Keypair, chain_id: str, targets: list[str], blob: str = "",
                 log: Path | None = None) -> None:
        cmd = [sys.executable, "-m", "node.adversary", "--chain-id", chain_id, "--seed", key.seed().hex()]
        for t in targets:
            cmd += ["--target", t]
        if blob:
            cmd += ["--blob", blob]
        self._err = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._err, text=True, bufsize=1,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.ready = self.wait_for("ready", 60.0)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                self.events.put(json.loads(line))
        self.events.put({"event": "exited", "rc": self.proc.wait()})

    def wait_for(self, event: str, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"attacker: no {event!r} within {timeout_s}s")
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if ev["event"] == event:
                return ev
            if ev["event"] == "exited":
                raise RuntimeError(f"attacker exited with {ev['rc']}")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def run(self, attack: str, seconds: float) -> None:
        """Start `attack` for `seconds` (returns at once; `finished` reports later)."""
        self.send(f"run {attack} {seconds}")
        self.wait_for("started", 30.0)

    def finished(self, timeout_s: float) -> dict[str, Any]:
        return self.wait_for("finished", timeout_s)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.send("quit")
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> AttackerProc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class AttackResult:
    attack: str
    window: Window
    #: Block rate of the quiet windows just before and just after this attack.
    baseline_rate: float
    #: Peak RSS in the attack window over RSS in the quiet window before it, worst node.
    rss_ratio: float
    attacker: dict[str, Any]

    @property
    def rate_ratio(self) -> float:
        return self.window.rate / self.baseline_rate if self.baseline_rate > 0 else 0.0


def run_suite(net: LocalNet, attacks: list[tuple[str, Keypair]], window_s: float, quiet_s: float,
              blob: str = "", log_dir: Path | None = None,
              report: Callable[[str], None] | None = None) -> tuple[list[Window], list[AttackResult]]:
    """Quiet, attack, quiet, attack, ..., quiet: each attack is compared with the quiet
    windows on either side of it, so load on a shared machine that drifts over the run
    does not count for or against an attack. Each attack gets a fresh attacker process
    and key (the last one is banned by then)."""
    say = report or (lambda text: None)
    quiet = [measure(net, "quiet", quiet_s)]
    say(f"quiet: {quiet[-1].blocks} blocks, {quiet[-1].rate:.2f}/s")
    raw: list[tuple[str, Window, dict[str, Any]]] = []
    for name, key in attacks:
        log = log_dir / f"attacker-{name}.log" if log_dir is not None else None
        with AttackerProc(key, net.chain_id, net.addrs(), blob, log=log) as a:
            w = measure(net, name, window_s, during=functools.partial(a.run, name, window_s))
            done = a.finished(window_s + 30)
        raw.append((name, w, done))
        quiet.append(measure(net, "quiet", quiet_s))
        say(f"{name}: {w.blocks} blocks, {w.rate:.2f}/s; then quiet {quiet[-1].rate:.2f}/s")
    results = []
    for i, (name, w, done) in enumerate(raw):
        before, after = quiet[i], quiet[i + 1]
        base = (before.blocks + after.blocks) / (before.seconds + after.seconds)
        rss = max(r / max(1, p) for r, p in zip(w.rss_kb, before.rss_kb, strict=True))
        results.append(AttackResult(name, w, base, rss, done))
    return quiet, results
