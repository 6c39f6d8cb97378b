"""The benchmark suite's own logic (bench/suite/), on tiny models: what it times must be what it says it
times, and the README section must come from the results file and nothing else."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TEXTS, tiny_classifier

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from ops.examples import Examples  # noqa: E402
from suite.batching import measure_batching  # noqa: E402
from suite.common import Splits  # noqa: E402
from suite.render import BEGIN, END, render, write_readme  # noqa: E402
from suite.speed_accuracy import exit_alone, headline, measure_system  # noqa: E402


@pytest.mark.parametrize("model_type", ["bert", "mpnet"])
def test_exit_alone_is_the_truncated_model(tokenizer, model_type):
    model = tiny_classifier(tokenizer, model_type=model_type, exit_layers=(1, 2, 4), temperatures=(0.5, 2.0, 1.0))
    logits, _ = model.exit_logits(TEXTS)  # (exits, n, labels)
    for k, layers in enumerate((1, 2)):
        alone = exit_alone(model, k)
        assert alone.config.exit_layers == (layers,) and alone.runner.num_layers == layers
        predictions = alone.predict(TEXTS, threshold=2.0)
        assert [p.label for p in predictions] == [model.config.labels[i] for i in logits[k].argmax(-1)]
        assert all(p.exit_layer == layers for p in predictions)
        # same calibrated confidence as exit k of the whole model: the head and its temperature came along
        expected = np.exp(logits[k] / model.config.temperatures[k])
        expected = (expected / expected.sum(-1, keepdims=True)).max(-1)
        np.testing.assert_allclose([p.confidence for p in predictions], expected, atol=1e-5)


def test_exit_alone_of_an_int8_model_is_int8_and_labels_as_that_exit(tokenizer, tmp_path):
    """int8 weights cannot load into a float32 truncated backbone: the truncated model is quantised first and
    then gives exit k's labels, exit layer and (int8) confidence."""
    from models import EarlyExitClassifier

    tiny_classifier(tokenizer, exit_layers=(1, 2, 4)).save_pretrained(tmp_path)
    model = EarlyExitClassifier.from_pretrained(tmp_path, device="cpu", dtype="int8")
    logits, _ = model.exit_logits(TEXTS)  # (exits, n, labels), int8 feed-forward layers
    alone = exit_alone(model, 1)
    assert alone.dtype_name == "int8"
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    quantised = [m for m in alone.backbone.modules() if isinstance(m, DynamicInt8Linear)]
    assert len(quantised) == 2 * 2  # the two feed-forward Linears of each of its 2 layers
    predictions = alone.predict(TEXTS, threshold=2.0)
    assert [p.label for p in predictions] == [model.config.labels[i] for i in logits[1].argmax(-1)]
    assert all(p.exit_layer == 2 for p in predictions)
    expected = np.exp(logits[1] / model.config.temperatures[1])
    np.testing.assert_allclose([p.confidence for p in predictions], (expected / expected.sum(-1, keepdims=True)).max(-1),
                               atol=1e-5)


def _examples(n=24):
    texts = [TEXTS[i % len(TEXTS)] + f" {i}" for i in range(n)]
    return Examples(texts=texts, pairs=None, labels=[("a", "b", "c")[i % 3] for i in range(n)], source="tiny")


@pytest.mark.parametrize("mode", ["joint", "multi"])
def test_measured_points_count_flops_against_the_full_model(tokenizer, mode):
    """The full-model row costs 100% in every mode (a cascade's is its last stage alone, not the cascade run to
    the end); an exit alone costs its share of the full model, as the FLOPs curve says."""
    model = tiny_classifier(tokenizer, exit_layers=(1, 2, 4))
    if mode == "multi":
        from models.classifier import EarlyExitClassifier, truncated_backbone

        stages = [truncated_backbone(model.backbone.config, layers) for layers in (1, 2)]
        model = EarlyExitClassifier(model.backbone, tokenizer, model.config.with_updates(training_mode="multi"),
                                    stages=stages).eval()
    data = Splits(train=_examples(), dev=_examples(40), test=_examples())
    system = measure_system(model, data, target_drop=0.01, budgets=(0.5,), repeats=1, batch_size=8)
    rows = {(r["kind"], r.get("exit_layer")): r for r in system["timed"]}
    assert rows["full model", None]["flops_fraction"] == pytest.approx(1.0, abs=0.01)
    assert rows["full model", None]["mean_exit_layer"] == 4
    for k, layer in enumerate((1, 2)):
        assert rows["exit alone", layer]["flops_fraction"] == pytest.approx(
            system["exits_alone"][k]["flops_fraction"], rel=1e-6)
        # a random tiny model's logits nearly tie, so float rounding between batchings may flip one document
        assert rows["exit alone", layer]["accuracy"] == pytest.approx(system["exits_alone"][k]["accuracy"], abs=1.5 / 24)


def test_batching_reports_both_crossovers_and_identical_predictions(tokenizer):
    model = tiny_classifier(tokenizer, exit_layers=(1, 2, 4), threshold=0.4)
    result = measure_batching(model, _examples(), 0.4, (1, 8), repeats=1)
    assert [r["same_as_batch_1"] for r in result["rows"]] == [1.0, 1.0]
    for row in result["rows"]:
        assert row["early_exit_speedup"] == pytest.approx(row["early_exit_docs_per_s"] / row["full_docs_per_s"])
    stops = next((r["batch_size"] for r in result["rows"] if r["early_exit_speedup"] <= 1), None)
    assert result["early_exit_stops_paying_from_batch"] == stops
    with pytest.raises(ValueError, match="start at 1"):
        measure_batching(model, _examples(), 0.4, (8, 32), repeats=1)


def _system(points, oracle_flops=0.25):
    timed = [{"kind": "full model", "threshold": 2.0, "accuracy": 0.90, "docs_per_s": 100.0, "flops_fraction": 1.0,
              "speedup": 1.0}]
    for kind, accuracy, rate, flops in points:
        timed.append({"kind": kind, "threshold": 0.5, "accuracy": accuracy, "docs_per_s": rate,
                      "flops_fraction": flops, "speedup": rate / 100.0})
    return {"timed": timed, "oracle": {"flops_fraction": oracle_flops}}


def test_headline_is_the_fastest_point_within_one_point():
    system = _system([("early exit, calibrated", 0.895, 250.0, 0.4), ("early exit, budget", 0.889, 400.0, 0.3),
                      ("early exit, budget", 0.891, 300.0, 0.35), ("exit alone", 0.90, 900.0, 0.1)])
    h = headline(system)
    # 0.889 is 1.1 points down; "exit alone" is a baseline, not early exit
    assert h["speedup"] == 3.0 and h["flops_speedup"] == pytest.approx(1 / 0.35)
    assert h["share_of_oracle"] == pytest.approx((1 / 0.35) / 4.0)
    assert headline(_system([("early exit, budget", 0.85, 400.0, 0.3)])) is None


def _results(gpu=None, rate=123.4, cpu="Test CPU"):
    machine = {"cpu": cpu, "cores": 2, "threads": 2, "torch_cpu_capability": "AVX2", "native_bf16": False,
               "torch": "2.13.0", "gpu": gpu}
    return {"machine": machine, "commands": ["python bench/run.py --parts path"],
            "path": {"documents": 10, "threshold": 0.5, "rows": [{"path": "rightsize predict (in-process)", "docs_per_s": rate,
                                                "vs_predict": 1.0}]}}


def test_readme_section_shows_the_newest_results_file_of_each_machine(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "2026-11-20-test-cpu-2t.json").write_text(json.dumps(_results(rate=111.1)))
    (results / "2026-11-21-test-cpu-2t.json").write_text(json.dumps(_results(rate=222.2)))
    (results / "2026-11-21-test-cpu-2t-quick.json").write_text(json.dumps(_results(rate=555.5)))
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n\n{BEGIN}\nstale 999.9\n{END}\n\nafter\n")

    assert [f.name for f in write_readme(results, readme)] == ["2026-11-21-test-cpu-2t.json"]
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n\n") and text.endswith(f"{END}\n\nafter\n")
    assert "222.2" in text and "111.1" not in text and "555.5" not in text and "stale" not in text
    assert "No GPU numbers exist yet" in text and "CPU only (Test CPU)" in text
    write_readme(results, readme)
    assert readme.read_text() == text  # idempotent

    # another machine's file, older or newer, gets a part of its own; the newest date comes first, then the
    # name, whatever order the files were written in; a file not named <date>-<machine>.json is not shown
    (results / "2026-11-22-other-cpu-2t.json").write_text(json.dumps(_results(rate=444.4, cpu="Other CPU")))
    (results / "2026-11-21-another-cpu-2t.json").write_text(json.dumps(_results(rate=666.6, cpu="Another CPU")))
    (results / "2026-11-19-h100.json").write_text(json.dumps(_results(gpu="NVIDIA H100", rate=333.3)))
    (results / "2026-notes.json").write_text("{}")
    assert [f.name for f in write_readme(results, readme)] == [
        "2026-11-22-other-cpu-2t.json", "2026-11-21-test-cpu-2t.json", "2026-11-21-another-cpu-2t.json",
        "2026-11-19-h100.json"]
    text = readme.read_text()
    assert "GPU results: `bench/results/2026-11-19-h100.json`" in text and "No GPU numbers" not in text
    assert text.index("444.4") < text.index("222.2") < text.index("666.6") < text.index("333.3")
    assert "111.1" not in text and text.count("How to read the tables") == 1
    assert "### GPU NVIDIA H100" in text and "### CPU only (Other CPU)" in text


def test_headline_table_compares_each_precision_with_the_float32_full_model():
    systems = {}
    for mode, dtype, rate, accuracy, source in (("joint", "float32", 100.0, 0.90, "test"),
                                                ("joint", "bfloat16", 250.0, 0.91, "test"),
                                                ("sweet", "float32", 50.0, 0.90, "test"),  # another mode: no baseline
                                                ("sweet", "bfloat16", 250.0, 0.90, "test (first 200)")):
        system = _system([("early exit, calibrated", 0.895, rate * 2.5, 0.4)])
        system["timed"][0].update(docs_per_s=rate, accuracy=accuracy)
        for row in system["timed"]:
            row.update(mean_exit_layer=2.0, speedup=row["docs_per_s"] / rate)
        system.update(model="m", data="d", mode=mode, dtype=dtype, test_documents=10, batch_size=64,
                      test_source=source, headline=headline(system))
        systems[f"m/d/{mode}/{dtype}"] = system
    text = render({**_results(), "accuracy": systems}, Path("2026-11-22-x.json"))
    rows = {tuple(line.split(" | ")[2:4]): line for line in text.splitlines() if line.startswith("| m | d |")
            and line.split(" | ")[4] == "10"}  # the headline table's rows (test documents), not every timed point
    # bfloat16's calibrated threshold: 625 docs/s, 2.5x its own full model and 6.25x the float32 one, 0.5 points
    # below float32's full model (1.5 below its own)
    assert rows["joint", "bfloat16"].endswith("| 2.50x / 1.50 pt | 6.25x / 0.50 pt |")
    assert rows["joint", "float32"].endswith("| 2.50x / 0.50 pt | - |")
    # the sweet float32 model was measured on other test documents: no comparison
    assert rows["sweet", "bfloat16"].endswith("| 2.50x / 0.50 pt | - |")


def test_readme_without_markers_is_refused(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "2026-11-21-x.json").write_text(json.dumps(_results()))
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="needs exactly one"):
        write_readme(results, readme)
    assert readme.read_text() == "no markers here\n"


def test_runs_in_pieces_keep_each_others_parts(tmp_path):
    """Two runs of the suite, each saving only what it measured, leave both parts in the file, whatever order
    they save in; a system measured again is replaced, the others are kept."""
    from suite.results_file import save

    path = tmp_path / "day-machine.json"
    first = {"machine": {"cpu": "x"}, "commands": ["python bench/run.py --parts accuracy"],
             "accuracy": {"m/a/joint/float32": {"v": 1}, "m/a/joint/bfloat16": {"v": 2}}}
    second = {"machine": {"cpu": "x"}, "commands": ["python bench/run.py --parts peers"], "peers": {"rows": [1]}}
    save(path, first)
    save(path, second)
    first["accuracy"] = {"m/a/joint/float32": {"v": 3}}  # the first run measures one system again
    merged = save(path, first)
    assert merged == json.loads(path.read_text())
    assert merged["peers"] == {"rows": [1]}
    assert merged["accuracy"] == {"m/a/joint/float32": {"v": 3}, "m/a/joint/bfloat16": {"v": 2}}
    assert merged["commands"] == ["python bench/run.py --parts accuracy", "python bench/run.py --parts peers"]


def test_a_file_from_another_machine_is_refused_untouched(tmp_path):
    from suite.results_file import save

    path = tmp_path / "day-machine.json"
    save(path, {"machine": {"cpu": "x", "threads": 2, "python": "3.11.7"}, "accuracy": {"a": {"v": 1}}})
    before = path.read_text()
    with pytest.raises(ValueError, match="another machine"):
        save(path, {"machine": {"cpu": "x", "threads": 1, "python": "3.11.7"}, "accuracy": {"b": {"v": 2}}})
    assert path.read_text() == before
    # the same machine goes on, whatever the python patch release
    save(path, {"machine": {"cpu": "x", "threads": 2, "python": "3.11.9"}, "accuracy": {"b": {"v": 2}}})
    assert sorted(json.loads(path.read_text())["accuracy"]) == ["a", "b"]


def test_results_names_an_existing_file_from_this_machine(tmp_path, capsys):
    """--results: the file a run goes on filling. Refused before anything is measured when it is missing, from
    another machine or thread count, or asked of a --quick run; --threads names a file of its own by default."""
    from run import parse_args
    from suite.common import machine
    from suite.results_file import save

    earlier = tmp_path / "2026-11-21-cpu-2t.json"
    save(earlier, {"machine": machine("cpu", 2), "commands": ["python bench/run.py --parts path"]})
    assert parse_args(["--parts", "peers", "--threads", "2", "--results", str(earlier)]).results_file == earlier
    for argv, error in ((["--threads", "1", "--results", str(earlier)], "another machine"),
                        (["--results", str(tmp_path / "typo.json")], "no such file"),
                        (["--quick", "--results", str(earlier)], "leave out --results")):
        with pytest.raises(SystemExit):
            parse_args(argv)
        assert error in capsys.readouterr().err
    assert parse_args(["--out", str(tmp_path), "--threads", "1"]).results_file.name.endswith("-1t.json")
    assert parse_args(["--out", str(tmp_path), "--threads", "2"]).results_file.name.endswith("-2t.json")


def test_saves_from_processes_at_once_lose_nothing(tmp_path):
    """The lock: four processes saving 50 systems each into one file at the same time leave all 200 there. They
    start together (each waits for a go file), so they overlap however slowly they start."""
    import subprocess

    bench = Path(__file__).resolve().parents[2] / "bench"
    path, go = tmp_path / "day-machine.json", tmp_path / "go"
    script = ("import sys, time; sys.path.insert(0, sys.argv[1]); from pathlib import Path; "
              "from suite.results_file import save\n"
              "while not Path(sys.argv[4]).exists(): time.sleep(0.001)\n"
              "for i in range(50): save(Path(sys.argv[2]), {'accuracy': {f'{sys.argv[3]}/{i}': {'v': i}}})")
    runs = [subprocess.Popen([sys.executable, "-c", script, str(bench), str(path), f"p{n}", str(go)]) for n in range(4)]
    go.touch()
    assert [run.wait(timeout=120) for run in runs] == [0] * 4
    assert sorted(json.loads(path.read_text())["accuracy"]) == sorted(f"p{n}/{i}" for n in range(4) for i in range(50))
