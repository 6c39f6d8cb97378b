"""Batched early exit with row compaction: the part that makes early exit pay off at batch sizes > 1.

Schwartz et al. (2020) exit per document, so their code runs one document at a time. Here a padded batch runs
layer by layer; at each exit the rows that are confident enough leave with their prediction, and the rest go
on as a smaller batch, trimmed of the padding columns no remaining row needs. Per-forward state (4-D mask,
MPNet bias) is rebuilt from the compacted 2-D mask, so each row gets what it would get if run alone
(up to float rounding, ~1e-6).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class ExitBatchResult:
    """Per-row outcome of one batch, in the batch's row order."""

    label_ids: np.ndarray  # (batch,) int64, predicted class ids
    confidence: np.ndarray  # (batch,) float32, calibrated max-softmax at the exit taken
    exit_index: np.ndarray  # (batch,) int64, index into exit_layers of the exit taken


@torch.inference_mode()
def run_early_exit(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor | None,
    threshold: float,
) -> ExitBatchResult:
    """Runs one right-padded batch (batch, seq) through ``model`` (an ``EarlyExitClassifier``) with early exit.

    A row leaves at the first exit whose calibrated confidence is >= ``threshold``, and at the last exit
    otherwise; a threshold above 1 therefore sends every row through every layer. On one backbone each exit
    continues from the previous exit's hidden state; in a cascade each stage starts again from the token ids
    of the rows still running (``model.stage``).
    """
    exit_layers = model.config.exit_layers
    batch = input_ids.shape[0]
    label_ids = torch.empty(batch, dtype=torch.long)
    confidence = torch.empty(batch, dtype=torch.float32)
    exit_index = torch.empty(batch, dtype=torch.long)

    width = int(attention_mask.sum(dim=1).max())  # trailing padding columns no row uses are dropped
    ids, mask = input_ids[:, :width], attention_mask[:, :width]
    types = token_type_ids[:, :width] if token_type_ids is not None else None
    rows = torch.arange(batch, device=input_ids.device)  # original row of each remaining row
    ctx = None  # per-forward state (4-D mask, MPNet bias) of the current runner and batch shape
    for k, exit_layer in enumerate(exit_layers):
        runner, first = model.stage(k)
        if first == 0:
            hidden = runner.embed(ids, mask, types)  # (rows, width, hidden)
        if first == 0 or ctx is None:
            ctx = runner.prepare(hidden, mask)
        for layer in range(first, exit_layer):
            hidden = runner.run_layer(layer, hidden, ctx)
        probs = model.exit_probabilities(k, hidden, mask)  # (rows, labels)
        conf, pred = probs.max(dim=-1)
        last = k == len(exit_layers) - 1
        leave = torch.ones_like(conf, dtype=torch.bool) if last else conf >= threshold
        if leave.any():
            out = rows[leave].cpu()
            label_ids[out] = pred[leave].cpu()
            confidence[out] = conf[leave].float().cpu()
            exit_index[out] = k
        if last or leave.all():
            break
        if leave.any():
            keep = ~leave
            rows, mask = rows[keep], mask[keep]
            width = int(mask.sum(dim=1).max())
            mask = mask[:, :width]
            if model.cascade:  # the next stage starts again from the token ids
                ids = ids[keep][:, :width]
                types = types[keep][:, :width] if types is not None else None
            else:
                hidden = hidden[keep][:, :width]
            ctx = None  # the old 4-D mask / MPNet bias describe the old shape
    return ExitBatchResult(label_ids.numpy(), confidence.numpy(), exit_index.numpy())
