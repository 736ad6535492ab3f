"""The data directory: one folder holds everything a node is, so that backing it up,
moving it or wiping it is one operation, and a restart finds exactly what it left.

    <root>/config.toml          node configuration (node.config)
    <root>/genesis.json         the chain's genesis document (copied in by `polnet init`)
    <root>/keys/node.key        the node's ed25519 key (libp2p host key = signing key)
    <root>/db/                  sqlite databases (chain, daemon state)
    <root>/blobs/               content-addressed blobs (datasets, checkpoints)
    <root>/run/lock             held by the running daemon: one daemon per data dir
    <root>/run/endpoints.json   where the running daemon listens (read by the CLI)

Directories are created 0700: the key is inside, and other users have no business
reading a node's database either.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.errors import ConfigError, Unavailable

DIR_MODE = 0o700
#: endpoints.json is written by us and tiny; a large one is not ours.
MAX_ENDPOINTS_BYTES = 4096


@dataclass(frozen=True, slots=True)
class DataDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def genesis(self) -> Path:
        return self.root / "genesis.json"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def node_key(self) -> Path:
        return self.keys / "node.key"

    @property
    def db(self) -> Path:
        return self.root / "db"

    @property
    def chain_db(self) -> Path:
        return self.db / "chain.sqlite"

    @property
    def daemon_db(self) -> Path:
        return self.db / "daemon.sqlite"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def lock(self) -> Path:
        return self.run / "lock"

    @property
    def endpoints(self) -> Path:
        return self.run / "endpoints.json"

    def create(self) -> None:
        """Make the folder tree (idempotent); refuses a root that is a file."""
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"{self.root}: exists and is not a directory")
        for path in (self.root, self.keys, self.db, self.blobs, self.run):
            path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)

    def check(self) -> None:
        """Say precisely what is missing before a daemon starts on a broken tree."""
        if not self.root.is_dir():
            raise ConfigError(f"{self.root}: data directory not found (run `polnet init -d {self.root}`)")
        for path in (self.config, self.node_key):
            if not path.is_file():
                raise ConfigError(f"{path}: missing from the data directory (run `polnet init` again?)")
        for path in (self.db, self.blobs, self.run):
            path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the data dir's lock: two daemons on one sqlite file corrupt each other's
        view of the chain. flock is released by the kernel if the process dies."""
        self.run.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(f"{self.root}: another polnet node is running on this data dir") from None
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            yield
        finally:
            os.close(fd)

    def write_endpoints(self, endpoints: dict[str, Any]) -> None:
        write_atomic(self.endpoints, json.dumps(endpoints, sort_keys=True).encode(), mode=0o600)

    def read_endpoints(self) -> dict[str, Any]:
        """Where the running node listens, or a ConfigError saying it is not running."""
        try:
            raw = self.endpoints.read_bytes()[: MAX_ENDPOINTS_BYTES + 1]
        except FileNotFoundError:
            name = self.endpoints.name
            raise Unavailable(f"{self.root}: no running node (no {name}; start `polnet node run`)") from None
        if len(raw) > MAX_ENDPOINTS_BYTES:
            raise ConfigError(f"{self.endpoints}: too large to be an endpoints file")
        try:
            doc = json.loads(raw)
        except ValueError:
            raise ConfigError(f"{self.endpoints}: corrupt endpoints file") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{self.endpoints}: corrupt endpoints file")
        return doc

    def clear_endpoints(self) -> None:
        self.endpoints.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write-then-rename so a crash leaves the old file or the new one, never half."""
    write_atomic_pieces(path, (data,), mode)


def write_atomic_pieces(path: Path, pieces: Iterable[bytes], mode: int = 0o600) -> None:
    """`write_atomic` of the concatenation of `pieces`, written as they come (a big blob
    sealed chunk by chunk is never held whole). An exception from the iterator leaves the
    old file, as any other failure does."""
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            for piece in pieces:
                fh.write(piece)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
