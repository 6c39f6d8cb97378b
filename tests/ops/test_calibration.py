"""Temperature fitting, ECE, the speed/accuracy curve and threshold choice."""

import numpy as np
import pytest

from ops import calibration as cal
from ops.calibration import CurvePoint


def _synthetic(temperature: float, n: int = 6000, labels: int = 4, seed: int = 0):
    """Logits z with labels drawn from softmax(z / T): the NLL-optimal temperature is T."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, size=(n, labels))
    p = cal.softmax(z, temperature)
    y = np.array([rng.choice(labels, p=row) for row in p])
    return z, y


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_fit_temperature_recovers_known_temperature(true_t):
    z, y = _synthetic(true_t)
    assert cal.fit_temperature(z, y) == pytest.approx(true_t, rel=0.10)


def test_ece_by_hand():
    # bin (14/15, 1]: confidences 0.95, 0.95, accuracy 0.5 -> |0.5 - 0.95| * 2/4
    # bin (8/15, 9/15]: confidences 0.55, 0.55, accuracy 1.0 -> |1.0 - 0.55| * 2/4
    assert cal.expected_calibration_error(np.array([0.95, 0.95, 0.55, 0.55]), np.array([1, 0, 1, 1])) == pytest.approx(0.45)
    assert cal.expected_calibration_error(np.array([1.0, 0.5]), np.array([1, 0])) == pytest.approx(0.25)


def test_ece_after_fitting_is_not_worse():
    z, y = _synthetic(2.5)
    t = cal.fit_temperature(z, y)
    correct = z.argmax(-1) == y
    before = cal.expected_calibration_error(cal.softmax(z).max(-1), correct)
    after = cal.expected_calibration_error(cal.softmax(z, t).max(-1), correct)
    assert after <= before and before > 0.1  # the raw logits were badly overconfident
    assert cal.negative_log_likelihood(z, y, t) < cal.negative_log_likelihood(z, y)


CURVE = [CurvePoint(0.0, 0.80, 1.0, 0.20), CurvePoint(0.5, 0.88, 2.0, 0.40), CurvePoint(0.8, 0.90, 3.0, 0.60),
         CurvePoint(0.9, 0.905, 4.0, 0.70), CurvePoint(0.95, 0.90, 4.5, 0.80), CurvePoint(1.01, 0.91, 6.0, 1.00)]


def test_choose_threshold_for_targets():
    drop = cal.choose_threshold(CURVE, target_drop=0.01)  # accuracy >= 0.90, cheapest
    assert (drop.threshold, drop.met) == (0.8, True)
    assert cal.choose_threshold(CURVE, target_drop=0.0).threshold == 1.01
    assert cal.choose_threshold(CURVE, target_drop=0.2).threshold == 0.0
    budget = cal.choose_threshold(CURVE, flops_budget=0.75)  # FLOPs <= 0.75, most accurate
    assert (budget.threshold, budget.met) == (0.9, True)
    assert cal.choose_threshold(CURVE, flops_budget=0.5).threshold == 0.5


def test_unreachable_targets_are_reported():
    budget = cal.choose_threshold(CURVE, flops_budget=0.1)
    assert not budget.met and budget.threshold == 0.0 and "cannot be met" in budget.message
    drop = cal.choose_threshold(CURVE, target_drop=-0.05)
    assert not drop.met and drop.threshold == 1.01 and "cannot be met" in drop.message
    with pytest.raises(ValueError, match="exactly one"):
        cal.choose_threshold(CURVE)


def test_curve_replays_early_exit():
    # 3 exits, 4 documents; confidences chosen by hand
    confidence = np.array([[0.9, 0.2, 0.5, 0.3], [0.95, 0.7, 0.6, 0.4], [0.99, 0.8, 0.9, 0.5]])
    predicted = np.array([[0, 1, 1, 0], [0, 0, 1, 1], [0, 0, 2, 1]])
    labels = np.array([0, 0, 2, 1])
    flops = np.array([[1.0] * 4, [2.0] * 4, [3.0] * 4])
    full = np.full(4, 3.0)
    p = cal.curve_point(confidence, predicted, labels, flops, full, (2, 4, 6), 0.65)
    # exits taken: doc0 exit 0, doc1 exit 1, doc2 exit 2, doc3 exit 2
    assert (p.accuracy, p.mean_exit_layer, p.flops_fraction) == (1.0, 4.5, 9 / 12)
    curve = cal.speed_accuracy_curve(confidence, predicted, labels, flops, full, (2, 4, 6))
    assert curve[0].threshold == 0 and curve[-1].threshold > 1
    assert len(curve) == len(np.unique(confidence)) + 2
    oracle = cal.oracle_point(predicted, labels, flops, full, (2, 4, 6))
    assert (oracle.accuracy, oracle.mean_exit_layer) == (1.0, 4.0)  # exits 0, 1, 2, 1
