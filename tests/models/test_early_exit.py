"""Batched early exit with compaction gives every row exactly what it gets when run alone."""

import pytest
import torch

from models.classifier import EarlyExitClassifier
from ops.cost import document_flops, full_model_flops
from tests.conftest import MINILM, TEXTS, tiny_classifier

# Small temperatures spread the random heads' confidences over (1/3, 1], so a mid threshold sends rows
# out at different exits.
SHARP = (0.03, 0.03, 0.03, 0.03)


def _mid_threshold(model) -> float:
    """A threshold halfway between the two middle confidences of all rows at all exits, so that no row sits
    on the boundary where float rounding (~1e-7) could flip its decision."""
    probs = torch.softmax(torch.from_numpy(model.exit_logits(TEXTS)[0]) / model.temperatures[:, None, None], -1)
    conf = probs.max(-1).values.flatten().sort().values
    mid = len(conf) // 2
    assert conf[mid] - conf[mid - 1] > 1e-4
    return float(conf[mid - 1] + conf[mid]) / 2


def _assert_same_as_alone(model, threshold, batch_size=4):
    batched = model.predict(TEXTS, threshold=threshold, batch_size=batch_size)
    alone = [model.predict([t], threshold=threshold, batch_size=1)[0] for t in TEXTS]
    for b, a in zip(batched, alone):
        assert (b.label, b.exit_layer, b.num_tokens, b.flops) == (a.label, a.exit_layer, a.num_tokens, a.flops)
        assert abs(b.confidence - a.confidence) <= 1e-5
    return batched


@pytest.mark.parametrize("model_type,attn", [("bert", "sdpa"), ("bert", "eager"), ("roberta", "sdpa"),
                                             ("distilbert", "sdpa"), ("mpnet", "eager")])
def test_batched_equals_alone(tokenizer, model_type, attn):
    model = tiny_classifier(tokenizer, model_type, attn, temperatures=SHARP)
    batched = _assert_same_as_alone(model, _mid_threshold(model))
    assert len({p.exit_layer for p in batched}) >= 2  # rows really left at different layers


def test_batched_equals_alone_minilm(tokenizer):
    torch.manual_seed(0)
    model = EarlyExitClassifier.from_backbone(MINILM, ["a", "b", "c"], exit_layers=(2, 4, 6)).eval()
    model.set_config(model.config.with_updates(temperatures=(0.01, 0.01, 0.01)))
    batched = _assert_same_as_alone(model, _mid_threshold(model), batch_size=8)
    assert len({p.exit_layer for p in batched}) >= 2


def test_threshold_extremes(tokenizer):
    model = tiny_classifier(tokenizer, temperatures=SHARP)
    logits, _ = model.exit_logits(TEXTS)  # (exits, n, labels)
    full = model.predict(TEXTS, threshold=1.01)
    assert [p.exit_layer for p in full] == [4] * len(TEXTS)
    assert [p.label for p in full] == [model.config.labels[i] for i in logits[-1].argmax(-1)]
    assert all(p.flops > p.full_flops for p in full)  # every exit head was evaluated on the way
    first = model.predict(TEXTS, threshold=0.0)
    assert [p.exit_layer for p in first] == [1] * len(TEXTS)
    assert [p.label for p in first] == [model.config.labels[i] for i in logits[0].argmax(-1)]


def test_default_threshold_and_costs(tokenizer):
    model = tiny_classifier(tokenizer, temperatures=SHARP)
    model.set_config(model.config.with_updates(threshold=_mid_threshold(model)))
    preds = model.predict(TEXTS)
    assert preds == model.predict(TEXTS, threshold=model.config.threshold)
    for text, p in zip(TEXTS, preds):
        n = len(model.tokenizer(text)["input_ids"])
        heads = model.config.exit_layers.index(p.exit_layer) + 1
        assert p.num_tokens == n
        assert p.flops == document_flops(n, p.exit_layer, heads, model.shape)
        assert p.full_flops == full_model_flops(n, model.shape)
        assert 1 / 3 <= p.confidence <= 1


def test_text_pairs_are_encoded_together(tokenizer):
    model = tiny_classifier(tokenizer)
    preds = model.predict(["a man sleeps"], pairs=["a person rests"], threshold=2)
    assert preds[0].num_tokens == len(tokenizer("a man sleeps", "a person rests")["input_ids"])
    with pytest.raises(ValueError, match="1 texts but 2 pairs"):
        model.predict(["a"], pairs=["b", "c"])


def test_empty_input(tokenizer):
    assert tiny_classifier(tokenizer).predict([]) == []
