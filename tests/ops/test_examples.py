"""Reading labelled examples: a file rewritten in place is read again, whatever its size and time say."""

import os

import pytest

from ops.examples import load_examples


@pytest.mark.parametrize("name", ["train.jsonl", "folder/train.jsonl"])
def test_a_file_rewritten_with_the_same_size_and_time_is_read_afresh(tmp_path, name):
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    path.write_text('{"text": "good film", "label": "a"}\n{"text": "bad film", "label": "a"}\n')
    source = str(path if name == "train.jsonl" else path.parent)
    assert load_examples(source).labels == ["a", "a"]
    stat = os.stat(path)
    path.write_text('{"text": "good film", "label": "b"}\n{"text": "bad film", "label": "a"}\n')  # a label fixed
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as cp -p or rsync -a leave it
    assert os.stat(path).st_size == stat.st_size
    assert load_examples(source).labels == ["b", "a"]


def test_examples_hold_plain_lists_not_columns_of_the_removed_cache(tmp_path):
    import pickle

    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "good film", "hypothesis": "fine", "label": "a"}\n')
    examples = load_examples(str(path), pair_field="hypothesis")
    assert all(type(x) is list for x in (examples.texts, examples.pairs, examples.labels))
    assert pickle.loads(pickle.dumps(examples)) == examples
