"""How the Triton launchers launch: on the tensors' own device, on a grid without the 65,535 limit.

No GPU here: the CUDA branch of the device guard is checked with torch.cuda.device replaced by a
recorder, the launchers with recording kernels around the real ones (Triton's interpreter, see
conftest.py), whose outputs are checked against the plain-PyTorch reference.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from kernels import attention_reference, flash_attention

flash_module = importlib.import_module("kernels.fused_attention")
KERNELS = ("_forward_kernel", "_backward_delta_kernel", "_backward_dkdv_kernel", "_backward_dq_kernel")
AXIS_1_AND_2_LIMIT, AXIS_0_LIMIT = 65_535, 2**31 - 1


class Guard:
    """Stands in for torch.cuda.device / the launcher's guard: records the device and whether it is entered."""

    entered: list[torch.device] = []
    inside = False

    def __init__(self, device) -> None:
        self.device = torch.device(device)

    def __enter__(self):
        Guard.entered.append(self.device)
        Guard.inside = True

    def __exit__(self, *exc):
        Guard.inside = False


class RecordingKernel:
    """Wraps a kernel: records each launch's grid (evaluated as Triton would) and whether the guard was held."""

    def __init__(self, kernel, launch: bool = True) -> None:
        self.kernel, self.launch, self.launches = kernel, launch, []

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            tuned = getattr(self.kernel, "configs", [])  # the interpreter tunes over one config
            meta = {**(tuned[0].kwargs if tuned else {}), **kwargs}
            self.launches.append((grid(meta) if callable(grid) else grid, Guard.inside))
            if self.launch:
                return self.kernel[grid](*args, **kwargs)
        return run


@pytest.fixture
def recorded(monkeypatch):
    Guard.entered, Guard.inside = [], False
    monkeypatch.setattr(flash_module, "_device_guard", Guard)
    kernels = {name: RecordingKernel(getattr(flash_module, name)) for name in KERNELS}
    for name, kernel in kernels.items():
        monkeypatch.setattr(flash_module, name, kernel)
    return kernels


def test_every_launch_runs_inside_the_guard_of_the_tensors_device(recorded):
    q, k, v = (torch.randn(1, 2, 20, 16, requires_grad=True) for _ in range(3))
    flash_attention(q, k, v).sum().backward()
    assert Guard.entered == [q.device, q.device]  # once around the forward launch, once around the backward's
    for name, kernel in recorded.items():
        assert kernel.launches and all(inside for _, inside in kernel.launches), name


def test_the_guard_selects_a_cuda_tensors_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device", Guard)
    Guard.entered = []
    with flash_module._device_guard(torch.device("cuda", 1)):
        pass
    assert Guard.entered == [torch.device("cuda", 1)]
    with flash_module._device_guard(torch.device("cpu")):  # nothing to select on CPU (interpreter)
        pass
    assert Guard.entered == [torch.device("cuda", 1)]


def test_grids_are_one_dimensional_and_the_flat_index_decodes_right(recorded):
    # GQA, ragged lengths, seq_q != seq_k: every program must find its own (batch, head, block).
    batch, heads, kv_heads, seq_q, seq_k = 3, 4, 2, 37, 53
    q = torch.randn(batch, heads, seq_q, 16, requires_grad=True)
    k, v = (torch.randn(batch, kv_heads, seq_k, 16, requires_grad=True) for _ in range(2))
    out = flash_attention(q, k, v)
    out.backward(torch.ones_like(out))
    reference = [t.detach().double().requires_grad_() for t in (q, k, v)]
    expected = attention_reference(*reference, causal=True)
    expected.backward(torch.ones_like(expected))
    torch.testing.assert_close(out.double(), expected, atol=1e-4, rtol=1e-4)
    for got, want in zip((q, k, v), reference):
        torch.testing.assert_close(got.grad.double(), want.grad, atol=1e-4, rtol=1e-4)

    # Block lengths: the interpreter's configurations (kernels/fused_attention.py) and the delta kernel's 32.
    blocks = {"_forward_kernel": (seq_q, 32, batch * heads), "_backward_delta_kernel": (seq_q, 32, batch * heads),
              "_backward_dq_kernel": (seq_q, 32, batch * heads), "_backward_dkdv_kernel": (seq_k, 32, batch * kv_heads)}
    for name, (length, block, batch_heads) in blocks.items():
        (grid, _), = recorded[name].launches
        assert grid == (-(-length // block) * batch_heads,), name


def test_more_than_65535_batch_heads_stay_within_the_grid_limits():
    batch_heads = 8 * 16_384  # e.g. batch 8 × 16,384 heads, or a long decode batch
    grid = flash_module._flat_grid(16_384, "BLOCK_M", batch_heads)({"BLOCK_M": 128})
    assert len(grid) == 1 and AXIS_1_AND_2_LIMIT < grid[0] <= AXIS_0_LIMIT
