"""Shared test setup.

Without a GPU, Triton kernels run in Triton's CPU interpreter. Triton reads
TRITON_INTERPRET when a kernel is decorated, i.e. when `kernels` is first
imported, so the variable is set here, before any test module imports it.
Tests marked `gpu` are skipped when there is no CUDA device.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Token and hardware caches go to a per-session temporary folder, never to ~/.cache."""
    monkeypatch.setenv("GPTMETER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "gptmeter-cache"))


@pytest.fixture
def cli(capsys):
    """`python -m profiling`, in process: cli(*argv) -> (exit status, stdout, stderr)."""
    from profiling import __main__ as dispatcher

    def call(*argv: str) -> tuple[int, str, str]:
        status = dispatcher.main(list(argv))
        out, err = capsys.readouterr()
        return status, out, err

    return call
