"""Files from the wild, a poisoned document and a killed re-run: no input is lost, no job fails on a record,
and a re-run replaces the previous output whole or not at all."""

import glob
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flows.cli import main
from flows.predict import predict_file
from models import EarlyExitClassifier
from ops.predictions import NothingLabelledError
from tests.hostile_corpus import write_hostile_corpus

REPO = Path(__file__).resolve().parents[2]


def _predictions(files) -> list[dict]:
    return [r for f in sorted(files) for r in pq.read_table(f, columns=["id", "truncated"]).to_pylist()]


def _letters(files) -> list[dict]:
    return [json.loads(line) for f in sorted(files) for line in open(f, encoding="utf-8") if line.strip()]


def _check_every_input_lands_once(corpus, rows, letters):
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))
    assert set(ids) == set(corpus.good)
    assert len(rows) + len(letters) == corpus.inputs
    assert all(letter["reason"] and "\n" not in letter["reason"] for letter in letters)
    by_id = {r["id"]: r["truncated"] for r in rows}
    assert by_id["long"] and by_id["c3"] and not by_id["j1"]  # 200,000-character documents were cut


def test_hostile_corpus_with_predict(model_dir, tmp_path):
    corpus = write_hostile_corpus(tmp_path / "in")
    out = tmp_path / "preds.parquet"
    assert main(["predict", "--model", model_dir, "--input", f"{tmp_path / 'in'}/*", "--output", str(out),
                 "--batch-size", "4"]) == 0
    _check_every_input_lands_once(corpus, _predictions([out]), _letters([tmp_path / "preds.deadletter.jsonl"]))


def test_hostile_corpus_with_label(model_dir, tmp_path):
    corpus = write_hostile_corpus(tmp_path / "in")
    assert main(["label", "--model", model_dir, "--input", f"{tmp_path / 'in'}/*", "--output", str(tmp_path / "out"),
                 "--run-id", "h", "--batch-size", "4", "--chunk-size", "16"]) == 0
    run_dir = tmp_path / "out" / "h"
    rows = _predictions(run_dir.glob("predictions-*.parquet"))
    letters = _letters(run_dir.glob("deadletter-*.jsonl"))
    _check_every_input_lands_once(corpus, rows, letters)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["counts"]["documents_in"] == corpus.inputs
    assert manifest["counts"]["truncated"] == sum(r["truncated"] for r in rows) >= 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["h"]  # no staging left behind


def test_ids_without_id_field_agree_between_predict_and_label(model_dir, tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "docs.txt").write_text("first document\nsecond document\n")
    monkeypatch.chdir(tmp_path)  # a relative --input, as a user would type it
    assert main(["predict", "--model", model_dir, "--input", "in/docs.txt", "--output", "p.parquet"]) == 0
    assert main(["label", "--model", model_dir, "--input", "in/docs.txt", "--output", "out", "--run-id", "t"]) == 0
    from_predict = sorted(r["id"] for r in _predictions(["p.parquet"]))
    from_label = sorted(r["id"] for r in _predictions(glob.glob("out/t/predictions-*.parquet")))
    assert from_predict == from_label == [f"{tmp_path}/in/docs.txt:1", f"{tmp_path}/in/docs.txt:2"]


def _raise_on(monkeypatch, method: str, error: type[Exception], message: str, when=lambda texts: True) -> list:
    """Fault injection around the real model: ``EarlyExitClassifier.<method>`` raises ``error(message)`` (a new
    one each time) on a batch of texts for which ``when`` holds, else runs as it is. Returns the sizes of the
    batches it was called with, in order."""
    calls = []
    real = getattr(EarlyExitClassifier, method)

    def patched(self, texts, *args, **kwargs):
        calls.append(len(texts))
        if when(texts):
            raise error(message)
        return real(self, texts, *args, **kwargs)

    monkeypatch.setattr(EarlyExitClassifier, method, patched)
    return calls


def _holding(word: str):
    return lambda texts: any(word in t for t in texts)


@pytest.fixture(params=["predict", "encode"])
def poisoned(request, monkeypatch):
    """A document that makes inference raise, whatever batch it is in: in the model, or in the tokenizer
    (which ``predict`` of a file runs one chunk ahead, in another thread)."""
    return request.param, _raise_on(monkeypatch, request.param, ValueError, "poisoned document", _holding("POISON"))


@pytest.mark.parametrize("command", ["predict", "label", "label --tokenize-ahead"])
def test_a_poisoned_document_costs_one_dead_letter(model_dir, tmp_path, poisoned, command):
    """(With --tokenize-ahead, ``encode`` raises in the thread that tokenises a chunk's parts ahead.)"""
    docs = [{"id": f"d{i}", "text": f"document number {i}" + (" POISON" if i in (5, 33) else "")} for i in range(40)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    args = ["--model", model_dir, "--input", str(tmp_path / "in.jsonl"), "--batch-size", "4"]
    if command == "predict":
        assert main(["predict", *args, "--output", str(tmp_path / "p.parquet")]) == 0
        rows, letters = _predictions([tmp_path / "p.parquet"]), _letters([tmp_path / "p.deadletter.jsonl"])
    else:
        assert main([*command.split(), *args, "--output", str(tmp_path / "out"), "--run-id", "x",
                     "--chunk-size", "16"]) == 0
        rows = _predictions((tmp_path / "out" / "x").glob("predictions-*.parquet"))
        letters = _letters((tmp_path / "out" / "x").glob("deadletter-*.jsonl"))
    assert sorted(r["id"] for r in rows) == sorted(f"d{i}" for i in range(40) if i not in (5, 33))
    assert sorted(json.loads(letter["raw"])["id"] for letter in letters) == ["d33", "d5"]
    assert {letter["reason"] for letter in letters} == {"inference failed: ValueError: poisoned document"}
    method, sizes = poisoned
    if method == "encode":  # tokenised ahead: in parts (of 8 or 12 here), never a whole chunk of 16 or the trial's 40
        assert (max(sizes) < 16) == command.endswith("--tokenize-ahead")


def test_a_document_the_read_ahead_cannot_tokenise_costs_one_dead_letter(model_dir, tmp_path, monkeypatch, caplog):
    """Tokenising fails in the read-ahead thread: the chunk is tokenised again while it is labelled, where
    failure isolation makes the one document at fault a dead letter (and the reason is the tokenizer's)."""
    from flows.predict import predict_file

    _raise_on(monkeypatch, "encode", ValueError, "cannot tokenise", _holding("POISON"))
    docs = [{"id": f"d{i}", "text": f"document number {i}" + (" POISON" if i == 7 else "")} for i in range(20)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    summary = predict_file(EarlyExitClassifier.from_pretrained(model_dir), str(tmp_path / "in.jsonl"),
                           str(tmp_path / "p.parquet"), chunk_size=8, read_ahead=True)
    assert summary.documents == 19 and summary.dead_letters == 1
    assert [r["id"] for r in _predictions([tmp_path / "p.parquet"])] == [f"d{i}" for i in range(20) if i != 7]
    [letter] = _letters([tmp_path / "p.deadletter.jsonl"])
    assert json.loads(letter["raw"])["id"] == "d7" and letter["reason"] == "inference failed: ValueError: cannot tokenise"
    warned = [r.getMessage() for r in caplog.records if "tokenising a chunk ahead failed" in r.getMessage()]
    assert len(warned) == 1 and "cannot tokenise" in warned[0]  # the one chunk that held d7


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _kill_when(process: subprocess.Popen, ready, timeout: float = 120) -> None:
    """SIGKILLs the process group once ``ready()`` holds, while the process is still running."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"finished (exit {process.returncode}) before it could be killed"
        assert time.monotonic() < deadline, "never reached the point to kill it"
        time.sleep(0.05)
    assert process.poll() is None, "finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _big_corpus(path: Path, n: int = 40_000) -> None:
    path.write_text("".join(json.dumps({"id": f"n{i}", "text": f"document {i} " * 8}) + "\n" for i in range(n)))


@pytest.mark.parametrize("command", ["label", "predict"])
def test_killed_rerun_leaves_the_previous_output_intact(model_dir, tmp_path, command):
    (tmp_path / "small.jsonl").write_text('{"id": "a", "text": "first run"}\n{"id": "b", "text": ""}\n')
    _big_corpus(tmp_path / "big.jsonl")
    out = tmp_path / "out"
    if command == "label":
        target = out / "r"
        args = lambda corpus: ["label", "--model", model_dir, "--input", str(corpus), "--output", str(out),
                               "--run-id", "r", "--chunk-size", "256"]
    else:
        out.mkdir()
        target = out / "p.parquet"
        args = lambda corpus: ["predict", "--model", model_dir, "--input", str(corpus), "--output", str(target)]
    assert main(args(tmp_path / "small.jsonl")) == 0
    before = _digest(out)
    assert before and not (out / ".staging").exists()

    rerun = subprocess.Popen([sys.executable, "-m", "flows.cli", *args(tmp_path / "big.jsonl")], cwd=REPO,
                             start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Killed while it works: its staging exists (it has started writing) and it has run 2 s more.
    _kill_when(rerun, lambda: (out / ".staging").exists() and not time.sleep(2))
    after = {k: v for k, v in _digest(out).items() if not k.startswith(".staging/")}
    assert after == before  # the previous output, byte for byte, and nothing of the killed run beside it

    (tmp_path / "small.jsonl").write_text('{"id": "c", "text": "third run"}\n')
    assert main(args(tmp_path / "small.jsonl")) == 0  # the next run cleans up and replaces it
    assert not (out / ".staging").exists()
    rows = _predictions(target.glob("predictions-*.parquet") if command == "label" else [target])
    assert [r["id"] for r in rows] == ["c"]


@pytest.mark.parametrize("command", ["predict", "label"])
@pytest.mark.parametrize("fault", ["broken model", "wrong text field"])
def test_a_run_that_labels_nothing_fails_and_keeps_the_previous_output(model_dir, tmp_path, monkeypatch, capsys,
                                                                       command, fault):
    """A broken model or setting is not 'all documents are bad': the run fails and replaces nothing. The
    model's failure is named even when records that could not be read come first."""
    (tmp_path / "in.jsonl").write_text('{"id": "first", "text": ""}\n' + "".join(
        json.dumps({"id": f"d{i}", "text": f"doc {i}"}) + "\n" for i in range(20)))
    args = ["--model", model_dir, "--input", str(tmp_path / "in.jsonl")]
    args += ["--output", str(tmp_path / "p.parquet")] if command == "predict" else \
        ["--output", str(tmp_path / "out"), "--run-id", "x", "--chunk-size", "8", "--batch-size", "4"]
    assert main([command, *args]) == 0
    before = _digest(tmp_path)
    capsys.readouterr()

    if fault == "broken model":
        _raise_on(monkeypatch, "predict", RuntimeError, "CUDA error: device-side assert triggered")
        reason = "inference failed: RuntimeError: CUDA error: device-side assert triggered"
    else:
        args += ["--text-field", "body"]
        reason = "field 'body' is missing or null"
    assert main([command, *args]) == 1
    error = capsys.readouterr().err
    # label tries the model on the first documents before its job starts (see the next test); predict stops early
    scope = "inference failed on each of the input's first 20 documents, tried before the job started" \
        if (command, fault) == ("label", "broken model") else "all 21 inputs are dead letters"
    assert f"no document was labelled: {scope}" in error and reason in error
    assert _digest(tmp_path) == before


def test_label_tries_the_model_before_the_job_starts(model_dir, tmp_path, monkeypatch):
    """On the DirectRunner a broken model fails on the first TRIAL_DOCUMENTS documents, not after the whole
    corpus was tried document by document, and the trial's model is freed; a model that labels any of them
    lets the job start."""
    import weakref

    from pipelines.label import TRIAL_DOCUMENTS, EarlyExitModelHandler, run
    from pipelines.label_config import LabelJobConfig

    calls = _raise_on(monkeypatch, "predict", RuntimeError, "CUDA error: device-side assert triggered",
                      _holding("bad"))
    loaded, real_load = [], EarlyExitModelHandler.load_model

    def load(self):
        model = real_load(self)
        loaded.append(weakref.ref(model))
        return model

    monkeypatch.setattr(EarlyExitModelHandler, "load_model", load)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "text": f"bad {i}"}) + "\n"
                                               for i in range(400)))
    job = LabelJobConfig(model=model_dir, input=str(tmp_path / "in.jsonl"), output=str(tmp_path / "out"), run_id="r")
    with pytest.raises(NothingLabelledError, match=f"inference failed on each of the input's first {TRIAL_DOCUMENTS} "
                       "documents, tried before the job started .a broken model, or a precision") as failure:
        run(job)
    assert len(calls) == 2 * TRIAL_DOCUMENTS - 1  # the trial's halving, down to each of its documents alone
    assert len(loaded) == 1 and loaded[0]() is None  # freed, while the error (failure.value) is still held
    assert not (tmp_path / "out" / "r").exists() and not (tmp_path / "out" / ".staging").exists()

    # one document that labels is enough: the job runs and the others become dead letters
    texts = [f"{'good' if i == TRIAL_DOCUMENTS - 1 else 'bad'} {i}" for i in range(100)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n"
                                               for i, t in enumerate(texts)))
    counts = run(job)["counts"]
    assert (counts["labelled"], counts["dead_letters"]) == (1, 99)


@pytest.mark.parametrize("error", ["CUDA out of memory. Tried to allocate 2.00 GiB",
                                   "[enforce fail at alloc_cpu.cpp:121] . DefaultCPUAllocator: can't allocate memory: "
                                   "you tried to allocate 35184372088832 bytes. Error code 12 (Cannot allocate memory)"])
def test_a_trial_that_only_runs_out_of_memory_starts_the_job(model_dir, tmp_path, monkeypatch, caplog, error):
    """Running out of memory, on a GPU or a CPU, is not a broken model: the workers retry it at smaller batches,
    so the job starts. The trial leaves this process's torch threads as they were."""
    import torch

    from pipelines.label import TRIAL_DOCUMENTS

    threads = torch.get_num_threads()
    calls = _raise_on(monkeypatch, "predict", RuntimeError, error,
                      lambda texts: len(calls) < 2 * TRIAL_DOCUMENTS)  # every call of the trial
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "text": f"doc {i}"}) + "\n"
                                               for i in range(100)))
    assert main(["label", "--model", model_dir, "--input", str(tmp_path / "in.jsonl"), "--output",
                 str(tmp_path / "out"), "--run-id", "r"]) == 0
    assert json.loads((tmp_path / "out" / "r" / "manifest.json").read_text())["counts"]["labelled"] == 100
    assert "ran out of memory on each of the input's first 64 documents" in caplog.text

    # with worker processes, the trial's share of the cores (load_model sets it) is not left to the launcher
    from pipelines.label import EarlyExitModelHandler, first_documents, prepare_run, try_model
    from pipelines.label_config import LabelJobConfig

    job = LabelJobConfig(model=model_dir, input=str(tmp_path / "in.jsonl"), output=str(tmp_path / "out"), run_id="t",
                         threads=max(1, threads - 1) if threads > 1 else 2)
    plan = prepare_run(job, processes=2)
    try_model(EarlyExitModelHandler(job, plan), first_documents(plan.files, job.fields))
    assert torch.get_num_threads() == threads


def test_shared_model_flag_labels_through_beams_proxy(model_dir, tmp_path):
    """--share-model-across-processes hands the handler a proxy of the model, which has methods but no
    attributes: every document must still be labelled."""
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "text": f"doc {i}"}) + "\n" for i in range(10)))
    assert main(["label", "--model", model_dir, "--input", str(tmp_path / "in.jsonl"), "--output",
                 str(tmp_path / "out"), "--run-id", "s", "--share-model-across-processes", "--model-copies", "1"]) == 0
    manifest = json.loads((tmp_path / "out" / "s" / "manifest.json").read_text())
    assert manifest["counts"]["labelled"] == 10 and manifest["counts"]["dead_letters"] == 0


@pytest.mark.parametrize("command", ["predict", "label"])
def test_an_empty_input_is_an_empty_run_not_an_error(model_dir, tmp_path, command, caplog):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    out = ["--output", str(tmp_path / "p.parquet")] if command == "predict" else \
        ["--output", str(tmp_path / "out"), "--run-id", "x"]
    with caplog.at_level("WARNING"):
        assert main([command, "--model", model_dir, "--input", str(tmp_path / "empty.jsonl"), *out]) == 0
    if command == "label":  # no counter is reported when nothing was read: that is 0, not a disagreement
        assert "metrics report" not in caplog.text
    if command == "predict":
        assert pq.read_table(tmp_path / "p.parquet").num_rows == 0
    else:
        assert json.loads((tmp_path / "out" / "x" / "manifest.json").read_text())["counts"]["documents_in"] == 0


def test_a_broken_model_stops_predict_early(model_dir, tmp_path, monkeypatch):
    """Once a chunk ends with inference failed on FAIL_FAST_DOCUMENTS documents and none labelled, predict
    stops instead of isolating failures through the rest of the corpus (about log2(chunk) times each chunk's
    work)."""
    import flows.predict

    monkeypatch.setattr(flows.predict, "FAIL_FAST_DOCUMENTS", 10)
    calls = _raise_on(monkeypatch, "predict", RuntimeError, "CUDA error: device-side assert triggered")
    documents = (json.dumps({"id": f"d{i}", "text": f"doc {i}"}) for i in range(400))
    (tmp_path / "in.jsonl").write_text("".join(line + "\n" for line in documents))
    with pytest.raises(NothingLabelledError, match="the first 16 inputs are dead letters, inference failing"):
        predict_file(EarlyExitClassifier.from_pretrained(model_dir), str(tmp_path / "in.jsonl"),
                     str(tmp_path / "p.parquet"), chunk_size=8)
    assert not (tmp_path / "p.parquet").exists()
    assert sum(n == 1 for n in calls) == 16  # documents tried alone: the first two chunks', not all 400


def test_a_chunk_with_failures_and_labels_does_not_stop_predict(model_dir, tmp_path, monkeypatch):
    import flows.predict

    monkeypatch.setattr(flows.predict, "FAIL_FAST_DOCUMENTS", 10)
    _raise_on(monkeypatch, "predict", RuntimeError, "poisoned document", _holding("bad"))
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "text": f"{'bad' if i % 2 else 'good'} {i}"})
                                               + "\n" for i in range(48)))
    summary = predict_file(EarlyExitClassifier.from_pretrained(model_dir), str(tmp_path / "in.jsonl"),
                           str(tmp_path / "p.parquet"), chunk_size=48)
    assert (summary.documents, summary.dead_letters) == (24, 24)


def test_predict_never_reads_its_own_output_however_spelled(model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("data").mkdir()
    Path("data/docs.jsonl").write_text('{"id": "a", "text": "one document"}\n{"id": "b", "text": "another"}\n')
    for _ in range(2):  # the second run's glob matches the first run's output
        summary = predict_file(EarlyExitClassifier.from_pretrained(model_dir), "data/*", "data/sub/../p.parquet")
        assert (summary.documents, summary.dead_letters) == (2, 0)
    assert pq.read_table("data/p.parquet")["id"].to_pylist() == ["a", "b"]
