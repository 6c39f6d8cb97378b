"""Labelled examples for fine-tuning and calibration, read through Hugging Face ``datasets``.

Local JSONL/JSON, CSV and Parquet files are read with the matching ``datasets`` builder; anything else is
taken as a hub dataset name (``name`` or ``name:split``), which needs the network (or the local cache).
"""

from __future__ import annotations

import codecs
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
    with tempfile.TemporaryDirectory(prefix="rightsize-data-") as cache:
        return _read(source, text_field, pair_field, label_field, split, limit, cache)


def _read(source, text_field, pair_field, label_field, split, limit, cache: str) -> Examples:
    import datasets  # heavy import, only needed here

    suffix = Path(source).suffix.lower()
    if suffix in _BUILDERS:
        if not Path(source).is_file():
            raise FileNotFoundError(f"{source}: no such file")
        empty = ValueError(f"{source}: no examples in the file")
        if _empty(source):
            raise empty
        try:
            data = datasets.load_dataset(_BUILDERS[suffix], data_files=source, split="train", cache_dir=cache)
        except ValueError as e:  # a CSV header alone: 'Instruction "train" corresponds to no data!'
            raise empty if "corresponds to no data" in str(e) else e from None
        except datasets.exceptions.DatasetGenerationError as e:  # what the builder could not read, in one line
            raise ValueError(f"{source}: could not be read: {e.__cause__ or e}") from e
    else:
        name, _, hub_split = source.partition(":")
        if Path(name).expanduser().is_file():
            raise ValueError(f"{source}: unknown file type; give a {', '.join(_BUILDERS)} file")
        if Path(name).expanduser().exists():  # a local folder of data files
            data = datasets.load_dataset(str(Path(name).expanduser()), split=hub_split or split, cache_dir=cache)
        else:
            data = _load_hub_dataset(source, name, hub_split or split)
    if limit is not None:
        data = data.select(range(min(limit, len(data))))
    for field in (text_field, label_field) + ((pair_field,) if pair_field else ()):
        if field not in data.column_names:
            raise ValueError(f"{source}: no field {field!r}; fields are {data.column_names}")

    label_feature = data.features[label_field]
    names = getattr(label_feature, "names", None)  # ClassLabel: ints that stand for names
    labels = [names[v] if names is not None and isinstance(v, int) else v for v in data[label_field]]
    texts = _check_texts(data[text_field], source, text_field)
    pairs = _check_texts(data[pair_field], source, pair_field) if pair_field else None
    for row, label in enumerate(labels, start=1):
        if label is None or (isinstance(label, str) and not label.strip()):
            raise ValueError(f"{source}: record {row}: field {label_field!r} is empty")
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


def label_names(*sets: Examples) -> list[str]:
    """The sorted label names seen in ``sets`` (so class ids do not depend on row order)."""
    return sorted({label for examples in sets for label in examples.labels})
