"""Capacity is measured on the machine, not read from config."""

from __future__ import annotations

import pytest
import torch

from node.capacity import detect_device, matmul_flops, measure_capacity


def test_measured_capacity_is_positive_and_uses_the_requested_threads() -> None:
    cap = measure_capacity(threads=1, preferred="cpu", seconds=0.05)
    assert cap.device == "cpu"
    assert cap.threads == 1 == torch.get_num_threads()
    assert cap.flops > 10**7  # any CPU of this century does 10 MFLOP/s
    assert cap.memory_bytes > 0
    assert cap.torch_version == torch.__version__


def test_a_bigger_matmul_does_more_work_per_call_and_the_rate_is_comparable() -> None:
    torch.set_num_threads(1)
    small, big = matmul_flops("cpu", n=64, seconds=0.05), matmul_flops("cpu", n=256, seconds=0.05)
    # BLAS is at least as efficient on bigger matrices; allow noise from a shared box.
    assert big > small / 4


def test_an_absent_accelerator_falls_back_to_cpu() -> None:
    if not torch.cuda.is_available():
        assert detect_device("cuda") == "cpu"
    assert detect_device("cpu") == "cpu"
    with pytest.raises(ValueError):
        detect_device("tpu")
