"""Compute-cost accounting over prediction Parquet files: what was labelled, at what depth, for how many FLOPs,
in how much wall time, for how much money.

Columnar and streaming: the files are read one at a time, record batch by record batch (pyarrow), and each
batch is reduced with a pyarrow group-by to a small "cube" (one row per run, folder, model, label, exit layer,
length bucket and confidence bin, holding sums). Cubes are summed as they come, so memory depends on the number
of groups, not of rows. Every figure of the summary is a sum over that cube.

Money needs wall time, which only a run's ``manifest.json`` (written by ``rightsize label``) holds:
    cost                       = sum over runs of wall hours x devices x price per device-hour
    full_model_cost_estimate   = cost x full_flops / flops   (an estimate: it assumes time scales with FLOPs)
Runs without a manifest count in every FLOPs figure and in no money figure.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ops.predictions import PREDICTION_SCHEMA
from ops.staging import INCOMPLETE
from ops.urls import list_files

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"  # what pipelines/label.py writes beside its Parquet files
# Token-count buckets [lower, next lower): short sentences, paragraphs, up to BERT's 512-token limit.
LENGTH_EDGES = (0, 16, 32, 64, 128, 256, 512)
CONFIDENCE_BINS = 10  # equal-width bins of the calibrated confidence, [0, 0.1) ... [0.9, 1.0]
_ROW_KEYS = ["run_id", "model_id", "label", "exit_layer", "length_bucket", "confidence_bin"]
# folder: a run is its run id in one folder. Two folders whose files carry the same run id (a run copied, or
# the same --run-id given under two outputs) are two runs, each with its own manifest and wall time.
KEYS = _ROW_KEYS + ["folder"]
# layer_documents: exit_layer per document, so that its sum over any group / documents is the mean exit layer
# truncated: documents cut at the model's max_length (files written before that column existed count 0)
SUMS = ["documents", "tokens", "flops", "full_flops", "confidence", "layer_documents", "truncated"]
_COLUMNS = ["run_id", "model_id", "label", "exit_layer", "num_tokens", "flops", "full_flops", "confidence"]
_OPTIONAL_COLUMNS = ["truncated", "num_layers"]  # num_layers: read only to check exit_layer against it


def _is_text(t: pa.DataType) -> bool:  # string, large_string, string_view, or a dictionary of them (pandas)
    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
            or (pa.types.is_dictionary(t) and _is_text(t.value_type)))


# What each column must hold (a file of another tool may have the names with other types, or nulls); read
# columns are cast to these types, so that files written by pandas or another writer reduce alike
_KINDS = {"run_id": _is_text, "model_id": _is_text, "label": _is_text, "confidence": pa.types.is_floating,
          "truncated": pa.types.is_boolean,
          **{c: pa.types.is_integer for c in ("exit_layer", "num_layers", "num_tokens", "flops", "full_flops")}}
_CAST = {"run_id": pa.string(), "model_id": pa.string(), "label": pa.string(), "confidence": pa.float64(),
         "truncated": pa.bool_(), "exit_layer": pa.int16(), "num_layers": pa.int16(), "num_tokens": pa.int64(),
         "flops": pa.int64(), "full_flops": pa.int64()}
_RANGES = [("confidence", 0, 1), ("exit_layer", 1, None), ("num_tokens", 0, None), ("flops", 0, None),
           ("full_flops", 0, None)]  # (column, lowest, highest) a prediction can hold
_FLOPS_SUM = pa.decimal128(38, 0)
_BATCH_ROWS = 1 << 18  # rows per record batch read; bounds memory with the cube, not the file size
_COMPACT_EVERY = 32  # partial cubes kept before they are summed into one


MAX_PRICE_PER_HOUR = 1e12
MAX_DEVICES = 1_000_000


@dataclass(frozen=True)
class ReportConfig:
    predictions: str  # glob of prediction Parquet files (local or fsspec URL)
    price_per_hour: float | None = None  # money per device-hour; None: money figures are unknown
    devices: int = 1  # devices (machines or GPUs) billed for each run's whole wall time

    def __post_init__(self):
        # bounds far above any real bill, low enough that no product of them overflows to an infinite cost
        if self.price_per_hour is not None and not 0 <= self.price_per_hour <= MAX_PRICE_PER_HOUR:
            raise ValueError(f"ReportConfig.price_per_hour must be a number from 0 to {MAX_PRICE_PER_HOUR:g}, "
                             f"got {self.price_per_hour}")
        if not 1 <= self.devices <= MAX_DEVICES:
            raise ValueError(f"ReportConfig.devices must be from 1 to {MAX_DEVICES:,}, got {self.devices}")


def find_prediction_files(pattern: str) -> tuple[fsspec.AbstractFileSystem, list[str], list[str]]:
    """(file system, the .parquet files ``pattern`` matches, the folders left out): a folder that an object
    store's swap was cut short in (``ops/staging.INCOMPLETE``, no manifest) holds part of a run, which the
    next run of its id replaces; counting it would count documents twice or half a run."""
    fs, _ = fsspec.core.url_to_fs(pattern)
    try:
        files = [fsspec.core.url_to_fs(url)[1] for url in list_files(pattern) if url.endswith(".parquet")]
    except FileNotFoundError:
        files = []
    cut_short = sorted(folder for folder in {f.rsplit("/", 1)[0] for f in files}
                       if fs.isfile(f"{folder}/{INCOMPLETE}") and not fs.isfile(f"{folder}/{MANIFEST_FILE}"))
    if cut_short:
        log.warning("left out %d folder(s) that a swap of a run was cut short in (run the job again): %s",
                    len(cut_short), ", ".join(fs.unstrip_protocol(f) for f in cut_short))
    files = [f for f in files if f.rsplit("/", 1)[0] not in cut_short]
    if not files:
        folder = pattern.rstrip("/")
        hint = (f": it is a folder; give a glob of its files, such as '{folder}/*/predictions-*.parquet' (label's "
                f"runs) or '{folder}/*.parquet'") if fs.isdir(fsspec.core.url_to_fs(pattern)[1]) else ""
        raise FileNotFoundError(f"no .parquet files match {pattern!r}{hint}"
                                + (f" outside {len(cut_short)} folder(s) of runs cut short" if cut_short else ""))
    return fs, files, [fs.unstrip_protocol(f) for f in cut_short]


def cost_cube(fs: fsspec.AbstractFileSystem, files: list[str]) -> pa.Table:
    """The files reduced to one row per KEYS combination with the SUMS. Reads one file at a time, record
    batch by record batch, so memory holds one row group's columns and the cube, whatever the row count."""
    partials: list[pa.Table] = []
    for path in files:
        folder = path.rsplit("/", 1)[0]
        with fs.open(path, "rb") as f:
            try:
                parquet = pq.ParquetFile(f)
            except (pa.ArrowException, OSError) as e:  # empty, truncated, not Parquet
                raise ValueError(f"{path}: not a readable Parquet file ({e})") from None
            for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, columns=_columns(path, parquet.schema_arrow)):
                if batch.num_rows:
                    partials.append(_in_folder(_reduce(_keyed(_checked(path, batch)), _ROW_KEYS), folder))
                if len(partials) >= _COMPACT_EVERY:
                    partials = [_reduce(pa.concat_tables(partials))]
    if not partials:  # only empty files
        empty = pa.RecordBatch.from_pylist([], schema=pa.schema([PREDICTION_SCHEMA.field(c) for c in _COLUMNS]))
        return _in_folder(_reduce(_keyed(_checked("", empty)), _ROW_KEYS), "")
    return _reduce(pa.concat_tables(partials))


def _columns(path: str, schema: pa.Schema) -> list[str]:
    """The columns to read from a file with ``schema``; raises, naming ``path``, when it is not predictions."""
    missing = set(_COLUMNS) - set(schema.names)
    if missing:
        raise ValueError(f"{path}: not rightsize predictions, missing columns {sorted(missing)}")
    # a column of nulls only (pandas writes one for an all-missing column) says nothing: as if absent
    optional = [c for c in _OPTIONAL_COLUMNS if c in schema.names and not pa.types.is_null(schema.field(c).type)]
    wrong = [f"{c} is {schema.field(c).type}" for c in _COLUMNS + optional if not _KINDS[c](schema.field(c).type)]
    if wrong:
        raise ValueError(f"{path}: not rightsize predictions: {'; '.join(wrong)}")
    return _COLUMNS + optional


def _checked(path: str, batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` cast to _CAST's types (so that files of other writers reduce alike); raises, naming ``path``, on
    nulls, NaN confidences (NaN means and bins, and a summary.json that is not JSON) and values out of _RANGES."""
    nulls = [c for c in _COLUMNS if batch.column(c).null_count]
    if nulls:
        raise ValueError(f"{path}: not rightsize predictions: null values in {nulls}")
    batch = pa.RecordBatch.from_arrays([batch.column(c).cast(_CAST[c]) for c in batch.schema.names],
                                       names=batch.schema.names)
    nan = pc.sum(pc.is_nan(batch.column("confidence"))).as_py()
    if nan:
        raise ValueError(f"{path}: {nan} predictions have a NaN confidence (logits that overflowed in float16?)")
    for column, low, high in _RANGES:
        if not batch.num_rows:
            break
        bounds = pc.min_max(batch.column(column)).as_py()
        if bounds["min"] < low or (high is not None and bounds["max"] > high):
            raise ValueError(f"{path}: not rightsize predictions: {column} from {bounds['min']:g} to "
                             f"{bounds['max']:g}, outside [{low}, {high if high is not None else 'inf'}]")
    if "num_layers" in batch.schema.names:
        deeper = pc.sum(pc.greater(batch.column("exit_layer"), batch.column("num_layers"))).as_py()
        if deeper:
            raise ValueError(f"{path}: not rightsize predictions: {deeper} rows have an exit_layer above num_layers")
    return batch


def _keyed(batch: pa.RecordBatch) -> pa.Table:
    """A record batch -> KEYS + SUMS columns (length bucket and confidence bin computed, not looped)."""
    tokens = batch.column("num_tokens").to_numpy(zero_copy_only=False)
    confidence = batch.column("confidence")
    bins = np.minimum(np.floor(confidence.to_numpy(zero_copy_only=False) * CONFIDENCE_BINS), CONFIDENCE_BINS - 1)
    return pa.table({
        "run_id": batch.column("run_id"), "model_id": batch.column("model_id"), "label": batch.column("label"),
        "exit_layer": batch.column("exit_layer"),
        "length_bucket": pa.array(np.searchsorted(LENGTH_EDGES, tokens, side="right") - 1, pa.int8()),
        "confidence_bin": pa.array(bins.astype(np.int8)),
        "documents": pa.array(np.ones(batch.num_rows, dtype=np.int64)),
        "tokens": batch.column("num_tokens").cast(pa.int64()),
        # summed as 38-digit decimals: int64 sums wrap past 2**63 without a word (about 27 million documents of
        # a 24-layer model at 512 tokens), and float64 ones stop being exact past 2**53
        "flops": batch.column("flops").cast(_FLOPS_SUM), "full_flops": batch.column("full_flops").cast(_FLOPS_SUM),
        "confidence": confidence,
        "layer_documents": batch.column("exit_layer").cast(pa.int64()),
        "truncated": (pc.fill_null(batch.column("truncated"), False).cast(pa.int64()) if "truncated" in batch.schema.names
                      else pa.array(np.zeros(batch.num_rows, dtype=np.int64))),
    })


def _in_folder(cube: pa.Table, folder: str) -> pa.Table:
    """A cube reduced by _ROW_KEYS -> the same with the folder, in KEYS order (cubes are concatenated)."""
    return cube.add_column(len(_ROW_KEYS), "folder", pa.array([folder] * cube.num_rows, pa.string()))


def _reduce(table: pa.Table, by: list[str] = KEYS) -> pa.Table:
    """Group by ``by``, sum SUMS, keep the SUMS' names (so a reduced table can be reduced again)."""
    out = table.group_by(by).aggregate([(name, "sum") for name in SUMS])
    return out.rename_columns([c.removesuffix("_sum") for c in out.column_names])


def _totals(cube: pa.Table, by: list[str]) -> list[dict]:
    """Sums of the cube grouped by ``by``, as dicts sorted by ``by``."""
    rows = _reduce(cube, by).to_pylist()
    return sorted(rows, key=lambda r: tuple((r[k] is None, r[k]) for k in by))


def read_manifests(fs: fsspec.AbstractFileSystem, files: list[str]) -> dict[tuple[str, str], dict]:
    """(run id, folder) -> the manifest.json found in the folder of any of ``files`` (the Beam job's layout),
    checked."""
    manifests = {}
    for folder in sorted({f.rsplit("/", 1)[0] for f in files}):
        path = f"{folder}/{MANIFEST_FILE}"
        if fs.isfile(path):
            with fs.open(path, "r") as f:
                run_id, manifest = _checked_manifest(f.read(), fs.unstrip_protocol(path))
            manifests[run_id, folder] = manifest
    return manifests


def _checked_manifest(text: str, path: str) -> tuple[str, dict]:
    try:
        manifest = json.loads(text)
        run_id, counts = str(manifest["run_id"]), manifest["counts"]
        started, finished = (datetime.fromisoformat(manifest[k]) for k in ("started", "finished"))
        wall = (finished - started).total_seconds()
        dead = counts["dead_letters"]
        devices = manifest.get("devices", {})
        if type(dead) is not int or dead < 0:
            raise ValueError(f"counts.dead_letters is {dead!r}, not a count")
        if not (isinstance(devices, dict) and all(type(n) is int and n >= 0 for n in devices.values())):
            raise ValueError(f"devices is {devices!r}, not counts of workers per device type")
    except (ValueError, KeyError, TypeError) as e:  # bad JSON, a missing key, naive vs aware times
        raise ValueError(f"{path}: not a usable run manifest ({type(e).__name__}: {e})") from None
    if wall < 0:
        raise ValueError(f"{path}: finished ({manifest['finished']}) is before started ({manifest['started']})")
    return run_id, manifest | {"_path": path, "_wall_seconds": wall, "_dead_letters": dead}


def count_dead_letters(fs: fsspec.AbstractFileSystem, files: list[str]) -> int:
    """Lines of the dead-letter files beside ``files``: ``deadletter-*.jsonl`` (Beam job) or
    ``<name>.deadletter.jsonl`` (``rightsize predict``)."""
    listed: dict[str, set[str]] = {}  # folder -> its .jsonl files: one listing per folder, not a request per file
    letters = set()
    for f in files:
        folder, name = f.rsplit("/", 1)
        if folder not in listed:  # ls, not a glob: a folder may be called "run[1]"
            listed[folder] = {p for p in fs.ls(folder, detail=False) if p.endswith(".jsonl")}
            letters.update(p for p in listed[folder] if p.rsplit("/", 1)[1].startswith("deadletter-"))
        sibling = f"{folder}/{name.removesuffix('.parquet')}.deadletter.jsonl"
        if sibling in listed[folder]:
            letters.add(sibling)
    total = 0
    for path in sorted(letters):
        with fs.open(path, "rb") as f:
            total += sum(1 for line in f if line.strip())
    return total


def summarize(config: ReportConfig) -> dict[str, Any]:
    """The cost account of every prediction file matching ``config.predictions``: the summary.json dict."""
    fs, files, cut_short = find_prediction_files(config.predictions)
    cube = cost_cube(fs, files)
    manifests = read_manifests(fs, files)
    price = config.price_per_hour

    runs, by_run = [], _totals(cube, ["run_id", "folder"])
    for run_id, folder in sorted(set(manifests) - {(row["run_id"], row["folder"]) for row in by_run}):
        if manifests[run_id, folder]["counts"].get("labelled") == 0:  # a run of an empty input: its time was spent
            by_run.append({"run_id": run_id, "folder": folder})
            continue
        log.warning("%s is the manifest of run %r, to which no prediction beside it belongs (files of another run "
                    "copied there?): its wall time is in no figure", manifests[run_id, folder]["_path"], run_id)
    for row in by_run:
        manifest = manifests.get((row["run_id"], row["folder"]))
        run = _figures(row) | {"run_id": row["run_id"], "folder": fs.unstrip_protocol(row["folder"]),
                               "manifest": manifest and manifest["_path"],
                               "started": None, "finished": None, "wall_seconds": None, "dead_letters": None}
        if manifest:
            run |= {"started": manifest["started"], "finished": manifest["finished"],
                    "wall_seconds": manifest["_wall_seconds"], "dead_letters": manifest["_dead_letters"],
                    "runner": manifest.get("runner"), "device_types": sorted(manifest.get("devices", {}))}
        run |= _money(run, price, config.devices)
        runs.append(run)
    # Oldest first by start time; runs without a manifest (no start time) after them, by run id.
    runs.sort(key=lambda r: (r["started"] is None, r["started"] and datetime.fromisoformat(r["started"]).timestamp(),
                             r["run_id"], r["folder"]))

    timed = [r for r in runs if r["wall_seconds"] is not None]
    if all(r["dead_letters"] is not None for r in runs):  # every run's dead letters are in its manifest
        dead_letters = sum(r["dead_letters"] for r in runs)
    else:
        dead_letters = count_dead_letters(fs, files)
    total = _figures(_totals(cube, [])[0] if cube.num_rows else {})
    wall = sum(r["wall_seconds"] for r in timed) if timed else None
    timed_documents = sum(r["documents"] for r in timed)
    summary = {
        "predictions": config.predictions, "files": len(files), "left_out_cut_short": cut_short,
        **total, "dead_letters": dead_letters,
        "wall_seconds": wall,
        "documents_per_second": timed_documents / wall if wall else None,
        "price_per_hour": price, "devices": config.devices,
        **_money_totals(timed, total, price),
        "by_exit_layer": [_figures(r) | {"exit_layer": r["exit_layer"]} for r in _totals(cube, ["exit_layer"])],
        "by_label": [_figures(r) | {"label": r["label"]} for r in _totals(cube, ["label"])],
        "by_length": [_figures(r) | _bucket_bounds(r["length_bucket"]) for r in _totals(cube, ["length_bucket"])],
        "confidence_by_exit": _confidence_by_exit(cube),
        "models": sorted(set(cube["model_id"].to_pylist())),
        "runs": runs,
    }
    return summary


def _figures(row: dict) -> dict:
    documents = int(row.get("documents") or 0)
    flops, full = int(row.get("flops") or 0), int(row.get("full_flops") or 0)
    return {
        "documents": documents, "tokens": int(row.get("tokens") or 0), "flops": flops, "full_flops": full,
        "truncated": int(row.get("truncated") or 0),
        "flops_saved_fraction": 1 - flops / full if full else None,
        "mean_exit_layer": row["layer_documents"] / documents if documents else None,
        "mean_confidence": row["confidence"] / documents if documents else None,
    }


def _money(run: dict, price: float | None, devices: int) -> dict:
    wall = run["wall_seconds"]
    money = {"documents_per_second": run["documents"] / wall if wall else None}
    if price is None or wall is None:
        return money | {"cost": None, "full_model_cost_estimate": None, "cost_per_1000_documents": None}
    cost = wall / 3600 * devices * price
    # a run of no documents spent its time on start-up alone, which the full model would have spent too
    return money | {"cost": cost, "full_model_cost_estimate": cost * run["full_flops"] / run["flops"] if run["flops"] else cost,
                    "cost_per_1000_documents": 1000 * cost / run["documents"] if run["documents"] else None}


def _money_totals(timed: list[dict], total: dict, price: float | None) -> dict:
    """Money over the runs that have a manifest; None when no price was given or no run was timed."""
    if price is None or not timed:
        why = "no price per device-hour given" if price is None else "no run has a manifest with its wall time"
        return {"cost": None, "full_model_cost_estimate": None, "cost_per_1000_documents": None,
                "money_unknown_because": why}
    cost = sum(r["cost"] for r in timed)
    documents = sum(r["documents"] for r in timed)
    untimed = total["documents"] - documents
    return {
        "cost": cost,
        "full_model_cost_estimate": sum(r["full_model_cost_estimate"] or 0.0 for r in timed),
        "cost_per_1000_documents": 1000 * cost / documents if documents else None,
        "money_unknown_because": f"{untimed} documents come from runs without a manifest" if untimed else None,
    }


def _bucket_bounds(bucket: int) -> dict:
    upper = LENGTH_EDGES[bucket + 1] if bucket + 1 < len(LENGTH_EDGES) else None
    return {"tokens_from": LENGTH_EDGES[bucket], "tokens_below": upper}


def _confidence_by_exit(cube: pa.Table) -> list[dict]:
    """Per exit layer: documents in each confidence bin (CONFIDENCE_BINS counts, lowest first)."""
    out = []
    rows = _totals(cube, ["exit_layer", "confidence_bin"])
    for layer in sorted({r["exit_layer"] for r in rows}):
        counts = [0] * CONFIDENCE_BINS
        for r in rows:
            if r["exit_layer"] == layer:
                counts[r["confidence_bin"]] = r["documents"]
        out.append({"exit_layer": layer, "documents_per_bin": counts})
    return out
