"""A crew whose members are on different hosts: two network namespaces joined by a veth
pair, each member at its own address, the store at rank 0's (where `ip netns` works:
root on Linux; skipped elsewhere).

On loopback every member shares 127.0.0.1, which hid that gloo binds and announces the
address the host name resolves to: loopback on many hosts (this box's /etc/hosts maps
its name to 127.0.0.1, Debian's to 127.0.1.1). Members on two hosts were then told to
reach each other at their own loopback and the crew never formed ("Gloo connectFullMesh
failed ... remote=[127.0.0.1]"). Each member now binds gloo to its own crew address
(`MemberPlan.bind`: the daemon's `crew_host`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parent.parent
NAMESPACES = ("polnet-crew-a", "polnet-crew-b")
ADDRS = ("10.98.0.1", "10.98.0.2")
STORE_PORT = 29611


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _netns_available() -> bool:
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = "polnet-probe"
    try:
        _ip("netns", "add", probe)
        _ip("netns", "del", probe)
    except (subprocess.SubprocessError, OSError):
        return False
    return True


@pytest.fixture
def two_hosts() -> Iterator[None]:
    if not _netns_available():
        pytest.skip("network namespaces need root and iproute2 on Linux")
    for ns in NAMESPACES:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
    try:
        for ns in NAMESPACES:
            _ip("netns", "add", ns)
        _ip("link", "add", "pcrew-a", "type", "veth", "peer", "name", "pcrew-b")
        for ns, dev, addr in zip(NAMESPACES, ("pcrew-a", "pcrew-b"), ADDRS, strict=True):
            _ip("link", "set", dev, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield
    finally:
        for ns in NAMESPACES:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def _member(rank: int) -> subprocess.Popen[str]:
    cmd = ["ip", "netns", "exec", NAMESPACES[rank], sys.executable, "-m", "tests.crew_netns_member",
           str(rank), ADDRS[0], str(STORE_PORT), ADDRS[rank]]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.timeout(600)
def test_a_crew_trains_across_two_hosts_each_member_at_its_own_address(two_hosts: None) -> None:
    procs = [_member(0), _member(1)]
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    first, second = (json.loads(out.strip().splitlines()[-1]) for out, _ in outs)
    assert first["rank"] == 0 and second["rank"] == 1
    # What stage 0 sent is what stage 1 received, message for message, and back.
    assert first["sent"]["1"] and first["sent"]["1"] == second["received"]["0"]
    assert second["sent"]["0"] and second["sent"]["0"] == first["received"]["1"]
