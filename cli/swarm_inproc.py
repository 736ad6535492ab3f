"""The in-process mode of `polnet swarm up`: N daemons in one trio event loop.

For a few nodes, separate processes cost more in start-up (each imports torch and
libp2p) than the nodes themselves; one process runs them all, each a full `Daemon` with
its own data dir, libp2p host on loopback, sqlite and metrics registry. The event loop
runs in a background thread so that the swarm's live view (the same code as for
processes, polling each node's admin endpoint) stays synchronous. Each node gets a
handle with the slice of `subprocess.Popen` the view uses (pid, poll, send_signal,
wait, kill), so the rest of the swarm command does not know which mode it runs.

Stopping a node cancels its own cancel scope (the daemon shuts down as on SIGTERM);
a node that fails is reported as exited with status 1 and the others go on.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import trio

from node.datadir import DataDir

#: Above this many nodes one process (one core, one GIL) is slower than many processes.
IN_PROCESS_MAX_NODES = 4

log = logging.getLogger("polnet.swarm")


class InProcessNode:
    """A Popen-shaped handle on one daemon running in the shared event loop."""

    def __init__(self, swarm: InProcessSwarm, index: int) -> None:
        self._swarm = swarm
        self.index = index
        self.pid = os.getpid()  # the daemons write this pid to their endpoints files
        self.returncode: int | None = None
        self.scope: trio.CancelScope | None = None
        self.done = threading.Event()

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, sig: int) -> None:
        self._swarm.cancel(self)

    def kill(self) -> None:
        self._swarm.cancel(self)

    def wait(self, timeout: float | None = None) -> int:
        if not self.done.wait(timeout):
            import subprocess

            raise subprocess.TimeoutExpired(f"in-process node {self.index}", timeout or 0.0)
        assert self.returncode is not None
        return self.returncode


class InProcessSwarm:
    def __init__(self, dirs: list[DataDir], log_path: Path) -> None:
        self.dirs = dirs
        self.nodes = [InProcessNode(self, i) for i in range(len(dirs))]
        self._token: trio.lowlevel.TrioToken | None = None
        self._started = threading.Event()
        self._log_path = log_path
        self._thread = threading.Thread(target=self._main, name="polnet-swarm", daemon=True)

    def start(self) -> list[InProcessNode]:
        handler = logging.FileHandler(self._log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        self._thread.start()
        self._started.wait()
        return self.nodes

    def cancel(self, node: InProcessNode) -> None:
        if self._token is None or node.done.is_set():
            return

        def _cancel() -> None:
            if node.scope is not None:
                node.scope.cancel()

        try:
            trio.from_thread.run_sync(_cancel, trio_token=self._token)
        except trio.RunFinishedError:
            return

    def _main(self) -> None:
        trio.run(self._run_all)

    async def _run_all(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._started.set()
        async with trio.open_nursery() as nursery:
            for node, dd in zip(self.nodes, self.dirs, strict=True):
                nursery.start_soon(self._run_one, node, dd)

    async def _run_one(self, node: InProcessNode, dd: DataDir) -> None:
        from cli.node_cmd import load_daemon

        code = 1
        try:
            with trio.CancelScope() as scope:
                node.scope = scope
                daemon = await trio.to_thread.run_sync(load_daemon, dd.root)
                await daemon.run()
            code = 0
        except Exception:  # one failing node must not take the others down
            log.exception("in-process node %d failed", node.index)
        finally:
            node.returncode = code
            node.done.set()


def in_process(nodes: int, mode: str) -> bool:
    return mode == "inprocess" or (mode == "auto" and nodes <= IN_PROCESS_MAX_NODES)

