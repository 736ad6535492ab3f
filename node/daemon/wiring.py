"""Choose the parts a daemon runs: which core, which network, which store.

Kept apart from app.py so the daemon's lifecycle does not change when a subsystem is
wired in, and tests can build a Daemon with parts of their own.
"""

from __future__ import annotations

from node.config import NodeConfig
from node.daemon.app import Daemon
from node.datadir import DataDir
from protocol.identity import Keypair


def build_daemon(datadir: DataDir, config: NodeConfig, key: Keypair) -> Daemon:
    return Daemon(datadir, config, key)
