"""Calibration on a real (tiny) model: the curve agrees with predict, files are written, predict uses them."""

import json
import random

import numpy as np
import pytest

from flows.cli import main
from models import EarlyExitClassifier
from models.calibration import CALIBRATION_FILE, CURVE_FILE, CURVE_PLOT, RELIABILITY_PLOT, CalibrationConfig, calibrate, exit_costs
from models.config import CONFIG_FILE
from ops import calibration as cal
from ops.examples import Examples
from tests.conftest import tiny_classifier

WORDS = "goal match bank stock rain sun vote law chip code".split()


def _examples(n=60, seed=0) -> Examples:
    rng = random.Random(seed)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(2, 12))) for _ in range(n)]
    return Examples(texts, None, [rng.choice("abc") for _ in range(n)], "dev.jsonl")


def test_curve_endpoints_agree_with_predict(tokenizer):
    model = tiny_classifier(tokenizer, temperatures=(0.05, 0.1, 0.1, 0.2))
    data = _examples()
    gold = np.array(data.label_ids(model.config.labels))
    logits, num_tokens = model.exit_logits(data.texts)
    assert list(num_tokens) == [p.num_tokens for p in model.predict(data.texts)]
    confidence, predicted = cal.calibrated_confidence(logits, model.config.temperatures)
    passed, _, full = exit_costs(model, num_tokens)
    assert list(full) == [p.full_flops for p in model.predict(data.texts, threshold=2.0)]
    curve = cal.speed_accuracy_curve(confidence, predicted, gold, passed, full, model.config.exit_layers)
    for point, threshold in ((curve[-1], 2.0), (curve[0], 0.0)):
        preds = model.predict(data.texts, threshold=threshold)
        assert point.accuracy == pytest.approx(np.mean([p.label == g for p, g in zip(preds, data.labels)]))
        assert point.flops_fraction == pytest.approx(sum(p.flops for p in preds) / sum(p.full_flops for p in preds))
        assert point.mean_exit_layer == np.mean([p.exit_layer for p in preds])
    assert curve[0].mean_exit_layer == 1 and curve[-1].mean_exit_layer == 4
    # and any threshold in between replays predict exactly
    mid = curve[len(curve) // 2]
    preds = model.predict(data.texts, threshold=mid.threshold)
    assert mid.mean_exit_layer == pytest.approx(np.mean([p.exit_layer for p in preds]))


def test_calibrate_writes_everything_and_predict_uses_it(tokenizer, tmp_path):
    model = tiny_classifier(tokenizer)
    model.save_pretrained(tmp_path)
    old_id = model.model_id
    report = calibrate(model, _examples(80), CalibrationConfig(flops_budget=0.6), out=tmp_path)
    assert report.documents_fit == 40 and report.documents_held_out == 40
    for name in (CALIBRATION_FILE, CURVE_FILE, CURVE_PLOT, RELIABILITY_PLOT):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / CURVE_PLOT).read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert saved["temperatures"] == report.temperatures and saved["threshold"] == report.threshold
    assert saved["calibration"]["held_out_flops_fraction"] == report.held_out["flops_fraction"]
    # threshold 0 sends every document out at layer 1 of 4 (about a quarter of the FLOPs): 0.6 is reachable
    assert report.target_met and report.fit["flops_fraction"] <= 0.6
    summary = json.loads((tmp_path / CALIBRATION_FILE).read_text())
    assert len(summary["exits"]) == 4 and {"ece_before", "ece_after", "nll_before", "nll_after"} <= set(summary["exits"][0])
    loaded = EarlyExitClassifier.from_pretrained(tmp_path, device="cpu")
    assert loaded.model_id == model.model_id != old_id  # new threshold and temperatures: a new artifact
    assert list(loaded.config.temperatures) == report.temperatures
    assert loaded.predict(_examples(5).texts) == model.predict(_examples(5).texts)


def test_unreachable_budget_falls_back_to_the_cheapest_threshold(tokenizer):
    model = tiny_classifier(tokenizer)
    report = calibrate(model, _examples(80), CalibrationConfig(flops_budget=0.01))
    # even leaving every document at the first exit spends more than 1%: a threshold doing that is chosen
    assert not report.target_met and "cannot be met" in report.choice
    assert model.config.threshold == report.threshold
    assert report.fit["mean_exit_layer"] == model.config.exit_layers[0]
    assert 0.01 < report.fit["flops_fraction"] < 0.5


def test_cli_calibrate_reports_unreachable_target(tokenizer, tmp_path, capsys):
    tiny_classifier(tokenizer).save_pretrained(tmp_path / "m")
    data = tmp_path / "dev.jsonl"
    ex = _examples(40)
    data.write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in zip(ex.texts, ex.labels)))
    assert main(["calibrate", "--model", str(tmp_path / "m"), "--data", str(data), "--flops-budget", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "TARGET NOT MET: FLOPs budget 1.0% cannot be met" in out and "held-out" in out
    assert main(["calibrate", "--model", str(tmp_path / "m"), "--data", str(data)]) == 0  # default --target-drop 0.01
    assert "allowed drop 0.01" in capsys.readouterr().out


def test_config_needs_one_target():
    with pytest.raises(ValueError, match="exactly one"):
        CalibrationConfig(target_drop=0.01, threshold=0.9)


@pytest.mark.parametrize("n, fit_fraction, message", [
    (19, 0.5, "19 examples are too few to calibrate on"),
    (20, 0.99, "splits 20 examples into 20 to fit on and 0 to judge on"),  # held-out figures were NaN, "met"
    (40, 0.01, "splits 40 examples into 0 to fit on and 40 to judge on"),  # temperatures fitted on nothing
])
def test_each_part_of_the_calibration_data_has_enough_examples(tokenizer, n, fit_fraction, message):
    with pytest.raises(ValueError, match=message):
        calibrate(tiny_classifier(tokenizer), _examples(n), CalibrationConfig(target_drop=0.01, fit_fraction=fit_fraction))


@pytest.mark.parametrize("drop", [float("nan"), -0.5, 1.0, 5.0])
def test_a_target_drop_is_a_share_of_accuracy(drop):
    """1 would let any threshold through (a user meaning "one point" gives 0.01); a negative drop asks for more
    accuracy than the full model's."""
    with pytest.raises(ValueError, match=r"target_drop must be in \[0, 1\), a share of accuracy"):
        CalibrationConfig(target_drop=drop)
    assert CalibrationConfig(target_drop=0.0).target_drop == 0.0


def test_dev_data_of_one_class_is_refused(tokenizer):
    one_class = Examples(_examples(40).texts, None, ["b"] * 40, "dev.jsonl")
    with pytest.raises(ValueError, match="dev.jsonl: every example is labelled 'b'"):
        calibrate(tiny_classifier(tokenizer), one_class, CalibrationConfig(target_drop=0.01))
    with pytest.raises(ValueError, match="seed must be an integer"):
        CalibrationConfig(target_drop=0.01, seed=-1)
