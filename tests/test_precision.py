"""Which maths a run uses, and so which peak its MFU is taken against; what `--dtype auto` picks.

No GPU here: the CUDA devices are faked by replacing torch.cuda.get_device_capability and the
reported device name, with real torch.cuda.get_device_name strings.
"""

from __future__ import annotations

import pytest
import torch

from gpt.cli import resolve_dtype, use_device
from gpt.config import GPTConfig
from gpt.data import load_data
from gpt.tokenizer import get_tokenizer
from gpt.trainer import Trainer, TrainConfig
from profiling import hardware, live

CAPABILITY = {"NVIDIA H100 80GB HBM3": (9, 0), "NVIDIA A100-SXM4-80GB": (8, 0), "Tesla V100-SXM2-16GB": (7, 0),
              "Tesla T4": (7, 5)}


@pytest.fixture
def tf32_switch():
    """Set TF32 matmuls through torch's legacy switch (the one the trainer uses); restored afterwards."""
    before = torch.get_float32_matmul_precision()
    yield lambda on: setattr(torch.backends.cuda.matmul, "allow_tf32", on)
    torch.set_float32_matmul_precision(before)


def fake_gpu(monkeypatch, name: str) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: CAPABILITY[name])
    monkeypatch.setattr(hardware, "device_name", lambda device: name)


def test_tf32_is_read_from_either_switch(tf32_switch):
    tf32_switch(True)
    assert hardware.tf32_matmuls_enabled()
    tf32_switch(False)
    assert not hardware.tf32_matmuls_enabled()
    torch.set_float32_matmul_precision("high")  # the other documented way to allow TF32
    assert hardware.tf32_matmuls_enabled()


@pytest.mark.parametrize("before", [False, True])
def test_tf32_matmuls_sets_and_restores_whatever_switch_was_used(tf32_switch, before):
    torch.set_float32_matmul_precision("high" if before else "highest")  # the new-style switch, as calibrate meets it
    for inside in (False, True):
        with hardware.tf32_matmuls(inside):
            assert hardware.tf32_matmuls_enabled() is inside
        assert hardware.tf32_matmuls_enabled() is before


@pytest.mark.parametrize(
    "device, gpu, dtype, tf32, expected",
    [
        ("cuda", "NVIDIA H100 80GB HBM3", "float32", True, "tf32"),
        ("cuda", "NVIDIA H100 80GB HBM3", "float32", False, "fp32"),
        ("cuda", "NVIDIA H100 80GB HBM3", "bfloat16", True, "bf16"),
        ("cuda", "NVIDIA H100 80GB HBM3", "bfloat16", False, "bf16"),
        ("cuda", "NVIDIA H100 80GB HBM3", "float16", True, "fp16"),
        ("cuda:1", "NVIDIA A100-SXM4-80GB", "float32", True, "tf32"),
        ("cuda", "Tesla V100-SXM2-16GB", "float32", True, "fp32"),  # no TF32 tensor cores before Ampere
        ("cuda", "Tesla T4", "float16", True, "fp16"),
        ("cpu", None, "float32", True, "fp32"),  # the switch is CUDA's; CPUs compute fp32
        ("cpu", None, "float32", False, "fp32"),
        ("cpu", None, "bfloat16", False, "bf16"),
    ],
)
def test_run_precision_for_each_device_dtype_and_tf32_setting(monkeypatch, tf32_switch, device, gpu, dtype, tf32,
                                                              expected):
    if gpu:
        fake_gpu(monkeypatch, gpu)
    tf32_switch(tf32)
    assert hardware.run_precision(device, dtype) == expected


@pytest.mark.parametrize(
    "gpu, dtype, tf32, precision, peak",
    [
        ("NVIDIA H100 80GB HBM3", "float32", True, "tf32", 494.5e12),  # not 67e12: MFU would read 7.4x too high
        ("NVIDIA H100 80GB HBM3", "float32", False, "fp32", 67e12),
        ("NVIDIA H100 80GB HBM3", "bfloat16", True, "bf16", 989.5e12),
        ("NVIDIA A100-SXM4-80GB", "float32", True, "tf32", 156e12),
        ("NVIDIA A100-SXM4-80GB", "float16", False, "fp16", 312e12),
        ("Tesla V100-SXM2-16GB", "float32", True, "fp32", 15.7e12),
        ("Tesla V100-SXM2-16GB", "float16", True, "fp16", 125e12),
    ],
)
def test_profilers_take_the_peak_of_the_maths_that_ran(monkeypatch, tf32_switch, gpu, dtype, tf32, precision, peak):
    fake_gpu(monkeypatch, gpu)
    monkeypatch.setattr(live, "measured_ceilings", lambda device: None)
    monkeypatch.setattr(live, "reset_peak_memory", lambda device: None)
    tf32_switch(tf32)
    peaks = live.find_peaks(torch.device("cuda"), dtype, None, "test")
    assert (peaks.dtype, peaks.flops) == (precision, peak)
    assert live._peak_fields(peaks)["peak_precision"] == precision


def test_the_generation_line_names_the_peak():
    profile = {"prompt_tokens": 10, "batch": 1, "prefill_tokens_per_sec": 1e3, "prefill_mfu": 0.41,
               "peak_precision": "tf32", "decode_tokens_per_sec": None, "joules_per_token": None, "device": "x",
               "decode_predicted_tokens_per_sec": None, "prefill_predicted_tokens_per_sec": None,
               "prefill_prediction_error": None, "prediction_note": None}
    assert "MFU 41.0% of tf32 peak" in live.describe_generation(profile)


@pytest.mark.parametrize(
    "capabilities, device, expected",
    [
        ({0: (9, 0)}, "cuda", "bfloat16"),
        ({0: (8, 0)}, "cuda:0", "bfloat16"),
        ({0: (7, 0)}, "cuda", "float16"),  # V100: bf16 would be emulated
        ({0: (7, 5)}, "cuda", "float16"),  # T4
        ({0: (9, 0), 1: (7, 0)}, "cuda:1", "float16"),  # the chosen device decides, not the current one
        ({0: (7, 0), 1: (8, 6)}, "cuda:1", "bfloat16"),
    ],
)
def test_dtype_auto_picks_bf16_only_with_native_support_on_the_chosen_device(monkeypatch, capabilities, device,
                                                                            expected):
    def capability(device=None):
        index = torch.device(device).index if device is not None else None
        return capabilities[0 if index is None else index]

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)  # counts emulation: unused
    assert resolve_dtype("auto", torch.device(device)) == expected
    assert resolve_dtype("float32", torch.device(device)) == "float32"
    assert resolve_dtype("auto", torch.device("cpu")) == "float32"


def test_float16_training_scales_the_loss(tmp_path):
    """fp16 (what auto picks before Ampere) needs loss scaling: the trainer's GradScaler is on and used."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("def f(x):\n    return x + 1\n" * 200)
    tokenizer = get_tokenizer("bytes")
    config = TrainConfig(batch_size=2, max_iters=2, warmup_iters=1, dtype="float16")
    trainer = Trainer(GPTConfig(vocab_size=257, block_size=16, n_layer=1, n_head=2, n_embd=32), config,
                      load_data(str(corpus), tokenizer), tokenizer.name, tmp_path / "run")
    scaled = []
    scale = trainer.scaler.scale
    trainer.scaler.scale = lambda loss: scaled.append(loss) or scale(loss)
    trainer.train_step()
    assert trainer.scaler.is_enabled() and len(scaled) == 1
    assert trainer.scaler.get_scale() > 1  # gradients were multiplied before backward, as fp16 needs
    float32 = Trainer(GPTConfig(vocab_size=257, block_size=16, n_layer=1, n_head=2, n_embd=32),
                      TrainConfig(batch_size=2, max_iters=2), load_data(str(corpus), tokenizer), tokenizer.name,
                      tmp_path / "run32")
    assert not float32.scaler.is_enabled()


def test_the_clis_make_the_chosen_cuda_device_current(monkeypatch):
    """Triton, CUDA events and streams follow the current device: --device cuda:1 must select it."""
    selected = []
    monkeypatch.setattr(torch.cuda, "set_device", selected.append)
    use_device(torch.device("cuda", 1))
    use_device(torch.device("cpu"))
    assert selected == [torch.device("cuda", 1)]
