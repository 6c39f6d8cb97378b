"""Joint fine-tuning on a tiny encoder: it learns, keeps the best epoch, is reproducible, and saves."""

import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from models import EarlyExitClassifier
from models.training import TRAINING_FILE, TrainConfig, train
from ops.examples import Examples
from tests.conftest import tiny_backbone


@pytest.fixture(scope="module")
def backbone_dir(tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-bert")
    tiny_backbone("bert").save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def _topic_examples(n: int, seed: int) -> Examples:
    """Two topics told apart by their words: easy enough for a tiny model in a few epochs."""
    rng = random.Random(seed)
    words = {"sport": "goal match team score league coach".split(), "money": "bank stock market profit trade price".split()}
    labels = [rng.choice(sorted(words)) for _ in range(n)]
    texts = [" ".join(rng.choices(words[label], k=rng.randint(3, 9))) for label in labels]
    return Examples(texts, None, labels, "synthetic")


def test_training_learns_and_saves(backbone_dir, tmp_path):
    config = TrainConfig(model=backbone_dir, exits=(2, 4), epochs=3, batch_size=16, lr=1e-3, max_length=32)
    model, report = train(config, _topic_examples(160, 0), _topic_examples(60, 1), out=tmp_path / "m")
    assert [e.epoch for e in report.epochs] == [1, 2, 3]
    assert report.epochs[-1].train_loss < report.epochs[0].train_loss
    best = report.epochs[report.best_epoch - 1]
    assert np.mean(best.dev_accuracy) == max(np.mean(e.dev_accuracy) for e in report.epochs)
    assert min(best.dev_accuracy) >= 0.9
    saved = json.loads((tmp_path / "m" / TRAINING_FILE).read_text())
    assert saved["best_epoch"] == report.best_epoch and saved["config"]["exits"] == [2, 4]
    loaded = EarlyExitClassifier.from_pretrained(tmp_path / "m", device="cpu")
    assert loaded.config.labels == ("money", "sport") and loaded.config.exit_layers == (2, 4)
    dev = _topic_examples(60, 1)
    assert loaded.predict(dev.texts) == model.predict(dev.texts)


def test_training_is_seeded(backbone_dir, tmp_path):
    config = TrainConfig(model=backbone_dir, exits=(2, 4), epochs=1, batch_size=16, max_length=32, seed=7)
    for name in ("a", "b"):
        train(config, _topic_examples(48, 0), _topic_examples(16, 1), out=tmp_path / name)
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_dev_label_unknown_to_training_is_an_error(backbone_dir):
    dev = Examples(["goal"], None, ["weather"], "dev.jsonl")
    with pytest.raises(ValueError, match=r"dev.jsonl: labels \['weather'\]"):
        train(TrainConfig(model=backbone_dir, exits=(4,), epochs=1), _topic_examples(8, 0), dev)


def test_config_validation():
    with pytest.raises(ValueError, match="TrainConfig.epochs"):
        TrainConfig(model="x", epochs=0)
