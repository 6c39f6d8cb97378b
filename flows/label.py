"""Prefect: the labelling step, a thin shell over the Beam job of ``pipelines/label.py``.

A run id whose ``manifest.json`` exists finished before (the manifest is written last) and is not labelled
again. With no run id configured, it is derived from the model's content id, the threshold, the input
fields and the input files' names, sizes and modification times: an unchanged corpus and model is not
labelled twice, and any change gives a new run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict

import fsspec
from prefect import flow, task

from flows.caching import transient_only

from flows.config import LabelStepConfig
from models.classifier import artifact_id, read_model_config
from ops.fingerprint import fingerprint
from ops.records import expand_glob
from pipelines.label_config import LabelJobConfig

log = logging.getLogger(__name__)


def default_run_id(model_dir: str, step: LabelStepConfig) -> str:
    threshold = read_model_config(model_dir).threshold if step.threshold is None else step.threshold
    files = []
    for url in expand_glob(step.input):
        fs, path = fsspec.core.url_to_fs(url)
        info = fs.info(path)
        files.append([url, info.get("size"), str(info.get("mtime") or info.get("LastModified") or info.get("updated"))])
    key = fingerprint(model=artifact_id(model_dir), threshold=threshold, files=files,
                      fields=[step.text_field, step.pair_field, step.id_field])
    return f"run-{key[:12]}"


def finished_manifest(run_dir: str) -> dict | None:
    """The manifest of a run that completed, or None."""
    path = f"{run_dir.rstrip('/')}/manifest.json"
    fs, local = fsspec.core.url_to_fs(path)
    if not fs.isfile(local):
        return None
    with fs.open(local, "r") as f:
        return json.load(f)


@task(retries=2, retry_condition_fn=transient_only, retry_delay_seconds=30)
def label_corpus(job: LabelJobConfig, beam_args: list[str]) -> dict:
    """Runs the Beam job to completion; returns its manifest with ``skipped`` (true: finished before)."""
    from pipelines.label import run  # imports Beam

    manifest = finished_manifest(job.run_dir)
    if manifest is not None:
        log.info("run %s finished before (%s): not labelled again", job.run_id, job.run_dir)
        return manifest | {"skipped": True}
    return run(job, beam_args) | {"skipped": False}


@flow(name="rightsize-label")
def label_flow(model_dir: str, step: LabelStepConfig, output: str) -> dict:
    run_id = step.run_id or default_run_id(model_dir, step)
    fields = {k: v for k, v in asdict(step).items() if k not in ("output", "run_id", "beam_args")}
    job = LabelJobConfig(model=model_dir, output=output, run_id=run_id, **fields)
    return label_corpus(job, list(step.beam_args))
