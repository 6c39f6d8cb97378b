"""The rightsize CLI end to end on a tiny saved model: Parquet columns, types and counts, dead letters, help."""

import json

import pyarrow.parquet as pq
import pytest

from flows.cli import main
from ops.predictions import PREDICTION_SCHEMA
from tests.conftest import TEXTS, tiny_classifier

DESIGN_COLUMNS = {
    "id": "string", "label": "string", "confidence": "float", "exit_layer": "int16", "num_layers": "int16",
    "num_tokens": "int32", "flops": "int64", "full_flops": "int64", "threshold": "float", "model_id": "string",
    "run_id": "string",
}


@pytest.fixture(scope="module")
def model_dir(tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "model"
    tiny_classifier(tokenizer, temperatures=(0.03,) * 4, threshold=0.8).save_pretrained(path)
    return path


def test_predict_writes_design_columns_and_dead_letters(model_dir, tmp_path, capsys):
    rows = [{"id": f"d{i}", "text": t} for i, t in enumerate(TEXTS)] + [{"id": "bad", "text": ""}]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    out = tmp_path / "preds.parquet"
    assert main(["predict", "--model", str(model_dir), "--input", str(source), "--output", str(out),
                 "--run-id", "r1", "--batch-size", "3"]) == 0
    table = pq.read_table(out)
    assert {f.name: str(f.type) for f in table.schema} == DESIGN_COLUMNS
    assert table.schema.equals(PREDICTION_SCHEMA, check_metadata=False)
    data = table.to_pydict()
    assert data["id"] == [f"d{i}" for i in range(len(TEXTS))]
    assert set(data["run_id"]) == {"r1"} and data["threshold"] == pytest.approx([0.8] * len(TEXTS))
    assert set(data["num_layers"]) == {4} and all(1 <= e <= 4 for e in data["exit_layer"])
    letters = [json.loads(line) for line in (tmp_path / "preds.deadletter.jsonl").read_text().splitlines()]
    assert [(d["position"], d["reason"].split(":")[0]) for d in letters] == [
        (9, "field 'text' is empty"), (10, "invalid JSON")]
    assert len(data["id"]) + len(letters) == len(rows) + 1
    printed = capsys.readouterr().out
    assert f"labelled {len(TEXTS)} documents" in printed and "2 inputs could not be labelled" in printed


def test_predict_threshold_above_one_runs_full_depth(model_dir, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "full.parquet"
    assert main(["predict", "--model", str(model_dir), "--input", str(source), "--output", str(out),
                 "--threshold", "1.5"]) == 0
    data = pq.read_table(out).to_pydict()
    assert set(data["exit_layer"]) == {4}
    assert not (tmp_path / "full.deadletter.jsonl").exists()


def test_user_errors_are_one_line(model_dir, tmp_path, capsys):
    assert main(["predict", "--model", str(tmp_path), "--input", "x.jsonl", "--output", "o.parquet"]) == 2
    assert "rightsize.json is missing" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "predict", "calibrate", "label", "run", "serve", "report"])
def test_help_has_examples(command, capsys):
    with pytest.raises(SystemExit) as exit:
        main([command, "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"  rightsize {command} --" in out.split("examples:")[1]


def test_report_command_writes_the_report(tmp_path, capsys):
    from tests.ops.test_accounting import write_runs

    assert main(["report", "--predictions", write_runs(tmp_path), "--out", str(tmp_path / "r"),
                 "--price-per-hour", "3", "--devices", "2"]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["documents"] == 4 and summary["cost"] == pytest.approx(3.0)
    printed = capsys.readouterr().out
    assert "documents labelled: 4" in printed and "report.html" in printed
    assert main(["report", "--predictions", str(tmp_path / "none*.parquet"), "--out", str(tmp_path / "x")]) == 2
