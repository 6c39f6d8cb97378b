"""Fine-tuning an ``EarlyExitClassifier`` in one of three modes (``TrainConfig.mode``):

- joint: loss = sum of the exits' cross-entropies (Schwartz et al., 2020, section 3);
- sweet: the same sum, but the model detaches the hidden state after each exit, so each exit's loss trains
  only its head and the layers since the previous exit (Rotem et al., ACL 2023, "SWEET");
- multi: a cascade of separate models, one backbone truncated to each exit's depth, fine-tuned one after
  another, each with the same seed, schedule and data order (the Multi-Model baseline of both papers).

AdamW with linear warmup and decay; every exit is evaluated on the dev set after each epoch and the epoch
with the best mean exit accuracy is kept (in mode multi, each stage keeps its own best epoch).

Training dynamics (``TrainConfig.dynamics``, ops/dynamics.py): after each epoch, each training example's
probability of its gold label at every exit, from an evaluation pass over the training set (no dropout, the
epoch's final weights: Swayamdipta et al.'s definition). Values read off the training pass itself would cost
nothing but depend on when in the epoch an example's batch ran (early batches meet a barely trained model),
which biases the data map. The pass costs about a third of an epoch's compute. Written to ``<out>/dynamics/``.

With a ``checkpoint_dir``, the complete training state (weights, best weights so far, optimizer, scheduler,
RNG states, epoch reports) is written there after every epoch, atomically; a later call with the same
inputs resumes after the last completed epoch and ends with the same weights as an uninterrupted run."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from models.classifier import EarlyExitClassifier, pick_device
from models.config import TRAIN_DTYPE_CHOICES, TRAINING_MODES
from models.precision import resolve_dtype
from ops.calibration import softmax
from ops.dynamics import TrainingDynamics, write_dynamics
from ops.examples import Examples, check_seed, label_names

log = logging.getLogger(__name__)
TRAINING_FILE = "training.json"
MIN_TRAIN_LENGTH = 8  # tokens per example, [CLS] and [SEP] (and a pair's second [SEP]) included
CHECKPOINT_STATE = "state.json"  # epoch reports, best score, numpy RNG; tensors go to the files below
CHECKPOINT_WEIGHTS = "model.safetensors"  # weights after the last completed epoch
CHECKPOINT_BEST = "best.safetensors"  # weights of the best epoch so far
CHECKPOINT_OPTIMIZER = "optimizer.pt"  # optimizer + scheduler + torch RNG states, read with weights_only=True
CHECKPOINT_DYNAMICS = "dynamics.safetensors"  # training dynamics of the completed epochs


@dataclass(frozen=True)
class TrainConfig:
    model: str  # backbone: hub name, local directory, or "minilm" (the packaged all-MiniLM-L6-v2)
    exits: tuple[int, ...] | None = None  # None: models.config.default_exit_layers
    epochs: int = 3
    max_length: int = 128  # tokens; news leads and sentences fit, long documents are truncated
    pooling: str = "mean"  # what the exit heads read; see models/config.py
    batch_size: int = 32
    lr: float = 1e-4  # AdamW peak rate: suits small encoders like MiniLM; use 2e-5..5e-5 for base-size models
    warmup_ratio: float = 0.1  # fraction of steps with a linear warmup
    weight_decay: float = 0.01
    seed: int = 42
    mode: str = "joint"  # joint | sweet | multi, see the module docstring
    dtype: str = "float32"  # mixed precision: bfloat16 / float16 autocast (float16 with a gradient scaler), or auto
    dynamics: bool = True  # record training dynamics (an evaluation pass over the training set per epoch)

    def __post_init__(self):
        if self.dtype not in TRAIN_DTYPE_CHOICES:  # int8 is for inference: quantised layers have no gradients
            raise ValueError(f"TrainConfig.dtype must be one of {TRAIN_DTYPE_CHOICES}, got {self.dtype!r}")
        if self.mode not in TRAINING_MODES:
            raise ValueError(f"TrainConfig.mode must be one of {TRAINING_MODES}, got {self.mode!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_length < MIN_TRAIN_LENGTH:  # 2 is [CLS] [SEP] alone: it would train to chance without a word
            raise ValueError(f"TrainConfig.max_length must be >= {MIN_TRAIN_LENGTH} tokens, special tokens included, "
                             f"got {self.max_length}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"TrainConfig.lr must be a finite number > 0, got {self.lr}")
        if self.exits is not None and not self.exits:  # an empty list is not "the default"
            raise ValueError("TrainConfig.exits is empty: give exit layers, or leave it out for the default")
        check_seed(self.seed)
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"TrainConfig.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


@dataclass
class EpochReport:
    epoch: int
    train_loss: float  # mean over steps of the summed exit losses
    dev_accuracy: list[float]  # one per exit
    seconds: float


@dataclass
class TrainReport:
    config: dict
    epochs: list[EpochReport] = field(default_factory=list)  # multi: losses and times summed over stages
    best_epoch: int = 0  # the epoch kept; 0 in mode multi, where each stage keeps its own (see stages)
    dtype: str = "float32"  # the compute precision training ran in (config.dtype resolved)
    dev_accuracy: list[float] = field(default_factory=list)  # per exit, of the weights kept
    stages: list[dict] = field(default_factory=list)  # multi: each stage's own report


def exit_accuracies(logits: np.ndarray, label_ids: np.ndarray) -> list[float]:
    """(exits, n, labels) logits and (n,) gold ids -> accuracy per exit."""
    return [float(x) for x in (logits.argmax(-1) == label_ids[None, :]).mean(axis=1)]


def train(config: TrainConfig, train_set: Examples, dev_set: Examples, out: str | Path | None = None,
          checkpoint_dir: str | Path | None = None) -> tuple[EarlyExitClassifier, TrainReport]:
    """Fine-tunes ``config.model`` on ``train_set``; saves the best epoch's model (and the training dynamics)
    to ``out`` when given. With ``checkpoint_dir``, resumes from the checkpoint found there (same inputs
    assumed: the caller keys the directory on them) and checkpoints after every epoch."""
    # Seed before building the model so the seed also fixes the new exit heads' initial weights.
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    labels = label_names(train_set)
    unseen = sorted(set(dev_set.labels) - set(labels))
    if unseen:  # before the backbone loads; the model could never predict them
        raise ValueError(f"{dev_set.source}: labels {unseen[:5]} do not occur in the training data "
                         f"{train_set.source}, whose labels are {labels[:10]}")
    model = EarlyExitClassifier.from_backbone(config.model, labels, config.exits, config.max_length, config.pooling,
                                              training_mode=config.mode)
    model.set_config(replace(model.config, text_pairs=train_set.pairs is not None))  # checked at every prediction
    model.to(pick_device())
    model.dtype_name = resolve_dtype(config.dtype, model.device)  # dev evaluation and dynamics run in it too
    data = _Data(model.tokenize(train_set.texts, train_set.pairs, padding=False),
                 torch.tensor(train_set.label_ids(labels)), dev_set, np.array(dev_set.label_ids(labels)))
    if model.cascade:
        if config.exits is None:
            log.warning("mode multi with the default exits %s: a cascade of %d models (%d layers to train, and as "
                        "many for a document that reaches the last stage); give --exits for fewer stages",
                        list(model.config.exit_layers), len(model.config.exit_layers), sum(model.config.exit_layers))
        stages = []
        for k, layer in enumerate(model.config.exit_layers):
            log.info("mode multi: fine-tuning stage %d of %d (%d layers)", k + 1, len(model.config.exit_layers), layer)
            stage_dir = None if checkpoint_dir is None else Path(checkpoint_dir) / f"stage-{k + 1}"
            torch.manual_seed(config.seed)  # every stage: the same dropout masks and data order
            stages.append(_fit(model.stage_model(k), config, data, stage_dir, f"stage {k + 1} "))
        report, dynamics = _merge_stages(config, stages)
    else:
        report, dynamics = _fit(model, config, data, None if checkpoint_dir is None else Path(checkpoint_dir))
    model.eval()
    if out is not None:
        model.save_pretrained(out)
        if dynamics is not None:
            write_dynamics(out, dynamics, train_set)
        Path(out, TRAINING_FILE).write_text(json.dumps(asdict(report), indent=2) + "\n")  # last: marks a finished model
    return model, report


@dataclass
class _Data:
    train: object  # unpadded BatchEncoding of the training texts
    train_ids: torch.Tensor  # (n,) gold class ids
    dev: Examples
    dev_ids: np.ndarray  # (n_dev,) gold class ids


def _fit(model: EarlyExitClassifier, config: TrainConfig, data: _Data, checkpoint_dir: Path | None,
         name: str = "") -> tuple[TrainReport, TrainingDynamics | None]:
    """The training loop; leaves ``model`` holding the best epoch's weights."""
    n = len(data.train_ids)
    steps_per_epoch = -(-n // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(_parameter_groups(model, config.weight_decay), lr=config.lr)
    schedule = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    generator = torch.Generator().manual_seed(config.seed)
    # float16 needs loss scaling against underflowing gradients (on CUDA); bfloat16 has float32's range
    scaler = torch.amp.GradScaler(model.device.type, enabled=model.dtype_name == "float16")

    report = TrainReport(config=asdict(config), dtype=model.dtype_name)
    gold_probability, correct = [], []  # per completed epoch: (exits, n) float32 and bool
    best_score, best_state = -1.0, None
    resume_from = _complete_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    if resume_from is not None:
        best_score, best_state = _load_checkpoint(resume_from, model, optimizer, schedule, generator, scaler, report,
                                                  gold_probability, correct)
        log.info("resuming training from %s after epoch %d of %d", resume_from, len(report.epochs), config.epochs)
    for epoch in range(len(report.epochs) + 1, config.epochs + 1):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=generator)
        losses = []
        bar = tqdm(range(0, n, config.batch_size), desc=f"{name}epoch {epoch}/{config.epochs}", unit="batch")
        for offset in bar:
            rows = order[offset:offset + config.batch_size]
            batch = model.pad_rows(data.train, rows.tolist())
            gold = data.train_ids[rows].to(model.device)
            with model.precision():
                logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))  # (exits, b, labels)
                loss = sum(torch.nn.functional.cross_entropy(exit_logits.float(), gold) for exit_logits in logits)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # clip the true gradients
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        # Checked per epoch, on the weights: with float16 a step's loss may be inf while the scaler skips it
        if not torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all():  # one host sync
            raise ValueError(f"training diverged in {name}epoch {epoch}: the weights are no longer finite (mean loss "
                             f"{np.mean(losses):.3g}); lower --lr")
        if config.dynamics:
            train_logits, _ = model.encoded_exit_logits(data.train)  # (exits, n, labels)
            gold_probability.append(_gold_probability(train_logits, data.train_ids.numpy()))
            correct.append(train_logits.argmax(-1) == data.train_ids.numpy())
        dev_logits, _ = model.exit_logits(data.dev.texts, data.dev.pairs)
        accuracy = exit_accuracies(dev_logits, data.dev_ids)
        report.epochs.append(EpochReport(epoch, float(np.mean(losses)), accuracy, time.perf_counter() - start))
        log.info("%sepoch %d: loss %.4f, dev accuracy per exit %s", name, epoch, np.mean(losses),
                 " ".join(f"L{layer}={acc:.3f}" for layer, acc in zip(model.config.exit_layers, accuracy)))
        if np.mean(accuracy) > best_score:
            best_score, report.best_epoch = float(np.mean(accuracy)), epoch
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if checkpoint_dir is not None:
            _save_checkpoint(checkpoint_dir, model, optimizer, schedule, generator, scaler, report, best_score,
                             best_state, gold_probability, correct)

    model.load_state_dict(best_state)
    report.dev_accuracy = report.epochs[report.best_epoch - 1].dev_accuracy
    dynamics = None
    if config.dynamics:
        dynamics = TrainingDynamics(model.config.exit_layers, np.stack(gold_probability), np.stack(correct))
    return report, dynamics


def _gold_probability(logits: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """(exits, n, labels) logits and (n,) gold ids -> (exits, n) float32 softmax probability of the gold label."""
    return np.ascontiguousarray(softmax(logits)[:, np.arange(len(gold)), gold], dtype=np.float32)


def _merge_stages(config: TrainConfig, stages: list[tuple[TrainReport, TrainingDynamics | None]]):
    """One report and one dynamics record for a cascade, from its stages' (one exit each)."""
    reports = [report for report, _ in stages]
    report = TrainReport(config=asdict(config), best_epoch=0, stages=[asdict(r) for r in reports], dtype=reports[0].dtype,
                         dev_accuracy=[r.dev_accuracy[0] for r in reports])
    for epoch, rows in enumerate(zip(*(r.epochs for r in reports)), start=1):
        report.epochs.append(EpochReport(epoch, float(sum(e.train_loss for e in rows)),
                                         [e.dev_accuracy[0] for e in rows], float(sum(e.seconds for e in rows))))
    dynamics = None
    if config.dynamics:
        parts = [d for _, d in stages]
        dynamics = TrainingDynamics(tuple(d.exit_layers[0] for d in parts),
                                    np.concatenate([d.gold_probability for d in parts], axis=1),
                                    np.concatenate([d.correct for d in parts], axis=1))
    return report, dynamics


def _save_checkpoint(directory: Path, model, optimizer, schedule, generator, scaler, report: TrainReport,
                     best_score: float, best_state: dict, gold_probability: list, correct: list) -> None:
    """Writes the whole training state to a fresh folder, then swaps it in with renames, so a run killed at
    any moment leaves either the previous epoch's checkpoint or this one, never a mix."""
    staging = directory.with_name(directory.name + ".staging")
    old = directory.with_name(directory.name + ".old")
    if not directory.exists() and (staging / CHECKPOINT_STATE).is_file():  # resumed from it: make it the checkpoint
        os.replace(staging, directory)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file(_contiguous(model.state_dict()), staging / CHECKPOINT_WEIGHTS)
    save_file(_contiguous(best_state), staging / CHECKPOINT_BEST)
    if gold_probability:
        save_file({"gold_probability": torch.from_numpy(np.stack(gold_probability)),
                   "correct": torch.from_numpy(np.stack(correct))}, staging / CHECKPOINT_DYNAMICS)
    torch.save({
        "optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict(), "scaler": scaler.state_dict(),
        "torch_rng": torch.get_rng_state(), "generator": generator.get_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }, staging / CHECKPOINT_OPTIMIZER)
    numpy_rng = np.random.get_state()
    state = {"report": asdict(report), "best_score": best_score,
             "numpy_rng": [numpy_rng[0], numpy_rng[1].tolist(), *numpy_rng[2:]]}
    (staging / CHECKPOINT_STATE).write_text(json.dumps(state))  # last: its presence marks a complete folder
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
    os.replace(staging, directory)
    shutil.rmtree(old, ignore_errors=True)


def _complete_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint: the directory itself, or, for a run killed between the two renames of
    ``_save_checkpoint``, its staging folder (newer) or the previous one. state.json is written last."""
    for candidate in (directory, directory.with_name(directory.name + ".staging"),
                      directory.with_name(directory.name + ".old")):
        if (candidate / CHECKPOINT_STATE).is_file():
            return candidate
    return None


def _load_checkpoint(directory: Path, model, optimizer, schedule, generator, scaler, report: TrainReport,
                     gold_probability: list, correct: list) -> tuple[float, dict]:
    state = json.loads((directory / CHECKPOINT_STATE).read_text())
    saved = state["report"]
    if saved["config"] != json.loads(json.dumps(report.config)):  # as JSON: tuples read back as lists
        raise ValueError(f"{directory}: checkpoint of a different training config; delete it to start over")
    if saved.get("dtype", "float32") != report.dtype:  # "auto" resolved differently on this machine
        raise ValueError(f"{directory}: checkpoint trained in {saved.get('dtype')}, this run would use {report.dtype}; "
                         f"give --dtype {saved.get('dtype')} or delete the checkpoint")
    model.load_state_dict(load_file(directory / CHECKPOINT_WEIGHTS, device=str(model.device)))
    # weights_only=True: a restricted unpickler that loads tensors and plain containers, never code.
    rest = torch.load(directory / CHECKPOINT_OPTIMIZER, weights_only=True, map_location=model.device)
    optimizer.load_state_dict(rest["optimizer"])
    schedule.load_state_dict(rest["scheduler"])
    scaler.load_state_dict(rest["scaler"])
    torch.set_rng_state(rest["torch_rng"].cpu())
    generator.set_state(rest["generator"].cpu())
    if rest["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rest["cuda_rng"]])
    name, keys, *others = state["numpy_rng"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *others))
    report.epochs = [EpochReport(**e) for e in saved["epochs"]]
    report.best_epoch = saved["best_epoch"]
    if (directory / CHECKPOINT_DYNAMICS).is_file():
        dynamics = load_file(directory / CHECKPOINT_DYNAMICS)
        gold_probability.extend(dynamics["gold_probability"].numpy())
        correct.extend(dynamics["correct"].numpy())
    return state["best_score"], load_file(directory / CHECKPOINT_BEST)


def _contiguous(state: dict) -> dict:
    return {k: v.detach().contiguous() for k, v in state.items()}


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and LayerNorm weights (the usual BERT recipe)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
