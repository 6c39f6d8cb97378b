"""Training dynamics and data maps (Swayamdipta et al., EMNLP 2020, "Dataset Cartography").

While fine-tuning, every training example's probability of its gold label is recorded at every exit in every
epoch. Per example and exit, over the E epochs:

    confidence  = mean of p(gold)              (high: the model learned it)
    variability = standard deviation of p(gold) (population std, as in the paper)
    correctness = fraction of epochs whose argmax is the gold label

Regions of the data map: ``easy`` (highest confidence), ``hard`` (lowest confidence), ``ambiguous`` (highest
variability) and ``random``. A model directory keeps the record in ``dynamics/``:

    dynamics/examples.parquet   example (row of the training file), text, [pair], label; the training
                                file's field names in the schema metadata
    dynamics/epochs.parquet     example, epoch (1-based), exit_layer, gold_probability, correct

It lives in a subfolder so that jobs copying a model directory to their workers do not copy it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ops.examples import Examples, check_seed

DYNAMICS_DIR = "dynamics"
EXAMPLES_FILE = "examples.parquet"
EPOCHS_FILE = "epochs.parquet"
REGIONS = ("ambiguous", "easy", "hard", "random")
_FIELDS_KEY = b"rightsize.fields"  # schema metadata: the training file's text/pair/label field names


@dataclass(frozen=True)
class SelectionConfig:
    """Which training examples to keep (``rightsize select``, the flow's [select] section)."""

    region: str  # ambiguous | easy | hard | random
    fraction: float  # share of the training set kept, in (0, 1]
    exit_layer: int | None = None  # whose dynamics; None: the last exit
    seed: int = 0  # of region random

    def __post_init__(self):
        if self.region not in REGIONS:
            raise ValueError(f"SelectionConfig.region must be one of {REGIONS}, got {self.region!r}")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"SelectionConfig.fraction must be in (0, 1], got {self.fraction}")
        check_seed(self.seed)


@dataclass
class TrainingDynamics:
    exit_layers: tuple[int, ...]
    gold_probability: np.ndarray  # (epochs, exits, n) float32: p(gold label) of each training example
    correct: np.ndarray  # (epochs, exits, n) bool: the exit's argmax was the gold label

    def exit_index(self, exit_layer: int | None) -> int:
        """Index of ``exit_layer`` among the exits; None means the last exit."""
        if exit_layer is None:
            return len(self.exit_layers) - 1
        if exit_layer not in self.exit_layers:
            raise ValueError(f"no exit at layer {exit_layer}; the exits are at layers {list(self.exit_layers)}")
        return self.exit_layers.index(exit_layer)


@dataclass(frozen=True)
class DataMap:
    """Per-example statistics at one exit, each (n,) float64."""

    confidence: np.ndarray
    variability: np.ndarray
    correctness: np.ndarray


def data_map(dynamics: TrainingDynamics, exit_layer: int | None = None) -> DataMap:
    """The statistics of the module docstring at one exit (default: the last)."""
    k = dynamics.exit_index(exit_layer)
    p = dynamics.gold_probability[:, k].astype(np.float64)  # (epochs, n)
    if p.shape[0] < 2:
        raise ValueError(f"a data map needs at least 2 epochs of training dynamics, got {p.shape[0]}")
    return DataMap(p.mean(axis=0), p.std(axis=0), dynamics.correct[:, k].mean(axis=0))


def select_region(stats: DataMap, region: str, fraction: float, seed: int = 0) -> np.ndarray:
    """Row indices (ascending) of the ``fraction`` of examples in ``region``: the highest variability
    (ambiguous), the highest confidence (easy), the lowest confidence (hard), or a seeded random sample.
    round(fraction * n) rows, at least one; ties go to the earlier row."""
    if region not in REGIONS:
        raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n = len(stats.confidence)
    count = max(1, int(round(fraction * n)))
    if region == "random":
        chosen = np.random.default_rng(seed).choice(n, size=count, replace=False)
    else:
        chosen = region_order(stats, region)[:count]
    return np.sort(chosen)


def region_order(stats: DataMap, region: str) -> np.ndarray:
    """All rows, most typical of ``region`` (ambiguous, easy or hard) first; ties go to the earlier row."""
    key = {"ambiguous": -stats.variability, "easy": -stats.confidence, "hard": stats.confidence}[region]
    return np.argsort(key, kind="stable")


# -- files ------------------------------------------------------------------------------------------------

def write_dynamics(directory: str | Path, dynamics: TrainingDynamics, examples: Examples) -> Path:
    """Writes ``dynamics/`` into a model directory; returns that folder."""
    folder = Path(directory) / DYNAMICS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    epochs, exits, n = dynamics.gold_probability.shape
    if n != len(examples):
        raise ValueError(f"dynamics cover {n} examples but the training set has {len(examples)}")
    columns = {"example": pa.array(np.arange(n, dtype=np.int64)), "text": pa.array(examples.texts, pa.string())}
    if examples.pairs is not None:
        columns["pair"] = pa.array(examples.pairs, pa.string())
    columns["label"] = pa.array(examples.labels, pa.string())
    # a local file or folder by its absolute path: select recognises it (and refuses to write over or into it)
    # from any directory. As train read them: a file without ~ expansion, a folder (folder:split) with it.
    file, data_dir = Path(examples.source), Path(examples.source.partition(":")[0]).expanduser()
    source = str(file.resolve()) if file.is_file() else str(data_dir.resolve()) if data_dir.is_dir() else examples.source
    fields = dict(zip(("text_field", "pair_field", "label_field"), examples.fields), source=source)
    table = pa.table(columns).replace_schema_metadata({_FIELDS_KEY: json.dumps(fields).encode()})
    pq.write_table(table, folder / EXAMPLES_FILE)
    # long format, ordered by (epoch, exit, example): one row per example, epoch and exit
    epoch_ids, exit_ids, example_ids = np.meshgrid(np.arange(epochs), np.arange(exits), np.arange(n), indexing="ij")
    pq.write_table(pa.table({
        "example": pa.array(example_ids.ravel().astype(np.int64)),
        "epoch": pa.array((epoch_ids.ravel() + 1).astype(np.int16)),
        "exit_layer": pa.array(np.asarray(dynamics.exit_layers, dtype=np.int16)[exit_ids.ravel()]),
        "gold_probability": pa.array(dynamics.gold_probability.ravel().astype(np.float32)),
        "correct": pa.array(dynamics.correct.ravel().astype(bool)),
    }), folder / EPOCHS_FILE)
    return folder


def read_dynamics(directory: str | Path) -> tuple[TrainingDynamics, pa.Table, dict]:
    """The dynamics, the examples table and the training file's field names of a model directory."""
    folder = Path(directory) / DYNAMICS_DIR
    for name in (EXAMPLES_FILE, EPOCHS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name}: no training dynamics in {directory} (train with dynamics on, "
                                    f"the default, to record them)")
    examples = pq.read_table(folder / EXAMPLES_FILE)
    fields = json.loads((examples.schema.metadata or {}).get(_FIELDS_KEY, b"{}"))
    table = pq.read_table(folder / EPOCHS_FILE).sort_by([("epoch", "ascending"), ("exit_layer", "ascending"),
                                                        ("example", "ascending")])
    exit_layers = tuple(int(x) for x in np.unique(table["exit_layer"].to_numpy()))
    epochs = len(np.unique(table["epoch"].to_numpy()))
    shape = (epochs, len(exit_layers), examples.num_rows)
    if table.num_rows != np.prod(shape):
        raise ValueError(f"{folder / EPOCHS_FILE}: {table.num_rows} rows, expected epochs x exits x examples = "
                         f"{' x '.join(map(str, shape))}")
    dynamics = TrainingDynamics(exit_layers, table["gold_probability"].to_numpy().reshape(shape),
                                table["correct"].to_numpy(zero_copy_only=False).reshape(shape))
    return dynamics, examples, fields


def select_training_data(directory: str | Path, selection: SelectionConfig, out: str | Path,
                         overwrite: bool = False) -> tuple[int, int]:
    """Writes the examples ``selection`` picks from a model directory's dynamics to ``out``; returns (rows
    written, training set size). An existing ``out`` is replaced only with ``overwrite``, and never when it is
    the training file the examples came from, or in the training folder they came from."""
    dynamics, examples, fields = read_dynamics(directory)
    out, source = Path(out), Path(fields.get("source") or "")
    if out.exists() and source.exists() and out.samefile(source):
        raise ValueError(f"{out} is the training file these examples come from: write the selection elsewhere")
    if source.is_dir() and out.resolve().is_relative_to(source.resolve()):  # a training folder is read whole
        raise ValueError(f"{out} is inside the training folder these examples come from ({source}), whose files "
                         f"it would replace or join: write the selection elsewhere")
    if out.exists() and not overwrite:
        raise ValueError(f"{out} exists: give another --out, or --overwrite to replace it")
    stats = data_map(dynamics, selection.exit_layer)
    rows = select_region(stats, selection.region, selection.fraction, selection.seed)
    return write_selection(examples, fields, rows, stats, out), examples.num_rows


def write_selection(examples: pa.Table, fields: dict, rows: np.ndarray, stats: DataMap, out: str | Path) -> int:
    """Writes the chosen training examples to ``out`` (.jsonl or .parquet; not CSV, whose readers turn texts
    such as "NA" or "null" into missing values) under the training file's own
    field names, so ``rightsize train`` reads it with the same flags; adds each example's row in the original
    file and its statistics. Returns the number of rows written."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".jsonl", ".parquet"):
        raise ValueError(f"{out}: give a .jsonl or .parquet file")
    rename = {"text": fields.get("text_field") or "text", "pair": fields.get("pair_field") or "pair",
              "label": fields.get("label_field") or "label"}
    added = ("example", "confidence", "variability", "correctness")  # written beside the training fields
    clashes = sorted(set(rename.values()) & set(added))
    if clashes:
        raise ValueError(f"the training field(s) {clashes} have the name of a column select adds ({', '.join(added)}): "
                         "rename the field in the training file and train again")
    chosen = examples.take(pa.array(rows))
    chosen = chosen.rename_columns([rename.get(name, name) for name in chosen.column_names])
    for name, values in (("confidence", stats.confidence), ("variability", stats.variability),
                         ("correctness", stats.correctness)):
        chosen = chosen.append_column(name, pa.array(values[rows]))
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        pq.write_table(chosen, out)
    else:
        with open(out, "w", encoding="utf-8") as f:
            for record in chosen.to_pylist():
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return chosen.num_rows


def write_data_map(directory: str | Path, out: str | Path, exit_layer: int | None = None, top: int = 10) -> dict:
    """``rightsize datamap``: writes datamap.png, datamap.md (the ``top`` most ambiguous, easiest and hardest
    examples with their text) and datamap.parquet (every example's statistics) to ``out``; returns the paths
    and the region sizes used in the plot's title."""
    from ops.plots import plot_data_map  # matplotlib only where a plot is drawn

    dynamics, examples, _ = read_dynamics(directory)
    stats = data_map(dynamics, exit_layer)
    layer = dynamics.exit_layers[dynamics.exit_index(exit_layer)]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    epochs, _, n = dynamics.gold_probability.shape
    title = f"data map of {n} training examples, exit at layer {layer}, {epochs} epochs"
    plot_data_map(stats.confidence, stats.variability, stats.correctness, out / "datamap.png", title)
    table = examples.append_column("confidence", pa.array(stats.confidence)) \
        .append_column("variability", pa.array(stats.variability)) \
        .append_column("correctness", pa.array(stats.correctness))
    pq.write_table(table, out / "datamap.parquet")
    texts, labels = examples["text"].to_pylist(), examples["label"].to_pylist()
    pairs = examples["pair"].to_pylist() if "pair" in examples.column_names else None
    lines = [f"# {title}", "", "![data map](datamap.png)", ""]
    for region, why in (("ambiguous", "highest variability"), ("easy", "highest confidence"),
                        ("hard", "lowest confidence")):
        rows = region_order(stats, region)[:top]
        lines += [f"## {region} ({why})", "", "| example | label | confidence | variability | correctness | text |",
                  "|---:|---|---:|---:|---:|---|"]
        for i in rows:
            text = texts[i] if pairs is None else f"{texts[i]} ‖ {pairs[i]}"
            lines.append(f"| {i} | {_cell(labels[i])} | {stats.confidence[i]:.3f} | {stats.variability[i]:.3f} | "
                         f"{stats.correctness[i]:.2f} | {_cell(text)} |")
        lines.append("")
    (out / "datamap.md").write_text("\n".join(lines), encoding="utf-8")
    return {"plot": out / "datamap.png", "table": out / "datamap.md", "statistics": out / "datamap.parquet",
            "examples": n, "epochs": epochs, "exit_layer": layer}


def _cell(text: str, limit: int = 200) -> str:
    """One Markdown table cell: one line, Markdown and HTML characters escaped, long texts cut."""
    text = " ".join(str(text).split())
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    for char, escaped in (("\\", "\\\\"), ("|", "\\|"), ("<", "&lt;"), (">", "&gt;")):
        text = text.replace(char, escaped)
    return text
