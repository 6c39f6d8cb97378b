"""Training modes and data selection, measured: joint vs SWEET vs the Multi-Model cascade, and training on
the most ambiguous third of the data (Dataset Cartography) vs a random third vs all of it.

For each data set, with the same seed, exits and schedule for every run:
  1. fine-tune MiniLM in modes joint, sweet and multi (training dynamics recorded by the joint run);
  2. per-exit accuracy on the test split; temperatures and the threshold for --target-drop chosen on dev,
     judged on test; the speed/accuracy curve on test (accuracy against the FLOPs fraction of the full model,
     over every threshold; the cascade pays every stage it runs);
  3. from the joint run's dynamics, the 33% most ambiguous and a random 33% of the training set; a joint
     model trained on each with the same epochs (so a third of the steps, as in the paper); last-exit test
     accuracy against the model trained on 100%.

Writes bench/results/training_modes.{json,md} and training_modes_<data>.png. Trained models are kept under
--work and reused by a re-run with the same settings (retrained otherwise).

  python bench/training_modes.py           # sst2 and ag_news, seeded training samples of 5,000 and 2,000
  python bench/training_modes.py --data sst2 --train-sizes sst2=1000 --work /tmp/quick   # a quicker look
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from models import EarlyExitClassifier
from models.calibration import exit_costs
from models.training import TRAINING_FILE, TrainConfig, train
from ops import calibration as cal
from ops.dynamics import data_map, read_dynamics, select_region
from ops.examples import Examples, load_examples
from ops.plots import plt
from suite.common import sample, subset  # bench/suite: the same seeded samples as the benchmark suite

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("joint", "sweet", "multi")
COLOURS = {"joint": "tab:blue", "sweet": "tab:orange", "multi": "tab:green"}


def _with_defaults(settings: dict) -> dict:
    """A recorded training's settings, with TrainConfig fields added since at their defaults (they train the same)."""
    defaults = json.loads(json.dumps(asdict(TrainConfig(model=settings["config"]["model"]))))
    return {**settings, "config": {**defaults, **settings["config"]}}


def trained(config: TrainConfig, train_set: Examples, dev: Examples, out: Path) -> tuple[EarlyExitClassifier, dict]:
    """Trains into ``out`` unless a model trained there with the same config on the same examples exists;
    returns it and its training report."""
    settings = {"config": json.loads(json.dumps(asdict(config))), "train": train_set.source,
                "train_examples": len(train_set), "first_text": train_set.texts[0]}
    record = out / "bench_training.json"
    if not (record.is_file() and _with_defaults(json.loads(record.read_text())["settings"]) == settings):
        start = time.perf_counter()
        train(config, train_set, dev, out=out)
        record.write_text(json.dumps({"settings": settings, "train_seconds": time.perf_counter() - start}))
    report = json.loads((out / TRAINING_FILE).read_text())
    report["train_seconds"] = json.loads(record.read_text())["train_seconds"]
    return EarlyExitClassifier.from_pretrained(out, device="cpu"), report


def evaluate(model: EarlyExitClassifier, dev: Examples, test: Examples, target_drop: float) -> dict:
    """Per-exit test accuracy; temperatures and the threshold for ``target_drop`` chosen on dev, judged on test;
    the speed/accuracy curve on test."""
    def curve_args(data: Examples):
        logits, num_tokens = model.exit_logits(data.texts)
        passed, alone, full = exit_costs(model, num_tokens)
        gold = np.array(data.label_ids(model.config.labels))
        return logits, gold, passed, alone, full

    dev_logits, dev_gold, dev_passed, _, dev_full = curve_args(dev)
    temperatures = cal.fit_temperatures(dev_logits, dev_gold)
    layers = model.config.exit_layers
    dev_curve = cal.speed_accuracy_curve(*cal.calibrated_confidence(dev_logits, temperatures), dev_gold, dev_passed,
                                         dev_full, layers)
    choice = cal.choose_threshold(dev_curve, target_drop=target_drop)

    logits, gold, passed, alone, full = curve_args(test)
    confidence, predicted = cal.calibrated_confidence(logits, temperatures)
    args = (confidence, predicted, gold, passed, full, layers)
    oracle = asdict(cal.oracle_point(predicted, gold, passed, full, layers))
    return {
        "exit_layers": list(layers),
        "exit_accuracy": [float((logits[k].argmax(-1) == gold).mean()) for k in range(len(logits))],
        "single_exit_flops_fraction": [float(alone[k].sum() / full.sum()) for k in range(len(alone))],
        "temperatures": temperatures,
        "chosen": {**asdict(cal.curve_point(*args, choice.threshold)), "target_met_on_dev": choice.met},
        "full_depth": asdict(cal.curve_point(*args, cal.ABOVE_ONE)),
        "curve": [asdict(p) for p in cal.speed_accuracy_curve(*args, max_points=200)],
        "oracle": {k: v for k, v in oracle.items() if k != "threshold"},  # its threshold is NaN: no JSON
    }


def dynamics_pass_seconds(model: EarlyExitClassifier, train_set: Examples) -> float:
    """Time of the per-epoch pass that records training dynamics (an evaluation pass over the training set)."""
    encoded = model.tokenize(train_set.texts, train_set.pairs, padding=False)
    start = time.perf_counter()
    model.encoded_exit_logits(encoded)
    return time.perf_counter() - start


def run_data_set(name: str, args) -> dict:
    folder = DATA / name
    train_all = sample(load_examples(str(folder / "train.jsonl")), args.train_sizes.get(name), args.seed)
    dev, test = load_examples(str(folder / "dev.jsonl")), load_examples(str(folder / "test.jsonl"))
    work = Path(args.work) / name
    base = TrainConfig(model="minilm", exits=args.exits, epochs=args.epochs, max_length=args.max_length,
                       batch_size=32, lr=1e-4, seed=args.seed)
    result = {"train_examples": len(train_all), "dev_examples": len(dev), "test_examples": len(test),
              "train_source": train_all.source, "modes": {}, "selection": {}}
    for mode in MODES:
        model, report = trained(replace(base, mode=mode, dynamics=mode == "joint"), train_all, dev, work / mode)
        result["modes"][mode] = {"train_seconds": report["train_seconds"], **evaluate(model, dev, test, args.target_drop)}
        if mode == "joint":
            epoch_seconds = float(np.mean([e["seconds"] for e in report["epochs"]]))
            result["dynamics_overhead"] = {"pass_seconds": dynamics_pass_seconds(model, train_all),
                                           "epoch_seconds_with_pass": epoch_seconds}
        print(f"{name} {mode}: exit accuracy {result['modes'][mode]['exit_accuracy']}, "
              f"trained in {report['train_seconds']:.0f} s", flush=True)

    dynamics, _, _ = read_dynamics(work / "joint")
    stats = data_map(dynamics)
    full_accuracy = result["modes"]["joint"]["exit_accuracy"][-1]
    result["selection"]["100%"] = {"train_examples": len(train_all), "last_exit_accuracy": full_accuracy}
    for region in ("ambiguous", "random"):
        rows = select_region(stats, region, args.fraction, seed=args.seed)
        model, report = trained(replace(base, dynamics=False), subset(train_all, rows), dev, work / f"joint-{region}")
        logits, _ = model.exit_logits(test.texts)
        accuracy = float((logits[-1].argmax(-1) == np.array(test.label_ids(model.config.labels))).mean())
        result["selection"][f"{region} {args.fraction:.0%}"] = {
            "train_examples": len(rows), "last_exit_accuracy": accuracy, "train_seconds": report["train_seconds"]}
        print(f"{name} {region} {args.fraction:.0%}: last exit accuracy {accuracy:.4f}", flush=True)
    plot(name, result, Path(args.results) / f"training_modes_{name}.png")
    return result


def plot(name: str, result: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for mode, r in result["modes"].items():
        curve = r["curve"]
        ax.plot([p["flops_fraction"] for p in curve], [p["accuracy"] for p in curve], "-", color=COLOURS[mode],
                label=f"{mode}: early exit")
        ax.plot(r["single_exit_flops_fraction"], r["exit_accuracy"], "s", color=COLOURS[mode], ms=5,
                label=f"{mode}: each exit alone")
    ax.set_xlabel("FLOPs / full model")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{name}: MiniLM, exits at layers {result['modes']['joint']['exit_layers']}, "
                 f"{result['train_examples']} training examples", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def markdown(results: dict) -> str:
    s = results["settings"]
    lines = [f"MiniLM (all-MiniLM-L6-v2), exits at layers {s['exits']}, {s['epochs']} epochs, max length "
             f"{s['max_length']}, seed {s['seed']}, {s['threads']} CPU threads. One seed: differences of about "
             f"a point or less are within seed-to-seed noise. Temperatures and the threshold (at most "
             f"{s['target_drop']:.0%} accuracy below the last exit) are chosen on dev; every number is on test.", ""]
    for name, r in results["data"].items():
        layers = r["modes"]["joint"]["exit_layers"]
        lines += [f"**{name}**: {r['train_examples']} training examples ({r['train_source']}), "
                  f"{r['test_examples']} test examples", "",
                  "| mode | " + " | ".join(f"exit L{k}" for k in layers)
                  + " | mean | early exit: accuracy / FLOPs | oracle: accuracy / FLOPs | train time |",
                  "|---|" + "---:|" * (len(layers) + 4)]
        for mode, m in r["modes"].items():
            c, o = m["chosen"], m["oracle"]
            lines.append(f"| {mode} | " + " | ".join(f"{a:.4f}" for a in m["exit_accuracy"])
                         + f" | {np.mean(m['exit_accuracy']):.4f} | {c['accuracy']:.4f} / {c['flops_fraction']:.1%} | "
                         f"{o['accuracy']:.4f} / {o['flops_fraction']:.1%} | {m['train_seconds']:.0f} s |")
        gain = np.mean(np.subtract(r["modes"]["sweet"]["exit_accuracy"], r["modes"]["joint"]["exit_accuracy"]))
        d = r["dynamics_overhead"]
        lines += ["", f"SWEET minus joint, mean over exits: {100 * gain:+.2f} points. Training dynamics: "
                  f"{d['pass_seconds']:.0f} s per epoch for the pass over the training set, in an epoch of "
                  f"{d['epoch_seconds_with_pass']:.0f} s.", "",
                  "| training data (joint) | examples | last-exit test accuracy | train time |", "|---|---:|---:|---:|"]
        for label, sel in r["selection"].items():
            seconds = f"{sel['train_seconds']:.0f} s" if "train_seconds" in sel else "(the joint run above)"
            lines.append(f"| {label} | {sel['train_examples']} | {sel['last_exit_accuracy']:.4f} | {seconds} |")
        lines += ["", f"![{name}](training_modes_{name}.png)", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="sst2,ag_news", help="comma-separated folders of ../shared/data")
    parser.add_argument("--train-sizes", default="sst2=5000,ag_news=2000",
                        help="seeded training samples per data set (a data set not named trains on all of it)")
    parser.add_argument("--exits", default="2,4,6")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--fraction", type=float, default=0.33)
    parser.add_argument("--target-drop", type=float, default=0.01, help="accuracy the threshold may lose (on dev)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--work", default="bench/work/training_modes", help="trained models (reused by a re-run)")
    parser.add_argument("--results", default=str(RESULTS), help="where the results files go")
    args = parser.parse_args()
    args.exits = tuple(int(x) for x in args.exits.split(","))
    args.train_sizes = {k: int(v) for k, v in (item.split("=") for item in args.train_sizes.split(",") if item)}
    torch.manual_seed(args.seed)
    results_dir = Path(args.results)
    results_dir.mkdir(parents=True, exist_ok=True)
    results = {"settings": {"exits": list(args.exits), "epochs": args.epochs, "train_sizes": args.train_sizes,
                            "target_drop": args.target_drop, "max_length": args.max_length,
                            "fraction": args.fraction, "seed": args.seed, "threads": torch.get_num_threads(),
                            "machine": platform.processor() or platform.machine(), "torch": torch.__version__},
               "data": {}}
    for name in args.data.split(","):
        results["data"][name] = run_data_set(name, args)
    (results_dir / "training_modes.json").write_text(json.dumps(results, indent=1, allow_nan=False) + "\n")
    (results_dir / "training_modes.md").write_text(markdown(results) + "\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
