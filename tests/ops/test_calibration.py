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
    assert len(curve) == len(np.unique(confidence)) + 1  # 0, the midpoints between distinct values, above 1
    oracle = cal.oracle_point(predicted, labels, flops, full, (2, 4, 6))
    assert (oracle.accuracy, oracle.mean_exit_layer) == (1.0, 4.0)  # exits 0, 1, 2, 1


def _noisy_exits(n=300, exits=3, seed=1):
    """Confidences on a 0.001 grid (so ties and a known smallest gap), predictions right more often when
    confident, FLOPs growing with the exit."""
    rng = np.random.default_rng(seed)
    confidence = np.round(rng.uniform(0.34, 1.0, size=(exits, n)), 3)
    labels = rng.integers(0, 3, size=n)
    right = rng.uniform(size=(exits, n)) < confidence
    predicted = np.where(right, labels, (labels + 1) % 3)
    flops = np.arange(1.0, exits + 1)[:, None] * np.ones((exits, n))
    return confidence, predicted, labels, flops, np.full(n, float(exits)), tuple(range(2, 2 * exits + 1, 2))


def test_curve_has_the_same_points_as_thresholds_at_observed_confidences():
    args = _noisy_exits()
    confidence = args[0]
    observed = np.unique(confidence)
    # the lowest observed confidence splits like threshold 0 (every document at the first exit): left out
    at_observed = [cal.curve_point(*args, t) for t in [0.0, *observed[1:], cal.ABOVE_ONE]]
    curve = cal.speed_accuracy_curve(*args)
    assert ([(p.accuracy, p.mean_exit_layer, p.flops_fraction) for p in curve]
            == [(p.accuracy, p.mean_exit_layer, p.flops_fraction) for p in at_observed])
    assert [p.threshold for p in curve] == sorted(p.threshold for p in curve)


@pytest.mark.parametrize("target", [{"target_drop": 0.02}, {"flops_budget": 0.5}])
def test_chosen_threshold_is_robust_to_rounding(target):
    args = _noisy_exits()
    confidence = args[0]
    observed = np.unique(confidence)
    curve = cal.speed_accuracy_curve(*args)
    choice = cal.choose_threshold(curve, **target)
    assert choice.met and 0 < choice.threshold < 1  # an interior point, so the test below means something
    assert not np.isin([p.threshold for p in curve], observed).any()
    assert choice.threshold not in observed
    # the threshold lies strictly between two consecutive observed confidences
    i = np.searchsorted(observed, choice.threshold)
    assert observed[i - 1] < choice.threshold < observed[i]

    delta = np.diff(observed).min() / 2 * (1 - 1e-6)  # half the smallest gap, minus epsilon
    signs = np.random.default_rng(2).choice([-1.0, 1.0], size=confidence.shape)
    exits = cal.exit_choice(confidence, choice.threshold)
    for perturbed in (confidence + delta, confidence - delta, confidence + signs * delta,
                      confidence.astype(np.float32)):
        assert (cal.exit_choice(perturbed, choice.threshold) == exits).all()
    # a threshold taken at an observed confidence (as before) flips documents under the same perturbation
    on_boundary = observed[i]
    assert (cal.exit_choice(confidence - delta, on_boundary) != cal.exit_choice(confidence, on_boundary)).any()


def test_curve_is_subsampled_between_observed_values():
    args = _noisy_exits()
    observed = np.unique(args[0])
    curve = cal.speed_accuracy_curve(*args, max_points=50)
    inner = np.array([p.threshold for p in curve[1:-1]])
    assert len(inner) == 50 and curve[0].threshold == 0 and curve[-1].threshold == cal.ABOVE_ONE
    i = np.searchsorted(observed, inner)
    assert (observed[i - 1] < inner).all() and (inner < observed[i]).all()


def test_midpoint_of_adjacent_floats_splits_like_the_upper_value():
    a = 0.5
    b = np.nextafter(a, 1.0)  # no float lies between a and b
    (t,) = cal.midpoint_thresholds(np.array([[b, a]]))
    assert t == b and cal.exit_choice(np.array([[a, b], [1.0, 1.0]]), t).tolist() == [1, 0]


def _point_alone(confidence, predicted, labels, flops, full_flops, exit_layers, threshold) -> cal.CurvePoint:
    """The rule written out for one threshold, independently of curve_points: exit_choice, then plain sums."""
    taken = cal.exit_choice(confidence, threshold)
    columns = np.arange(confidence.shape[1])
    return cal.CurvePoint(float(threshold), float((predicted[taken, columns] == labels).sum() / len(labels)),
                          float(np.asarray(exit_layers)[taken].sum() / len(labels)),
                          float(int(flops[taken, columns].sum()) / int(np.sum(full_flops))))


@pytest.mark.parametrize("seed", range(5))
def test_the_whole_curve_at_once_equals_each_point_alone(seed):
    """curve_points (one sweep) against the rule for one threshold at a time, exactly: at every midpoint, at
    observed confidences (ties included), beyond either end, with a NaN confidence, and with FLOPs whose sums
    pass 2**53 (float64 would round them)."""
    rng = np.random.default_rng(seed)
    exits, n = 4, 300
    confidence = rng.choice(np.linspace(0.3, 1.0, 40), size=(exits, n))  # many ties between documents
    confidence[rng.integers(0, exits), rng.integers(0, n)] = np.nan
    predicted, labels = rng.integers(0, 3, (exits, n)), rng.integers(0, 3, n)
    full = rng.integers(10**14, 4 * 10**14, n)
    flops = np.cumsum(rng.integers(10**13, 10**14, (exits, n)), axis=0)
    args = (confidence, predicted, labels, flops, full, (3, 6, 9, 12))
    thresholds = np.unique(np.concatenate([[-1.0, 0.0, cal.ABOVE_ONE, 5.0],
                                           cal.midpoint_thresholds(confidence), confidence[~np.isnan(confidence)]]))
    assert cal.curve_points(*args, thresholds) == [_point_alone(*args, t) for t in thresholds]
    assert len(cal.speed_accuracy_curve(*args)) == len(cal.midpoint_thresholds(confidence)) + 2  # every one
    for bad in ([0.5, 0.4], [np.nan], [np.inf]):
        with pytest.raises(ValueError, match="finite numbers in ascending order"):
            cal.curve_points(*args, bad)


def test_the_curve_refuses_flops_it_cannot_sum_exactly_and_compares_float32_as_exit_choice():
    confidence = np.array([[0.2, 0.9], [1.0, 1.0]])
    predicted, labels = np.zeros((2, 2), dtype=int), np.zeros(2, dtype=int)
    with pytest.raises(ValueError, match="whole numbers"):
        cal.curve_points(confidence, predicted, labels, np.array([[0.5, 0.5], [1.0, 1.0]]), np.ones(2), (1, 2), [0.5])
    with pytest.raises(ValueError, match="past 2\\*\\*62"):
        cal.curve_points(confidence, predicted, labels, np.full((2, 2), 5e18), np.full(2, 5e18), (1, 2), [0.5])
    # float32 confidences: curve_points and exit_choice decide alike at a threshold between float32 and float64
    low = np.array([[np.float32(0.1)], [np.float32(1.0)]], dtype=np.float32)
    threshold = float(np.float32(0.1)) + 1e-10
    point = cal.curve_point(low, np.zeros((2, 1), dtype=int), np.zeros(1, dtype=int), np.array([[1], [2]]),
                            np.array([2]), (1, 2), threshold)
    assert point.mean_exit_layer == (1, 2)[cal.exit_choice(low, threshold)[0]]
