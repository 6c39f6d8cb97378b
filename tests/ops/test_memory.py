"""ops/memory.py: freed heap pages really go back to the OS (glibc), which is what keeps a long labelling job's
resident memory flat (bench/label_memory.py measures the job itself)."""

import ctypes
import subprocess
import sys

import pytest

from ops.memory import _MALLOC_TRIM, release_freed_memory


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(_MALLOC_TRIM is None, reason="glibc's malloc_trim only")
def test_release_returns_fragmented_free_blocks_to_the_os():
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    # 200 MiB of 4 KiB blocks (below the mmap threshold, so they live in the heap), touched so they are
    # resident; then every block but one in 64 is freed: the survivors pin the heap, so nothing is returned
    # on free() alone, as with a labelling job's mixed-shape tensors.
    blocks = [libc.malloc(4096) for _ in range(51_200)]
    for b in blocks:
        ctypes.memset(b, 1, 4096)
    kept = blocks[::64]
    for i, b in enumerate(blocks):
        if i % 64:
            libc.free(b)
    before = _rss_mib()
    try:
        assert release_freed_memory() is True
        assert before - _rss_mib() > 100  # MiB: most of the ~197 MiB freed is given back
    finally:
        for b in kept:
            libc.free(b)


def test_a_child_reports_its_own_peak_not_its_parents():
    """ru_maxrss carries the parent's peak across fork and exec; peak_rss_mib (VmHWM) does not."""
    held = bytearray(400 * 1024 * 1024)
    held[::4096] = b"\1" * len(held[::4096])  # touch every page: resident in this process
    code = ("import resource; from ops.memory import peak_rss_mib; "
            "print(peak_rss_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    ours, maxrss = map(float, subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                             text=True).stdout.split())
    assert maxrss >= 400 > 100 > ours > 1
    del held
