"""Fine-tuning an ``EarlyExitClassifier``: joint training, loss = sum of the exits' cross-entropies
(Schwartz et al., 2020, section 3). AdamW with linear warmup and decay; every exit is evaluated on the dev
set after each epoch and the epoch with the best mean exit accuracy is kept."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from models.classifier import EarlyExitClassifier, pick_device
from ops.examples import Examples, label_names

log = logging.getLogger(__name__)
TRAINING_FILE = "training.json"


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

    def __post_init__(self):
        for name in ("epochs", "max_length", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
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
    epochs: list[EpochReport] = field(default_factory=list)
    best_epoch: int = 0


def exit_accuracies(logits: np.ndarray, label_ids: np.ndarray) -> list[float]:
    """(exits, n, labels) logits and (n,) gold ids -> accuracy per exit."""
    return [float(x) for x in (logits.argmax(-1) == label_ids[None, :]).mean(axis=1)]


def train(config: TrainConfig, train_set: Examples, dev_set: Examples, out: str | Path | None = None) -> tuple[EarlyExitClassifier, TrainReport]:
    """Fine-tunes ``config.model`` on ``train_set``; saves the best epoch's model to ``out`` when given."""
    # Seed before building the model so the seed also fixes the new exit heads' initial weights.
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    labels = label_names(train_set)
    model = EarlyExitClassifier.from_backbone(config.model, labels, config.exits, config.max_length, config.pooling)
    model.to(pick_device())
    train_ids = torch.tensor(train_set.label_ids(labels))
    dev_ids = np.array(dev_set.label_ids(labels))
    encoded = model.tokenize(train_set.texts, train_set.pairs, padding=False)

    steps_per_epoch = -(-len(train_set) // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(_parameter_groups(model, config.weight_decay), lr=config.lr)
    schedule = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    generator = torch.Generator().manual_seed(config.seed)

    report = TrainReport(config=asdict(config))
    best_score, best_state = -1.0, None
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(train_set), generator=generator)
        losses = []
        bar = tqdm(range(0, len(order), config.batch_size), desc=f"epoch {epoch}/{config.epochs}", unit="batch")
        for offset in bar:
            rows = order[offset:offset + config.batch_size].tolist()
            batch = model.pad_rows(encoded, rows)
            logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))  # (exits, b, labels)
            gold = train_ids[rows].to(model.device)
            loss = sum(torch.nn.functional.cross_entropy(exit_logits, gold) for exit_logits in logits)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        dev_logits, _ = model.exit_logits(dev_set.texts, dev_set.pairs)
        accuracy = exit_accuracies(dev_logits, dev_ids)
        report.epochs.append(EpochReport(epoch, float(np.mean(losses)), accuracy, time.perf_counter() - start))
        log.info("epoch %d: loss %.4f, dev accuracy per exit %s", epoch, np.mean(losses),
                 " ".join(f"L{layer}={acc:.3f}" for layer, acc in zip(model.config.exit_layers, accuracy)))
        if np.mean(accuracy) > best_score:
            best_score, report.best_epoch = float(np.mean(accuracy)), epoch
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    model.load_state_dict(best_state)
    model.eval()
    if out is not None:
        model.save_pretrained(out)
        Path(out, TRAINING_FILE).write_text(json.dumps(asdict(report), indent=2) + "\n")
    return model, report


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and LayerNorm weights (the usual BERT recipe)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
