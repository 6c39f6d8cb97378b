"""Inference and training precision: which dtype to run the backbone in, and the autocast context that does it.

The backbone's matrix products run in the chosen precision under ``torch.autocast`` (weights stay float32,
so one loaded model serves every precision); the exit heads' softmax and the temperature division always run
in float32 (``EarlyExitClassifier.exit_probabilities``), so confidences stay comparable across precisions.

``auto`` picks bfloat16 on a CPU that computes it natively (AVX512-BF16 or AMX-BF16 in the CPU's flags, not just
a torch build that can emulate it), bfloat16 on a CUDA device that supports it and float16 on an older one,
and float32 otherwise.

``int8`` is chosen by name only, for CPU inference: the feed-forward Linear layers (two thirds of a BERT layer's
FLOPs) are replaced at load by dynamically quantised int8 ones (int8 weights, activations quantised per batch),
and the rest runs in float32. Attention projections stay float32: quantising every Linear moved MiniLM's pooled
states far (cosine 0.88) where the feed-forward ones alone cost about a point of accuracy (bench/precision.py).
It uses torch.ao's eager dynamic quantisation, which torch has deprecated in favour of torchao; it works in the
pinned torch, and moves to torchao when the pin moves.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from models.config import DTYPE_CHOICES, PRECISIONS

log = logging.getLogger(__name__)

# autocast's dtype per precision: int8's quantised layers compute in int8 by themselves, the rest in float32
DTYPES = dict(zip(PRECISIONS, (torch.float32, torch.bfloat16, torch.float16, torch.float32)))
_BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 AVX512-BF16 / AMX; "bf16" on Arm's Features line


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU's flags (Linux /proc/cpuinfo: x86 "flags", Arm "Features") include bfloat16
    instructions. Elsewhere False: no cheap, reliable way to know."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            return bool(_BF16_CPU_FLAGS & set(line.split(":", 1)[1].split()))
    return False


def cuda_has_native_bf16(device: torch.device) -> bool:
    """Ampere (compute capability 8.0) and later; torch's is_bf16_supported() also says yes where bfloat16
    is only emulated (T4, V100), which is slower than float16 there."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def resolve_dtype(name: str, device: torch.device | str) -> str:
    """``auto`` -> the precision for ``device`` (see the module docstring); an explicit name is checked."""
    device = torch.device(device)
    if name == "auto":
        if device.type == "cuda":
            return "bfloat16" if cuda_has_native_bf16(device) else "float16"
        return "bfloat16" if cpu_has_native_bf16() else "float32"
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPE_CHOICES}, got {name!r}")
    if name == "int8" and device.type != "cpu":
        raise ValueError(f"int8 runs on the CPU only (dynamic quantisation); on {device.type} use bfloat16 or "
                         "float16, or --dtype auto")
    if device.type == "cpu" and (name == "float16" or (name == "bfloat16" and not cpu_has_native_bf16())):
        _warn_once(f"{name} on this CPU is emulated and slower than float32")
    return name


@functools.cache
def _warn_once(message: str) -> None:
    """Once per process: a job resolves its precision in several places (launcher, trial, each worker's load)."""
    log.warning(message)


def autocast(device_type: str, dtype: str):
    """The context that runs a forward pass in ``dtype``; a no-op for float32."""
    if DTYPES[dtype] == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=DTYPES[dtype])


def quantize_feed_forward(layers: Iterable[nn.Module]) -> int:
    """Replaces, in place, every Linear of each encoder layer in ``layers`` that is not part of its attention
    block (BERT, RoBERTa, MPNet: intermediate.dense and output.dense; DistilBERT: ffn.lin1 and lin2) by a
    dynamically quantised int8 Linear; returns how many were replaced."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    replaced = 0
    for layer in layers:
        for name, module in list(layer.named_modules()):
            if type(module) is not nn.Linear or "attention" in name.split("."):
                continue
            parent_name, _, child = name.rpartition(".")
            with warnings.catch_warnings():  # torch.ao's deprecation notices, once per layer (see the docstring)
                warnings.simplefilter("ignore", UserWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                setattr(layer.get_submodule(parent_name), child, DynamicInt8Linear.from_float(_with_qconfig(module)))
            replaced += 1
    return replaced


def _with_qconfig(linear: nn.Linear) -> nn.Linear:
    from torch.ao.quantization import default_dynamic_qconfig

    linear.qconfig = default_dynamic_qconfig  # int8 weights, per-tensor; what quantize_dynamic uses
    return linear
