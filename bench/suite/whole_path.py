"""Part 5, the whole path a user runs: `rightsize predict` (in-process, one file) against `rightsize label`
(Beam) on the DirectRunner in-process and with several worker processes, on the same documents, model load
included; and `rightsize report` on 1,000,000 prediction rows in a fresh process.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from suite.common import WORK

MULTI_PROCESS = ("--direct_running_mode=multi_processing", "--direct_num_workers=2")


def _predict(model_dir: str, corpus: Path, out: Path) -> None:
    from flows.predict import predict_file
    from models import EarlyExitClassifier

    predict_file(EarlyExitClassifier.from_pretrained(model_dir), str(corpus), str(out))


def _label(model_dir: str, corpus: Path, out: Path, beam_args=()) -> None:
    from pipelines.label import run
    from pipelines.label_config import LabelJobConfig

    run(LabelJobConfig(model=model_dir, input=str(corpus), output=str(out), run_id="bench"),
        ["--runner=DirectRunner", *beam_args])


def measure_paths(model_dir: str, documents: int, repeats: int) -> dict:
    """Median documents/second of each path over ``repeats`` rounds, the paths alternating within a round so
    that a slow spell of the machine hits all of them; one warm-up round first."""
    from label_throughput import write_corpus  # bench/: AG News and SST-2 texts cycled to ``documents``

    paths = {"rightsize predict (in-process)": lambda c, o: _predict(model_dir, c, o / "p.parquet"),
             "rightsize label (DirectRunner)": lambda c, o: _label(model_dir, c, o / "label"),
             "rightsize label (DirectRunner, 2 processes)": lambda c, o: _label(model_dir, c, o / "label2",
                                                                                MULTI_PROCESS)}
    times = {name: [] for name in paths}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = write_corpus(Path(tmp) / "corpus.jsonl", documents)
        for round_ in range(repeats + 1):
            for name, run in paths.items():
                start = time.perf_counter()
                run(corpus, Path(tmp))
                if round_:  # round 0 is the warm-up
                    times[name].append(time.perf_counter() - start)
    rows = [{"path": name, "docs_per_s": documents / statistics.median(t), "times_s": t} for name, t in times.items()]
    for row in rows:
        row["vs_predict"] = row["docs_per_s"] / rows[0]["docs_per_s"]
        print(f"  {row['path']:<45} {row['docs_per_s']:8.1f} docs/s ({row['vs_predict']:.2f}x)", flush=True)
    return {"model": model_dir, "documents": documents, "rows": rows}


def measure_report(rows: int, repeats: int) -> dict:
    """`rightsize report` on ``rows`` synthetic prediction rows (bench/report_speed.py's files and child)."""
    from report_speed import measure, write_predictions

    pattern = write_predictions(rows)
    runs = []
    for i in range(repeats + 1):  # the first is the warm-up: it brings the files into the page cache
        with tempfile.TemporaryDirectory(dir=WORK) as tmp:
            run = measure(pattern, Path(tmp) / "report")
        if run["documents"] != rows:
            raise RuntimeError(f"the report counted {run['documents']} documents, not {rows}")
        if i:
            runs.append(run)
    seconds = statistics.median(r["seconds"] for r in runs)
    print(f"  rightsize report on {rows:,} rows: {seconds:.2f} s", flush=True)
    return {"rows": rows, "seconds": seconds, "times_s": [r["seconds"] for r in runs],
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs)}
