"""The FLOPs formula agrees with torch's FlopCounterMode on real forwards."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModel

from models.classifier import EarlyExitClassifier
from ops.cost import EncoderShape, document_flops, embedding_flops, exit_head_flops, full_model_flops, layer_flops
from tests.conftest import MINILM, tiny_backbone_config


def _counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("num_tokens", [16, 128])
def test_minilm_forward_matches_flop_counter(attn, num_tokens):
    torch.manual_seed(0)
    model = EarlyExitClassifier.from_backbone(MINILM, ["a", "b", "c", "d"], exit_layers=(2, 4, 6)).eval()
    model.backbone.config._attn_implementation = attn
    ids = torch.randint(1000, 2000, (1, num_tokens))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        counted = _counted(lambda: model(ids, mask))
    predicted = document_flops(num_tokens, 6, 3, model.shape)
    assert abs(predicted - counted) / counted < 0.10, (predicted, counted)


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "mpnet", "electra"])
def test_layer_formula_matches_flop_counter(model_type):
    config = tiny_backbone_config(model_type)
    model = AutoModel.from_config(config, attn_implementation="eager").eval()
    shape = EncoderShape.from_config(config, num_labels=3, mean_pooling=False)
    ids = torch.randint(1000, 2000, (1, 50))
    with torch.no_grad():
        counted = _counted(lambda: model(input_ids=ids))
    pooler = 2 * 32 * 32 if getattr(model, "pooler", None) is not None else 0  # BERT's pooler dense layer
    predicted = embedding_flops(50, shape) + 4 * layer_flops(50, shape) + pooler
    assert abs(predicted - counted) / counted < 0.10, (predicted, counted)


def test_formula_by_hand():
    shape = EncoderShape(hidden=4, intermediate=8, num_layers=2, num_labels=3, mean_pooling=False)
    # layer: 8nH² + 4n²H + 4nHI with n=2: 256 + 64 + 256
    assert layer_flops(2, shape) == 576
    assert exit_head_flops(2, shape) == 2 * 16 + 2 * 12
    assert embedding_flops(2, shape) == 8 * 2 * 4
    assert full_model_flops(2, shape) == 64 + 2 * 576 + 56
    assert document_flops(2, 1, 1, shape) == 64 + 576 + 56
    mean = EncoderShape(hidden=4, intermediate=8, num_layers=2, num_labels=3, mean_pooling=True)
    assert exit_head_flops(2, mean) == exit_head_flops(2, shape) + 8
