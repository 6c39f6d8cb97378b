"""``make demo``: fine-tune the packaged MiniLM on BBC News, calibrate it on the dev split, then label its
test split with early exit.

Runs offline on 2 CPU cores in a few minutes. Everything it writes goes under ``runs/demo/``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import pyarrow.parquet as pq

from flows.predict import predict_file
from models.calibration import CalibrationConfig, calibrate
from models.training import TrainConfig, train
from ops.calibration import ABOVE_ONE
from ops.corpora import read_bbc_news, split_records, write_jsonl
from ops.examples import load_examples

TARGET_DROP = 0.01  # calibration picks the cheapest threshold losing at most one accuracy point on dev

# 64 tokens hold a BBC article's headline and lead, which is what decides its topic; it keeps training
# at ~2 minutes an epoch on 2 cores.
DEMO_TRAINING = TrainConfig(model="minilm", epochs=2, max_length=64, batch_size=32, lr=1e-4, seed=13)


def run_demo(out: Path, config: TrainConfig = DEMO_TRAINING) -> dict:
    started = time.perf_counter()
    data = out / "data"
    splits = dict(zip(("train", "dev", "test"), split_records(read_bbc_news())))
    for name, records in splits.items():
        write_jsonl(records, data / f"{name}.jsonl")
    print(f"BBC News split 80/10/10 -> {data}")

    dev = load_examples(str(data / "dev.jsonl"))
    model, _ = train(config, load_examples(str(data / "train.jsonl")), dev, out=out / "model")
    calibration = calibrate(model, dev, CalibrationConfig(target_drop=TARGET_DROP), out=out / "model")
    test = {r["id"]: r["label"] for r in splits["test"]}

    full = predict_file(model, str(data / "test.jsonl"), str(out / "predictions_full.parquet"), threshold=ABOVE_ONE)
    early = predict_file(model, str(data / "test.jsonl"), str(out / "predictions.parquet"))
    results = {}
    for name, summary in (("last exit only", full), ("early exit", early)):
        rows = pq.read_table(summary.output).to_pylist()
        accuracy = sum(r["label"] == test[r["id"]] for r in rows) / len(rows)
        mean_exit = sum(r["exit_layer"] for r in rows) / len(rows)
        results[name] = dict(accuracy=accuracy, mean_exit_layer=mean_exit, flops_fraction=summary.flops / summary.full_flops,
                             exit_counts=summary.exit_counts)

    print(f"\ncalibration on the dev split (target: accuracy drop <= {TARGET_DROP}):")
    print("  temperatures per exit: " + ", ".join(f"L{e['exit_layer']} {e['temperature']:.2f}" for e in calibration.exits))
    print("  ECE before -> after:   " + ", ".join(f"{e['ece_before']:.3f}->{e['ece_after']:.3f}" for e in calibration.exits))
    print(f"  {'' if calibration.target_met else 'TARGET NOT MET: '}{calibration.choice}")
    h = calibration.held_out
    print(f"  on the held-out half of dev: accuracy drop {h['accuracy_drop']:+.4f}, FLOPs {h['flops_fraction']:.1%}")

    print(f"\nBBC News test split: {len(test)} articles, MiniLM ({model.config.num_layers} layers), "
          f"exits after layers {list(model.config.exit_layers)}")
    print(f"  last exit alone: accuracy {results['last exit only']['accuracy']:.4f}")
    e = results["early exit"]
    print(f"  early exit at the calibrated threshold {model.config.threshold:.4f}: accuracy {e['accuracy']:.4f}, "
          f"mean exit layer {e['mean_exit_layer']:.2f} of {model.config.num_layers}")
    print("  exit histogram:")
    for layer in model.config.exit_layers:
        n = e["exit_counts"].get(layer, 0)
        print(f"    layer {layer}: {n:4d} {'#' * round(40 * n / len(test))}")
    print(f"  FLOPs: {e['flops_fraction']:.1%} of the full model, {1 - e['flops_fraction']:.1%} saved")
    print(f"\nmodel: {out / 'model'} (speed/accuracy curve: curve.png, reliability diagrams: reliability.png)")
    print(f"predictions: {early.output}   ({time.perf_counter() - started:.0f} s)")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Fine-tune the packaged MiniLM on BBC News and label its test split with early exit.",
        epilog="example:\n  python -m flows.demo --out runs/demo", formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_demo(Path(args.out))


if __name__ == "__main__":
    main()
