"""In-process labelling of one input file into one Parquet file (``rightsize predict``).

Streams the input in chunks so memory stays flat whatever the file size; the Beam pipeline in
``pipelines/`` is the path for many files and many machines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import islice

import fsspec
from tqdm.auto import tqdm

from models import EarlyExitClassifier
from ops.predictions import PredictionWriter, new_run_id, prediction_rows
from ops.records import DeadLetter, Document, InputFields, read_file

CHUNK_DOCUMENTS = 8192  # documents tokenized, sorted by length and labelled together


def dead_letter_path(output: str) -> str:
    stem = output[: -len(".parquet")] if output.endswith(".parquet") else output
    return stem + ".deadletter.jsonl"


@dataclass
class PredictSummary:
    documents: int  # labelled, rows in the Parquet file
    dead_letters: int
    exit_counts: dict[int, int]  # exit layer -> documents
    flops: int
    full_flops: int
    output: str
    dead_letter_output: str | None


def predict_file(
    model: EarlyExitClassifier,
    input_url: str,
    output_url: str,
    fields: InputFields = InputFields(),
    threshold: float | None = None,
    batch_size: int = 64,
    run_id: str | None = None,
) -> PredictSummary:
    threshold = model.config.threshold if threshold is None else threshold
    run_id = run_id or new_run_id()
    letters_url = dead_letter_path(output_url)
    records = read_file(input_url, fields)
    summary = PredictSummary(0, 0, {}, 0, 0, output_url, None)
    with PredictionWriter(output_url) as writer, fsspec.open(letters_url, "w", encoding="utf-8") as letters, \
            tqdm(desc="labelling", unit="doc") as bar:
        while chunk := list(islice(records, CHUNK_DOCUMENTS)):
            documents = [r for r in chunk if isinstance(r, Document)]
            for letter in (r for r in chunk if isinstance(r, DeadLetter)):
                letters.write(json.dumps(letter.to_dict(), ensure_ascii=False) + "\n")
                summary.dead_letters += 1
            pairs = [d.pair for d in documents] if fields.pair_field else None
            predictions = model.predict([d.text for d in documents], pairs, threshold=threshold, batch_size=batch_size)
            writer.write(prediction_rows(documents, predictions, num_layers=model.config.num_layers,
                                         threshold=threshold, model_id=model.model_id, run_id=run_id))
            for p in predictions:
                summary.exit_counts[p.exit_layer] = summary.exit_counts.get(p.exit_layer, 0) + 1
                summary.flops += p.flops
                summary.full_flops += p.full_flops
            summary.documents += len(documents)
            bar.update(len(chunk))
    if summary.dead_letters:
        summary.dead_letter_output = letters_url
    else:
        fs, path = fsspec.core.url_to_fs(letters_url)
        fs.rm(path)
    return summary
