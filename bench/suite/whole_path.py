"""Part 5, the whole path a user runs: `rightsize predict` (in-process, one file) against `rightsize label`
(Beam) on the DirectRunner in-process and with several worker processes, on the same documents, model load
included; and `rightsize report` on 1,000,000 prediction rows in a fresh process.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from suite.common import WORK

MULTI_PROCESS = ("--direct_running_mode=multi_processing", "--direct_num_workers=2")


def measure_paths(model_dir: str, documents: int, repeats: int) -> dict:
    """Median documents/second of each path over ``repeats`` rounds, the paths alternating within a round so
    that a slow spell of the machine hits all of them; one warm-up round first."""
    # bench/label_throughput.py: the corpus (AG News and SST-2 texts cycled to ``documents``) and the timers
    from label_throughput import time_label, time_predict, write_corpus

    paths = {"rightsize predict (in-process)": lambda c, o: time_predict(model_dir, c, o / "p.parquet"),
             "rightsize label (DirectRunner)": lambda c, o: time_label(model_dir, c, o / "label", "bench"),
             "rightsize label (DirectRunner, 2 processes)": lambda c, o: time_label(model_dir, c, o / "label2",
                                                                                    "bench", MULTI_PROCESS)}
    times = {name: [] for name in paths}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = write_corpus(Path(tmp) / "corpus.jsonl", documents)
        for round_ in range(repeats + 1):
            for name, timed in paths.items():
                seconds = timed(corpus, Path(tmp))
                if round_:  # round 0 is the warm-up
                    times[name].append(seconds)
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
