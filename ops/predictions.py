"""The predictions table of DESIGN.md: schema, rows, and writing Parquet/dead letters through fsspec."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from typing import Iterable, Sequence

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from ops.isolation import Failure
from ops.records import DeadLetter, Document

PREDICTION_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("label", pa.string()),
    ("confidence", pa.float32()),  # calibrated probability of ``label`` at the exit taken
    ("exit_layer", pa.int16()),  # transformer layers run for this document
    ("num_layers", pa.int16()),  # layers of the full model
    ("num_tokens", pa.int32()),  # tokens after truncation
    ("truncated", pa.bool_()),  # text was cut at the model's max_length: the label saw only the beginning
    ("flops", pa.int64()),  # FLOPs spent on this document
    ("full_flops", pa.int64()),  # FLOPs the full model would have spent
    ("threshold", pa.float32()),
    ("dtype", pa.string()),  # compute precision of the backbone: float32, bfloat16 or float16
    ("model_id", pa.string()),
    ("run_id", pa.string()),
])


# One plain folder name: a run writes under <output>/<run id>, so "../x" would write outside the output and "."
# would replace the output folder itself (every other run in it).
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_run_id(run_id: str) -> None:
    if not RUN_ID.fullmatch(run_id):
        raise ValueError(f"run id {run_id!r} must be one plain folder name: letters, digits, '.', '_' and '-', "
                         "starting with a letter or digit, at most 128 characters")


def new_run_id() -> str:
    """A sortable, unique run id: UTC time + random suffix."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]


def prediction_rows(documents: Sequence[Document], predictions: Sequence, *, num_layers: int, threshold: float,
                    dtype: str, model_id: str, run_id: str) -> list[dict]:
    """One row per document, in the columns of PREDICTION_SCHEMA."""
    return [
        {
            "id": doc.id, "label": p.label, "confidence": p.confidence, "exit_layer": p.exit_layer,
            "num_layers": num_layers, "num_tokens": p.num_tokens, "truncated": p.truncated,
            "flops": p.flops, "full_flops": p.full_flops,
            "threshold": threshold, "dtype": dtype, "model_id": model_id, "run_id": run_id,
        }
        for doc, p in zip(documents, predictions, strict=True)
    ]


def split_failures(documents: Sequence[Document], results: Sequence) -> tuple[list[Document], list, list[DeadLetter]]:
    """What ``run_isolating_failures`` returned for ``documents`` -> (the labelled documents, their predictions,
    a dead letter for each document that failed even alone), each in input order. Both drivers use it."""
    labelled, predictions, letters = [], [], []
    for doc, result in zip(documents, results, strict=True):
        if isinstance(result, Failure):
            letters.append(doc.dead_letter(f"inference failed: {result.reason}"))
        else:
            labelled.append(doc)
            predictions.append(result)
    return labelled, predictions, letters


def is_predictions_file(url: str) -> bool:
    """Whether ``url`` is a Parquet file with the core columns of PREDICTION_SCHEMA: what a run may replace."""
    try:
        with fsspec.open(url, "rb") as f:
            names = set(pq.read_schema(f).names)
    except Exception:  # not Parquet, unreadable
        return False
    return {"id", "label", "exit_layer", "flops"} <= names


class PredictionWriter:
    """Appends row groups to one Parquet file (local path or fsspec URL); use as a context manager. The file is
    closed whatever happens (a failed write leaves an incomplete file: callers write to a staging name)."""

    def __init__(self, url: str):
        self._file = fsspec.open(url, "wb").open()
        try:
            self._writer = pq.ParquetWriter(self._file, PREDICTION_SCHEMA)
        except BaseException:
            self._file.close()
            raise
        self.rows = 0

    def write(self, rows: list[dict]) -> None:
        if rows:
            self._writer.write_table(pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA))
            self.rows += len(rows)

    def close(self) -> None:
        try:
            self._writer.close()
        finally:
            self._file.close()

    def __enter__(self) -> "PredictionWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


SETTING_OR_MODEL = "a broken model, or a setting such as --text-field that fits no record?"


class NothingLabelledError(RuntimeError):
    """A run in which every input became a dead letter: the cause is then the model or a setting (a wrong
    --text-field, say), not the documents, so the previous output is kept and the run is not retried."""

    @classmethod
    def of(cls, scope: str, reasons: Iterable[str], kept: str, cause: str = SETTING_OR_MODEL) -> NothingLabelledError:
        """``scope``: which inputs failed ("all 21 inputs are dead letters"); ``kept``: what was left as it was;
        ``cause``: the likely causes."""
        # one message argument, as any exception: Prefect and Beam pickle exceptions across processes
        return cls(f"no document was labelled: {scope} ({cause}); {kept}. Reasons: {'; '.join(reasons)}")


class FirstReasons:
    """Up to ``n`` distinct dead-letter reasons for an error message, failures of inference before problems of
    records: when nothing was labelled, the model is the likelier cause, and the records come first in a file."""

    def __init__(self, n: int = 3):
        self.n, self.inference, self.records = n, [], []

    def add(self, reason: str) -> None:
        kept = self.inference if reason.startswith("inference failed") else self.records
        if len(kept) < self.n and reason not in kept:
            kept.append(reason)

    @property
    def full(self) -> bool:  # nothing more can change what is shown
        return len(self.inference) == self.n

    def __iter__(self):
        return iter((self.inference + self.records)[:self.n])
