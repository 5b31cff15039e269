"""Keep freed CPU memory mapped for reuse in a training process (glibc's malloc on Linux).

PyTorch's CPU tensors come from the C library's malloc. glibc hands a large block (above its mmap threshold,
or at the top of the heap beyond its trim threshold) back to the kernel when it is freed, so the next step's
tensor of the same size is mapped afresh and every one of its pages faults on first touch. A training step
frees and re-allocates the same sizes every time, so the faults repeat at every step. Measured on the 2-core
VM these benchmarks run on: the 1→16-channel 5×5 convolution of a 128-image batch took 4.9–6.1 ms with glibc's
defaults (~4,000 page faults per call under `perf stat`, ~1.4 µs each) and 0.51–0.57 ms with freed memory kept
(`python benchmarks/bench_cpu_env.py malloc`); the main job took 37.0–38.6 s of process wall time with 1.24 M
minor faults and 35.7 s with 0.41 M (`/usr/bin/time -f "%e s %R faults" fastdstn train fmnist-quick --out DIR`,
with FASTDSTN_KEEP_FREED_MEMORY=0 and without).

This is what PyTorch's CPU performance guide gets from jemalloc or tcmalloc (LD_PRELOAD); here it is done
with glibc's own knobs (mallopt), for the CLI's training processes only: importing fastdstn changes nothing.
Nothing is changed when the user chose an allocator or malloc settings (LD_PRELOAD, MALLOC_* or GLIBC_TUNABLES
in the environment) or sets FASTDSTN_KEEP_FREED_MEMORY=0.
"""
from __future__ import annotations

import ctypes
import os
import platform

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
# glibc caps the mmap threshold at 32 MB on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX): blocks above it stay mapped
# per allocation. Freed heap memory is returned to the kernel only beyond 1 GB, and the heap grows 64 MB at a time.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 64 << 20


def _user_chose_allocator(environ) -> str:
    """The environment variable that shows the user configured the allocator, or ""."""
    if environ.get("FASTDSTN_KEEP_FREED_MEMORY", "1") == "0":
        return "FASTDSTN_KEEP_FREED_MEMORY"
    for name in ("LD_PRELOAD", "GLIBC_TUNABLES"):
        if environ.get(name):
            return name
    return next((name for name in environ if name.startswith("MALLOC_")), "")


def keep_freed_memory(environ=None) -> bool:
    """Set glibc's malloc to keep freed memory for reuse (see the module docstring). Returns whether it did: False
    off Linux/glibc or when the user configured the allocator."""
    environ = os.environ if environ is None else environ
    if platform.system() != "Linux" or _user_chose_allocator(environ):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # glibc, not musl: mallopt's parameters are glibc's
    except (OSError, AttributeError):
        return False
    settings = ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD))
    return all(libc.mallopt(param, value) == 1 for param, value in settings)
