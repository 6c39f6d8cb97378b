"""Layer-by-layer execution of a Hugging Face encoder.

Early exit needs the hidden state after every layer and the freedom to drop rows and padding columns between
layers, so the backbone's own ``forward`` (which runs all layers in one go) is not enough. ``LayerRunner``
splits it into three steps that reproduce ``hidden_states[k]`` of the model exactly:

    h = runner.embed(input_ids, attention_mask, token_type_ids)   # (batch, seq, hidden)
    ctx = runner.prepare(h, attention_mask)                         # per-forward state: 4-D mask, MPNet bias
    h = runner.run_layer(i, h, ctx)                                 # layer i (0-based)

``prepare`` must be called again whenever rows or columns of ``h`` are dropped: the 4-D mask and MPNet's
relative position bias are functions of the batch's shape and padding (DESIGN.md, "Compaction").
Supported: BERT family (BERT, RoBERTa, XLM-R, ELECTRA, CamemBERT), DistilBERT and MPNet.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask

# model_type -> how its embeddings are called and where its layers live.
_BERT_FAMILY = {"bert", "roberta", "xlm-roberta", "electra", "camembert"}
SUPPORTED_MODEL_TYPES = frozenset(_BERT_FAMILY | {"distilbert", "mpnet"})


@dataclass
class LayerContext:
    """State shared by all layers of one forward pass over one (possibly compacted) batch."""

    attention_mask: torch.Tensor | None  # (batch, 1, seq, seq) bool/additive, or None when nothing is padded
    position_bias: torch.Tensor | None = None  # MPNet only: (batch, heads, seq, seq)


class LayerRunner:
    """Runs the layers of ``base_model`` (an ``AutoModel``, not a task model) one at a time."""

    def __init__(self, base_model: nn.Module):
        self.base = base_model
        self.config = base_model.config
        self.model_type = self.config.model_type
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"model_type {self.model_type!r} is not supported for layer-by-layer execution; "
                f"supported: {sorted(SUPPORTED_MODEL_TYPES)}"
            )
        if self.model_type == "distilbert":
            self.layers = base_model.transformer.layer
        else:
            self.layers = base_model.encoder.layer

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def embed(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token ids (batch, seq) -> embeddings (batch, seq, hidden). The mask is unused here but kept so
        callers never forget that RoBERTa's positions come from non-pad ids (pad with the config's pad id)."""
        del attention_mask
        emb = self.base.embeddings
        if self.model_type in ("distilbert", "mpnet"):
            return emb(input_ids=input_ids)
        h = emb(input_ids=input_ids, token_type_ids=token_type_ids)
        project = getattr(self.base, "embeddings_project", None)  # ELECTRA with embedding_size != hidden_size
        return project(h) if project is not None else h

    def prepare(self, hidden: torch.Tensor, attention_mask: torch.Tensor, padded: bool | None = None) -> LayerContext:
        """Builds the per-forward state for ``hidden`` (batch, seq, hidden) and its 2-D mask (batch, seq).
        ``padded``, when the caller knows it (from lengths on the host), saves transformers' own check of the
        mask, a device synchronisation on a GPU."""
        if padded is None:
            mask4d = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=attention_mask)
        else:
            mask4d = create_bidirectional_mask(config=self.config, inputs_embeds=hidden,
                                               attention_mask=attention_mask if padded else None,
                                               allow_is_bidirectional_skip=False)
        bias = self.base.encoder.compute_position_bias(hidden) if self.model_type == "mpnet" else None
        return LayerContext(attention_mask=mask4d, position_bias=bias)

    def run_layer(self, index: int, hidden: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        """Layer ``index`` (0-based): (batch, seq, hidden) -> (batch, seq, hidden)."""
        layer = self.layers[index]
        if self.model_type == "mpnet":
            # MPNet layers still return a tuple (hidden, [attentions]).
            return layer(hidden, ctx.attention_mask, ctx.position_bias)[0]
        # BERT family and DistilBERT return a Tensor in transformers 5.x: indexing [0] would take batch row 0.
        return layer(hidden, ctx.attention_mask)
