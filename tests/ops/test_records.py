"""Every input record becomes exactly one Document or one DeadLetter, whatever is wrong with it."""

import json
import re

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ops.records import DeadLetter, Document, InputFields, dead_letter_line, file_format, read_file, text_encoding
from ops.records import MAX_ROW_LINES, REASON_LIMIT, SNIFF_BYTES, one_line
from ops.urls import expand_glob, list_files
from tests.hostile_corpus import write_hostile_corpus

FIELDS = InputFields()


def _write(url: str, data: bytes) -> str:
    with fsspec.open(url, "wb") as f:
        f.write(data)
    return url


def test_jsonl_bad_records_become_dead_letters():
    lines = [
        b'{"id": "a", "text": "fine"}',
        b'{"id": "b", "text": ',  # invalid JSON
        b'{"id": "c"}',  # missing text
        b'{"id": "d", "text": null}',
        b'{"id": "e", "text": 42}',
        b'{"id": "f", "text": ""}',
        b'{"id": "g", "text": "   \\t "}',
        b'{"id": "h", "text": "caf\xe9"}',  # Latin-1 byte: invalid UTF-8
        b'[1, 2]',
        b'{"text": "no id here"}',
        b'',  # blank line: layout, not a record
        json.dumps({"id": "big", "text": "x" * 1_000_000}).encode(),
        json.dumps({"id": "zw", "text": "\u200b\u200b\ufeff"}).encode(),  # zero-width and BOM characters only
        json.dumps({"id": "ctl", "text": "\u0000\u0001\u007f \u2028"}).encode(),  # control and separators only
        json.dumps({"id": "zw2", "text": "\u200bvisible after a zero-width space"}).encode(),
        json.dumps({"id": "new", "text": "\U0001fa77"}).encode(),  # an emoji of Unicode 15: [UNK] to BERT, kept
        json.dumps({"id": "pua", "text": "\ue000\U000f0000"}).encode(),  # private-use characters: dropped by BERT
    ]
    url = _write("memory://records/mixed.jsonl", b"\n".join(lines) + b"\n")
    out = list(read_file(url, FIELDS))
    docs = [r for r in out if isinstance(r, Document)]
    letters = {r.position: r.reason for r in out if isinstance(r, DeadLetter)}
    assert [d.id for d in docs] == ["a", f"{url}:10", "big", "zw2", "new"]
    assert len(docs[2].text) == 1_000_000
    assert sorted(letters) == [2, 3, 4, 5, 6, 7, 8, 9, 13, 14, 17]
    assert "invalid JSON" in letters[2]
    assert letters[3] == letters[4] == "field 'text' is missing or null"
    assert letters[5] == "field 'text' is int, not text"
    assert letters[6] == letters[7] == "field 'text' is empty"
    assert "invalid UTF-8" in letters[8]
    assert "not an object" in letters[9]
    assert letters[13].startswith("field 'text' has no visible character") and letters[13] == letters[14] == letters[17]
    assert len(docs) + len(letters) == 16  # every non-blank line accounted for


def test_csv_stray_quotes_cost_one_row_each_and_the_rows_after_them_are_read():
    data = (b'id,text\r\n1,"legal\r\nmulti-line" \r\n2,"closed only by\r\n3,the next row\'s "quote\r\n'
            b'4,fine\r\n5,"never closed\r\n6,after it\r\n7,"open at the end')
    out = list(read_file(_write("memory://records/stray.csv", data), FIELDS))
    assert [(r.position, getattr(r, "id", None)) for r in out] == [
        (1, "1"), (2, None), (3, "3"), (4, "4"), (5, None), (6, "6"), (7, None)]
    assert out[0].text == "legal\r\nmulti-line " and out[2].text == 'the next row\'s "quote'  # space after quote: ok
    assert [out[i].raw for i in (1, 4, 6)] == ['2,"closed only by\r\n', '5,"never closed\r\n', '7,"open at the end']
    assert all("stray quote" in out[i].reason for i in (1, 4, 6))
    header = list(read_file(_write("memory://records/header.csv", b'id,"text\na,b\n'), FIELDS))
    assert [(r.position, r.reason) for r in header] == [
        (0, "CSV header has a stray quote"), (1, "no readable CSV header to name this row's fields")]


def test_a_field_read_that_a_header_or_parquet_schema_names_twice_is_a_dead_letter_not_a_guess():
    twice = list(read_file(_write("memory://records/twice.csv", b"id,text,text\n1,one,two\n"), FIELDS))
    assert [(r.position, r.raw, r.reason) for r in twice] == [
        (0, "id,text,text\n", "CSV header names 'text' more than once"),
        (1, "1,one,two\n", "no readable CSV header to name this row's fields")]
    other = list(read_file(_write("memory://records/other.tsv", b"id\ttext\tnote\tnote\n1\tone\ta\tb\n"), FIELDS))
    assert [(r.id, r.text) for r in other] == [("1", "one")]  # a column that is not read may repeat
    table = pa.Table.from_arrays([pa.array(["1"]), pa.array(["one"]), pa.array(["two"])], names=["id", "text", "text"])
    with fsspec.open("memory://records/twice.parquet", "wb") as f:
        pq.write_table(table, f)
    (letter,) = read_file("memory://records/twice.parquet", FIELDS)
    assert letter.reason == ("file could not be read: ValueError: the Parquet file has more than one column named "
                             "'text'")


def test_a_csv_row_over_max_row_lines_is_one_dead_letter_holding_all_its_lines():
    rows = [f"{i},row {i}" for i in range(2, 3 * MAX_ROW_LINES)]
    data = ("id,text\n1,\"opens early\n" + "\n".join(rows) + "\n").encode()
    out = list(read_file(_write("memory://records/long.csv", data), FIELDS))
    assert out[0].raw == "1,\"opens early\n" + "".join(r + "\n" for r in rows[:MAX_ROW_LINES - 1])
    assert [d.id for d in out[1:]] == [str(i) for i in range(MAX_ROW_LINES + 1, 3 * MAX_ROW_LINES)]


def test_text_that_starts_like_a_compression_magic_is_text():
    url = _write("memory://records/bzh.txt", b"BZh is a greeting\nsecond line\n")
    assert [r.text for r in read_file(url, FIELDS)] == ["BZh is a greeting", "second line"]


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be", "utf-16", "utf-8-sig"])
def test_wide_encodings_are_detected_with_or_without_a_byte_order_mark(encoding):
    record = '{"id": "w", "text": "caf\u00e9 \u4e2d"}\n'
    assert text_encoding(record.encode(encoding)) == encoding
    url = _write(f"memory://records/wide-{encoding}.jsonl", record.encode(encoding))
    assert [(r.id, r.text) for r in read_file(url, FIELDS)] == [("w", "caf\u00e9 \u4e2d")]


@pytest.mark.parametrize("head", [b"i\x00d\x00,text\n1,hello\n2,world\n", b"{\x00\x00\x00\n{}\n" + b'{"a": 1}\n' * 20,
                                  b"\x00" * 64, b"a\x00b\x00 first\nsecond line\nthird line\n"])
def test_a_few_nul_bytes_do_not_make_utf8_look_wide(head):
    assert text_encoding(head) == "utf-8"


def test_a_lone_surrogate_in_utf16_costs_its_record_only():
    lines = [json.dumps({"id": f"u{i}", "text": f"line {i}"}).encode("utf-16-le") for i in range(50)]
    lines[20] = '{"id": "bad", "text": "x'.encode("utf-16-le") + b"\x00\xd8" + '"}'.encode("utf-16-le")
    url = _write("memory://records/surrogate.jsonl", "\n".encode("utf-16-le").join(lines))
    out = list(read_file(url, FIELDS))
    assert len(out) == 50 and [r.position for r in out if isinstance(r, DeadLetter)] == [21]


def test_tsv_is_tab_separated_without_quoting():
    """IANA's text/tab-separated-values: one line per row, quotes are part of the text (GLUE's files are so)."""
    import gzip

    data = ('id\ttext\n'
            '1\t" it \'s a charming and often affecting journey . "\n'  # a quote opening the field: text
            '2\tsays "hello\n'  # an unclosed quote: text too, and the next row is its own
            '3\ttoo\tmany\n'
            '4\n'  # no text field
            '\n'
            '5\tcaf\u00e9\n').encode()
    for url in (_write("memory://records/a.tsv", data), _write("memory://records/a.tsv.gz", gzip.compress(data))):
        out = list(read_file(url, FIELDS))
        assert [(type(r).__name__, r.position) for r in out] == [
            ("Document", 1), ("Document", 2), ("DeadLetter", 3), ("DeadLetter", 4), ("Document", 5)]
        assert [d.text for d in out if isinstance(d, Document)] == [
            '" it \'s a charming and often affecting journey . "', 'says "hello', "caf\u00e9"]
        assert out[2].reason == "row has 3 fields, the header 2" and out[2].raw == "3\ttoo\tmany\n"


def test_csv_with_quoted_newlines_and_invalid_bytes():
    data = b'id,text\n1,"first line\nsecond line"\n2,\n3,"ok, with comma"\n4,caf\xe9\n'
    out = list(read_file(_write("memory://records/a.csv", data), FIELDS))
    assert [(type(r).__name__, getattr(r, "id", None)) for r in out] == [
        ("Document", "1"), ("DeadLetter", None), ("Document", "3"), ("DeadLetter", None)]
    assert out[0].text == "first line\nsecond line"
    assert out[3].reason.startswith("field 'text' is not valid UTF-8")


def test_parquet_with_wrong_column_type(tmp_path):
    path = str(tmp_path / "x.parquet")
    pq.write_table(pa.table({"id": ["a", "b"], "text": [1, 2]}), path)
    out = list(read_file(path, FIELDS))
    assert all(isinstance(r, DeadLetter) and "is int" in r.reason for r in out) and len(out) == 2
    pq.write_table(pa.table({"text": ["x", None, "z"]}), path)
    out = list(read_file(path, FIELDS))
    assert [type(r).__name__ for r in out] == ["Document", "DeadLetter", "Document"]
    assert out[2].id == f"{path}:3"


def test_text_lines_and_pairs():
    url = _write("memory://records/plain.txt", b"one doc\n\n   \nanother doc\n")
    out = list(read_file(url, FIELDS))
    assert [(r.id, r.text) for r in out] == [(f"{url}:1", "one doc"), (f"{url}:4", "another doc")]
    pairs = InputFields(text_field="premise", pair_field="hypothesis")
    url = _write("memory://records/nli.jsonl", b'{"premise": "a", "hypothesis": "b"}\n{"premise": "a"}\n')
    out = list(read_file(url, pairs))
    assert out[0].pair == "b" and out[1].reason == "field 'hypothesis' is missing or null"


def test_empty_file_and_globs():
    _write("memory://glob/empty.jsonl", b"")
    _write("memory://glob/one.jsonl", b'{"text": "x"}\n')
    assert list(read_file("memory://glob/empty.jsonl", FIELDS)) == []
    assert expand_glob("memory://glob/*.jsonl") == ["memory://glob/empty.jsonl", "memory://glob/one.jsonl"]
    with pytest.raises(FileNotFoundError, match="matches no file"):
        expand_glob("memory://glob/*.csv")


def test_a_glob_costs_one_listing_not_a_request_per_file(monkeypatch):
    """On an object store each info/isfile is a request: 10,000 files must not cost 10,000 of them."""
    from fsspec.implementations.memory import MemoryFileSystem

    calls = []
    for name in ("info", "isfile", "isdir"):
        original = getattr(MemoryFileSystem, name)
        monkeypatch.setattr(MemoryFileSystem, name,
                            lambda self, path, *a, _o=original, _n=name, **k: calls.append(_n) or _o(self, path, *a, **k))
    requests = []
    for n in (3, 30):
        for i in range(n):
            _write(f"memory://listing{n}/part-{i:03d}.jsonl", b'{"text": "x"}\n' * (i + 1))
        _write(f"memory://listing{n}/sub/deeper.jsonl", b"")  # a folder the glob matches: not a file
        calls.clear()
        files = list_files(f"memory://listing{n}/*")
        assert [info["size"] for info in files.values()] == [14 * (i + 1) for i in range(n)]
        assert list(files)[0] == f"memory://listing{n}/part-000.jsonl"
        requests.append(len(calls))
    assert requests[0] == requests[1] <= 3, requests  # the same few for 3 files and for 30 (was 3 per file)


def test_a_glob_takes_symbolic_links_to_files_and_broken_ones_become_dead_letters(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").symlink_to(tmp_path / "real" / "a.jsonl")
    (tmp_path / "in" / "broken.jsonl").symlink_to(tmp_path / "nothing.jsonl")
    (tmp_path / "in" / "folder.jsonl").symlink_to(tmp_path / "real")  # a folder, as folders are: not an input
    (tmp_path / "in" / "b.jsonl").write_text('{"text": "y"}\n')
    files = list_files(f"{tmp_path}/in/*.jsonl")
    assert list(files) == [f"{tmp_path}/in/{name}.jsonl" for name in ("a", "b", "broken")]
    assert files[f"{tmp_path}/in/a.jsonl"]["size"] == 14
    (letter,) = read_file(f"{tmp_path}/in/broken.jsonl", InputFields())
    assert isinstance(letter, DeadLetter) and letter.position == 1
    assert letter.reason.startswith("file could not be read: FileNotFoundError")


def test_globs_skip_hidden_files_with_a_warning_and_take_a_file_name_literally(tmp_path, caplog):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config.jsonl").write_text('{"text": "not a document"}\n')
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / ".h.jsonl").write_text('{"text": "hidden"}\n')
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "report[2024].jsonl").write_text('{"text": "y"}\n')
    with caplog.at_level("WARNING", logger="ops.urls"):
        assert expand_glob(f"{tmp_path}/**") == [f"{tmp_path}/a.jsonl", f"{tmp_path}/report[2024].jsonl"]
    assert "skipped 3 hidden file(s)" in caplog.text and ".DS_Store" in caplog.text
    # as in a shell, a pattern part that starts with "." matches hidden names, literally or with a wildcard
    assert expand_glob(f"{tmp_path}/.git/*.jsonl") == [f"{tmp_path}/.git/config.jsonl"]
    assert expand_glob(f"{tmp_path}/.*.jsonl") == [f"{tmp_path}/.h.jsonl"]
    assert expand_glob(f"{tmp_path}/.*/*.jsonl") == [f"{tmp_path}/.git/config.jsonl"]
    (tmp_path / ".git" / ".x.jsonl").write_text('{"text": "hidden in hidden"}\n')  # ".*" is for the folder only
    caplog.clear()
    with caplog.at_level("WARNING", logger="ops.urls"):
        assert expand_glob(f"{tmp_path}/.*/*.jsonl") == [f"{tmp_path}/.git/config.jsonl"]
        assert len(expand_glob(f"{tmp_path}/**")) == 2
    assert "skipped 1 hidden file(s)" in caplog.text and "skipped 4 hidden file(s)" in caplog.text  # count changed
    # "[2024]" is a character class to a glob, which matches nothing here: then the existing file is taken
    assert expand_glob(f"{tmp_path}/report[2024].jsonl") == [f"{tmp_path}/report[2024].jsonl"]
    (tmp_path / "report2.jsonl").write_text('{"text": "z"}\n')  # now the glob matches, and wins, as in a shell
    assert expand_glob(f"{tmp_path}/report[2024].jsonl") == [f"{tmp_path}/report2.jsonl"]
    with pytest.raises(FileNotFoundError, match=r"it is a folder; give a glob of its files, such as '.*/\.git/\*\.jsonl'"):
        expand_glob(f"{tmp_path}/.git/")


@pytest.mark.parametrize("data, reason", [
    (b"PK\x03\x04\x14\x00\x06\x00" + b"[Content_Types].xml" * 10, "a zip archive"),  # .zip, .xlsx, .docx
    (b"\x00\x00\x00\x01Bud1\x00\x00\x10\x00" * 40, "binary data (NUL bytes"),  # a .DS_Store
    (b'{"text": "fine"}\n' + b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\n", "binary data (NUL bytes"),
    ('{"text": "\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440"}\n'.encode("utf-16-le") * 4,  # no BOM
     "binary data (NUL bytes in the first 184 bytes), not text, JSON Lines, CSV, TSV or Parquet (UTF-16 or UTF-32 text "
     "that is not mostly ASCII needs a byte-order mark)")])
def test_a_binary_file_is_one_dead_letter_not_documents_of_garbage(data, reason):
    for name in ("corpus.txt", "corpus.jsonl", "corpus.csv", "corpus"):
        (letter,) = read_file(_write(f"memory://binary/{name}", data), FIELDS)
        assert isinstance(letter, DeadLetter) and letter.position == 1
        assert letter.reason.startswith(f"file could not be read: ValueError: {reason}")


@pytest.mark.parametrize("head", ["", "x", "xy", "xyz", "wxyz", "vwxyz"])  # every place an escape can be cut
def test_a_reason_is_one_utf8_line_of_at_most_reason_limit_characters(head):
    reason = one_line("bad\n\t" + head + "\udc80" * 1000)  # lone surrogates escape to 6 characters each
    assert len(reason) <= REASON_LIMIT and reason.startswith("bad " + head + "\\udc80") and reason.endswith("...")
    assert re.fullmatch(r"bad \w*(\\udc80)+\.\.\.", reason)  # whole escapes only: none cut in half
    reason.encode("utf-8")
    assert one_line(" short\r\n reason ") == "short reason"


def test_file_format():
    assert [file_format(p) for p in ("a.jsonl", "a.JSON.gz", "b.csv", "b.TSV.zst", "c.parquet", "d.txt", "e")] == [
        "json", "json", "csv", "tsv", "parquet", "text", "text"]


def test_hostile_corpus_every_input_lands_once(tmp_path):
    """Every format with every bad shape: each good record is a Document with its exact text, everything else
    a dead letter, and the two add up to the inputs."""
    corpus = write_hostile_corpus(tmp_path)
    out = [r for url in expand_glob(f"{tmp_path}/*") for r in read_file(url, FIELDS)]
    docs = [r for r in out if isinstance(r, Document)]
    letters = [r for r in out if isinstance(r, DeadLetter)]
    assert {d.id: d.text for d in docs} == corpus.good
    assert len(docs) == len({d.id for d in docs})
    assert len(docs) + len(letters) == corpus.inputs
    for letter in letters:
        line = dead_letter_line(letter.to_dict())
        line.encode("utf-8")  # always writable
        back = json.loads(line)
        assert back["raw"] == letter.raw and "\n" not in back["reason"] and back["reason"]
    # lossless: the undecodable line's bytes come back exactly from its dead letter
    latin1 = next(r for r in letters if r.source.endswith("a.jsonl") and r.reason.startswith("invalid UTF-8: undecodable"))
    assert json.loads(dead_letter_line(latin1.to_dict()))["raw"].encode("utf-8", "surrogateescape") \
        == corpus.invalid_raw["a.jsonl"]
    reasons = " | ".join(r.reason for r in letters)
    for expected in ("not a Parquet file", "file could not be read after record", "ids must be text or integers",
                     "field 'id' is not valid UTF-8", "RecursionError", "Exceeds the limit"):
        assert expected.lower() in reasons.lower(), expected


def test_prediction_writer_closes_its_file_on_error(tmp_path):
    from ops.predictions import PredictionWriter

    writer = PredictionWriter(str(tmp_path / "p.parquet"))
    with pytest.raises(Exception):
        with writer:
            writer.write([{"id": "x", "label": 3}])  # wrong type and missing columns
    assert writer._file.closed


@pytest.mark.parametrize("compress", ["gzip", "lzma", "bz2", "zstandard"])
def test_a_short_compressed_file_cut_off_keeps_the_records_before_the_cut(compress):
    """Shorter than the bytes read to detect the encoding (SNIFF_BYTES) once decompressed: the records that
    can be read are documents, and the cut is one dead letter after them. bzip2 and zstd decompress whole
    blocks (900 KB, 128 KB), so a file cut inside its only block has no readable record: one dead letter."""
    import importlib

    lines = [json.dumps({"id": i, "text": f"record {i} " + "word " * 20}) + "\n" for i in range(30)]
    data = "".join(lines).encode()
    assert len(data) < SNIFF_BYTES
    module = importlib.import_module(compress)
    packed = module.ZstdCompressor().compress(data) if compress == "zstandard" else module.compress(data)
    url = _write(f"memory://records/cut-{compress}.jsonl", packed[:len(packed) * 3 // 4])
    *docs, cut = read_file(url, FIELDS)
    assert all(isinstance(d, Document) for d in docs) and (len(docs) > 10) == (compress in ("gzip", "lzma"))
    assert [d.text for d in docs] == [json.loads(line)["text"] for line in lines[:len(docs)]]
    expected = f"file could not be read after record {len(docs)}:" if docs else "file could not be read:"
    assert isinstance(cut, DeadLetter) and cut.reason.startswith(expected)


@pytest.mark.parametrize("compress", ["gzip", "bz2", "lzma", "zstandard"])
def test_compressed_files_are_read_whatever_their_name(compress):
    import importlib

    data = b'{"id": "c", "text": "compressed, named .jsonl"}\n'
    module = importlib.import_module(compress)
    packed = module.ZstdCompressor().compress(data) if compress == "zstandard" else module.compress(data)
    url = _write(f"memory://records/misnamed-{compress}.jsonl", packed)
    assert [(r.id, r.text) for r in read_file(url, FIELDS)] == [("c", "compressed, named .jsonl")]


def test_a_dead_letter_keeps_the_record_exactly_as_read():
    """Not the parsed record written again, which would respell numbers (1e999 -> Infinity) and drop a repeated
    key; CSV keeps the row's lines."""
    lines = ['{"id":1.5,"text":"float id"}', '{"id": "a", "text": 1e999}', '{"text": "x", "text": null}', '[1, 2]']
    url = _write("memory://records/as-read.jsonl", "\n".join(lines).encode())
    letters = list(read_file(url, FIELDS))
    assert all(isinstance(r, DeadLetter) for r in letters) and [r.raw for r in letters] == lines
    url = _write("memory://records/as-read.csv", b'id,text\n7,\n"8","a ""quoted""\nrow"\n')
    letter, doc = read_file(url, FIELDS)
    assert letter.raw == "7,\n" and doc.text == 'a "quoted"\nrow'


def _array_records(url: str) -> list:
    return list(read_file(url, FIELDS))


def _small_pieces(monkeypatch, size: int) -> None:
    import ops.records

    monkeypatch.setattr(ops.records, "ARRAY_CHUNK", size)
    monkeypatch.setattr(ops.records, "READ_PIECE", size)


ARRAY = [{"id": 12345, "text": "first"}, {"text": "no id, a [bracket] and a, comma"}, [1, {"a": "]"}],
         {"id": "d", "text": ""}, -0.25e+3, {"id": "f", "text": "caf\u00e9 \u2028 \"quoted\" \\", "pair": None}]


@pytest.mark.parametrize("piece", [*range(1, 12), 40, 1 << 20])
def test_a_json_array_is_read_an_element_at_a_time(monkeypatch, piece):
    """What json.dump(records, indent=2) writes, with CRLF line ends: element N is record N, whatever the
    buffer boundaries cut (pieces of 1 to 11 characters cut every number, key, string and escape); an element
    that is not a document is a dead letter holding its text as written."""
    _small_pieces(monkeypatch, piece)
    written = "\r\n" + json.dumps(ARRAY, indent=2, ensure_ascii=False).replace("\n", "\r\n") + "\r\n"
    url = _write("memory://records/array.json", written.encode())
    out = _array_records(url)
    assert [r.position for r in out] == [1, 2, 3, 4, 5, 6]  # one record per element, in order
    assert [(r.id, r.text) for r in out if isinstance(r, Document)] == [
        ("12345", "first"), (f"{url}:2", ARRAY[1]["text"]), ("f", ARRAY[5]["text"])]
    letters = {r.position: r for r in out if isinstance(r, DeadLetter)}
    assert letters[3].raw == '[\r\n    1,\r\n    {\r\n      "a": "]"\r\n    }\r\n  ]'  # as written
    assert "not an object" in letters[3].reason
    assert letters[4].reason == "field 'text' is empty" and letters[5].raw == "-250.0"


@pytest.mark.parametrize("piece", [3, 1 << 20])
def test_a_bad_element_costs_itself_only(monkeypatch, piece):
    """What JSON Lines makes one dead letter of is one dead letter in an array too, and the elements after it
    are read: invalid JSON, a missing comma (two elements in one letter), a raw TAB in a string, an integer
    over Python's 4,300 digits, nesting deeper than the recursion limit or just under it, invalid UTF-8 in any
    field."""
    _small_pieces(monkeypatch, piece)
    bad = ['{"text": "b", }', '{"text": "c"} {"text": "d"}', '{"text": "a\tb"}',
           '{"id": %s, "text": "e"}' % ("9" * 5000), "[" * 100_000 + "]" * 100_000, '{"text": "f", "m": "\xff"}',
           '{"text": "g", "m": %s}' % ("[" * 990 + "]" * 990)]
    elements = [b'{"text": "first"}'] + [b.encode("latin-1") for b in bad] + [b'{"text": "last"}']
    data = b"[" + b",\n".join(elements) + b"]"
    out = _array_records(_write("memory://records/bad-elements.json", data))
    assert [r.position for r in out] == list(range(1, len(bad) + 3))
    assert [r.text for r in out if isinstance(r, Document)] == ["first", "last"]
    letters = out[1:-1]
    assert all(isinstance(r, DeadLetter) for r in letters)
    assert [r.raw.encode("utf-8", "surrogateescape") for r in letters] == [b.encode("latin-1") for b in bad]
    assert "invalid JSON" in letters[0].reason and "Extra data" in letters[1].reason
    assert "Invalid control character" in letters[2].reason and "invalid UTF-8" in letters[5].reason


@pytest.mark.parametrize("body, texts, reason", [
    ('[{"text": "a"}, {"text": "b"}', ["a", "b"], "after record 2: ValueError: the JSON array is not closed"),
    ('[{"text": "a"}, {"text": "b', ["a"], "after record 2: ValueError: the JSON array is not closed"),
    ("[ \n ", [], "file could not be read: ValueError: the JSON array is not closed"),
])
def test_an_array_cut_short_keeps_every_element_and_says_so(body, texts, reason):
    *records, letter = _array_records(_write("memory://records/cut.json", body.encode()))
    assert [r.text for r in records if isinstance(r, Document)] == texts
    assert isinstance(letter, DeadLetter) and reason in letter.reason


def test_lines_after_an_array_are_read_as_json_lines(monkeypatch):
    """A .json file of JSON Lines whose first line happens to be an array (jsonlines.org's example) loses
    nothing: the array's elements are records, then each line after it, numbered on."""
    _small_pieces(monkeypatch, 4)
    data = '["Name", "Session"]\r\n{"text": "a"}\r\n\r\n{"text": "b"}\r\n[1]\n{"text": "c"}'
    out = _array_records(_write("memory://records/lines.json", data.encode()))
    assert [(r.position, r.raw if isinstance(r, DeadLetter) else r.text) for r in out] == [
        (1, '"Name"'), (2, '"Session"'), (3, "a"), (4, "b"), (5, "[1]"), (6, "c")]
    # .jsonl and .ndjson are JSON Lines whatever the first line holds: the array is one dead letter, line 1
    out = _array_records(_write("memory://records/lines.jsonl", data.encode()))
    assert [(r.position, r.raw if isinstance(r, DeadLetter) else r.text) for r in out] == [
        (1, '["Name", "Session"]'), (2, "a"), (4, "b"), (5, "[1]"), (6, "c")]


def test_a_broken_stream_keeps_the_elements_before_the_break():
    import gzip

    import zlib

    data = json.dumps([{"text": f"doc {i}"} for i in range(20_000)]).encode()
    packed = gzip.compress(data)
    packed = packed[:len(packed) * 9 // 10]
    readable = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(packed).count(b"}")  # complete elements
    *docs, cut = _array_records(_write("memory://records/cut.json.gz", packed))
    assert readable - 80 < len(docs) <= readable  # at most a READ_PIECE of 1,024 characters lost with the break
    assert [d.text for d in docs] == [f"doc {i}" for i in range(len(docs))]
    assert isinstance(cut, DeadLetter) and cut.reason.startswith(f"file could not be read after record {len(docs)}:")


def test_json_arrays_empty_compressed_wide_and_with_a_bom_and_an_element_over_the_limit(monkeypatch):
    import gzip

    import ops.records

    assert _array_records(_write("memory://records/empty.json", b" [ ] \n")) == []
    trailing = _array_records(_write("memory://records/trailing.json", b'[{"text": "a"}, {"text": "b"},\n]'))
    assert [r.text for r in trailing] == ["a", "b"]  # a trailing comma is not an empty element
    escaped = json.dumps([{"text": "\u00e9\n\\" * 100_000}, {"text": "after"}])  # \u00e9 escapes, as json.dumps writes
    assert [len(r.text) for r in _array_records(_write("memory://records/escapes.json", escaped.encode()))] == [300_000, 5]
    data = json.dumps([{"id": i, "text": f"doc {i}"} for i in range(3)])
    for name, raw in (("gz.json", gzip.compress(data.encode())), ("utf16.json", data.encode("utf-16")),
                      ("utf16le.json", data.encode("utf-16-le")), ("bom.json", b"\xef\xbb\xbf" + data.encode())):
        assert [r.id for r in _array_records(_write(f"memory://records/{name}", raw))] == ["0", "1", "2"], name
    # not an array: a doubled BOM, or a stray byte before the bracket, is a line that is not JSON
    for raw in (b"\xef\xbb\xbf\xef\xbb\xbf" + data.encode(), b"\xff" + data.encode()):
        (letter,) = _array_records(_write("memory://records/not-array.json", raw))
        assert isinstance(letter, DeadLetter) and letter.raw.encode("utf-8", "surrogateescape").endswith(data.encode())
    _small_pieces(monkeypatch, 16)
    monkeypatch.setattr(ops.records, "MAX_ELEMENT", 50)
    *docs, letter = _array_records(_write("memory://records/long.json",
                                          json.dumps([{"text": "short"}, {"text": "x" * 200}]).encode()))
    assert [d.text for d in docs] == ["short"] and "an element runs over 50 characters" in letter.reason


@pytest.mark.parametrize("indent", [None, 2])
def test_an_array_gives_what_the_same_records_give_as_json_lines(monkeypatch, indent):
    """300 records with strings full of brackets, commas, quotes, backslashes and line separators, numbers,
    lists and nested objects: as a JSON array, read in pieces of 1 to 4096 characters, each is the same Document
    or dead letter (same reason; the same raw text when written on one line) as on its own line."""
    import random

    rng = random.Random(0)
    records, alphabet = [], 'ab ,[]{}"\\\u00e9\u2028\n\t'
    for i in range(300):
        kind = rng.random()
        if kind < 0.6:
            records.append({"id": i, "text": "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30)))})
        elif kind < 0.8:
            records.append(rng.choice([1.5e-7, -3, "str,]", [1, [2, {"x": "]"}]], None, True]))
        else:
            records.append({"text": "ok", "nested": {"a": [{"b": "}"}]}})
    lines = _write("memory://records/as-lines.jsonl", "\n".join(json.dumps(r) for r in records).encode())
    array = _write("memory://records/as-array.json", json.dumps(records, indent=indent).encode())

    def seen(url: str) -> list[tuple]:  # derived ids name the file: compared without it
        return [(r.position, getattr(r, "id", "").replace(url, "<file>"), getattr(r, "text", None),
                 getattr(r, "reason", None), getattr(r, "raw", None) if indent is None else None)
                for r in read_file(url, FIELDS)]

    expected = seen(lines)
    assert sum(isinstance(r, DeadLetter) for r in read_file(lines, FIELDS)) > 50  # both kinds are compared
    for piece in (1, 2, 3, 5, 7, 13, 64, 4096):
        _small_pieces(monkeypatch, piece)
        assert seen(array) == expected, piece


def test_a_text_lines_dead_letter_keeps_the_line_as_read(tmp_path):
    (tmp_path / "docs.txt").write_text("a document\n\u200b\u200b\n", encoding="utf-8")
    document, letter = read_file(str(tmp_path / "docs.txt"), InputFields())
    assert isinstance(document, Document) and document.text == "a document"
    assert isinstance(letter, DeadLetter) and letter.raw == "\u200b\u200b" and letter.position == 2
