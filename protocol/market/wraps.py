"""Private tasks on the ledger: who may hold a task's content key, and the key-wrap rules.

A private task's blobs (dataset, checkpoints, weights) are sealed under one content key
(`protocol.sealing`); the ledger never sees that key. It holds what lets exactly the
parties the market elects obtain it: each account's X25519 public key (`enc_keys`, set by
worker registration or `SetEncKey`), the task's commitment to its key (`key_commit`, so a
recipient can tell a wrap opened to the right key), and the wraps themselves, each made
to one party's registered key by someone who already holds the key.

Who is entitled (`entitled`): the task's solver, profilers, verifiers and elected
watchers (open whistleblowing cannot check data it cannot read, so a private task elects
its whistleblowers), and, while a game is played, the validators, who re-execute its one
disputed operation (or fetch a segment, in an availability game). Nobody else: a wrap to
anyone else is refused, so the ledger's own record shows who could read the task.

Why the submitter need not stay online: any party already wrapped to (the solver first)
may wrap for the parties elected after it; the wrap is deterministic
(`protocol.sealing.wrap_content_key`), so a re-sent one is the same bytes.

A wrap that does not open (or no wrap at all) cannot be proven bad on the ledger (that
would need the recipient's private key), so the rule is the one that costs nobody
wrongly: the recipient reports it (`KeyWrapFault`), its silence is then excused rather
than slashed (`excused`), and the deadline replaces it as it would a silent party.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from protocol.encoding import sha256
from protocol.market.errors import NotAuthorized, OutOfBounds, WrongStage
from protocol.market.stages import task_for
from protocol.market.state import MarketState, Status, Task, WrapRec
from protocol.market.store import MAX_EXCLUDED, MAX_WRAPS
from protocol.market.txs import KEY_BYTES, KeyWrap, KeyWrapFault, SetEncKey

#: Watchers a private task elects beside its verifiers (its only whistleblowers).
PRIVATE_WATCHERS = 1
#: The statuses in which validators may hold a private task's key (they judge its games).
_JUDGING = (Status.DISPUTE, Status.ARBITRATION)
_ZERO_KEY = b"\x00" * KEY_BYTES
_PROBE = X25519PrivateKey.from_private_bytes(sha256(b"polnet enc key probe v1"))


def parties(task: Task) -> set[bytes]:
    """The task's elected parties: solver, profilers, verifiers, watchers."""
    out = set(task.profilers) | {v.pubkey for v in task.verifiers} | set(task.watchers)
    if task.solver is not None:
        out.add(task.solver)
    return out


def entitled(state: MarketState, task: Task) -> set[bytes]:
    """The parties that may hold `task`'s content key now (see the module docstring)."""
    out = parties(task)
    if task.status in _JUDGING:
        out |= set(state.validators)
    return out


def keyed(state: MarketState, task: Task, candidates: list[tuple[bytes, int]]) -> list[tuple[bytes, int]]:
    """Election candidates a private task may elect: those with a key to wrap to."""
    if not task.private:
        return candidates
    return [c for c in candidates if c[0] in state.enc_keys]


def wraps_to(task: Task, party: bytes, key: bytes | None = None) -> list[WrapRec]:
    """The wraps made to `party` (to its key `key`, when given)."""
    return [w for w in task.wraps if w.recipient == party and (key is None or w.recipient_key == key)]


def holds_key(task: Task, party: bytes) -> bool:
    """Whether `party` was handed the key: the submitter, or a recipient of a wrap."""
    return party == task.submitter or any(w.recipient == party for w in task.wraps)


def excused(state: MarketState, task: Task, party: bytes) -> bool:
    """A silent party of a private task that never had a working key is not slashed:
    it reported a bad wrap, or no wrap to its registered key was ever posted."""
    if not task.private:
        return False
    key = state.enc_keys.get(party)
    return party in task.unkeyed or key is None or not wraps_to(task, party, key)


def check_enc_key(key: bytes) -> None:
    # Rule: a key is absent or exactly 32 bytes, and never all zero (no shared secret).
    if key and (len(key) != KEY_BYTES or key == _ZERO_KEY):
        raise OutOfBounds(f"an encryption key is {KEY_BYTES} bytes and not all zero")
    # Rule: a key gives a shared secret (a low-order point would make every wrap to it
    # fail, and a wrapper that tried would be stuck on it).
    if key and not usable_enc_key(key):
        raise OutOfBounds("the encryption key is a low-order X25519 point")


def usable_enc_key(key: bytes) -> bool:
    """Whether an X25519 exchange with `key` yields a shared secret (deterministic: a
    fixed probe scalar; `cryptography` refuses the all-zero result of low-order points)."""
    try:
        _PROBE.exchange(X25519PublicKey.from_public_bytes(key))
    except ValueError:
        return False
    return True


def process_set_enc_key(state: MarketState, sender: bytes, tx: SetEncKey) -> None:
    check_enc_key(tx.enc_key)
    # Rule: a rotation changes the key (the same key again is a wasted tx).
    if state.enc_keys.get(sender) == tx.enc_key:
        raise OutOfBounds("this key is already on record")
    state.enc_keys[sender] = tx.enc_key


def process_key_wrap(state: MarketState, sender: bytes, tx: KeyWrap) -> None:
    task = task_for(state, tx.task_id, tx)
    # Rule: only a private task's key is wrapped.
    if not task.private:
        raise WrongStage("not a private task")
    # Rule: the wrapper holds the key (the submitter, or a party a wrap was made to).
    if not holds_key(task, sender):
        raise NotAuthorized("the sender holds no wrap of this task's key")
    # Rule: the recipient is entitled to the key now, and is not the wrapper.
    if tx.recipient == sender or tx.recipient not in entitled(state, task):
        raise NotAuthorized("the recipient is not a party of this task that may hold its key")
    # Rule: the recipient has a key on record; the wrap is made to that key.
    key = state.enc_keys.get(tx.recipient)
    if key is None:
        raise NotAuthorized("the recipient has no encryption key on record")
    # Rule: one wrap per wrapper and recipient (a rotated key replaces the old one's), and
    # again to the same key only after the recipient reported a fault (its report list,
    # `unkeyed`, keeps every report: the silence it excuses stays excused). So a party
    # cannot fill the task's wraps by rotating its key.
    mine = [w for w in task.wraps if w.recipient == tx.recipient and w.wrapper == sender]
    if any(w.recipient_key == key for w in mine) and tx.recipient not in task.unkeyed:
        raise OutOfBounds("this sender already wrapped the key to this recipient")
    # Rule: a task holds a bounded number of wraps.
    if not mine and len(task.wraps) >= MAX_WRAPS:
        raise OutOfBounds(f"task already holds {MAX_WRAPS} wraps")
    for old in mine:
        task.wraps.remove(old)
    task.wraps.append(WrapRec(tx.recipient, key, sender, tx.wrap))


def process_key_wrap_fault(state: MarketState, sender: bytes, tx: KeyWrapFault) -> None:
    task = task_for(state, tx.task_id, tx)
    # Rule: only an entitled party of a private task reports, once per wrap it was given
    # (once, if none came): a fresh wrap that fails again may be reported again.
    if not task.private or sender not in entitled(state, task):
        raise NotAuthorized("not a party of a private task")
    if task.unkeyed.count(sender) >= max(1, len(wraps_to(task, sender))):
        raise OutOfBounds("already reported")
    # Rule: the report list is bounded like the excluded list it feeds.
    if len(task.unkeyed) >= MAX_EXCLUDED:
        raise OutOfBounds("too many reports on this task")
    task.unkeyed.append(sender)
