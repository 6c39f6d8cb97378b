"""Inference and training precision: which dtype to run the backbone in, and the autocast context that does it.

The backbone's matrix products run in the chosen precision under ``torch.autocast`` (weights stay float32,
so one loaded model serves every precision); the exit heads' softmax and the temperature division always run
in float32 (``EarlyExitClassifier.exit_probabilities``), so confidences stay comparable across precisions.

``auto`` picks bfloat16 on a CPU that computes it natively (AVX512-BF16 or AMX-BF16 in the CPU's flags, not just
a torch build that can emulate it), bfloat16 on a CUDA device that supports it and float16 on an older one,
and float32 otherwise.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

from models.config import PRECISIONS

DTYPES = dict(zip(PRECISIONS, (torch.float32, torch.bfloat16, torch.float16)))
DTYPE_CHOICES = ("auto", *PRECISIONS)
_BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16"}


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU's flags (Linux /proc/cpuinfo) include a bfloat16 instruction set."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux: no cheap, reliable way to know, so no
            return False
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return bool(_BF16_CPU_FLAGS & set(line.split(":", 1)[1].split()))
    return False


def resolve_dtype(name: str, device: torch.device | str) -> str:
    """``auto`` -> the precision for ``device`` (see the module docstring); an explicit name is checked."""
    device_type = torch.device(device).type
    if name == "auto":
        if device_type == "cuda":
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return "bfloat16" if cpu_has_native_bf16() else "float32"
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPE_CHOICES}, got {name!r}")
    if name == "float16" and device_type == "cpu":
        log.warning("float16 on a CPU is emulated and slow; bfloat16 or float32 is the better choice there")
    return name


def autocast(device_type: str, dtype: str):
    """The context that runs a forward pass in ``dtype``; a no-op for float32."""
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=DTYPES[dtype])
