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


def _trim_padding(hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drops trailing padding columns that no row uses (right padding only)."""
    width = int(mask.sum(dim=1).max())
    return hidden[:, :width], mask[:, :width]


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
    otherwise; a threshold above 1 therefore sends every row through every layer.
    """
    runner, exit_layers = model.runner, model.config.exit_layers
    batch = input_ids.shape[0]
    label_ids = torch.empty(batch, dtype=torch.long)
    confidence = torch.empty(batch, dtype=torch.float32)
    exit_index = torch.empty(batch, dtype=torch.long)

    mask = attention_mask
    hidden = runner.embed(input_ids, mask, token_type_ids)  # (batch, seq, hidden)
    hidden, mask = _trim_padding(hidden, mask)
    rows = torch.arange(batch, device=hidden.device)  # original row of each remaining row
    ctx = runner.prepare(hidden, mask)
    next_exit = 0
    for layer in range(1, exit_layers[-1] + 1):
        hidden = runner.run_layer(layer - 1, hidden, ctx)
        if layer != exit_layers[next_exit]:
            continue
        probs = model.exit_probabilities(next_exit, hidden, mask)  # (rows, labels)
        conf, pred = probs.max(dim=-1)
        last = next_exit == len(exit_layers) - 1
        leave = torch.ones_like(conf, dtype=torch.bool) if last else conf >= threshold
        if leave.any():
            out = rows[leave].cpu()
            label_ids[out] = pred[leave].cpu()
            confidence[out] = conf[leave].float().cpu()
            exit_index[out] = next_exit
        if last or leave.all():
            break
        if leave.any():
            keep = ~leave
            hidden, mask, rows = hidden[keep], mask[keep], rows[keep]
            hidden, mask = _trim_padding(hidden, mask)
            ctx = runner.prepare(hidden, mask)  # the old mask/bias describe the old shape
        next_exit += 1
    return ExitBatchResult(label_ids.numpy(), confidence.numpy(), exit_index.numpy())
