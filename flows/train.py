"""Prefect: the fine-tuning step, cached on the content of what it reads.

With a data selection (the [select] section), the step first fine-tunes on all the training data with
training dynamics on, writes the selected region of its data map to ``<models_dir>/selected-<key>.jsonl``,
and then fine-tunes the model it returns on that file: e.g. SWEET on the most ambiguous third.

The cache key hashes the training and dev files' bytes, the backbone directory's files, the training config,
the field names and the rightsize version, so changing one byte of the training data retrains, and an
unchanged re-run reuses the model. The model goes to ``<models_dir>/trained-<key>``; the training checkpoints
every epoch into it, so a retried or re-run training resumes after its last completed epoch.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, replace
from pathlib import Path

from prefect import flow, task

from flows.caching import CACHED_TASK, transient_only, result_or_refresh, storage
from flows.config import DataConfig
from models.classifier import resolve_backbone
from models.config import CONFIG_FILE, WEIGHTS_FILE
from models.training import TRAINING_FILE, TrainConfig, train
from ops.dynamics import SelectionConfig, select_training_data
from ops.examples import load_examples
from ops.fingerprint import fingerprint, fingerprint_path, project_version

log = logging.getLogger(__name__)
CHECKPOINT_DIR = "checkpoint"


def training_key(data: DataConfig, config: TrainConfig) -> str:
    return fingerprint(step="train", version=project_version(), config=asdict(config), data=asdict(data) | {
        "train": fingerprint_path(data.train), "dev": fingerprint_path(data.dev)},
        backbone=fingerprint_path(resolve_backbone(config.model)))


def is_trained(directory: str | Path) -> bool:
    """A complete model: weights and settings saved, and training.json, which is written last."""
    return all(Path(directory, name).is_file() for name in (WEIGHTS_FILE, CONFIG_FILE, TRAINING_FILE))


def fine_tune(data: DataConfig, config: TrainConfig, out: str | Path) -> Path:
    """Trains into ``out`` (resuming from its checkpoint if one is there) unless a finished model is there."""
    out = Path(out)
    if is_trained(out):
        log.info("%s already holds a trained model", out)
        _remove_checkpoints(out)  # left by a run killed just after saving
        return out
    fields = dict(text_field=data.text_field, pair_field=data.pair_field, label_field=data.label_field)
    train_set = load_examples(data.train, **fields, split="train")
    dev_set = load_examples(data.dev, **fields, split="validation")
    train(config, train_set, dev_set, out=out, checkpoint_dir=out / CHECKPOINT_DIR)
    _remove_checkpoints(out)  # optimizer state: twice the weights, not needed now
    return out


def _remove_checkpoints(out: Path) -> None:
    for suffix in ("", ".staging", ".old"):
        shutil.rmtree(out / (CHECKPOINT_DIR + suffix), ignore_errors=True)


@task(retries=1, retry_condition_fn=transient_only, retry_delay_seconds=5, **CACHED_TASK)
def train_model(data: DataConfig, config: TrainConfig, out: str, cache_key: str) -> str:
    return str(fine_tune(data, config, out))


@task
def select_data(model_dir: str, selection: SelectionConfig, out: str) -> str:
    """Not cached: a second of work, and the same model and selection write the same bytes, which is what
    the next training's cache key reads."""
    written, total = select_training_data(model_dir, selection, out, overwrite=True)  # a name keyed on its inputs
    log.info("selected %d of %d training examples (%s) -> %s", written, total, selection.region, out)
    return out


@flow(name="rightsize-train")
def train_flow(data: DataConfig, config: TrainConfig, models_dir: str, cache_dir: str,
               selection: SelectionConfig | None = None) -> dict:
    """Fine-tunes unless a model from identical inputs exists; returns {model_dir, cached, cache_key}, and
    with a ``selection`` also {selection: {from_model, data, ...}}: the run whose dynamics chose the data."""
    chosen = None
    if selection is not None:
        mapped = _train(data, replace(config, dynamics=True), models_dir, cache_dir)
        key = fingerprint(step="select", selection=asdict(selection), source=mapped["cache_key"])
        out = str(Path(models_dir) / f"selected-{key[:16]}.jsonl")
        subset = select_data(mapped["model_dir"], selection, out)
        data = replace(data, train=subset)
        chosen = {"from_model": mapped["model_dir"], "data": subset, **asdict(selection)}
    result = _train(data, config, models_dir, cache_dir)
    return result | ({"selection": chosen} if chosen else {})


def _train(data: DataConfig, config: TrainConfig, models_dir: str, cache_dir: str) -> dict:
    key = training_key(data, config)
    task = train_model.with_options(result_storage=storage(cache_dir))
    args = (data, config, str(Path(models_dir) / f"trained-{key[:16]}"), key)
    model_dir, cached = result_or_refresh(task, task(*args, return_state=True),
                                          is_trained, *args)
    log.info("fine-tuning: %s -> %s", "cached, inputs unchanged" if cached else "trained", model_dir)
    return {"model_dir": model_dir, "cached": cached, "cache_key": key}
