"""Accuracy and throughput of early exit vs the full model (issue 2, item 11).

Fine-tunes MiniLM on AG News train (or reuses --model), then labels AG News test with
(a) the full model (threshold > 1: every document runs every layer, same batching),
(b) batched early exit with row compaction, and (c) early exit one document at a time (the published
method's setting), at three thresholds. Every configuration runs --repeats times in this process; the
median time is reported. Results go to bench/results/early_exit_speed.{json,md}.

example:
  python bench/early_exit_speed.py                       # train (about 8 min on 2 cores), then measure
  python bench/early_exit_speed.py --model bench/work/ag_minilm --repeats 5
  python bench/early_exit_speed.py --model bench/work/ag_minilm --thresholds default --tag _calibrated
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from models import EarlyExitClassifier
from models.training import TrainConfig, train
from ops.examples import load_examples

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ag_news"
RESULTS = Path(__file__).resolve().parent / "results"


def measure(model, texts, gold, threshold, batch_size, repeats) -> dict:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        preds = model.predict(texts, threshold=threshold, batch_size=batch_size)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {
        "threshold": threshold, "batch_size": batch_size, "docs_per_s": len(texts) / seconds,
        "median_s": seconds, "times_s": times,
        "accuracy": sum(p.label == g for p, g in zip(preds, gold)) / len(gold),
        "mean_exit_layer": sum(p.exit_layer for p in preds) / len(preds),
        "flops_fraction": sum(p.flops for p in preds) / sum(p.full_flops for p in preds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bench/work/ag_minilm", help="model dir; trained here if missing")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--thresholds", default="0.7,0.9,0.99")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--tag", default="", help="suffix of the results files (early_exit_speed<tag>.md/json)")
    args = parser.parse_args()

    model_dir = Path(args.model)
    if not (model_dir / "rightsize.json").exists():
        config = TrainConfig(model="minilm", epochs=args.epochs, max_length=128, batch_size=32, lr=1e-4, seed=13)
        train(config, load_examples(f"{args.data}/train.jsonl"), load_examples(f"{args.data}/dev.jsonl"), out=model_dir)
    model = EarlyExitClassifier.from_pretrained(model_dir)
    test = load_examples(f"{args.data}/test.jsonl")
    thresholds = [model.config.threshold if t == "default" else float(t) for t in args.thresholds.split(",")]
    model.predict(test.texts[:64])  # warm-up: first-call allocations and thread pools

    rows = [{"mode": "full model", **measure(model, test.texts, test.labels, 2.0, args.batch_size, args.repeats)}]
    for t in thresholds:
        rows.append({"mode": "batched early exit", **measure(model, test.texts, test.labels, t, args.batch_size, args.repeats)})
    for t in thresholds:
        rows.append({"mode": "batch-size-1 early exit", **measure(model, test.texts, test.labels, t, 1, args.repeats)})

    full_rate = rows[0]["docs_per_s"]
    lines = [f"MiniLM (6 layers, exits {list(model.config.exit_layers)}) on AG News test ({len(test)} docs), "
             f"temperatures {[round(t, 3) for t in model.config.temperatures]}; device {model.device}, {torch.get_num_threads()} threads; "
             f"median of {args.repeats} runs in one process.", "",
             "| mode | threshold | batch | accuracy | mean exit layer | FLOPs vs full | docs/s | speed vs full |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = "-" if r["threshold"] > 1 else f"{r['threshold']:.2f}"
        lines.append(f"| {r['mode']} | {t} | {r['batch_size']} | {r['accuracy']:.4f} | {r['mean_exit_layer']:.2f} | "
                     f"{r['flops_fraction']:.1%} | {r['docs_per_s']:.1f} | {r['docs_per_s'] / full_rate:.2f}x |")
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"early_exit_speed{args.tag}.md").write_text(table + "\n")
    meta = {"model": str(model_dir), "model_id": model.model_id, "machine": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "device": str(model.device), "command": "python " + " ".join(sys.argv)}
    (RESULTS / f"early_exit_speed{args.tag}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
