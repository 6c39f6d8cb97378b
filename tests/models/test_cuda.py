"""The CUDA path gives what the CPU path gives. Skipped where there is no GPU."""

import pytest
import torch

from models import EarlyExitClassifier
from tests.conftest import TEXTS, tiny_classifier

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_cuda_predictions_match_cpu(tokenizer, tmp_path):
    tiny_classifier(tokenizer, "bert", "sdpa", temperatures=(0.5,) * 4, threshold=0.4).save_pretrained(tmp_path)
    cpu = EarlyExitClassifier.from_pretrained(tmp_path, device="cpu")
    gpu = EarlyExitClassifier.from_pretrained(tmp_path)  # picks CUDA when present
    assert gpu.device.type == "cuda"
    for a, b in zip(cpu.predict(TEXTS, threshold=2.0), gpu.predict(TEXTS, threshold=2.0)):
        assert (a.label, a.exit_layer, a.flops) == (b.label, b.exit_layer, b.flops)
        assert abs(a.confidence - b.confidence) < 1e-3
