"""The fast training step: one autograd graph per step, bit-identical to the op trace.

Replaying a step op by op (what the pinpoint game needs) re-runs each node's forward
inside its backward, which costs more than one ordinary backward pass. Training does
not need the trace, only the checkpoints, so a solver trains here: the same node
functions (`node_forward`) chained under one autograd graph, the same loss, the same
update formulas. The two agree bit for bit because each node's backward is the same
autograd function on the same tensors either way:

- node inputs and outputs are contiguous in both (node_forward makes them so), and so is
  every gradient reaching a node (the nodes are written so that autograd hands them
  contiguous gradients, as the replay does; `probe` lets tests check it);
- where an output or a parameter has two consumers (skip connections, tied weights)
  autograd adds the two contributions, as the replay does; a + b == b + a exactly;
- version 1 differentiates the batch input too (its op layout): the gradients of the
  parameters do not depend on it (tested), so it is not computed here.

`tests/test_compute_workloads.py` checks every checkpoint digest both ways.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from node.compute.datasets import AnyDataset
from node.compute.ops import Tensors, batch, graph_of, loss_value, node_forward, update
from protocol.pol.graph import INPUT
from protocol.pol.ops import state_slots_per_param
from protocol.pol.spec import TaskSpec


def step(
    spec: TaskSpec,
    data: AnyDataset,
    params: list[torch.Tensor],
    opt: list[torch.Tensor],
    step_: int,
    probe: Callable[[int, torch.Tensor], None] | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor], float]:
    """One training step: (new parameters, new optimizer state, the step's loss).

    `probe(node, output)` sees every node output that needs a gradient (for tests).
    """
    x, y = batch(spec, data, step_)
    x, y = x.to(params[0].device), y.to(params[0].device)
    with torch.enable_grad():
        ps = [p.detach().requires_grad_(True) for p in params]
        outs: list[Tensors] = []
        for node in graph_of(spec):
            ins = [x if r.node == INPUT else outs[r.node][r.slot] for r in node.inputs]
            o = node_forward(spec, node, step_, ins, [ps[j] for j in node.params])
            if probe is not None:
                for t in o:
                    if t.requires_grad:
                        probe(len(outs), t)
            outs.append(o)
        loss = loss_value(spec, outs[-1][0], y)
        grads = torch.autograd.grad(loss, ps)
    ns = state_slots_per_param(spec)
    new_p: list[torch.Tensor] = []
    new_o: list[torch.Tensor] = []
    with torch.no_grad():
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            res = update(spec, step_, p, g, opt[i * ns : (i + 1) * ns])
            new_p.append(res[0])
            new_o.extend(res[1:])
    return new_p, new_o, float(loss.detach())
