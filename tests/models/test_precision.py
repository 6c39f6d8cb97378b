"""Reduced precision: choosing it, float32 confidences whatever the backbone runs in, calibration per precision
with a warned fallback, mixed-precision training, and a real MiniLM in bfloat16 against float32."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models import EarlyExitClassifier
from models.calibration import CalibrationConfig, calibrate
from models.config import CONFIG_FILE, EarlyExitConfig
from models.precision import cpu_has_native_bf16, resolve_dtype
from models.training import TrainConfig, train
from ops.examples import load_examples
from tests.conftest import TEXTS, tiny_classifier, topic_examples

FLAGS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 {}\nbugs\t\t: spectre\n"


@pytest.mark.parametrize("extra, native", [("avx512f avx512_bf16", True), ("amx_bf16 amx_tile", True),
                                           ("avx512f", False), ("", False)])
def test_native_bf16_is_read_from_the_cpu_flags(extra, native):
    assert cpu_has_native_bf16(FLAGS.format(extra)) is native
    assert cpu_has_native_bf16("processor\t: 0\n") is False  # no flags line at all


def test_auto_follows_the_cpu_and_names_are_checked():
    assert resolve_dtype("auto", "cpu") == ("bfloat16" if cpu_has_native_bf16() else "float32")
    assert (resolve_dtype("bfloat16", "cpu"), resolve_dtype("int8", "cpu")) == ("bfloat16", "int8")
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_dtype("int4", "cpu")
    with pytest.raises(ValueError, match="int8 runs on the CPU only"):  # no device needed to refuse it
        resolve_dtype("int8", "cuda")


def _config(**kw) -> EarlyExitConfig:
    return EarlyExitConfig(model_type="bert", num_layers=4, exit_layers=(2, 4), labels=("a", "b"), **kw)


def test_each_precision_keeps_its_calibration_and_a_missing_one_falls_back_to_the_nearest():
    uncalibrated = _config()
    assert uncalibrated.calibrated_for("bfloat16") == (uncalibrated, None)
    f32 = uncalibrated.with_calibration("float32", (1.5, 2.0), 0.7, {"dtype": "float32"})
    both = f32.with_calibration("bfloat16", (1.6, 2.1), 0.75, {"dtype": "bfloat16"})
    assert (both.temperatures, both.threshold) == ((1.6, 2.1), 0.75)  # the newest is in use
    config, warning = both.calibrated_for("float32")
    assert (config.temperatures, config.threshold, warning) == ((1.5, 2.0), 0.7, None)
    config, warning = f32.calibrated_for("float16")
    assert (config.temperatures, config.threshold) == ((1.5, 2.0), 0.7)
    assert "no calibration for float16" in warning and "using the float32 one" in warning
    assert both.calibrated_for("float16")[0].threshold == 0.75  # bfloat16 is nearer to float16 than float32
    again = EarlyExitConfig.from_json(both.to_json())
    assert again == both


def test_configs_from_before_precisions_count_as_float32():
    legacy = json.loads(_config().to_json())
    del legacy["calibrations"]
    legacy |= {"temperatures": [1.2, 1.3], "threshold": 0.6, "calibration": {"data": "dev.jsonl"}}
    config = EarlyExitConfig.from_json(json.dumps(legacy))
    assert config.calibrations == {"float32": {"temperatures": [1.2, 1.3], "threshold": 0.6,
                                               "calibration": {"data": "dev.jsonl"}}}


def test_confidences_are_float32_whatever_the_backbone_runs_in(tokenizer):
    model = tiny_classifier(tokenizer, temperatures=(0.5, 0.5, 0.5, 0.5))
    model.dtype_name = "bfloat16"
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with model.precision():
        hidden = model.runner.embed(batch["input_ids"], batch["attention_mask"])
        ctx = model.runner.prepare(hidden, batch["attention_mask"])
        assert model.backbone.encoder.layer[0].intermediate.dense(hidden).dtype == torch.bfloat16  # the backbone
        hidden = model.runner.run_layer(0, hidden, ctx)
        assert model.exits[0](hidden, batch["attention_mask"]).dtype == torch.float32  # the heads do not
        probs = model.exit_probabilities(0, hidden, batch["attention_mask"])
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(TEXTS)))


def test_loading_in_a_precision_without_its_calibration_warns(tokenizer, tmp_path, caplog):
    path = tmp_path / "m"
    tiny_classifier(tokenizer, labels=("money", "sport")).save_pretrained(path)
    model = EarlyExitClassifier.from_pretrained(path, device="cpu")
    calibrate(model, topic_examples(40, 0), CalibrationConfig(threshold=0.8), out=path)  # float32 only
    saved = json.loads((path / CONFIG_FILE).read_text())
    assert list(saved["calibrations"]) == ["float32"]
    with caplog.at_level(logging.WARNING):
        bf16 = EarlyExitClassifier.from_pretrained(path, device="cpu", dtype="bfloat16")
    assert bf16.dtype_name == "bfloat16" and "no calibration for bfloat16" in caplog.text
    assert bf16.config.temperatures == tuple(saved["calibrations"]["float32"]["temperatures"])

    calibrate(bf16, topic_examples(40, 0), CalibrationConfig(threshold=0.85), out=path)
    saved = json.loads((path / CONFIG_FILE).read_text())
    assert set(saved["calibrations"]) == {"float32", "bfloat16"} and saved["calibration"]["dtype"] == "bfloat16"
    assert EarlyExitClassifier.from_pretrained(path, device="cpu").config.threshold == pytest.approx(0.8)
    assert EarlyExitClassifier.from_pretrained(path, device="cpu", dtype="bfloat16").config.threshold == 0.85


def _quantized(model: torch.nn.Module) -> list[str]:
    """Names of the dynamically quantised int8 Linear modules in ``model``."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    return [name for name, m in model.named_modules() if isinstance(m, DynamicInt8Linear)]


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "mpnet"])
def test_int8_quantises_the_feed_forward_layers_only(tokenizer, tmp_path, model_type):
    tiny_classifier(tokenizer, model_type, temperatures=(0.5,) * 4).save_pretrained(tmp_path)
    f32 = EarlyExitClassifier.from_pretrained(tmp_path, device="cpu")
    int8 = EarlyExitClassifier.from_pretrained(tmp_path, device="cpu", dtype="int8")
    names = _quantized(int8)
    assert len(names) == 2 * 4 and _quantized(f32) == []  # two feed-forward Linears in each of the 4 layers
    assert not any("attention" in n or n.startswith("exits") for n in names)
    a, b = f32.predict(TEXTS, threshold=2.0), int8.predict(TEXTS, threshold=2.0)
    assert [(x.label, x.exit_layer, x.flops) for x in a] == [(y.label, y.exit_layer, y.flops) for y in b]
    assert max(abs(x.confidence - y.confidence) for x, y in zip(a, b)) < 1e-3  # int8 rounding, not a new model
    assert int8.dtype_name == "int8" and int8.model_id == f32.model_id  # the same artifact, run otherwise
    with pytest.raises(ValueError, match="cannot be saved"):
        int8.save_pretrained(tmp_path / "copy")


def test_int8_quantises_every_stage_of_a_cascade_and_is_calibrated_on_its_own(backbone_dir, tmp_path):
    config = TrainConfig(model=backbone_dir, exits=(2, 4), epochs=1, batch_size=16, lr=1e-3, max_length=32,
                         mode="multi", dynamics=False)
    train(config, topic_examples(64, 0), topic_examples(32, 1), out=tmp_path / "m")
    int8 = EarlyExitClassifier.from_pretrained(tmp_path / "m", device="cpu", dtype="int8")
    assert len(_quantized(int8)) == 2 * (2 + 4)  # the 2-layer stage and the 4-layer backbone
    report = calibrate(int8, topic_examples(40, 2), CalibrationConfig(threshold=0.7), out=tmp_path / "m")
    saved = json.loads((tmp_path / "m" / CONFIG_FILE).read_text())
    assert report.dtype == "int8" and set(saved["calibrations"]) == {"int8"}
    assert EarlyExitClassifier.from_pretrained(tmp_path / "m", device="cpu", dtype="int8").config.threshold == 0.7
    with pytest.raises(ValueError, match="TrainConfig.dtype must be one of"):  # int8 is for inference only
        TrainConfig(model=backbone_dir, dtype="int8")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_training_learns(dtype, backbone_dir, tmp_path):
    """bfloat16 autocast; float16 with the gradient scaler (on a CPU too, where torch supports it)."""
    config = TrainConfig(model=backbone_dir, exits=(2, 4), epochs=3, batch_size=16, lr=1e-3, max_length=32,
                         dtype=dtype, dynamics=False)
    model, report = train(config, topic_examples(160, 0), topic_examples(60, 1), out=tmp_path / "m")
    assert model.dtype_name == dtype
    assert report.epochs[-1].train_loss < report.epochs[0].train_loss and min(report.dev_accuracy) >= 0.9
    assert json.loads((tmp_path / "m" / "training.json").read_text())["config"]["dtype"] == dtype


AG_NEWS = Path(__file__).resolve().parents[3] / "shared" / "data" / "ag_news"


@pytest.fixture(scope="module")
def ag_news_minilm(tmp_path_factory):
    """The packaged MiniLM fine-tuned briefly on AG News (600 examples, 1 epoch): a real model, real decisions."""
    if not AG_NEWS.is_dir():
        pytest.skip(f"{AG_NEWS} is not there")
    data = str(AG_NEWS)
    out = tmp_path_factory.mktemp("ag-minilm")
    config = TrainConfig(model="minilm", exits=(2, 4, 6), epochs=1, max_length=64, batch_size=32, lr=2e-4, seed=3,
                         dynamics=False)
    train(config, load_examples(f"{data}/train.jsonl", limit=600), load_examples(f"{data}/dev.jsonl", limit=200),
          out=out)
    return str(out)


def test_minilm_in_bfloat16_agrees_with_float32_and_its_calibration_meets_the_target(ag_news_minilm):
    test = load_examples(str(AG_NEWS / "test.jsonl"), limit=200)
    f32 = EarlyExitClassifier.from_pretrained(ag_news_minilm, device="cpu")
    bf16 = EarlyExitClassifier.from_pretrained(ag_news_minilm, device="cpu", dtype="bfloat16")
    for threshold in (0.6, 2.0):  # a real early-exit decision, and every layer
        a, b = f32.predict(test.texts, threshold=threshold), bf16.predict(test.texts, threshold=threshold)
        agree = np.mean([x.label == y.label for x, y in zip(a, b)])
        assert agree >= 0.99, (threshold, agree)
    dev = load_examples(str(AG_NEWS / "dev.jsonl"), limit=600)
    report = calibrate(bf16, dev, CalibrationConfig(target_drop=0.02))
    assert report.dtype == "bfloat16" and report.target_met and report.fit["accuracy_drop"] <= 0.02 + 1e-9
    # judged on the other 300 documents, where one document is a third of a point
    assert report.held_out["accuracy_drop"] <= 0.02 + 0.01


def test_minilm_in_int8_stays_close_to_float32_and_its_calibration_meets_the_target(ag_news_minilm):
    test = load_examples(str(AG_NEWS / "test.jsonl"), limit=200)
    f32 = EarlyExitClassifier.from_pretrained(ag_news_minilm, device="cpu")
    int8 = EarlyExitClassifier.from_pretrained(ag_news_minilm, device="cpu", dtype="int8")
    for threshold in (0.6, 2.0):
        a, b = f32.predict(test.texts, threshold=threshold), int8.predict(test.texts, threshold=threshold)
        agree = np.mean([x.label == y.label for x, y in zip(a, b)])
        assert agree >= 0.97, (threshold, agree)  # 0.99 at both when written: int8 rounds more than bfloat16
    dev = load_examples(str(AG_NEWS / "dev.jsonl"), limit=600)
    report = calibrate(int8, dev, CalibrationConfig(target_drop=0.02))
    assert report.dtype == "int8" and report.target_met and report.fit["accuracy_drop"] <= 0.02 + 1e-9
    assert report.held_out["accuracy_drop"] <= 0.02 + 0.01


def test_the_command_line_starts_without_torch():
    """--help must stay quick: models/__init__ imports the classifier (torch) only on first use."""
    code = "import sys, flows.cli, pipelines.label_config, models.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"


def test_an_emulated_precision_is_warned_about_once_per_process(caplog, monkeypatch):
    """A job resolves its precision in the launcher, the trial and each worker's load: one warning, not three."""
    import models.precision

    monkeypatch.setattr(models.precision, "cpu_has_native_bf16", lambda cpuinfo=None: False)
    models.precision._warn_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="models.precision"):
        for _ in range(3):
            assert models.precision.resolve_dtype("bfloat16", "cpu") == "bfloat16"
    assert [r.getMessage() for r in caplog.records] == ["bfloat16 on this CPU is emulated and slower than float32"]
