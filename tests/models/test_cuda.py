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


# Written for a GPU machine and never run: no GPU was lent to the sessions that wrote them (see the README).
def _split_model(tokenizer, tmp_path):
    """A tiny model saved with a threshold at which TEXTS leave at different exits (checked on the CPU)."""
    tiny_classifier(tokenizer, "bert", "sdpa", temperatures=(0.5,) * 4, threshold=0.4).save_pretrained(tmp_path)
    cpu = EarlyExitClassifier.from_pretrained(tmp_path, device="cpu")
    texts = TEXTS * 8  # 64 documents; batches of 12 mix lengths (sorting would make batches of 8 uniform)
    expected = cpu.predict(texts, batch_size=12)
    assert len({p.exit_layer for p in expected}) >= 2  # a real early-exit decision, not every layer run
    return EarlyExitClassifier.from_pretrained(tmp_path), texts, expected


@pytest.mark.parametrize("tokenize_ahead", [True, False])  # True: predict's default on CUDA
def test_cuda_matches_cpu_at_a_real_early_exit_threshold(tokenizer, tmp_path, tokenize_ahead):
    gpu, texts, expected = _split_model(tokenizer, tmp_path)
    got = gpu.predict(texts, batch_size=12, tokenize_ahead=tokenize_ahead)
    threshold = gpu.config.threshold
    for a, b in zip(expected, got):
        if abs(a.confidence - threshold) < 1e-3:  # float differences may flip a document on the boundary
            continue
        assert (a.label, a.exit_layer, a.num_tokens, a.flops) == (b.label, b.exit_layer, b.num_tokens, b.flops)


def test_cuda_batched_equals_alone_at_a_real_early_exit_threshold(tokenizer, tmp_path):
    gpu, texts, _ = _split_model(tokenizer, tmp_path)
    batched = gpu.predict(texts, batch_size=64)
    for text, b in zip(texts, batched):
        (alone,) = gpu.predict([text], batch_size=1)
        if abs(alone.confidence - gpu.config.threshold) < 1e-4:  # padding may move a confidence by float noise
            continue
        assert (alone.label, alone.exit_layer, alone.flops) == (b.label, b.exit_layer, b.flops)
        assert abs(alone.confidence - b.confidence) < 1e-4


def test_cuda_synchronises_once_per_exit(tokenizer, tmp_path):
    """One device-to-host copy per exit and batch (which rows leave); torch warns on each synchronisation."""
    import warnings

    gpu, texts, _ = _split_model(tokenizer, tmp_path)
    gpu.predict(texts[:8], batch_size=8)  # warm-up: first-call allocations
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gpu.predict(texts[:8], batch_size=8)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert 1 <= len(syncs) <= len(gpu.config.exit_layers)  # one batch of 8: one copy per exit it reached
