"""The rightsize CLI end to end on a tiny saved model: Parquet columns, types and counts, dead letters, help."""

import json

import pyarrow.parquet as pq
import pytest

from flows.cli import main
from models import EarlyExitClassifier
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
    columns = {f.name: str(f.type) for f in table.schema}
    assert columns.items() >= DESIGN_COLUMNS.items()  # DESIGN.md: "at least these columns"
    assert set(columns) - set(DESIGN_COLUMNS) == {"truncated", "dtype"} and columns["truncated"] == "bool"
    assert table.schema.equals(PREDICTION_SCHEMA, check_metadata=False)
    data = table.to_pydict()
    assert data["id"] == [f"d{i}" for i in range(len(TEXTS))]
    assert set(data["run_id"]) == {"r1"} and data["threshold"] == pytest.approx([0.8] * len(TEXTS))
    assert set(data["dtype"]) == {"float32"}
    assert set(data["num_layers"]) == {4} and all(1 <= e <= 4 for e in data["exit_layer"])
    letters = [json.loads(line) for line in (tmp_path / "preds.deadletter.jsonl").read_text().splitlines()]
    assert [(d["position"], d["reason"].split(":")[0]) for d in letters] == [
        (9, "field 'text' is empty"), (10, "invalid JSON")]
    assert len(data["id"]) + len(letters) == len(rows) + 1
    printed = capsys.readouterr().out
    assert f"labelled {len(TEXTS)} documents" in printed and "2 inputs could not be labelled" in printed


def test_predict_labels_a_json_array_the_way_train_reads_it(model_dir, tmp_path):
    """A .json file holding one array (json.dump of the records): each object element is a prediction with the
    labels JSON Lines would give; other elements are dead letters, nothing else is lost."""
    rows = [{"id": f"d{i}", "text": t} for i, t in enumerate(TEXTS)]
    (tmp_path / "lines.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "array.json").write_text(json.dumps(rows + ["a string"], indent=2))
    labels = {}
    for name in ("lines.jsonl", "array.json"):
        out = tmp_path / f"{name}.parquet"
        assert main(["predict", "--model", str(model_dir), "--input", str(tmp_path / name), "--output", str(out)]) == 0
        labels[name] = pq.read_table(out, columns=["id", "label", "exit_layer"]).to_pylist()
    assert labels["array.json"] == labels["lines.jsonl"] and len(labels["array.json"]) == len(TEXTS)
    (letter,) = [json.loads(line) for line in (tmp_path / "array.json.deadletter.jsonl").read_text().splitlines()]
    assert (letter["position"], letter["raw"]) == (len(TEXTS) + 1, '"a string"')


def test_dead_letters_that_cannot_be_moved_are_kept_and_named(model_dir, tmp_path, monkeypatch, capsys):
    import flows.predict

    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"text": TEXTS[0]}) + "\nnot json\n")
    real_publish = flows.predict.publish

    def publish(staging, final):
        if final.endswith(".deadletter.jsonl"):
            raise OSError("disk full")
        real_publish(staging, final)

    monkeypatch.setattr(flows.predict, "publish", publish)
    out = tmp_path / "p.parquet"
    assert main(["predict", "--model", str(model_dir), "--input", str(source), "--output", str(out)]) == 1
    error = capsys.readouterr().err
    assert "1 dead letters could not be moved from " in error and "disk full" in error
    (staged,) = (tmp_path / ".staging").glob("p.deadletter.jsonl.*")
    assert str(staged) in error and json.loads(staged.read_text())["raw"] == "not json"
    assert pq.read_table(out).num_rows == 1


def test_predict_reads_the_next_chunk_ahead_with_the_same_labels(model_dir, tmp_path, monkeypatch):
    """Chunks of 3: every file is read and every chunk tokenised in the read-ahead thread (none again while
    labelling), rows keep the input order across chunks and files, a bad record is a dead letter, and the file
    is the one that reading in turn (read_ahead=False) writes, with the labels of one ``predict`` call."""
    import threading

    import flows.predict
    from models import EarlyExitClassifier

    threads = {"read_file": [], "encode": []}
    real_read, real_encode = flows.predict.read_file, EarlyExitClassifier.encode

    def read_file(*args, **kwargs):
        threads["read_file"].append(threading.current_thread().name)
        yield from real_read(*args, **kwargs)

    def encode(self, *args, **kwargs):
        threads["encode"].append(threading.current_thread().name)
        return real_encode(self, *args, **kwargs)

    monkeypatch.setattr(flows.predict, "read_file", read_file)
    monkeypatch.setattr(EarlyExitClassifier, "encode", encode)
    for name in ("a", "b"):  # two files, so reading the second also happens ahead
        lines = [json.dumps({"id": f"{name}{i}", "text": t}) for i, t in enumerate(TEXTS)]
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / f"{name}.jsonl").write_text("\n".join(lines[:4] + ["{broken"] + lines[4:]) + "\n")
    model = EarlyExitClassifier.from_pretrained(model_dir)
    tables = {}
    for read_ahead in (True, False):
        out = tmp_path / f"p-{read_ahead}.parquet"
        flows.predict.predict_file(model, str(tmp_path / "in" / "*.jsonl"), str(out), chunk_size=3, read_ahead=read_ahead,
                                   run_id="r")
        tables[read_ahead] = pq.read_table(out)
        letters = (tmp_path / f"p-{read_ahead}.deadletter.jsonl").read_text().splitlines()
        assert [json.loads(line)["position"] for line in letters] == [5, 5]  # line 5 of each file
        if read_ahead:
            assert len(threads["encode"]) == 6  # 2 x 9 records in chunks of 3
            assert all(name.startswith("rightsize-read") for names in threads.values() for name in names)
    assert tables[True].equals(tables[False])
    rows = tables[True].to_pylist()
    assert [r["id"] for r in rows] == [f"{name}{i}" for name in "ab" for i in range(len(TEXTS))]
    expected = model.predict(TEXTS + TEXTS)
    assert [(r["label"], r["exit_layer"]) for r in rows] == [(p.label, p.exit_layer) for p in expected]
    assert [r["confidence"] for r in rows] == pytest.approx([p.confidence for p in expected], abs=1e-6)


def test_an_interrupt_while_labelling_stops_the_read_ahead_and_keeps_no_output(model_dir, tmp_path, monkeypatch):
    """Ctrl-C during the first chunk: the read-ahead thread stops at its next record instead of reading the
    rest of its chunk, no thread is left running, and no output file appears."""
    import threading
    import time

    import flows.predict
    from models import EarlyExitClassifier

    read = []
    real_read = flows.predict.read_file

    def slow_read_file(*args, **kwargs):
        for record in real_read(*args, **kwargs):
            time.sleep(0.01)
            read.append(record)
            yield record

    def interrupted(self, *args, **kwargs):
        time.sleep(0.05)  # labelling takes time: the read-ahead thread is into the second chunk by now
        raise KeyboardInterrupt

    monkeypatch.setattr(flows.predict, "read_file", slow_read_file)
    monkeypatch.setattr(EarlyExitClassifier, "predict", interrupted)
    (tmp_path / "in.txt").write_text("".join(f"document {i}\n" for i in range(200)))
    with pytest.raises(KeyboardInterrupt):
        flows.predict.predict_file(EarlyExitClassifier.from_pretrained(model_dir), str(tmp_path / "in.txt"),
                                   str(tmp_path / "p.parquet"), chunk_size=50, read_ahead=True)
    assert 50 <= len(read) < 100  # the first chunk and a few records of the second (about 5), not all 50 of it
    assert not [t for t in threading.enumerate() if t.name.startswith("rightsize-read")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_predict_in_bfloat16_with_threads(model_dir, tmp_path, capsys):
    import torch

    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n")
    threads = torch.get_num_threads()
    try:
        assert main(["predict", "--model", str(model_dir), "--input", str(source), "--output",
                     str(tmp_path / "p.parquet"), "--dtype", "bfloat16", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert set(pq.read_table(tmp_path / "p.parquet")["dtype"].to_pylist()) == {"bfloat16"}
    assert "precision: bfloat16, 1 threads" in capsys.readouterr().out


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


def test_a_missing_file_system_package_and_an_interrupt_are_one_line(model_dir, tmp_path, capsys, monkeypatch):
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        assert main(["predict", "--model", str(model_dir), "--input", "gs://no-bucket/*.jsonl",
                     "--output", str(tmp_path / "p.parquet")]) == 1
        assert capsys.readouterr().err.strip().splitlines() == [
            "rightsize predict: error: Please install gcsfs to access Google Storage (-v for the traceback)"]
    (tmp_path / "in.jsonl").write_text('{"text": "a document"}\n')

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(EarlyExitClassifier, "predict", interrupt)  # Ctrl-C while labelling
    assert main(["predict", "--model", str(model_dir), "--input", str(tmp_path / "in.jsonl"),
                 "--output", str(tmp_path / "p.parquet")]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "rightsize predict: interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]  # nothing half-written left in place


@pytest.mark.parametrize("flag,value,message", [
    ("--threads", "0", "threads must be >= 1, got 0"),
    ("--threads", "-3", "threads must be >= 1, got -3"),
    ("--threshold=-0.5", None, "threshold must be a finite number >= 0"),
    ("--threshold=nan", None, "threshold must be a finite number >= 0"),
    ("--output", "{tmp}/new-folder/", "is a folder: give a file name"),
    ("--output", "{tmp}/new/deep/preds.csv", "must end in .parquet: the predictions are written as Parquet"),
    ("--output", "{tmp}/a-folder", "must end in .parquet"),
    ("--output", "{tmp}/dir.parquet", "is a folder, where this run writes a file"),
    ("--output", "{tmp}/a-folder.parquet", "a-folder.deadletter.jsonl' is a folder"),  # the dead letters' name
    ("--output", "{tmp}/a-file/out.parquet", "cannot be written"),
])
def test_predict_refuses_bad_settings_before_any_work(model_dir, tmp_path, capsys, monkeypatch, flag, value, message):
    if not (flag == "--output" and value.endswith(".parquet")):  # checked on disk after the model loads; the
        monkeypatch.setattr(EarlyExitClassifier, "from_pretrained", pytest.fail)  # rest before it
    (tmp_path / "dir.parquet").mkdir()
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "a-folder.deadletter.jsonl").mkdir()
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "in.jsonl").write_text('{"text": "one"}\n')
    flags = {"--model": str(model_dir), "--input": str(tmp_path / "in.jsonl"), "--output": str(tmp_path / "o.parquet"),
             flag: None if value is None else value.format(tmp=tmp_path)}
    argv = ["predict", *(x for item in flags.items() for x in item if x is not None)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "a-folder", "a-folder.deadletter.jsonl",
                                                          "dir.parquet", "in.jsonl"]  # nothing written
    assert list((tmp_path / "a-folder").iterdir()) == list((tmp_path / "a-folder.deadletter.jsonl").iterdir()) == []


def test_predict_never_replaces_a_file_that_is_not_its_predictions(model_dir, tmp_path, capsys):
    """An output name that is one of the input's data files (the glob matches it): refused, the file kept; an
    earlier run's predictions at that name are replaced as before."""
    import pyarrow as pa

    data = pa.table({"text": ["one"]})
    for name in ("a.parquet", "b.parquet"):
        pq.write_table(data, tmp_path / name)
    argv = ["predict", "--model", str(model_dir), "--input", str(tmp_path / "*.parquet"), "--output"]
    assert main([*argv, str(tmp_path / "b.parquet")]) == 2
    assert "exists and is not a rightsize predictions file" in capsys.readouterr().err
    assert pq.read_table(tmp_path / "b.parquet").equals(data)
    assert main([*argv, str(tmp_path / "p.parquet")]) == main([*argv, str(tmp_path / "p.parquet")]) == 0
    assert pq.read_table(tmp_path / "p.parquet").num_rows == 2  # the second run did not read the first's output


@pytest.mark.parametrize("command", ["train", "predict", "calibrate", "label", "run", "serve", "report", "datamap",
                                     "select", None])  # None: rightsize --help
def test_help_has_examples(command, capsys):
    with pytest.raises(SystemExit) as exit:
        main([command, "--help"] if command else ["--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"  rightsize {command or ''}" in out.split("examples:")[1]
    # every example parses: its flags exist and take what it gives them (the way main() checks them)
    import shlex

    from flows.cli import build_parser
    from pipelines.label_config import unknown_beam_flags

    text = out.split("examples:")[1].replace("\\\n", " ")
    examples = [line.split("#")[0].split("rightsize ", 1)[1] for line in text.splitlines()
                if line.startswith("  ") and "rightsize " in line]  # indented: examples, not prose
    assert examples
    for example in examples:  # after any VAR=value before the command
        args, extra = build_parser().parse_known_args(shlex.split(example))  # may show a follow-up command
        assert not (unknown_beam_flags(extra) if args.command == "label" else extra), example


def test_report_command_writes_the_report(tmp_path, capsys):
    from tests.ops.test_accounting import write_runs

    runs = write_runs(tmp_path)
    assert main(["report", "--predictions", runs, "--out", str(tmp_path / "r"),
                 "--price-per-hour", "3", "--devices", "2"]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["documents"] == 4 and summary["cost"] == pytest.approx(3.0)
    printed = capsys.readouterr().out
    assert "documents labelled: 4" in printed and "report.html" in printed
    assert main(["report", "--predictions", str(tmp_path / "none*.parquet"), "--out", str(tmp_path / "x")]) == 2
    (tmp_path / "a-file").write_text("")
    for out in ("a-file", "a-file/r"):
        assert main(["report", "--predictions", runs, "--out", str(tmp_path / out)]) == 2
        assert "cannot be made: " in capsys.readouterr().err
    for url in ("gs://bucket/r", "memory://r"):  # gcsfs is not installed; memory:// is fsspec's own
        assert main(["report", "--predictions", runs, "--out", url]) == 2
        assert "written to a local folder, not a remote URL" in capsys.readouterr().err
    assert main(["report", "--predictions", runs, "--out", f"file://{tmp_path}/u"]) == 0
    assert (tmp_path / "u" / "summary.json").is_file()


def _labelled_file(tmp_path) -> str:
    path = tmp_path / "dev.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": "ab"[i % 2]}) + "\n" for i, t in enumerate(TEXTS)))
    return str(path)


def _exits_with_usage_error(argv, capsys) -> str:
    """argparse's way out: SystemExit 2 before any command runs; returns what it printed."""
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    return capsys.readouterr().err


def test_flag_prefixes_are_not_flags(tmp_path, capsys):
    data = _labelled_file(tmp_path)
    required = ["--model", str(tmp_path / "m"), "--train", data, "--dev", data, "--out", str(tmp_path / "o")]
    # with prefix matching, '--epoch 2' was read as '--epochs 2' (and '--mode sweet' as '--model sweet')
    err = _exits_with_usage_error(["train", *required, "--epoch", "2"], capsys)
    assert "unrecognized arguments: --epoch 2" in err
    assert "required: --model" in _exits_with_usage_error(["train", "--mod", "x", *required[2:]], capsys)
    err = _exits_with_usage_error(["--verb", "report", "--predictions", "p.parquet", "--out", "o"], capsys)
    assert "unrecognized arguments: --verb" in err
    assert not (tmp_path / "o").exists()


def test_label_passes_flags_beam_knows(model_dir, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    assert main(["label", "--model", str(model_dir), "--input", f"{corpus}/*.jsonl", "--output", str(tmp_path / "out"),
                 "--run-id", "r", "--runner=DirectRunner", "--direct_num_workers=2"]) == 0
    assert f"{len(TEXTS)} labelled" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "out" / "r" / "manifest.json").read_text())
    assert manifest["runner"] == "DirectRunner"


@pytest.mark.parametrize("flag", ["--no_such_flag=1", "--direct_num_worker=2"])
def test_label_rejects_flags_beam_does_not_know(flag, tmp_path, capsys):
    argv = ["label", "--model", str(tmp_path), "--input", "x/*.jsonl", "--output", str(tmp_path / "out"),
            "--runner=DirectRunner", flag]
    err = _exits_with_usage_error(argv, capsys)
    assert f"unrecognized arguments: {flag}" in err and "--runner" not in err.split("unrecognized")[1]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv,message", [
    (["train", "--model", "./missing"], "./missing: no such file or directory"),
    (["train", "--model", "missing_dir"], "missing_dir: neither a local directory nor a model the Hugging Face Hub"),
    (["train", "--train", "missing.jsonl"], "missing.jsonl: no such file"),
    (["train", "--train", "./data/train"], "./data/train: no such file or directory"),
    (["train", "--train", "data/train"], "data/train: no such file or directory, nor a dataset the Hugging Face Hub"),
    (["predict", "--model", "missing_dir"], "missing_dir: no such model directory"),
    (["calibrate", "--model", "missing_dir"], "missing_dir: no such model directory"),
])
def test_missing_paths_are_one_line_errors(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # relative names resolve here, where none of them exists
    data = _labelled_file(tmp_path)
    defaults = {"train": {"--model": "minilm", "--train": data, "--dev": data, "--out": "out"},
                "predict": {"--model": "m", "--input": data, "--output": "o.parquet"},
                "calibrate": {"--model": "m", "--data": data}}[argv[0]]
    flags = {**defaults, argv[1]: argv[2]}
    assert main([argv[0], *(x for item in flags.items() for x in item)]) == 2
    err = capsys.readouterr().err
    assert f"rightsize {argv[0]}: error: {message}" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_train_out_is_checked_first_and_an_earlier_model_is_replaced_whole(backbone_dir, tmp_path, capsys):
    data = _labelled_file(tmp_path)
    argv = ["train", "--model", backbone_dir, "--train", data, "--dev", data, "--epochs", "2", "--max-length", "16",
            "--batch-size", "4", "--out"]
    (tmp_path / "a-file").write_text("")
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "config.json").write_text('{"mine": 1}')
    for out, message in (("a-file", "is a file"), ("project", "is not a rightsize model folder")):
        assert main([*argv, str(tmp_path / out)]) == 2 and message in capsys.readouterr().err
    assert (tmp_path / "project" / "config.json").read_text() == '{"mine": 1}'

    model = tmp_path / "model"
    assert main([*argv, str(model)]) == 0 and (model / "dynamics").is_dir()
    (model / "calibration.json").write_text("{}")  # what calibrating this model would have added
    (model / "datamap").mkdir()  # the user's own files beside the model: replacing it would delete them
    (model / "notes.txt").write_text("mine")
    assert main([*argv, str(model), "--no-dynamics", "--epochs", "1"]) == 2
    assert "also holds datamap, notes.txt, which replacing the model would delete" in capsys.readouterr().err
    assert (model / "notes.txt").read_text() == "mine" and (model / "dynamics").is_dir()
    (model / "notes.txt").unlink()
    (model / "datamap").rmdir()
    (model / ".DS_Store").write_bytes(b"\0")  # hidden: goes with the old model
    (tmp_path / ".staging" / "model.0123456789ab").mkdir(parents=True)  # what a killed train left half-written
    assert main([*argv, str(model), "--no-dynamics", "--epochs", "1"]) == 0
    assert not (model / "dynamics").exists() and not (model / "calibration.json").exists()
    assert json.loads((model / "training.json").read_text())["config"]["epochs"] == 1
    assert not (tmp_path / ".staging").exists()


def test_training_that_diverges_fails_instead_of_saving_nan_weights(backbone_dir, tmp_path, capsys):
    data = _labelled_file(tmp_path)
    argv = ["train", "--model", backbone_dir, "--train", data, "--dev", data, "--epochs", "1", "--max-length", "16",
            "--no-dynamics", "--out", str(tmp_path / "m")]
    assert main([*argv, "--lr", "inf"]) == 2 and "lr must be a finite number > 0" in capsys.readouterr().err
    assert main([*argv, "--lr", "1e30", "--batch-size", "2"]) == 2
    assert "training diverged in epoch 1: the weights are no longer finite" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_two_misleading_beam_warnings_are_left_out_unless_verbose(caplog):
    """Beam logs both in every run here (the BigQuery client is missing; "memory usage cannot be fetched" on
    Linux); both are called from Beam itself, so a change of Beam's wording shows here."""
    import importlib
    import logging

    import apache_beam.io.gcp.internal.clients.bigquery as bigquery
    from apache_beam.ml.inference.base import _get_current_process_memory_in_bytes

    from flows.cli import BEAM_NOISE, _DropBeamNoise, configure_logging

    def warnings_logged() -> list[str]:
        caplog.clear()
        importlib.reload(bigquery)  # logs its warning at import
        _get_current_process_memory_in_bytes()  # what RunInference calls after loading a model
        logging.warning("a warning of our own")
        return [record.getMessage() for record in caplog.records]

    root = logging.getLogger()
    filters = list(root.filters)
    root.filters[:] = [f for f in filters if not isinstance(f, _DropBeamNoise)]  # left by main() in other tests
    try:
        with caplog.at_level(logging.WARNING):
            configure_logging(verbose=True)
            loud = warnings_logged()
            configure_logging(verbose=False)
            quiet = warnings_logged()
    finally:
        root.filters[:] = filters
    assert [message.startswith(BEAM_NOISE) for message in loud] == [True, True, False]
    assert quiet == ["a warning of our own"]
