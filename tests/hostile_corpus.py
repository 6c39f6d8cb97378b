"""Files from the wild: every format with every bad shape we could think of, mixed with good records.

``write_hostile_corpus(root)`` returns what a correct reader must produce: the good documents by id (with
their text) and how many inputs there are in all (good + bad). Expected values are written down by hand or,
for the truncated gzip and zstd files, computed with zlib and python-zstandard independently of the reader.
"""

from __future__ import annotations

import codecs
import gzip
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard


@dataclass
class Corpus:
    good: dict[str, str] = field(default_factory=dict)  # id -> text of every record that must be labelled
    inputs: int = 0  # records (and unreadable file tails) that must each become a prediction or a dead letter
    invalid_raw: dict[str, bytes] = field(default_factory=dict)  # file name -> a bad line's exact bytes


def _jsonl(corpus: Corpus, root: Path) -> None:
    good = [{"id": "j1", "text": "a plain good record"},
            {"id": 12345, "text": "an integer id"},
            {"text": "no id: derived from file and line"},
            {"id": "nul", "text": "a NUL \u0000 inside"},
            {"id": "long", "text": "long " * 40_000},  # 200,000 characters: truncated, not rejected
            {"id": "emoji", "text": "caf\u00e9 \U0001F600 \u4e2d\u6587"}]
    bad = [b'{"id": "s1", "text": "lone \\ud800 surrogate"}',
           b'{"id": "\\udc00", "text": "surrogate in the id"}',
           b'{"id": {"a": 1}, "text": "object id"}',
           b'{"id": [1, 2], "text": "list id"}',
           b'{"id": 1.5, "text": "float id"}',
           b'{"id": true, "text": "bool id"}',
           b'{"id": "obj", "text": {"nested": "text"}}',
           b'{"id": "big-int", "text": "x", "n": ' + b"9" * 5000 + b"}",  # over Python's int digit limit
           b"[" * 100_000 + b"]" * 100_000,  # nesting deeper than the recursion limit
           b'{"id": "latin1", "text": "caf\xe9"}',
           b'"just a string"',
           b"{not json"]
    lines = [json.dumps(r).encode() for r in good] + bad
    data = codecs.BOM_UTF8 + b"\r\n".join(lines) + b"\r\n\r\n"  # Windows export: BOM, CRLF, a blank line
    (root / "a.jsonl").write_bytes(data)
    url = str(root / "a.jsonl")
    for i, r in enumerate(good, start=1):
        corpus.good[str(r.get("id", f"{url}:{i}"))] = r["text"]
    corpus.inputs += len(lines)
    corpus.invalid_raw["a.jsonl"] = bad[9]


def _csv(corpus: Corpus, root: Path) -> None:
    huge = "field " * 35_000  # 210,000 characters: over csv's default 131,072-character field limit
    rows = [b"id,text,extra", b"c1,plain row,", b'c2,"quoted\r\nnewline",', b"c3," + huge.encode() + b",",
            b"c4,too,many,fields,here", b"c5", b'c6,caf\xe9,', b'c7,"ok ""quoted""",']
    (root / "b.csv").write_bytes(codecs.BOM_UTF8 + b"\r\n".join(rows) + b"\r\n")
    corpus.good.update({"c1": "plain row", "c2": "quoted\r\nnewline", "c3": huge, "c7": 'ok "quoted"'})
    corpus.inputs += len(rows) - 1


def _text(corpus: Corpus, root: Path) -> None:
    (root / "c.txt").write_bytes("first line in UTF-16\nsecond line\n".encode("utf-16"))  # BOM + UTF-16 LE
    (root / "d.txt").write_bytes(b"old mac line one\rline two\r")  # CR line ends
    (root / b"caf\xe9.txt".decode("utf-8", "surrogateescape")).write_bytes(b"a file name that is not UTF-8\n")
    corpus.good[f"{root}/caf\\xe9.txt:1"] = "a file name that is not UTF-8"
    corpus.inputs += 1
    for name, texts in (("c.txt", ["first line in UTF-16", "second line"]), ("d.txt", ["old mac line one", "line two"])):
        for i, t in enumerate(texts, start=1):
            corpus.good[f"{root / name}:{i}"] = t
    corpus.inputs += 4


def _parquet(corpus: Corpus, root: Path) -> None:
    pq.write_table(pa.table({"id": pa.array([1, 2, 3], pa.int64()),
                             "text": pa.array([b"binary utf-8", b"\xff\xfe bad", None], pa.binary())}),
                   root / "e.parquet")
    corpus.good["1"] = "binary utf-8"
    pq.write_table(pa.table({"id": ["f1", "f2"], "text": pa.array([1, 2], pa.int32())}), root / "f.parquet")
    pq.write_table(pa.table({"id": pa.array([{"a": 1}], pa.struct([("a", pa.int8())])), "text": ["struct id"]}),
                   root / "g.parquet")
    pq.write_table(pa.table({"id": ["k1"], "text": ["parquet named .csv"]}), root / "k.csv")  # sniffed as Parquet
    corpus.good["k1"] = "parquet named .csv"
    corpus.inputs += 3 + 2 + 1 + 1


def _misnamed_and_broken(corpus: Corpus, root: Path) -> None:
    record = json.dumps({"id": "gz1", "text": "gzip named .jsonl"}).encode() + b"\n"
    (root / "h.jsonl").write_bytes(gzip.compress(record))  # gzip without .gz
    corpus.good["gz1"] = "gzip named .jsonl"
    (root / "j.parquet").write_bytes(b"this is not parquet\n")  # unreadable file: one dead letter
    corpus.inputs += 2
    # A gzip cut in the middle: the records before the cut are labelled, then one dead letter for the rest.
    lines = [json.dumps({"id": f"t{i}", "text": f"record {i} of a truncated file " * 3}).encode() for i in range(300)]
    packed = gzip.compress(b"\n".join(lines) + b"\n")
    cut = packed[: len(packed) // 2]
    (root / "l.jsonl.gz").write_bytes(cut)
    readable = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(cut)
    complete = readable.split(b"\n")[:-1]  # the last piece may be a partial line
    for line in complete:
        r = json.loads(line)
        corpus.good[r["id"]] = r["text"]
    corpus.inputs += len(complete) + 1  # a partial last line and the unreadable rest: one dead letter
    if readable.endswith(b"\n"):
        raise AssertionError("the cut should fall inside a line")
    # The same for zstd, whose other Python binding (python-zstandard) ends a cut stream silently.
    lines = [json.dumps({"id": f"z{i}", "text": f"record {i} of a truncated zstd file " * 3}).encode()
             for i in range(3000)]  # about 300 KB: several zstd blocks, so the ones before the cut decode
    cut = zstandard.ZstdCompressor().compress(b"\n".join(lines) + b"\n")[:-200]
    (root / "n.jsonl.zst").write_bytes(cut)
    complete = zstandard.ZstdDecompressor().decompressobj().decompress(cut).split(b"\n")[:-1]
    for line in complete:
        r = json.loads(line)
        corpus.good[r["id"]] = r["text"]
    corpus.inputs += len(complete) + 1


def _csv_stray_quotes(corpus: Corpus, root: Path) -> None:
    """A quote that opens a field and never closes, and one closed by the next row's quote: csv's lenient
    reader would swallow the rows after them into one field."""
    (root / "o.csv").write_bytes(b'id,text\ns1,before\ns2,"opens and never closes\ns3,after it\n')
    (root / "p.csv").write_bytes(b'id,text\ns4,"closed by\ns5,the next row\'s "quote\ns6,last\n')
    corpus.good.update({"s1": "before", "s3": "after it", "s5": "the next row's \"quote", "s6": "last"})
    corpus.inputs += 3 + 3  # o.csv: s1, s2 (dead), s3; p.csv: s4 (dead), s5, s6


def _no_bom_wide_text(corpus: Corpus, root: Path) -> None:
    """UTF-16 and UTF-32 without a byte-order mark, as some exporters write them."""
    (root / "q.jsonl").write_bytes(json.dumps({"id": "w16", "text": "UTF-16 BE, no BOM"}).encode("utf-16-be"))
    (root / "r.txt").write_bytes("UTF-16 LE, no BOM\n".encode("utf-16-le"))
    (root / "s.txt").write_bytes("UTF-32 LE, no BOM\n".encode("utf-32-le"))
    corpus.good.update({"w16": "UTF-16 BE, no BOM", f"{root / 'r.txt'}:1": "UTF-16 LE, no BOM",
                        f"{root / 's.txt'}:1": "UTF-32 LE, no BOM"})
    corpus.inputs += 3


def _tsv_binary_and_hidden(corpus: Corpus, root: Path) -> None:
    """TSV (no quoting: quotes are text), a binary file and a zip archive (one dead letter each), and a hidden
    file, which a glob's wildcard does not match."""
    (root / "t.tsv").write_bytes(b'id\ttext\ntab1\t"quotes are text\ntab2\ttoo\tmany\ntab3\n')
    corpus.good["tab1"] = '"quotes are text'
    corpus.inputs += 3
    (root / "u.bin").write_bytes(b"\x00\x00\x00\x01Bud1" * 50)  # the bytes of a .DS_Store
    (root / "v.zip").write_bytes(b"PK\x03\x04" + b"\x00" * 60)
    corpus.inputs += 2
    (root / ".hidden.jsonl").write_text('{"id": "h1", "text": "never read"}\n')


def write_hostile_corpus(root: Path) -> Corpus:
    root.mkdir(parents=True, exist_ok=True)
    corpus = Corpus()
    for part in (_jsonl, _csv, _text, _parquet, _misnamed_and_broken, _csv_stray_quotes, _no_bom_wide_text,
                 _tsv_binary_and_hidden):
        part(corpus, root)
    (root / "m.jsonl").write_bytes(b"")  # an empty file: no inputs
    return corpus
