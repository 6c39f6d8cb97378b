"""A tiny saved model and a corpus that mixes good documents with every kind of bad input."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import TEXTS, tiny_classifier

# 8 good JSONL rows + 8 bad ones, 3 good + 1 bad CSV rows, 2 good text lines, 2 good + 1 bad Parquet rows
GOOD = 8 + 1 + 3 + 2 + 2
BAD = 8 + 1 + 1


@pytest.fixture(scope="session")
def model_dir(tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("pipeline-model") / "model"
    tiny_classifier(tokenizer, temperatures=(0.03,) * 4, threshold=0.8).save_pretrained(path)
    return str(path)


def write_corpus(root) -> dict[str, str]:
    """Writes the mixed corpus under ``root``; returns {id: text} of the documents that can be labelled."""
    root.mkdir(parents=True, exist_ok=True)
    good = {f"j{i}": t for i, t in enumerate(TEXTS)}
    big = "word " * 200_000  # a 1 MB document: truncated, not rejected
    lines = [json.dumps({"id": k, "text": v}).encode() for k, v in good.items()] + [
        json.dumps({"id": "big", "text": big}).encode(),
        b'{"id": "broken", "text": ',
        b'{"id": "no-text"}',
        b'{"id": "null", "text": null}',
        b'{"id": "number", "text": 7}',
        b'{"id": "empty", "text": ""}',
        b'{"id": "blank", "text": " \\n\\t "}',
        b'{"id": "latin1", "text": "caf\xe9"}',
        b'"just a string"',
    ]
    (root / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    good["big"] = big
    (root / "b.csv").write_bytes(b'id,text\nc1,"a quoted\nnewline inside"\nc2,plain row\nc3,"with ""quotes"""\nc4,\n')
    good.update({"c1": "a quoted\nnewline inside", "c2": "plain row", "c3": 'with "quotes"'})
    (root / "c.txt").write_text("first plain line\nsecond plain line\n")
    good.update({f"{root / 'c.txt'}:1": "first plain line", f"{root / 'c.txt'}:2": "second plain line"})
    pq.write_table(pa.table({"id": ["p1", "p2", "p3"], "text": ["parquet one", None, "parquet three"]}), root / "d.parquet")
    good.update({"p1": "parquet one", "p3": "parquet three"})
    (root / "e.jsonl").write_bytes(b"")  # an empty file
    assert len(good) == GOOD
    return good
