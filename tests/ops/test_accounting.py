"""The cost account against a hand-computed set of predictions: counts, FLOPs, buckets, money."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ops import accounting
from ops.accounting import ReportConfig, summarize
from ops.predictions import PREDICTION_SCHEMA

# (id, label, exit_layer, num_tokens, flops, full_flops, confidence)
RUN_A = [("a1", "x", 1, 10, 100, 400, 0.95), ("a2", "x", 2, 20, 250, 500, 0.85), ("a3", "y", 4, 70, 900, 900, 0.55)]
RUN_B = [("b1", "y", 1, 600, 50, 200, 0.99)]


def _table(rows, run_id):
    names = ["id", "label", "exit_layer", "num_tokens", "flops", "full_flops", "confidence"]
    data = {name: [r[i] for r in rows] for i, name in enumerate(names)}
    n = len(rows)
    data["truncated"] = [r[3] >= 512 for r in rows]  # only b1 (600 tokens) was cut
    data |= {"num_layers": [4] * n, "threshold": [0.8] * n, "dtype": ["float32"] * n, "model_id": ["sha256:m"] * n, "run_id": [run_id] * n}
    return pa.Table.from_pydict(data, schema=PREDICTION_SCHEMA)


def write_runs(root):
    """Run A: the Beam job's layout with a manifest (30 minutes of wall time, 1 dead letter).
    Run B: a 'rightsize predict' file, no manifest, 2 dead letters beside it."""
    a, b = root / "labels" / "run-a", root / "labels" / "adhoc"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    pq.write_table(_table(RUN_A, "run-a"), a / "predictions-00000-of-00001.parquet")
    (a / "deadletter-00000-of-00001.jsonl").write_text('{"reason": "empty"}\n')
    (a / "manifest.json").write_text(json.dumps({
        "run_id": "run-a", "started": "2026-11-20T02:00:00+00:00", "finished": "2026-11-20T02:30:00+00:00",
        "runner": "DirectRunner", "devices": {"cpu": 3}, "counts": {"dead_letters": 1}}))
    pq.write_table(_table(RUN_B, "run-b"), b / "b.parquet")
    (b / "b.deadletter.jsonl").write_text('{"reason": "bad"}\n{"reason": "bad"}\n')
    return str(root / "labels" / "*" / "*.parquet")


def test_summary_matches_hand_computation(tmp_path):
    s = summarize(ReportConfig(write_runs(tmp_path), price_per_hour=3.0, devices=2))
    assert (s["files"], s["documents"], s["tokens"], s["flops"], s["full_flops"]) == (2, 4, 700, 1300, 2000)
    assert s["flops_saved_fraction"] == pytest.approx(0.35)
    assert s["mean_exit_layer"] == pytest.approx(2.0)  # (1 + 2 + 4 + 1) / 4
    assert s["mean_confidence"] == pytest.approx((0.95 + 0.85 + 0.55 + 0.99) / 4)
    assert s["dead_letters"] == 3  # run B has no manifest, so every dead-letter file beside the inputs counts
    assert s["truncated"] == 1 and [r["truncated"] for r in sorted(s["runs"], key=lambda r: r["run_id"])] == [0, 1]
    # Money only from run A, the run with a wall time: 0.5 h x 2 devices x 3.0 per device-hour.
    assert s["wall_seconds"] == 1800 and s["documents_per_second"] == pytest.approx(3 / 1800)
    assert s["cost"] == pytest.approx(3.0)
    assert s["full_model_cost_estimate"] == pytest.approx(3.0 * 1800 / 1250)
    assert s["cost_per_1000_documents"] == pytest.approx(1000.0)
    assert s["money_unknown_because"] == "1 documents come from runs without a manifest"

    assert [(r["exit_layer"], r["documents"], r["flops"]) for r in s["by_exit_layer"]] == [(1, 2, 150), (2, 1, 250), (4, 1, 900)]
    assert [(r["label"], r["documents"], r["flops"], r["mean_exit_layer"]) for r in s["by_label"]] == [
        ("x", 2, 350, 1.5), ("y", 2, 950, 2.5)]
    assert [(r["tokens_from"], r["tokens_below"], r["documents"], r["flops"]) for r in s["by_length"]] == [
        (0, 16, 1, 100), (16, 32, 1, 250), (64, 128, 1, 900), (512, None, 1, 50)]
    confidence = {r["exit_layer"]: r["documents_per_bin"] for r in s["confidence_by_exit"]}
    assert confidence[1] == [0] * 9 + [2] and confidence[2][8] == 1 and confidence[4][5] == 1

    runs = {r["run_id"]: r for r in s["runs"]}
    assert runs["run-a"]["cost"] == pytest.approx(3.0) and runs["run-a"]["dead_letters"] == 1
    assert runs["run-b"]["cost"] is None and runs["run-b"]["manifest"] is None
    assert runs["run-b"]["flops_saved_fraction"] == pytest.approx(0.75)
    assert s["models"] == ["sha256:m"]


def test_money_is_unknown_without_a_price(tmp_path):
    s = summarize(ReportConfig(write_runs(tmp_path)))
    assert s["cost"] is None and s["full_model_cost_estimate"] is None and s["cost_per_1000_documents"] is None
    assert s["money_unknown_because"] == "no price per device-hour given"
    assert s["wall_seconds"] == 1800  # time is still known


def test_streaming_in_small_batches_gives_the_same_account(tmp_path, monkeypatch):
    pattern = write_runs(tmp_path)
    whole = summarize(ReportConfig(pattern, price_per_hour=1.0))
    monkeypatch.setattr(accounting, "_BATCH_ROWS", 1)  # one row per record batch
    monkeypatch.setattr(accounting, "_COMPACT_EVERY", 2)  # partial cubes summed every two batches
    assert summarize(ReportConfig(pattern, price_per_hour=1.0)) == whole


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no .parquet files match"):
        summarize(ReportConfig(str(tmp_path / "*.parquet")))
    with pytest.raises(FileNotFoundError, match=r"it is a folder; give a glob of its files, such as '.*/\*/predictions"):
        summarize(ReportConfig(str(tmp_path)))
    pq.write_table(pa.table({"x": [1]}), tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="not rightsize predictions, missing columns"):
        summarize(ReportConfig(str(tmp_path / "*.parquet")))
    with pytest.raises(ValueError, match="devices"):
        ReportConfig("x", devices=0)


@pytest.mark.parametrize("spoil, message", [
    (lambda t: t.set_column(t.schema.get_field_index("exit_layer"), "exit_layer",
                            t["exit_layer"].cast(pa.float64())), "not rightsize predictions: exit_layer is double"),
    (lambda t: t.set_column(t.schema.get_field_index("flops"), "flops", pa.array([None, 1, 2], pa.int64())),
     r"not rightsize predictions: null values in \['flops'\]"),
    (lambda t: t.set_column(t.schema.get_field_index("label"), "label", pa.array(["x", None, "y"])),
     r"not rightsize predictions: null values in \['label'\]"),
    (None, "not a readable Parquet file"),
    (lambda t: _with(t, "confidence", [0.9, -0.5, 0.7]), r"not rightsize predictions: confidence from -0.5 to 0.9, outside \[0, 1\]"),
    (lambda t: _with(t, "num_tokens", [10, -3, 70]), r"not rightsize predictions: num_tokens from -3 to 70, outside \[0, inf\]"),
    (lambda t: _with(t, "exit_layer", [1, 0, 4]), r"not rightsize predictions: exit_layer from 0 to 4, outside \[1, inf\]"),
    (lambda t: _with(t, "exit_layer", [1, 5, 4]), r"not rightsize predictions: 1 rows have an exit_layer above num_layers"),
    (lambda t: _with(t, "flops", [100, -1, 900]), r"not rightsize predictions: flops from -1 to 900, outside \[0, inf\]"),
])
def test_a_file_that_is_not_ours_is_named_in_the_error(tmp_path, spoil, message):
    pq.write_table(_table(RUN_A, "run-a"), tmp_path / "a.parquet")
    bad = tmp_path / "b.parquet"
    if spoil is None:
        bad.write_bytes(b"")  # an empty file
    else:
        pq.write_table(spoil(_table(RUN_A, "run-b")), bad)
    with pytest.raises(ValueError, match=f"{bad}: {message}"):
        summarize(ReportConfig(str(tmp_path / "*.parquet")))


def _with(table: pa.Table, column: str, values: list) -> pa.Table:
    i = table.schema.get_field_index(column)
    return table.set_column(i, column, pa.array(values, table.schema.field(i).type))


def test_flops_sums_past_2_to_the_63_are_exact_not_wrapped(tmp_path):
    """int64 sums wrap without a word: 4 documents of 2**62 FLOPs each once read 'FLOPs spent: -4611 PFLOP'."""
    rows = [(f"d{i}", "x", 1, 10, 2**62 + i, 2**62 + 10, 0.9) for i in range(4)]
    pq.write_table(_table(rows, "run-big"), tmp_path / "big.parquet")
    s = summarize(ReportConfig(str(tmp_path / "*.parquet")))
    assert s["flops"] == 4 * 2**62 + 6 and s["full_flops"] == 4 * (2**62 + 10)  # exact Python ints
    assert s["flops_saved_fraction"] == pytest.approx(0, abs=1e-15) and s["by_exit_layer"][0]["flops"] == s["flops"]
    json.dumps(s, allow_nan=False)


def test_one_run_id_in_two_folders_is_two_runs(tmp_path):
    """A run copied elsewhere, or one --run-id given under two outputs: two runs, each with its own documents,
    manifest and wall time, not one run with both's documents and one's time."""
    import shutil

    from ops.report import render_markdown, run_names

    write_runs(tmp_path / "first")
    shutil.copytree(tmp_path / "first" / "labels" / "run-a", tmp_path / "second" / "labels" / "run-a")
    s = summarize(ReportConfig(str(tmp_path / "*" / "labels" / "run-a" / "*.parquet"), price_per_hour=3.0, devices=2))
    assert [(r["run_id"], r["documents"], r["wall_seconds"]) for r in s["runs"]] == [("run-a", 3, 1800)] * 2
    assert {r["manifest"] for r in s["runs"]} == {f"file://{tmp_path}/{copy}/labels/run-a/manifest.json"
                                                  for copy in ("first", "second")}
    assert s["documents"] == 6 and s["wall_seconds"] == 3600 and s["cost"] == pytest.approx(6.0)
    assert s["documents_per_second"] == pytest.approx(6 / 3600)
    assert f"run-a (file://{tmp_path}/second/labels/run-a)" in render_markdown(s, [])
    first, second = run_names(s["runs"], short=True)  # the trend plot's ticks
    assert first.startswith("run-a\n…") and first.endswith("/first/labels") and second.endswith("/second/labels")


def test_the_same_predictions_written_by_pandas_give_the_same_account(tmp_path):
    """pandas writes strings as large_string and an all-missing column as type null: the same data, the same
    account."""
    pattern = write_runs(tmp_path / "ours")
    ours = summarize(ReportConfig(pattern))
    (tmp_path / "theirs").mkdir()
    for i, table in enumerate([_table(RUN_A, "run-a"), _table(RUN_B, "run-b")]):
        frame = table.to_pandas()
        frame["truncated"] = None  # no information: counted as 0, as for files without the column
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False)
                       .cast(pa.schema([pa.field(f.name, pa.large_string() if pa.types.is_string(f.type) else
                                                 pa.null() if f.name == "truncated" else f.type)
                                        for f in table.schema])), tmp_path / "theirs" / f"{i}.parquet")
    theirs = summarize(ReportConfig(str(tmp_path / "theirs" / "*.parquet")))
    assert theirs["truncated"] == 0

    def without_truncated(rows):
        return [{k: v for k, v in r.items() if k != "truncated"} for r in rows]

    for key in ("documents", "tokens", "flops", "full_flops", "mean_exit_layer", "mean_confidence"):
        assert theirs[key] == ours[key], key
    for key in ("by_exit_layer", "by_label", "by_length"):
        assert without_truncated(theirs[key]) == without_truncated(ours[key]), key


def test_a_nan_confidence_is_an_error_naming_the_file(tmp_path):
    table = _table(RUN_A, "run-a")
    table = table.set_column(table.schema.get_field_index("confidence"), "confidence",
                             pa.array([0.9, float("nan"), 0.5], pa.float32()))
    pq.write_table(table, tmp_path / "a.parquet")
    with pytest.raises(ValueError, match=f"{tmp_path / 'a.parquet'}: 1 predictions have a NaN confidence"):
        summarize(ReportConfig(str(tmp_path / "*.parquet")))
    with pytest.raises(ValueError, match="price_per_hour"):
        ReportConfig("x", price_per_hour=float("inf"))


def test_a_run_whose_object_store_swap_was_cut_short_is_left_out_with_a_warning(monkeypatch, caplog):
    """memory:// stands in for gs://: a re-run of run-a whose swap breaks off after its first shard leaves that
    shard, no manifest and an INCOMPLETE mark; the report leaves the folder out instead of counting half a run."""
    import fsspec

    from ops.staging import publish

    fs = fsspec.filesystem("memory")
    manifest = json.dumps({"run_id": "run-a", "started": "2026-11-20T02:00:00+00:00",
                           "finished": "2026-11-20T02:30:00+00:00", "counts": {"dead_letters": 0}}).encode()
    for folder in ("/cut/labels/run-a", "/cut/labels/.staging/run-a.0123456789ab"):  # the last run, and its re-run
        for shard, rows in enumerate((RUN_A[:2], RUN_A[2:])):
            with fs.open(f"{folder}/predictions-{shard:05d}-of-00002.parquet", "wb") as f:
                pq.write_table(_table(rows, "run-a"), f)
        fs.pipe(f"{folder}/manifest.json", manifest)
    with fs.open("/cut/labels/run-b/predictions-00000-of-00001.parquet", "wb") as f:
        pq.write_table(_table(RUN_B, "run-b"), f)  # another run, complete, without a manifest (as predict's)
    pattern = "memory://cut/labels/*/predictions-*.parquet"
    assert summarize(ReportConfig(pattern))["documents"] == 4

    copy = fs.cp_file
    monkeypatch.setattr(fs, "cp_file", lambda a, b, **k: (_ for _ in ()).throw(ConnectionError("lost"))
                        if a.endswith("00001-of-00002.parquet") else copy(a, b, **k))
    with pytest.raises(ConnectionError):
        publish("memory://cut/labels/.staging/run-a.0123456789ab", "memory://cut/labels/run-a", mark="manifest.json")
    assert fs.exists("/cut/labels/run-a/predictions-00000-of-00002.parquet")  # half of the re-run is there
    with caplog.at_level("WARNING", logger="ops.accounting"):
        s = summarize(ReportConfig(pattern))
    assert [r["run_id"] for r in s["runs"]] == ["run-b"] and s["documents"] == 1 and s["files"] == 1
    assert s["left_out_cut_short"] == ["memory:///cut/labels/run-a"] and "left out 1 folder(s)" in caplog.text
    from ops.report import render_html, render_markdown

    for page in (render_markdown(s, []), render_html(s, {})):
        assert "Left out: 1 folder(s) holding part of a run" in page and "memory:///cut/labels/run-a" in page
    with pytest.raises(FileNotFoundError, match="outside 1 folder"):
        summarize(ReportConfig("memory://cut/labels/run-a/*.parquet"))
    fs.pipe("/cut/labels/run-a/manifest.json", manifest)  # a mark with a manifest: cut short after the manifest
    s = summarize(ReportConfig(pattern))
    assert s["left_out_cut_short"] == [] and s["documents"] == 2 + 1


@pytest.mark.parametrize("change, message", [
    ({"counts": {}}, r"KeyError: 'dead_letters'"),
    ({"finished": "2026-11-20T01:00:00+00:00"}, r"finished \(2026-11-20T01:00:00\+00:00\) is before started"),
    ({"started": "2026-11-20T02:00:00"}, r"TypeError: can't subtract offset-naive and offset-aware"),
    ({"devices": 5}, r"devices is 5, not counts of workers per device type"),
    ({"counts": {"dead_letters": -50}}, r"counts.dead_letters is -50, not a count"),
    ({"counts": {"dead_letters": 2.9}}, r"counts.dead_letters is 2.9, not a count"),
    ({"counts": {"dead_letters": True}}, r"counts.dead_letters is True, not a count"),
])
def test_a_manifest_that_cannot_be_used_is_an_error_naming_it(tmp_path, change, message):
    pattern = write_runs(tmp_path)
    path = tmp_path / "labels" / "run-a" / "manifest.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | change))
    with pytest.raises(ValueError, match=f"{path}: (not a usable run manifest .*)?{message}"):
        summarize(ReportConfig(pattern, price_per_hour=1.0))


def test_a_run_of_an_empty_input_counts_its_time_without_a_warning(tmp_path, caplog):
    pattern = write_runs(tmp_path)
    empty = tmp_path / "labels" / "run-e"
    empty.mkdir()
    pq.write_table(_table([], "run-e"), empty / "predictions-00000-of-00001.parquet")  # as Beam writes it
    (empty / "manifest.json").write_text(json.dumps({
        "run_id": "run-e", "started": "2026-11-21T02:00:00+00:00", "finished": "2026-11-21T02:10:00+00:00",
        "counts": {"labelled": 0, "dead_letters": 0}}))
    with caplog.at_level("WARNING", logger="ops.accounting"):
        s = summarize(ReportConfig(pattern, price_per_hour=3.0))
    assert caplog.text == "" and s["documents"] == 4
    runs = {r["run_id"]: r for r in s["runs"]}
    assert (runs["run-e"]["documents"], runs["run-e"]["wall_seconds"], runs["run-e"]["dead_letters"]) == (0, 600, 0)
    assert runs["run-e"]["cost"] == pytest.approx(0.5) and s["wall_seconds"] == 1800 + 600
    assert s["cost"] == pytest.approx(1.5 + 0.5)  # run A's half hour and run E's ten minutes at 3.0 per hour
    assert s["full_model_cost_estimate"] == pytest.approx(1.5 * 1800 / 1250 + 0.5)  # E: start-up, as for any model


def test_a_manifest_of_another_run_is_named_in_a_warning_not_silently_unused(tmp_path, caplog):
    pattern = write_runs(tmp_path)
    path = tmp_path / "labels" / "run-a" / "manifest.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"run_id": "run-z"}))
    with caplog.at_level("WARNING", logger="ops.accounting"):
        s = summarize(ReportConfig(pattern, price_per_hour=1.0))
    assert s["cost"] is None and s["documents"] == 4
    assert f"{path} is the manifest of run 'run-z', to which no prediction beside it belongs" in caplog.text


@pytest.mark.parametrize("settings, message", [
    ({"price_per_hour": 1e300}, "price_per_hour must be a number from 0 to 1e"),
    ({"price_per_hour": float("nan")}, "price_per_hour must be a number from 0"),
    ({"price_per_hour": -1.0}, "price_per_hour must be a number from 0"),
    ({"devices": 100_000_000_000}, "devices must be from 1 to 1,000,000"), ({"devices": 0}, "devices must be from 1"),
])
def test_price_and_devices_that_would_make_an_infinite_bill_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        ReportConfig("x", **settings)


def test_dead_letters_beside_predictions_in_a_folder_named_with_glob_characters(tmp_path):
    write_runs(tmp_path)
    (tmp_path / "labels" / "adhoc").rename(tmp_path / "labels" / "adhoc[1]")  # "[1]" is a character class to a glob
    assert summarize(ReportConfig(str(tmp_path / "labels" / "*" / "*.parquet")))["dead_letters"] == 1 + 2
