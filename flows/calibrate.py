"""Prefect: the calibration step, cached on the trained model's content, the dev file's bytes, the
calibration config and the rightsize version.

The trained model directory is never changed: calibration works on a copy, ``<models_dir>/calibrated-<key>``,
which is the model the labelling step uses. Its summary is published as two Prefect artifacts.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.caching import CACHED_TASK, transient_only, result_or_refresh, storage
from flows.config import DataConfig
from flows.train import is_trained
from models import EarlyExitClassifier
from models.calibration import CALIBRATION_FILE, CalibrationConfig, calibrate
from models.classifier import artifact_id, pick_device
from models.precision import resolve_dtype
from ops.dynamics import DYNAMICS_DIR
from ops.examples import load_examples
from ops.fingerprint import fingerprint, fingerprint_path, project_version

log = logging.getLogger(__name__)
ARTIFACT_KEY = "rightsize-calibration"
TABLE_ARTIFACT_KEY = "rightsize-calibration-exits"


def calibration_key(trained_dir: str, data: DataConfig, config: CalibrationConfig, dtype: str) -> str:
    return fingerprint(step="calibrate", version=project_version(), model=artifact_id(trained_dir),
                       dev=fingerprint_path(data.dev), fields=[data.text_field, data.pair_field, data.label_field],
                       config=asdict(config), dtype=dtype)


def calibrate_copy(trained_dir: str | Path, data: DataConfig, config: CalibrationConfig, out: str | Path,
                   dtype: str = "float32") -> dict:
    """Copies the trained model to ``out`` and calibrates the copy on logits computed in ``dtype`` (resolved:
    not "auto"); returns the calibration report as a dict with ``model_dir`` and ``model_id`` added."""
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)  # a half-written copy from a killed run
    shutil.copytree(trained_dir, out, ignore=shutil.ignore_patterns(DYNAMICS_DIR))  # dynamics stay with the trained model
    model = EarlyExitClassifier.from_pretrained(out, dtype=dtype)
    dev = load_examples(data.dev, text_field=data.text_field, pair_field=data.pair_field,
                        label_field=data.label_field, split="validation")
    report = calibrate(model, dev, config, out=out)
    return asdict(report) | {"model_dir": str(out), "model_id": model.model_id}


@task(retries=1, retry_condition_fn=transient_only, retry_delay_seconds=5, **CACHED_TASK)
def calibrate_model(trained_dir: str, data: DataConfig, config: CalibrationConfig, out: str, dtype: str,
                    cache_key: str) -> dict:
    return calibrate_copy(trained_dir, data, config, out, dtype)


def calibration_markdown(report: dict) -> str:
    held = report["held_out"]
    lines = [
        "# Calibration", "",
        f"Model: `{report['model_dir']}` ({report['model_id']})", "",
        f"{'' if report['target_met'] else '**TARGET NOT MET**: '}{report['choice']}", "",
        f"Threshold **{report['threshold']:.4f}**: on the held-out {report['documents_held_out']} documents, "
        f"accuracy drop {held['accuracy_drop']:+.4f}, FLOPs {held['flops_fraction']:.1%} of the full model, "
        f"mean exit layer {held['mean_exit_layer']:.2f}.", "",
        "| exit layer | temperature | ECE before | ECE after |", "|---|---|---|---|",
    ]
    lines += [f"| {e['exit_layer']} | {e['temperature']:.3f} | {e['ece_before']:.4f} | {e['ece_after']:.4f} |"
              for e in report["exits"]]
    return "\n".join(lines) + "\n"


def calibration_table(report: dict) -> list[dict]:
    """One row per exit, plus the threshold and its held-out figures on every row (a flat table)."""
    held = report["held_out"]
    return [{"exit_layer": e["exit_layer"], "temperature": round(e["temperature"], 4),
             "ece_before": round(e["ece_before"], 4), "ece_after": round(e["ece_after"], 4),
             "threshold": round(report["threshold"], 4), "held_out_accuracy_drop": round(held["accuracy_drop"], 4),
             "held_out_flops_fraction": round(held["flops_fraction"], 4)} for e in report["exits"]]


@flow(name="rightsize-calibrate")
def calibrate_flow(trained_dir: str, data: DataConfig, config: CalibrationConfig, models_dir: str,
                   cache_dir: str, dtype: str = "float32") -> dict:
    """Calibrates a copy of ``trained_dir`` in ``dtype`` (the precision labelling will use) unless identical
    inputs were calibrated before; publishes the summary as artifacts; returns the report dict with model_dir,
    model_id, cached and cache_key."""
    dtype = resolve_dtype(dtype, pick_device())
    key = calibration_key(trained_dir, data, config, dtype)
    task = calibrate_model.with_options(result_storage=storage(cache_dir))
    args = (trained_dir, data, config, str(Path(models_dir) / f"calibrated-{key[:16]}"), dtype, key)
    report, cached = result_or_refresh(task, task(*args, return_state=True),
                                       lambda r: is_trained(r["model_dir"]) and Path(r["model_dir"], CALIBRATION_FILE).is_file(),
                                       *args)
    create_markdown_artifact(calibration_markdown(report), key=ARTIFACT_KEY, description="calibration summary")
    create_table_artifact(calibration_table(report), key=TABLE_ARTIFACT_KEY, description="per-exit calibration")
    log.info("calibration: %s -> %s (threshold %.4f)", "cached, inputs unchanged" if cached else "fitted",
             report["model_dir"], report["threshold"])
    return report | {"cached": cached, "cache_key": key}
