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
