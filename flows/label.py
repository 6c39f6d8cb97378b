"""Prefect: the labelling step, a thin shell over the Beam job of ``pipelines/label.py``.

A run id whose ``manifest.json`` exists finished before (the manifest is written last) and is not labelled
again, provided it was labelled with the same model, threshold, precision, input glob and fields and its
prediction files are still there; otherwise the run is labelled again and replaced. With no run id
configured, it is derived from the model's content id, the threshold, the input fields and the input files'
names, sizes and modification times: an unchanged corpus and model is not labelled twice, and any change
gives a new run.
"""

from __future__ import annotations

import json
import logging

import fsspec
from prefect import flow, task

from flows.caching import transient_only

from flows.config import LabelStepConfig, RunConfig
from models.classifier import artifact_id, calibration_for
from ops.fingerprint import fingerprint
from ops.urls import list_files
from pipelines.label_config import LabelJobConfig

log = logging.getLogger(__name__)
FIELDS = ("text_field", "pair_field", "id_field")  # which record fields a run read


def job_threshold(model_dir: str, dtype: str, threshold: float | None) -> float:
    """The threshold a job labels at, as pipelines/label.prepare_run takes it: the given one, or the one
    calibrated for the job's precision (not the one calibrated last)."""
    return threshold if threshold is not None else calibration_for(model_dir, dtype)[1].threshold


def default_run_id(model_dir: str, model_id: str, step: LabelStepConfig) -> str:
    threshold = job_threshold(model_dir, step.dtype, step.threshold)
    files = [[url, info.get("size"), str(info.get("mtime") or info.get("LastModified") or info.get("updated"))]
             for url, info in list_files(step.input).items()]
    key = fingerprint(model=model_id, threshold=threshold, dtype=step.dtype, files=files,
                      fields=[getattr(step, k) for k in FIELDS])
    return f"run-{key[:12]}"


def finished_run(job: LabelJobConfig, model_id: str) -> dict | None:
    """The manifest of a run of ``job`` that completed with this model (content id ``model_id``), threshold,
    precision, input and fields, and whose prediction files are still there; None otherwise (the run is then
    labelled again, replacing it)."""
    fs, run_dir = fsspec.core.url_to_fs(job.run_dir.rstrip("/"))
    if not fs.isfile(f"{run_dir}/manifest.json"):
        return None
    with fs.open(f"{run_dir}/manifest.json", "r") as f:
        manifest = json.load(f)
    threshold = job_threshold(job.model, job.dtype, job.threshold)
    recorded = manifest.get("config", {})
    same = (manifest.get("model_id"), manifest.get("threshold"), manifest.get("input"), recorded.get("dtype"),
            [recorded.get(k) for k in FIELDS]) == (model_id, threshold, job.input, job.dtype,
                                                   [getattr(job, k) for k in FIELDS])
    labelled = manifest.get("counts", {}).get("labelled", 0)
    complete = labelled == 0 or bool(fs.glob(f"{run_dir}/predictions-*.parquet"))
    if not (same and complete):
        log.info("run %s exists but %s: labelling it again", job.run_id, "its model, threshold, precision, input "
                 "or fields differ" if not same else "its prediction files are gone")
        return None
    return manifest


@task(retries=2, retry_condition_fn=transient_only, retry_delay_seconds=30)
def label_corpus(job: LabelJobConfig, model_id: str, beam_args: list[str]) -> dict:
    """Runs the Beam job to completion; returns its manifest with ``skipped`` (true: finished before)."""
    from pipelines.label import run  # imports Beam

    manifest = finished_run(job, model_id)
    if manifest is not None:
        log.info("run %s finished before (%s): not labelled again", job.run_id, job.run_dir)
        return manifest | {"skipped": True}
    return run(job, beam_args, model_id) | {"skipped": False}


@flow(name="rightsize-label")
def label_flow(model_dir: str, config: RunConfig) -> dict:
    # hashed once here (a remote model's weights are read to hash them); each Beam worker checks what it loads
    model_id = artifact_id(model_dir)
    run_id = config.label.run_id or default_run_id(model_dir, model_id, config.label)
    return label_corpus(config.label_job(model_dir, run_id), model_id, list(config.label.beam_args))
