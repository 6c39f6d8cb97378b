"""What every part of the suite shares: the data sets, the model recipes, the machine description and the
timing rule (a warm-up, then the median of ``repeats`` runs, in this process)."""

from __future__ import annotations

import os
import platform
import random
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from models.precision import cpu_has_native_bf16
from models.training import TrainConfig
from ops.examples import Examples, load_examples

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
WORK = ROOT / "bench" / "work"
MPNET_DIR = WORK / "all-mpnet-base-v2"  # bench/install_mpnet.py (make bench-setup) puts it there
SEED = 13
MODELS = ("minilm", "mpnet")
DATA_SETS = ("ag_news", "sst2", "snli")


@dataclass(frozen=True)
class Splits:
    train: Examples
    dev: Examples  # temperatures and thresholds are fitted here
    test: Examples  # every reported number is measured here


def subset(examples: Examples, rows, note: str = "") -> Examples:
    pick = lambda values: None if values is None else [values[i] for i in rows]  # noqa: E731
    return replace(examples, texts=pick(examples.texts), pairs=pick(examples.pairs), labels=pick(examples.labels),
                   source=f"{examples.source}{note}")


def prefix(examples: Examples, n: int) -> Examples:
    """The first ``n`` examples (a warm-up batch)."""
    return subset(examples, range(min(n, len(examples))))


def sample(examples: Examples, size: int | None, seed: int = SEED) -> Examples:
    """A seeded sample of ``size`` rows in file order (all of them when ``size`` is None or too big)."""
    if size is None or size >= len(examples):
        return examples
    return subset(examples, sorted(random.Random(seed).sample(range(len(examples)), size)),
                  f" (seeded sample of {size})")


# Training-set sizes: what 2 cores fine-tune in minutes (MiniLM) or a quarter of an hour (MPNet).
TRAIN_SIZES = {("minilm", "ag_news"): 2000, ("minilm", "sst2"): 5000, ("minilm", "snli"): None,
               ("mpnet", "ag_news"): 500, ("mpnet", "sst2"): 500, ("mpnet", "snli"): None}
SNLI_TRAIN_ROWS = 1000  # SNLI ships no training split here: its dev split is cut into train and dev


def splits(data: str, model: str, documents: int | None) -> Splits:
    """Train/dev/test of ``../shared/data/<data>``; the test split cut to its first ``documents`` rows."""
    folder = DATA / data
    fields = {"text_field": "premise", "pair_field": "hypothesis"} if data == "snli" else {}
    load = lambda split: load_examples(str(folder / f"{split}.jsonl"), **fields)  # noqa: E731
    test = load("test")
    if documents is not None and documents < len(test):
        test = subset(test, range(documents), f" (first {documents})")
    if data == "snli":
        dev = load("dev")
        return Splits(subset(dev, range(SNLI_TRAIN_ROWS), f" (rows 0-{SNLI_TRAIN_ROWS - 1})"),
                      subset(dev, range(SNLI_TRAIN_ROWS, len(dev)), f" (rows {SNLI_TRAIN_ROWS}-)"), test)
    return Splits(sample(load("train"), TRAIN_SIZES[model, data]), load("dev"), test)


def recipe(model: str, mode: str) -> TrainConfig:
    """How each backbone is fine-tuned. MiniLM's is bench/training_modes.py's (same exits, epochs, length and
    seed), so the two scripts share trained models."""
    if model == "minilm":
        return TrainConfig(model="minilm", exits=(2, 4, 6), epochs=3, max_length=64, batch_size=32, lr=1e-4,
                           seed=SEED, mode=mode, dynamics=mode == "joint")
    if model == "mpnet":
        if not (MPNET_DIR / "model.safetensors").is_file():
            raise SystemExit(f"{MPNET_DIR}: MPNet is not installed; run `make bench-setup` first")
        return TrainConfig(model=str(MPNET_DIR), exits=(3, 6, 9, 12), epochs=2, max_length=64, batch_size=16,
                           lr=5e-5, seed=SEED, mode=mode, dynamics=False)
    raise ValueError(f"unknown model {model!r}; known: minilm, mpnet")


def model_dir(model: str, data: str, mode: str) -> Path:
    if model == "minilm":
        return WORK / "training_modes" / data / mode  # shared with bench/training_modes.py
    return WORK / "suite" / model / data / mode


def timed(run: Callable[[], object], repeats: int, warm_up: Callable[[], object] | None = None) -> tuple[float, list[float], object]:
    """(median seconds, all times, the last result) of ``repeats`` calls after one warm-up call (``warm_up``,
    or ``run`` itself): first calls pay for allocations, thread pools and lazy imports."""
    (warm_up or run)()
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def machine(device: str, threads: int | None = None) -> dict:
    """The hardware and software the numbers came from; ``threads``: the torch threads a run will use (default:
    what torch uses now)."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "threads": threads or torch.get_num_threads(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": cpu_has_native_bf16(),
            "torch": torch.__version__, "python": platform.python_version(), "device": device, "gpu": None}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def machine_slug(info: dict) -> str:
    """A short file-name-safe name of the hardware: the GPU's when one ran the suite, else the CPU's."""
    name = info["gpu"] or info["cpu"]
    slug = "".join(c if c.isalnum() else "-" for c in name.lower())
    return "-".join(part for part in slug.split("-") if part)[:40] + ("" if info["gpu"] else f"-{info['threads']}t")
