"""A node's keys for private tasks: its X25519 keys, and the task content keys it holds.

The X25519 keys derive from the node's ed25519 identity seed (`protocol.sealing`), one per
generation, so the node keeps no second secret file and a rotation (`SetEncKey` with the
next generation's key) keeps every older generation's key derivable for the wraps made
to it. A content key is held because this node's operator submitted the task (the
submitter role hands it over, and persists it) or because a wrap to this node opened to
it; a wrap is accepted only if the key it opens to matches the task's on-ledger
commitment (`key_commitment`), so a wrapper cannot hand a party some other key.

Pure: no I/O, no randomness (content keys are drawn by the shell that seals the data).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field

from protocol.encoding import sha256
from protocol.errors import KeyWrapError
from protocol.market.state import Task
from protocol.market.txs import SubmitTask
from protocol.market.wraps import wraps_to
from protocol.sealing import (
    CONTENT_KEY_LEN,
    MAX_GENERATION,
    enc_private_key,
    enc_public_key,
    unwrap_content_key,
)

#: Domain of a content key's commitment (`SubmitTask.key_commit`).
KEY_COMMIT_DOMAIN = b"polnet content key commitment v1"


def key_commitment(content_key: bytes) -> bytes:
    """What a private task commits to on the ledger: a hash of its 32-byte random key
    (which reveals nothing of the key, and pins it for every recipient)."""
    if len(content_key) != CONTENT_KEY_LEN:
        raise KeyWrapError(f"a content key is {CONTENT_KEY_LEN} bytes")
    return sha256(KEY_COMMIT_DOMAIN + content_key)


@dataclass(frozen=True, slots=True)
class PrivateSubmit:
    """An operator's private task for `MarketNode` (a LocalRequest body): the submit and
    the content key its data was sealed under, which the node keeps to wrap."""

    submit: SubmitTask
    content_key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class KeyLookup:
    """The outcome of looking for a task's content key: the key, or why there is none.
    `fault` True: a wrap to us exists and does not open to the task's key (reportable);
    False with no key: no wrap has come yet (wait)."""

    key: bytes | None
    fault: bool = False
    why: str = ""


@dataclass
class Keyring:
    seed: bytes
    chain_id: str
    generation: int = 0
    #: Content keys by task id: submitted by this node's operator, or opened from wraps.
    held: MutableMapping[bytes, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.generation <= MAX_GENERATION:
            raise ValueError(f"key generation must be in 0..{MAX_GENERATION}")
        self._privates = {g: enc_private_key(self.seed, g) for g in range(self.generation + 1)}
        self._by_public = {enc_public_key(k): k for k in self._privates.values()}
        self.public = enc_public_key(self._privates[self.generation])

    def lookup(self, task: Task, me: bytes) -> KeyLookup:
        """This node's content key for `task` (see `KeyLookup`)."""
        if not task.private:
            return KeyLookup(None, why="a public task has no key")
        held = self.held.get(task.task_id)
        if held is not None and key_commitment(held) == task.key_commit:
            return KeyLookup(held)
        mine = [w for w in wraps_to(task, me) if w.recipient_key in self._by_public]
        if not mine:
            return KeyLookup(None, why="no wrap to this node's key yet")
        why = ""
        for w in mine:
            try:
                private = self._by_public[w.recipient_key]
                key = unwrap_content_key(w.wrap, private, self.chain_id, task.task_id)
            except KeyWrapError as exc:
                why = f"the wrap from {w.wrapper.hex()[:16]} does not open: {exc}"
                continue
            if key_commitment(key) != task.key_commit:
                why = f"the wrap from {w.wrapper.hex()[:16]} opens to a key the task did not commit to"
                continue
            self.held[task.task_id] = key
            return KeyLookup(key)
        return KeyLookup(None, fault=True, why=why)

    def content_key(self, task: Task, me: bytes) -> bytes | None:
        return self.lookup(task, me).key
