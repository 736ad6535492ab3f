"""The peak memory a spec needs to train, from the spec alone (in MiB).

The market elects only workers whose advertised memory holds the task
(`SubmitTask.min_memory_mb`, filtered in protocol/market/elections.py), so every node
must derive the same number, before anything runs. The estimate is an upper bound of
what one training step keeps alive, counted in tensor elements:

- the parameters, their gradients and the optimizer state, and during the update the
  new parameters and state next to the old (training replaces them only at the end);
- every node's outputs for the whole batch (the step keeps them for the backward);
- transients: the largest node's inputs and outputs a few times over (a forward's
  intermediates, the gradients in flight in the backward);
- the batch (and the index tensors that draw it) and the dataset itself;
- a fixed scratch allowance (masks, scalars);

plus a fixed allowance for the runtime (interpreter, torch, the node). Tests compare the
tensor part with the peak of live tensor bytes torch allocates during a real step.
"""

from __future__ import annotations

import math

from protocol.pol.graph import INPUT, node_shapes, nodes
from protocol.pol.ops import state_slots_per_param
from protocol.pol.spec import DType, TaskSpec, param_shapes

MIB = 1 << 20
#: Interpreter, torch's own allocations and the node around the tensors.
RUNTIME_OVERHEAD_MB = 512
#: The largest node's tensors counted this many times more (forward temporaries such as a
#: projection before it is split into heads, backward gradients in flight).
TRANSIENT_FACTOR = 4
DTYPE_BYTES = {DType.FLOAT32: 4, DType.FLOAT64: 8}
#: Intermediates of one tensor's optimizer update (the formulas are not in place).
UPDATE_TEMPORARIES = 8
#: Masks, scalars and index tensors a step allocates whatever the model's size.
SCRATCH_BYTES = 1 << 16


def tensor_bytes(spec: TaskSpec) -> int:
    """Bytes of tensors alive at the peak of one training step (an upper bound)."""
    width = DTYPE_BYTES[spec.profile.dtype]
    n_params = sum(math.prod(s) for s in param_shapes(spec))
    ns = state_slots_per_param(spec)
    # old and new parameters and state, the gradients, and one tensor's update temporaries
    biggest = max(math.prod(s) for s in param_shapes(spec))
    state = n_params * (2 * (1 + ns) + 1) + UPDATE_TEMPORARIES * biggest
    graph = nodes(spec)
    shapes = node_shapes(spec, graph)
    x = tuple(spec.input_shape)
    kept = sum(math.prod(s) for outs in shapes for s in outs)
    largest = 0
    for node, outs in zip(graph, shapes, strict=True):
        ins = [x if r.node == INPUT else shapes[r.node][r.slot] for r in node.inputs]
        largest = max(largest, sum(math.prod(s) for s in ins) + sum(math.prod(s) for s in outs))
    per_sample = kept + TRANSIENT_FACTOR * largest
    activations = spec.batch_size * per_sample
    b = spec.batch_size
    if spec.is_token_model:  # window starts, gather indices, the windows, x and y (int64)
        batch_bytes = 8 * b + 4 * 8 * b * (x[0] + 1)
        data_bytes = spec.dataset_size  # one byte per token
    else:  # the seeded permutation of the training split, the rows and their cast
        batch_bytes = 8 * spec.train_size + b * (2 * math.prod(x) * width + 8)
        data_bytes = spec.dataset_size * (math.prod(x) * 4 + 8)
    return (state + activations) * width + batch_bytes + data_bytes + SCRATCH_BYTES


def peak_memory_mb(spec: TaskSpec) -> int:
    """MiB a worker needs to train the (valid) spec: tensors plus the runtime allowance."""
    return RUNTIME_OVERHEAD_MB + -(-tensor_bytes(spec) // MIB)
