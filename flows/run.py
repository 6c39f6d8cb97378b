"""Prefect: the end-to-end flow. One TOML file (flows/config.py) drives fine-tuning, calibration, labelling
and the cost report; each step is its own flow, cached or skipped when its inputs have not changed.

With no ``PREFECT_API_URL`` set, Prefect runs it on a temporary local server (SQLite under PREFECT_HOME),
offline; with one set, the runs, logs and artifacts go to that server.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from prefect import flow
from transformers import AutoConfig

from flows.calibrate import calibrate_flow
from flows.config import RunConfig, load_config
from flows.label import label_flow
from flows.report import report_flow
from flows.train import train_flow
from models.calibration import calibration_parts
from models.classifier import resolve_backbone
from models.config import default_exit_layers
from ops.examples import load_examples
from ops.urls import expand_glob

log = logging.getLogger(__name__)
FLOW_NAME = "rightsize-run"
RUN_FILE = "last_run.json"  # written into the workspace: where everything of the last run went


def check_before_training(config: RunConfig) -> None:
    """What would otherwise fail only after fine-tuning, hours in: a corpus that is not there, dev data that
    cannot be calibrated on with [calibrate]'s settings, a [select] exit layer the model will not have."""
    expand_glob(config.label.input)
    data = config.data
    calibration_parts(load_examples(data.dev, text_field=data.text_field, pair_field=data.pair_field,
                                    label_field=data.label_field, split="validation"), config.calibrate)
    layer = config.select and config.select.exit_layer
    if layer is not None and not config.train.exits:  # the default exits: every quarter of the backbone's depth
        exits = default_exit_layers(AutoConfig.from_pretrained(resolve_backbone(config.train.model)).num_hidden_layers)
        if layer not in exits:
            raise ValueError(f"[select] exit_layer {layer} is not among the default exits {list(exits)} of "
                             f"{config.train.model}; give [train] exits, or one of those")


def run_pipeline(config: RunConfig) -> dict:
    """Train -> calibrate -> label -> report; returns where everything went and what was reused."""
    check_before_training(config)
    cache = str(config.cache_dir)
    trained = train_flow(config.data, config.train, str(config.models_dir), cache, config.select)
    calibrated = calibrate_flow(trained["model_dir"], config.data, config.calibrate, str(config.models_dir), cache,
                                config.label.dtype)  # calibrated in the precision the labelling runs in
    manifest = label_flow(calibrated["model_dir"], config)
    report = report_flow(config.report_config(), str(config.report_dir))
    outcome = {
        "config": config.source,
        "trained_model": trained["model_dir"], "training_cached": trained["cached"],
        "selection": trained.get("selection"),
        "model": calibrated["model_dir"], "calibration_cached": calibrated["cached"],
        "threshold": calibrated["threshold"], "target_met": calibrated["target_met"],
        "held_out": calibrated["held_out"],
        "run_id": manifest["run_id"], "labels": manifest["output"], "labelling_skipped": manifest["skipped"],
        "label_counts": manifest["counts"],
        "report": report["paths"], "summary": {k: v for k, v in report["summary"].items() if not isinstance(v, (list, dict))},
    }
    Path(config.output).mkdir(parents=True, exist_ok=True)
    (Path(config.output) / RUN_FILE).write_text(json.dumps(outcome | {"settings": asdict(config)}, indent=2) + "\n")
    return outcome


@flow(name=FLOW_NAME)
def rightsize_run(config_file: str, workdir: str | None = None) -> dict:
    """The whole job from one config file; relative paths in it are taken from ``workdir`` (default: the
    current directory). The file is read at each run, so a scheduled deployment picks up edits."""
    return run_pipeline(load_config(config_file, workdir))
