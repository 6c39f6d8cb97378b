"""Input documents for labelling: parsing records and reading files, with a dead letter for every input that
cannot be labelled. Every record read becomes exactly one ``Document`` or one ``DeadLetter``.

Formats, chosen by file extension (a trailing .gz/.bz2/.xz/.zst is decompressed by fsspec):
    .jsonl .ndjson .json   one JSON object per line
    .csv                   header row, RFC 4180 quoting (quoted newlines are fine)
    .parquet               columns
    .txt (anything else)   one document per line, the line is the text
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Iterator

import fsspec

_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
RAW_LIMIT = 10_000  # characters of a bad record kept in its dead letter (a 1 MB line is cut here)


@dataclass(frozen=True)
class InputFields:
    """Which fields of an input record hold what. ``id_field`` may be absent from records."""

    text_field: str = "text"
    pair_field: str | None = None
    id_field: str = "id"


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    pair: str | None
    source: str  # file URL
    position: int  # 1-based line/row in the file

    def dead_letter(self, reason: str) -> "DeadLetter":
        """For a document that parsed but then failed (e.g. in inference)."""
        raw = {"id": self.id, "text": self.text[:RAW_LIMIT]} | ({"pair": self.pair} if self.pair is not None else {})
        return DeadLetter(self.source, self.position, _raw(raw), reason)


@dataclass(frozen=True)
class DeadLetter:
    source: str  # file URL
    position: int  # 1-based line (JSONL, text), row (CSV, Parquet) in the file
    raw: str  # the record as read, cut at RAW_LIMIT characters
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "position": self.position, "raw": self.raw, "reason": self.reason}


def file_format(url: str) -> str:
    """"json", "csv", "parquet" or "text" from the file name."""
    suffixes = [s.lower() for s in PurePosixPath(url).suffixes]
    while suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes.pop()
    last = suffixes[-1] if suffixes else ""
    if last in JSON_SUFFIXES:
        return "json"
    if last in (".csv", ".parquet"):
        return last[1:]
    return "text"


def derived_id(source: str, position: int) -> str:
    """Stable id for a record without one: the file and the record's position in it."""
    return f"{source}:{position}"


def _raw(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text[:RAW_LIMIT]


def _text_problem(value: Any, field: str) -> str | None:
    if value is None:
        return f"field {field!r} is missing or null"
    if not isinstance(value, str):
        return f"field {field!r} is {type(value).__name__}, not text"
    if not value.strip():
        return f"field {field!r} is empty"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: bytes that were not valid UTF-8 in the file
        return f"field {field!r} is not valid UTF-8"
    return None


def parse_record(record: Any, source: str, position: int, fields: InputFields) -> Document | DeadLetter:
    """A decoded record (a dict) -> Document, or a DeadLetter saying why it cannot be labelled."""
    if not isinstance(record, dict):
        return DeadLetter(source, position, _raw(record), f"record is {type(record).__name__}, not an object")
    for field in (fields.text_field, fields.pair_field):
        if field is not None:
            problem = _text_problem(record.get(field), field)
            if problem:
                return DeadLetter(source, position, _raw(record), problem)
    doc_id = record.get(fields.id_field)
    if doc_id is None or (isinstance(doc_id, str) and not doc_id.strip()):
        doc_id = derived_id(source, position)
    elif not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
        return DeadLetter(source, position, _raw(record), f"field {fields.id_field!r} is {type(doc_id).__name__}")
    pair = record[fields.pair_field] if fields.pair_field else None
    return Document(str(doc_id), record[fields.text_field], pair, source, position)


def _decode(line: bytes, source: str, position: int) -> str | DeadLetter:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as e:
        return DeadLetter(source, position, line.decode("utf-8", "replace")[:RAW_LIMIT], f"invalid UTF-8: {e.reason}")


def parse_json_line(line: bytes, source: str, position: int, fields: InputFields) -> Document | DeadLetter:
    text = _decode(line, source, position)
    if isinstance(text, DeadLetter):
        return text
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        return DeadLetter(source, position, text[:RAW_LIMIT], f"invalid JSON: {e.msg} at column {e.colno}")
    return parse_record(record, source, position, fields)


def parse_text_line(line: bytes, source: str, position: int, fields: InputFields) -> Document | DeadLetter:
    """Plain text: the line is the document; its id is derived from file and line."""
    text = _decode(line, source, position)
    return text if isinstance(text, DeadLetter) else parse_record({fields.text_field: text}, source, position, fields)


def _lines(url: str) -> Iterator[tuple[int, bytes]]:
    with fsspec.open(url, "rb", compression="infer") as f:
        for position, line in enumerate(f, start=1):
            line = line.rstrip(b"\r\n")
            if line.strip():  # blank lines are layout, not records
                yield position, line


def read_file(url: str, fields: InputFields) -> Iterator[Document | DeadLetter]:
    """Every record of one file, as Documents and DeadLetters in file order."""
    kind = file_format(url)
    if kind in ("json", "text"):
        parse = parse_json_line if kind == "json" else parse_text_line
        for position, line in _lines(url):
            yield parse(line, url, position, fields)
    elif kind == "csv":
        with fsspec.open(url, "rb", compression="infer") as f:
            # surrogateescape keeps invalid bytes as lone surrogates, which _text_problem reports per row.
            text = io.TextIOWrapper(f, encoding="utf-8", errors="surrogateescape", newline="")
            for position, row in enumerate(csv.DictReader(text), start=1):
                yield parse_record(row, url, position, fields)
    else:
        yield from _read_parquet(url, fields)


def _read_parquet(url: str, fields: InputFields) -> Iterator[Document | DeadLetter]:
    import pyarrow.parquet as pq

    with fsspec.open(url, "rb") as f:
        parquet = pq.ParquetFile(f)
        wanted = [c for c in (fields.id_field, fields.text_field, fields.pair_field) if c in parquet.schema_arrow.names]
        position = 0
        for batch in parquet.iter_batches(batch_size=4096, columns=wanted):
            for record in batch.to_pylist():
                position += 1
                yield parse_record(record, url, position, fields)


def expand_glob(pattern: str) -> list[str]:
    """The file URLs a glob (or a single path/URL) matches, sorted; fails when it matches nothing."""
    fs, _ = fsspec.core.url_to_fs(pattern)
    paths = sorted(p for p in fs.glob(pattern) if fs.isfile(p))
    if not paths:
        raise FileNotFoundError(f"input {pattern!r} matches no file")
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return [p if protocol == "file" else f"{protocol}://{p.lstrip('/')}" for p in paths]
