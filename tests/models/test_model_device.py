"""Device choice, threads and autocast."""

from __future__ import annotations

import contextlib

import pytest
import torch

from fedcl.device import autocast, resolve_device, set_threads


def test_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    auto = resolve_device()
    assert auto.type in {"cuda", "mps", "cpu"}
    if torch.cuda.is_available():
        assert auto.type == "cuda"


@pytest.mark.parametrize("name", ["banana", "cuda:99", "tpu"])
def test_bad_or_unavailable_devices_raise_value_error(name):
    with pytest.raises(ValueError, match=name.split(":")[0]):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_without_a_gpu_says_so():
    with pytest.raises(ValueError, match="device='cuda' requested"):
        resolve_device("cuda")


def test_set_threads():
    before = torch.get_num_threads()
    try:
        set_threads(None)
        set_threads(0)
        assert torch.get_num_threads() == before
        set_threads(1)
        assert torch.get_num_threads() == 1
        with pytest.raises(ValueError):
            set_threads(-2)
    finally:
        torch.set_num_threads(before)


def test_autocast_is_a_no_op_off_cuda():
    ctx = autocast("cpu", enabled=True)
    assert isinstance(ctx, contextlib.nullcontext)
    with ctx:
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_autocast_uses_bf16_on_cuda():
    x = torch.ones(4, 4, device="cuda")
    with autocast("cuda", enabled=True):
        assert (x @ x).dtype == torch.bfloat16
    with autocast("cuda", enabled=False):
        assert (x @ x).dtype == torch.float32
