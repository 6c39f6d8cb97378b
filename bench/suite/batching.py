"""Part 3, the published method's limit: early exit one document at a time (Schwartz et al. exit per document)
against batched early exit with row compaction, and both against the full model at the same batch size.

At each batch size: documents/second of the full model and of early exit at one threshold, and whether every
document got the same label and exit layer as at batch size 1 (batching must not change predictions). Two
crossovers: the smallest batch size at which batched early exit is no faster than the full model at the same
batch size (early exit stops paying off), and the smallest at which the plain full model, batched, beats early
exit one document at a time (the published per-document method loses to doing nothing clever).
"""

from __future__ import annotations

from models import EarlyExitClassifier
from ops.examples import Examples

from ops.calibration import ABOVE_ONE as FULL
from suite.common import prefix, timed


def measure_batching(model: EarlyExitClassifier, test: Examples, threshold: float, batch_sizes: tuple[int, ...],
                     repeats: int) -> dict:
    if batch_sizes[0] != 1:
        raise ValueError(f"batch sizes must start at 1 (the reference), got {batch_sizes}")
    rows, reference = [], None
    for size in batch_sizes:
        row = {"batch_size": size}
        for name, t in (("full", FULL), ("early_exit", threshold)):
            small = prefix(test, size)
            seconds, times, predictions = timed(
                lambda: model.predict(test.texts, test.pairs, threshold=t, batch_size=size), repeats,
                lambda: model.predict(small.texts, small.pairs, threshold=t, batch_size=size))
            row[f"{name}_docs_per_s"] = len(test) / seconds
            row[f"{name}_times_s"] = times
            if name == "early_exit":
                decided = [(p.label, p.exit_layer) for p in predictions]
                reference = reference or decided
                row["same_as_batch_1"] = sum(a == b for a, b in zip(decided, reference)) / len(decided)
                row["mean_exit_layer"] = sum(p.exit_layer for p in predictions) / len(predictions)
        row["early_exit_speedup"] = row["early_exit_docs_per_s"] / row["full_docs_per_s"]
        rows.append(row)
        print(f"  batch {size:>4}: full {row['full_docs_per_s']:8.1f} docs/s, early exit "
              f"{row['early_exit_docs_per_s']:8.1f} docs/s ({row['early_exit_speedup']:.2f}x), same as batch 1: "
              f"{row['same_as_batch_1']:.1%}", flush=True)
    one_at_a_time = rows[0]["early_exit_docs_per_s"]
    return {"threshold": threshold, "documents": len(test), "repeats": repeats, "rows": rows,
            # where batched early exit stops paying off: no faster than the full model at the same batch size
            "early_exit_stops_paying_from_batch": next((r["batch_size"] for r in rows
                                                        if r["early_exit_speedup"] <= 1), None),
            # where the published per-document method loses to the plain full model, batched
            "full_beats_one_at_a_time_from_batch": next((r["batch_size"] for r in rows
                                                         if r["full_docs_per_s"] > one_at_a_time), None)}
