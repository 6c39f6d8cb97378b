"""In-process labelling of input files into one Parquet file (``rightsize predict``).

Streams the input in chunks so memory stays flat whatever the file size, reading and tokenising the next
chunk in a background thread while the current one is labelled; the Beam pipeline in
``pipelines/`` is the path for many files and many machines. Both read records with ops/records.py, so a
record without an id gets the same ``<file>:<line>`` id here and there.

The output replaces an existing file atomically (ops/staging.py): it is written under a staging name and
renamed into place when complete, then its dead-letter file likewise. A run that fails or is killed leaves
the previous output file as it was.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from itertools import islice

import fsspec
from tqdm.auto import tqdm

from models import EarlyExitClassifier
from models.classifier import Encoding, free_accelerator_memory
from ops.isolation import Failure, run_isolating_failures
from ops.lookahead import prepared_ahead
from ops.memory import release_freed_memory
from ops.predictions import PredictionWriter, new_run_id, prediction_rows
from ops.records import DeadLetter, Document, InputFields, dead_letter_line, expand_glob, read_file
from ops.staging import discard, publish, recover, staging_path

CHUNK_DOCUMENTS = 8192  # documents tokenized, sorted by length and labelled together


def dead_letter_path(output: str) -> str:
    stem = output[: -len(".parquet")] if output.endswith(".parquet") else output
    return stem + ".deadletter.jsonl"


@dataclass
class PredictSummary:
    documents: int  # labelled, rows in the Parquet file
    dead_letters: int
    truncated: int  # labelled documents cut at the model's max_length
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
    batch_size: int | None = None,
    run_id: str | None = None,
) -> PredictSummary:
    """Labels every file matching ``input_url`` (a path, URL or glob) into ``output_url``; inputs that cannot
    be labelled go to ``dead_letter_path(output_url)``, one JSON line each."""
    threshold = model.config.threshold if threshold is None else threshold
    if not math.isfinite(threshold) or (batch_size is not None and batch_size < 1):
        raise ValueError(f"need a numeric threshold and batch_size >= 1, got {threshold} and {batch_size}")
    run_id = run_id or new_run_id()
    letters_url = dead_letter_path(output_url)
    ours = {fsspec.core.url_to_fs(u)[1] for u in (output_url, letters_url)}
    files = [f for f in expand_glob(input_url) if fsspec.core.url_to_fs(f)[1] not in ours]  # not our own output
    if not files:
        raise FileNotFoundError(f"input {input_url!r} matches only this run's own output files")
    for final in (output_url, letters_url):
        recover(final)
    staged_output, staged_letters = staging_path(output_url), staging_path(letters_url)
    summary = PredictSummary(0, 0, 0, {}, 0, 0, output_url, None)
    failed = 0  # documents whose inference failed even alone

    def inputs(docs: list[Document]) -> tuple[list[str], list[str] | None]:
        return [d.text for d in docs], [d.pair for d in docs] if fields.pair_field else None

    def predict(docs: list[Document], encoding: Encoding | None = None) -> list:
        return model.predict(*inputs(docs), threshold=threshold, batch_size=batch_size, encoding=encoding)

    def chunks():
        """(records, their documents, the documents' encoding) per chunk. Runs one chunk ahead in a thread of its
        own, with a tokenizer of its own (a fast tokenizer must not serve two threads), so that reading and
        tokenising the next chunk overlaps labelling this one."""
        tokenizer = copy.deepcopy(model.tokenizer)
        records = (record for url in files for record in read_file(url, fields))
        while chunk := list(islice(records, CHUNK_DOCUMENTS)):
            documents = [r for r in chunk if isinstance(r, Document)]
            try:
                encoding = model.encode(*inputs(documents), tokenizer=tokenizer) if documents else None
            except Exception:  # predict encodes again, isolating the document at fault as a dead letter
                encoding = None
            yield chunk, documents, encoding

    try:
        with PredictionWriter(staged_output) as writer, fsspec.open(staged_letters, "w", encoding="utf-8") as letters, \
                tqdm(desc="labelling", unit="doc") as bar, prepared_ahead(chunks(), "rightsize-read") as ahead:
            for chunk, documents, encoding in ahead:
                bad = [r for r in chunk if isinstance(r, DeadLetter)]
                # the encoding covers the whole chunk: the halves retried after a failure are encoded again
                run = lambda docs: predict(docs, encoding if docs is documents else None)  # noqa: E731
                results = run_isolating_failures(run, documents, free_accelerator_memory) if documents else []
                release_freed_memory()  # else glibc's RSS climbs with every chunk (ops/memory.py)
                labelled = [(d, p) for d, p in zip(documents, results) if not isinstance(p, Failure)]
                bad += [d.dead_letter(f"inference failed: {p.reason}") for d, p in zip(documents, results)
                        if isinstance(p, Failure)]
                for letter in bad:
                    letters.write(dead_letter_line(letter.to_dict()) + "\n")
                writer.write(prediction_rows([d for d, _ in labelled], [p for _, p in labelled],
                                             num_layers=model.config.num_layers, threshold=threshold,
                                             dtype=model.dtype_name, model_id=model.model_id, run_id=run_id))
                _count(summary, [p for _, p in labelled], len(bad))
                bar.update(len(chunk))
                failed += len(documents) - len(labelled)
        if failed and not summary.documents:  # a broken model or setting, not bad documents: keep the old output
            raise RuntimeError(f"inference failed on every document ({failed}), e.g. {bad[-1].reason}; "
                               f"{output_url} was not replaced")
        publish(staged_output, output_url)
    except BaseException:
        discard(staged_output)
        discard(staged_letters)
        raise
    if summary.dead_letters:
        publish(staged_letters, letters_url)
        summary.dead_letter_output = letters_url
    else:  # no dead letters this time: an old file beside the new output would belong to another run
        discard(staged_letters)
        discard(letters_url)
    return summary


def _count(summary: PredictSummary, predictions: list, dead_letters: int) -> None:
    for p in predictions:
        summary.exit_counts[p.exit_layer] = summary.exit_counts.get(p.exit_layer, 0) + 1
        summary.flops += p.flops
        summary.full_flops += p.full_flops
        summary.truncated += p.truncated
    summary.documents += len(predictions)
    summary.dead_letters += dead_letters
