"""Mixed-precision fine-tuning: seconds per training step of `rightsize train` in float32 and in bfloat16
autocast (and float16 with a gradient scaler on CUDA), in one process, threads fixed.

Each run is one epoch of the real training loop (models/training.py: autocast forward, summed exit losses in
float32, backward, clipping, AdamW) over the same seeded AG News sample; the epoch's seconds (with a small dev
evaluation) are divided by its steps. Precisions alternate within each repeat, after a warm-up run of each;
the median of --repeats is reported, with the ratio to float32 and the training loss (the same data and seed,
so the losses should agree closely).

Results go to bench/results/train_precision-<machine>.{json,md} (a file per machine: the saving depends on
whether the CPU has native bfloat16; the older train_precision.{json,md} are an AMD EPYC's, which has none).

examples:
  python bench/train_precision.py                                  # MiniLM, 256 examples, 3 repeats
  python bench/train_precision.py --examples 128 --repeats 3 --dtypes float32,bfloat16
  python bench/train_precision.py --dtypes float32,bfloat16,float16 # on a CUDA machine
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite.common import DATA, machine, machine_slug, sample  # noqa: E402

from models.training import TrainConfig, train  # noqa: E402
from ops.examples import load_examples  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def one_epoch(dtype: str, examples, dev) -> tuple[float, float]:
    """(seconds per training step, mean training loss) of one epoch of `train` in ``dtype``. The epoch's clock
    also covers its dev evaluation, kept small (--dev documents, forward only)."""
    config = TrainConfig(model="minilm", exits=(2, 4, 6), epochs=1, max_length=64, batch_size=32, lr=1e-4, seed=13,
                         dynamics=False, dtype=dtype)
    _, report = train(config, examples, dev)
    steps = -(-len(examples) // config.batch_size)
    return report.epochs[0].seconds / steps, report.epochs[0].train_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=256, help="AG News training examples per epoch")
    parser.add_argument("--dev", type=int, default=32, help="dev examples evaluated at the end of the epoch")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    dtypes = args.dtypes.split(",")
    examples = sample(load_examples(str(DATA / "ag_news" / "train.jsonl")), args.examples)
    dev = sample(load_examples(str(DATA / "ag_news" / "dev.jsonl")), args.dev)
    for dtype in dtypes:  # warm-up: first-call allocations, autocast caches
        one_epoch(dtype, examples, dev)
    runs: dict[str, list[tuple[float, float]]] = {d: [] for d in dtypes}
    for _ in range(args.repeats):
        for dtype in dtypes:
            runs[dtype].append(one_epoch(dtype, examples, dev))
    base = statistics.median(s for s, _ in runs[dtypes[0]])
    rows = [{"dtype": d, "seconds_per_step": round(statistics.median(s for s, _ in runs[d]), 4),
             "speedup_vs_" + dtypes[0]: round(base / statistics.median(s for s, _ in runs[d]), 3),
             "train_loss": round(statistics.median(loss for _, loss in runs[d]), 4)} for d in dtypes]
    info = machine("cuda" if torch.cuda.is_available() else "cpu")
    lines = [f"Mixed-precision fine-tuning: MiniLM, exits 2/4/6, {args.examples} AG News examples, batch 32, "
             f"64 tokens; one epoch per run, median of {args.repeats} after a warm-up, one process. "
             f"{info['gpu'] or info['cpu']}, {info['threads']} threads, native bfloat16: {info['native_bf16']}.", "",
             f"| precision | seconds per step | vs {dtypes[0]} | training loss |", "|---|---|---|---|",
             *[f"| {r['dtype']} | {r['seconds_per_step']:.3f} | {r['speedup_vs_' + dtypes[0]]:.2f}x | "
               f"{r['train_loss']:.4f} |" for r in rows]]
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"train_precision-{machine_slug(info)}"
    stem.with_suffix(".md").write_text(table + "\n")
    stem.with_suffix(".json").write_text(json.dumps(
        {"machine": info, "examples": args.examples, "dev": args.dev, "repeats": args.repeats, "rows": rows,
         "command": "python bench/train_precision.py " + " ".join(sys.argv[1:])}, indent=2) + "\n")


if __name__ == "__main__":
    main()
