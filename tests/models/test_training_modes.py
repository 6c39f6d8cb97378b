"""Training modes: SWEET's gradient isolation, the Multi-Model cascade (stages, decisions, cost), and the
training dynamics each mode records."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

from models import EarlyExitClassifier
from models.config import EarlyExitConfig
from models.training import TRAINING_FILE, TrainConfig, train
from ops.cost import document_flops
from ops.dynamics import read_dynamics
from tests.conftest import TEXTS, tiny_backbone, topic_examples

EXITS = (1, 3, 4)  # exit 1 sits after layer 3: layers 2 and 3 lie between it and exit 0


def _model(tokenizer, mode: str) -> EarlyExitClassifier:
    config = EarlyExitConfig(model_type="bert", num_layers=4, exit_layers=EXITS, labels=("a", "b", "c"),
                             max_length=64, training_mode=mode)
    torch.manual_seed(1)
    return EarlyExitClassifier(tiny_backbone("bert"), tokenizer, config).train()


def _gradients_of_exit(model, tokenizer, exit_index: int) -> dict[str, float]:
    """Gradient norm of every parameter after one backward pass of one exit's loss alone."""
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    torch.nn.functional.cross_entropy(logits[exit_index], torch.arange(len(TEXTS)) % 3).backward()
    return {name: 0.0 if p.grad is None else float(p.grad.norm()) for name, p in model.named_parameters()}


def _part(name: str) -> str:
    """'embeddings', 'layer<k>' (0-based) or 'exit<k>' for a parameter name."""
    if name.startswith("exits."):
        return "exit" + name.split(".")[1]
    if ".layer." in name:
        return "layer" + name.split(".layer.")[1].split(".")[0]
    return "embeddings"


def _parts_with_gradient(grads: dict[str, float]) -> set[str]:
    return {_part(name) for name, norm in grads.items() if norm > 0}


def test_sweet_exit_loss_trains_only_layers_since_previous_exit(tokenizer):
    # exit 1 (after layer 3) alone: layers 2-3 (0-based 1, 2) and its head; nothing below exit 0's layer
    assert _parts_with_gradient(_gradients_of_exit(_model(tokenizer, "sweet"), tokenizer, 1)) == {
        "layer1", "layer2", "exit1"}
    # the first exit's loss is the only one that reaches the embeddings
    assert _parts_with_gradient(_gradients_of_exit(_model(tokenizer, "sweet"), tokenizer, 0)) == {
        "embeddings", "layer0", "exit0"}
    assert _parts_with_gradient(_gradients_of_exit(_model(tokenizer, "sweet"), tokenizer, 2)) == {"layer3", "exit2"}


def test_joint_exit_loss_trains_every_layer_below_it(tokenizer):
    assert _parts_with_gradient(_gradients_of_exit(_model(tokenizer, "joint"), tokenizer, 1)) == {
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


def _independent_stage(backbone_dir, tokenizer, cascade_dir, k: int) -> EarlyExitClassifier:
    """Stage k built as its own truncated model from its own config, loaded from the cascade's weight file."""
    layers = EXITS[k]
    backbone = AutoModel.from_pretrained(backbone_dir, num_hidden_layers=layers)
    config = EarlyExitConfig(model_type="bert", num_layers=layers, exit_layers=(layers,), labels=("money", "sport"),
                             max_length=32)
    model = EarlyExitClassifier(backbone, tokenizer, config)
    prefix = "backbone." if k == len(EXITS) - 1 else f"stages.{k}."
    weights = load_file(f"{cascade_dir}/model.safetensors")
    own = {"backbone." + key[len(prefix):]: v for key, v in weights.items() if key.startswith(prefix)}
    own |= {"exits.0." + key[len(f"exits.{k}."):]: v for key, v in weights.items() if key.startswith(f"exits.{k}.")}
    model.load_state_dict(own, strict=True)
    return model.eval()


def test_each_stage_equals_an_independent_truncated_model(cascade_dir, backbone_dir, tokenizer):
    cascade = EarlyExitClassifier.from_pretrained(cascade_dir, device="cpu")
    assert cascade.config.training_mode == "multi" and len(cascade.stages) == 2
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = cascade(**batch)
        for k in range(len(EXITS)):
            alone = _independent_stage(backbone_dir, tokenizer, cascade_dir, k)(**batch)[0]
            torch.testing.assert_close(logits[k], alone, rtol=0, atol=1e-6)


def test_stages_start_from_the_pretrained_layers(backbone_dir):
    cascade = EarlyExitClassifier.from_backbone(backbone_dir, ["a", "b"], EXITS, 32, training_mode="multi")
    full = AutoModel.from_pretrained(backbone_dir).state_dict()
    stage = cascade.stages[1].state_dict()  # 3 layers
    assert len(cascade.stages[1].encoder.layer) == 3
    assert all(torch.equal(stage[key], full[key]) for key in stage)


def test_cascade_equals_running_the_stages_by_hand(cascade_dir, backbone_dir, tokenizer):
    cascade = EarlyExitClassifier.from_pretrained(cascade_dir, device="cpu")
    cascade.set_config(cascade.config.with_updates(temperatures=(0.2, 0.2, 0.2)))  # spread the confidences
    stages = [_independent_stage(backbone_dir, tokenizer, cascade_dir, k) for k in range(len(EXITS))]
    texts = TEXTS + [t.upper() for t in TEXTS] + ["goal team", "bank profit", "market"]
    with torch.no_grad():  # each document alone through stage after stage, stopping at the first confident one
        conf = np.array([[float(torch.softmax(s(**tokenizer([t], return_tensors="pt"))[0, 0] / 0.2, -1).max())
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

@pytest.fixture(scope="module")
def no_dropout_backbone_dir(tokenizer, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tiny-bert-no-dropout")
    backbone = tiny_backbone("bert")
    backbone.config.hidden_dropout_prob = backbone.config.attention_probs_dropout_prob = 0.0
    backbone.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("mode", ["joint", "sweet", "multi"])
def test_dynamics_are_each_examples_gold_probability(mode, no_dropout_backbone_dir, tmp_path):
    """No dropout and a learning rate of 1e-12 (weights unchanged to float precision): the recorded p(gold) of
    every example, epoch and exit must equal what the final model gives it in a separate pass."""
    train_set = topic_examples(40, 0)
    config = TrainConfig(model=no_dropout_backbone_dir, exits=(2, 4), epochs=2, batch_size=8, lr=1e-12,
                         max_length=32, dropout=0.0, mode=mode)
    model, _ = train(config, train_set, topic_examples(16, 1), out=tmp_path / "m")
    dynamics, examples, _ = read_dynamics(tmp_path / "m")
    assert examples["text"].to_pylist() == train_set.texts and examples["label"].to_pylist() == train_set.labels
    logits, _ = model.exit_logits(train_set.texts)  # (exits, n, labels)
    gold = np.array(train_set.label_ids(model.config.labels))
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    expected = p[:, np.arange(len(gold)), gold]  # (exits, n)
    assert dynamics.gold_probability.shape == (2, 2, 40)
    np.testing.assert_allclose(dynamics.gold_probability, np.stack([expected, expected]), atol=1e-5)
    np.testing.assert_array_equal(dynamics.correct, np.stack([p.argmax(-1) == gold] * 2))


def test_no_dynamics_writes_none(backbone_dir, tmp_path):
    config = TrainConfig(model=backbone_dir, exits=(4,), epochs=1, batch_size=8, max_length=32, dynamics=False)
    train(config, topic_examples(16, 0), topic_examples(8, 1), out=tmp_path / "m")
    assert not (tmp_path / "m" / "dynamics").exists()
    with pytest.raises(FileNotFoundError, match="no training dynamics"):
        read_dynamics(tmp_path / "m")


def test_mode_is_checked():
    with pytest.raises(ValueError, match="TrainConfig.mode must be one of"):
        TrainConfig(model="x", mode="cascade")


def test_cli_modes_match_the_model_config():
    from flows.cli import TRAINING_MODES as cli_modes
    from models.config import TRAINING_MODES
    assert cli_modes == TRAINING_MODES
