"""A spec's layers expanded into the primitive operations one training step runs.

The pinpoint game must be able to name, and the referee re-execute alone, every piece
of a transformer: its projections, attention scores, softmax, weighted sum, LayerNorm
and embedding gather. So a layer is not one operation: `nodes(spec)` expands each layer
into primitive nodes (a transformer block is twelve), with explicit inputs, so skip
connections and tied weights are edges in a small DAG rather than hidden inside a layer.

Version-1 layers are one node each, reading the previous node, so a version-1 spec's op
sequence is exactly what it was. The graph is built so that no node output and no
parameter feeds more than two consumers: their gradients are then summed as `a + b`,
which is commutative in IEEE arithmetic, so the per-op replay and one autograd pass over
the whole step add the same two numbers and agree bit for bit, whatever order an
autograd engine visits them in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from protocol.pol.spec import LayerKind, Shape, TaskSpec, infer_shapes, layer_params, param_shapes

#: A node input that is the batch's x (token ids or samples), not another node's output.
INPUT = -1
#: Most consumers of one node output or one parameter (see the module docstring).
MAX_FAN_OUT = 2


class Prim(IntEnum):
    """Primitive node kinds; 1-10 share their number with the layer kind they run."""

    LINEAR = 1
    CONV2D = 2
    RELU = 3
    GELU = 4
    LAYERNORM = 5
    DROPOUT = 6
    FLATTEN = 7
    RESIDUAL = 8
    MAXPOOL2D = 9
    AVGPOOL2D = 10
    #: token ids -> rows of the embedding table
    EMBED = 11
    #: x + the first T rows of the position table
    POS_ADD = 12
    #: x (T, d) -> q (heads, T, head_dim), k^T (heads, head_dim, T), v (heads, T, head_dim)
    QKV = 13
    #: q, k^T -> causal-masked q k^T / sqrt(head_dim), (heads, T, T)
    SCORES = 14
    #: softmax over the last dim (the attention probabilities)
    SOFTMAX = 15
    #: probabilities, v -> the weighted sum of values with heads merged back, (T, d)
    MIX = 16
    #: the residual sum a + b
    ADD = 17
    #: x @ W^T without bias (the LM head, tied or not)
    HEAD = 18


@dataclass(frozen=True, slots=True)
class NodeRef:
    node: int  # INPUT for the batch's x
    slot: int


@dataclass(frozen=True, slots=True)
class Node:
    prim: Prim
    layer: int  # the spec layer this node belongs to (its sizes, dropout seed)
    inputs: tuple[NodeRef, ...]
    params: tuple[int, ...]  # global parameter indices; a tied head reuses the embedding's
    n_outputs: int = 1


_SINGLE = {
    LayerKind.LINEAR: Prim.LINEAR,
    LayerKind.CONV2D: Prim.CONV2D,
    LayerKind.RELU: Prim.RELU,
    LayerKind.GELU: Prim.GELU,
    LayerKind.LAYERNORM: Prim.LAYERNORM,
    LayerKind.DROPOUT: Prim.DROPOUT,
    LayerKind.FLATTEN: Prim.FLATTEN,
    LayerKind.RESIDUAL: Prim.RESIDUAL,
    LayerKind.MAXPOOL2D: Prim.MAXPOOL2D,
    LayerKind.AVGPOOL2D: Prim.AVGPOOL2D,
    LayerKind.EMBEDDING: Prim.EMBED,
    LayerKind.POS_EMBEDDING: Prim.POS_ADD,
    LayerKind.LM_HEAD: Prim.HEAD,
}


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[Node] = []

    def add(
        self,
        prim: Prim,
        layer: int,
        inputs: tuple[NodeRef, ...],
        params: tuple[int, ...] = (),
        n_outputs: int = 1,
    ) -> NodeRef:
        self.nodes.append(Node(prim, layer, inputs, params, n_outputs))
        return NodeRef(len(self.nodes) - 1, 0)

    def attention(self, li: int, x: NodeRef, p: tuple[int, ...]) -> NodeRef:
        qkv = self.add(Prim.QKV, li, (x,), p[0:2], n_outputs=3).node
        scores = self.add(Prim.SCORES, li, (NodeRef(qkv, 0), NodeRef(qkv, 1)))
        probs = self.add(Prim.SOFTMAX, li, (scores,))
        mixed = self.add(Prim.MIX, li, (probs, NodeRef(qkv, 2)))
        return self.add(Prim.LINEAR, li, (mixed,), p[2:4])

    def mlp(self, li: int, x: NodeRef, p: tuple[int, ...]) -> NodeRef:
        h = self.add(Prim.LINEAR, li, (x,), p[0:2])
        h = self.add(Prim.GELU, li, (h,))
        return self.add(Prim.LINEAR, li, (h,), p[2:4])

    def block(self, li: int, x: NodeRef, p: tuple[int, ...]) -> NodeRef:
        """Pre-norm: h = x + Attn(LN1(x)); out = h + MLP(LN2(h))."""
        a = self.attention(li, self.add(Prim.LAYERNORM, li, (x,), p[0:2]), p[2:6])
        h = self.add(Prim.ADD, li, (x, a))
        m = self.mlp(li, self.add(Prim.LAYERNORM, li, (h,), p[6:8]), p[8:12])
        return self.add(Prim.ADD, li, (h, m))


def nodes(spec: TaskSpec) -> list[Node]:
    """The primitive nodes of the (valid) spec's forward pass, in execution order."""
    b = _Builder()
    x = NodeRef(INPUT, 0)
    first = 0
    for li, layer in enumerate(spec.layers):
        n = len(layer_params(layer))
        p = tuple(range(first, first + n))
        first += n
        kind = layer.kind
        if kind in _SINGLE:
            x = b.add(_SINGLE[kind], li, (x,), p)
        elif kind is LayerKind.LM_HEAD_TIED:
            x = b.add(Prim.HEAD, li, (x,), (0,))  # the embedding (layer 0) owns parameter 0
        elif kind is LayerKind.ATTENTION:
            x = b.attention(li, x, p)
        elif kind is LayerKind.GELU_MLP:
            x = b.mlp(li, x, p)
        elif kind is LayerKind.TRANSFORMER_BLOCK:
            x = b.block(li, x, p)
        else:
            raise AssertionError(f"unhandled layer kind {kind}")
    return b.nodes


@dataclass(frozen=True, slots=True)
class GradSource:
    """One contribution to a gradient: output `slot` of node `node`'s backward (or of the
    loss op, node = number of nodes, slot 1)."""

    node: int
    slot: int


@dataclass(frozen=True, slots=True)
class Plan:
    """The step's dataflow, forward and backward, derived from the spec alone.

    `backward` lists the nodes that get a BACKWARD op, in execution order (last node
    first): in version 1 every node; in version 2 the nodes whose output needs a
    gradient (it depends on a parameter), exactly the nodes autograd visits. `diff[n]` are
    the input positions node n's backward differentiates: in version 1 all of them (the
    batch too: that op layout is kept), in version 2 those that depend on a parameter.
    """

    nodes: tuple[Node, ...]
    backward: tuple[int, ...]
    diff: tuple[tuple[int, ...], ...]
    #: per node, per output slot: contributions to its gradient, in backward order
    out_grads: tuple[tuple[tuple[GradSource, ...], ...], ...]
    #: per parameter: contributions to its gradient (two for a tied table)
    param_grads: tuple[tuple[GradSource, ...], ...]


def plan(spec: TaskSpec) -> Plan:
    graph = nodes(spec)
    needs = [False] * len(graph)
    for ni, node in enumerate(graph):
        needs[ni] = (
            spec.version < 2
            or bool(node.params)
            or any(r.node != INPUT and needs[r.node] for r in node.inputs)
        )
    diff = tuple(
        tuple(i for i, r in enumerate(n.inputs) if spec.version < 2 or (r.node != INPUT and needs[r.node]))
        for n in graph
    )
    backward = tuple(ni for ni in reversed(range(len(graph))) if needs[ni])
    outs: list[list[list[GradSource]]] = [[[] for _ in range(n.n_outputs)] for n in graph]
    n_params = sum(len(layer_params(layer)) for layer in spec.layers)
    params: list[list[GradSource]] = [[] for _ in range(n_params)]
    outs[-1][0].append(GradSource(len(graph), 1))  # the loss op's gradient of the logits
    for ni in backward:
        node = graph[ni]
        for slot, pos in enumerate(diff[ni]):
            r = node.inputs[pos]
            if r.node != INPUT:
                outs[r.node][r.slot].append(GradSource(ni, slot))
        for j, p in enumerate(node.params):
            params[p].append(GradSource(ni, len(diff[ni]) + j))
    for ni in backward:
        for slot, srcs in enumerate(outs[ni]):
            if not 1 <= len(srcs) <= MAX_FAN_OUT:
                raise AssertionError(f"node {ni} output {slot} has {len(srcs)} gradient consumers")
    if any(not 1 <= len(s) <= MAX_FAN_OUT for s in params):
        raise AssertionError("a parameter with no use or too many uses")
    return Plan(
        tuple(graph),
        backward,
        diff,
        tuple(tuple(tuple(s) for s in per) for per in outs),
        tuple(tuple(s) for s in params),
    )


def node_shapes(
    spec: TaskSpec, graph: list[Node] | tuple[Node, ...] | None = None
) -> list[tuple[Shape, ...]]:
    """Per-sample output shapes of every node (for pricing and the memory estimate)."""
    graph = nodes(spec) if graph is None else graph
    shapes = infer_shapes(spec)
    params = param_shapes(spec)
    x: Shape = shapes[0]
    out: list[tuple[Shape, ...]] = []
    for node in graph:
        ins = [x if r.node == INPUT else out[r.node][r.slot] for r in node.inputs]
        out.append(_prim_shape(spec, node, ins, [params[j] for j in node.params], shapes))
    return out


def _prim_shape(
    spec: TaskSpec, node: Node, ins: list[Shape], ps: list[Shape], layer_shapes: list[Shape]
) -> tuple[Shape, ...]:
    prim, s = node.prim, ins[0]
    if prim is Prim.LINEAR or prim is Prim.HEAD:
        return ((*s[:-1], ps[0][0]),)
    if prim is Prim.EMBED:
        return ((*s, ps[0][1]),)
    if prim is Prim.QKV:  # q, k transposed, v
        t, d = s
        h = spec.layers[node.layer].heads
        return (h, t, d // h), (h, d // h, t), (h, t, d // h)
    if prim is Prim.SCORES:
        h, t, _ = s
        return ((h, t, t),)
    if prim is Prim.MIX:
        h, t, dh = ins[1]
        return ((t, h * dh),)
    if prim in (
        Prim.RELU,
        Prim.GELU,
        Prim.LAYERNORM,
        Prim.DROPOUT,
        Prim.POS_ADD,
        Prim.SOFTMAX,
        Prim.ADD,
        Prim.RESIDUAL,
    ):
        return (s,)
    return (layer_shapes[node.layer + 1],)  # conv, pooling, flatten: one node is the layer
