"""Joint fine-tuning on a tiny encoder: it learns, keeps the best epoch, is reproducible, and saves."""

import json
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from models import EarlyExitClassifier
from models.training import CHECKPOINT_STATE, TRAINING_FILE, TrainConfig, train
from ops.examples import Examples
from tests.conftest import topic_examples


def test_training_learns_and_saves(backbone_dir, tmp_path):
    config = TrainConfig(model=backbone_dir, exits=(2, 4), epochs=3, batch_size=16, lr=1e-3, max_length=32)
    model, report = train(config, topic_examples(160, 0), topic_examples(60, 1), out=tmp_path / "m")
    assert [e.epoch for e in report.epochs] == [1, 2, 3]
    assert report.epochs[-1].train_loss < report.epochs[0].train_loss
    best = report.epochs[report.best_epoch - 1]
    assert np.mean(best.dev_accuracy) == max(np.mean(e.dev_accuracy) for e in report.epochs)
    assert min(best.dev_accuracy) >= 0.9
    saved = json.loads((tmp_path / "m" / TRAINING_FILE).read_text())
    assert saved["best_epoch"] == report.best_epoch and saved["config"]["exits"] == [2, 4]
    loaded = EarlyExitClassifier.from_pretrained(tmp_path / "m", device="cpu")
    assert loaded.config.labels == ("money", "sport") and loaded.config.exit_layers == (2, 4)
    dev = topic_examples(60, 1)
    assert loaded.predict(dev.texts) == model.predict(dev.texts)


def test_training_is_seeded(backbone_dir, tmp_path):
    config = TrainConfig(model=backbone_dir, exits=(2, 4), epochs=1, batch_size=16, max_length=32, seed=7)
    for name in ("a", "b"):
        train(config, topic_examples(48, 0), topic_examples(16, 1), out=tmp_path / name)
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_dev_label_unknown_to_training_is_an_error(backbone_dir):
    dev = Examples(["goal"], None, ["weather"], "dev.jsonl")
    with pytest.raises(ValueError, match=r"dev.jsonl: labels \['weather'\] do not occur in the training data"):
        train(TrainConfig(model=backbone_dir, exits=(4,), epochs=1), topic_examples(8, 0), dev)


@pytest.mark.parametrize("settings, message", [
    ({"epochs": 0}, "TrainConfig.epochs"), ({"exits": ()}, "TrainConfig.exits is empty"),
    ({"lr": float("inf")}, "lr must be a finite number > 0"), ({"seed": -1}, "seed must be an integer in"),
    ({"seed": 2**64}, "seed must be an integer in"), ({"dtype": "int8"}, "TrainConfig.dtype must be one of"),
    ({"max_length": 2}, "max_length must be >= 8 tokens, special tokens included, got 2"),
])
def test_config_validation(settings, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(model="x", **settings)


_RESUME_CONFIG = dict(exits=(2, 4), epochs=4, batch_size=8, max_length=32, seed=3)
_CHILD = """
import sys
from models.training import TrainConfig, train
from tests.conftest import topic_examples
config = TrainConfig(model=sys.argv[1], **{config})
train(config, topic_examples(400, 0), topic_examples(40, 1), checkpoint_dir=sys.argv[2])
"""


def test_killed_training_resumes_to_the_same_weights(backbone_dir, tmp_path):
    """A run SIGKILLed after its first epoch resumes from the checkpoint and ends with the weights of an
    uninterrupted run."""
    checkpoint = tmp_path / "checkpoint"
    child = subprocess.Popen([sys.executable, "-c", _CHILD.format(config=repr(_RESUME_CONFIG)), backbone_dir,
                              str(checkpoint)], cwd=Path(__file__).parents[2], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not (checkpoint / CHECKPOINT_STATE).is_file():  # the first epoch's checkpoint, swapped in atomically
        assert child.poll() is None and time.monotonic() < deadline, "training ended before its first checkpoint"
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()
    saved = json.loads((checkpoint / CHECKPOINT_STATE).read_text())["report"]["epochs"]
    done = len(saved)
    assert 1 <= done < _RESUME_CONFIG["epochs"], "the kill must land mid-training"

    config = TrainConfig(model=backbone_dir, **_RESUME_CONFIG)
    data = topic_examples(400, 0), topic_examples(40, 1)
    resumed, resumed_report = train(config, *data, checkpoint_dir=checkpoint)
    whole, whole_report = train(config, *data)
    # Resumed, not restarted: the completed epochs are the killed run's own reports (timings included).
    assert [asdict(e) for e in resumed_report.epochs[:done]] == saved
    assert [e.train_loss for e in resumed_report.epochs] == [e.train_loss for e in whole_report.epochs]
    assert resumed_report.best_epoch == whole_report.best_epoch
    a, b = resumed.state_dict(), whole.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_of_another_config_is_refused(backbone_dir, tmp_path):
    data = topic_examples(16, 0), topic_examples(8, 1)
    train(TrainConfig(model=backbone_dir, exits=(4,), epochs=1, batch_size=8), *data, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="checkpoint of a different training config"):
        train(TrainConfig(model=backbone_dir, exits=(4,), epochs=1, batch_size=8, lr=1e-3), *data,
              checkpoint_dir=tmp_path)


def test_a_checkpoint_without_the_encoders_weights_is_refused_not_trained_from_noise(backbone_dir, tmp_path):
    """transformers initialises missing weights at random and only logs it: a rightsize model given as the
    backbone (its weights are named backbone.*), or any checkpoint of other names, would fine-tune noise."""
    import shutil

    from safetensors.torch import save_file

    with pytest.raises(ValueError, match=r"is a rightsize model \(rightsize.json\).*give its base model"):
        EarlyExitClassifier.from_backbone(_saved_model(backbone_dir, tmp_path / "ours"), labels=("a", "b"))
    renamed = tmp_path / "renamed"
    shutil.copytree(backbone_dir, renamed)
    weights = load_file(renamed / "model.safetensors")
    save_file({f"encoder_v2.{k}": v for k, v in weights.items()}, renamed / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"renamed: \d+ of the encoder's weights are not in its checkpoint"):
        EarlyExitClassifier.from_backbone(str(renamed), labels=("a", "b"), max_length=64)
    # a checkpoint without the pooler (as masked-LM ones are) loads: no exit uses it
    save_file({k: v for k, v in weights.items() if not k.startswith("pooler.")}, renamed / "model.safetensors",
              metadata={"format": "pt"})
    assert EarlyExitClassifier.from_backbone(str(renamed), labels=("a", "b"), max_length=64).config.num_layers == 4


def _saved_model(backbone_dir, path) -> str:
    EarlyExitClassifier.from_backbone(backbone_dir, labels=("a", "b"), max_length=64).save_pretrained(path)
    return str(path)


def test_a_pair_model_refuses_single_texts_and_a_single_text_model_refuses_pairs(backbone_dir, tmp_path):
    """Both would label every document without an error, and wrongly: calibration too (its threshold fitted on
    premises alone). The model records what it was trained on; predict, calibrate and label check it."""
    from models.calibration import CalibrationConfig, calibrate
    from ops.records import InputFields
    from pipelines.label import prepare_run
    from pipelines.label_config import LabelJobConfig

    single = topic_examples(32, 0)
    pairs = Examples(single.texts, [t[::-1] for t in single.texts], single.labels, "pairs")
    config = TrainConfig(model=backbone_dir, exits=(2, 4), epochs=1, batch_size=16, max_length=32)
    for name, examples in (("pair", pairs), ("single", single)):
        train(config, examples, examples, out=tmp_path / name)
    pair_model = EarlyExitClassifier.from_pretrained(tmp_path / "pair", device="cpu")
    assert pair_model.config.text_pairs is True and len(pair_model.predict(pairs.texts, pairs.pairs)) == 32
    with pytest.raises(ValueError, match="trained on text pairs: give the pair field"):
        pair_model.predict(single.texts)
    with pytest.raises(ValueError, match="trained on text pairs: give the pair field"):
        calibrate(pair_model, single, CalibrationConfig(target_drop=0.01), out=None)
    single_model = EarlyExitClassifier.from_pretrained(tmp_path / "single", device="cpu")
    from models.config import ConfigError, EarlyExitConfig

    with pytest.raises(ConfigError, match="field 'text_pairs' must be true, false or null, got 'false'"):
        EarlyExitConfig(**{**single_model.config.__dict__, "text_pairs": "false"})
    with pytest.raises(ValueError, match="trained on single texts: give no pair field"):
        single_model.predict(pairs.texts, pairs.pairs)
    (tmp_path / "in.jsonl").write_text('{"text": "goal match", "hypothesis": "h"}\n')
    for name, fields in (("pair", InputFields()), ("single", InputFields(pair_field="hypothesis"))):
        job = LabelJobConfig(model=str(tmp_path / name), input=str(tmp_path / "in.jsonl"),
                             output=str(tmp_path / "out"), run_id="r", **fields.__dict__)
        with pytest.raises(ValueError, match="trained on (text pairs|single texts)"):  # before any work
            prepare_run(job)
    from flows.predict import predict_file

    with pytest.raises(ValueError, match="trained on single texts"):
        predict_file(single_model, str(tmp_path / "in.jsonl"), str(tmp_path / "p.parquet"),
                     InputFields(pair_field="hypothesis"))
    assert not (tmp_path / "p.parquet").exists()
