"""Part 4, what a user would run instead: the same fine-tuned backbone as a plain classifier (its last exit:
every layer for every document), through transformers' ``pipeline("text-classification")`` in float32 and
bfloat16, and exported to ONNX and run by ONNX Runtime. Each at its best batch size from ``batch_sizes``.

The plain classifier is a ``PreTrainedModel`` wrapping a copy of our backbone and last exit head (mean
pooling), so the peers compute what our full model computes. What differs besides the runtime: the peers take
documents in input order, as a user's loop would, while rightsize's ``predict`` sorts them by length so each
batch pads little (part of the product, and part of its speed).
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel, pipeline
from transformers.modeling_outputs import SequenceClassifierOutput

from models import EarlyExitClassifier
from ops.examples import Examples
from ops.quiet import quiet

from suite.common import prefix, timed


class PlainClassifier(PreTrainedModel):
    """Backbone + last exit head as one Hugging Face model: (batch, seq) ids -> (batch, labels) logits."""

    base_model_prefix = "backbone"
    _supports_sdpa = True  # the wrapped backbone's own attention is used, whichever it is

    def __init__(self, model: EarlyExitClassifier):
        config = copy.deepcopy(model.backbone.config)
        config.id2label = dict(enumerate(model.config.labels))
        config.label2id = {name: i for i, name in enumerate(model.config.labels)}
        super().__init__(config)
        # copies: casting the peer to bfloat16 must not cast the early-exit model it came from
        self.backbone, self.head = copy.deepcopy(model.backbone), copy.deepcopy(model.exits[-1])

    def forward(self, input_ids, attention_mask, token_type_ids=None, **_):
        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        return SequenceClassifierOutput(logits=self.head(hidden, attention_mask))


def _inputs(test: Examples):
    if test.pairs is None:
        return list(test.texts)
    return [{"text": t, "text_pair": p} for t, p in zip(test.texts, test.pairs)]


def _best(name: str, run_at, batch_sizes, test: Examples, gold: np.ndarray, repeats: int) -> dict:
    """Times ``run_at(documents, batch_size) -> label ids`` at each batch size; the fastest, with all rates."""
    rates, accuracy = {}, {}
    for size in batch_sizes:
        seconds, _, labels = timed(lambda: run_at(test, size), repeats, lambda: run_at(prefix(test, size), size))
        rates[size], accuracy[size] = len(test) / seconds, float((np.asarray(labels) == gold).mean())
    best = max(rates, key=rates.get)
    print(f"  {name:<30} {rates[best]:8.1f} docs/s at batch {best}, accuracy {accuracy[best]:.4f}", flush=True)
    return {"peer": name, "docs_per_s": rates[best], "batch_size": best, "accuracy": accuracy[best],
            "docs_per_s_by_batch": {str(k): v for k, v in rates.items()}}


def pipeline_peer(model: EarlyExitClassifier, dtype: torch.dtype, test: Examples, gold, batch_sizes, repeats) -> dict:
    plain = PlainClassifier(model).to(dtype).eval()
    plain.head.float()  # rightsize's exit head computes in float32 whatever the backbone's precision (ExitHead)
    with quiet("transformers"):  # "The model 'PlainClassifier' is not supported for text-classification": on purpose
        classify = pipeline("text-classification", model=plain, tokenizer=model.tokenizer, device=model.device)
    index = {name: i for i, name in enumerate(model.config.labels)}

    def run_at(data: Examples, size: int):
        out = classify(_inputs(data), batch_size=size, truncation=True, max_length=model.config.max_length)
        return [index[o["label"]] for o in out]

    name = f"transformers pipeline, {str(dtype).removeprefix('torch.')}"
    return _best(name, run_at, batch_sizes, test, gold, repeats)


def onnx_peer(model: EarlyExitClassifier, test: Examples, gold, batch_sizes, repeats, threads: int) -> dict:
    """ONNX Runtime (CPU provider) on the exported float32 plain classifier; {"peer", "error"} when the
    export or the runtime is not available."""
    name = "ONNX Runtime, float32"
    try:
        import onnxruntime as ort
    except ImportError as e:
        return {"peer": name, "error": f"onnxruntime is not installed ({e}); make bench-setup installs it"}
    plain = PlainClassifier(model).float().eval().cpu()
    sample = model.tokenize(test.texts[:2], None if test.pairs is None else test.pairs[:2])
    names = [key for key in ("input_ids", "attention_mask", "token_type_ids") if key in sample]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            with torch.no_grad():
                torch.onnx.export(plain, tuple(sample[k] for k in names), str(path), input_names=names,
                                  output_names=["logits"], dynamo=False, opset_version=17,
                                  dynamic_axes={**{k: {0: "batch", 1: "seq"} for k in names}, "logits": {0: "batch"}})
        except Exception as e:  # noqa: BLE001: any failure of the exporter is reported, not fatal to the suite
            print(f"  {name}: export failed: {e}", flush=True)
            return {"peer": name, "error": f"export failed: {type(e).__name__}: {str(e).splitlines()[0]}"}
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run_at(data: Examples, size: int):
        labels = []
        for start in range(0, len(data), size):  # the way a user batches: in input order, padded per batch
            batch = model.tokenizer(*(data.texts[start:start + size],) + (() if data.pairs is None else
                                    (data.pairs[start:start + size],)), truncation=True,
                                    max_length=model.config.max_length, padding=True, return_tensors="np")
            logits = session.run(None, {k: batch[k].astype(np.int64) for k in names})[0]
            labels.extend(logits.argmax(-1).tolist())
        return labels

    return _best(name, run_at, batch_sizes, test, gold, repeats)
