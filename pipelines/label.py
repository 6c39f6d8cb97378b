"""The labelling job: files -> documents -> early-exit predictions in Parquet, dead letters, a run manifest.

    ListFiles -> ReadRecords -(documents)-> [Reshuffle] -> RunInference(EarlyExitModelHandler) -> Route -> WritePredictions
                      \\-(dead letters)------------------------------- (+ documents that failed alone) -> WriteDeadLetters

Output layout under ``<output>/<run_id>/`` (re-running a run id replaces it atomically, see ops/staging.py):
    predictions-SSSSS-of-NNNNN.parquet   the columns of ops/predictions.PREDICTION_SCHEMA
    deadletter-SSSSS-of-NNNNN.jsonl      {source, position, raw, reason}
    manifest.json                        run id, model id, threshold, input, times, counts, runner, devices
The job writes under ``<output>/.staging/<run_id>.<random>/`` and swaps that in when it has succeeded.

Runs on any Beam runner: the DirectRunner (default), or Dataflow/Flink/Spark via ``--runner`` and their options.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import logging
import os
import posixpath
import re
import threading
import time
import uuid
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any, Iterable, NamedTuple, Sequence

import apache_beam as beam
import fsspec
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import ModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from ops.isolation import run_isolating_failures
from ops.memory import release_freed_memory
from ops.predictions import (PREDICTION_SCHEMA, FirstReasons, NothingLabelledError, prediction_rows,
                            split_failures)
from ops.records import DeadLetter, Document, InputFields, dead_letter_line, model_inputs, one_line, read_file
from ops.staging import discard, publish, recover, staging_path
from ops.urls import expand_glob, resolved
from pipelines.label_config import LabelJobConfig, add_flags, config_from_args, is_direct_runner

log = logging.getLogger(__name__)
NAMESPACE = "rightsize"
PROGRESS_SECONDS = 30.0
MANIFEST_FILE = "manifest.json"
# What a run's folder holds (Beam's default shard names; a temporary folder Beam failed to delete; hidden files
# such as .DS_Store): anything else there is not ours to delete
RUN_FILE = re.compile(r"manifest\.json|predictions-\d+-of-\d+\.parquet|deadletter-\d+-of-\d+\.jsonl"
                      r"|(\.|beam-temp-).*", re.DOTALL)
# Before a job whose workers run on this machine, the first TRIAL_DOCUMENTS readable documents (looked for in
# the first TRIAL_RECORDS records of the first TRIAL_FILES files) are labelled here, so that a broken model
# fails in seconds instead of at the end of the job, after every chunk was halved down to single documents.
TRIAL_DOCUMENTS = 64
TRIAL_RECORDS = 10_000
TRIAL_FILES = 100


class ReadRecordsFn(beam.DoFn):
    """A file URL -> its Documents (main output) and DeadLetters (tagged "dead"), the latter as JSON lines
    already: Beam's coders encode text as strict UTF-8, which a raw record's lone surrogates are not."""

    def __init__(self, fields: InputFields):
        self.fields = fields
        self.documents_in = Metrics.counter(NAMESPACE, "documents_in")
        self.dead_letters = Metrics.counter(NAMESPACE, "dead_letters")

    def process(self, url: bytes):
        for record in read_file(url.decode("utf-8", "surrogateescape"), self.fields):
            self.documents_in.inc()
            if isinstance(record, DeadLetter):
                self.dead_letters.inc()
                yield beam.pvalue.TaggedOutput("dead", dead_letter_line(record.to_dict()))
            else:
                yield record


LENGTH_BUCKETS = [64, 128, 256, 512, 1024, 2048]  # characters; ~4 characters a token in English


def document_length(doc: Document) -> int:
    return len(doc.text) + len(doc.pair or "")


class EarlyExitModelHandler(ModelHandler[Document, dict, Any]):
    """RunInference's handle on an EarlyExitClassifier: loaded once per worker process (RunInference shares it
    between the process's threads), on CUDA when present, else CPU. Each RunInference batch (a chunk of up to
    ``chunk_size`` documents) goes through ``EarlyExitClassifier.predict``, the same code as in-process
    labelling, which sorts the chunk by length into ``batch_size`` rows and exits early with compaction."""

    def __init__(self, config: LabelJobConfig, plan: "Plan"):
        length_aware = {}
        if config.max_batch_duration_secs is not None:  # Beam buckets by length only on its stateful batching path
            length_aware = dict(max_batch_duration_secs=config.max_batch_duration_secs, batch_length_fn=document_length,
                                batch_bucket_boundaries=LENGTH_BUCKETS)
        # large_model / model_copies: one model per machine shared by its SDK processes (Beam's
        # multi_process_shared), instead of one per process: what a GPU worker with one GPU wants.
        super().__init__(min_batch_size=config.chunk_size, max_batch_size=config.chunk_size,
                         large_model=config.share_model_across_processes, model_copies=config.model_copies,
                         **length_aware)
        self.model_dir, self.run_id, self.batch_size = config.model, config.run_id, config.batch_size
        self.threshold, self.model_id, self.num_layers = plan.threshold, plan.model_id, plan.num_layers
        self.dtype, self.threads, self.tokenize_ahead = plan.dtype, plan.threads, config.tokenize_ahead

    def load_model(self):
        import torch

        from models import EarlyExitClassifier  # imported on the worker

        if self.threads:  # a fixed share of the cores per process: processes x threads <= cores
            torch.set_num_threads(self.threads)
        model = EarlyExitClassifier.from_pretrained(self.model_dir, dtype=self.dtype)
        if model.model_id != self.model_id:
            raise ValueError(f"{self.model_dir} changed since the job was submitted "
                             f"(model id {model.model_id}, expected {self.model_id})")
        log.info("loaded %s (%s) on %s in %s, %d threads", self.model_dir, model.model_id, model.device_type(),
                 self.dtype, torch.get_num_threads())
        return model

    def run_inference(self, batch: Sequence[Document], model, inference_args=None) -> Iterable[dict]:
        """One prediction row per document; a document that fails even alone (after the chunk was split and
        retried, ops/isolation.py) comes back as {"dead_letter": ...} for RoutePredictionsFn."""
        # Counted per batch, not at load: load_model runs in setup, where no metrics are collected. With a
        # shared model, ``model`` is a proxy: only method calls reach it, no attributes.
        from models.classifier import free_accelerator_memory

        Metrics.counter(NAMESPACE, f"batches_on_{model.device_type()}").inc()

        def predict(docs: Sequence[Document]) -> list:
            return model.predict(*model_inputs(docs), threshold=self.threshold, batch_size=self.batch_size,
                                 tokenize_ahead=self.tokenize_ahead)

        results = run_isolating_failures(predict, batch, before_retry=free_accelerator_memory)
        release_freed_memory()  # else glibc's RSS climbs with every chunk (ops/memory.py)
        labelled, predictions, failed = split_failures(batch, results)
        return [{"dead_letter": dead_letter_line(letter.to_dict())} for letter in failed] + prediction_rows(
            labelled, predictions, num_layers=self.num_layers, threshold=self.threshold, dtype=self.dtype,
            model_id=self.model_id, run_id=self.run_id)

    def get_num_bytes(self, batch: Sequence[Document]) -> int:
        return sum(map(document_length, batch))

    def get_metrics_namespace(self) -> str:
        return NAMESPACE


class RoutePredictionsFn(beam.DoFn):
    """Sends documents that failed inference to the dead letters (tagged "dead"); counts labelled documents per
    exit layer, and logs progress at most every PROGRESS_SECONDS per process."""

    # Shared by the instances in this process's threads, and kept per run because one process may run several
    # jobs (a notebook, a retried flow task): run key -> [started, last logged (monotonic s), documents labelled]
    _lock = threading.Lock()
    _progress: dict[str, list] = {}

    def __init__(self, run_key: str):
        self.run_key = run_key
        self.labelled = Metrics.counter(NAMESPACE, "labelled")
        self._per_layer = {}

    @classmethod
    def forget(cls, run_key: str) -> None:
        """Drops a finished run's count (a notebook may run many jobs in one process)."""
        with cls._lock:
            cls._progress.pop(run_key, None)

    def process(self, row: dict):
        if "dead_letter" in row:
            Metrics.counter(NAMESPACE, "failed_inferences").inc()
            yield beam.pvalue.TaggedOutput("dead", row["dead_letter"])
            return
        self.labelled.inc()
        layer = row["exit_layer"]
        if layer not in self._per_layer:
            self._per_layer[layer] = Metrics.counter(NAMESPACE, f"exit_layer_{layer}")
        self._per_layer[layer].inc()
        with self._lock:
            now = time.monotonic()
            progress = self._progress.setdefault(self.run_key, [now, now, 0])
            progress[2] += 1
            started, last, done = progress
            if now - last >= PROGRESS_SECONDS:
                progress[1] = now
                log.info("progress: %d documents labelled in this worker, %.1f documents/s", done,
                         done / max(now - started, 1e-9))
        yield row


def failed_inference_letters(failure) -> Iterable[dict]:
    """RunInference's own dead letter (a failure outside our per-document isolation, e.g. in Beam's batching):
    (batch, (exception type, repr, traceback lines)) -> one dead letter per document, reason "Type: message"."""
    batch, error = failure
    if isinstance(error, tuple) and len(error) == 3 and error[2]:
        reason = error[2][-1]  # the traceback's last line: "ValueError: message"
    else:
        reason = f"{type(error).__name__}: {error}"
    Metrics.counter(NAMESPACE, "failed_inferences").inc(len(batch))
    log.error("inference failed on a batch of %d documents: %s", len(batch), one_line(reason))
    for doc in batch:
        yield dead_letter_line(doc.dead_letter(f"inference failed: {reason}").to_dict())


def build(pipeline: beam.Pipeline, config: LabelJobConfig, plan: "Plan", reshuffle: bool, run_key: str):
    """Adds the labelling transforms to ``pipeline``, writing under ``plan.staging``; returns (predictions, dead
    letters) PCollections. ``reshuffle`` spreads one file's documents over workers (see ``LabelJobConfig``);
    ``run_key`` names this run's progress count (``RoutePredictionsFn``)."""
    out_dir = plan.staging
    read = (
        pipeline
        # as bytes: Beam's coders encode text as strict UTF-8, which a file name with invalid bytes is not
        | "ListFiles" >> beam.Create([f.encode("utf-8", "surrogateescape") for f in plan.files])
        | "ReadRecords" >> beam.ParDo(ReadRecordsFn(config.fields)).with_outputs("dead", main="documents")
    )
    documents = read.documents
    if reshuffle:
        documents = documents | "SpreadDocuments" >> beam.Reshuffle()  # a file is read by one worker
    labelled, errors = documents | "Label" >> RunInference(
        EarlyExitModelHandler(config, plan)) \
        .with_exception_handling()
    routed = labelled | "Route" >> beam.ParDo(RoutePredictionsFn(run_key)).with_outputs("dead", main="predictions")
    failed = errors.failed_inferences | "FailedToDeadLetters" >> beam.FlatMap(failed_inference_letters)
    dead = (read.dead, routed.dead, failed) | "AllDeadLetters" >> beam.Flatten()
    _ = routed.predictions | "WritePredictions" >> beam.io.WriteToParquet(
        FileSystems.join(out_dir, "predictions"), PREDICTION_SCHEMA, file_name_suffix=".parquet")
    _ = dead | "WriteDeadLetters" >> beam.io.WriteToText(FileSystems.join(out_dir, "deadletter"),
                                                        file_name_suffix=".jsonl")
    return routed.predictions, dead


class Plan(NamedTuple):
    """What ``prepare_run`` established before any work."""

    files: list[str]  # input file URLs
    model_id: str
    num_layers: int
    threshold: float  # the given one, or the model's calibrated one for ``dtype``
    dtype: str  # compute precision, resolved ("auto" -> what this machine's device supports)
    threads: int | None  # torch threads per worker process; None: torch's default
    staging: str  # the directory this run writes into, swapped in at the end


def prepare_run(config: LabelJobConfig, processes: int | None = 1, model_id: str | None = None) -> Plan:
    """Everything that must hold before work starts; raises with a clear message otherwise. ``processes``:
    worker processes on this machine, to share its cores between (DirectRunner); None when the workers are
    other machines. ``model_id``: the model's content id when the caller has just hashed it (each worker checks
    what it loads against it), else it is hashed here."""
    from models.classifier import artifact_id, calibration_for
    from models.config import check_threshold

    dtype, model_config, warning = calibration_for(config.model, config.dtype)
    model_config.check_pairs(config.pair_field is not None)
    if warning:
        log.warning("%s: %s", config.model, warning)
    # several processes on this machine: a share of the cores each; one: torch's own default (physical cores)
    threads = config.threads or (max(1, _usable_cores() // processes) if processes and processes > 1 else None)
    matched = expand_glob(config.input)
    files = [f for f in matched if not _inside(f, config.output)]  # never read our own output
    if not files:
        raise FileNotFoundError(f"input {config.input!r} matches only files under the output {config.output!r}")
    if len(files) < len(matched):
        log.warning("input %r: skipped %d file(s) under the output folder %r, which the job writes", config.input,
                    len(matched) - len(files), config.output)
    threshold = model_config.threshold if config.threshold is None else config.threshold
    check_threshold(threshold)
    staging = staging_path(config.run_dir)
    write_probe = FileSystems.join(staging, ".write-probe")
    try:
        recover(config.run_dir)  # what an earlier killed run of this id left behind
        check_replaceable(config.run_dir)
        with FileSystems.create(write_probe) as f:
            f.write(b"ok")
        FileSystems.delete([write_probe])
    except (OSError, BeamIOError) as e:
        raise ValueError(f"output {config.run_dir!r} cannot be written: {e}") from e
    return Plan(files, model_id or artifact_id(config.model), model_config.num_layers, threshold, dtype, threads,
                staging)


def check_replaceable(run_dir: str) -> None:
    """Raises unless ``run_dir`` is absent or holds a labelling run's files only: a run replaces that folder
    whole, and a folder of the user's that a --run-id happens to name must not go with it."""
    fs, path = fsspec.core.url_to_fs(run_dir)
    if not fs.exists(path):
        return
    if not fs.isdir(path):
        raise ValueError(f"output {run_dir!r} is a file, not a labelling run's folder; give another --run-id "
                         "or --output")
    names = {posixpath.relpath(p, path) for p in fs.find(path, withdirs=True)} - {"."}  # "." is the folder itself
    foreign = sorted(name for name in names if not RUN_FILE.fullmatch(name))
    if foreign:
        raise ValueError(f"output {run_dir!r} holds what a labelling run does not write ({', '.join(foreign[:3])}"
                         f"{'...' if len(foreign) > 3 else ''}), which this run would delete with the folder; "
                         "give another --run-id or --output")


def try_model(handler: EarlyExitModelHandler, documents: Sequence[Document]) -> None:
    """Labels ``documents`` here, as a worker would; raises NothingLabelledError when inference fails on every
    one of them, unless only for want of memory (the workers retry that at smaller batches)."""
    if not documents:
        return
    import torch

    from models.classifier import free_accelerator_memory

    log.info("trying the model on the input's first %d documents before the job starts", len(documents))
    threads = torch.get_num_threads()  # load_model sets a worker's share; this process may go on after the job
    try:
        model = handler.load_model()
        rows = handler.run_inference(documents, model)
    finally:
        torch.set_num_threads(threads)
    del model  # each worker loads its own; the failures' tracebacks refer to it too, hence the collection
    gc.collect()
    free_accelerator_memory()
    reasons = [json.loads(row["dead_letter"])["reason"] for row in rows if "dead_letter" in row]
    if len(reasons) < len(documents):
        return
    if all(_out_of_memory(reason) for reason in reasons):
        log.warning("the model ran out of memory on each of the input's first %d documents, even alone; "
                    "starting the job anyway", len(documents))
        return
    first = FirstReasons()
    for reason in reasons:
        first.add(reason)
    raise NothingLabelledError.of(f"inference failed on each of the input's first {len(documents)} documents, "
                                  "tried before the job started", first, "the job did not start",
                                  cause="a broken model, or a precision or threshold it cannot run in?")


def _out_of_memory(reason: str) -> bool:
    """CUDA's "out of memory", the CPU allocator's "can't allocate memory", Python's MemoryError."""
    return any(sign in reason.lower() for sign in ("out of memory", "allocate memory", "memoryerror"))


def first_documents(files: Sequence[str], fields: InputFields) -> list[Document]:
    """The readable documents among the first TRIAL_RECORDS records of the first TRIAL_FILES ``files``, at most
    TRIAL_DOCUMENTS of them, in order."""
    records = itertools.chain.from_iterable(read_file(url, fields) for url in files[:TRIAL_FILES])
    documents = (r for r in itertools.islice(records, TRIAL_RECORDS) if isinstance(r, Document))
    return list(itertools.islice(documents, TRIAL_DOCUMENTS))


def run(config: LabelJobConfig, beam_args: Sequence[str] = (), model_id: str | None = None) -> dict:
    """Checks, runs the job to completion on the runner ``beam_args`` name (DirectRunner by default), writes
    the manifest and swaps the finished run in at ``config.run_dir``; returns the manifest. A run that fails
    (or is killed), or in which inference failed on every document, leaves the previous output of this run id
    as it was. ``model_id``: as for ``prepare_run``."""
    config.check_runner(beam_args)
    options = PipelineOptions(list(beam_args))
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = "DirectRunner"  # explicit, so Beam does not first try to download another runner
    processes = _local_processes(options, str(standard.runner))
    plan = prepare_run(config, processes, model_id)
    files, model_id, threshold, staging = plan.files, plan.model_id, plan.threshold, plan.staging
    # Default: spread documents over workers, except with a single in-process worker, where the shuffle only
    # holds the whole collection in memory (the DirectRunner buffers a GroupByKey's input; bench/label_memory.py)
    reshuffle = config.reshuffle if config.reshuffle is not None else processes != 1
    started = datetime.now(timezone.utc)
    run_key = uuid.uuid4().hex  # this run's own progress count, whatever its run id
    log.info("labelling %d file(s) matching %s with %s at threshold %.4f -> %s", len(files), config.input,
             model_id, threshold, config.run_dir)
    try:
        if processes is not None:  # the workers run on this machine: a broken model fails here, in seconds
            try_model(EarlyExitModelHandler(config, plan), first_documents(files, config.fields))
        pipeline = beam.Pipeline(options=options)
        build(pipeline, config, plan, reshuffle, run_key)
        result = pipeline.run()
        result.wait_until_finish()
        metrics = _metrics(result)
        from models.classifier import default_batch_size

        devices = {k.removeprefix("batches_on_"): v for k, v in metrics.items() if k.startswith("batches_on_")}
        manifest = {
            "run_id": config.run_id, "model": config.model, "model_id": model_id, "threshold": threshold,
            "input": config.input, "files": len(files), "output": config.run_dir,
            "started": started.isoformat(), "finished": datetime.now(timezone.utc).isoformat(),
            "runner": str(standard.runner), "reshuffle": reshuffle, "dtype": plan.dtype, "threads": plan.threads,
            "config": asdict(config),
            "counts": count_outputs(staging),
            "devices": devices,
            # most rows per forward pass on each kind of device the workers ran on: the flag or that device's
            # default, unless a RunInference batch (chunk_size documents) is smaller
            "batch_size": {device: min(config.batch_size or default_batch_size(device), config.chunk_size)
                           for device in devices},
            "metrics": metrics,
        }
        counts = manifest["counts"]
        if counts["dead_letters"] and not counts["labelled"]:
            kept = f"the previous output of run {config.run_id} is kept"
            raise NothingLabelledError.of(f"all {counts['dead_letters']} inputs are dead letters",
                                          _first_reasons(staging), kept)
        if metrics.get("documents_in", 0) != counts["documents_in"]:  # a counter never incremented is not reported
            log.warning("runner metrics report %s inputs but the output files hold %d; the manifest counts the files",
                        metrics.get("documents_in"), counts["documents_in"])
        with FileSystems.create(FileSystems.join(staging, MANIFEST_FILE)) as f:
            f.write((json.dumps(manifest, indent=2) + "\n").encode())
        publish(staging, config.run_dir, mark=MANIFEST_FILE)
    except BaseException as error:
        discard(staging)
        if not isinstance(error, KeyboardInterrupt) and _interrupted(error):  # a Ctrl-C that Beam re-raised as a
            raise KeyboardInterrupt from error  # RuntimeError: an interrupt, which the flows must not retry
        raise
    finally:
        RoutePredictionsFn.forget(run_key)  # counted in this process (an in-process runner's workers)
    return manifest


def _interrupted(error: BaseException | None) -> bool:
    """Whether ``error`` is, or was caused by, a KeyboardInterrupt: Beam's runners re-raise one from a worker as
    ``RuntimeError("KeyboardInterrupt [while running '...']")``."""
    while error is not None:
        if isinstance(error, KeyboardInterrupt) or str(error).startswith("KeyboardInterrupt"):
            return True
        error = error.__cause__ or error.__context__
    return False


def _local_processes(options: PipelineOptions, runner: str) -> int | None:
    """Worker processes the DirectRunner starts on this machine; None for other runners, whose workers are
    other machines with SDK process counts the launcher cannot see (there, give --threads)."""
    from apache_beam.options.pipeline_options import DirectOptions

    if not is_direct_runner(runner):
        return None
    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode == "multi_processing":
        return max(1, direct.direct_num_workers or _usable_cores())
    return 1


def _inside(url: str, directory: str) -> bool:
    """Whether file ``url`` lies under ``directory`` (both ``resolved``)."""
    (protocol, path), (dir_protocol, dir_path) = resolved(url), resolved(directory)
    return protocol == dir_protocol and path.startswith(dir_path.rstrip("/") + "/")


def _usable_cores() -> int:
    """CPUs this process may run on (its affinity, which containers narrow), not all the machine has."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _metrics(result) -> dict[str, int]:
    """This run's counters in our namespace, summed over steps (committed where the runner reports it)."""
    values: dict[str, int] = {}
    for c in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        values[c.key.metric.name] = values.get(c.key.metric.name, 0) + int(c.committed or c.attempted or 0)
    return dict(sorted(values.items()))


def _first_reasons(run_dir: str) -> FirstReasons:
    """The reasons of a run's dead letters to show, reading no further than needed."""
    reasons = FirstReasons()
    for path in _matching(run_dir, "deadletter-*.jsonl"):
        with FileSystems.open(path) as f:
            for line in f:
                if line.strip():
                    reasons.add(json.loads(line)["reason"])
                if reasons.full:
                    return reasons
    return reasons


def _matching(directory: str, pattern: str) -> list[str]:
    return [m.path for m in FileSystems.match([FileSystems.join(directory, pattern)])[0].metadata_list]


def count_outputs(run_dir: str) -> dict:
    """Counts read back from the files the run wrote, so the manifest matches them by construction (Beam
    metrics can undercount on some paths, e.g. elements emitted from timers on the FnApiRunner)."""
    import pyarrow.parquet as pq

    layers: dict[int, int] = {}
    truncated = 0
    for path in _matching(run_dir, "predictions-*.parquet"):
        with FileSystems.open(path) as f:
            table = pq.read_table(f, columns=["exit_layer", "truncated"])
        for layer in table["exit_layer"].to_pylist():
            layers[layer] = layers.get(layer, 0) + 1
        truncated += sum(table["truncated"].to_pylist())
    dead = 0
    for path in _matching(run_dir, "deadletter-*.jsonl"):
        with FileSystems.open(path) as f:
            dead += sum(1 for line in f if line.strip())
    labelled = sum(layers.values())
    return {"documents_in": labelled + dead, "labelled": labelled, "dead_letters": dead, "truncated": truncated,
            "exit_layers": {str(k): v for k, v in sorted(layers.items())}}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    _parser = argparse.ArgumentParser(description="rightsize labelling job (see 'rightsize label --help')")
    add_flags(_parser)
    _args, _beam_args = _parser.parse_known_args()
    print(json.dumps(run(config_from_args(_args), _beam_args), indent=2))
