"""The early-exit model's own settings: what ``rightsize.json`` in a model directory holds."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

CONFIG_FILE = "rightsize.json"
WEIGHTS_FILE = "model.safetensors"
# Every file of a model directory that decides its predictions: loading needs them all, and the model's content id
# (classifier.artifact_id) hashes them all, so a run's manifest names exactly what labelled it.
MODEL_FILES = (CONFIG_FILE, WEIGHTS_FILE, "config.json", "tokenizer.json", "tokenizer_config.json")
# Files the tokenizer loader also reads when they are there (a hub download or an older transformers writes them;
# a special_tokens_map.json that swaps [CLS] and [SEP] changes the ids): hashed too when present.
OPTIONAL_MODEL_FILES = ("special_tokens_map.json", "added_tokens.json")
FORMAT_VERSION = 1
# joint: one backbone, loss = sum of the exits' losses (Schwartz et al., 2020).
# sweet: one backbone, each exit's loss updates only the layers since the previous exit (Rotem et al., 2023).
# multi: one independently fine-tuned truncated backbone per exit, run as a cascade at prediction.
TRAINING_MODES = ("joint", "sweet", "multi")
POOLINGS = ("mean", "cls")
# The backbone's compute precision (models/precision.py); int8: the feed-forward layers quantised at load, on
# the CPU, for inference only (training runs in the others).
PRECISIONS = ("float32", "bfloat16", "float16", "int8")
DTYPE_CHOICES = ("auto", *PRECISIONS)
TRAIN_DTYPE_CHOICES = tuple(d for d in DTYPE_CHOICES if d != "int8")  # quantised layers have no gradients
# For a precision with no calibration of its own: the calibrated precisions to use instead, nearest first.
NEAREST_PRECISIONS = {"float32": ("bfloat16", "float16", "int8"), "bfloat16": ("float16", "float32", "int8"),
                      "float16": ("bfloat16", "float32", "int8"), "int8": ("float32", "bfloat16", "float16")}
DEFAULT_THRESHOLD = 0.9  # a conservative default until calibration picks one for a target


def check_threshold(threshold: float) -> None:
    """A runtime threshold: a finite number >= 0 (calibrated confidences lie in (0, 1], so 0 sends every
    document out at the first exit and anything above 1 runs every document to the last layer)."""
    if not (math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"threshold must be a finite number >= 0 (above 1: every document runs to the last "
                         f"layer), got {threshold}")


def default_exit_layers(num_layers: int) -> tuple[int, ...]:
    """Exits every quarter of the depth, always including the last layer: 6 layers -> 1..6 (every layer),
    12 -> (3, 6, 9, 12), 24 -> (6, 12, 18, 24). An exit head costs < 0.1% of a layer, so more exits
    only buy finer granularity."""
    step = max(1, num_layers // 4)
    layers = list(range(step, num_layers + 1, step))
    if layers[-1] != num_layers:
        layers.append(num_layers)
    return tuple(layers)


class ConfigError(ValueError):
    """A model directory whose files disagree; the message names the file and the field."""


@dataclass(frozen=True)
class EarlyExitConfig:
    model_type: str  # backbone architecture, as in config.json ("bert", "roberta", ...)
    num_layers: int  # transformer layers of the backbone
    exit_layers: tuple[int, ...]  # 1-based layer after which each exit sits; the last is num_layers
    labels: tuple[str, ...]  # label names, index = class id
    max_length: int = 256  # tokens per document after truncation, special tokens included
    # What each exit head reads: "mean" of the layer's token states, or the first ("cls") token's state.
    # Mean is the default because in sentence-embedding models such as all-MiniLM-L6-v2 the first token is
    # nearly constant across documents below the top layers (its std across AG News documents is ~0.001 at
    # layers 1-3), so a first-token exit there cannot learn: a linear probe scored 0.195 (first token) vs
    # 0.85-0.89 (mean) on AG News dev.
    pooling: str = "mean"
    training_mode: str = "joint"
    temperatures: tuple[float, ...] = ()  # one per exit; () means all 1.0 (uncalibrated)
    threshold: float = DEFAULT_THRESHOLD  # default exit threshold on calibrated max-softmax confidence
    base_model: str = ""  # where fine-tuning started, for provenance
    text_pairs: bool | None = None  # trained on text pairs (NLI: premise, hypothesis); None: not recorded (older)
    calibration: dict[str, Any] | None = None  # summary written by calibration
    # Every precision calibrated so far: dtype name -> {"temperatures", "threshold", "calibration"}. The fields
    # above hold the one in use; ``calibrated_for`` swaps in another precision's (models/precision.py).
    calibrations: dict[str, dict[str, Any]] = field(default_factory=dict)
    format_version: int = field(default=FORMAT_VERSION)

    def __post_init__(self):
        object.__setattr__(self, "exit_layers", tuple(int(x) for x in self.exit_layers))
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        temps = tuple(float(t) for t in self.temperatures) or (1.0,) * len(self.exit_layers)
        object.__setattr__(self, "temperatures", temps)
        if self.calibration is not None and not self.calibrations:  # written before calibrations existed: float32
            object.__setattr__(self, "calibrations", {"float32": self._active_calibration()})
        self._check(CONFIG_FILE)

    def _active_calibration(self) -> dict[str, Any]:
        return {"temperatures": list(self.temperatures), "threshold": self.threshold, "calibration": self.calibration}

    def with_calibration(self, dtype: str, temperatures, threshold: float, calibration: dict) -> "EarlyExitConfig":
        """This config with a new calibration for ``dtype``, made the one in use; other precisions' are kept."""
        active = replace(self, temperatures=tuple(temperatures), threshold=threshold, calibration=calibration)
        return replace(active, calibrations={**self.calibrations, dtype: active._active_calibration()})

    def calibration_source(self, dtype: str) -> str | None:
        """The precision whose calibration a model run in ``dtype`` uses: its own, else the nearest calibrated
        one; None when nothing was calibrated."""
        return next((d for d in (dtype, *NEAREST_PRECISIONS[dtype]) if d in self.calibrations), None)

    def calibrated_for(self, dtype: str) -> tuple["EarlyExitConfig", str | None]:
        """The config with ``dtype``'s calibration in use, or the nearest calibrated precision's (then also a
        warning to show); unchanged, without a warning, when nothing was calibrated."""
        source = self.calibration_source(dtype)
        if source is None:
            return self, None
        chosen = self.calibrations[source]
        config = replace(self, temperatures=tuple(chosen["temperatures"]), threshold=chosen["threshold"],
                         calibration=chosen["calibration"])
        if source == dtype:
            return config, None
        return config, (f"no calibration for {dtype} in this model; using the {source} one (calibrate with "
                        f"--dtype {dtype} for temperatures and a threshold fitted on {dtype} logits)")

    def check_pairs(self, with_pairs: bool) -> None:
        """Raises unless inputs with (or without) a second text suit this model: a pair model given one text, or
        a one-text model given pairs, would label every document without an error, and wrongly."""
        if self.text_pairs is not None and with_pairs != self.text_pairs:
            raise ValueError("this model was trained on text pairs: give the pair field (--pair-field) too"
                             if self.text_pairs else "this model was trained on single texts: give no pair field")

    def _check(self, source: str) -> None:
        def fail(name: str, why: str):
            raise ConfigError(f"{source}: field {name!r} {why}")

        if not self.exit_layers:
            fail("exit_layers", "is empty")
        if not (self.text_pairs is None or isinstance(self.text_pairs, bool)):
            fail("text_pairs", f"must be true, false or null, got {self.text_pairs!r}")
        if list(self.exit_layers) != sorted(set(self.exit_layers)):
            fail("exit_layers", f"must be strictly increasing, got {list(self.exit_layers)}")
        if self.exit_layers[0] < 1 or self.exit_layers[-1] != self.num_layers:
            fail("exit_layers", f"must lie in 1..{self.num_layers} and end at the last layer "
                                f"({self.num_layers}), got {list(self.exit_layers)}")
        if len(set(self.labels)) < 2:
            fail("labels", f"needs at least two distinct names, got {list(self.labels)}")
        if len(set(self.labels)) != len(self.labels):
            repeated = sorted({name for name in self.labels if self.labels.count(name) > 1})
            fail("labels", f"names each label once, but {repeated} appear more than once in {list(self.labels)}")
        if len(self.temperatures) != len(self.exit_layers):
            fail("temperatures", f"has {len(self.temperatures)} values for {len(self.exit_layers)} exits")
        if any(not t > 0 for t in self.temperatures):
            fail("temperatures", f"must all be > 0, got {list(self.temperatures)}")
        if not (math.isfinite(self.threshold) and self.threshold >= 0):
            fail("threshold", f"must be a finite number >= 0, got {self.threshold}")
        if self.max_length < 2:
            fail("max_length", f"must be >= 2, got {self.max_length}")
        if self.pooling not in POOLINGS:
            fail("pooling", f"must be one of {POOLINGS}, got {self.pooling!r}")
        if self.training_mode not in TRAINING_MODES:
            fail("training_mode", f"must be one of {TRAINING_MODES}, got {self.training_mode!r}")
        unknown = sorted(set(self.calibrations) - set(PRECISIONS))
        if unknown:
            fail("calibrations", f"has unknown precision(s) {unknown}; known: {list(PRECISIONS)}")
        if self.format_version != FORMAT_VERSION:
            fail("format_version", f"is {self.format_version}; this rightsize reads {FORMAT_VERSION}")

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def with_updates(self, **changes) -> "EarlyExitConfig":
        return replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = CONFIG_FILE) -> "EarlyExitConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{source}: not valid JSON ({e})") from e
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {unknown}")
        for name in ("model_type", "num_layers", "exit_layers", "labels"):
            if name not in data:
                raise ConfigError(f"{source}: field {name!r} is missing")
        try:
            return cls(**data)
        except ConfigError as e:
            raise ConfigError(str(e).replace(CONFIG_FILE, source, 1)) from None
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{source}: {e}") from e

    def save(self, directory: str | Path) -> None:
        Path(directory, CONFIG_FILE).write_text(self.to_json())
