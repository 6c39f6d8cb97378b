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


@pytest.mark.parametrize("name,content", [("train.jsonl", ""), ("train.jsonl", "\n\n  \n"), ("train.jsonl", "\ufeff"),
                                          ("train.csv", ""), ("train.csv", "\ufeff\n"), ("train.csv", "text,label\n"),
                                          ("train.parquet", None)])
def test_a_file_without_examples_is_a_clear_error(tmp_path, name, content):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / name
    if content is None:  # a Parquet file of no rows
        pq.write_table(pa.table({"text": pa.array([], pa.string()), "label": pa.array([], pa.string())}), path)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=f"{name}: no examples in the file"):
        load_examples(str(path))


@pytest.mark.parametrize("second,message", [
    ('{"text": "", "label": "a"}', "record 2: field 'text' must be non-empty text"),  # 1-based
    ('{"text": "bad film", "label": null}', "record 2: field 'label' is empty"),
    ('{"text": "bad film", "label": ', "line 2: invalid JSON: "),  # what datasets cannot parse: one line
    ('{"text": "bad film", "label": 0}', r"field 'label' mixes text and numbers \(record 1: 'a', record 2: 0\)"),
    ('{"text": "bad film", "label": ["a"]}', "record 2: field 'label' is list, not a class name"),
])
def test_a_bad_record_is_a_one_line_error_naming_file_and_record(tmp_path, second, message):
    path = tmp_path / "dev.jsonl"
    path.write_text('{"text": "good film", "label": "a"}\n' + second + "\n")
    with pytest.raises(ValueError, match=f"dev.jsonl: {message}"):
        load_examples(str(path))


def test_a_corrupt_parquet_file_is_named(tmp_path):
    path = tmp_path / "train.parquet"
    path.write_bytes(b"PAR1x")
    with pytest.raises(ValueError, match=r"train.parquet: could not be read: "):
        load_examples(str(path))


def test_text_that_is_not_utf8_names_its_line(tmp_path):
    for name, content in (("dev.jsonl", b'{"text": "good", "label": "a"}\n{"text": "caf\xe9", "label": "a"}\n'),
                          ("dev.csv", b'text,label\ngood,a\ncaf\xe9,a\n')):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=f"{name}: line [23]: invalid UTF-8 \\(byte 0xe9"):
            load_examples(str(tmp_path / name))


def test_csv_texts_and_classes_such_as_NA_are_kept(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\nNA,None\nnull,World\n")
    examples = load_examples(str(path))
    assert (examples.texts, examples.labels) == (["NA", "null"], ["None", "World"])


def test_a_folder_of_two_kinds_of_data_file_is_refused(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "good film", "label": "a"}\n')
    (tmp_path / "b.csv").write_text("text,label\nbad film,b\n")
    with pytest.raises(ValueError, match="holds .csv and .jsonl"):
        load_examples(str(tmp_path))
    with pytest.raises(ValueError, match="holds none"):
        load_examples(str(tmp_path / "empty" if (tmp_path / "empty").mkdir() is None else ""))


def test_training_refuses_tsv_which_only_labelling_reads(tmp_path):
    """datasets' CSV builder would read a .tsv in a folder of .csv files as comma-separated, one column."""
    (tmp_path / "a.csv").write_text("text,label\ngood film,a\n")
    (tmp_path / "b.TSV").write_text("text\tlabel\nbad film\tb\n")
    with pytest.raises(ValueError, match=r"b\.TSV is TSV, which training does not read"):
        load_examples(str(tmp_path))
    with pytest.raises(ValueError, match="unknown file type"):
        load_examples(str(tmp_path / "b.TSV"))


def test_a_folder_is_one_data_set_unless_its_files_are_named_for_two_splits(tmp_path, monkeypatch):
    """datasets picks a folder's files by the split names in their names: of train.jsonl and extra.jsonl it
    would read train.jsonl alone, and a folder of part-0.jsonl has no 'validation' split. Such a folder is one
    data set, read whole; one of train/dev/test files is split so, and no test row leaks into training."""
    def write(folder, names):
        for i, name in enumerate(names):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(f'{{"text": "{name}", "label": "a"}}\n' * (i + 1))
        return str(folder)

    whole = write(tmp_path / "whole", ["train.jsonl", "extra.jsonl", "sub/part-0.jsonl"])
    (tmp_path / "whole" / ".hidden.jsonl").write_text('{"text": "not data", "label": "a"}\n')  # as globs: skipped
    expected = ["extra.jsonl"] * 2 + ["sub/part-0.jsonl"] * 3 + ["train.jsonl"]
    for split in ("train", "validation"):  # --train and --dev alike
        assert sorted(load_examples(whole, split=split).texts) == expected
    splits = write(tmp_path / "splits", ["train.jsonl", "dev.jsonl", "test-00000.jsonl"])
    assert load_examples(splits).texts == ["train.jsonl"]
    assert load_examples(splits, split="validation").texts == ["dev.jsonl"] * 2
    assert load_examples(f"{splits}:test").texts == ["test-00000.jsonl"] * 3
    monkeypatch.chdir(tmp_path)  # a relative folder is split the same way
    assert load_examples("splits", split="validation").texts == ["dev.jsonl"] * 2
    assert load_examples("splits:test").texts == ["test-00000.jsonl"] * 3
    write(tmp_path / "splits", ["extra.jsonl"])
    with pytest.raises(ValueError, match=r"extra.jsonl has no split name while other files are named for train and "
                                         r"validation and test: datasets would drop it"):
        load_examples(splits)
    only = write(tmp_path / "only", ["train.jsonl", "test.jsonl"])
    with pytest.raises(ValueError, match=r"no validation file among its files named for train \(1\), test \(1\)"):
        load_examples(only, split="validation")
    (tmp_path / "only" / "test.json").write_text('[{"text": "x", "label": "a"}]')  # a .json beside .jsonl: refused
    with pytest.raises(ValueError, match=r"holds .json and .jsonl"):
        load_examples(only)
