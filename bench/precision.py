"""Precision x early exit: documents/second and accuracy of float32, bfloat16 and int8 (``--dtype int8``: the
feed-forward layers quantised at load), each for the full model and for early exit at the threshold calibrated
in that precision, on AG News test with the calibrated MiniLM. Medians of --repeats runs after a warm-up, all in
one process, threads fixed.

The model is trained and calibrated in each precision (target drop 0.01 on dev) into --model if missing.

  python bench/precision.py                                   # 1,000 test documents, 3 repeats
  python bench/precision.py --documents 300 --repeats 3       # where bfloat16 is emulated (no AVX512-BF16)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from models import EarlyExitClassifier
from models.calibration import CalibrationConfig, calibrate
from models.precision import cpu_has_native_bf16
from models.training import TrainConfig, train
from ops.examples import load_examples

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ag_news"
RESULTS = Path(__file__).resolve().parent / "results"
FULL = 2.0  # a threshold no confidence reaches: every document runs every layer
PRECISIONS = ("float32", "bfloat16", "int8")  # float16 is emulated on a CPU, and slower than bfloat16


def prepared_model(directory: Path) -> None:
    """Fine-tunes MiniLM on AG News train and calibrates it in each of PRECISIONS, unless already done."""
    if not (directory / "training.json").is_file():
        config = TrainConfig(model="minilm", epochs=2, max_length=128, batch_size=32, lr=1e-4, seed=13, dynamics=False)
        train(config, load_examples(str(DATA / "train.jsonl")), load_examples(str(DATA / "dev.jsonl")), out=directory)
    calibrations = json.loads((directory / "rightsize.json").read_text()).get("calibrations", {})
    for dtype in PRECISIONS:
        if dtype not in calibrations:
            model = EarlyExitClassifier.from_pretrained(directory, device="cpu", dtype=dtype)
            calibrate(model, load_examples(str(DATA / "dev.jsonl")), CalibrationConfig(target_drop=0.01), out=directory)


def measure(model: EarlyExitClassifier, texts, gold, threshold: float, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictions = model.predict(texts, threshold=threshold, batch_size=64)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"threshold": threshold, "docs_per_s": len(texts) / seconds, "times_s": times,
            "accuracy": sum(p.label == g for p, g in zip(predictions, gold)) / len(gold),
            "mean_exit_layer": sum(p.exit_layer for p in predictions) / len(predictions),
            "flops_fraction": sum(p.flops for p in predictions) / sum(p.full_flops for p in predictions)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bench/work/ag_minilm_precision")
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    directory = Path(args.model)
    prepared_model(directory)
    test = load_examples(str(DATA / "test.jsonl"), limit=args.documents)

    rows = []
    for dtype in PRECISIONS:
        model = EarlyExitClassifier.from_pretrained(directory, device="cpu", dtype=dtype)
        model.predict(test.texts[:64])  # warm-up
        for mode, threshold in (("full model", FULL), ("early exit", model.config.threshold)):
            rows.append({"precision": dtype, "mode": mode, **measure(model, test.texts, test.labels, threshold,
                                                                    args.repeats)})
            print(rows[-1]["precision"], mode, f"{rows[-1]['docs_per_s']:.1f} docs/s",
                  f"accuracy {rows[-1]['accuracy']:.4f}", flush=True)
    base = rows[0]
    machine = {"cpu": platform.processor() or platform.machine(), "native_bf16": cpu_has_native_bf16(),
               "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": args.threads,
               "torch": torch.__version__}
    results = {"machine": machine, "documents": len(test), "repeats": args.repeats, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "precision.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [f"AG News test ({len(test)} documents), MiniLM fine-tuned on AG News train and calibrated per precision "
             f"(target drop 0.01 on dev); CPU capability {machine['torch_cpu_capability']}, native bfloat16: "
             f"{machine['native_bf16']}; {args.threads} threads; median of {args.repeats} after a warm-up, one process.",
             "", "| precision | mode | threshold | accuracy | mean exit layer | FLOPs | docs/s | vs float32 full |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        threshold = "-" if r["threshold"] > 1 else f"{r['threshold']:.3f}"
        lines.append(f"| {r['precision']} | {r['mode']} | {threshold} | {r['accuracy']:.4f} | "
                     f"{r['mean_exit_layer']:.2f} | {r['flops_fraction']:.1%} | {r['docs_per_s']:.1f} | "
                     f"{r['docs_per_s'] / base['docs_per_s']:.2f}x |")
    (RESULTS / "precision.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
