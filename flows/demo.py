"""``make demo``: the end-to-end flow on the BBC News demo config, offline, on Prefect's temporary server.

Writes the BBC News split (80/10/10, fixed seed) under ``runs/demo/data`` (only files whose content changed, so
an unchanged corpus keeps its labelling run), runs ``examples/bbc_demo.toml`` through ``flows/run.py`` (fine-tune
the packaged MiniLM, calibrate for a one-point target drop, label the test split with the Beam job, write the
cost report), then prints the headline numbers and the test accuracy. A second run reuses the cached model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pyarrow.dataset as ds

from ops.corpora import read_bbc_news, split_records

CONFIG = Path(__file__).resolve().parent.parent / "examples" / "bbc_demo.toml"


def write_split(data: Path) -> dict[str, list[dict]]:
    splits = dict(zip(("train", "dev", "test"), split_records(read_bbc_news())))
    data.mkdir(parents=True, exist_ok=True)
    for name, records in splits.items():
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        path = data / f"{name}.jsonl"
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    return splits


def test_accuracy(labels_dir: str, test: list[dict]) -> float:
    gold = {r["id"]: r["label"] for r in test}
    files = sorted(str(p) for p in Path(labels_dir).glob("predictions-*.parquet"))
    rows = ds.dataset(files, format="parquet").to_table(columns=["id", "label"]).to_pylist()
    return sum(gold[r["id"]] == r["label"] for r in rows) / len(gold)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=f"example:\n  python -m flows.demo          # runs {CONFIG.relative_to(Path.cwd()) if CONFIG.is_relative_to(Path.cwd()) else CONFIG}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    from flows.cli import configure_logging, print_outcome

    configure_logging(verbose=False)  # as the rightsize command does, before Prefect is imported
    from flows.config import load_config
    from flows.run import rightsize_run

    started = time.perf_counter()
    config = load_config(CONFIG)
    splits = write_split(Path(config.output) / "data")
    outcome = rightsize_run(config_file=str(CONFIG), workdir=str(Path.cwd()))
    print("\n" + "=" * 100)
    print_outcome(outcome)
    s = outcome["summary"]
    print(f"\nBBC News test split: {len(splits['test'])} articles; early-exit accuracy "
          f"{test_accuracy(outcome['labels'], splits['test']):.4f} at threshold {outcome['threshold']:.4f}, "
          f"mean exit layer {s['mean_exit_layer']:.2f} of 6, {s['flops_saved_fraction']:.1%} of the FLOPs saved")
    print(f"({time.perf_counter() - started:.0f} s; run `make demo` again: nothing is trained or labelled twice)")


if __name__ == "__main__":
    main()
