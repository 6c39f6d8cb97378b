"""The ``rightsize`` command line: a thin shell over models/ and ops/ (each command parses flags, calls one
plain function, prints its result)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from models.config import CONFIG_FILE, TRAIN_DTYPE_CHOICES, TRAINING_MODES
from pipelines.label_config import add_field_flags, add_flags, add_precision_flags
from ops.dynamics import REGIONS
from ops.predictions import NothingLabelledError

EXAMPLES = {
    "train": """examples:
  rightsize train --model minilm --train ag_news/train.jsonl --dev ag_news/dev.jsonl --out models/ag
  rightsize train --model path/to/bert-base --train snli_train.jsonl --dev snli_dev.jsonl \\
      --text-field premise --pair-field hypothesis --exits 3,6,9,12 --epochs 2 --out models/snli
  rightsize train --model minilm --mode sweet --train ag_news/train.jsonl --dev ag_news/dev.jsonl --out models/ag-sweet
  rightsize train --model minilm --mode multi --exits 2,4,6 --train ag_news/train.jsonl --dev ag_news/dev.jsonl \\
      --out models/ag-multi

modes: joint (sum of the exits' losses), sweet (each exit trains only the layers since the previous exit),
multi (one separately fine-tuned truncated model per exit, run as a cascade). Training dynamics (every
training example's gold-label probability after each epoch at each exit) go to <out>/dynamics/ unless
--no-dynamics.
""",
    "datamap": """examples:
  rightsize datamap --model models/ag --out datamaps/ag
  rightsize datamap --model models/ag --out datamap-L2 --exit-layer 2 --top 20

writes datamap.png (variability vs confidence, coloured by correctness), datamap.md (the most ambiguous,
easiest and hardest training examples with their text) and datamap.parquet (every example's statistics)
""",
    "select": """examples:
  rightsize select --model models/ag --region ambiguous --fraction 0.33 --out ag_ambiguous.jsonl
  rightsize train --model minilm --train ag_ambiguous.jsonl --dev ag_news/dev.jsonl --out models/ag-ambiguous
  rightsize select --model models/ag --region random --fraction 0.33 --seed 1 --out ag_random.parquet

writes the chosen training examples under the training file's own field names (so 'train' reads them with
the same flags), plus each one's row in the original file (example) and its confidence, variability and
correctness
""",
    "calibrate": """examples:
  rightsize calibrate --model models/ag --data ag_news/dev.jsonl                       # --target-drop 0.01
  rightsize calibrate --model models/ag --data ag_news/dev.jsonl --flops-budget 0.4
  rightsize calibrate --model models/ag --data ag_news/dev.jsonl --threshold 0.95     # temperatures only

writes into the model directory: rightsize.json (temperatures, threshold), calibration.json, curve.csv,
curve.png (speed/accuracy curve) and reliability.png (reliability diagrams per exit)
""",
    "label": """examples:
  rightsize label --model models/ag --input 'corpus/*.jsonl' --output out/labels
  rightsize label --model models/ag --input 'corpus/*.csv' --output out/labels --run-id nightly-2026-11-21 \\
      --direct_running_mode=multi_processing --direct_num_workers=2
  rightsize label --model gs://bucket/models/ag --input 'gs://bucket/corpus/*.jsonl' --output gs://bucket/labels \\
      --runner=DataflowRunner --project=P --region=us-central1 --temp_location=gs://bucket/tmp \\
      --sdk_container_image=IMAGE --sdk_location=container     # IMAGE: built from docker/worker.Dockerfile

any flag not listed above is passed to Beam as a pipeline option (--runner, --direct_num_workers, ...);
the run writes <output>/<run-id>/predictions-*.parquet, deadletter-*.jsonl and manifest.json
""",
    "run": """examples:
  rightsize run --config examples/bbc_demo.toml
  PREFECT_API_URL=http://127.0.0.1:4200/api rightsize run --config nightly.toml   # runs show in that server's UI

runs train -> calibrate -> label -> report as Prefect flows. Fine-tuning and calibration are cached on the
content of their inputs (a second run with nothing changed reuses them); a finished labelling run id is not
labelled again. Without PREFECT_API_URL, Prefect starts a temporary local server for the run (offline).
""",
    "serve": """examples:
  prefect server start                                 # in another shell: a local server on 127.0.0.1:4200
  export PREFECT_API_URL=http://127.0.0.1:4200/api
  rightsize serve --config nightly.toml --cron "0 2 * * *"          # every night at 02:00 UTC
  rightsize serve --config nightly.toml --cron "0 2 * * *" --timezone Europe/Berlin
  rightsize serve --config nightly.toml --cron "*/30 * * * *" --name half-hourly

registers the end-to-end flow as a scheduled deployment and runs its scheduled runs until stopped (Ctrl-C);
see them under Deployments and Runs in the Prefect UI (http://127.0.0.1:4200)
""",
    "report": """examples:
  rightsize report --predictions 'runs/demo/labels/*/predictions-*.parquet' --out runs/demo/report
  rightsize report --predictions 'out/labels/*/*.parquet' --out report --price-per-hour 2.50 --devices 4
  rightsize report --predictions preds.parquet --out report            # from 'rightsize predict': money unknown

writes summary.json, report.md (with PNG plots beside it) and a self-contained report.html. Money needs the
run's manifest.json (written by 'rightsize label') for wall time, and --price-per-hour.
""",
    "predict": """examples:
  rightsize predict --model models/ag --input ag_news/test.jsonl --output preds.parquet
  rightsize predict --model models/ag --input docs.txt --output preds.parquet --threshold 0.8 --batch-size 128
""",
}


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer numbers like 2,4,6, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rightsize", description="Early-exit transformer classification: label large corpora cheaply.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # a prefix is not a flag: 'train --mode x' must not be read as '--model x'
        epilog="""examples:
  rightsize train --model minilm --train train.jsonl --dev dev.jsonl --out models/ag
  rightsize calibrate --model models/ag --data dev.jsonl --target-drop 0.01
  rightsize predict --model models/ag --input 'docs/*.jsonl' --output preds.parquet
  rightsize label --model models/ag --input 'corpus/*.jsonl' --output out/labels
  rightsize report --predictions 'out/labels/*/predictions-*.parquet' --out report
  rightsize run --config examples/bbc_demo.toml      # all of it as Prefect flows, from one config file

run 'rightsize COMMAND --help' for the flags and examples of each command""",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=help, epilog=EXAMPLES[name],
                                   formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)

    p = command("train", "fine-tune an encoder with early exits (modes joint, sweet, multi)")
    p.add_argument("--model", required=True, help="backbone: local dir, hub name, or 'minilm' (packaged all-MiniLM-L6-v2)")
    p.add_argument("--train", required=True,
                   help="training data: a .jsonl/.csv/.parquet file, a folder of such files (its train files when "
                        "named for splits, else all), or a hub dataset name[:split]")
    p.add_argument("--dev", required=True, help="dev data, same format; every exit is evaluated on it each epoch")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--exits", type=_int_list, default=None,
                   help="1-based layers with an exit, ending at the last layer (default: every quarter of the depth)")
    p.add_argument("--epochs", type=int, default=3, help="passes over the training data (default 3)")
    p.add_argument("--max-length", type=int, default=128,
                   help="tokens per document after truncation, special tokens included (default 128, at least 8)")
    p.add_argument("--batch-size", type=int, default=32, help="training examples per step (default 32)")
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW peak learning rate (default 1e-4; 2e-5..5e-5 for base-size models)")
    p.add_argument("--seed", type=int, default=42, help="seed of initialisation, shuffling, dropout (default 42)")
    p.add_argument("--pooling", choices=("mean", "cls"), default="mean",
                   help="what each exit reads: mean of token states (default) or the first token")
    p.add_argument("--mode", choices=TRAINING_MODES, default="joint",
                   help="joint (default), sweet, or multi (a cascade of separate truncated models)")
    p.add_argument("--dtype", choices=TRAIN_DTYPE_CHOICES, default="float32",
                   help="mixed-precision training: bfloat16 or float16 autocast (float16 with loss scaling, for "
                        "GPUs without bfloat16), auto, or float32 (default)")
    p.add_argument("--dynamics", action=argparse.BooleanOptionalAction, default=True,
                   help="record training dynamics for 'datamap' and 'select' (default: on; an evaluation pass "
                        "over the training set after each epoch, and a copy of the training texts in <out>/dynamics/)")
    add_field_flags(p, with_label=True)
    p.set_defaults(run=_train)

    p = command("datamap", "plot the data map of a trained model's training dynamics (Dataset Cartography)")
    p.add_argument("--model", required=True, help="model directory written by 'rightsize train'")
    p.add_argument("--out", required=True, help="output folder for datamap.png, datamap.md, datamap.parquet")
    p.add_argument("--exit-layer", type=int, default=None, help="whose dynamics: the exit at this layer "
                                                                "(default: the last exit)")
    p.add_argument("--top", type=int, default=10, help="examples listed per region in datamap.md (default 10)")
    p.set_defaults(run=_datamap)

    p = command("select", "write a region of the data map (e.g. the most ambiguous third) as training data")
    p.add_argument("--model", required=True, help="model directory written by 'rightsize train'")
    p.add_argument("--region", required=True, choices=REGIONS,
                   help="ambiguous (highest variability), easy (highest confidence), hard (lowest), random")
    p.add_argument("--fraction", type=float, required=True, help="share of the training set to keep, in (0, 1]")
    p.add_argument("--out", required=True, help="output .jsonl or .parquet file")
    p.add_argument("--exit-layer", type=int, default=None, help="whose dynamics (default: the last exit)")
    p.add_argument("--seed", type=int, default=0, help="seed of --region random (default 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out (never the training file the examples came from)")
    p.set_defaults(run=_select)

    p = command("calibrate", "fit per-exit temperatures and choose the default threshold for a target")
    p.add_argument("--model", required=True, help="model directory written by 'rightsize train' (updated in place)")
    p.add_argument("--data", required=True,
                   help="labelled dev data: a .jsonl/.csv/.parquet file, a folder of such files (its dev files when "
                        "named for splits, else all), or a hub name[:split]")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--target-drop", type=float, default=None,
                        help="cheapest threshold losing at most this accuracy vs the last exit (default 0.01)")
    target.add_argument("--flops-budget", type=float, default=None,
                        help="most accurate threshold spending at most this fraction of the full model's FLOPs")
    target.add_argument("--threshold", type=float, default=None, help="use this threshold as is")
    p.add_argument("--fit-fraction", type=float, default=0.5,
                   help="share of --data used to fit; the rest judges the choice (default 0.5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fit/held-out split")
    add_precision_flags(p, threads=False)
    add_field_flags(p, with_label=True)
    p.set_defaults(run=_calibrate)

    p = command("label", "label a corpus with the Apache Beam pipeline (DirectRunner, Dataflow, Flink, Spark)")
    add_flags(p)
    p.set_defaults(run=_label, beam_args=True)

    p = command("run", "run the end-to-end Prefect flow (train, calibrate, label, report) from a TOML config")
    p.add_argument("--config", required=True, help="TOML run config (see examples/bbc_demo.toml for every key)")
    p.set_defaults(run=_run)

    p = command("serve", "serve the end-to-end flow as a scheduled Prefect deployment (needs a Prefect server)")
    p.add_argument("--config", required=True, help="TOML run config; read again at every scheduled run")
    p.add_argument("--cron", required=True, help='cron schedule, e.g. "0 2 * * *" for 02:00 every night')
    p.add_argument("--name", default="nightly", help="deployment name (default nightly)")
    p.add_argument("--timezone", default="UTC", help="IANA time zone of the cron schedule (default UTC)")
    p.set_defaults(run=_serve)

    p = command("report", "compute-cost report from prediction Parquet files (and their run manifests)")
    p.add_argument("--predictions", required=True, help="glob of prediction .parquet files (local or fsspec URL)")
    p.add_argument("--out", required=True, help="output folder for summary.json, report.md, report.html, plots")
    p.add_argument("--price-per-hour", type=float, default=None, help="money per device-hour (default: money unknown)")
    p.add_argument("--devices", type=int, default=1, help="devices billed for each run's wall time (default 1)")
    p.set_defaults(run=_report)

    p = command("predict", "label a file, or a glob of files, in-process with early exit into one Parquet file")
    p.add_argument("--model", required=True, help="model directory written by 'rightsize train'")
    p.add_argument("--input", required=True, help="input file or glob: .jsonl (or a .json array)/.csv/.tsv/.parquet, or "
                                                  "text with one document per line (gzip, zstd, bzip2, xz recognised)")
    p.add_argument("--output", required=True, help="output .parquet file, replaced atomically when the run "
                                                   "succeeds; dead letters go to <output stem>.deadletter.jsonl")
    p.add_argument("--threshold", type=float, default=None,
                   help="exit when calibrated confidence >= this (default: the model's; >1 = always full depth)")
    p.add_argument("--batch-size", type=int, default=None, help="rows per forward pass (default: 64 on a CPU, 256 on a GPU)")
    p.add_argument("--run-id", default=None, help="run id written in every row (default: time + random)")
    add_precision_flags(p, threads=True)
    add_field_flags(p, with_label=False)
    p.set_defaults(run=_predict)
    return parser


def _train(args) -> None:
    from models.training import TrainConfig, train
    from ops.examples import load_examples
    from ops.staging import discard, publish, recover, staging_path

    config = TrainConfig(model=args.model, exits=args.exits, epochs=args.epochs, max_length=args.max_length,
                         batch_size=args.batch_size, lr=args.lr, seed=args.seed, pooling=args.pooling,
                         mode=args.mode, dynamics=args.dynamics, dtype=args.dtype)
    recover(args.out)  # what a killed train of this --out left: a half-written model, or the old one set aside
    _check_model_out(Path(args.out))
    fields = dict(text_field=args.text_field, pair_field=args.pair_field, label_field=args.label_field)
    staging = staging_path(args.out)  # swapped in whole at the end: nothing of an earlier model stays behind
    try:
        try:
            Path(staging).mkdir(parents=True)  # before any work: where the model will be written
        except OSError as e:
            raise ValueError(f"--out {args.out} cannot be written: {e}") from None
        train_set = load_examples(args.train, **fields, split="train")
        dev_set = load_examples(args.dev, **fields, split="validation")
        model, report = train(config, train_set, dev_set, out=staging)
        publish(staging, args.out)
    except BaseException:
        discard(staging)
        raise
    kept = f"epoch {report.best_epoch}" if report.best_epoch else \
        "best epoch per stage: " + ", ".join(str(stage["best_epoch"]) for stage in report.stages)
    print(f"saved {args.out} (mode {config.mode}, {report.dtype}, {kept}); dev accuracy per exit:")
    for layer, acc in zip(model.config.exit_layers, report.dev_accuracy):
        print(f"  layer {layer:>2}: {acc:.4f}")
    if config.dynamics:
        print(f"training dynamics: {args.out}/dynamics/ " + ("(see 'rightsize datamap' and 'rightsize select')"
                                                              if config.epochs >= 2 else "(a data map needs 2+ epochs)"))


def _check_model_out(out: Path) -> None:
    """Before any work: ``train --out`` is a new or empty folder, or an earlier model (which the new one will
    replace whole) holding nothing but what train and calibrate write, not a file or a folder of other things."""
    from models.calibration import CALIBRATION_FILE, CURVE_FILE, CURVE_PLOT, RELIABILITY_PLOT
    from models.config import MODEL_FILES, OPTIONAL_MODEL_FILES
    from models.training import TRAINING_FILE
    from ops.dynamics import DYNAMICS_DIR

    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file: give a folder for the model")
    if out.is_dir() and any(out.iterdir()) and not (out / CONFIG_FILE).is_file():
        raise ValueError(f"--out {out} holds files and is not a rightsize model folder: give a new or empty folder")
    ours = {*MODEL_FILES, *OPTIONAL_MODEL_FILES, TRAINING_FILE, DYNAMICS_DIR, CALIBRATION_FILE, CURVE_FILE,
            CURVE_PLOT, RELIABILITY_PLOT}
    others = sorted(p.name for p in out.iterdir() if p.name not in ours and not p.name.startswith(".")) \
        if out.is_dir() else []  # hidden ones (.DS_Store, .ipynb_checkpoints) go with the old model
    if others:  # a data map written into the model folder, the user's notes: replacing the model would delete them
        raise ValueError(f"--out {out} is an earlier model's folder, but also holds {', '.join(others[:5])}, which "
                         f"replacing the model would delete: move them out, or give another --out")


def _datamap(args) -> None:
    from ops.dynamics import write_data_map

    if args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    r = write_data_map(args.model, args.out, args.exit_layer, args.top)
    print(f"data map of {r['examples']} training examples ({r['epochs']} epochs, exit at layer {r['exit_layer']}):")
    for name in ("plot", "table", "statistics"):
        print(f"  {name}: {r[name]}")


def _select(args) -> None:
    from ops.dynamics import SelectionConfig, select_training_data

    selection = SelectionConfig(args.region, args.fraction, args.exit_layer, args.seed)
    written, total = select_training_data(args.model, selection, args.out, overwrite=args.overwrite)
    print(f"{written} of {total} training examples ({args.region}, {written / total:.1%}) -> {args.out}")


def _calibrate(args) -> None:
    from models import EarlyExitClassifier
    from models.calibration import CalibrationConfig, calibrate
    from ops.examples import load_examples

    if args.target_drop is None and args.flops_budget is None and args.threshold is None:
        args.target_drop = 0.01
    config = CalibrationConfig(target_drop=args.target_drop, flops_budget=args.flops_budget, threshold=args.threshold,
                               fit_fraction=args.fit_fraction, seed=args.seed)
    model = EarlyExitClassifier.from_pretrained(args.model, dtype=args.dtype)
    print(f"precision: {model.dtype_name}")
    data = load_examples(args.data, text_field=args.text_field, pair_field=args.pair_field,
                         label_field=args.label_field, split="validation")
    r = calibrate(model, data, config, out=args.model)
    print(f"calibrated on {r.documents_fit} documents, judged on {r.documents_held_out} held out")
    print("exit  temperature  accuracy  NLL before/after  ECE before/after   (held-out part)")
    for e in r.exits:
        print(f"L{e['exit_layer']:<4} {e['temperature']:11.3f}  {e['accuracy']:8.4f}  {e['nll_before']:6.3f} / "
              f"{e['nll_after']:<6.3f}    {e['ece_before']:.4f} / {e['ece_after']:.4f}")
    print(("" if r.target_met else "TARGET NOT MET: ") + r.choice)
    for name, part in (("fit", r.fit), ("held-out", r.held_out)):
        print(f"{name:>9}: accuracy {part['accuracy']:.4f} (last exit {part['last_exit_accuracy']:.4f}, "
              f"drop {part['accuracy_drop']:+.4f}), FLOPs {part['flops_fraction']:.1%}, "
              f"mean exit layer {part['mean_exit_layer']:.2f}")
    print(f"saved threshold {r.threshold:.4f} and temperatures to {args.model}; plots: curve.png, reliability.png")


def _label(args) -> None:
    from pipelines.label import run
    from pipelines.label_config import config_from_args

    manifest = run(config_from_args(args), args.extra)
    counts = manifest["counts"]
    print(f"run {manifest['run_id']}: {counts['documents_in']} inputs, {counts['labelled']} labelled "
          f"({counts['truncated']} truncated), {counts['dead_letters']} dead letters -> {manifest['output']}")
    print("exits: " + (", ".join(f"L{k}: {v}" for k, v in counts["exit_layers"].items()) or "none"))
    threads = manifest["threads"] or "torch's default"
    print(f"precision: {manifest['dtype']}, {threads} threads per process")


def _run(args) -> None:
    from flows.config import load_config
    from flows.run import check_before_training, rightsize_run
    from flows.serve import api_url, check_api

    config = load_config(args.config)
    check_api()
    # a corpus that is not there, dev data that cannot be calibrated on: one line, before Prefect starts (the
    # flow checks again when it runs, as each run of a schedule must)
    check_before_training(config)
    print(f"Prefect: {api_url() or 'temporary local server (PREFECT_API_URL not set)'}")
    print_outcome(rightsize_run(config_file=str(Path(args.config).resolve()), workdir=str(Path.cwd())))


def print_outcome(o: dict) -> None:
    """Where everything of an end-to-end run went, what was reused, and the report's headline."""
    from ops.report import headline_rows

    if o.get("selection"):
        s = o["selection"]
        print(f"selection:   {s['region']} {s['fraction']:.0%} of the training data by the data map of "
              f"{s['from_model']} -> {s['data']}")
    print(f"model:       {o['trained_model']} ({'cached: inputs unchanged, not trained again' if o['training_cached'] else 'fine-tuned'})")
    print(f"calibrated:  {o['model']} ({'cached' if o['calibration_cached'] else 'calibrated'}; threshold "
          f"{o['threshold']:.4f}, held-out accuracy drop {o['held_out']['accuracy_drop']:+.4f}, "
          f"FLOPs {o['held_out']['flops_fraction']:.1%}{'' if o['target_met'] else ', TARGET NOT MET'})")
    c = o["label_counts"]
    print(f"labels:      {o['labels']} (run {o['run_id']}{', finished before: not labelled again' if o['labelling_skipped'] else ''}; "
          f"{c['labelled']} labelled, {c['dead_letters']} dead letters)")
    print(f"report:      {o['report']['html']}  (summary.json, report.md beside it)")
    print("cost report over every run under the label output:")
    for _, label, value in headline_rows(o["summary"]):
        print(f"  {label:>28}: {value}")


def _serve(args) -> None:
    from flows.serve import NoServerError, serve_schedule

    try:
        serve_schedule(args.config, args.cron, args.name, args.timezone)
    except NoServerError as e:
        print(f"rightsize serve: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _report(args) -> None:
    from flows.report import build_report
    from ops.accounting import ReportConfig
    from ops.report import headline_rows

    result = build_report(ReportConfig(args.predictions, args.price_per_hour, args.devices), args.out)
    for _, label, value in headline_rows(result["summary"]):
        print(f"{label:>30}: {value}")
    print(f"report: {result['paths']['html']} (summary.json, report.md beside it)")


def _predict(args) -> None:
    import torch

    from flows.predict import check_output_name, predict_file
    from models import EarlyExitClassifier
    from models.config import check_threshold
    from ops.records import InputFields

    check_output_name(args.output)  # these checks now, not after the model has loaded
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.threshold is not None:
        check_threshold(args.threshold)
    model = EarlyExitClassifier.from_pretrained(args.model, dtype=args.dtype)
    print(f"precision: {model.dtype_name}, {torch.get_num_threads()} threads")
    fields = InputFields(text_field=args.text_field, pair_field=args.pair_field, id_field=args.id_field)
    s = predict_file(model, args.input, args.output, fields, args.threshold, args.batch_size, args.run_id)
    print(f"labelled {s.documents} documents -> {s.output}")
    if s.dead_letters:
        print(f"{s.dead_letters} inputs could not be labelled -> {s.dead_letter_output}")
    if s.truncated:
        print(f"{s.truncated} documents were longer than the model's {model.config.max_length} tokens and were "
              f"labelled from their beginning ('truncated' column)")
    if s.documents:
        hist = ", ".join(f"L{layer}: {n}" for layer, n in sorted(s.exit_counts.items()))
        print(f"exits: {hist}")
        print(f"FLOPs: {s.flops / s.full_flops:.1%} of the full model ({1 - s.flops / s.full_flops:.1%} saved)")


# Warnings Beam logs on the root logger in every run that mislead here: the BigQuery client (which we do not use)
# is missing, and "memory usage cannot be fetched" on Linux, where `resource` exists but RunInference imports
# it together with its ModelManager, which needs scipy (not installed: we do not use it either).
BEAM_NOISE = ("apitools not found, and bigquery client libraries are not available",
              "Resource module is not available for current platform")


class _DropBeamNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(BEAM_NOISE)


def configure_logging(verbose: bool) -> None:
    """Our INFO lines; with ``verbose`` everything, DEBUG included; else other libraries' chatter left out.
    Called before Prefect is imported, which reads its logging settings then."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Our modules' log lines go to the Prefect UI with the flow's own (defaults, the user's settings win); the
    # same lines logged outside a flow run (a command without Prefect, the checks before a flow) stay local,
    # without a warning from Prefect that it could not send them.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "models,ops,pipelines,flows")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    if verbose:
        return
    logging.getLogger("apache_beam").setLevel(logging.WARNING)  # Beam's INFO lines drown our progress lines
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Prefect API call
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # notes about categorical axes
    root = logging.getLogger()
    if not any(isinstance(f, _DropBeamNoise) for f in root.filters):
        root.addFilter(_DropBeamNoise())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "beam_args", False):
        from pipelines.label_config import unknown_beam_flags

        unknown = unknown_beam_flags(extra)  # flags Beam does not know either: it would drop them silently
    else:
        unknown = extra
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.extra = extra
    configure_logging(args.verbose)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError) as e:  # user errors: one clear line, no traceback
        print(f"rightsize {args.command}: error: {e}", file=sys.stderr)
        return 2
    except NothingLabelledError as e:  # a run that failed as a whole; its dead letters' reasons say why
        print(f"rightsize {args.command}: error: {e}", file=sys.stderr)
        return 1
    except (OSError, ImportError) as e:  # a disk full, a lost connection, gs:// without gcsfs: the message says
        if args.verbose:                  # it; -v: the traceback
            raise
        print(f"rightsize {args.command}: error: {e} (-v for the traceback)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # outputs are swapped in only once complete: nothing half-written is left in place
        if args.verbose:
            raise
        print(f"rightsize {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
