"""Shared fixtures: tiny randomly initialised encoders (one per architecture) and the packaged MiniLM."""

from __future__ import annotations

import os
import random
import tempfile

# Prefect reads these at import: a throwaway home (its SQLite database, profiles) and no analytics calls.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="rightsize-prefect-home-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

from models.classifier import EarlyExitClassifier, resolve_backbone  # noqa: E402
from models.config import EarlyExitConfig  # noqa: E402
from ops.examples import Examples  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MINILM = resolve_backbone("minilm")
VOCAB = 30522  # the MiniLM (BERT uncased) tokenizer's vocabulary, shared by all tiny models
_TINY = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=37,
             max_position_embeddings=128, vocab_size=VOCAB)


def tiny_backbone_config(model_type: str):
    """A 4-layer, 32-wide config of ``model_type``; all use pad id 0, the BERT tokenizer's."""
    if model_type == "distilbert":
        return transformers.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=4, n_heads=4, hidden_dim=37,
                                             max_position_embeddings=128, pad_token_id=0)
    cls = {"bert": transformers.BertConfig, "roberta": transformers.RobertaConfig,
           "mpnet": transformers.MPNetConfig, "electra": transformers.ElectraConfig}[model_type]
    extra = {"embedding_size": 16} if model_type == "electra" else {}
    return cls(**_TINY, pad_token_id=0, **extra)


def tiny_backbone(model_type: str, attn: str = "eager", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return AutoModel.from_config(tiny_backbone_config(model_type), attn_implementation=attn).eval()


@pytest.fixture(scope="session")
def tokenizer():
    return AutoTokenizer.from_pretrained(MINILM)


def tiny_classifier(tokenizer, model_type="bert", attn="eager", exit_layers=(1, 2, 3, 4), labels=("a", "b", "c"),
                    temperatures=(), threshold=0.9, seed=0) -> EarlyExitClassifier:
    backbone = tiny_backbone(model_type, attn, seed)
    config = EarlyExitConfig(model_type=model_type, num_layers=4, exit_layers=exit_layers, labels=labels,
                             max_length=64, temperatures=temperatures, threshold=threshold)
    torch.manual_seed(seed + 1)
    return EarlyExitClassifier(backbone, tokenizer, config).eval()


TEXTS = [
    "the match ended in a draw after extra time",
    "shares fell sharply",
    "a new chip promises faster phones and longer battery life for everyone who buys one this year",
    "rain",
    "the minister resigned on tuesday",
    "scientists found water on a distant moon, raising hopes for life beyond earth",
    "ok",
    "the company reported record profits in the third quarter despite weak demand in europe",
]


@pytest.fixture(scope="session")
def backbone_dir(tokenizer, tmp_path_factory) -> str:
    """A saved tiny BERT backbone (config, weights, MiniLM's tokenizer): what ``train`` starts from."""
    path = tmp_path_factory.mktemp("tiny-bert")
    tiny_backbone("bert").save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def topic_examples(n: int, seed: int) -> Examples:
    """Two topics told apart by their words: easy enough for a tiny model in a few epochs."""
    rng = random.Random(seed)
    words = {"sport": "goal match team score league coach".split(), "money": "bank stock market profit trade price".split()}
    labels = [rng.choice(sorted(words)) for _ in range(n)]
    texts = [" ".join(rng.choices(words[label], k=rng.randint(3, 9))) for label in labels]
    return Examples(texts, None, labels, "synthetic")
