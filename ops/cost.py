"""Compute cost of an early-exit encoder, in FLOPs per document.

Convention: one multiply-add = 2 FLOPs, matrix products only, as in Kaplan et al. (2020, "Scaling Laws",
table 1) and ``torch.utils.flop_counter.FlopCounterMode``, plus a small element-wise term for the
embeddings. Softmax, GELU and LayerNorm inside the layers are left out (< 2% of a layer at these sizes).

For a document of n tokens (after truncation, without padding) on an encoder with hidden size H,
feed-forward size I and C labels:

    layer       = 2n·4H²  (Q, K, V, output projections)
                + 2n²H·2  (scores QKᵀ and the weighted sum of V)
                + 2n·2HI  (the two feed-forward matrices)
    exit head   = 2H² + 2HC  (dense + classifier; see models/classifier.py) [+ nH for mean pooling]
    embeddings  = 8nH (sum of token/position/type embeddings and LayerNorm) [+ 2nEH for ELECTRA's projection]

A document that leaves at exit k (layer L_k) pays embeddings + L_k layers + k+1 exit heads: every exit it
passed was evaluated. In a cascade of separate models (training mode "multi"), it pays every stage it ran:
the sum over j <= k of (embeddings + L_j layers + one head). The full model pays embeddings + all layers +
one head (a plain classifier).
"""

from __future__ import annotations

from dataclasses import dataclass

EMBEDDING_OPS_PER_ELEMENT = 8  # 2 adds (position, token type) + ~6 for LayerNorm (mean, centre, var, scale, shift)


@dataclass(frozen=True)
class EncoderShape:
    """The sizes the cost depends on, read from a transformers config."""

    hidden: int
    intermediate: int
    num_layers: int
    num_labels: int
    embedding_size: int | None = None  # ELECTRA: embeddings are projected from this size to ``hidden``
    mean_pooling: bool = True  # exit heads average the token states (n·H additions) instead of taking one

    @classmethod
    def from_config(cls, config, num_labels: int, mean_pooling: bool = True) -> "EncoderShape":
        if config.model_type == "distilbert":
            intermediate = config.hidden_dim
        else:
            intermediate = config.intermediate_size
        embedding_size = getattr(config, "embedding_size", None)
        if embedding_size == config.hidden_size:
            embedding_size = None
        return cls(config.hidden_size, intermediate, config.num_hidden_layers, num_labels, embedding_size,
                   mean_pooling)


def embedding_flops(num_tokens: int, shape: EncoderShape) -> int:
    flops = EMBEDDING_OPS_PER_ELEMENT * num_tokens * shape.hidden
    if shape.embedding_size:
        flops += 2 * num_tokens * shape.embedding_size * shape.hidden
    return flops


def layer_flops(num_tokens: int, shape: EncoderShape) -> int:
    n, h = num_tokens, shape.hidden
    return 8 * n * h * h + 4 * n * n * h + 4 * n * h * shape.intermediate


def exit_head_flops(num_tokens: int, shape: EncoderShape) -> int:
    pooling = num_tokens * shape.hidden if shape.mean_pooling else 0
    return pooling + 2 * shape.hidden * shape.hidden + 2 * shape.hidden * shape.num_labels


def document_flops(num_tokens: int, layers_run: int, heads_run: int, shape: EncoderShape) -> int:
    """FLOPs for one document that ran ``layers_run`` layers and evaluated ``heads_run`` exit heads."""
    return (
        embedding_flops(num_tokens, shape)
        + layers_run * layer_flops(num_tokens, shape)
        + heads_run * exit_head_flops(num_tokens, shape)
    )


def exit_flops(num_tokens: int, exit_layers: tuple[int, ...], exit_index: int, shape: EncoderShape,
               cascade: bool = False) -> int:
    """FLOPs for a document that leaves at exit ``exit_index`` after passing every earlier exit: one shared
    backbone (``cascade=False``), or a cascade whose stage j is its own model of ``exit_layers[j]`` layers."""
    if cascade:
        return sum(document_flops(num_tokens, layers, 1, shape) for layers in exit_layers[:exit_index + 1])
    return document_flops(num_tokens, exit_layers[exit_index], exit_index + 1, shape)


def full_model_flops(num_tokens: int, shape: EncoderShape) -> int:
    """FLOPs of the same encoder without early exit: all layers and a single classifier head."""
    return document_flops(num_tokens, shape.num_layers, 1, shape)
