"""Training modes: SWEET's gradient isolation, the Multi-Model cascade (stages, decisions, cost), and the
training dynamics each mode records."""

import json
import re
from dataclasses import asdict

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

from models import EarlyExitClassifier
from models.classifier import ExitHead
from models.config import EarlyExitConfig
from models.training import TRAINING_FILE, TrainConfig, train
from ops.cost import document_flops
from ops.dynamics import read_dynamics
from tests.conftest import TEXTS, tiny_backbone, topic_examples

EXITS = (1, 3, 4)  # exit 1 sits after layer 3: layers 2 and 3 lie between it and exit 0


def _model(tokenizer, mode: str, model_type: str = "bert") -> EarlyExitClassifier:
    config = EarlyExitConfig(model_type=model_type, num_layers=4, exit_layers=EXITS, labels=("a", "b", "c"),
                             max_length=64, training_mode=mode)
    torch.manual_seed(1)
    return EarlyExitClassifier(tiny_backbone(model_type), tokenizer, config).train()


def _gradients_of_exit(model, tokenizer, exit_index: int) -> dict[str, float]:
    """Gradient norm of every parameter after one backward pass of one exit's loss alone."""
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    torch.nn.functional.cross_entropy(logits[exit_index], torch.arange(len(TEXTS)) % 3).backward()
    return {name: 0.0 if p.grad is None else float(p.grad.norm()) for name, p in model.named_parameters()}


def _part(name: str) -> str:
    """'exit<k>', 'layer<k>' (0-based), or 'embeddings' for everything the layers share (embeddings, and
    MPNet's relative position bias table) for a parameter name."""
    if name.startswith("exits."):
        return "exit" + name.split(".")[1]
    if ".layer." in name:
        return "layer" + name.split(".layer.")[1].split(".")[0]
    return "embeddings"


def _parts_with_gradient(grads: dict[str, float]) -> set[str]:
    return {_part(name) for name, norm in grads.items() if norm > 0}


ARCHITECTURES = ["bert", "roberta", "electra", "distilbert", "mpnet"]


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_sweet_exit_loss_trains_only_layers_since_previous_exit(model_type, tokenizer):
    def parts(exit_index):
        return _parts_with_gradient(_gradients_of_exit(_model(tokenizer, "sweet", model_type), tokenizer, exit_index))

    # exit 1 (after layer 3) alone: layers 2-3 (0-based 1, 2) and its head; nothing below exit 0's layer
    assert parts(1) == {"layer1", "layer2", "exit1"}
    # the first exit's loss is the only one that reaches the embeddings
    assert parts(0) == {"embeddings", "layer0", "exit0"}
    assert parts(2) == {"layer3", "exit2"}


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_joint_exit_loss_trains_every_layer_below_it(model_type, tokenizer):
    assert _parts_with_gradient(_gradients_of_exit(_model(tokenizer, "joint", model_type), tokenizer, 1)) == {
        "embeddings", "layer0", "layer1", "layer2", "exit1"}


def test_sweet_changes_gradients_not_values(tokenizer):
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    joint, sweet = (_model(tokenizer, mode).eval() for mode in ("joint", "sweet"))
    with torch.no_grad():
        assert torch.equal(joint(**batch), sweet(**batch))


# -- multi: the cascade --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cascade_dir(backbone_dir, tmp_path_factory) -> str:
    """A trained 3-stage cascade (1, 3 and 4 layers), saved."""
    out = tmp_path_factory.mktemp("cascade")
    config = TrainConfig(model=backbone_dir, exits=EXITS, epochs=2, batch_size=16, lr=1e-3, max_length=32, mode="multi")
    train(config, topic_examples(64, 0), topic_examples(32, 1), out=out)
    return str(out)


def _independent_stage(backbone_dir, cascade_dir, k: int):
    """Stage k as Hugging Face's own truncated model (its own forward, not our layer runner) plus an exit head,
    both loaded from the cascade's weight file: a function from a tokenized batch to (batch, labels) logits."""
    backbone = AutoModel.from_pretrained(backbone_dir, num_hidden_layers=EXITS[k], add_pooling_layer=False).eval()
    head = ExitHead(backbone.config.hidden_size, 2, 0.1, "mean").eval()
    weights = load_file(f"{cascade_dir}/model.safetensors")

    def part(prefix: str) -> dict:
        return {key[len(prefix):]: value for key, value in weights.items() if key.startswith(prefix)}

    backbone.load_state_dict(part("backbone." if k == len(EXITS) - 1 else f"stages.{k}."), strict=True)
    head.load_state_dict(part(f"exits.{k}."), strict=True)
    return lambda batch: head(backbone(**batch).last_hidden_state, batch["attention_mask"])


def test_each_stage_equals_an_independent_truncated_model(cascade_dir, backbone_dir, tokenizer):
    cascade = EarlyExitClassifier.from_pretrained(cascade_dir, device="cpu")
    assert cascade.config.training_mode == "multi" and len(cascade.stages) == 2
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = cascade(**batch)
        for k in range(len(EXITS)):
            alone = _independent_stage(backbone_dir, cascade_dir, k)(batch)
            torch.testing.assert_close(logits[k], alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize("settings,message", [
    ({"exit_layers": (2, 3)}, "setting 'exit_layers' must lie in 1..4"),  # checked by the settings
    ({"max_length": 4096}, "setting 'max_length' is 4096 but config.json allows"),  # checked by the model
])
def test_a_bad_setting_for_a_new_model_names_the_backbone_not_a_file(backbone_dir, settings, message):
    with pytest.raises(ValueError, match=re.escape(f"{backbone_dir} (4 layers): {message}")) as error:
        EarlyExitClassifier.from_backbone(backbone_dir, ["a", "b"], **settings)
    assert "rightsize.json" not in str(error.value)


def test_stages_start_from_the_pretrained_layers(backbone_dir):
    cascade = EarlyExitClassifier.from_backbone(backbone_dir, ["a", "b"], EXITS, 32, training_mode="multi")
    full = AutoModel.from_pretrained(backbone_dir).state_dict()
    stage = cascade.stages[1].state_dict()  # 3 layers
    assert len(cascade.stages[1].encoder.layer) == 3
    assert all(torch.equal(stage[key], full[key]) for key in stage)


def test_cascade_equals_running_the_stages_by_hand(cascade_dir, backbone_dir, tokenizer):
    cascade = EarlyExitClassifier.from_pretrained(cascade_dir, device="cpu")
    cascade.set_config(cascade.config.with_updates(temperatures=(0.2, 0.2, 0.2)))  # spread the confidences
    stages = [_independent_stage(backbone_dir, cascade_dir, k) for k in range(len(EXITS))]
    texts = TEXTS + [t.upper() for t in TEXTS] + ["goal team", "bank profit", "market"]
    with torch.no_grad():  # each document alone through every stage; the cascade stops at the first confident one
        conf = np.array([[float(torch.softmax(s(tokenizer([t], return_tensors="pt"))[0] / 0.2, -1).max())
                          for t in texts] for s in stages])  # (stages, documents)
    distinct = np.unique(conf[0])  # (upper-cased texts tokenize like the originals)
    threshold = float(distinct[len(distinct) // 2 - 1:len(distinct) // 2 + 1].mean())  # none on the boundary
    predictions = cascade.predict(texts, threshold=threshold, batch_size=4)
    shape, exits_taken = cascade.shape, []
    for i, p in enumerate(predictions):
        k = next((k for k in range(len(EXITS) - 1) if conf[k, i] >= threshold), len(EXITS) - 1)
        exits_taken.append(k)
        assert p.exit_layer == EXITS[k]
        assert p.confidence == pytest.approx(conf[k, i], abs=1e-5)
        # every stage that ran counts: its embeddings, its layers, its head
        assert p.flops == sum(document_flops(p.num_tokens, EXITS[j], 1, shape) for j in range(k + 1))
    assert len(set(exits_taken)) > 1


def test_cascade_at_threshold_above_one_costs_every_stage(cascade_dir):
    cascade = EarlyExitClassifier.from_pretrained(cascade_dir, device="cpu")
    p = cascade.predict(["goal match"], threshold=2.0)[0]
    assert p.exit_layer == 4
    assert p.flops == sum(document_flops(p.num_tokens, layers, 1, cascade.shape) for layers in EXITS)
    assert p.flops > p.full_flops  # more than the full model: the cascade's price for its easy documents


def test_cascade_training_report_and_dynamics(cascade_dir):
    report = json.loads(open(f"{cascade_dir}/{TRAINING_FILE}").read())
    assert report["best_epoch"] == 0 and len(report["stages"]) == 3
    assert report["dev_accuracy"] == [s["dev_accuracy"][0] for s in report["stages"]]
    assert [len(e["dev_accuracy"]) for e in report["epochs"]] == [3, 3]
    dynamics, examples, fields = read_dynamics(cascade_dir)
    assert dynamics.exit_layers == EXITS and dynamics.gold_probability.shape == (2, 3, 64)
    assert examples.num_rows == 64 and fields["text_field"] == "text"
    assert ((dynamics.gold_probability > 0) & (dynamics.gold_probability < 1)).all()


# -- dynamics --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["joint", "sweet", "multi"])
def test_dynamics_are_each_epochs_gold_probability(mode, backbone_dir, tmp_path):
    """The kept epoch's recorded p(gold), for every example and exit, equals what the saved model gives it;
    the other epoch's differs (the weights moved)."""
    train_set = topic_examples(40, 0)
    config = TrainConfig(model=backbone_dir, exits=(2, 4), epochs=2, batch_size=8, lr=1e-3, max_length=32, mode=mode)
    model, report = train(config, train_set, topic_examples(16, 1), out=tmp_path / "m")
    dynamics, examples, _ = read_dynamics(tmp_path / "m")
    assert examples["text"].to_pylist() == train_set.texts and examples["label"].to_pylist() == train_set.labels
    assert dynamics.gold_probability.shape == (2, 2, 40)
    logits, _ = model.exit_logits(train_set.texts)  # (exits, n, labels)
    gold = np.array(train_set.label_ids(model.config.labels))
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    kept = [report.best_epoch] * 2 if mode != "multi" else [stage["best_epoch"] for stage in report.stages]
    for k, epoch in enumerate(kept):
        np.testing.assert_allclose(dynamics.gold_probability[epoch - 1, k], p[k, np.arange(40), gold], atol=1e-5)
        np.testing.assert_array_equal(dynamics.correct[epoch - 1, k], p[k].argmax(-1) == gold)
        assert not np.allclose(dynamics.gold_probability[2 - epoch, k], dynamics.gold_probability[epoch - 1, k])


def test_no_dynamics_writes_none(backbone_dir, tmp_path):
    config = TrainConfig(model=backbone_dir, exits=(4,), epochs=1, batch_size=8, max_length=32, dynamics=False)
    train(config, topic_examples(16, 0), topic_examples(8, 1), out=tmp_path / "m")
    assert not (tmp_path / "m" / "dynamics").exists()
    with pytest.raises(FileNotFoundError, match="no training dynamics"):
        read_dynamics(tmp_path / "m")


def test_mode_is_checked():
    with pytest.raises(ValueError, match="TrainConfig.mode must be one of"):
        TrainConfig(model="x", mode="cascade")


def test_multi_with_one_exit_is_one_truncated_model(backbone_dir, tmp_path):
    config = TrainConfig(model=backbone_dir, exits=(4,), epochs=1, batch_size=16, max_length=32, mode="multi")
    model, report = train(config, topic_examples(32, 0), topic_examples(16, 1), out=tmp_path / "m")
    loaded = EarlyExitClassifier.from_pretrained(tmp_path / "m", device="cpu")
    assert loaded.config.training_mode == "multi" and not loaded.cascade and report.best_epoch == 1
    assert loaded.predict(TEXTS) == model.predict(TEXTS)


def test_cascade_resumes_from_its_stage_checkpoints(backbone_dir, tmp_path):
    """A re-run over finished stage checkpoints trains nothing and ends with the same weights and report."""
    config = TrainConfig(model=backbone_dir, exits=(2, 4), epochs=2, batch_size=16, max_length=32, mode="multi")
    args = (config, topic_examples(32, 0), topic_examples(16, 1))
    train(*args, out=tmp_path / "a", checkpoint_dir=tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["stage-1", "stage-2"]
    _, again = train(*args, out=tmp_path / "b", checkpoint_dir=tmp_path / "ckpt")
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "a" / TRAINING_FILE).read_text()) == json.loads(json.dumps(asdict(again)))
    np.testing.assert_array_equal(read_dynamics(tmp_path / "a")[0].gold_probability,
                                  read_dynamics(tmp_path / "b")[0].gold_probability)
