"""Giving freed heap memory back to the operating system between chunks of a long labelling job.

Every batch allocates and frees tensors and tokenizer buffers of a different shape (documents differ in
length). glibc's malloc keeps such freed blocks in its arenas, fragmented, instead of returning them, so a
process's resident memory climbs with the number of documents it has labelled although nothing is live.
Seen with ``rightsize label`` on the DirectRunner: RSS climbed to 1.45 GiB over 300,000 documents without a
trim, and stayed near 0.55-0.6 GiB with ``malloc_trim`` after each chunk (bench/label_memory.py records the
peaks at 10k, 100k and 1M documents).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys


def _glibc_malloc_trim():
    """glibc's ``malloc_trim``, or None where there is none (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_MALLOC_TRIM = _glibc_malloc_trim()


def release_freed_memory() -> bool:
    """Returns free heap pages to the OS (glibc only; elsewhere a no-op). True if any memory was released."""
    return bool(_MALLOC_TRIM(0)) if _MALLOC_TRIM is not None else False


def peak_rss_mib() -> float:
    """This process's peak resident memory, MiB: the high-water mark of its own address space (VmHWM). Not
    ``ru_maxrss``: Linux carries a process's peak across exec, so a child that a large process started reports
    at least its parent's memory (a 1 GiB benchmark launching a 300 MiB report read 1092 MiB)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024  # kB
    except (OSError, StopIteration):  # not Linux: the best there is
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)
