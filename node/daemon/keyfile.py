"""The daemon's narrow view of key files: create one at init, load one at start.

node/keys.py owns the file format (atomic 0600 writes, optional passphrase); this adds
the one rule the daemon needs on top: never overwrite an existing node identity.
"""

from __future__ import annotations

from pathlib import Path

from node import keys
from protocol.errors import KeyFileError
from protocol.identity import Keypair


def create_key_file(path: Path, passphrase: str | None = None, seed: bytes | None = None) -> Keypair:
    """Generate (or take from `seed`, for a laid-out local network) and store the node key."""
    if path.exists():
        raise KeyFileError(f"{path}: a key file already exists; refusing to overwrite a node identity")
    key = Keypair.from_seed(seed) if seed is not None else keys.generate_keypair()
    keys.save_keypair(path, key, passphrase=passphrase)
    return key


def load_key_file(path: Path, passphrase: str | None = None) -> Keypair:
    return keys.load_keypair(path, passphrase=passphrase)
