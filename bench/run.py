"""The benchmark suite (`make bench`): rightsize's speed and accuracy on real data, against the peers a user
would pick, on this machine. Writes bench/results/<date>-<machine>.json and PNG plots beside it, then
regenerates the README's performance section from the newest results file of each machine.

Parts (--parts, default all):
  train     fine-tune every model the other parts need (they train on first use anyway): run it alone to
            keep training off the cores while something is being timed
  accuracy  accuracy vs FLOPs fraction and vs measured documents/second: the full model, each exit alone,
            early exit (joint, SWEET) over the threshold range, the Multi-Model cascade, the oracle; in each
            of --dtypes (int8: the feed-forward layers quantised, CPU only)
  batching  early exit one document at a time vs batched, at batch sizes 1, 8, 32, 128, vs the full model
  peers     transformers pipeline (in each float --dtypes) and ONNX Runtime on the same fine-tuned backbone
  path      rightsize label (DirectRunner, in-process and 2 processes) vs predict; rightsize report on 1M rows

Models are fine-tuned on first use and kept under bench/work/ (MiniLM shares bench/training_modes.py's).
A run on the same day and machine updates that day's results file (or the one --results names): it replaces
the parts and systems it measured and keeps the others (merged under a lock at each save), so a long suite can
be run in pieces, on several days if need be. Run them one after another: runs side by side would share the
cores they time, and the trained models.
Timings: a warm-up, then the median of --repeats runs, in this process, with --threads torch threads.

examples:
  python bench/run.py --quick                      # minutes: MiniLM, AG News, joint, 200 documents
  python bench/run.py                              # everything (hours on 2 CPU cores)
  python bench/run.py --parts accuracy --models mpnet --data ag_news --modes joint --dtypes float32
  python bench/run.py --parts peers --results bench/results/2026-11-21-amd-epyc-2t.json   # go on filling it
  python bench/run.py --device cuda                # on a GPU machine: its own results file
  python bench/run.py --readme-only                # rewrite the README section from the results files
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project's packages, when run as a script

from models.config import PRECISIONS, TRAINING_MODES  # noqa: E402
from suite.common import DATA_SETS, MODELS, ROOT, machine, machine_slug, model_dir, recipe, splits  # noqa: E402
from suite.results_file import check_machine, save  # noqa: E402

RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"
PARTS = ("train", "accuracy", "batching", "peers", "path")


def trained_model(model: str, data: str, mode: str, device: str, dtype: str = "float32"):
    """(the fine-tuned model of this recipe, its directory, its training record), trained now if missing
    (bench/training_modes.py's cache rule: retrained only when the settings changed)."""
    from models import EarlyExitClassifier
    from training_modes import trained

    parts = splits(data, model, None)
    directory = model_dir(model, data, mode)
    _, report = trained(recipe(model, mode), parts.train, parts.dev, directory)
    record = json.loads((directory / "bench_training.json").read_text())
    record["train_seconds"] = report["train_seconds"]
    return EarlyExitClassifier.from_pretrained(directory, device=device, dtype=dtype), directory, record


def run_train(args, results: dict) -> None:
    for model_name in args.models:
        for data in args.data:
            for mode in args.modes:
                print(f"[train] {model_name}/{data}/{mode}", flush=True)
                trained_model(model_name, data, mode, args.device)


def run_accuracy(args, results: dict) -> None:
    from suite.speed_accuracy import headline, measure_system

    systems = results.setdefault("accuracy", {})
    for model_name in args.models:
        for data in args.data:
            for mode in args.modes:
                for dtype in args.dtypes:
                    key = f"{model_name}/{data}/{mode}/{dtype}"
                    print(f"[accuracy] {key}", flush=True)
                    model, _, record = trained_model(model_name, data, mode, args.device, dtype)
                    system = measure_system(model, splits(data, model_name, args.documents),
                                            target_drop=args.target_drop, budgets=args.budgets,
                                            repeats=args.repeats, batch_size=args.batch_size,
                                            time_exits=not args.quick)
                    system.update(model=model_name, data=data, mode=mode, headline=headline(system), training=record)
                    systems[key] = system
                    save(args.results_file, results)


def first_model(args, dtype: str = "float32"):
    """Batching and peers use the first model and data set asked for, trained in joint mode and calibrated
    on dev in ``dtype``."""
    from suite.speed_accuracy import calibrate_on_dev

    model, _, _ = trained_model(args.models[0], args.data[0], "joint", args.device, dtype)
    calibrate_on_dev(model, splits(args.data[0], args.models[0], None).dev, args.target_drop)
    return model


def run_batching(args, results: dict) -> None:
    from suite.batching import measure_batching

    print("[batching]", flush=True)
    model = first_model(args)
    test = splits(args.data[0], args.models[0], args.documents).test
    results["batching"] = {"model": args.models[0], "data": args.data[0],
                           **measure_batching(model, test, model.config.threshold, args.batch_sizes, args.repeats)}


def run_peers(args, results: dict) -> None:
    import numpy as np

    from suite.peers import onnx_peer, pipeline_peer
    from suite.speed_accuracy import FULL, timed_predict

    print("[peers]", flush=True)
    model = first_model(args)
    test = splits(args.data[0], args.models[0], args.documents).test
    gold = np.array(test.label_ids(model.config.labels))
    sizes = args.peer_batch_sizes
    rows = [pipeline_peer(model, getattr(torch, dtype), test, gold, sizes, args.repeats)
            for dtype in args.dtypes if dtype != "int8"]  # the pipeline has no int8 of rightsize's kind
    rows.append(onnx_peer(model, test, gold, sizes, args.repeats, torch.get_num_threads()) if args.device == "cpu"
                else {"peer": "ONNX Runtime, float32", "error": "measured on CPU only (CPU execution provider)"})
    for dtype in args.dtypes:  # rightsize at its best batch size of the same set, in each precision
        model = first_model(args, dtype)
        for name, threshold in (("full model", FULL), ("early exit, calibrated", model.config.threshold)):
            by_size = {size: timed_predict(model, test, gold, threshold, size, args.repeats) for size in sizes}
            best = max(by_size, key=lambda size: by_size[size]["docs_per_s"])
            rows.append({"peer": f"rightsize {name}, {dtype}", "batch_size": best, "threshold": threshold,
                         **by_size[best], "docs_per_s_by_batch": {str(k): v["docs_per_s"] for k, v in by_size.items()}})
            print(f"  {rows[-1]['peer']:<30} {rows[-1]['docs_per_s']:8.1f} docs/s at batch {best}, accuracy "
                  f"{rows[-1]['accuracy']:.4f}", flush=True)
    results["peers"] = {"model": args.models[0], "data": args.data[0], "documents": len(test),
                        "repeats": args.repeats, "rows": rows}


def run_path(args, results: dict) -> None:
    from models.calibration import CalibrationConfig, calibrate
    from suite.common import WORK
    from suite.whole_path import measure_paths, measure_report

    print("[path]", flush=True)
    model, directory, record = trained_model(args.models[0], args.data[0], "joint", "cpu")
    # The model as a user labels with: a copy calibrated on disk by `rightsize calibrate`'s code, redone when
    # the training or the target changed.
    calibrated = WORK / "suite" / "calibrated" / f"{args.models[0]}-{args.data[0]}"
    key = json.dumps({"training": record["settings"], "target_drop": args.target_drop})
    if not (calibrated / "bench_key.json").is_file() or (calibrated / "bench_key.json").read_text() != key:
        shutil.rmtree(calibrated, ignore_errors=True)
        shutil.copytree(directory, calibrated, ignore=shutil.ignore_patterns("dynamics", "bench_training.json"))
        calibrate(model, splits(args.data[0], args.models[0], None).dev,
                  CalibrationConfig(target_drop=args.target_drop), out=calibrated)
        (calibrated / "bench_key.json").write_text(key)
    threshold = json.loads((calibrated / "rightsize.json").read_text())["threshold"]
    results["path"] = {**measure_paths(str(calibrated), args.path_documents, args.repeats), "threshold": threshold}
    results["report"] = measure_report(args.report_rows, args.repeats)


def results_path(args) -> Path:
    """--results, or <date>-<machine>.json; a --quick run gets its own file, which the README never shows."""
    if args.results:
        return Path(args.results)
    quick = "-quick" if args.quick else ""
    slug = machine_slug(args.machine)  # --threads: a file of its own ("-1t")
    return Path(args.out) / f"{date.today().isoformat()}-{slug}{quick}.json"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    csv = lambda kind: lambda text: tuple(kind(x) for x in text.split(",") if x)  # noqa: E731
    parser.add_argument("--parts", type=csv(str), default=PARTS, help=f"comma-separated, from {','.join(PARTS)}")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run into its own <date>-<machine>-quick.json (never in the README): the first of "
                             "--models, --data, --modes, --dtypes; 200 documents; no exit-alone timings; peer batch "
                             "size 32; 1,000 documents for part path and 100,000 report rows (overrides those flags)")
    parser.add_argument("--models", type=csv(str), default=MODELS, help=f"from {','.join(MODELS)}")
    parser.add_argument("--data", type=csv(str), default=DATA_SETS, help=f"from {','.join(DATA_SETS)}")
    parser.add_argument("--modes", type=csv(str), default=TRAINING_MODES, help=f"from {','.join(TRAINING_MODES)}")
    parser.add_argument("--dtypes", type=csv(str), default=None,
                        help="precisions (default: float32,bfloat16, and int8 on CPU). Where bfloat16 is emulated (no "
                             "AVX512-BF16 or AMX) it runs about 5x slower than float32: leave it out there to save hours")
    parser.add_argument("--documents", type=int, default=1000, help="test documents per data set (first N)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement, after a warm-up")
    parser.add_argument("--batch-size", type=int, default=64, help="rightsize's batch size in parts accuracy, peers")
    parser.add_argument("--batch-sizes", type=csv(int), default=(1, 8, 32, 128), help="part batching")
    parser.add_argument("--peer-batch-sizes", type=csv(int), default=(8, 32, 128),
                        help="part peers: batch sizes tried, the best is reported")
    parser.add_argument("--budgets", type=csv(float), default=(0.35, 0.5, 0.7),
                        help="FLOPs budgets whose dev-chosen thresholds are timed, besides the calibrated one")
    parser.add_argument("--target-drop", type=float, default=0.01, help="accuracy the calibrated threshold may lose")
    parser.add_argument("--path-documents", type=int, default=5000, help="documents for part path")
    parser.add_argument("--report-rows", type=int, default=1_000_000, help="prediction rows for the report timing")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--out", default=str(RESULTS), help="results folder (default: bench/results)")
    parser.add_argument("--results", default=None,
                        help="an existing results file to go on filling, e.g. an earlier day's for a suite run in "
                             "pieces past midnight (default: <--out>/<today>-<machine>.json). One whose recorded "
                             "machine differs is refused before anything is measured. The README shows the newest "
                             "file of each machine in --out, by the date in its name")
    parser.add_argument("--readme", default=str(README), help="README whose performance section is rewritten")
    parser.add_argument("--readme-only", action="store_true", help="only rewrite the README section")
    args = parser.parse_args(argv)
    if args.dtypes is None:
        args.dtypes = ("float32", "bfloat16") + (("int8",) if args.device == "cpu" else ())
    if args.quick:
        args.models, args.data, args.modes, args.dtypes = args.models[:1], args.data[:1], args.modes[:1], args.dtypes[:1]
        args.documents, args.path_documents, args.report_rows, args.peer_batch_sizes = 200, 1000, 100_000, (32,)
    for name, known in (("parts", PARTS), ("models", MODELS), ("data", DATA_SETS), ("modes", TRAINING_MODES),
                        ("dtypes", PRECISIONS)):
        unknown = set(getattr(args, name)) - set(known)
        if unknown or not getattr(args, name):
            parser.error(f"--{name}: unknown or none {sorted(unknown)}; choose from {', '.join(known)}")
    if args.batch_sizes[0] != 1:
        parser.error("--batch-sizes must start at 1 (one document at a time is the reference)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    if args.device == "cuda" and "int8" in args.dtypes:
        parser.error("--dtypes int8: rightsize's int8 runs on CPU only")
    if args.results and args.quick:
        parser.error("--quick writes a file of its own, which the README never shows: leave out --results")
    if args.results and not Path(args.results).is_file():
        parser.error(f"--results {args.results}: no such file (it names an existing results file to go on filling)")
    args.machine = machine(args.device, args.threads)  # what this run will record
    args.results_file = results_path(args)
    if not args.readme_only:
        try:  # before hours of measuring, not at the first save after them
            check_machine(args.results_file, args.machine)
        except ValueError as error:
            parser.error(str(error))
    return args


def main(argv=None) -> None:
    from suite.render import write_plots, write_readme

    args = parse_args(argv)
    if not args.readme_only:
        if args.threads:
            torch.set_num_threads(args.threads)
        path = args.results_file  # fixed at the start: a run that passes midnight keeps its file
        command = "python bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
        measured = {"machine": args.machine, "commands": [command]}  # this run's parts only
        for part in args.parts:
            {"train": run_train, "accuracy": run_accuracy, "batching": run_batching, "peers": run_peers, "path": run_path}[part](args, measured)
            results = save(path, measured)
        write_plots(results, path)
        print(f"wrote {path}")
    shown = write_readme(Path(args.out), Path(args.readme))
    print("README performance section from " + ", ".join(str(f) for f in shown))


if __name__ == "__main__":
    main()
