"""Accelerator peaks: one datasheet table, device detection, and measured ceilings.

Datasheet peaks are *dense* FLOP/s (NVIDIA prints tensor-core figures "with sparsity",
twice the dense rate, and marks them with an asterisk: we halve those). "fp8" is the FP8 tensor-core rate of
the datasheets that print one (Hopper, Ada); other devices have none. "fp32" is the
plain CUDA-core rate; "tf32" the tensor-core rate PyTorch uses for float32 matmuls when
`torch.backends.cuda.matmul.allow_tf32` is on. Bandwidths and memory sizes are decimal
(1 GB = 1e9 bytes), as datasheets state them.

Measured ceilings are what this machine actually reaches: a view of its calibrated device profile
(profiling/device_profile.py, `python -m profiling calibrate`): the best matmul of its grid and its
copy bandwidth (bytes read + bytes written). A CPU has no datasheet entry here: its peak is the
measured matmul ceiling, and is labelled as measured.
"""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads inside the functions that measure, so that --help answers at once
    import torch

from gpt.cli import AMPERE_CAPABILITY
from gpt.errors import GptmeterError
from profiling.flops import dtype_name

TABLE_DTYPES = ("fp8", "bf16", "fp16", "tf32", "fp32")


@dataclass(frozen=True)
class Accelerator:
    key: str  # short name for lookups, e.g. "h100-sxm"
    name: str
    peak_flops: dict[str, float]  # dense FLOP/s per dtype in TABLE_DTYPES; a missing dtype is unsupported (fp8:
    # Hopper and Ada tensor cores only)
    memory_bandwidth: float | None  # bytes/s
    memory_bytes: int | None
    board_power_w: float | None  # maximum board power (TDP/TGP)
    source: str  # datasheet, URL, date
    device_names: tuple[str, ...] = field(default=())  # as torch.cuda.get_device_name reports them
    mig_slices: tuple[int, int] | None = None  # (compute, memory) slices of a whole GPU in MIG mode; None: no MIG

    def peak(self, dtype: object = "bf16") -> float:
        name = dtype_name(dtype)
        if name not in self.peak_flops:
            have = ", ".join(self.peak_flops) or "none"
            raise UnknownDeviceError(
                f"no datasheet {name} peak for {self.name} (table has: {have}); "
                "choose another dtype or pass the peak by hand (--peak-tflops)"
            )
        return self.peak_flops[name]


def _dense_tflops(**per_dtype: float) -> dict[str, float]:
    return {dtype: tflops * 1e12 for dtype, tflops in per_dtype.items()}


_H100_SXM_COMPUTE = _dense_tflops(fp8=1979, bf16=989.5, fp16=989.5, tf32=494.5, fp32=67)  # H200, H800, GH200 the same
_A100_COMPUTE = _dense_tflops(bf16=312, fp16=312, tf32=156, fp32=19.5)  # all A100 variants
_NVL_COMPUTE = _dense_tflops(fp8=1670.5, bf16=835.5, fp16=835.5, tf32=417.5, fp32=60)  # H100 NVL, H200 NVL
_V100_SXM2_COMPUTE = _dense_tflops(fp16=125, fp32=15.7)  # Volta: no bf16, no tf32
_V100_PCIE_COMPUTE = _dense_tflops(fp16=112, fp32=14)
_H100_SOURCE = "NVIDIA H100 Tensor Core GPU datasheet, https://www.nvidia.com/en-us/data-center/h100/ (2023)"
_H100_NVL_SOURCE = (
    "NVIDIA H100 Tensor Core GPU datasheet, H100 NVL column (per GPU of the NVLink pair), "
    "https://www.nvidia.com/en-us/data-center/h100/ (2024)"
)
_H200_SOURCE = "NVIDIA H200 Tensor Core GPU datasheet, https://www.nvidia.com/en-us/data-center/h200/ (Nov 2023)"
_H800_SOURCE = (
    "NVIDIA H800 Tensor Core GPU datasheet (SXM5; the H100 SXM5's Hopper compute and HBM3 with FP64 and NVLink cut "
    "to 400 GB/s), https://www.nvidia.cn/data-center/h800/ (2023); secondary: https://aiwiki.ai/wiki/nvidia_h800 "
    "(reviewed Jun 2026)"
)
_GH200_SOURCE = (
    "NVIDIA GH200 Grace Hopper Superchip datasheet (96 GB HBM3 GPU; 480 GB LPDDR5X on the Grace CPU; "
    "module power 450-1000 W, CPU and memory included), "
    "https://www.nvidia.com/en-us/data-center/grace-hopper-superchip/ (2023)"
)
_A100_SOURCE = (
    "NVIDIA A100 Tensor Core GPU datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf), "
    "https://www.nvidia.com/en-us/data-center/a100/ (2021)"
)
_V100_SOURCE = (
    "NVIDIA Tesla V100 GPU datasheet (volta-v100-datasheet-update-us-1165301-r5.pdf), "
    "https://www.nvidia.com/en-us/data-center/v100/ (Jan 2020)"
)
GB = 10**9
_MIG_7 = (7, 8)  # A100/H100/H200 class: 7 compute slices (1/7 of the SMs each), 8 memory slices (1/8 of memory)
_MIG_USER_GUIDE = (
    "NVIDIA Multi-Instance GPU User Guide, 'Terminology' (a GPU slice is 1/7 of the SMs of an A100/H100-class GPU, "
    "a memory slice 1/8 of its memory capacity and bandwidth; 1/4 each on A30), "
    "https://docs.nvidia.com/datacenter/tesla/mig-user-guide/ (2024)"
)

_TABLE = (
    Accelerator("h100-sxm", "NVIDIA H100 SXM5 80GB", _H100_SXM_COMPUTE, 3.35e12, 80 * GB, 700, _H100_SOURCE,
                ("NVIDIA H100 80GB HBM3",), _MIG_7),
    Accelerator("h100-pcie", "NVIDIA H100 PCIe 80GB", _dense_tflops(fp8=1513, bf16=756, fp16=756, tf32=378, fp32=51),
                2.0e12, 80 * GB, 350, _H100_SOURCE, ("NVIDIA H100 PCIe",), _MIG_7),
    Accelerator("h100-nvl", "NVIDIA H100 NVL 94GB", _NVL_COMPUTE,
                3.9e12, 94 * GB, 400, _H100_NVL_SOURCE, ("NVIDIA H100 NVL",), _MIG_7),
    Accelerator("h800-sxm", "NVIDIA H800 SXM5 80GB", _H100_SXM_COMPUTE, 3.35e12, 80 * GB, 700, _H800_SOURCE,
                ("NVIDIA H800",), _MIG_7),
    Accelerator("gh200", "NVIDIA GH200 Grace Hopper 480GB (96GB HBM3 GPU)", _H100_SXM_COMPUTE, 4.0e12, 96 * GB,
                1000, _GH200_SOURCE, ("NVIDIA GH200 480GB",), _MIG_7),
    Accelerator("h200", "NVIDIA H200 SXM 141GB", _H100_SXM_COMPUTE, 4.8e12, 141 * GB, 700, _H200_SOURCE,
                ("NVIDIA H200",), _MIG_7),
    Accelerator("h200-nvl", "NVIDIA H200 NVL 141GB", _NVL_COMPUTE,
                4.8e12, 141 * GB, 600, _H200_SOURCE, ("NVIDIA H200 NVL",), _MIG_7),
    Accelerator("a100-80gb", "NVIDIA A100 SXM4 80GB", _A100_COMPUTE, 2.039e12, 80 * GB, 400, _A100_SOURCE,
                ("NVIDIA A100-SXM4-80GB",), _MIG_7),
    Accelerator("a100-40gb", "NVIDIA A100 SXM4 40GB", _A100_COMPUTE, 1.555e12, 40 * GB, 400, _A100_SOURCE,
                ("NVIDIA A100-SXM4-40GB",), _MIG_7),
    Accelerator("a100-pcie-80gb", "NVIDIA A100 PCIe 80GB", _A100_COMPUTE, 1.935e12, 80 * GB, 300, _A100_SOURCE,
                ("NVIDIA A100 80GB PCIe",), _MIG_7),
    Accelerator("a100-pcie-40gb", "NVIDIA A100 PCIe 40GB", _A100_COMPUTE, 1.555e12, 40 * GB, 250, _A100_SOURCE,
                ("NVIDIA A100-PCIE-40GB",), _MIG_7),
    Accelerator("a30", "NVIDIA A30 24GB", _dense_tflops(bf16=165, fp16=165, tf32=82, fp32=10.3), 933e9, 24 * GB,
                165, "NVIDIA A30 Tensor Core GPU datasheet, https://www.nvidia.com/en-us/data-center/products/a30-gpu/ "
                "(2021)", ("NVIDIA A30",), (4, 4)),
    Accelerator("a10", "NVIDIA A10 24GB", _dense_tflops(bf16=125, fp16=125, tf32=62.5, fp32=31.2), 600e9, 24 * GB,
                150, "NVIDIA A10 Tensor Core GPU datasheet, https://www.nvidia.com/en-us/data-center/products/a10-gpu/ "
                "(2021)", ("NVIDIA A10",)),
    Accelerator("a40", "NVIDIA A40 48GB", _dense_tflops(bf16=149.7, fp16=149.7, tf32=74.8, fp32=37.4), 696e9,
                48 * GB, 300, "NVIDIA A40 GPU datasheet, https://www.nvidia.com/en-us/data-center/a40/ (2021)",
                ("NVIDIA A40",)),
    Accelerator("l40s", "NVIDIA L40S", _dense_tflops(fp8=733, bf16=362.05, fp16=362.05, tf32=183, fp32=91.6), 864e9,
                48 * GB, 350, "NVIDIA L40S GPU datasheet, https://www.nvidia.com/en-us/data-center/l40s/ (2023)",
                ("NVIDIA L40S",)),
    Accelerator("l40", "NVIDIA L40", _dense_tflops(bf16=181.05, fp16=181.05, tf32=90.5, fp32=90.5), 864e9,
                48 * GB, 300, "NVIDIA L40 GPU datasheet, https://www.nvidia.com/en-us/data-center/l40/ (2022)",
                ("NVIDIA L40",)),
    Accelerator("l4", "NVIDIA L4", _dense_tflops(fp8=242.5, bf16=121, fp16=121, tf32=60, fp32=30.3), 300e9, 24 * GB, 72,
                "NVIDIA L4 Tensor Core GPU datasheet, https://www.nvidia.com/en-us/data-center/l4/ (2023)",
                ("NVIDIA L4",)),
    Accelerator("a10g", "NVIDIA A10G (AWS)", _dense_tflops(bf16=70, fp16=70, tf32=35, fp32=31.52), 600e9, 24 * GB,
                300, "no NVIDIA datasheet exists for this AWS-only part; figures as tabulated in Baseten, "
                "'NVIDIA A10 vs A10G for ML model inference', "
                "https://www.baseten.co/blog/nvidia-a10-vs-a10g-for-ml-model-inference/ (2023)",
                ("NVIDIA A10G",)),
    Accelerator("rtx-4090", "NVIDIA GeForce RTX 4090", _dense_tflops(bf16=165.2, fp16=165.2, tf32=82.6, fp32=82.6),
                1008e9, 24 * GB, 450, "NVIDIA Ada Lovelace GPU Architecture whitepaper v2.1 (FP32-accumulate "
                "tensor rates), "
                "https://images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf (2023)",
                ("NVIDIA GeForce RTX 4090",)),
    Accelerator("v100-sxm2-32gb", "NVIDIA V100 SXM2 32GB", _V100_SXM2_COMPUTE, 900e9, 32 * GB, 300, _V100_SOURCE,
                ("Tesla V100-SXM2-32GB",)),
    Accelerator("v100-sxm2-16gb", "NVIDIA V100 SXM2 16GB", _V100_SXM2_COMPUTE, 900e9, 16 * GB, 300, _V100_SOURCE,
                ("Tesla V100-SXM2-16GB",)),
    Accelerator("v100-pcie-32gb", "NVIDIA V100 PCIe 32GB", _V100_PCIE_COMPUTE, 900e9, 32 * GB, 250, _V100_SOURCE,
                ("Tesla V100-PCIE-32GB",)),
    Accelerator("v100-pcie-16gb", "NVIDIA V100 PCIe 16GB", _V100_PCIE_COMPUTE, 900e9, 16 * GB, 250, _V100_SOURCE,
                ("Tesla V100-PCIE-16GB",)),
    Accelerator("t4", "NVIDIA T4 16GB", _dense_tflops(fp16=65, fp32=8.1), 300e9, 16 * GB, 70,
                "NVIDIA T4 Tensor Core GPU datasheet (Turing: fp16 tensor cores, no bf16, no tf32; 65 TFLOPS is the "
                "dense FP16/FP32 mixed-precision rate), https://www.nvidia.com/en-us/data-center/tesla-t4/ (2019)",
                ("Tesla T4",)),
    Accelerator("cpu", "CPU (any)", {}, None, None, None,
                "no datasheet peak for an arbitrary CPU: its peak is the measured fp32 matmul ceiling "
                "(python -m profiling hardware --measure)"),
)
ACCELERATORS: dict[str, Accelerator] = {accelerator.key: accelerator for accelerator in _TABLE}


@dataclass(frozen=True)
class Interconnect:
    """The link a tensor-parallel group of one server all-reduces over: bytes/s per device in one direction
    (datasheets quote the bidirectional total, twice this)."""

    bytes_per_s: float
    source: str


_PCIE4 = Interconnect(32e9, "PCIe Gen4 x16: 64 GB/s bidirectional (PCI-SIG PCIe 4.0 specification); "
                      "the card's datasheet lists PCIe Gen4")
_PCIE5 = Interconnect(64e9, "PCIe Gen5 x16: 128 GB/s bidirectional (datasheet); NVLink bridges join 2 or 4 "
                      "cards only, so an 8-device group all-reduces over PCIe")
INTERCONNECTS: dict[str, Interconnect] = {
    "h100-sxm": Interconnect(450e9, f"NVLink 4: 900 GB/s bidirectional per GPU; {_H100_SOURCE}"),
    "h200": Interconnect(450e9, f"NVLink 4: 900 GB/s bidirectional per GPU; {_H200_SOURCE}"),
    "a100-80gb": Interconnect(300e9, f"NVLink 3: 600 GB/s bidirectional per GPU; {_A100_SOURCE}"),
    "a100-40gb": Interconnect(300e9, f"NVLink 3: 600 GB/s bidirectional per GPU; {_A100_SOURCE}"),
    "v100-sxm2-32gb": Interconnect(150e9, f"NVLink 2: 300 GB/s bidirectional per GPU; {_V100_SOURCE}"),
    "v100-sxm2-16gb": Interconnect(150e9, f"NVLink 2: 300 GB/s bidirectional per GPU; {_V100_SOURCE}"),
    "h100-pcie": _PCIE5, "h200-nvl": _PCIE5,
    "a100-pcie-80gb": _PCIE4, "a100-pcie-40gb": _PCIE4, "l40s": _PCIE4, "l4": _PCIE4, "a10g": _PCIE4,
    "rtx-4090": _PCIE4,
}


# Between servers: each device's share of its server's compute-fabric NICs, bytes/s in one direction (a NIC's
# Gb/s / 8). DGX/HGX servers give every GPU its own NIC on a rail-optimised fabric.
_DGX_HOPPER_NETWORK = ("InfiniBand NDR 400 Gb/s per GPU: DGX H100 and DGX H200 have four OSFP ports serving eight "
                       "single-port ConnectX-7 VPI, up to 400 Gb/s InfiniBand/Ethernet, one per GPU for the compute "
                       "fabric; NVIDIA DGX BasePOD reference architecture, 'Core Components', "
                       "https://docs.nvidia.com/dgx-basepod/reference-architecture-infrastructure-foundation-"
                       "enterprise-ai/latest/core-components.html (read 2026-12 through a search index)")
_DGX_A100_NETWORK = ("assumption (the usually quoted figure, not verified offline): InfiniBand HDR 200 Gb/s per GPU, "
                     "the NVIDIA DGX A100 datasheet's eight single-port ConnectX-6 VPI HDR adapters for the compute "
                     "fabric, one per GPU (2020)")
INTER_NODE: dict[str, Interconnect] = {
    "h100-sxm": Interconnect(400e9 / 8, _DGX_HOPPER_NETWORK),
    "h200": Interconnect(400e9 / 8, _DGX_HOPPER_NETWORK),
    "a100-80gb": Interconnect(200e9 / 8, _DGX_A100_NETWORK),
    "a100-40gb": Interconnect(200e9 / 8, _DGX_A100_NETWORK),
    # One 2-thread cloud VM per "server": the instance train-compare's CPU price assumes.
    "cpu": Interconnect(12.5e9 / 8, "assumption: AWS EC2 c6i.large network bandwidth, 'up to 12.5 Gbps' (AWS "
                        "instance types page), the instance the CPU's price assumes"),
}
DEFAULT_INTER_NODE = Interconnect(100e9 / 8 / 8, "assumption: no datasheet network for this device class; one "
                                  "100 Gb/s Ethernet NIC per 8-device server, 1.56 GB/s per device")


def inter_node(key: str) -> Interconnect:
    """The link one device of class `key` reaches other servers over (INTER_NODE, else DEFAULT_INTER_NODE)."""
    return INTER_NODE.get(key, DEFAULT_INTER_NODE)


class UnknownDeviceError(GptmeterError, ValueError):
    """A device (or a dtype of it) that is not in the table; the message says how to pass its peaks by hand."""


class HardwareCacheError(GptmeterError, ValueError):
    """A hardware cache file that cannot be read; the message says how to rebuild it."""


def accelerator(key: str) -> Accelerator:
    """Table entry by short key ("h100-sxm", "h200", "a100-80gb", ...)."""
    if key not in ACCELERATORS:
        raise UnknownDeviceError(f"unknown accelerator {key!r}; choose one of {', '.join(ACCELERATORS)}")
    return ACCELERATORS[key]


_MIG_NAME = re.compile(
    r"^(?P<parent>.+?) mig (?P<profile>(?:(?P<compute>\d+)c\.)?(?P<gpu>\d+)g\.(?P<memory>\d+)gb(?:\+\w+)*)$", re.I
)


def accelerator_for_device_name(device_name: str) -> Accelerator:
    """Table entry whose reported name (torch.cuda.get_device_name) is `device_name`, ignoring case.

    A MIG instance ("NVIDIA A100-SXM4-40GB MIG 1g.5gb", or "... MIG 1c.3g.40gb" for a compute
    instance) is its parent GPU scaled to its slices: see `_mig_instance`.
    """
    wanted = " ".join(device_name.split()).casefold()
    mig = _MIG_NAME.match(wanted)
    for entry in _TABLE:
        if any((mig.group("parent") if mig else wanted) == name.casefold() for name in entry.device_names):
            return _mig_instance(entry, mig) if mig else entry
    if mig:
        raise UnknownDeviceError(
            f"GPU {device_name!r} is a MIG instance of {mig.group('parent')!r}, which is not in the peak table "
            "(profiling/hardware.py); pass the instance's dense peak by hand (--peak-tflops, --peak-bandwidth-gbs)"
        )
    raise UnknownDeviceError(
        f"GPU {device_name!r} is not in the peak table (profiling/hardware.py); pass its dense peak by hand "
        "(--peak-tflops and --peak-bandwidth-gbs, or peak_flops= and peak_bandwidth=), or add it to the table"
    )


def _mig_instance(parent: Accelerator, mig: re.Match) -> Accelerator:
    """A MIG instance's share of its parent: compute × its GPU slices / the parent's, bandwidth × its memory slices.

    Memory slices are not in the name; they follow from the instance's memory (e.g. 3g.20gb on a
    40 GB A100 holds 4 of 8). Board power is the whole GPU's and is not split, so it is left out.
    """
    profile = mig.group("profile")
    if parent.mig_slices is None:
        raise UnknownDeviceError(f"{parent.name} has no MIG mode, so {profile!r} cannot be one of its instances")
    compute_slices, memory_slices = parent.mig_slices
    used = int(mig.group("compute") or mig.group("gpu"))
    memory_bytes = int(mig.group("memory")) * GB
    used_memory = min(memory_slices, max(1, round(memory_slices * memory_bytes / parent.memory_bytes)))
    if not 0 < used <= compute_slices:
        raise UnknownDeviceError(f"MIG profile {profile!r} asks for {used} of {parent.name}'s {compute_slices} slices")
    return dataclasses.replace(
        parent,
        key=f"{parent.key}-mig-{profile}",
        name=f"{parent.name} MIG {profile}",
        peak_flops={dtype: flops * used / compute_slices for dtype, flops in parent.peak_flops.items()},
        memory_bandwidth=parent.memory_bandwidth * used_memory / memory_slices,
        memory_bytes=memory_bytes,
        board_power_w=None,
        source=f"{parent.source}; scaled to {used}/{compute_slices} of the compute and {used_memory}/{memory_slices} "
        f"of the bandwidth per the {_MIG_USER_GUIDE}",
        device_names=(),
        mig_slices=None,
    )


def device_name(device: torch.device | str) -> str:
    """What the device calls itself; for a CPU the model name and the threads PyTorch uses (both set its speed)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{_cpu_model()} ({torch.get_num_threads()} threads)"


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "CPU"


def detect_accelerator(device: torch.device | str) -> Accelerator:
    """Table entry of `device`: the CPU entry for any CPU; raises UnknownDeviceError for a GPU not in the table."""
    import torch

    if torch.device(device).type == "cpu":
        return ACCELERATORS["cpu"]
    return accelerator_for_device_name(device_name(device))


# ----------------------------------------------------------------------------- measured ceilings


@dataclass(frozen=True)
class Ceilings:
    """Throughput this device reached: a view of its calibrated profile (see module docstring)."""

    device_name: str
    matmul_flops: dict[str, float]  # FLOP/s per dtype
    copy_bandwidth: float  # bytes/s, read + written
    matmul_size: int  # largest of M, N, K of the fastest matmul measured
    copy_bytes: int  # size of the largest copy measured
    torch_version: str
    measured_at: str  # ISO 8601, UTC


# ----------------------------------------------------------------------------- the peaks a run is measured against


@dataclass(frozen=True)
class Peaks:
    """Peak FLOP/s and bandwidth for one device and dtype, each with where it came from."""

    device_name: str
    accelerator: str | None  # table key; None for a GPU outside the table
    dtype: str
    flops: float  # the peak MFU is reported against
    flops_source: str
    bandwidth: float | None  # bytes/s
    bandwidth_source: str | None
    board_power_w: float | None
    measured: Ceilings | None  # also report MFU against measured_flops when present

    @property
    def measured_flops(self) -> float | None:
        return self.measured.matmul_flops.get(self.dtype) if self.measured else None


def tf32_matmuls_enabled() -> bool:
    """Whether CUDA float32 matmuls may use TF32 tensor cores, set through either of torch's switches.

    `fp32_precision` (torch >= 2.9) reflects allow_tf32 and set_float32_matmul_precision too; reading
    the legacy `allow_tf32` after the new switch was used raises, so it is only the fallback.
    """
    import torch

    matmul = torch.backends.cuda.matmul
    try:
        return matmul.fp32_precision == "tf32"
    except AttributeError:
        return bool(matmul.allow_tf32)


@contextlib.contextmanager
def tf32_matmuls(enabled: bool) -> Iterator[None]:
    """CUDA float32 matmuls with TF32 on or off inside the block, restored after, through the same switch
    that `tf32_matmuls_enabled` reads (the new one where torch has it, so no mixed-API error is raised)."""
    import torch

    matmul = torch.backends.cuda.matmul
    name, value = (("fp32_precision", "tf32" if enabled else "ieee") if hasattr(matmul, "fp32_precision")
                   else ("allow_tf32", enabled))
    before = getattr(matmul, name)
    setattr(matmul, name, value)
    try:
        yield
    finally:
        setattr(matmul, name, before)


def run_precision(device: torch.device | str, dtype: object) -> str:
    """The maths a run's matmuls use, and so the peak its MFU is taken against.

    bf16/fp16 (autocast or weights) use their tensor-core rate; float32 uses TF32 on a CUDA device
    with TF32 tensor cores (compute capability >= 8.0) when TF32 matmuls are enabled (the trainer
    enables them), and plain fp32 otherwise: CPUs, pre-Ampere GPUs, TF32 off.
    """
    import torch

    name, device = dtype_name(dtype), torch.device(device)
    if name != "fp32" or device.type != "cuda" or not tf32_matmuls_enabled():
        return name
    return "tf32" if torch.cuda.get_device_capability(device) >= AMPERE_CAPABILITY else name


def device_peaks(
    device: torch.device | str,
    dtype: object = "bf16",
    peak_flops: float | None = None,
    peak_bandwidth: float | None = None,
    measured: Ceilings | None = None,
) -> Peaks:
    """Peaks of `device` for `dtype`: hand-given values first, then the datasheet table, then (CPU) the measurement.

    `measured` is the device's measured ceilings (`device_profile.measured_ceilings`, a view of its
    calibrated profile); a CPU without a hand-given peak needs them, since no datasheet covers it. A GPU
    outside the table needs `peak_flops`.
    """
    import torch

    device = torch.device(device)
    name, dtype = device_name(device), dtype_name(dtype)
    try:
        entry = detect_accelerator(device)
    except UnknownDeviceError:
        if peak_flops is None:
            raise
        entry = None
    is_cpu = entry is not None and entry.key == "cpu"
    if is_cpu and peak_flops is None and measured is None:
        raise UnknownDeviceError("a CPU has no datasheet peak: calibrate it (python -m profiling calibrate) or "
                                 "give its peak by hand (--peak-tflops)")

    if peak_flops is not None:
        flops, flops_source = peak_flops, "given by hand"
    elif is_cpu:
        if dtype not in measured.matmul_flops:
            raise UnknownDeviceError(f"no measured {dtype} matmul ceiling on the CPU (measured: fp32); use --dtype fp32")
        flops = measured.matmul_flops[dtype]
        flops_source = (
            f"measured {dtype} matmul ceiling, n={measured.matmul_size}, {measured.measured_at} (no datasheet)"
        )
    else:
        flops, flops_source = entry.peak(dtype), f"datasheet: {entry.source}"

    if peak_bandwidth is not None:
        bandwidth, bandwidth_source = peak_bandwidth, "given by hand"
    elif entry is not None and entry.memory_bandwidth is not None:
        bandwidth, bandwidth_source = entry.memory_bandwidth, f"datasheet: {entry.source}"
    elif measured is not None:
        bandwidth, bandwidth_source = measured.copy_bandwidth, f"measured copy bandwidth, {measured.measured_at}"
    else:
        bandwidth, bandwidth_source = None, None
    return Peaks(
        device_name=name,
        accelerator=entry.key if entry else None,
        dtype=dtype,
        flops=flops,
        flops_source=flops_source,
        bandwidth=bandwidth,
        bandwidth_source=bandwidth_source,
        board_power_w=entry.board_power_w if entry else None,
        measured=measured,
    )


def mfu(flops_per_token: float, tokens_per_sec: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over a peak (datasheet or measured)."""
    if not peak_flops > 0:
        raise ValueError(f"peak FLOP/s must be positive, got {peak_flops}")
    return flops_per_token * tokens_per_sec / peak_flops


# ----------------------------------------------------------------------------- python -m profiling hardware


def table_text() -> str:
    header = f"{'key':<16}" + "".join(f"{d + ' TFLOP/s':>14}" for d in TABLE_DTYPES) + f"{'TB/s':>7}{'GB':>6}{'W':>6}"
    rows = [header]
    for entry in _TABLE:
        peaks = "".join(
            f"{entry.peak_flops[d] / 1e12:>14,.1f}" if d in entry.peak_flops else f"{'-':>14}" for d in TABLE_DTYPES
        )
        bandwidth = f"{entry.memory_bandwidth / 1e12:>7.2f}" if entry.memory_bandwidth else f"{'-':>7}"
        memory = f"{entry.memory_bytes / GB:>6.0f}" if entry.memory_bytes else f"{'-':>6}"
        power = f"{entry.board_power_w:>6.0f}" if entry.board_power_w else f"{'-':>6}"
        rows.append(f"{entry.key:<16}{peaks}{bandwidth}{memory}{power}")
    rows += ["", "dense peaks (sparsity figures halved); sources:"]
    rows += [f"  {entry.key}: {entry.source}" for entry in _TABLE]
    return "\n".join(rows)


def peaks_text(peaks: Peaks) -> str:
    lines = [
        f"device: {peaks.device_name} (table entry: {peaks.accelerator or 'none'})",
        f"peak {peaks.dtype}: {peaks.flops / 1e12:.4g} TFLOP/s ({peaks.flops_source})",
    ]
    if peaks.bandwidth:
        lines.append(f"peak bandwidth: {peaks.bandwidth / 1e9:,.0f} GB/s ({peaks.bandwidth_source})")
    ceilings = peaks.measured
    if ceilings is None:
        lines.append("measured ceilings: no calibrated profile cached; run with --measure")
        return "\n".join(lines)
    lines.append(f"measured ceilings ({ceilings.measured_at}, torch {ceilings.torch_version}):")
    for dtype, flops in ceilings.matmul_flops.items():
        lines.append(f"  {dtype} matmul n={ceilings.matmul_size}: {flops / 1e12:.4g} TFLOP/s")
    lines.append(f"  copy of {ceilings.copy_bytes / 2**20:,.0f} MiB: {ceilings.copy_bandwidth / 1e9:,.1f} GB/s")
    if peaks.measured_flops and peaks.flops_source.startswith("datasheet"):
        lines.append(f"  measured / datasheet {peaks.dtype}: {peaks.measured_flops / peaks.flops:.1%}")
    return "\n".join(lines)
