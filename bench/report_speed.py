"""Time and peak memory of the cost report (``rightsize report``) on 1,000,000 and 10,000,000 prediction rows.

Writes synthetic predictions (the real schema, 1,000,000 rows per file, 6 exits, 4 labels, 3 runs with
manifests) under bench/work/report_rows_<N>/, then builds the report in a fresh process per repeat, so
each peak RSS belongs to that one report alone. Median of --repeats. Goal: 1,000,000 rows in under 10 s on
2 cores, and memory that does not grow with the rows (the report streams record batches).

    python bench/report_speed.py                      # 1M and 10M rows, 3 repeats
    python bench/report_speed.py --rows 1000000 --repeats 5

Results: bench/results/report_speed.json and .md (written by this script only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ops.predictions import PREDICTION_SCHEMA  # noqa: E402

WORK = ROOT / "bench" / "work"
RESULTS = ROOT / "bench" / "results"
ROWS_PER_FILE = 1_000_000
RUNS = 3

# Run in a fresh interpreter: time the report, then print its own peak RSS.
_CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
started = time.perf_counter()
from flows.report import build_report
from ops.accounting import ReportConfig
from ops.memory import peak_rss_mib
imported = time.perf_counter()
result = build_report(ReportConfig({pattern!r}, price_per_hour=1.0), {out!r})
done = time.perf_counter()
print(json.dumps({{"seconds": done - imported, "import_seconds": imported - started,
                  "peak_rss_mib": peak_rss_mib(),
                  "documents": result["summary"]["documents"]}}))
"""


def write_predictions(rows: int) -> str:
    """Synthetic predictions: RUNS run folders, each with a manifest; returns the glob."""
    root = WORK / f"report_rows_{rows}"
    done = root / "complete"  # holds the schema the files were written with: a changed schema rewrites them
    if done.is_file() and done.read_text() == str(PREDICTION_SCHEMA):
        return str(root / "*" / "predictions-*.parquet")
    rng = np.random.default_rng(0)
    files = -(-rows // ROWS_PER_FILE)
    for i in range(files):
        n = min(ROWS_PER_FILE, rows - i * ROWS_PER_FILE)
        run_id = f"run-{i % RUNS}"
        folder = root / run_id
        folder.mkdir(parents=True, exist_ok=True)
        exit_layer = rng.choice(np.arange(1, 7, dtype=np.int16), size=n, p=[0.5, 0.2, 0.1, 0.08, 0.07, 0.05])
        tokens = rng.integers(8, 512, size=n, dtype=np.int32)
        full = tokens.astype(np.int64) * 2_000_000
        table = pa.table({
            "id": pa.array(np.char.add("d", np.arange(i * ROWS_PER_FILE, i * ROWS_PER_FILE + n).astype(str))),
            "label": pa.array(rng.choice(["business", "sport", "tech", "world"], size=n)),
            "confidence": rng.uniform(0.3, 1.0, size=n).astype(np.float32),
            "exit_layer": exit_layer, "num_layers": np.full(n, 6, np.int16), "num_tokens": tokens,
            "truncated": tokens == 511, "flops": full * exit_layer // 6, "full_flops": full,
            "threshold": np.full(n, 0.8, np.float32), "dtype": pa.array(["float32"] * n),
            "model_id": pa.array(["sha256:0123456789abcdef"] * n), "run_id": pa.array([run_id] * n),
        }, schema=PREDICTION_SCHEMA)
        pq.write_table(table, folder / f"predictions-{i:05d}-of-{files:05d}.parquet")
    for r in range(min(RUNS, files)):
        (root / f"run-{r}" / "manifest.json").write_text(json.dumps({
            "run_id": f"run-{r}", "started": f"2026-11-{18 + r}T02:00:00+00:00",
            "finished": f"2026-11-{18 + r}T02:20:00+00:00", "runner": "DirectRunner", "devices": {"cpu": 1},
            "counts": {"dead_letters": 0}}))
    done.write_text(str(PREDICTION_SCHEMA))
    return str(root / "*" / "predictions-*.parquet")


def measure(pattern: str, out: Path) -> dict:
    code = _CHILD.format(root=str(ROOT), pattern=pattern, out=str(out))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n")[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    results = []
    for rows in args.rows:
        started = time.perf_counter()
        pattern = write_predictions(rows)
        print(f"{rows:,} rows ready in {time.perf_counter() - started:.0f} s: {pattern}", flush=True)
        measure(pattern, WORK / "report_warmup")  # warm the page cache: every repeat reads warm files
        repeats = [measure(pattern, WORK / f"report_{rows}") for _ in range(args.repeats)]
        assert all(r["documents"] == rows for r in repeats), repeats
        result = {"rows": rows, "files": len(list(Path(pattern).parent.parent.glob("*/predictions-*.parquet"))),
                  "seconds_median": statistics.median(r["seconds"] for r in repeats),
                  "peak_rss_mib_median": statistics.median(r["peak_rss_mib"] for r in repeats),
                  "import_seconds_median": statistics.median(r["import_seconds"] for r in repeats),
                  "repeats": repeats}
        results.append(result)
        print(f"{rows:>12,} rows: {result['seconds_median']:.2f} s (median of {args.repeats}), peak RSS "
              f"{result['peak_rss_mib_median']:.0f} MiB", flush=True)

    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": " ".join(sys.argv),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "pyarrow": pa.__version__},
              "what": "build_report (summarize + summary.json, report.md, report.html, 5 PNG plots) in a fresh "
                      "process; seconds exclude the imports", "results": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "report_speed.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"# Cost report speed ({record['date']}, {os.cpu_count()} CPUs, pyarrow {pa.__version__})", "",
             f"`{record['command']}`: {record['what']}; median of {args.repeats}.", "",
             "| rows | files | seconds | peak RSS (MiB) |", "|---|---|---|---|"]
    lines += [f"| {r['rows']:,} | {r['files']} | {r['seconds_median']:.2f} | {r['peak_rss_mib_median']:.0f} |" for r in results]
    (RESULTS / "report_speed.md").write_text("\n".join(lines) + "\n")
    print(f"written {RESULTS / 'report_speed.md'}")


if __name__ == "__main__":
    main()
