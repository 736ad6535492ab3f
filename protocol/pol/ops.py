"""One training step as an explicit sequence of operations, and the hashes over it.

The pinpoint game needs both parties and the referee to agree on *which* operations a
step consists of and which tensors each reads, without running anything. So the
dataflow is derived here from the spec alone:

    BATCH, FORWARD per node, LOSS (value and gradient), BACKWARD per node (last first),
    UPDATE per parameter tensor, STATE (the two hashes that make the checkpoint leaf)

(a node is a layer in version 1; a primitive piece of one in version 2, see
`protocol.pol.graph`: a transformer block is twelve nodes).

Tensors are named by (producing op, output slot); op -1 is the state at the start of
the step (parameters, then optimizer state tensors). A party commits to a step's trace
with a hash chain C_j = H(C_{j-1} || digest of op j's outputs), starting from the
agreed start state: agreeing on C_j means agreeing on every output up to op j, which is
what makes bisection over ops sound.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from protocol.encoding import canonical_hash, pack, sha256
from protocol.pol.graph import INPUT, GradSource, Node, NodeRef, plan
from protocol.pol.spec import LayerKind, OptimizerKind, TaskSpec, layer_params

START = -1  # the pseudo-op whose outputs are the state at the start of the step
CHAIN_DOMAIN = b"polnet/pol/op-chain/v1\x00"
TENSOR_DOMAIN = b"polnet/pol/tensor/v1\x00"
#: Most outputs any op has (BACKWARD of a residual block: input grad + 4 param grads).
MAX_OP_OUTPUTS = 8


class OpKind(IntEnum):
    BATCH = 1
    FORWARD = 2
    LOSS = 3
    BACKWARD = 4
    UPDATE = 5
    STATE = 6
    # A crew member's step (protocol/pol/crew_ops.py) adds the ops of its boundaries.
    RECV = 7  # a message received from a neighbour or replica
    DECODE = 8  # an AQ-SGD activation message -> activation and the cache rows after
    ENCODE = 9  # an activation -> its AQ-SGD message and the cache rows after
    UNPACK = 10  # a gradient message -> the gradient
    PACK = 11  # a gradient -> its message
    CONTRIB = 12  # the member's flat gradient -> its all-reduce message
    REDUCE = 13  # every replica's contribution -> the averaged gradient
    CACHE = 14  # a cache and the rows each micro-batch changed -> the cache after
    SENT = 15  # the hash chain over every message sent so far in the segment


@dataclass(frozen=True, slots=True)
class TensorRef:
    op: int
    slot: int


@dataclass(frozen=True, slots=True)
class OpDesc:
    kind: OpKind
    index: int  # node (= layer in v1) for FORWARD/BACKWARD, parameter tensor for UPDATE, else 0
    inputs: tuple[TensorRef, ...]
    n_outputs: int


def state_slots_per_param(spec: TaskSpec) -> int:
    opt = spec.optimizer
    if opt.kind is OptimizerKind.SGD:
        return 1 if opt.momentum > 0.0 else 0
    return 2  # Adam's first and second moments


def _param_owner(spec: TaskSpec) -> list[tuple[int, int]]:
    """(layer, local index) of every parameter tensor, in global order."""
    return [(li, j) for li, layer in enumerate(spec.layers) for j in range(len(layer_params(layer)))]


def step_ops(spec: TaskSpec) -> list[OpDesc]:
    """The op sequence of one training step (3 + nodes + backward nodes + params long).

    FORWARD and BACKWARD are per primitive node (`protocol.pol.graph`); for a version-1
    spec a node is a layer. A BACKWARD op reads its node's inputs, its parameters and
    every contribution to the gradient of each of its outputs (one, or two where an
    output feeds a skip connection); an UPDATE op reads its parameter, each of its
    gradient contributions (two for tied weights) and its optimizer state.
    """
    pl = plan(spec)
    n_nodes = len(pl.nodes)
    n_params, n_state = len(pl.param_grads), state_slots_per_param(spec)
    loss_op = 1 + n_nodes
    backward_op = {ni: loss_op + 1 + k for k, ni in enumerate(pl.backward)}

    def act(r: NodeRef) -> TensorRef:
        return TensorRef(0, 0) if r.node == INPUT else TensorRef(1 + r.node, r.slot)

    def grad(src: GradSource) -> TensorRef:
        return TensorRef(loss_op, 1) if src.node == n_nodes else TensorRef(backward_op[src.node], src.slot)

    def params_of(node: Node) -> tuple[TensorRef, ...]:
        return tuple(TensorRef(START, p) for p in node.params)

    ops = [OpDesc(OpKind.BATCH, 0, (), 2)]
    ops += [
        OpDesc(OpKind.FORWARD, ni, (*(act(r) for r in n.inputs), *params_of(n)), n.n_outputs)
        for ni, n in enumerate(pl.nodes)
    ]
    ops.append(OpDesc(OpKind.LOSS, 0, (act(NodeRef(n_nodes - 1, 0)), TensorRef(0, 1)), 2))
    for ni in pl.backward:
        n = pl.nodes[ni]
        grads = tuple(grad(src) for srcs in pl.out_grads[ni] for src in srcs)
        n_out = len(pl.diff[ni]) + len(n.params)
        ops.append(OpDesc(OpKind.BACKWARD, ni, (*(act(r) for r in n.inputs), *params_of(n), *grads), n_out))
    for p in range(n_params):
        state = tuple(TensorRef(START, n_params + p * n_state + s) for s in range(n_state))
        srcs = tuple(grad(src) for src in pl.param_grads[p])
        ops.append(OpDesc(OpKind.UPDATE, p, (TensorRef(START, p), *srcs, *state), 1 + n_state))
    first_update = len(ops) - n_params
    updated = [TensorRef(first_update + p, 0) for p in range(n_params)]
    states = [TensorRef(first_update + p, 1 + s) for p in range(n_params) for s in range(n_state)]
    ops.append(OpDesc(OpKind.STATE, 0, (*updated, *states), 2))
    return ops


def ops_per_step(spec: TaskSpec) -> int:
    pl = plan(spec)
    return 3 + len(pl.nodes) + len(pl.backward) + len(pl.param_grads)


def has_dropout(spec: TaskSpec) -> bool:
    return any(layer.kind is LayerKind.DROPOUT for layer in spec.layers)


# --- hashing ------------------------------------------------------------------------------------


def tensor_digest(dtype: str, shape: tuple[int, ...], data: bytes) -> bytes:
    """Content id of a tensor: dtype, shape and little-endian C-order bytes."""
    return sha256(tensor_digest_prefix(dtype, shape) + data)


def tensor_digest_prefix(dtype: str, shape: tuple[int, ...]) -> bytes:
    """What a tensor digest hashes before the data (so a shell can stream the data)."""
    return TENSOR_DOMAIN + pack([dtype, list(shape)])


def group_hash(digests: list[bytes] | tuple[bytes, ...]) -> bytes:
    """Hash of an ordered list of tensor digests (all weights; all optimizer state)."""
    return canonical_hash(list(digests))


def state_hash(weights_hash: bytes, optimizer_hash: bytes) -> bytes:
    """The training state at a step boundary; equals the STATE op's output digest."""
    return group_hash([weights_hash, optimizer_hash])


def op_digest(outputs: list[bytes] | tuple[bytes, ...]) -> bytes:
    return group_hash(outputs)


def chain_start(start_state: bytes) -> bytes:
    return sha256(CHAIN_DOMAIN + start_state)


def chain_next(prev: bytes, outputs_digest: bytes) -> bytes:
    return sha256(prev + outputs_digest)


def chain_values(start_state: bytes, op_outputs: list[tuple[bytes, ...]]) -> list[bytes]:
    """C_0..C_{n-1} for a trace prefix."""
    values, c = [], chain_start(start_state)
    for outs in op_outputs:
        c = chain_next(c, op_digest(outs))
        values.append(c)
    return values
