"""Keep freed host memory in the process, so that each step reuses its activations' pages instead of faulting them in.

glibc's malloc hands large blocks back to the operating system: those above its mmap threshold on every free, and
the top of the heap once more than its trim threshold lies free there. Both thresholds start small and adapt only
to the largest block freed so far, so a step whose activations are freed between two calls of the model returns
them, and the next step takes a page fault (and a page of zeros) for every 4 KiB it writes again. On the 2-core CPU
this was 560 faults and 0.6 ms of system time in each 5 ms prefill of a 0.13M-parameter model at batch 16, time
that the device profile's operations, timed alone on reused buffers, never see (docs/benchmarks.md, format 10).
PyTorch's CPU tuning guide recommends jemalloc or TCMalloc for the same reason; these two settings get glibc there
without a preloaded library.

The setting is for the whole process, so the command lines (train.py, sample.py, `python -m profiling`, the
benchmarks) make it, not the library: calibration and the tools then run under the same allocator. Memory kept so
counts as resident: `release_freed_memory` gives it back where a count of the memory in use begins.
"""

from __future__ import annotations

import ctypes
import platform

# mallopt's parameter numbers (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# The largest mmap threshold glibc accepts on 64-bit hosts; blocks above it (tensors over 32 MiB) are still mapped
# and unmapped each time, where the fault costs little beside the work on them.
MMAP_THRESHOLD_BYTES = 32 * 2**20
# Free memory the heap keeps at its top: a step's activations up to this size stay mapped between steps. It is
# reused, not grown: the process holds at most its peak use of blocks under the mmap threshold.
TRIM_THRESHOLD_BYTES = 1 * 2**30


def on_glibc() -> bool:
    """Whether this process runs on Linux with glibc, whose mallopt takes the settings above."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def keep_freed_memory() -> bool:
    """Set glibc's thresholds as above; True if they were set, False where the C library is not glibc."""
    if not on_glibc():
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD,
                                                                                   TRIM_THRESHOLD_BYTES))


def release_freed_memory() -> None:
    """Hand the freed memory the process keeps back to the system (glibc's malloc_trim), so that what it holds
    resident is what it uses: before a peak-memory count restarts (profiling.meter.reset_peak_memory), else a
    calibration's freed buffers, kept, would count in the run's peak. The next step faults its pages in once."""
    if on_glibc():
        ctypes.CDLL(None).malloc_trim(0)
