"""The profiler attached to a running job: train.py and sample.py call these, nothing else does.

Each profiler gathers, once, what its meter needs — the analytic FLOPs and bytes of the
model (flops.py), the device's peaks with their sources (hardware.py) and an energy reader
(energy.py) — and then turns the job's measured steps into records for metrics.jsonl
or a profile JSON. `gpt/` never imports this; the CLIs connect the two.

Every run also checks the predictor: the same work is predicted on this device's cached measured
profile (`python -m profiling calibrate` writes it; a run never calibrates by itself) and written
beside the measurement with the error predicted / measured − 1. Without a cached profile the
record says so instead. The same single-card prediction gives the share of each step's time it does not
explain (`unexplained_step_fraction`, see rundir.py), which in a distributed run holds the communication.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from gpt.config import GPTConfig
from gpt.errors import GptmeterError
from gpt.warmup import WarmupPlan
from profiling import flops, predict
from profiling.device_profile import DeviceProfile, cached_profile, measured_ceilings
from profiling.energy import open_energy_reader
from profiling.hardware import Peaks, device_name, device_peaks, run_precision
from profiling.meter import StepMeter, reset_peak_memory
from profiling.predict import Prediction
from profiling.rundir import unexplained_step_fraction


def find_peaks(device: torch.device, dtype: str, peak_tflops: float | None, program: str) -> Peaks | None:
    """Peaks for the maths the run uses (see hardware.run_precision): datasheet or given, with the measured
    ceilings cached beside them; None (with a warning) if unknown.

    Measuring the ceilings allocates benchmark buffers, so the peak-memory count restarts afterwards:
    the peak a profiler reports belongs to its run.
    """
    try:
        measured = measured_ceilings(device)  # a view of the calibrated profile; the quick grid if none is cached
        peak_flops = peak_tflops * 1e12 if peak_tflops else None
        return device_peaks(device, run_precision(device, dtype), peak_flops=peak_flops, measured=measured)
    except GptmeterError as error:
        print(f"{program}: warning: no utilisation figures: {error}", file=sys.stderr)
        return None
    finally:
        reset_peak_memory(device)


def this_device_profile(device: torch.device, dtype: str) -> tuple[DeviceProfile | None, str | None]:
    """This device's cached measured profile, or None and the line saying how to make one. A CPU's profile is
    per thread count (the device's name says it), so that line names the device, threads included."""
    threads = " at the same thread count" if device.type == "cpu" else ""
    how = (f"no profile of {device_name(device)}: run python -m profiling calibrate --device {device.type} "
           f"--dtype {flops.dtype_name(dtype)}{threads}")
    try:
        profile = cached_profile(device_name(device), dtype)
    except GptmeterError as error:  # a damaged cache file must not stop the run
        return None, f"{how} ({error})"
    return (profile, None) if profile is not None else (None, how)


def compare(prefix: str, prediction: Prediction | None, measured_tokens_per_sec: float | None,
            note: str | None) -> dict[str, Any]:
    """`<prefix>predicted_tokens_per_sec`, `<prefix>prediction_error` (predicted / measured − 1) and the rest."""
    if prediction is None:
        return {f"{prefix}predicted_tokens_per_sec": None, f"{prefix}prediction_error": None,
                f"{prefix}prediction": None, "prediction_note": note}
    error = prediction.tokens_per_sec / measured_tokens_per_sec - 1 if measured_tokens_per_sec else None
    return {f"{prefix}predicted_tokens_per_sec": prediction.tokens_per_sec, f"{prefix}prediction_error": error,
            f"{prefix}prediction": prediction.to_dict(), "prediction_note": note}


def describe_prediction(what: str, predicted: float | None, error: float | None, note: str | None) -> str:
    """"predicted 1,234 tokens/s (+5.0%)", or the note when nothing was predicted."""
    if predicted is None:
        return note or f"no {what} prediction"
    return f"predicted {predicted:,.0f} {what}tokens/s" + (f" ({error:+.1%})" if error is not None else "")


def _board_watts(peaks: Peaks | None, given: float | None) -> float | None:
    """Power for the CPU estimate when no counter is readable: as given (--board-watts), else the table's."""
    return given if given is not None else (peaks.board_power_w if peaks else None)


def _peak_fields(peaks: Peaks | None) -> dict[str, Any]:
    if peaks is None:
        return {"device": None, "peak_precision": None, "peak_flops_source": None, "peak_bandwidth_source": None}
    return {
        "device": peaks.device_name,
        "accelerator": peaks.accelerator,
        "peak_precision": peaks.dtype,  # the maths MFU is measured against: bf16, fp16, tf32 or fp32
        "peak_flops_source": peaks.flops_source,
        "peak_bandwidth_source": peaks.bandwidth_source,
    }


class TrainingProfiler:
    """MFU, HFU, watts and joules per token for every training step."""

    def __init__(self, config: GPTConfig, device: torch.device, dtype: str, batch: int, grad_accum: int,
                 peak_tflops: float | None = None, board_watts: float | None = None) -> None:
        self.peaks = find_peaks(device, dtype, peak_tflops, "train.py")
        profile, self.prediction_note = this_device_profile(device, dtype)
        self.prediction = None
        if profile is not None:
            try:
                self.prediction = predict.predict_train(config, batch, config.block_size, grad_accum, profile)
            except GptmeterError as error:  # a profile this model cannot be priced on must not stop the run
                self.prediction_note = f"no prediction: {error}"
        self.energy = open_energy_reader(device, board_watts=_board_watts(self.peaks, board_watts))
        self.meter = StepMeter(
            device,
            flops_per_token=flops.training_flops_per_token(config),
            hardware_flops_per_token=flops.hardware_flops_per_token(config),
            peak_flops=self.peaks.flops if self.peaks else None,
            measured_peak_flops=self.peaks.measured_flops if self.peaks else None,
            energy=self.energy,
        )

    @property
    def _predicted_tokens_per_sec(self) -> float | None:
        return self.prediction.tokens_per_sec if self.prediction is not None else None

    def on_step(self, record) -> dict[str, Any]:
        """Trainer hook: the step's profiler fields for its metrics.jsonl line."""
        metrics = self.meter.record(record.tokens, record.step_time_s, step=record.step)
        return metrics.to_dict() | {
            "unexplained_step_fraction": unexplained_step_fraction(metrics.tokens_per_sec,
                                                                   self._predicted_tokens_per_sec)}

    def summary(self) -> dict[str, Any]:
        measured = self.meter.summary()
        return {"kind": "summary", **measured, **_peak_fields(self.peaks),
                **compare("", self.prediction, measured["tokens_per_sec"], self.prediction_note),
                "unexplained_step_fraction": unexplained_step_fraction(measured["tokens_per_sec"],
                                                                       self._predicted_tokens_per_sec)}

    def close(self) -> None:
        if self.energy is not None:
            self.energy.close()


class GenerationProfiler:
    """Prefill and decode of one `generate` call, metered as two phases with one sync at each edge."""

    def __init__(self, config: GPTConfig, device: torch.device, dtype: str, batch: int, prompt_len: int,
                 board_watts: float | None = None) -> None:
        self.config, self.batch, self.prompt_len, self.dtype = config, batch, prompt_len, dtype
        self.peaks = find_peaks(device, dtype, None, "sample.py")
        self.device_profile, self.prediction_note = this_device_profile(device, dtype)
        self.energy = open_energy_reader(device, board_watts=_board_watts(self.peaks, board_watts))
        peak_flops = self.peaks.flops if self.peaks else None
        bandwidth = self.peaks.bandwidth if self.peaks else None
        common = dict(peak_flops=peak_flops, peak_bandwidth=bandwidth, warmup_steps=0, energy=self.energy,
                      synchronize_edges=True)
        self.prefill = StepMeter(device, **common)
        self.decode = StepMeter(device, **common)
        self.new_tokens = 0

    def start(self) -> None:
        self.prefill.start()

    def on_tokens(self, count: int) -> None:
        """Called with each chunk of new columns as generation streams them; the first token closes the prefill."""
        first = self.new_tokens == 0
        self.new_tokens += count
        if first:
            prompt_tokens = self.batch * self.prompt_len
            self.prefill.stop(
                prompt_tokens,
                flops_per_token=flops.prefill_flops(self.config, self.prompt_len, causal=False) / self.prompt_len,
                hardware_flops_per_token=flops.prefill_flops(self.config, self.prompt_len) / self.prompt_len,
            )
            self.decode.start()

    def stop(self) -> None:
        steps = self.new_tokens - 1
        contexts = range(self.prompt_len + 1, self.prompt_len + steps + 1)  # keys each decode step attends to
        within_context = self.prompt_len + steps <= self.config.block_size
        decode_flops = sum(flops.decode_flops_per_token(self.config, length) for length in contexts)
        bytes_read = sum(
            flops.decode_bytes_per_step(self.config, length, self.batch, weight_dtype=self.dtype) for length in contexts
        )
        if steps > 0:
            self.decode.stop(
                self.batch * steps,
                flops_per_token=decode_flops / steps if within_context else None,
                bytes_read=bytes_read if within_context else None,  # past the context each step re-encodes
            )
        self.prefill.flush()
        self.decode.flush()

    def profile(self, model_config: dict[str, Any], warmup: WarmupPlan | None = None) -> dict[str, Any]:
        """The figures of this generation, as `rundir.write_profile` stores them (schema in docs/cost.md).

        `warmup`, the untimed warm-up that ran before, says which steps (none) were left out and why.
        """
        prefill, decode = self.prefill.summary(), self.decode.summary()
        decode_tokens_per_sec = decode["tokens_per_sec"] if decode["measured_tokens"] else None
        return {
            **_peak_fields(self.peaks),
            "dtype": self.dtype,
            "batch": self.batch,
            "prompt_tokens": self.prompt_len,
            "new_tokens": self.new_tokens,
            "prefill_tokens_per_sec": prefill["tokens_per_sec"],
            "prefill_mfu": prefill["mfu"],
            "decode_tokens_per_sec": decode_tokens_per_sec,
            "decode_bandwidth_utilisation": decode["bandwidth_utilisation"],
            "decode_mfu": decode["mfu"],
            "joules_per_token": decode["joules_per_token"],
            "energy_source": decode["energy_source"],
            "peak_memory_bytes": decode["peak_memory_bytes"],
            **(warmup.profile_fields() if warmup else {}),
            "model": model_config,
            **self._predictions(prefill["tokens_per_sec"], decode_tokens_per_sec),
        }

    def _predictions(self, prefill_tokens_per_sec: float | None, decode_tokens_per_sec: float | None) -> dict[str, Any]:
        """Prefill and decode of this generation predicted on the cached profile, beside what was measured."""
        prefill = decode = None
        note = self.prediction_note
        if self.device_profile is not None:
            try:
                prefill = predict.predict_prefill(self.config, self.batch, self.prompt_len, self.device_profile,
                                                  max(self.new_tokens, 1))
                if decode_tokens_per_sec is not None:
                    decode = predict.predict_decode(self.config, self.batch, self.prompt_len, self.new_tokens,
                                                    self.device_profile)
            except GptmeterError as error:  # e.g. a generation past the context, which re-encodes
                note = f"no prediction: {error}"
        return (compare("prefill_", prefill, prefill_tokens_per_sec, note)
                | compare("decode_", decode, decode_tokens_per_sec, note))

    def close(self) -> None:
        if self.energy is not None:
            self.energy.close()


def describe_generation(profile: dict[str, Any]) -> str:
    """The one-line timing summary sample.py prints to standard error."""

    def percent(value: float | None) -> str:
        return f"{value:.1%}" if value is not None else "n/a"

    mfu = percent(profile["prefill_mfu"])
    if profile["prefill_mfu"] is not None:
        mfu += f" of {profile['peak_precision']} peak"
    line = (f"prefill: {profile['prompt_tokens'] * profile['batch']:,} tokens at "
            f"{profile['prefill_tokens_per_sec']:,.1f} tokens/s (MFU {mfu})")
    if profile["decode_tokens_per_sec"] is not None:
        line += (f"; decode: {(profile['new_tokens'] - 1) * profile['batch']:,} tokens at "
                 f"{profile['decode_tokens_per_sec']:,.1f} tokens/s (bandwidth "
                 f"{percent(profile['decode_bandwidth_utilisation'])})")
    if profile["joules_per_token"] is not None:
        line += f", {profile['joules_per_token']:.3g} J/token ({profile['energy_source']})"
    if profile["decode_predicted_tokens_per_sec"] is not None:
        line += "; " + describe_prediction("decode ", profile["decode_predicted_tokens_per_sec"],
                                           profile["decode_prediction_error"], None)
    else:
        line += "; " + describe_prediction("prefill ", profile["prefill_predicted_tokens_per_sec"],
                                           profile["prefill_prediction_error"], profile["prediction_note"])
    return line + f"; batch {profile['batch']}, {profile['device'] or 'unknown device'}"
