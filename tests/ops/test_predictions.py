"""Isolated failures become dead letters and the rest prediction rows, in input order (both drivers)."""

import pytest

from ops.isolation import Failure
from ops.predictions import split_failures
from ops.records import Document


def test_split_failures_keeps_order_and_loses_nothing():
    docs = [Document(id=f"d{i}", text=f"text {i}", pair=None, source="in.jsonl", position=i + 1) for i in range(5)]
    results = ["a", Failure(ValueError("bad token")), "c", "d", Failure(MemoryError("oom"))]
    labelled, predictions, letters = split_failures(docs, results)
    assert [d.id for d in labelled] == ["d0", "d2", "d3"] and predictions == ["a", "c", "d"]
    assert [(letter.position, letter.reason) for letter in letters] == [
        (2, "inference failed: ValueError: bad token"), (5, "inference failed: MemoryError: oom")]
    assert letters[0].to_dict()["raw"] == '{"id": "d1", "text": "text 1"}'


def test_split_failures_refuses_a_result_count_that_does_not_match():
    docs = [Document(id="d0", text="t", pair=None, source="in.jsonl", position=1)]
    with pytest.raises(ValueError):
        split_failures(docs, [])
