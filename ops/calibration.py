"""Calibration and threshold math on stored exit logits (no model needed).

- Temperature scaling (Guo et al., 2017), one temperature per exit as in Schwartz et al. (2020): minimise the
  negative log-likelihood of softmax(logits / T) over log T with LBFGS, so T stays positive.
- Expected calibration error with 15 equal-width confidence bins (Guo et al., 2017).
- Early exit replayed on logits: a document leaves at the first exit whose calibrated confidence is
  >= threshold, else at the last. This is exactly what ``models.early_exit.run_early_exit`` decides, so the
  speed/accuracy curve can be traced for every threshold from one pass over the data.

Shapes: ``logits`` (exits, n, labels), ``labels`` (n,) class ids, ``flops`` (exits, n) FLOPs a document has
spent when it leaves at each exit, ``full_flops`` (n,).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

ECE_BINS = 15
ABOVE_ONE = 1.01  # a threshold no confidence reaches: every document runs to the last exit


def softmax(logits: np.ndarray, temperature: float | np.ndarray = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean NLL (nats) of softmax(logits / T) for (n, labels) logits."""
    z = torch.from_numpy(np.asarray(logits, dtype=np.float64)) / temperature
    return float(torch.nn.functional.cross_entropy(z, torch.from_numpy(np.asarray(labels))))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iter: int = 100) -> float:
    """The T > 0 minimising NLL of softmax(logits / T) for (n, labels) logits; LBFGS on log T."""
    z = torch.from_numpy(np.asarray(logits, dtype=np.float64))
    y = torch.from_numpy(np.asarray(labels))
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def fit_temperatures(logits: np.ndarray, labels: np.ndarray) -> list[float]:
    return [fit_temperature(exit_logits, labels) for exit_logits in logits]


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE = sum over equal-width bins of (bin size / n) * |accuracy(bin) - mean confidence(bin)|.
    Bins are (0, 1/B], (1/B, 2/B], ..., with confidence 0 in the first."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = index == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS):
    """Per bin: (centre, accuracy, mean confidence, count); empty bins have NaN accuracy/confidence."""
    index = np.clip(np.ceil(np.asarray(confidence) * bins).astype(int) - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        in_bin = index == b
        n = int(in_bin.sum())
        acc = float(np.asarray(correct)[in_bin].mean()) if n else float("nan")
        conf = float(np.asarray(confidence)[in_bin].mean()) if n else float("nan")
        rows.append(((b + 0.5) / bins, acc, conf, n))
    return rows


@dataclass(frozen=True)
class ExitMetrics:
    exit_layer: int
    accuracy: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    temperature: float


def exit_metrics(logits: np.ndarray, labels: np.ndarray, temperatures, exit_layers) -> list[ExitMetrics]:
    rows = []
    for k, (layer, t) in enumerate(zip(exit_layers, temperatures)):
        correct = logits[k].argmax(-1) == labels
        rows.append(ExitMetrics(
            exit_layer=int(layer), accuracy=float(correct.mean()), temperature=float(t),
            nll_before=negative_log_likelihood(logits[k], labels), nll_after=negative_log_likelihood(logits[k], labels, t),
            ece_before=expected_calibration_error(softmax(logits[k]).max(-1), correct),
            ece_after=expected_calibration_error(softmax(logits[k], t).max(-1), correct),
        ))
    return rows


def calibrated_confidence(logits: np.ndarray, temperatures) -> tuple[np.ndarray, np.ndarray]:
    """(exits, n) calibrated max-softmax and (exits, n) argmax class ids."""
    probs = softmax(logits, np.asarray(temperatures, dtype=np.float64)[:, None, None])
    return probs.max(-1), probs.argmax(-1)


def exit_choice(confidence: np.ndarray, threshold: float) -> np.ndarray:
    """(n,) index of the exit each document takes: first with confidence >= threshold, else the last."""
    reached = np.asarray(confidence, dtype=np.float64) >= threshold  # float64, as curve_points compares
    reached[-1] = True
    return reached.argmax(axis=0)


@dataclass(frozen=True)
class CurvePoint:
    threshold: float
    accuracy: float
    mean_exit_layer: float
    flops_fraction: float  # FLOPs spent / FLOPs of the full model, summed over documents


def curve_point(confidence, predicted, labels, flops, full_flops, exit_layers, threshold: float) -> CurvePoint:
    """Accuracy and cost of early exit at one threshold."""
    return curve_points(confidence, predicted, labels, flops, full_flops, exit_layers, [threshold])[0]


def midpoint_thresholds(confidence: np.ndarray) -> np.ndarray:
    """Thresholds midway between consecutive distinct observed confidences, ascending.

    A threshold equal to an observed confidence puts that document exactly on the boundary, where float32
    against float64, or a confidence recomputed in another batch or on another device, can flip its exit. A
    threshold at the midpoint keeps every document's decision for perturbations below half the gap, and
    splits the documents exactly as the upper of the two confidences would.
    """
    observed = np.unique(np.asarray(confidence, dtype=np.float64))
    observed = observed[~np.isnan(observed)]  # a NaN confidence reaches no threshold (exit_choice)
    lower, upper = observed[:-1], observed[1:]
    middle = lower + (upper - lower) / 2
    # adjacent floats have no float between them: fall back to the upper value, which splits the same way
    return np.where(middle > lower, middle, upper)


def speed_accuracy_curve(confidence, predicted, labels, flops, full_flops, exit_layers,
                         max_points: int | None = None) -> list[CurvePoint]:
    """Early exit at threshold 0, midway between every two consecutive distinct calibrated confidences (or
    ``max_points`` of those midpoints, evenly spaced by rank, for a smaller file), and above 1; sorted by
    threshold.

    Threshold 0 covers the split at the lowest confidence (every document leaves at the first exit), so
    these are the same decisions as thresholds at each observed confidence, none on a boundary."""
    candidates = midpoint_thresholds(confidence)
    if max_points is not None and len(candidates) > max_points:
        candidates = candidates[np.unique(np.linspace(0, len(candidates) - 1, max_points).round().astype(int))]
    thresholds = np.concatenate([[0.0], candidates, [ABOVE_ONE]])
    return curve_points(confidence, predicted, labels, flops, full_flops, exit_layers, thresholds)


def curve_points(confidence, predicted, labels, flops, full_flops, exit_layers, thresholds) -> list[CurvePoint]:
    """Accuracy and cost of early exit (``exit_choice``) at each of the ascending ``thresholds``, all at once:
    (exits x documents) work and a sort, not (thresholds x exits x documents). A document takes exit k for the
    thresholds t with reached[k-1] < t <= reached[k], where reached is the running maximum of its confidences
    over the exits (a NaN confidence reaches nothing; exit 0 from below every threshold, the last exit up to
    +inf); each (exit, document) adds its figures to that range of thresholds through a difference array, in
    integers (counts, layers, FLOPs), so no sum is rounded."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if not np.isfinite(thresholds).all() or (np.diff(thresholds) < 0).any():
        raise ValueError("thresholds must be finite numbers in ascending order")
    exits, n = confidence.shape
    confidence = np.asarray(confidence, dtype=np.float64)
    flops, full_flops = np.asarray(flops), np.asarray(full_flops)
    if not (np.array_equal(flops, np.round(flops)) and np.array_equal(full_flops, np.round(full_flops))):
        raise ValueError("FLOPs must be whole numbers (they are summed as integers)")
    if max(float(np.abs(flops).sum()), float(np.abs(full_flops).sum())) >= 2.0**62:
        raise ValueError("FLOPs sum past 2**62: give them in a larger unit")
    reached = np.maximum.accumulate(np.where(np.isnan(confidence), -np.inf, confidence), axis=0)
    upper = np.vstack([reached[:-1], np.full((1, n), np.inf)])  # inclusive
    start = np.searchsorted(thresholds, reached[:-1], side="right")  # first threshold above the exit before
    start = np.vstack([np.zeros((1, n), dtype=np.int64), start]).ravel()
    stop = np.searchsorted(thresholds, upper, side="right").ravel()  # first threshold above this exit's reach

    def summed(values: np.ndarray) -> np.ndarray:  # (exits, n) integers -> per threshold, over the exits taken
        change = np.zeros(len(thresholds) + 1, dtype=np.int64)  # int64, not bincount's float64: exact sums
        np.add.at(change, start, values.ravel())
        np.subtract.at(change, stop, values.ravel())
        return np.cumsum(change)[:-1]

    correct = summed((predicted == np.asarray(labels)[None, :]).astype(np.int64))
    layers = summed(np.broadcast_to(np.asarray(exit_layers, dtype=np.int64)[:, None], (exits, n)))
    spent = summed(np.asarray(flops, dtype=np.int64))
    total = int(np.sum(full_flops, dtype=np.int64))
    # Python ints divide with one rounding; numpy would round each int64 to float64 first
    return [CurvePoint(threshold=float(t), accuracy=int(c) / n, mean_exit_layer=int(m) / n,
                       flops_fraction=int(f) / total) for t, c, m, f in zip(thresholds, correct, layers, spent)]


def single_exit_points(predicted, labels, single_flops, full_flops, exit_layers) -> list[CurvePoint]:
    """Each exit used alone for every document (a truncated model with one head)."""
    total_full = float(np.sum(full_flops))
    return [CurvePoint(float("nan"), float((predicted[k] == labels).mean()), float(layer),
                       float(single_flops[k].sum() / total_full)) for k, layer in enumerate(exit_layers)]


def oracle_point(predicted, labels, flops, full_flops, exit_layers) -> CurvePoint:
    """Each document leaves at the first exit that gets it right, else at the last."""
    right = (predicted == labels[None, :]).astype(np.float64)
    point = curve_point(right, predicted, labels, flops, full_flops, exit_layers, 1.0)  # "confident" = right
    return CurvePoint(float("nan"), point.accuracy, point.mean_exit_layer, point.flops_fraction)


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float
    met: bool  # False when no threshold reaches the target; ``threshold`` is then the closest one
    message: str


def choose_threshold(curve: list[CurvePoint], *, target_drop: float | None = None,
                     flops_budget: float | None = None) -> ThresholdChoice:
    """Picks a threshold on ``curve`` for exactly one target.

    target_drop D: the cheapest threshold (lowest FLOPs fraction; ties: higher accuracy) whose accuracy is
        >= accuracy of the last exit (threshold above 1) - D. Unreachable only for D < 0 beyond the best point:
        then the most accurate threshold.
    flops_budget B: the most accurate threshold (ties: cheaper) whose FLOPs fraction is <= B. If even the
        cheapest threshold spends more, that cheapest threshold.
    """
    if (target_drop is None) == (flops_budget is None):
        raise ValueError("give exactly one of target_drop and flops_budget")
    by_cost = sorted(curve, key=lambda p: (p.flops_fraction, -p.accuracy, -p.threshold))
    if target_drop is not None:
        reference = max(curve, key=lambda p: p.threshold).accuracy  # the last exit for every document
        floor = reference - target_drop
        for p in by_cost:
            if p.accuracy >= floor - 1e-12:
                return ThresholdChoice(p.threshold, True, f"threshold {p.threshold:.4f}: accuracy {p.accuracy:.4f} "
                                       f"(last exit {reference:.4f}, allowed drop {target_drop}), FLOPs {p.flops_fraction:.1%}")
        best = max(curve, key=lambda p: (p.accuracy, -p.flops_fraction))
        return ThresholdChoice(best.threshold, False, f"target accuracy drop {target_drop} cannot be met: no threshold "
                               f"reaches accuracy {floor:.4f}; using the most accurate, {best.threshold:.4f} "
                               f"(accuracy {best.accuracy:.4f})")
    within = [p for p in curve if p.flops_fraction <= flops_budget + 1e-12]
    if within:
        p = max(within, key=lambda p: (p.accuracy, -p.flops_fraction))
        return ThresholdChoice(p.threshold, True, f"threshold {p.threshold:.4f}: FLOPs {p.flops_fraction:.1%} "
                               f"(budget {flops_budget:.1%}), accuracy {p.accuracy:.4f}")
    cheapest = by_cost[0]
    return ThresholdChoice(cheapest.threshold, False, f"FLOPs budget {flops_budget:.1%} cannot be met: the cheapest "
                           f"threshold, {cheapest.threshold:.4f}, spends {cheapest.flops_fraction:.1%}")
