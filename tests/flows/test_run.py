"""The end-to-end flow on a tiny random model and a tiny corpus, under the Prefect test server: what it
writes, what a second identical run reuses, and what a one-byte change to the training data redoes."""

import json
import re
from pathlib import Path

import pytest

from flows.config import load_config
from flows.run import RUN_FILE, rightsize_run
from tests.conftest import topic_examples


def _jsonl(path: Path, examples) -> None:
    path.write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in zip(examples.texts, examples.labels)))


@pytest.fixture()
def workspace(tmp_path, backbone_dir):
    data = tmp_path / "data"
    data.mkdir()
    _jsonl(data / "train.jsonl", topic_examples(96, 0))
    _jsonl(data / "dev.jsonl", topic_examples(40, 1))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    texts = topic_examples(30, 2).texts
    (corpus / "a.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts))
                                    + "not json\n")
    (tmp_path / "run.toml").write_text(f"""
output = "out"
[data]
train = "data/train.jsonl"
dev = "data/dev.jsonl"
[train]
model = "{backbone_dir}"
exits = [2, 4]
epochs = 2
max_length = 32
batch_size = 16
lr = 1e-3
[calibrate]
target_drop = 0.05
[label]
input = "corpus/*.jsonl"
batch_size = 8
chunk_size = 16
[report]
price_per_hour = 1.5
""")
    return tmp_path


def _run(root: Path) -> dict:
    return rightsize_run(config_file=str(root / "run.toml"), workdir=str(root))


def test_end_to_end_then_cached_then_retrained(prefect_server, workspace):
    first = _run(workspace)
    out = workspace / "out"
    assert not first["training_cached"] and not first["calibration_cached"] and not first["labelling_skipped"]
    assert first["label_counts"] == {"documents_in": 31, "labelled": 30, "dead_letters": 1, "truncated": 0,
                                     "exit_layers": first["label_counts"]["exit_layers"]}
    assert sum(first["label_counts"]["exit_layers"].values()) == 30
    summary = json.loads(Path(first["report"]["summary"]).read_text())
    assert summary["documents"] == 30 and summary["dead_letters"] == 1 and summary["cost"] > 0
    assert Path(first["report"]["html"]).is_file() and Path(first["report"]["markdown"]).is_file()
    assert json.loads((out / RUN_FILE).read_text())["run_id"] == first["run_id"]
    assert not any(Path(first["trained_model"]).glob("checkpoint*"))  # removed once training finished
    weights = Path(first["trained_model"], "model.safetensors").stat().st_mtime_ns

    second = _run(workspace)  # nothing changed: nothing is trained, calibrated or labelled again
    assert second["training_cached"] and second["calibration_cached"] and second["labelling_skipped"]
    assert (second["trained_model"], second["model"], second["run_id"]) == (
        first["trained_model"], first["model"], first["run_id"])
    assert Path(first["trained_model"], "model.safetensors").stat().st_mtime_ns == weights
    assert len(list((out / "models").glob("trained-*"))) == 1

    train_file = workspace / "data" / "train.jsonl"  # one byte changed: retrain, recalibrate, relabel
    train_file.write_bytes(train_file.read_bytes().replace(b"goal", b"goat", 1))
    third = _run(workspace)
    assert not third["training_cached"] and not third["calibration_cached"] and not third["labelling_skipped"]
    assert third["trained_model"] != first["trained_model"] and third["run_id"] != first["run_id"]
    assert len(list((out / "models").glob("trained-*"))) == 2
    report = json.loads(Path(third["report"]["summary"]).read_text())
    assert report["documents"] == 60 and len(report["runs"]) == 2  # the report covers both runs: a trend

    # A cache entry whose output was deleted is not trusted: the step runs again.
    import shutil
    shutil.rmtree(third["model"])
    fourth = _run(workspace)
    assert fourth["training_cached"] and not fourth["calibration_cached"]
    assert Path(fourth["model"], "rightsize.json").is_file()


def test_artifacts_are_published(prefect_server, workspace):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    _run(workspace)
    with get_client(sync_client=True) as client:
        def latest(key):
            found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
            assert found, f"no artifact {key}"
            return found[-1]

        calibration = latest("rightsize-calibration")
        assert calibration.type == "markdown" and "Threshold" in calibration.data
        table = latest("rightsize-calibration-exits")
        rows = json.loads(table.data) if isinstance(table.data, str) else table.data
        assert table.type == "table" and [r["exit_layer"] for r in rows] == [2, 4]
        assert latest("rightsize-cost-report").type == "markdown"
        link = latest("rightsize-cost-report-html")
        # Prefect stores a link artifact as markdown: [report.html](file:///.../report.html)
        assert re.fullmatch(r"\[report\.html\]\(file://.+/report\.html\)", link.data), link.data


def test_config_errors_name_file_section_and_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('output = "o"\n[data]\ntrain = "t"\ndev = "d"\n[train]\nmodel = "m"\nepoch = 2\n[label]\ninput = "x"\n')
    with pytest.raises(ValueError, match=r"bad.toml: \[train\] has unknown key\(s\) \['epoch'\]"):
        load_config(bad)
    bad.write_text('output = "o"\n[data]\ntrain = "t"\ndev = "d"\n[train]\nmodel = "m"\n[label]\ninput = "x"\n'
                   '[calibrate]\ntarget_drop = 0.01\nflops_budget = 0.5\n')
    with pytest.raises(ValueError, match=r"\[calibrate\]: give exactly one of"):
        load_config(bad)
    bad.write_text('output = "o"\n[train]\nmodel = "m"\n')
    with pytest.raises(ValueError, match="section 'data' is missing"):
        load_config(bad)
    with pytest.raises(FileNotFoundError, match="no such config file"):
        load_config(tmp_path / "missing.toml")


def test_example_config_loads_with_every_section():
    config = load_config(Path(__file__).parents[2] / "examples" / "bbc_demo.toml")
    assert config.train.model == "minilm" and config.train.exits == (1, 2, 3, 4, 5, 6)
    assert config.calibrate.target_drop == 0.01 and config.report.price_per_hour == 0.10
    assert config.label.beam_args == ("--runner=DirectRunner",)


def test_config_without_calibrate_section_targets_one_point(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('output = "o"\n[data]\ntrain = "t"\ndev = "d"\n[train]\nmodel = "m"\n[label]\ninput = "x"\n')
    assert load_config(path).calibrate.target_drop == 0.01
    path.write_text(path.read_text() + "[calibrate]\nfit_fraction = 0.6\n")
    config = load_config(path)
    assert (config.calibrate.target_drop, config.calibrate.fit_fraction) == (0.01, 0.6)


@pytest.mark.parametrize("extra, message", [
    ("[label]\ninput = 'x'\nbatch_size = 0\n", "batch_size"),
    ("[label]\ninput = 'x'\nbeam_args = '--runner=DataflowRunner'\n", "beam_args must be an array"),
    ("[label]\ninput = 'x'\nbeam_args = ['--direct_num_worker=2']\n", "Beam does not know.*--direct_num_worker=2"),
    ("[label]\ninput = 'x'\nmodel_copies = 0\n", "model_copies"),
    ("[label]\ninput = 'x'\nmax_batch_duration_secs = 10\n", "needs a runner with stateful processing"),
    ("[label]\ninput = 'x'\nrun_id = '../nightly'\n", "must be one plain folder name"),
    ("[label]\ninput = 'x'\nthreshold = -1.0\n", "threshold must be a finite number >= 0"),
    ("[label]\ninput = 'x'\n[report]\ndevices = 0\n", "devices"),
    ("[label]\ninput = 'x'\nbeam_args = ['--runner=NoSuchRunner']\n", "--runner 'NoSuchRunner' is not a Beam runner"),
    ("[label]\ninput = 'x'\npair_field = 'hypothesis'\n", r"\[data\] pair_field is None but \[label\] pair_field is 'hypothesis'"),
])
def test_step_settings_are_checked_when_the_config_is_read(tmp_path, extra, message):
    path = tmp_path / "c.toml"
    path.write_text('output = "o"\n[data]\ntrain = "t"\ndev = "d"\n[train]\nmodel = "m"\n' + extra)
    with pytest.raises(ValueError, match=message):
        load_config(path)


@pytest.mark.parametrize("section, line, message", [
    ("calibrate", 'target_drop = "0.05"', r"\[calibrate\] target_drop must be float \| None, got '0.05'"),
    ("train", 'dynamics = "false"', r"\[train\] dynamics must be bool, got 'false'"),
    ("train", "epochs = 2.5", r"\[train\] epochs must be int, got 2.5"),
    ("train", 'exits = ["2", "4"]', r"\[train\] exits must be tuple\[int, \.\.\.\] \| None, got \('2', '4'\)"),
    ("data", "text_field = 5", r"\[data\] text_field must be str, got 5"),
    ("label", 'reshuffle = "no"', r"\[label\] reshuffle must be bool \| None, got 'no'"),
    ("report", "devices = true", r"\[report\] devices must be int, got True"),
    ("label", "threshold = nan", r"\[label\] threshold must be float \| None, got nan"),
])
def test_a_value_of_the_wrong_type_names_its_section_and_key(tmp_path, section, line, message):
    """TOML is typed: "false" is a string, and would have switched dynamics on; 2.5 epochs is not an int."""
    sections = {"data": 'train = "t"\ndev = "d"', "train": 'model = "m"', "label": 'input = "x"', "report": "",
                "calibrate": ""}
    sections[section] = f"{sections[section]}\n{line}"
    path = tmp_path / "c.toml"
    path.write_text('output = "o"\n' + "".join(f"[{name}]\n{body}\n" for name, body in sections.items()))
    with pytest.raises(ValueError, match=message):
        load_config(path)
    path.write_text(path.read_text().replace(line + "\n", ""))
    assert load_config(path).output  # the same file without that line loads


def test_the_workspace_must_be_local(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('output = "gs://bucket/run"\n[data]\ntrain = "t"\ndev = "d"\n[train]\nmodel = "m"\n[label]\ninput = "x"\n')
    with pytest.raises(ValueError, match="'output' must be a local folder path, got 'gs://bucket/run'"):
        load_config(path)


def test_a_corpus_that_is_not_there_fails_before_fine_tuning(tmp_path):
    from flows.run import run_pipeline

    path = tmp_path / "c.toml"
    path.write_text('output = "ws"\n[data]\ntrain = "t.jsonl"\ndev = "d.jsonl"\n[train]\nmodel = "m"\n'
                    '[label]\ninput = "nomatch/*.jsonl"\n')
    with pytest.raises(FileNotFoundError, match="nomatch/\\*.jsonl' matches no file"):
        run_pipeline(load_config(path, str(tmp_path)))  # not a flow run yet: the first subflow would train
    assert not (tmp_path / "ws" / "models").exists()


def test_run_checks_the_corpus_in_one_line_before_prefect_starts(tmp_path, capsys, monkeypatch):
    from flows.cli import main

    monkeypatch.chdir(tmp_path)  # relative paths in the config are taken from here

    config = tmp_path / "c.toml"
    config.write_text('output = "ws"\n[data]\ntrain = "t.jsonl"\ndev = "d.jsonl"\n[train]\nmodel = "m"\n'
                      '[label]\ninput = "nomatch/*.jsonl"\n')
    assert main(["run", "--config", str(config)]) == 2
    out, err = capsys.readouterr()
    assert "Prefect:" not in out  # printed once the checks have passed, as Prefect starts
    assert err.strip().splitlines() == [f"rightsize run: error: input '{tmp_path}/nomatch/*.jsonl' matches no file"]


def test_run_and_serve_say_so_when_the_configured_prefect_server_does_not_answer(tmp_path, capsys):
    import socket

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.cli import main

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "c.toml"  # a corpus that is not there: should the check miss, the run stops at once
    config.write_text('output = "ws"\n[data]\ntrain = "t.jsonl"\ndev = "d.jsonl"\n[train]\nmodel = "m"\n'
                      '[label]\ninput = "nomatch/*.jsonl"\n')
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{port}/api"}):
        assert main(["run", "--config", str(config)]) == 2
        with pytest.raises(SystemExit) as serve:
            main(["serve", "--config", str(config), "--cron", "0 2 * * *"])
    assert serve.value.code == 2
    errors = capsys.readouterr().err.split("rightsize ")[1:]  # run's message, then serve's
    assert len(errors) == 2
    for err in errors:
        assert f"the Prefect API at http://127.0.0.1:{port}/api (PREFECT_API_URL) does not answer" in err, err


def test_the_label_section_carries_every_job_setting_with_the_same_default():
    """[label] repeats the Beam job's settings (LabelJobConfig) so that TOML keys and CLI flags stay one to one;
    a setting added to the job, or a default changed on one side only, fails here."""
    from dataclasses import MISSING, fields

    from flows.config import LabelStepConfig
    from pipelines.label_config import LabelJobConfig

    step = {f.name: f.default for f in fields(LabelStepConfig)}
    job = {f.name: f.default for f in fields(LabelJobConfig)}
    assert set(job) - set(step) == {"model"}  # the flow passes the model it trained
    for name in set(job) - {"model", "input", "output", "run_id"}:  # those four: required, or the flow's own default
        assert step[name] == job[name] != MISSING, name


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("target_drop = 0.05", "target_drop = 0.05\nfit_fraction = 0.9"),
     "fit_fraction 0.9 splits 40 examples into 36 to fit on and 4 to judge on"),
    (lambda t: t.replace("exits = [2, 4]\n", "") + "[select]\nregion = \"easy\"\nfraction = 0.5\nexit_layer = 5\n",
     r"\[select\] exit_layer 5 is not among the default exits \[1, 2, 3, 4\]"),  # the tiny backbone has 4 layers
])
def test_settings_that_would_fail_after_fine_tuning_fail_before_it(workspace, edit, message):
    from flows.run import run_pipeline

    toml = workspace / "run.toml"
    toml.write_text(edit(toml.read_text()))
    with pytest.raises(ValueError, match=message):
        run_pipeline(load_config(toml, str(workspace)))  # not a flow run yet: the first subflow would train
    assert not (workspace / "out" / "models").exists()
