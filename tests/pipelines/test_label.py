"""The Beam labelling job: every input in exactly one output, same results as predict, schema, manifest, re-runs."""

import glob
import json
import os
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from models import EarlyExitClassifier
from ops.predictions import PREDICTION_SCHEMA
from pipelines.label import MANIFEST_FILE, run
from pipelines.label_config import LabelJobConfig
from tests.pipelines.conftest import BAD, GOOD, write_corpus


def _outputs(run_dir):
    tables = [pq.read_table(f) for f in sorted(glob.glob(f"{run_dir}/predictions-*.parquet"))]
    rows = [r for t in tables for r in t.to_pylist()]
    letters = [json.loads(line) for f in sorted(glob.glob(f"{run_dir}/deadletter-*.jsonl"))
               for line in open(f, encoding="utf-8") if line.strip()]
    manifest = json.loads(open(f"{run_dir}/{MANIFEST_FILE}").read())
    return tables, rows, letters, manifest


def _job(model_dir, corpus, out, run_id="r1", **kw) -> LabelJobConfig:
    return LabelJobConfig(model=model_dir, input=f"{corpus}/*", output=str(out), run_id=run_id,
                          **{"batch_size": 4, "chunk_size": 8, **kw})


def test_every_input_lands_once_with_predict_results(model_dir, tmp_path):
    good = write_corpus(tmp_path / "corpus")
    manifest = run(_job(model_dir, tmp_path / "corpus", tmp_path / "out"))
    tables, rows, letters, saved = _outputs(tmp_path / "out" / "r1")

    assert manifest == saved
    assert len(rows) == GOOD and len(letters) == BAD
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids) and set(ids) == set(good)
    reasons = sorted(d["reason"].split(":")[0] for d in letters)
    assert reasons == sorted(["invalid JSON", "field 'text' is missing or null", "field 'text' is missing or null",
                              "field 'text' is int, not text", "field 'text' is empty", "field 'text' is empty",
                              "invalid UTF-8", "record is str, not an object", "field 'text' is missing or null",
                              "field 'text' is empty"])
    assert all({"source", "position", "raw", "reason"} == set(d) for d in letters)

    for table in tables:  # exactly the DESIGN.md columns and types
        assert table.schema.equals(PREDICTION_SCHEMA, check_metadata=False)
    counts = saved["counts"]
    assert counts["documents_in"] == GOOD + BAD
    assert counts["labelled"] == len(rows) and counts["dead_letters"] == len(letters)
    assert sum(counts["exit_layers"].values()) == len(rows)
    metrics = saved["metrics"]  # Beam's counters agree with the files on the default path
    assert (metrics["documents_in"], metrics["labelled"], metrics["dead_letters"]) == (GOOD + BAD, GOOD, BAD)
    assert sum(v for k, v in metrics.items() if k.startswith("exit_layer_")) == GOOD
    assert list(saved["devices"]) == ["cpu"] and saved["runner"] == "DirectRunner"  # devices: batches run on each
    assert saved["batch_size"] == {"cpu": 4}
    assert saved["threshold"] == pytest.approx(0.8)

    model = EarlyExitClassifier.from_pretrained(model_dir, device="cpu")
    assert {r["model_id"] for r in rows} == {model.model_id} == {saved["model_id"]}
    expected = dict(zip(good, model.predict(list(good.values()), threshold=0.8)))
    # the exit histogram read back from the Parquet files matches predict run here on the same documents
    assert {int(k): v for k, v in counts["exit_layers"].items()} == Counter(p.exit_layer for p in expected.values())
    for r in rows:
        p = expected[r["id"]]
        assert (r["label"], r["exit_layer"], r["num_tokens"], r["flops"]) == (p.label, p.exit_layer, p.num_tokens, p.flops)
        assert r["confidence"] == pytest.approx(p.confidence, abs=1e-5)
    assert len({r["exit_layer"] for r in rows}) >= 2


def test_precision_and_threads_reach_workers_rows_and_manifest(model_dir, tmp_path):
    import torch

    write_corpus(tmp_path / "corpus")
    threads = torch.get_num_threads()
    try:  # the in-process DirectRunner loads the model in this process
        manifest = run(_job(model_dir, tmp_path / "corpus", tmp_path / "out", dtype="bfloat16", threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    _, rows, _, saved = _outputs(tmp_path / "out" / "r1")
    assert (saved["dtype"], saved["threads"]) == ("bfloat16", 1) and manifest == saved
    assert {r["dtype"] for r in rows} == {"bfloat16"}
    # one in-process worker keeps torch's default and does not reshuffle (it would only buffer the collection);
    # several share the usable cores and get the documents spread over them
    manifest = run(_job(model_dir, tmp_path / "corpus", tmp_path / "out", run_id="r2", batch_size=None,
                        chunk_size=1024))
    assert (manifest["threads"], manifest["reshuffle"]) == (None, False)
    assert manifest["batch_size"] == {"cpu": 64} and manifest["config"]["batch_size"] is None  # the device default
    manifest = run(_job(model_dir, tmp_path / "corpus", tmp_path / "out", run_id="r2", batch_size=None))
    assert manifest["batch_size"] == {"cpu": 8}  # no batch holds more than a chunk
    manifest = run(_job(model_dir, tmp_path / "corpus", tmp_path / "out", run_id="r3", dtype="int8"),
                   ["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    assert manifest["threads"] == max(1, len(os.sched_getaffinity(0)) // 2) and manifest["dtype"] == "int8"
    assert manifest["reshuffle"] is True
    _, rows, _, _ = _outputs(tmp_path / "out" / "r3")  # quantised in each worker process at its load
    assert {r["dtype"] for r in rows} == {"int8"} and len(rows) == manifest["counts"]["labelled"] > 0


def test_rerun_with_same_run_id_replaces_output(model_dir, tmp_path):
    write_corpus(tmp_path / "corpus")
    run(_job(model_dir, tmp_path / "corpus", f"file://{tmp_path}/out", run_id="same"))  # a file:// URL: the same place
    assert (tmp_path / "out" / "same" / MANIFEST_FILE).is_file()
    small = tmp_path / "small"
    small.mkdir()
    (small / "x.jsonl").write_text('{"id": "only", "text": "just one document"}\n')
    manifest = run(_job(model_dir, small, tmp_path / "out", run_id="same", threshold=2.0))
    _, rows, letters, _ = _outputs(tmp_path / "out" / "same")
    assert [r["id"] for r in rows] == ["only"] and letters == []
    assert rows[0]["exit_layer"] == 4 and manifest["counts"]["labelled"] == 1


def test_a_run_id_that_names_a_folder_or_file_of_the_users_is_refused(model_dir, tmp_path):
    """A run replaces its folder whole: a folder holding anything a run does not write, or a file, at
    <output>/<run id> is refused before any work, and left as it was."""
    write_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "notes.txt").write_text("precious")
    (out / "notes" / "predictions-00000-of-00001.parquet").write_text("not even Parquet")
    (out / "file").write_text("precious too")
    with pytest.raises(ValueError, match=r"'.*/out/notes' holds what a labelling run does not write \(notes.txt\)"):
        run(_job(model_dir, tmp_path / "corpus", out, run_id="notes"))
    with pytest.raises(ValueError, match=r"'.*/out/file' is a file, not a labelling run's folder"):
        run(_job(model_dir, tmp_path / "corpus", out, run_id="file"))
    assert (out / "notes" / "notes.txt").read_text() == "precious" and (out / "file").read_text() == "precious too"
    assert sorted(p.name for p in out.iterdir()) == ["file", "notes"]  # no staging left behind
    (out / "notes" / "notes.txt").unlink()  # a run's files, a hidden file and a temporary folder Beam left: a run's
    (out / "notes" / ".DS_Store").write_text("")
    (out / "notes" / "beam-temp-predictions-0a1b" / "part").mkdir(parents=True)
    assert run(_job(model_dir, tmp_path / "corpus", out, run_id="notes"))["counts"]["labelled"] > 0
    assert sorted(p.name for p in (out / "notes").iterdir())[0] == "deadletter-00000-of-00001.jsonl"


def test_a_ctrl_c_inside_the_pipeline_is_an_interrupt_and_replaces_nothing(model_dir, tmp_path, monkeypatch):
    """Beam re-raises a worker's KeyboardInterrupt as a RuntimeError, which the CLI would show as a failure and
    the flows would retry; the job turns it back into an interrupt."""
    from pipelines.label import EarlyExitModelHandler

    write_corpus(tmp_path / "corpus")
    job = _job(model_dir, tmp_path / "corpus", tmp_path / "out", run_id="same")
    first = run(job)
    calls = []
    real = EarlyExitModelHandler.run_inference

    def interrupted(self, batch, model, inference_args=None):
        calls.append(len(batch))
        if len(calls) > 1:  # the first call is the trial before the job starts, outside Beam
            raise KeyboardInterrupt
        return real(self, batch, model, inference_args)

    monkeypatch.setattr(EarlyExitModelHandler, "run_inference", interrupted)
    with pytest.raises(KeyboardInterrupt) as caught:
        run(job)
    assert len(calls) > 1 and isinstance(caught.value.__cause__, RuntimeError)  # as Beam wrapped it
    assert _outputs(tmp_path / "out" / "same")[3] == first
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["same"]  # the staging is gone


def test_a_model_id_given_by_the_caller_is_what_workers_check(model_dir, tmp_path):
    """The flow hashes the model once and passes the id on; a model that no longer matches it stops the job
    before any output is replaced."""
    write_corpus(tmp_path / "corpus")
    job = _job(model_dir, tmp_path / "corpus", tmp_path / "out", run_id="same")
    first = run(job, model_id=EarlyExitClassifier.from_pretrained(model_dir, device="cpu").model_id)
    with pytest.raises(ValueError, match="changed since the job was submitted"):
        run(job, model_id="sha256:0000000000000000")
    assert _outputs(tmp_path / "out" / "same")[3] == first


def test_output_under_the_input_glob_is_never_read(model_dir, tmp_path, monkeypatch, caplog):
    """Relative paths, as a user types them: the second run's glob matches the first run's output files."""
    monkeypatch.chdir(tmp_path)
    Path("data").mkdir()
    Path("data/docs.jsonl").write_text('{"id": "a", "text": "one document"}\n{"id": "b", "text": "another"}\n')
    job = dict(model=model_dir, input="data/**")
    run(LabelJobConfig(**job, output="data/out", run_id="r1"))
    assert len(glob.glob("data/out/r1/*")) >= 2  # predictions and manifest, both under the glob
    for output in ("data/out", "./data//x/../out/"):
        caplog.clear()
        ours = len(glob.glob("data/out/*/*"))  # r1's files, and r2's once it has run
        second = run(LabelJobConfig(**job, output=output, run_id="r2"))
        assert (second["files"], second["counts"]["documents_in"], second["counts"]["dead_letters"]) == (1, 2, 0)
        assert f"skipped {ours} file(s) under the output folder" in caplog.text  # said, not silent


def test_a_finished_run_counts_as_done_only_for_the_same_job(model_dir, tmp_path):
    """The label flow's skip check (flows/label.py): any change to what the run read or how means labelling again."""
    from dataclasses import replace

    from flows.label import finished_run
    from models.classifier import artifact_id

    write_corpus(tmp_path / "corpus")
    job = _job(model_dir, tmp_path / "corpus", tmp_path / "out")
    manifest = run(job)
    model_id = artifact_id(model_dir)
    assert finished_run(job, model_id) == manifest
    for change in ({"text_field": "body"}, {"pair_field": "hypothesis"}, {"id_field": "key"}, {"threshold": 0.5},
                   {"dtype": "bfloat16"}, {"input": f"{tmp_path / 'corpus'}/*.jsonl"}):
        assert finished_run(replace(job, **change), model_id) is None, change
    assert finished_run(job, "sha256:another") is None
    for f in glob.glob(f"{job.run_dir}/predictions-*.parquet"):
        os.remove(f)
    assert finished_run(job, model_id) is None


def test_a_finished_run_of_a_model_calibrated_twice_counts_as_done(model_dir, tmp_path):
    """The threshold a run used is its precision's calibration, not the one calibrated last (top level)."""
    import shutil

    from flows.label import finished_run
    from models.classifier import artifact_id

    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    settings = json.loads((model / "rightsize.json").read_text())
    calibration = {"temperatures": settings["temperatures"], "calibration": None}
    settings["calibrations"] = {"float32": {**calibration, "threshold": 0.8},
                                "bfloat16": {**calibration, "threshold": 0.7}}
    settings["threshold"] = 0.7  # bfloat16 was calibrated last
    (model / "rightsize.json").write_text(json.dumps(settings))
    write_corpus(tmp_path / "corpus")
    job = _job(str(model), tmp_path / "corpus", tmp_path / "out", dtype="float32")
    manifest = run(job)
    assert manifest["threshold"] == 0.8
    assert finished_run(job, artifact_id(model)) == manifest

    # the flow's default run id follows the job's precision's threshold, not the one calibrated last
    from flows.config import LabelStepConfig
    from flows.label import default_run_id

    step = LabelStepConfig(input=job.input, dtype="float32")
    before = default_run_id(str(model), "sha256:same", step)
    settings["calibrations"]["bfloat16"]["threshold"] = settings["threshold"] = 0.6
    (model / "rightsize.json").write_text(json.dumps(settings))
    assert default_run_id(str(model), "sha256:same", step) == before
    assert default_run_id(str(model), "sha256:same", LabelStepConfig(input=job.input, dtype="bfloat16")) != before


def test_memory_filesystem_input(model_dir, tmp_path):
    import fsspec

    with fsspec.open("memory://corpus-mem/docs.jsonl", "w") as f:
        f.write('{"id": "m1", "text": "in memory"}\n{"text": ""}\n')
    manifest = run(LabelJobConfig(model=model_dir, input="memory://corpus-mem/*.jsonl", output=str(tmp_path),
                                  run_id="mem"))
    exit_layer = EarlyExitClassifier.from_pretrained(model_dir, device="cpu").predict(["in memory"])[0].exit_layer
    assert manifest["counts"] == {"documents_in": 2, "labelled": 1, "dead_letters": 1, "truncated": 0,
                                  "exit_layers": {str(exit_layer): 1}}


@pytest.mark.parametrize("change,message", [
    ({"model": "/nonexistent/model"}, "rightsize.json is missing"),
    ({"input": "/nonexistent/*.jsonl"}, "matches no file"),
    ({"output": "/proc/no-such-dir/out"}, "cannot be written"),
    ({"chunk_size": 0, "batch_size": None}, "chunk_size must be >= 1, got 0"),
    ({"chunk_size": 8, "batch_size": 16}, "need 1 <= batch_size <= chunk_size, got 16 and 8"),
    ({"threshold": -0.5}, "threshold must be a finite number >= 0"),
    ({"threshold": float("nan")}, "threshold must be a finite number >= 0"),
    ({"run_id": "../escape"}, "must be one plain folder name"),
    ({"run_id": "."}, "must be one plain folder name"),
    ({"run_id": ""}, "must be one plain folder name"),
])
def test_fails_before_work_with_clear_message(model_dir, tmp_path, change, message):
    write_corpus(tmp_path / "corpus")
    config = _job(model_dir, tmp_path / "corpus", tmp_path / "out")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        run(LabelJobConfig(**{**config.__dict__, **change}))
    assert not (tmp_path / "escape").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]


def test_length_bucketed_batching_reaches_beam_and_is_refused_on_the_direct_runner(model_dir, tmp_path):
    """Stateful, length-bucketed BatchElements is for runners with stateful processing; the DirectRunner fails
    on it at the end of the input (apache/beam#28716), so the job is refused before any work there."""
    from pipelines.label import EarlyExitModelHandler, Plan, document_length

    write_corpus(tmp_path / "corpus")
    job = _job(model_dir, tmp_path / "corpus", tmp_path / "out", max_batch_duration_secs=5)
    plan = Plan(files=[], model_id="m", num_layers=4, threshold=0.8, dtype="float32", threads=None, staging="")
    batching = EarlyExitModelHandler(job, plan).batch_elements_kwargs()
    assert batching["max_batch_duration_secs"] == 5 and batching["length_fn"] is document_length
    assert batching["min_batch_size"] == batching["max_batch_size"] == job.chunk_size
    job.check_runner(["--runner=DataflowRunner"])  # allowed where the runner has stateful processing
    for beam_args in ([], ["--runner=DirectRunner"], ["--direct_running_mode=multi_processing"]):
        with pytest.raises(ValueError, match="needs a runner with stateful processing"):
            run(job, beam_args)
    assert not (tmp_path / "out").exists()


def test_model_sharing_flags_reach_beam(model_dir, tmp_path):
    from pipelines.label import EarlyExitModelHandler, Plan

    plan = Plan(files=[], model_id="m", num_layers=4, threshold=0.8, dtype="float32", threads=None, staging="")
    default = EarlyExitModelHandler(_job(model_dir, tmp_path, tmp_path), plan)
    shared = EarlyExitModelHandler(_job(model_dir, tmp_path, tmp_path, share_model_across_processes=True,
                                        model_copies=2), plan)
    assert (default.share_model_across_processes(), default.model_copies()) == (False, 1)
    assert (shared.share_model_across_processes(), shared.model_copies()) == (True, 2)


def test_progress_lines_count_each_run_on_its_own(model_dir, tmp_path, caplog, monkeypatch):
    """One process may run several jobs (a notebook, a flow task retried): a run's progress lines count that
    run's documents, even when it has the same run id as the one before."""
    import logging

    import pipelines.label

    monkeypatch.setattr(pipelines.label, "PROGRESS_SECONDS", 0.0)  # a line for every document
    caplog.set_level(logging.INFO, logger="pipelines.label")
    write_corpus(tmp_path / "corpus")
    for _ in range(2):
        caplog.clear()
        labelled = run(_job(model_dir, tmp_path / "corpus", tmp_path / "out"))["counts"]["labelled"]
        counts = [int(r.getMessage().split()[1]) for r in caplog.records if r.getMessage().startswith("progress:")]
        assert sorted(counts) == list(range(1, labelled + 1))
        assert pipelines.label.RoutePredictionsFn._progress == {}  # a finished run's count is not kept
