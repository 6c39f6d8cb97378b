"""Input documents for labelling: parsing records and reading files, with a dead letter for every input that
cannot be labelled. Every record read becomes exactly one ``Document`` or one ``DeadLetter``, whatever the
bytes are; nothing in here raises on a record or on a file that breaks off part-way.

Formats, chosen by file extension, except that content wins where it is unambiguous (a gzip, zstd, bzip2 or
xz stream or a Parquet file is read as such whatever its name):
    .jsonl .ndjson .json   one JSON object per line; a .json file whose first visible character (in its first
                           SNIFF_BYTES) is "[" is one JSON array of objects, read an element at a time
    .csv                   header row, RFC 4180 quoting (quoted newlines are fine), no field size limit
    .tsv                   header row, tab-separated, no quoting (IANA text/tab-separated-values): a row a line
    .parquet               columns
    .txt (anything else)   one document per line, the line is the text
Compressed streams are recognised by their magic bytes and decompressed by fsspec. Text is UTF-8; a
byte-order mark (UTF-8, UTF-16 or UTF-32) is honoured and removed, and UTF-16 or UTF-32 without one is
recognised by its NUL bytes (``text_encoding``). Line ends may be LF, CRLF or CR, in every text format (a lone
CR inside a TSV field or an unquoted CSV field ends its row too).
Not read: a zip archive, and binary data (NUL bytes in UTF-8 text): each is one dead letter for the file.

Dead letters keep the raw record losslessly: bytes that are not valid UTF-8 are kept as lone surrogates
(Python's "surrogateescape"), which ``dead_letter_line`` writes as JSON ``\\udcXX`` escapes.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import sys
import unicodedata
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import Any, Callable, Iterable, Iterator, Sequence

import fsspec

_COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd"}
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
REASON_LIMIT = 500  # characters of a dead letter's reason (the raw record is never cut)
_CUT_ESCAPE = re.compile(r"\\(u[0-9a-f]{0,3}|x[0-9a-f]?)?$")  # a \udcXX or \xNN escape cut short
_CSV_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)  # csv's default, 131,072 characters, rejects long documents
_BOMS = [(codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")]  # UTF-32 LE starts like UTF-16 LE


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
    position: int  # 1-based line (JSON Lines, text), element (a JSON array) or row (CSV, Parquet) in the file

    def dead_letter(self, reason: str) -> "DeadLetter":
        """For a document that parsed but then failed (e.g. in inference)."""
        raw = {"id": self.id, "text": self.text} | ({"pair": self.pair} if self.pair is not None else {})
        return DeadLetter(self.source, self.position, _raw(raw), reason)


def model_inputs(docs: Sequence[Document]) -> tuple[list[str], list[str] | None]:
    """The texts and second segments that ``EarlyExitClassifier.predict`` takes (None: the documents have no
    pairs; a document read with a pair field always has one, or it is a dead letter)."""
    return [d.text for d in docs], [d.pair for d in docs] if docs and docs[0].pair is not None else None


@dataclass(frozen=True)
class DeadLetter:
    source: str  # file URL
    position: int  # 1-based line (JSONL, text), element (JSON array), row (CSV, Parquet); 0: a CSV file's header
    raw: str  # the record as read, whole; invalid bytes as lone surrogates
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "position": self.position, "raw": self.raw, "reason": one_line(self.reason)}


def dead_letter_line(letter: dict) -> str:
    """One JSON line for a dead letter that always encodes as UTF-8: readable non-ASCII text where possible,
    ``\\uXXXX`` escapes (still lossless, and valid JSON) where the record holds lone surrogates."""
    line = json.dumps(letter, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(letter, ensure_ascii=True)
    return line


def one_line(text: str) -> str:
    """A reason as one readable line: whitespace runs collapsed, UTF-8 safe (lone surrogates as ``\\udcXX``), and
    then cut at REASON_LIMIT characters."""
    text = re.sub(r"\s+", " ", text).strip().encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) <= REASON_LIMIT:
        return text
    return _CUT_ESCAPE.sub("", text[: REASON_LIMIT - 3]) + "..."  # no half an escape before the dots


def _suffix(url: str) -> str:
    """The file name's last suffix that does not name a compression, lower-cased (".jsonl" of "a.JSONL.gz")."""
    suffixes = [s.lower() for s in PurePosixPath(url).suffixes]
    while suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def file_format(url: str) -> str:
    """"json", "csv", "tsv", "parquet" or "text" from the file name."""
    last = _suffix(url)
    if last in JSON_SUFFIXES:
        return "json"
    if last in (".csv", ".tsv", ".parquet"):
        return last[1:]
    return "text"


def derived_id(source: str, position: int) -> str:
    """Stable id for a record without one: the file and the record's position in it."""
    return f"{source}:{position}"


def _raw(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=repr)


def _is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
        return True
    except UnicodeEncodeError:  # lone surrogates: a "\ud800" JSON escape, or bytes that were not UTF-8
        return False


def _visible(c: str) -> bool:
    """Not whitespace, a control, format or private-use character (zero-width space, BOM, U+E000...): characters
    a BERT tokenizer drops. Unassigned ones (emoji newer than Python's Unicode tables) count as visible: the
    tokenizer keeps them, as [UNK]."""
    return not c.isspace() and unicodedata.category(c) not in ("Cc", "Cf", "Co")


def _text_problem(value: Any, field: str) -> str | None:
    if value is None:
        return f"field {field!r} is missing or null"
    if not isinstance(value, str):
        return f"field {field!r} is {type(value).__name__}, not text"
    if not value.strip():
        return f"field {field!r} is empty"
    if not _is_utf8(value):
        return f"field {field!r} is not valid UTF-8 (lone surrogate or undecodable bytes)"
    if not any(_visible(c) for c in value):  # stops at the first visible character
        return (f"field {field!r} has no visible character (only spaces, control, format or private-use characters "
                f"such as U+200B)")
    return None


def _as_text(value: Any) -> Any:
    """Parquet BINARY columns written without a string annotation hold UTF-8 text as bytes."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value


def parse_record(record: Any, source: str, position: int, fields: InputFields) -> Document | DeadLetter:
    """A decoded record (a dict) -> Document, or a DeadLetter saying why it cannot be labelled."""
    if not isinstance(record, dict):
        return DeadLetter(source, position, _raw(record), f"record is {type(record).__name__}, not an object")
    text, pair = _as_text(record.get(fields.text_field)), _as_text(record.get(fields.pair_field or ""))
    for field, value in ((fields.text_field, text), (fields.pair_field, pair)):
        if field is not None:
            problem = _text_problem(value, field)
            if problem:
                return DeadLetter(source, position, _raw(record), problem)
    doc_id = _as_text(record.get(fields.id_field))
    if doc_id is None or (isinstance(doc_id, str) and not doc_id.strip()):
        doc_id = derived_id(source, position)
    elif isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
        return DeadLetter(source, position, _raw(record),
                          f"field {fields.id_field!r} is {type(doc_id).__name__}; ids must be text or integers")
    elif isinstance(doc_id, str) and not _is_utf8(doc_id):
        return DeadLetter(source, position, _raw(record), f"field {fields.id_field!r} is not valid UTF-8")
    return Document(str(doc_id), text, pair if fields.pair_field else None, source, position)


def _undecodable(line: str, source: str, position: int) -> DeadLetter | None:
    if _is_utf8(line):
        return None
    return DeadLetter(source, position, line, "invalid UTF-8: undecodable bytes in the line")


def parse_json_line(line: str, source: str, position: int, fields: InputFields) -> Document | DeadLetter:
    """A line read with surrogateescape -> Document or DeadLetter."""
    bad = _undecodable(line, source, position)
    if bad:
        return bad
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        return DeadLetter(source, position, line, f"invalid JSON: {e.msg} at column {e.colno} (one JSON object "
                                                  f"per line, or per element of an array, expected)")
    return _as_read(parse_record(record, source, position, fields), line)


def _as_read(result: Document | DeadLetter, raw: str) -> Document | DeadLetter:
    """A dead letter of a parsed record keeps the record as read (``raw``), not its parsed value written again
    (which would respell numbers and drop repeated keys)."""
    return replace(result, raw=raw) if isinstance(result, DeadLetter) else result


def parse_text_line(line: str, source: str, position: int, fields: InputFields) -> Document | DeadLetter:
    """Plain text: the line is the document; its id is derived from file and line."""
    return _undecodable(line, source, position) or _as_read(
        parse_record({fields.text_field: line}, source, position, fields), line)


_WIDE = [("utf-32-le", 4, (1, 2, 3)), ("utf-32-be", 4, (0, 1, 2)), ("utf-16-le", 2, (1,)), ("utf-16-be", 2, (0,))]
# Magic bytes of the compressed streams fsspec reads; bzip2's "BZh" alone is also how a text can start, so its
# block size digit and the first block's (or the empty stream's) signature are required as well.
_MAGIC = [(re.compile(rb"\x1f\x8b"), "gzip"), (re.compile(rb"\x28\xb5\x2f\xfd"), "zstd"),
          (re.compile(rb"BZh[1-9](1AY&SY|\x17rE8P\x90)"), "bz2"), (re.compile(rb"\xfd7zXZ\x00"), "xz")]
SNIFF_BYTES = 4096


def text_encoding(head: bytes) -> str:
    """A text file's encoding from its first bytes (up to SNIFF_BYTES): a byte-order mark if there is one;
    else UTF-16 or UTF-32 when at least 90% of the sample's code units have the NUL bytes that these encodings
    put around ASCII characters (as RFC 4627 section 3 detects JSON's encoding) and the sample decodes (lone
    surrogates allowed: they fail only their record); else UTF-8. Text without ASCII in its first bytes (CJK
    in UTF-16, say) needs a BOM."""
    bom = next((name for bom, name in _BOMS if head.startswith(bom)), None)
    if bom:
        return bom
    for name, width, zeros in _WIDE:
        units = [head[i:i + width] for i in range(0, len(head) - width + 1, width)]
        if len(units) < 2 or sum(all(u[z] == 0 for z in zeros) and any(u) for u in units) < 0.9 * len(units):
            continue
        try:
            codecs.getincrementaldecoder(name)("surrogatepass").decode(head[:len(units) * width], final=False)
        except UnicodeDecodeError:
            continue
        return name
    return "utf-8"


@dataclass(frozen=True)
class _Sniffed:
    compression: str | None
    parquet: bool
    encoding: str
    array: bool  # the text's first visible character is "[": a JSON file holding one array


def _sniff(url: str) -> _Sniffed:
    """What the first bytes say: a gzip, zstd, bzip2, xz or Parquet file is read as such whatever its name, the
    text encoding is detected (``text_encoding``), and so is a text that opens a JSON array. Raises on a zip
    archive and on binary data (NUL bytes in UTF-8), which ``read_file`` turns into the file's one dead letter."""
    with fsspec.open(url, "rb") as f:
        head = f.read(SNIFF_BYTES)
    if head[:4] == b"PAR1":
        return _Sniffed(None, True, "utf-8", False)
    compression = next((name for magic, name in _MAGIC if magic.match(head)), None)
    if compression is not None:
        with fsspec.open(url, "rb", compression=compression) as f:
            head = _readable_head(f)
    if head.startswith(b"PK\x03\x04"):
        raise ValueError("a zip archive (.zip, .xlsx, .docx...), which is not read: unzip it, or export the text "
                         "as JSON Lines, CSV, TSV or Parquet (gzip, zstd, bzip2 or xz compression is read)")
    encoding = text_encoding(head)
    if encoding.startswith("utf-8") and b"\x00" in head:  # as git and grep tell binary from text
        raise ValueError(f"binary data (NUL bytes in the first {len(head):,} bytes), not text, JSON Lines, CSV, TSV "
                         "or Parquet (UTF-16 or UTF-32 text that is not mostly ASCII needs a byte-order mark)")
    start = head.decode(encoding, errors="replace").lstrip(_JSON_SPACE)[:1]  # as _JsonArray will see it
    return _Sniffed(compression, False, encoding, start == "[")


def _readable_head(f) -> bytes:
    """Up to SNIFF_BYTES of a decompressed stream, or what could be read of them when it breaks off sooner (a
    truncated gzip): the records before the break are then read as usual, and the break ends the file's records
    as a dead letter (``read_file``)."""
    head = b""
    try:
        while len(head) < SNIFF_BYTES and (piece := f.read(min(512, SNIFF_BYTES - len(head)))):
            head += piece
    except Exception:  # EOFError, LZMAError, ZstdError...: the read that follows meets it again
        pass
    return head


def _string_end(text: str, start: int) -> int:
    """The index just past the JSON string that opens at ``text[start]``, or -1 when ``text`` ends inside it
    (str.find per quote, not a regex: a regex keeps state for every escape of a long string)."""
    quote = start
    while (quote := text.find('"', quote + 1)) != -1:
        escapes = 0
        while text[quote - 1 - escapes] == "\\":
            escapes += 1
        if escapes % 2 == 0:  # not itself escaped
            return quote + 1
    return -1


def _lines(text: io.TextIOWrapper) -> Iterator[tuple[int, str]]:
    for position, line in enumerate(text, start=1):
        line = line.rstrip("\n")
        if line.strip():  # blank lines are layout, not records
            yield position, line


MAX_ROW_LINES = 1000  # lines a CSV row may span (inside quotes); a row that runs longer is taken for a stray quote


class _LineTap:
    """The lines of a text stream, for csv.reader: keeps the lines of the row being parsed (``row_lines``),
    ends a row that reaches MAX_ROW_LINES lines (csv then returns what it has, as at the end of the file), and
    lets lines be put back in front of the stream to be parsed again."""

    def __init__(self, lines: Iterable[str]):
        self._lines = iter(lines)
        self._put_back: list[str] = []  # reversed: the next line to give is the last
        self.row_lines: list[str] = []
        self.ended = False  # the stream ran out while csv wanted more
        self.over_budget = False  # the row reached MAX_ROW_LINES lines and was cut there

    def __iter__(self) -> "_LineTap":
        return self

    def __next__(self) -> str:
        if len(self.row_lines) >= MAX_ROW_LINES:
            self.over_budget = True
            raise StopIteration
        try:
            line = self._put_back.pop() if self._put_back else next(self._lines)
        except StopIteration:
            self.ended = True
            raise
        self.row_lines.append(line)
        return line

    def next_row(self) -> None:
        self.row_lines, self.ended, self.over_budget = [], False, False

    def put_back(self, lines: list[str]) -> None:
        self._put_back.extend(reversed(lines))


_SPACE_AFTER_QUOTE = re.compile(r'"[ \t]+(?=,|\r|\n|$)')  # `"text" ,`: lenient readers accept it, strict ones not


def _stray_quote(lines: list[str], ended: bool) -> bool:
    """Whether a row read leniently from ``lines`` hides a stray quote: a quote left open at the end of the
    input (or of the row's line budget), or, in a row that spans lines, one that closes where no field ends."""
    if len(lines) < 2 and not ended:
        return False
    try:
        list(csv.reader(_SPACE_AFTER_QUOTE.sub('"', "".join(lines)).splitlines(keepends=True), strict=True))
    except csv.Error as e:
        return len(lines) > 1 or "unexpected end of data" in str(e)
    return False


def _csv_records(text: io.TextIOWrapper, url: str, fields: InputFields,
                 tsv: bool = False) -> Iterator[Document | DeadLetter]:
    """Rows of a CSV file (``url`` is the printable source), or with ``tsv`` of a tab-separated file, which
    as IANA's text/tab-separated-values has no quoting: one line is one row, quotes are text, and none of
    what follows about quotes applies.

    A row with more fields than the header is a dead letter (an unquoted comma in the text would otherwise cut
    the text short). A stray quote would make csv's lenient reader swallow the lines after it into one field,
    up to the next quote or to the end of the file: such a row (``_stray_quote``) becomes a dead letter holding
    its first line, and the lines after that are read again as rows. A row that runs over MAX_ROW_LINES lines
    becomes one dead letter holding all of them."""
    csv.field_size_limit(_CSV_FIELD_LIMIT)
    kind = "TSV" if tsv else "CSV"  # in reasons
    tap = _LineTap(text)
    reader = csv.reader(tap, delimiter="\t", quoting=csv.QUOTE_NONE) if tsv else csv.reader(tap)
    header: list[str] | None = None
    position = 0  # data rows, 1-based; the header is not counted
    while True:
        tap.next_row()
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:  # the reader goes on with the next line
            position += 1
            yield DeadLetter(url, position, "".join(tap.row_lines), f"unreadable {kind} row: {e}")
            continue
        lines = tap.row_lines
        if tap.over_budget:  # one dead letter for the whole span: re-reading it as rows would cost time quadratic
            position += 1     # in the number of stray quotes, and would cut a legitimately long field into rows
            yield DeadLetter(url, position, "".join(lines), f"CSV row runs over {MAX_ROW_LINES} lines: a stray quote, "
                                                            f"or a quoted field too long to read (all its lines are kept here)")
            continue
        if not tsv and _stray_quote(lines, tap.ended):
            if header is None:  # the header itself: no row after it can be mapped to fields
                header = []
                yield DeadLetter(url, 0, lines[0], "CSV header has a stray quote")
            else:
                position += 1
                yield DeadLetter(url, position, lines[0], "CSV row has a stray quote: one never closed, or closed "
                                                          "where no field ends (the lines after it are read as rows)")
            tap.put_back(lines[1:])
            continue
        if not row:  # a blank line
            continue
        if header is None:
            header = row
            twice = [f for f in dict.fromkeys((fields.text_field, fields.pair_field, fields.id_field))
                     if f is not None and header.count(f) > 1]
            if twice:  # which column holds the text would be a guess: the rows go to dead letters instead
                header = []
                yield DeadLetter(url, 0, "".join(lines),
                                 f"{kind} header names {' and '.join(map(repr, twice))} more than once")
            continue
        position += 1
        if not header:
            yield DeadLetter(url, position, "".join(lines), f"no readable {kind} header to name this row's fields")
            continue
        if len(row) > len(header):
            yield DeadLetter(url, position, "".join(lines), f"row has {len(row)} fields, the header {len(header)}")
            continue
        yield _as_read(parse_record(dict(zip(header, row)), url, position, fields), "".join(lines))


_JSON_SPACE = " \t\r\n"
_VISIBLE_JSON = re.compile(r"[^ \t\r\n]")
_STRUCTURE = re.compile(r'["\[\]{},]')  # what a lenient scan of a JSON array looks at
ARRAY_CHUNK = 1 << 20  # characters a JSON array's buffer grows by, at least
READ_PIECE = 1024  # characters read at once, up to a line end: what a stream that breaks off loses with it
MAX_ELEMENT = 1 << 26  # characters one element of a JSON array may span


class _JsonArray:
    """The texts of one JSON array's elements, found by a lenient scan (strings, brackets, braces and commas
    only) and decoded afterwards one by one as records (``_records``): JSON that is wrong inside an element
    costs that element only. Read in pieces, without holding the whole text."""

    def __init__(self, text: io.TextIOBase):
        self._text, self._buffer, self._at = text, "", 0  # _at: the cursor in _buffer
        self._eof, self._error = False, None  # _error: raised once what was read before it is used

    def _fill(self) -> bool:
        """Appends at least ARRAY_CHUNK characters, and at least as many as are unread (so that scanning one
        long element costs linear time); False at the end of the text."""
        if self._error is not None:
            raise self._error
        pieces, size, wanted = [], 0, max(ARRAY_CHUNK, len(self._buffer) - self._at)
        try:
            while size < wanted and (piece := self._text.readline(READ_PIECE)):
                pieces.append(piece)
                size += len(piece)
            self._eof = size < wanted
        except Exception as e:  # a truncated gzip, a file deleted while read: keep what came before
            self._error = e
        if not pieces:
            if self._error is not None:
                raise self._error
            return False
        self._buffer, self._at = self._buffer[self._at:] + "".join(pieces), 0
        return True

    def _peek(self) -> str:
        """The next visible character, not consumed, the cursor on it ("" at the end of the text)."""
        while not (found := _VISIBLE_JSON.search(self._buffer, self._at)):
            self._at = len(self._buffer)
            if self._eof or not self._fill():
                return ""
        self._at = found.start()
        return found.group()

    def _element(self) -> tuple[str, bool]:
        """(the text from the cursor to the ',' or ']' that ends this element outside any bracket or string,
        not consumed; whether the text ended first)."""
        depth, scan = 0, self._at
        while True:
            token = _STRUCTURE.search(self._buffer, scan)
            string_end = _string_end(self._buffer, token.start()) if token and token.group() == '"' else None
            if token is None or string_end == -1:  # more text needed: the buffer ends in this element
                resume = (token.start() if token else len(self._buffer)) - self._at
                if len(self._buffer) - self._at > MAX_ELEMENT:
                    raise ValueError(f"an element runs over {MAX_ELEMENT:,} characters without ending (an unclosed "
                                     "bracket or string?)")
                if self._eof or not self._fill():
                    text, self._at = self._buffer[self._at:], len(self._buffer)
                    return text.rstrip(_JSON_SPACE), True
                scan = self._at + resume
                continue
            mark, scan = token.group(), string_end or token.end()
            if mark in ("[", "{"):
                depth += 1
            elif mark in ("]", "}") and depth:
                depth -= 1
            elif mark in (",", "]") and not depth:
                text, self._at = self._buffer[self._at:token.start()], token.start()
                return text.rstrip(_JSON_SPACE), False

    def records(self) -> Iterator[str]:
        """Each element's text, then the non-blank lines after the array's closing ']' (a .json file of JSON
        Lines whose first line is an array loses nothing). Raises when the text ends inside the array."""
        if self._peek() != "[":
            raise ValueError("a JSON array was expected")
        self._at += 1
        end = ","
        if self._peek() == "]":  # []
            end, self._at = "]", self._at + 1
        while end == ",":
            if not self._peek():
                break
            text, ended = self._element()
            if text or self._peek() != "]":  # [a, b,]: a trailing comma is not an empty element
                yield text
            if ended:
                break
            end = self._peek()
            self._at += 1
        if end != "]":
            raise ValueError("the JSON array is not closed: the file ends before its ']' (cut short?)")
        for line in self._lines_after():
            if line.strip():
                yield line.rstrip("\r\n")

    def _lines_after(self) -> Iterator[str]:
        """The lines after the cursor: the buffer's, then the stream's (the buffer's last line, cut off where
        the buffer ends, joined to the stream's first)."""
        lines = io.StringIO(self._buffer[self._at:], newline="").readlines()
        if self._error is not None:  # the stream broke: what was read is all there is
            yield from lines
            raise self._error
        cut = lines.pop() if lines and not lines[-1].endswith(("\n", "\r")) else ""
        yield from lines
        for line in self._text:
            yield cut + line
            cut = ""
        if cut:
            yield cut


def printable(url: str) -> str:
    """A file URL as valid UTF-8 for ids and dead letters: bytes of a file name that are not UTF-8 (lone
    surrogates after os.fsdecode) become \\xNN escapes."""
    return url.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _records(url: str, fields: InputFields) -> Iterator[Document | DeadLetter]:
    sniffed = _sniff(url)
    kind = "parquet" if sniffed.parquet else file_format(url)
    source = printable(url)
    if kind == "parquet":
        yield from _read_parquet(url, source, fields)
        return
    array = sniffed.array and _suffix(url) == ".json"  # .jsonl and .ndjson are lines, always
    with fsspec.open(url, "rb", compression=sniffed.compression) as raw:
        # surrogateescape keeps undecodable bytes (as lone surrogates) for the record's dead letter. CSV needs
        # newline="" to see quoted line breaks, and an array's elements keep their line ends as written; lines
        # are split on LF, CRLF and CR alike.
        # UTF-16/32: a lone surrogate code unit decodes as itself (surrogatepass) and fails only its record
        errors = "surrogateescape" if sniffed.encoding.startswith("utf-8") else "surrogatepass"
        text = io.TextIOWrapper(raw, encoding=sniffed.encoding, errors=errors,
                                newline="" if kind in ("csv", "tsv") or array else None)
        if kind in ("csv", "tsv"):
            yield from _csv_records(text, source, fields, tsv=kind == "tsv")
            return
        parse: Callable = parse_json_line if kind == "json" else parse_text_line
        numbered = enumerate(_JsonArray(text).records(), start=1) if array else _lines(text)
        for position, line in numbered:
            try:
                yield parse(line, source, position, fields)
            except Exception as e:  # e.g. RecursionError on JSON nested 100,000 deep
                yield DeadLetter(source, position, line, f"unparseable record: {type(e).__name__}: {e}")


def read_file(url: str, fields: InputFields) -> Iterator[Document | DeadLetter]:
    """Every record of one file, as Documents and DeadLetters in file order. A file that cannot be opened,
    or breaks off (truncated gzip, corrupt Parquet page, deleted while read), ends with one dead letter that
    says from which record on it could not be read."""
    last = 0
    try:
        for record in _records(url, fields):
            last = record.position
            yield record
    except Exception as e:
        where = "file could not be read" if last == 0 else f"file could not be read after record {last}"
        yield DeadLetter(printable(url), last + 1, "", f"{where}: {type(e).__name__}: {e}")


def _read_parquet(url: str, source: str, fields: InputFields) -> Iterator[Document | DeadLetter]:
    import pyarrow.parquet as pq

    with fsspec.open(url, "rb") as f:
        parquet = pq.ParquetFile(f)
        names = parquet.schema_arrow.names
        wanted = [c for c in dict.fromkeys((fields.id_field, fields.text_field, fields.pair_field)) if c in names]
        if twice := [c for c in wanted if names.count(c) > 1]:  # as for a CSV header: the file's one dead letter
            raise ValueError(f"the Parquet file has more than one column named {' and '.join(map(repr, twice))}")
        position = 0
        for batch in parquet.iter_batches(batch_size=4096, columns=wanted):
            for record in batch.to_pylist():
                position += 1
                yield parse_record(record, source, position, fields)
