"""The daemon's narrow view of key files: create one at init, load one at start.

node/keys.py owns the file format (atomic 0600 writes, optional passphrase). This
module is the one place the daemon and the CLI reach it through, so a change of that
API touches one file here.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from node.datadir import write_atomic
from protocol.errors import KeyFileError, PolnetError
from protocol.identity import Keypair


def _keys() -> Any:
    try:
        return importlib.import_module("node.keys")
    except ModuleNotFoundError as exc:
        if exc.name != "node.keys":
            raise
        return _InterimKeys


class _InterimKeys:
    """Unencrypted seed files until node/keys.py lands (then this class goes)."""

    @staticmethod
    def generate_keypair() -> Keypair:
        return Keypair.from_seed(os.urandom(32))

    @staticmethod
    def save_keypair(path: Path, key: Keypair, passphrase: str | None = None) -> None:
        if passphrase is not None:
            raise KeyFileError("encrypted key files need node/keys.py")
        write_atomic(path, key.seed().hex().encode(), mode=0o600)

    @staticmethod
    def load_keypair(path: Path, passphrase: str | None = None) -> Keypair:
        try:
            return Keypair.from_seed(bytes.fromhex(path.read_text()[:64]))
        except FileNotFoundError:
            raise KeyFileError(f"{path}: key file not found") from None
        except (ValueError, PolnetError):
            raise KeyFileError(f"{path}: corrupt key file") from None


def create_key_file(path: Path, passphrase: str | None = None, seed: bytes | None = None) -> Keypair:
    """Generate (or take from `seed`, for reproducible swarms) and store the node key."""
    if path.exists():
        raise KeyFileError(f"{path}: a key file already exists; refusing to overwrite a node identity")
    keys = _keys()
    key = Keypair.from_seed(seed) if seed is not None else keys.generate_keypair()
    keys.save_keypair(path, key, passphrase=passphrase)
    return key


def load_key_file(path: Path, passphrase: str | None = None) -> Keypair:
    key: Keypair = _keys().load_keypair(path, passphrase=passphrase)
    return key
