"""Layer-by-layer execution reproduces the backbone's own hidden states at every layer."""

import pytest
import torch
from transformers import AutoModel

from models.layers import LayerRunner
from tests.conftest import MINILM, TEXTS, tiny_backbone

ARCHS = [("bert", "eager"), ("bert", "sdpa"), ("roberta", "eager"), ("roberta", "sdpa"),
         ("distilbert", "eager"), ("distilbert", "sdpa"), ("mpnet", "eager"), ("electra", "sdpa")]


def _max_diff_per_layer(model, enc) -> list[float]:
    with torch.no_grad():
        reference = model(**enc, output_hidden_states=True).hidden_states
        runner = LayerRunner(model)
        hidden = runner.embed(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
        ctx = runner.prepare(hidden, enc["attention_mask"])
        diffs = [(hidden - reference[0]).abs().max().item()]
        for i in range(runner.num_layers):
            hidden = runner.run_layer(i, hidden, ctx)
            diffs.append((hidden - reference[i + 1]).abs().max().item())
    return diffs


@pytest.mark.parametrize("model_type,attn", ARCHS)
def test_tiny_layers_match_hidden_states(tokenizer, model_type, attn):
    model = tiny_backbone(model_type, attn)
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert enc["attention_mask"].sum(1).unique().numel() > 3  # rows of different lengths, padded
    if model_type in ("distilbert", "mpnet"):
        enc.pop("token_type_ids")
    diffs = _max_diff_per_layer(model, enc)
    assert len(diffs) == 5
    assert max(diffs) <= 1e-5, diffs


def test_minilm_layers_match_hidden_states(tokenizer):
    model = AutoModel.from_pretrained(MINILM).eval()
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    diffs = _max_diff_per_layer(model, enc)
    assert len(diffs) == 7
    assert max(diffs) <= 1e-5, diffs


def test_unsupported_architecture_is_named():
    from transformers import GPT2Config

    model = AutoModel.from_config(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=10))
    with pytest.raises(ValueError, match="'gpt2' is not supported"):
        LayerRunner(model)
