"""Precision x early exit: documents/second and accuracy of float32, bfloat16 and int8 (``--dtype int8``: the
feed-forward layers quantised at load), each for the full model and for early exit at the threshold calibrated
in that precision, on AG News test with the calibrated MiniLM. Medians of --repeats runs after a warm-up, all in
one process, threads fixed.

A missing --model is fine-tuned first with the benchmark suite's MiniLM recipe (bench/suite/common.py: 2,000
seeded AG News training examples, 3 epochs, 64 tokens) and the exits of --exits; then it is calibrated in each
precision it has no calibration for (target drop 0.01 on dev). Results go to
bench/results/precision-<machine>-exits-<exit layers>.{json,md}: a file per machine, since bfloat16's speed
depends on whether the CPU has it natively (the older precision.{json,md} are an AMD EPYC's, which has not),
and per exit layout.

  python bench/precision.py                                   # 1,000 test documents, 3 repeats, exits 2,4,6
  python bench/precision.py --model bench/work/ag_minilm_precision_1-6 --exits 1,2,3,4,5,6
  python bench/precision.py --documents 300 --repeats 3       # where bfloat16 is emulated (no AVX512-BF16)
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from models import EarlyExitClassifier
from models.calibration import CalibrationConfig, calibrate
from models.classifier import read_model_config
from models.training import train
from ops.examples import load_examples
from suite.common import machine as describe_machine
from suite.common import machine_slug, recipe, splits
from suite.speed_accuracy import timed_predict

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ag_news"
RESULTS = Path(__file__).resolve().parent / "results"
FULL = 2.0  # a threshold no confidence reaches: every document runs every layer
PRECISIONS = ("float32", "bfloat16", "int8")  # float16 is emulated on a CPU, and slower than bfloat16


def prepared_model(directory: Path, exits: tuple[int, ...] | None) -> tuple[int, ...]:
    """Fine-tunes MiniLM on AG News with ``exits`` (default: the recipe's) unless ``directory`` holds a model
    already, and calibrates it in each of PRECISIONS it has no calibration for; returns its exit layers."""
    if not (directory / "training.json").is_file():
        parts = splits("ag_news", "minilm", None)
        config = replace(recipe("minilm", "joint"), dynamics=False)
        train(replace(config, exits=exits) if exits else config, parts.train, parts.dev, out=directory)
    exit_layers = tuple(read_model_config(directory).exit_layers)
    if exits and exits != exit_layers:
        raise SystemExit(f"{directory} has exits {exit_layers}, not --exits {exits}: name another --model")
    calibrations = json.loads((directory / "rightsize.json").read_text()).get("calibrations", {})
    for dtype in PRECISIONS:
        if dtype not in calibrations:
            model = EarlyExitClassifier.from_pretrained(directory, device="cpu", dtype=dtype)
            calibrate(model, load_examples(str(DATA / "dev.jsonl")), CalibrationConfig(target_drop=0.01), out=directory)
    return exit_layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bench/work/ag_minilm_precision")
    parser.add_argument("--exits", default=None,
                        help="exit layers of a model trained now (a missing --model; default 2,4,6); an existing "
                             "--model with other exits is refused")
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    directory = Path(args.model)
    exit_layers = prepared_model(directory, tuple(int(x) for x in args.exits.split(",")) if args.exits else None)
    test = load_examples(str(DATA / "test.jsonl"), limit=args.documents)

    rows = []
    for dtype in PRECISIONS:
        model = EarlyExitClassifier.from_pretrained(directory, device="cpu", dtype=dtype)
        gold = np.array(test.label_ids(model.config.labels))
        for mode, threshold in (("full model", FULL), ("early exit", model.config.threshold)):
            measured = timed_predict(model, test, gold, threshold, batch_size=64, repeats=args.repeats)
            rows.append({"precision": dtype, "mode": mode, "threshold": threshold, **measured})
            print(dtype, mode, f"{measured['docs_per_s']:.1f} docs/s", f"accuracy {measured['accuracy']:.4f}",
                  flush=True)
    base = rows[0]
    machine = describe_machine("cpu", args.threads)
    results = {"machine": machine, "documents": len(test), "repeats": args.repeats, "exit_layers": list(exit_layers),
               "training": json.loads((directory / "training.json").read_text()).get("config"), "rows": rows,
               "command": "python bench/precision.py " + " ".join(sys.argv[1:])}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"precision-{machine_slug(machine)}-exits-{'-'.join(map(str, exit_layers))}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [f"AG News test ({len(test)} documents), MiniLM with exits after layers {', '.join(map(str, exit_layers))}, "
             "fine-tuned on AG News train and calibrated per precision "
             f"(target drop 0.01 on dev); {machine['cpu']}, CPU capability {machine['torch_cpu_capability']}, native bfloat16: "
             f"{machine['native_bf16']}; {args.threads} threads; median of {args.repeats} after a warm-up, one process.",
             "", "| precision | mode | threshold | accuracy | mean exit layer | FLOPs | docs/s | vs float32 full |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        threshold = "-" if r["threshold"] > 1 else f"{r['threshold']:.3f}"
        lines.append(f"| {r['precision']} | {r['mode']} | {threshold} | {r['accuracy']:.4f} | "
                     f"{r['mean_exit_layer']:.2f} | {r['flops_fraction']:.1%} | {r['docs_per_s']:.1f} | "
                     f"{r['docs_per_s'] / base['docs_per_s']:.2f}x |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
