"""Labelled examples for fine-tuning and calibration, read through Hugging Face ``datasets``.

Local JSONL/JSON, CSV and Parquet files are read with the matching ``datasets`` builder; anything else is
taken as a hub dataset name (``name`` or ``name:split``), which needs the network (or the local cache).
"""

from __future__ import annotations

import codecs
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ops.quiet import quiet

_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class Examples:
    texts: list[str]
    pairs: list[str] | None  # second segment of text-pair tasks (NLI), else None
    labels: list[str]  # label names as strings
    source: str
    fields: tuple[str, str | None, str] = ("text", None, "label")  # the source's text, pair and label fields

    def __len__(self) -> int:
        return len(self.texts)

    def label_ids(self, label_names: Sequence[str]) -> list[int]:
        index = {name: i for i, name in enumerate(label_names)}
        unknown = sorted(set(self.labels) - set(index))
        if unknown:
            raise ValueError(f"{self.source}: labels {unknown[:5]} are not among the model's {list(label_names)}")
        return [index[name] for name in self.labels]


def load_examples(
    source: str,
    text_field: str = "text",
    pair_field: str | None = None,
    label_field: str = "label",
    split: str = "train",
    limit: int | None = None,
) -> Examples:
    """Reads ``source`` into ``Examples``; fails with the file, record (1-based, counting records: blank lines
    and a CSV header are not records) and field named on a bad record, and on a file with no examples.

    Local files are prepared in a temporary ``datasets`` cache, removed once they are read: ``datasets``' own
    cache knows a local file by its path, size and modification time, so a file rewritten in place with the
    same size and time (a label fixed, then ``cp -p``) would come back as it was."""
    import datasets

    # "Generating train split" of a local file read in seconds is noise in every log; a hub download keeps its bar
    shown = datasets.is_progress_bar_enabled() and Path(source.partition(":")[0]).expanduser().exists()
    if shown:
        datasets.disable_progress_bars()
    try:
        with tempfile.TemporaryDirectory(prefix="rightsize-data-") as cache:
            return _read(source, text_field, pair_field, label_field, split, limit, cache)
    finally:
        if shown:
            datasets.enable_progress_bars()


def _read(source, text_field, pair_field, label_field, split, limit, cache: str) -> Examples:
    import datasets  # heavy import, only needed here

    suffix = Path(source).suffix.lower()
    if suffix in _BUILDERS:
        if not Path(source).is_file():
            raise FileNotFoundError(f"{source}: no such file")
        empty = ValueError(f"{source}: no examples in the file")
        if _empty(source):
            raise empty
        # CSV: "NA", "None", "null" are texts and class names here, not pandas' missing values
        options = {"keep_default_na": False} if _BUILDERS[suffix] == "csv" else {}
        try:
            data = datasets.load_dataset(_BUILDERS[suffix], data_files=source, split="train", cache_dir=cache,
                                         **options)
        except (ValueError, datasets.exceptions.DatasetGenerationError) as e:
            if "corresponds to no data" in str(e):  # a CSV header alone
                raise empty from None
            # what the builder could not read, in one line, with the line at fault where it can be found
            builder = _BUILDERS[suffix]
            where = _first_bad_line(source, json_lines=builder == "json") if builder != "parquet" else None
            raise ValueError(f"{source}: " + (where or f"could not be read: {e.__cause__ or e}")) from e
    else:
        name, _, hub_split = source.partition(":")
        if Path(name).expanduser().is_file():
            raise ValueError(f"{source}: unknown file type; give a {', '.join(_BUILDERS)} file")
        folder = Path(name).expanduser()
        if folder.exists():  # a local folder of data files, all of one kind (datasets would read one kind only)
            builder, files = _folder_split(folder, hub_split or split, source)
            options = {"keep_default_na": False} if builder == "csv" else {}
            try:
                data = datasets.load_dataset(builder, data_files={split: files}, split=split, cache_dir=cache,
                                             **options)
            except (ValueError, datasets.exceptions.DatasetGenerationError) as e:
                raise ValueError(f"{source}: could not be read: {e.__cause__ or e}") from e
        else:
            data = _load_hub_dataset(source, name, hub_split or split)
    if limit is not None:
        data = data.select(range(min(limit, len(data))))
    for field in (text_field, label_field) + ((pair_field,) if pair_field else ()):
        if field not in data.column_names:
            raise ValueError(f"{source}: no field {field!r}; fields are {data.column_names}")

    label_feature = data.features[label_field]
    names = getattr(label_feature, "names", None)  # ClassLabel: ints that stand for names
    try:  # Arrow keeps bytes that are not UTF-8 as they are, and fails when they become Python strings
        labels = [names[v] if names is not None and isinstance(v, int) else v for v in data[label_field]]
        texts = _check_texts(data[text_field], source, text_field)
        pairs = _check_texts(data[pair_field], source, pair_field) if pair_field else None
    except UnicodeDecodeError as e:
        where = _first_bad_line(source, json_lines=False) if _BUILDERS.get(suffix, "parquet") != "parquet" else None
        raise ValueError(f"{source}: {where or f'text that is not UTF-8: {e}'}") from None
    for row, label in enumerate(labels, start=1):
        if label is None or (isinstance(label, str) and not label.strip()):
            raise ValueError(f"{source}: record {row}: field {label_field!r} is empty")
        if not isinstance(label, (str, int, float)):  # a list or an object: not a class name
            raise ValueError(f"{source}: record {row}: field {label_field!r} is {type(label).__name__}, "
                             f"not a class name: {label!r:.60}")
    kinds = {isinstance(label, str) for label in labels}
    if len(kinds) > 1:  # "World" and 0 would be two classes, and 0 and "0" one
        first = next(row for row, label in enumerate(labels, start=1) if isinstance(label, str) != isinstance(labels[0], str))
        raise ValueError(f"{source}: field {label_field!r} mixes text and numbers (record 1: {labels[0]!r}, "
                         f"record {first}: {labels[first - 1]!r}): give every class name one way")
    return Examples(texts, pairs, [str(v) for v in labels], source, (text_field, pair_field, label_field))


def _empty(source: str) -> bool:
    """Whether a data file holds no records: a Parquet file of no rows, a text file of nothing but whitespace and
    a UTF-8 byte-order mark (read until its first other byte). ``datasets`` fails on these with StopIteration or
    a generation error."""
    if source.lower().endswith(".parquet"):
        import pyarrow
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(source).metadata.num_rows == 0
        except pyarrow.ArrowException as e:  # not Parquet, a cut footer
            raise ValueError(f"{source}: could not be read: {e}") from e
    with open(source, "rb") as f:
        return not any(chunk.replace(codecs.BOM_UTF8, b"").strip() for chunk in iter(lambda: f.read(1 << 20), b""))


def _first_bad_line(source: str, json_lines: bool) -> str | None:
    """"line N: <why>" for the first line of a text file that is not UTF-8 or, with ``json_lines``, not JSON;
    None when every line passes or the file is one JSON array (whose lines need not be JSON on their own)."""
    seen = False
    with open(source, "rb") as f:
        for number, raw in enumerate(f, start=1):
            line = raw.removeprefix(codecs.BOM_UTF8) if number == 1 else raw
            if not line.strip():
                continue
            if json_lines and not seen and line.lstrip().startswith(b"["):
                return None
            seen = True
            try:
                text = line.decode("utf-8")
                if json_lines:
                    json.loads(text)
            except UnicodeDecodeError as e:
                return f"line {number}: invalid UTF-8 (byte {e.object[e.start]:#04x} at position {e.start})"
            except json.JSONDecodeError as e:
                return f"line {number}: invalid JSON: {e.msg} at column {e.colno}"
    return None


def _folder_split(folder: Path, split: str, source: str) -> tuple[str, list[str]]:
    """(builder, files) of ``split`` ("train", "validation", "test") in a local folder of data files of one
    suffix, hidden ones (".name") skipped. Files named for two or more splits as datasets names them
    (train.jsonl, dev.jsonl, test-00001.jsonl...) are split so, and a file with no split name beside them is
    refused (datasets would drop it); otherwise the folder is one data set, read whole whatever the split
    (datasets alone would read only train.jsonl of train.jsonl and extra.jsonl)."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    folder = folder.absolute()  # datasets names the files it matches by absolute paths, compared with ours below
    found = [p for p in folder.rglob("*") if p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    if tsv := next((p for p in found if p.suffix.lower() == ".tsv"), None):  # datasets would read it comma-separated
        raise ValueError(f"{source}: {tsv.name} is TSV, which training does not read; give "
                         f"{', '.join(_BUILDERS)} files")
    files = sorted(str(p) for p in found if p.suffix.lower() in _BUILDERS)
    suffixes = sorted({Path(f).suffix.lower() for f in files})
    if len(suffixes) != 1:  # .json beside .jsonl too: a dataset_info.json is not training data
        raise ValueError(f"{source}: a folder must hold data files of one kind ({', '.join(_BUILDERS)}); "
                         f"it holds {' and '.join(suffixes) or 'none'}")
    named = {}  # split -> its files of ours (datasets' patterns may also match other kinds, hidden files)
    for split_name, matched in DataFilesDict.from_patterns(get_data_patterns(str(folder)), str(folder)).items():
        if ours := sorted(set(map(str, matched)) & set(files)):
            named[str(split_name)] = ours
    if len(named) <= 1:  # no split names, or one split's only: one data set, read whole
        return _BUILDERS[suffixes[0]], files
    unnamed = sorted(set(files) - set().union(*named.values()))
    if unnamed:
        raise ValueError(f"{source}: {', '.join(Path(f).name for f in unnamed[:3])} has no split name while other "
                         f"files are named for {' and '.join(named)}: datasets would drop it; name every file for "
                         f"its split (train, dev, test) or give a folder of one split")
    if split not in named:
        raise ValueError(f"{source}: no {split} file among its files named for "
                         f"{', '.join(f'{k} ({len(v)})' for k, v in named.items())}")
    return _BUILDERS[suffixes[0]], named[split]


def _load_hub_dataset(source: str, name: str, split: str):
    """``name`` from the Hub (or its local cache); a FileNotFoundError naming ``source`` when there is none."""
    import datasets
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:  # './x', '/x', 'a/b/c' cannot be hub names: a mistyped local path
        raise FileNotFoundError(f"{source}: no such file or directory (known file types: "
                                f"{', '.join(_BUILDERS)})") from None
    try:
        with quiet("huggingface_hub"):  # offline, it warns about each failed request before the error we give
            return datasets.load_dataset(name, split=split)
    except (ConnectionError, datasets.exceptions.DatasetNotFoundError) as e:  # offline, or no such dataset
        raise FileNotFoundError(f"{source}: no such file or directory, nor a dataset the Hugging Face Hub "
                                f"serves ({str(e).splitlines()[0]})") from e


def _check_texts(values, source: str, field: str) -> list[str]:
    """A column's values as a list: ``datasets`` hands a lazy column over its (temporary) Arrow file."""
    values = list(values)
    for row, value in enumerate(values, start=1):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{source}: record {row}: field {field!r} must be non-empty text, got {value!r:.60}")
    return values


def check_seed(seed: int) -> None:
    """A seed for shuffling and splitting examples: what numpy and torch both take."""
    if not (isinstance(seed, int) and 0 <= seed < 2**32):
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")


def label_names(*sets: Examples) -> list[str]:
    """The sorted label names seen in ``sets`` (so class ids do not depend on row order)."""
    return sorted({label for examples in sets for label in examples.labels})
