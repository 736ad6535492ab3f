"""A crew member's training step as an explicit op chain, for the pinpoint game.

The single-node game (protocol/pol/pinpoint.py) bisects a disputed segment to one step
and then to one op of that step, which a referee re-executes from hash-checked inputs.
A crew member's step is the same game over another op list: its stage's modules run per
micro-batch, and what crosses its boundaries (AQ-SGD messages, gradients, all-reduce
contributions) is made of ops too, so a dispute about a member ends at one op of one
micro-batch of one step inside its own stage. Only the layout of the stage is needed to
derive the list, so every node derives the same one.

State at the start of a step (slots of the pseudo-op START), weights then the rest:

    params (the stage's parameter tensors, in module order)
    exp_avg x P, exp_avg_sq x P, step x P        (AdamW; zeros before the first step)
    send cache m, send seen                      (all but the last stage)
    recv cache m, recv seen                      (all but the first stage)
    sent                                         (hash chain over the segment's messages)

The `sent` slot puts what a member sent into its state, so a member that trains right
but sends wrong (a lazy backward) disagrees with an honest re-execution about its end
state too, and the game finds the op that made the message.

Ops of one step, GPipe order (pipeline.StageWorker.step):

    for each micro-batch m:  BATCH m (first stage: tokens; last: targets), or
                             RECV (from the previous stage), DECODE m;
                             FORWARD of each module; LOSS m (last) or ENCODE m
    for each m, last first:  RECV (from the next stage), UNPACK m (all but the last);
                             BACKWARD of each module, last first (its input gradient and
                             the module's gradients accumulated over micro-batches);
                             PACK m (all but the first)
    with replicas:           CONTRIB, RECV from each other replica, REDUCE
    UPDATE per parameter; CACHE per cache side; SENT; STATE

RECV's output is what the member committed to receiving (its neighbours' records of
what they sent pin the same hashes, crosscheck.py); SENT and STATE are pure hashing.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.encoding import sha256
from protocol.pol.ops import START, OpDesc, OpKind, TensorRef, group_hash
from protocol.pol.roles import Geometry

#: Start of a segment's sent chain; each step extends it with the digests of its messages.
SENT_DOMAIN = b"polnet/crew/sent/v1\x00"
SENT_START = sha256(SENT_DOMAIN)
#: AdamW's state per parameter tensor: first and second moment, step count.
ADAM_SLOTS = 3


@dataclass(frozen=True, slots=True)
class StageLayout:
    """What decides a member's op list: where its stage sits, the schedule's shape, and
    how many parameter tensors each of its modules holds."""

    first: bool
    last: bool
    micro_batches: int
    replicas: int
    module_params: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.micro_batches < 1 or self.replicas < 1 or not self.module_params:
            raise ValueError("a stage needs a micro-batch, a replica and a module")

    @property
    def n_params(self) -> int:
        return sum(self.module_params)

    @property
    def modules(self) -> int:
        return len(self.module_params)

    def param_base(self, module: int) -> int:
        return sum(self.module_params[:module])

    def owner(self, param: int) -> tuple[int, int]:
        """(module, index within the module) of parameter tensor `param`."""
        for module, n in enumerate(self.module_params):
            if param < n:
                return module, param
            param -= n
        raise IndexError("parameter index out of range")

    # --- slots of the start state --------------------------------------------------------

    def adam_slot(self, param: int, which: int) -> int:
        return self.n_params * (1 + which) + param

    @property
    def send_slot(self) -> int:
        """The send cache's m; its seen flags follow. Only when not last."""
        return self.n_params * (1 + ADAM_SLOTS)

    @property
    def recv_slot(self) -> int:
        return self.send_slot + (0 if self.last else 2)

    @property
    def sent_slot(self) -> int:
        return self.recv_slot + (0 if self.first else 2)

    @property
    def n_weights(self) -> int:
        return self.n_params

    @property
    def n_rest(self) -> int:
        return self.sent_slot + 1 - self.n_params

    # --- what the member receives, in order ------------------------------------------------

    def recv_source(self, index: int) -> tuple[str, int]:
        """RECV `index` of a step: ("prev", m), ("next", k-th backward) or ("replica", k-th
        other replica in replica order)."""
        m = self.micro_batches
        if index < m:
            return "prev", index
        if index < 2 * m:
            return "next", index - m
        return "replica", index - 2 * m


def crew_step_ops(layout: StageLayout) -> list[OpDesc]:
    """The op list of one step of a member with this layout (see the module docstring)."""
    ops: list[OpDesc] = []

    def add(kind: OpKind, index: int, inputs: tuple[TensorRef, ...], n_out: int) -> int:
        ops.append(OpDesc(kind, index, inputs, n_out))
        return len(ops) - 1

    lay, m_count, k = layout, layout.micro_batches, layout.modules
    send, send_seen = TensorRef(START, lay.send_slot), TensorRef(START, lay.send_slot + 1)
    recv_m, recv_seen = TensorRef(START, lay.recv_slot), TensorRef(START, lay.recv_slot + 1)

    def params(module: int) -> tuple[TensorRef, ...]:
        base = lay.param_base(module)
        return tuple(TensorRef(START, base + j) for j in range(lay.module_params[module]))

    ins: list[list[TensorRef]] = []  # input of each module, per micro-batch
    loss_grad: list[TensorRef] = []
    encoded: list[int] = []
    decoded: list[int] = []
    for m in range(m_count):
        target = None
        if lay.first:
            b = add(OpKind.BATCH, m, (), 2 if lay.last else 1)
            h = TensorRef(b, 0)
            target = TensorRef(b, 1) if lay.last else None
        else:
            r = add(OpKind.RECV, m, (), 1)
            d = add(OpKind.DECODE, m, (recv_m, recv_seen, TensorRef(r, 0)), 3)
            decoded.append(d)
            h = TensorRef(d, 0)
            if lay.last:
                target = TensorRef(add(OpKind.BATCH, m, (), 1), 0)
        ins.append([])
        for module in range(k):
            ins[m].append(h)
            h = TensorRef(add(OpKind.FORWARD, m * k + module, (h, *params(module)), 1), 0)
        if lay.last:
            assert target is not None
            loss_grad.append(TensorRef(add(OpKind.LOSS, m, (h, target), 2), 1))
        else:
            encoded.append(add(OpKind.ENCODE, m, (h, send, send_seen), 3))
    acc: list[TensorRef | None] = [None] * k
    packed: list[int] = []
    for back, m in enumerate(reversed(range(m_count))):
        if lay.last:
            g = loss_grad[m]
        else:
            r = add(OpKind.RECV, m_count + back, (), 1)
            g = TensorRef(add(OpKind.UNPACK, m, (TensorRef(r, 0),), 1), 0)
        for module in reversed(range(k)):
            has_in = not (lay.first and module == 0)
            prior = acc[module]
            extra = (prior,) if prior is not None else ()
            bw = add(OpKind.BACKWARD, m * k + module, (ins[m][module], *params(module), g, *extra),
                     2 if has_in else 1)
            acc[module] = TensorRef(bw, 1 if has_in else 0)
            g = TensorRef(bw, 0)
        if not lay.first:
            packed.append(add(OpKind.PACK, m, (g,), 1))
    flats = tuple(a for a in acc if a is not None)
    contrib = reduced = -1
    if lay.replicas > 1:
        contrib = add(OpKind.CONTRIB, 0, flats, 1)
        recvs = [add(OpKind.RECV, 2 * m_count + i, (), 1) for i in range(lay.replicas - 1)]
        others = tuple(TensorRef(r, 0) for r in recvs)
        reduced = add(OpKind.REDUCE, 0, (TensorRef(contrib, 0), *others), 1)
    updates = []
    for p in range(lay.n_params):
        module, _ = lay.owner(p)
        grad = TensorRef(reduced, 0) if reduced >= 0 else flats[module]
        adam = tuple(TensorRef(START, lay.adam_slot(p, s)) for s in range(ADAM_SLOTS))
        updates.append(add(OpKind.UPDATE, p, (TensorRef(START, p), grad, *adam), 1 + ADAM_SLOTS))
    caches: list[int] = []
    if not lay.last:
        rows = tuple(TensorRef(e, s) for e in encoded for s in (1, 2))
        caches.append(add(OpKind.CACHE, 0, (send, send_seen, *rows), 2))
    if not lay.first:
        rows = tuple(TensorRef(d, s) for d in decoded for s in (1, 2))
        caches.append(add(OpKind.CACHE, 1, (recv_m, recv_seen, *rows), 2))
    messages = [TensorRef(e, 0) for e in encoded] + [TensorRef(p, 0) for p in packed]
    messages += [TensorRef(contrib, 0)] * (lay.replicas - 1) if contrib >= 0 else []
    sent = add(OpKind.SENT, 0, (TensorRef(START, lay.sent_slot), *messages), 1)
    state = [TensorRef(u, 0) for u in updates]
    state += [TensorRef(u, 1 + s) for s in range(ADAM_SLOTS) for u in updates]
    state += [TensorRef(c, s) for c in caches for s in (0, 1)]
    add(OpKind.STATE, 0, (*state, TensorRef(sent, 0)), 2)
    return ops


def crew_geometry(layout: StageLayout) -> Geometry:
    return Geometry(tuple(crew_step_ops(layout)), layout.n_weights, layout.n_rest)


def sent_next(prev: bytes, message_digests: list[bytes] | tuple[bytes, ...]) -> bytes:
    """The sent chain after one step's messages (each digest: sha256 of the bytes sent)."""
    return sha256(SENT_DOMAIN + prev + b"".join(message_digests))


def pure_outputs(layout: StageLayout, op: OpDesc, inputs: tuple[bytes, ...]) -> tuple[bytes, ...] | None:
    """The outputs of an op that is only hashing (SENT, STATE) from its input digests;
    None for an op that needs tensors."""
    if op.kind is OpKind.SENT:
        return (sent_next(inputs[0], inputs[1:]),)
    if op.kind is OpKind.STATE:
        n = layout.n_weights
        return group_hash(inputs[:n]), group_hash(inputs[n:])
    return None
