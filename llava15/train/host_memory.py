"""Host-memory reuse for training on CPU.

glibc's malloc serves every block above its mmap threshold (at most 32 MiB, and it starts at 128 KiB)
with a fresh `mmap`, and gives it back to the kernel when freed. A training step allocates and frees
hundreds of activations and gradients larger than that (bench-small stage 2: [6167, 1376] fp32 is
34 MiB), so each step faults all of them in again page by page. Raising the mmap threshold and the
trim threshold makes freed blocks stay in the heap for the next step's tensors of the same sizes.
bench-small stage 2 on the 2-core CPU: 180-210 k → 30 k minor page faults and 0.55 → 0.15 s of kernel
time per step; two processes stepping alternately on the same batches, 4.23 → 3.85 s per step
(benchmarks/RESULTS.md). The memory stays mapped to the process instead of going back to the kernel
between steps: the peak is what it was, the low points between steps are higher.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap
TRIM_THRESHOLD = 1 << 30  # the heap's free top is handed back only above 1 GiB


def keep_freed_host_memory() -> bool:
    """Tune glibc malloc so freed training tensors are reused instead of unmapped; False where the C
    library is not glibc (musl, macOS, Windows), which is left as it is."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def release_freed_host_memory() -> bool:
    """Give freed heap memory back to the kernel now (glibc `malloc_trim(0)`): after setup, where rank 0
    held the whole model once, so its resident size is what it uses from then on."""
    name = ctypes.util.find_library("c")
    try:
        return bool(ctypes.CDLL(name).malloc_trim(0)) if name else False
    except (OSError, AttributeError):
        return False


def reset_peak_rss() -> bool:
    """Restart this process's peak resident size (`VmHWM`) from its current size (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float | None:
    """This process's peak resident size since start or the last `reset_peak_rss` (Linux), in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None
