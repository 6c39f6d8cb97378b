"""Data map statistics and region selection on hand-made probability tables; the dynamics files round-trip;
the datamap and select commands write what they say."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from ops.dynamics import (DataMap, TrainingDynamics, data_map, read_dynamics, select_region, write_data_map,
                          write_dynamics)
from ops.examples import Examples, load_examples

# 3 epochs x 2 exits x 4 examples; the last exit (index 1) holds the interesting numbers
P_LAST = np.array([[0.9, 0.2, 0.1, 0.6],
                   [0.9, 0.8, 0.2, 0.4],
                   [0.9, 0.2, 0.3, 0.8]], dtype=np.float32)
RIGHT_LAST = np.array([[1, 0, 0, 1], [1, 1, 0, 0], [1, 0, 0, 1]], dtype=bool)


def _dynamics() -> TrainingDynamics:
    p = np.stack([np.full_like(P_LAST, 0.5), P_LAST], axis=1)  # (epochs, exits, n)
    right = np.stack([np.zeros_like(RIGHT_LAST), RIGHT_LAST], axis=1)
    return TrainingDynamics((2, 4), p, right)


def test_statistics_by_hand():
    stats = data_map(_dynamics())  # last exit
    np.testing.assert_allclose(stats.confidence, [0.9, 0.4, 0.2, 0.6], atol=1e-6)
    # population std: example 1 has values 0.2, 0.8, 0.2 around 0.4 -> sqrt((0.04 + 0.16 + 0.04) / 3)
    np.testing.assert_allclose(stats.variability, [0.0, np.sqrt(0.08), np.sqrt(0.02 / 3), np.sqrt(0.08 / 3)], atol=1e-6)
    np.testing.assert_allclose(stats.correctness, [1.0, 1 / 3, 0.0, 2 / 3])
    first = data_map(_dynamics(), exit_layer=2)
    assert (first.confidence == 0.5).all() and (first.variability == 0).all() and (first.correctness == 0).all()


def test_unknown_exit_and_single_epoch_are_errors():
    with pytest.raises(ValueError, match=r"no exit at layer 3; the exits are at layers \[2, 4\]"):
        data_map(_dynamics(), exit_layer=3)
    one_epoch = TrainingDynamics((4,), P_LAST[:1, None], RIGHT_LAST[:1, None])
    with pytest.raises(ValueError, match="at least 2 epochs"):
        data_map(one_epoch)


def test_regions_pick_the_right_examples():
    stats = data_map(_dynamics())
    assert select_region(stats, "ambiguous", 0.5).tolist() == [1, 3]  # the two highest variabilities
    assert select_region(stats, "easy", 0.25).tolist() == [0]
    assert select_region(stats, "hard", 0.5).tolist() == [1, 2]  # confidences 0.2 and 0.4
    assert select_region(stats, "easy", 1.0).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("region", ["ambiguous", "easy", "hard", "random"])
@pytest.mark.parametrize("fraction", [0.01, 0.33, 0.5, 1.0])
def test_selection_has_the_requested_size_and_region(region, fraction):
    rng = np.random.default_rng(0)
    stats = DataMap(rng.random(300), rng.random(300) / 2, rng.random(300))
    rows = select_region(stats, region, fraction, seed=1)
    assert len(rows) == max(1, round(fraction * 300)) and len(set(rows.tolist())) == len(rows)
    rest = np.setdiff1d(np.arange(300), rows)
    if len(rest) and region != "random":
        key = {"ambiguous": stats.variability, "easy": stats.confidence, "hard": -stats.confidence}[region]
        assert key[rows].min() >= key[rest].max()  # nothing left out is more typical of the region
    if region == "random":
        assert rows.tolist() == select_region(stats, region, fraction, seed=1).tolist()  # seeded
        assert fraction == 1.0 or rows.tolist() != select_region(stats, region, fraction, seed=2).tolist()


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_fraction_outside_zero_one_is_an_error(bad):
    with pytest.raises(ValueError, match="fraction must be in"):
        select_region(data_map(_dynamics()), "easy", bad)


@pytest.fixture
def model_dir(tmp_path):
    """A model directory holding only the dynamics of a text-pair training set."""
    examples = Examples(["a b", "c | d", "e", "f"], ["p1", "p2", "p3", "p4"], ["yes", "no", "yes", "no"],
                        "pairs.jsonl", ("premise", "hypothesis", "gold"))
    write_dynamics(tmp_path / "m", _dynamics(), examples)
    return tmp_path / "m"


def test_dynamics_round_trip(model_dir):
    dynamics, examples, fields = read_dynamics(model_dir)
    assert dynamics.exit_layers == (2, 4)
    np.testing.assert_array_equal(dynamics.gold_probability, _dynamics().gold_probability)
    np.testing.assert_array_equal(dynamics.correct, _dynamics().correct)
    assert examples.column_names == ["example", "text", "pair", "label"]
    assert fields == {"text_field": "premise", "pair_field": "hypothesis", "label_field": "gold", "source": "pairs.jsonl"}
    long = pq.read_table(model_dir / "dynamics" / "epochs.parquet")
    assert long.num_rows == 3 * 2 * 4
    assert long.column_names == ["example", "epoch", "exit_layer", "gold_probability", "correct"]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_select_command_writes_a_training_file(suffix, model_dir, tmp_path, capsys):
    out = tmp_path / f"ambiguous{suffix}"
    assert main(["select", "--model", str(model_dir), "--region", "ambiguous", "--fraction", "0.5",
                 "--out", str(out)]) == 0
    assert "2 of 4 training examples (ambiguous, 50.0%)" in capsys.readouterr().out
    # the training file's own field names: train reads it back with the same flags
    again = load_examples(str(out), text_field="premise", pair_field="hypothesis", label_field="gold")
    assert again.texts == ["c | d", "f"] and again.pairs == ["p2", "p4"] and again.labels == ["no", "no"]
    if suffix == ".jsonl":
        first = json.loads(out.read_text().splitlines()[0])
        assert first["example"] == 1 and first["confidence"] == pytest.approx(0.4)


def test_select_never_writes_over_its_training_file_and_over_others_only_when_asked(model_dir, tmp_path, capsys,
                                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)  # the dynamics' source, pairs.jsonl, is relative to the current directory
    source = tmp_path / "pairs.jsonl"
    source.write_text("the user's training data\n")
    argv = ["select", "--model", str(model_dir), "--region", "easy", "--fraction", "0.5", "--out"]
    for extra in ([], ["--overwrite"]):
        assert main([*argv, str(source), *extra]) == 2
        assert "is the training file these examples come from" in capsys.readouterr().err
    assert source.read_text() == "the user's training data\n"
    other = tmp_path / "other.jsonl"
    other.write_text("kept\n")
    assert main([*argv, str(other)]) == 2 and "exists: give another --out, or --overwrite" in capsys.readouterr().err
    assert other.read_text() == "kept\n"
    assert main([*argv, str(other), "--overwrite"]) == 0 and len(other.read_text().splitlines()) == 2


def test_select_knows_its_training_file_given_relatively_from_another_directory(tmp_path, monkeypatch, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("the user's training data\n")
    monkeypatch.chdir(tmp_path / "data")
    examples = Examples(["a", "b", "c", "d"], None, ["x", "y", "x", "y"], "train.jsonl")
    write_dynamics(tmp_path / "m", _dynamics(), examples)
    assert read_dynamics(tmp_path / "m")[2]["source"] == str(tmp_path / "data" / "train.jsonl")
    monkeypatch.chdir(tmp_path)  # "train.jsonl" here would name nothing
    assert main(["select", "--model", "m", "--region", "easy", "--fraction", "0.5", "--out", "data/train.jsonl",
                 "--overwrite"]) == 2
    assert "is the training file these examples come from" in capsys.readouterr().err
    assert (tmp_path / "data" / "train.jsonl").read_text() == "the user's training data\n"


def test_select_refuses_a_training_field_named_like_a_column_it_adds(tmp_path, capsys):
    examples = Examples(["a", "b", "c", "d"], None, ["x", "y", "x", "y"], "t.jsonl", ("confidence", None, "label"))
    write_dynamics(tmp_path / "m", _dynamics(), examples)
    assert main(["select", "--model", str(tmp_path / "m"), "--region", "easy", "--fraction", "0.5",
                 "--out", str(tmp_path / "s.parquet")]) == 2
    assert "['confidence'] have the name of a column select adds" in capsys.readouterr().err
    assert not (tmp_path / "s.parquet").exists()


def test_select_refuses_csv(model_dir, tmp_path, capsys):
    assert main(["select", "--model", str(model_dir), "--region", "easy", "--fraction", "0.5",
                 "--out", str(tmp_path / "s.csv")]) == 2
    assert "give a .jsonl or .parquet file" in capsys.readouterr().err


def test_datamap_table_cells_escape_markdown_and_html(tmp_path):
    examples = Examples(["C:\\|x <b>bold</b>", "two\nlines", "c", "d"], None, ["a", "b", "a", "b"], "t.jsonl")
    write_dynamics(tmp_path / "m", _dynamics(), examples)
    write_data_map(tmp_path / "m", tmp_path / "map")
    table = (tmp_path / "map" / "datamap.md").read_text()
    assert "| C:\\\\\\|x &lt;b&gt;bold&lt;/b&gt; |" in table and "| two lines |" in table


def test_datamap_command_writes_plot_table_and_statistics(model_dir, tmp_path, capsys):
    out = tmp_path / "map"
    assert main(["datamap", "--model", str(model_dir), "--out", str(out), "--top", "2"]) == 0
    assert (out / "datamap.png").stat().st_size > 10_000
    table = (out / "datamap.md").read_text()
    ambiguous = table.split("## ambiguous")[1].split("##")[0]
    assert "| 1 | no |" in ambiguous and "c \\| d ‖ p2" in ambiguous and "| 3 | no |" in ambiguous
    assert "| 0 | yes | 0.900 |" in table.split("## easy")[1].split("##")[0]
    stats = pq.read_table(out / "datamap.parquet")
    assert stats.num_rows == 4 and stats["correctness"].to_pylist() == pytest.approx([1.0, 1 / 3, 0.0, 2 / 3])


def test_commands_on_a_model_without_dynamics_are_one_line_errors(tmp_path, capsys):
    for argv in (["datamap", "--out", str(tmp_path / "o")], ["select", "--region", "easy", "--fraction", "0.3",
                                                              "--out", str(tmp_path / "o.jsonl")]):
        assert main([argv[0], "--model", str(tmp_path), *argv[1:]]) == 2
        assert "no training dynamics" in capsys.readouterr().err


def test_select_never_writes_into_the_training_folder_it_came_from(tmp_path, monkeypatch, capsys):
    """A training folder is read whole: a selection written into it would replace a file of it, or join it."""
    (tmp_path / "fold" / "sub").mkdir(parents=True)
    (tmp_path / "fold" / "train.jsonl").write_text("the user's training data\n")
    monkeypatch.chdir(tmp_path)
    examples = Examples(["a", "b", "c", "d"], None, ["x", "y", "x", "y"], "fold")
    write_dynamics(tmp_path / "m", _dynamics(), examples)
    argv = ["select", "--model", "m", "--region", "easy", "--fraction", "0.5", "--overwrite", "--out"]
    for out in ("fold/train.jsonl", "fold/sub/new.jsonl", str(tmp_path / "fold" / "new.parquet")):
        assert main([*argv, out]) == 2
        assert "is inside the training folder these examples come from" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path / "fold" / "sub")  # "fold" as train was given it names nothing from here
    assert main([*argv[:2], "../../m", *argv[3:], "../new.jsonl"]) == 2
    assert "is inside the training folder these examples come from" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert sorted(p.name for p in (tmp_path / "fold").rglob("*")) == ["sub", "train.jsonl"]
    assert (tmp_path / "fold" / "train.jsonl").read_text() == "the user's training data\n"
    assert main([*argv, "selected.jsonl"]) == 0 and len((tmp_path / "selected.jsonl").read_text().splitlines()) == 2
