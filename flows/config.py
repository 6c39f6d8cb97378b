"""The end-to-end run's settings, read from one TOML file: one section per step, each section's keys the
fields of that step's config dataclass (and so of its CLI flags). ``examples/bbc_demo.toml`` documents every key.

Relative paths in the file are taken from the working directory the run starts in (``workdir``), as CLI
paths are; ``rightsize serve`` records its working directory so that scheduled runs read the same files.
"""

from __future__ import annotations

import glob
import math
import tomllib
import types
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from models.calibration import CalibrationConfig
from models.training import TrainConfig
from ops.accounting import ReportConfig
from ops.dynamics import SelectionConfig
from pipelines.label_config import LabelJobConfig, unknown_beam_flags


@dataclass(frozen=True)
class DataConfig:
    """Labelled data for fine-tuning and calibration."""

    train: str  # .jsonl/.csv/.parquet file, or a hub dataset name[:split] (needs the network)
    dev: str  # evaluated every epoch during fine-tuning; calibration fits on it too
    text_field: str = "text"
    pair_field: str | None = None  # second text of pair tasks (NLI)
    label_field: str = "label"


@dataclass(frozen=True)
class LabelStepConfig:
    """The [label] section: the corpus and how the Beam job labels it (see pipelines/label_config.py)."""

    input: str  # glob of .jsonl/.csv/.tsv/.parquet/.txt files, local or an fsspec URL
    output: str = ""  # where runs go; "" means <output>/labels
    run_id: str = ""  # "" means derived from the model, the threshold and the input files' names, sizes and times
    threshold: float | None = None  # None: the calibrated threshold
    text_field: str = "text"
    pair_field: str | None = None
    id_field: str = "id"
    batch_size: int | None = None  # None: the worker's device default (64 on a CPU, 256 on a GPU)
    chunk_size: int = 1024
    max_batch_duration_secs: int | None = None
    reshuffle: bool | None = None  # None: on, except on the in-process DirectRunner
    share_model_across_processes: bool = False  # GPU workers: one model per machine
    model_copies: int | None = None
    dtype: str = "float32"  # compute precision of labelling, and of the calibration before it; or "auto"
    threads: int | None = None  # torch threads per labelling process; None: cores / processes
    tokenize_ahead: bool | None = None  # None: on a GPU worker, off on a CPU worker
    beam_args: tuple[str, ...] = ("--runner=DirectRunner",)  # any Beam pipeline options, as on the command line


@dataclass(frozen=True)
class ReportStepConfig:
    """The [report] section. The report covers every run under the label output, so it shows the trend."""

    price_per_hour: float | None = None  # money per device-hour; None: money is reported as unknown
    devices: int = 1  # devices billed for each run's whole wall time


@dataclass(frozen=True)
class RunConfig:
    output: str  # local workspace: models/, labels/, report/ and the Prefect result cache go here
    data: DataConfig
    train: TrainConfig
    calibrate: CalibrationConfig
    label: LabelStepConfig
    report: ReportStepConfig = ReportStepConfig()
    select: SelectionConfig | None = None  # train on a region of the data map instead of all the data
    source: str = ""  # the TOML file it was read from

    @property
    def models_dir(self) -> Path:
        return Path(self.output) / "models"

    @property
    def cache_dir(self) -> Path:
        """Where Prefect persists task results (cache entries): set explicitly, never Prefect's default."""
        return Path(self.output) / "cache"

    @property
    def label_output(self) -> str:
        return self.label.output or str(Path(self.output) / "labels")

    @property
    def report_dir(self) -> Path:
        return Path(self.output) / "report"

    def label_job(self, model: str, run_id: str) -> LabelJobConfig:
        """The Beam job's settings for ``model`` under ``run_id``."""
        fields = {k: v for k, v in asdict(self.label).items() if k not in ("output", "run_id", "beam_args")}
        return LabelJobConfig(model=model, output=self.label_output, run_id=run_id, **fields)

    def report_config(self) -> ReportConfig:
        prefix = glob.escape(self.label_output.rstrip("/"))  # an output named like runs/[prod] is not a pattern
        return ReportConfig(predictions=f"{prefix}/*/predictions-*.parquet",
                            price_per_hour=self.report.price_per_hour, devices=self.report.devices)


_SECTIONS = {"data": DataConfig, "train": TrainConfig, "calibrate": CalibrationConfig, "label": LabelStepConfig,
             "report": ReportStepConfig, "select": SelectionConfig}
_OPTIONAL = {"select"}  # sections that are None when absent (the others take their defaults)
_TUPLES = {("train", "exits"), ("label", "beam_args")}  # TOML arrays that the dataclasses hold as tuples


def load_config(path: str | Path, workdir: str | Path | None = None) -> RunConfig:
    """Reads and checks a run config; errors name the file, the section and the key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML ({e})") from None
    workdir = Path(workdir or Path.cwd())
    unknown = sorted(set(raw) - set(_SECTIONS) - {"output"})
    if unknown:
        raise ValueError(f"{path}: unknown key(s) or section(s) {unknown}; expected output and [{'], ['.join(_SECTIONS)}]")
    for required in ("output", "data", "train", "label"):
        if required not in raw:
            raise ValueError(f"{path}: {'key' if required == 'output' else 'section'} {required!r} is missing")
    if not isinstance(raw["output"], str) or "://" in raw["output"]:
        raise ValueError(f"{path}: 'output' must be a local folder path, got {raw['output']!r}")
    calibrate = raw.get("calibrate", {})
    if isinstance(calibrate, dict) and not {"target_drop", "flops_budget", "threshold"} & set(calibrate):
        raw["calibrate"] = {**calibrate, "target_drop": 0.01}  # the default target: one accuracy point
    sections = {name: _section(path, name, raw.get(name, {})) for name in _SECTIONS
                if name in raw or name not in _OPTIONAL}

    data, label = sections["data"], sections["label"]
    config = RunConfig(
        output=str(_local(workdir, raw["output"])),
        data=DataConfig(**{**data.__dict__, "train": _maybe_local(workdir, data.train), "dev": _maybe_local(workdir, data.dev)}),
        train=TrainConfig(**{**sections["train"].__dict__, "model": _maybe_local(workdir, sections["train"].model)}),
        calibrate=sections["calibrate"],
        label=LabelStepConfig(**{**label.__dict__, "input": _url_or_local(workdir, label.input),
                                 "output": label.output and _url_or_local(workdir, label.output)}),
        report=sections["report"],
        select=sections.get("select"),
        source=str(path.resolve()),
    )
    try:  # the steps' own checks, now rather than after fine-tuning
        config.label_job(model="<model>", run_id=config.label.run_id or "derived-later").check_runner(
            config.label.beam_args)
        config.report_config()
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None
    if config.select is not None:  # now, not after the data-map training
        if config.train.epochs < 2:
            raise ValueError(f"{path}: [select] needs a data map, which needs [train] epochs >= 2")
        if config.train.exits and config.select.exit_layer not in (None, *config.train.exits):
            raise ValueError(f"{path}: [select] exit_layer {config.select.exit_layer} is not among [train] exits "
                             f"{list(config.train.exits)}")
    if (config.data.pair_field is None) != (config.label.pair_field is None):  # the model checks it only when
        # labelling starts, after fine-tuning
        raise ValueError(f"{path}: [data] pair_field is {config.data.pair_field!r} but [label] pair_field is "
                         f"{config.label.pair_field!r}: a model trained on text pairs labels text pairs, and one "
                         f"trained on single texts single texts")
    unknown = unknown_beam_flags(list(config.label.beam_args))
    if unknown:
        raise ValueError(f"{path}: [label] beam_args has options Beam does not know: {unknown}")
    return config


def _section(path: Path, name: str, values: Any):
    cls = _SECTIONS[name]
    if not isinstance(values, dict):
        raise ValueError(f"{path}: {name!r} must be a section [{name}]")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: [{name}] has unknown key(s) {unknown}; known: {sorted(known)}")
    for key in values.keys() & {k for section, k in _TUPLES if section == name}:
        if not isinstance(values[key], list):
            raise ValueError(f"{path}: [{name}] {key} must be an array like [...], got {values[key]!r}")
        values[key] = tuple(values[key])
    hints, declared = typing.get_type_hints(cls), {f.name: f.type for f in fields(cls)}
    for key, value in values.items():  # TOML is typed: "0.05" or "false" is a string, not a number or a bool
        if not _fits(value, hints[key]):
            raise ValueError(f"{path}: [{name}] {key} must be {declared[key]}, got {value!r}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: [{name}]: {e}") from None


def _fits(value: Any, hint: Any) -> bool:
    """Whether a TOML value has the type of a config field (str, int, float, bool, unions of them, tuple[X, ...]);
    other types are left to the config's own checks. An int is a float, a float is finite; a bool is neither."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return isinstance(value, (tuple, list)) and all(_fits(v, args[0]) for v in value)
    if hint is float:  # TOML has nan and inf; no setting takes them
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (str, bool, type(None)):
        return isinstance(value, hint)
    return True


def _local(workdir: Path, value: str) -> Path:
    return (workdir / value).resolve()


def _maybe_local(workdir: Path, value: str) -> str:
    """A path that exists relative to ``workdir`` becomes absolute; anything else (a hub name, 'minilm',
    a missing file that will fail later with its own message) stays as written."""
    candidate = workdir / value
    return str(candidate.resolve()) if candidate.exists() else value


def _url_or_local(workdir: Path, value: str) -> str:
    return value if "://" in value else str(workdir / value)

