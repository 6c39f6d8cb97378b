"""In-process labelling of input files into one Parquet file (``rightsize predict``).

Streams the input in chunks so memory stays flat whatever the file size (on a GPU, reading and tokenising the
next chunk in a background thread while the current one is labelled); the Beam pipeline in
``pipelines/`` is the path for many files and many machines. Both read records with ops/records.py, so a
record without an id gets the same ``<file>:<line>`` id here and there.

The output replaces an existing file atomically (ops/staging.py): it is written under a staging name and
renamed into place when complete, then its dead-letter file likewise. A run that fails or is killed leaves
the previous output file as it was.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from itertools import islice, takewhile

import fsspec
from tqdm.auto import tqdm

from models import EarlyExitClassifier
from models.classifier import Encoding, free_accelerator_memory
from models.config import check_threshold
from ops.isolation import run_isolating_failures
from ops.lookahead import prepared_ahead
from ops.memory import release_freed_memory
from ops.predictions import (FirstReasons, NothingLabelledError, PredictionWriter, is_predictions_file, new_run_id,
                             prediction_rows, split_failures)
from ops.records import DeadLetter, Document, InputFields, dead_letter_line, model_inputs, read_file
from ops.staging import discard, publish, recover, staging_path
from ops.urls import expand_glob, resolved

CHUNK_DOCUMENTS = 8192  # documents tokenized, sorted by length and labelled together
# Documents that failed inference even alone, with none labelled yet, after which a run stops at the end of
# that chunk: the model or a setting is broken, and each further chunk would cost about log2(its size) times
# its work to find that again (ops/isolation.py). The Beam job cannot do the same: an error raised in a worker
# reaches the launcher re-wrapped by the runner, so it fails at its end (pipelines/label.py).
FAIL_FAST_DOCUMENTS = 1000

log = logging.getLogger(__name__)


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
    chunk_size: int = CHUNK_DOCUMENTS,
    read_ahead: bool | None = None,
) -> PredictSummary:
    """Labels every file matching ``input_url`` (a path, URL or glob) into ``output_url``; inputs that cannot
    be labelled go to ``dead_letter_path(output_url)``, one JSON line each. ``read_ahead``: read and tokenise
    the next chunk of ``chunk_size`` documents in a background thread while this one is labelled; None: on a
    GPU, where the host's work is a large share of the time. On a CPU it gained nothing measurable
    (bench/read_ahead.py) and would hold one chunk more. A chunk that could not be tokenised ahead, and the parts
    retried after a failure, are tokenised in parts while they are labelled instead
    (``EarlyExitClassifier.predict``'s ``tokenize_ahead``)."""
    threshold = model.config.threshold if threshold is None else threshold
    model.config.check_pairs(fields.pair_field is not None)  # now, not as a dead letter per document
    read_ahead = model.device.type == "cuda" if read_ahead is None else read_ahead
    check_threshold(threshold)
    if (batch_size is not None and batch_size < 1) or chunk_size < 1:
        raise ValueError(f"need batch_size >= 1 and chunk_size >= 1, got {batch_size} and {chunk_size}")
    run_id = run_id or new_run_id()
    letters_url = dead_letter_path(output_url)
    ours = {resolved(u) for u in (output_url, letters_url)}
    files = [f for f in expand_glob(input_url) if resolved(f) not in ours]  # not our own output
    if not files:
        raise FileNotFoundError(f"input {input_url!r} matches only this run's own output files")
    _check_output(output_url)
    for final in (output_url, letters_url):
        recover(final)
    staged_output, staged_letters = staging_path(output_url), staging_path(letters_url)
    summary = PredictSummary(0, 0, 0, {}, 0, 0, output_url, None)
    reasons = FirstReasons()  # for the error if nothing is labelled
    stop = threading.Event()  # tells the read-ahead thread to give up at its next record

    def chunks(tokenizer):
        """(records, their documents, the documents' encoding or None) per chunk. In the read-ahead thread it
        has a tokenizer of its own: a fast tokenizer must not serve two threads."""
        records = (record for url in files for record in read_file(url, fields))
        records = takewhile(lambda _: not stop.is_set(), records)
        while chunk := list(islice(records, chunk_size)):
            if stop.is_set():  # a chunk cut short by the stop: the caller has gone
                return
            documents = [r for r in chunk if isinstance(r, Document)]
            encoding = None
            if documents and tokenizer is not None:
                try:
                    encoding = model.encode(*model_inputs(documents), tokenizer=tokenizer)
                except Exception as error:  # labelling encodes again, isolating the document at fault
                    log.warning("tokenising a chunk ahead failed (%s: %s); it is tokenised again while labelled",
                                type(error).__name__, error)
            yield chunk, documents, encoding

    def label(chunk: list, documents: list[Document], encoding: Encoding | None, writer, letters) -> int:
        """One chunk into the Parquet writer and the dead-letter file (a function, so that its working lists go
        when it returns: with read-ahead, about two chunks are held at a time); returns how many of its documents
        failed inference even alone."""
        # the encoding covers the whole chunk: the halves retried after a failure are encoded again
        run = lambda docs: model.predict(*model_inputs(docs), threshold=threshold, batch_size=batch_size,  # noqa: E731
                                         encoding=encoding if docs is documents else None, tokenize_ahead=read_ahead)
        results = run_isolating_failures(run, documents, free_accelerator_memory) if documents else []
        labelled, predictions, failed = split_failures(documents, results)
        bad = [r for r in chunk if isinstance(r, DeadLetter)] + failed
        for letter in bad:
            letters.write(dead_letter_line(letter.to_dict()) + "\n")
            reasons.add(letter.reason)
        writer.write(prediction_rows(labelled, predictions, num_layers=model.config.num_layers, threshold=threshold,
                                     dtype=model.dtype_name, model_id=model.model_id, run_id=run_id))
        _count(summary, predictions, len(bad))
        return len(failed)

    try:
        # exited in reverse order: the read-ahead thread ends before its tokenizer goes back to the pool
        with (model.lent_tokenizer() if read_ahead else contextlib.nullcontext()) as tokenizer, \
                PredictionWriter(staged_output) as writer, \
                fsspec.open(staged_letters, "w", encoding="utf-8") as letters, \
                tqdm(desc="labelling", unit="doc") as bar, \
                (prepared_ahead(chunks(tokenizer), "rightsize-read") if read_ahead
                 else contextlib.closing(chunks(None))) as ahead:
            try:
                failed_alone = 0
                for chunk, documents, encoding in ahead:
                    failed_alone += label(chunk, documents, encoding, writer, letters)
                    release_freed_memory()  # else glibc's RSS climbs with every chunk (ops/memory.py)
                    bar.update(len(chunk))
                    if failed_alone >= FAIL_FAST_DOCUMENTS and not summary.documents:
                        raise NothingLabelledError.of(
                            f"the first {summary.dead_letters} inputs are dead letters, inference failing on every "
                            "document, so the run stopped there", reasons, f"{output_url} was not replaced")
            finally:
                stop.set()  # on an error or Ctrl-C: the read-ahead thread stops reading at its next record
        if summary.dead_letters and not summary.documents:  # a broken model or setting: keep the old output
            raise NothingLabelledError.of(f"all {summary.dead_letters} inputs are dead letters", reasons,
                                          f"{output_url} was not replaced")
        publish(staged_output, output_url)
    except BaseException:
        discard(staged_output)
        discard(staged_letters)
        raise
    if summary.dead_letters:
        try:
            publish(staged_letters, letters_url)
        except OSError as e:  # kept where they are, not discarded: they are the only copy
            raise OSError(f"{output_url} was written, but its {summary.dead_letters} dead letters could not be moved "
                          f"from {staged_letters} to {letters_url} (move them by hand before the next run to this "
                          f"output, which clears that folder): {e}") from e
        summary.dead_letter_output = letters_url
    else:  # no dead letters this time: an old file beside the new output would belong to another run
        discard(staged_letters)
        discard(letters_url)
    return summary


def check_output_name(output_url: str) -> None:
    """A file name ending in .parquet: what the output holds, and what the report's globs look for."""
    if output_url.endswith("/"):
        raise ValueError(f"output {output_url!r} is a folder: give a file name, such as "
                         f"{output_url}predictions.parquet")
    if not output_url.endswith(".parquet"):
        raise ValueError(f"output {output_url!r} must end in .parquet: the predictions are written as Parquet")


def _check_output(output_url: str) -> None:
    """Before any work: the output and its dead-letter file are files that can be written (not folders, not
    under a file), else the whole corpus would be labelled for the swap at the end to fail; and an existing
    output is an earlier run's predictions, not a file of the user's that the run would replace."""
    check_output_name(output_url)
    for url in (output_url, dead_letter_path(output_url)):
        fs, path = fsspec.core.url_to_fs(url)
        if fs.isdir(path):
            raise ValueError(f"{url!r} is a folder, where this run writes a file: give another --output")
        probe = staging_path(url)
        try:
            with fsspec.open(probe, "wb") as f:  # creates the folders on the way, as the writer will
                f.write(b"ok")
        except OSError as e:
            raise ValueError(f"output {url!r} cannot be written: {e}") from None
        finally:
            discard(probe)
    fs, path = fsspec.core.url_to_fs(output_url)
    if fs.isfile(path) and not is_predictions_file(output_url):
        raise ValueError(f"output {output_url!r} exists and is not a rightsize predictions file (a data file the "
                         "input matches, say): it would be replaced; give another --output")


def _count(summary: PredictSummary, predictions: list, dead_letters: int) -> None:
    for p in predictions:
        summary.exit_counts[p.exit_layer] = summary.exit_counts.get(p.exit_layer, 0) + 1
        summary.flops += p.flops
        summary.full_flops += p.full_flops
        summary.truncated += p.truncated
    summary.documents += len(predictions)
    summary.dead_letters += dead_letters
