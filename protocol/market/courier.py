"""The key courier: the role that moves private tasks' content keys (`protocol.market.wraps`).

Every node that can hold a duty runs one. It
- keeps this node's X25519 key on the ledger (`SetEncKey`, for validators and rotations,
  sent once a private task is open; workers also send it with their registration);
- wraps a private task's key to each entitled party that has no wrap to its current
  key yet, when this node holds the key: the submitter at once, any other holder (the
  solver, a verifier, a defender for the arbitrating validators) after
  `COURIER_GRACE_BLOCKS` in the stage, so the submitter's wraps usually come alone and
  the task still moves when the submitter is offline;
- reports (`KeyWrapFault`) when this node is entitled and the wraps to it do not open to
  the committed key, or none came within `WRAP_WAIT_BLOCKS`, so its duty is not dropped
  silently: the ledger excuses its silence and the deadline replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.commands import Command, Log
from protocol.errors import KeyWrapError
from protocol.market.roles import Role
from protocol.market.state import MarketState, Task
from protocol.market.txs import KeyWrap, KeyWrapFault, SetEncKey
from protocol.market.wraps import entitled, parties, wraps_to
from protocol.sealing import wrap_content_key

#: Blocks into a stage before a holder other than the submitter wraps for a party.
COURIER_GRACE_BLOCKS = 2
#: Blocks an entitled party waits for a wrap before it reports that none came.
WRAP_WAIT_BLOCKS = 6
#: Blocks between re-sends of this node's encryption key while the ledger lacks it.
ENC_KEY_RETRY_BLOCKS = 5
#: Wraps one node sends per block at most (a task has a handful of parties).
MAX_WRAPS_PER_BLOCK = 32
#: Blocks after which a wrap we sent that is still not on the ledger is sent again.
WRAP_RESEND_BLOCKS = 10


@dataclass
class KeyCourierRole(Role):
    key_sent_at: int = -1_000_000
    #: (task id, recipient, recipient key) -> height we last sent that wrap at.
    wrapped: dict[tuple[bytes, bytes, bytes], int] = field(default_factory=dict)

    def on_view(self, market: MarketState) -> list[Command]:
        if self.keyring is None:
            return []
        private = [t for t in market.open_tasks() if t.private]  # one pass over the open tasks
        out = self._enc_key(market, bool(private))
        budget = MAX_WRAPS_PER_BLOCK
        for task in private:
            out += self._report(market, task)
            if budget > 0:
                sent = self._wrap(market, task, budget)
                budget -= len(sent)
                out += sent
        live = {t.task_id for t in private}
        self.wrapped = {w: h for w, h in self.wrapped.items() if w[0] in live}
        return out

    def _enc_key(self, market: MarketState, private_open: bool) -> list[Command]:
        """Publish our key when the ledger has another (a rotation), or has none while a
        private task is open (only then: a chain of public tasks sees no key txs, and an
        operator's wallet is not raced for the account's nonces at every start)."""
        assert self.keyring is not None
        on_record = market.enc_keys.get(self.me)
        if on_record == self.keyring.public:
            return []
        if on_record is None and not private_open:
            return []
        if market.height - self.key_sent_at < ENC_KEY_RETRY_BLOCKS:
            return []
        self.key_sent_at = market.height
        return self._publish(SetEncKey(self.keyring.public, 0, 0))

    def _report(self, market: MarketState, task: Task) -> list[Command]:
        assert self.keyring is not None
        if self.me not in entitled(market, task):
            return []
        found = self.keyring.lookup(task, self.me)
        if found.key is not None:
            return []
        waited = market.height - task.stage_since >= WRAP_WAIT_BLOCKS
        # A missing wrap is worth reporting only for a duty with a deadline (not a validator's).
        keyed_party = self.me in market.enc_keys and self.me in parties(task)
        if not found.fault and not (waited and keyed_party):
            return []
        duty = f"keyfault:{len(wraps_to(task, self.me))}"  # again only after a fresh wrap
        sent = self._once(task, duty, KeyWrapFault(task.task_id, 0, 0))
        if not sent:
            return []
        why = found.why or "no wrap came"
        fields = (("task", task.task_id.hex()[:16]), ("why", why))
        return [Log("warning", "market.key_wrap_fault", fields), *sent]

    def _wrap(self, market: MarketState, task: Task, budget: int) -> list[Command]:
        assert self.keyring is not None
        key = self.keyring.content_key(task, self.me)
        if key is None:
            return []
        submitter = task.submitter == self.me
        if not submitter and market.height - task.stage_since < COURIER_GRACE_BLOCKS:
            return []
        out: list[Command] = []
        for party in sorted(entitled(market, task)):
            enc = market.enc_keys.get(party)
            if party in (self.me, task.submitter) or enc is None or len(out) >= budget:
                continue  # (the submitter holds the key; as a validator it needs no wrap)
            existing = wraps_to(task, party, enc)
            if any(w.wrapper == self.me for w in existing) or (existing and party not in task.unkeyed):
                continue  # a wrap to its current key is on the ledger (ours would be the same bytes)
            mark = (task.task_id, party, enc)
            if market.height - self.wrapped.get(mark, -WRAP_RESEND_BLOCKS) < WRAP_RESEND_BLOCKS:
                continue  # sent recently (a tx lost before inclusion goes again later)
            self.wrapped[mark] = market.height
            try:
                wrap = wrap_content_key(self._wrap_key(task, party, key), enc, self.keyring.chain_id,
                                        task.task_id)
            except KeyWrapError as exc:  # the ledger refuses such keys; never let one stop us
                out.append(Log("warning", "market.key_wrap_refused", (("party", party.hex()[:16]),
                                                                      ("why", str(exc)))))
                continue
            out += self._publish(KeyWrap(task.task_id, party, wrap, 0, 0))
        return out

    def _wrap_key(self, task: Task, party: bytes, key: bytes) -> bytes:
        """The key wrapped to `party` (the task's own; an adversary's may differ)."""
        return key
