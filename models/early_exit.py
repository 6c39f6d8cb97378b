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
    num_tokens: np.ndarray,
) -> ExitBatchResult:
    """Runs one right-padded batch (batch, seq) through ``model`` (an ``EarlyExitClassifier``) with early exit.

    A row leaves at the first exit whose calibrated confidence is >= ``threshold``, and at the last exit
    otherwise; a threshold above 1 therefore sends every row through every layer. On one backbone each exit
    continues from the previous exit's hidden state; in a cascade each stage starts again from the token ids
    of the rows still running (``model.stage``). ``num_tokens`` (batch,): the rows' real lengths, from the
    host-side encoding (reading them off the device mask would be one more synchronisation).
    """
    exit_layers = model.config.exit_layers
    batch = input_ids.shape[0]
    label_ids = np.empty(batch, dtype=np.int64)
    confidence = np.empty(batch, dtype=np.float32)
    exit_index = np.empty(batch, dtype=np.int64)

    # Decisions are taken on the host from one device->host copy per exit (on a GPU every .any(), boolean
    # index or .item() would be a synchronisation of its own); the device only gathers the rows that go on.
    lengths = np.asarray(num_tokens)  # (rows,) real tokens of the rows still running
    threshold = np.float32(threshold)  # compared as float32, like the confidences
    width = int(lengths.max())  # trailing padding columns no row uses are dropped
    ids, mask = input_ids[:, :width], attention_mask[:, :width]
    types = token_type_ids[:, :width] if token_type_ids is not None else None
    rows = np.arange(batch)  # original row of each remaining row
    ctx = None  # per-forward state (4-D mask, MPNet bias) of the current runner and batch shape
    for k, exit_layer in enumerate(exit_layers):
        runner, first = model.stage(k)
        if first == 0:
            hidden = runner.embed(ids, mask, types)  # (rows, width, hidden)
        if first == 0 or ctx is None:
            ctx = runner.prepare(hidden, mask, padded=bool(lengths.min() < width))
        for layer in range(first, exit_layer):
            hidden = runner.run_layer(layer, hidden, ctx)
        probs = model.exit_probabilities(k, hidden, mask)  # (rows, labels) float32
        conf, pred = probs.max(dim=-1)
        decided = torch.stack((conf, pred.float())).cpu().numpy()  # (2, rows): the one copy of this exit
        last = k == len(exit_layers) - 1
        leave = np.ones(len(rows), dtype=bool) if last else decided[0] >= threshold
        label_ids[rows[leave]] = decided[1, leave]
        confidence[rows[leave]] = decided[0, leave]
        exit_index[rows[leave]] = k
        if last or leave.all():
            break
        if leave.any():
            keep = np.flatnonzero(~leave)
            rows, lengths = rows[keep], lengths[keep]
            width = int(lengths.max())
            index = torch.from_numpy(keep).to(mask.device, non_blocking=True)
            mask = mask.index_select(0, index)[:, :width]
            if model.cascade:  # the next stage starts again from the token ids
                ids = ids.index_select(0, index)[:, :width]
                types = types.index_select(0, index)[:, :width] if types is not None else None
            else:
                hidden = hidden.index_select(0, index)[:, :width]
            ctx = None  # the old 4-D mask / MPNet bias describe the old shape
    return ExitBatchResult(label_ids, confidence, exit_index)
