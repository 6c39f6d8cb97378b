"""Calibrating an ``EarlyExitClassifier`` on labelled data: per-exit temperatures and a threshold chosen for
the user's target, judged on data it was not fitted on.

One pass over the data computes every exit's logits; everything after that is the numpy of
``ops/calibration.py``. The data is split in two (seeded): temperatures and the threshold are fitted on one
part, and the accuracy drop and FLOPs fraction the threshold gives are reported on the other.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from models.classifier import EarlyExitClassifier, artifact_id
from models.config import check_threshold
from ops import calibration as cal
from ops.cost import document_flops, full_model_flops
from ops.examples import Examples, check_seed
from ops.plots import plot_reliability, plot_speed_accuracy

log = logging.getLogger(__name__)
CALIBRATION_FILE = "calibration.json"
CURVE_FILE = "curve.csv"
CURVE_PLOT = "curve.png"
RELIABILITY_PLOT = "reliability.png"
MIN_PART = 10  # examples in each of the fitting and the judging parts
CURVE_POINTS = 2000  # midpoint thresholds in curve.csv and curve.png, besides 0 and above 1 (the choice: all)


@dataclass(frozen=True)
class CalibrationConfig:
    """Exactly one of target_drop, flops_budget, threshold picks the default threshold."""

    target_drop: float | None = None  # accuracy the threshold may lose vs the last exit (0.01 = one point)
    flops_budget: float | None = None  # mean FLOPs fraction allowed (0.4 = 40% of the full model)
    threshold: float | None = None  # use this threshold as is
    fit_fraction: float = 0.5  # share of the data for fitting; the rest judges the choice
    seed: int = 0

    def __post_init__(self):
        given = [name for name in ("target_drop", "flops_budget", "threshold") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of target_drop, flops_budget, threshold (got {given or 'none'})")
        if self.target_drop is not None and not 0 <= self.target_drop < 1:  # also NaN
            raise ValueError(f"CalibrationConfig.target_drop must be in [0, 1), a share of accuracy (0.01 = one "
                             f"point), got {self.target_drop}")
        if self.flops_budget is not None and not (self.flops_budget > 0 and math.isfinite(self.flops_budget)):
            raise ValueError(f"CalibrationConfig.flops_budget must be > 0, got {self.flops_budget}")
        if self.threshold is not None:
            check_threshold(self.threshold)
        if not 0 < self.fit_fraction < 1:
            raise ValueError(f"CalibrationConfig.fit_fraction must be in (0, 1), got {self.fit_fraction}")
        check_seed(self.seed)


@dataclass
class CalibrationReport:
    config: dict
    data: str
    dtype: str  # the compute precision the logits were computed in
    documents_fit: int
    documents_held_out: int
    temperatures: list[float]
    exits: list[dict]  # per exit on the held-out part: accuracy, NLL and ECE before/after, temperature
    threshold: float
    target_met: bool
    choice: str  # what was chosen and why, or why the target could not be met
    fit: dict  # the chosen threshold on the fitting part: accuracy, accuracy_drop, flops_fraction, mean_exit_layer
    held_out: dict  # the same on the held-out part

    def summary(self) -> dict:
        """The short form stored in rightsize.json."""
        return {
            "data": self.data, "dtype": self.dtype, "threshold": self.threshold, "target_met": self.target_met,
            "target": {k: v for k, v in self.config.items() if k in ("target_drop", "flops_budget", "threshold") and v is not None},
            "held_out_accuracy_drop": self.held_out["accuracy_drop"],
            "held_out_flops_fraction": self.held_out["flops_fraction"],
            "ece_before": [e["ece_before"] for e in self.exits], "ece_after": [e["ece_after"] for e in self.exits],
        }


def exit_costs(model: EarlyExitClassifier, num_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FLOPs per document when it leaves at each exit having passed all earlier ones (exits, n), when only
    that exit exists (exits, n), and of the full model (n,)."""
    n, shape = np.asarray(num_tokens, dtype=np.int64), model.shape  # the cost formulas are elementwise in n
    passed = np.stack([model.exit_flops(n, k) for k in range(len(model.config.exit_layers))])
    alone = np.stack([document_flops(n, layer, 1, shape) for layer in model.config.exit_layers])
    return passed.astype(np.float64), alone.astype(np.float64), full_model_flops(n, shape).astype(np.float64)


def calibration_parts(data: Examples, config: CalibrationConfig) -> tuple[np.ndarray, np.ndarray]:
    """(rows to fit on, rows to judge on), sorted; raises when ``data`` cannot be calibrated on with ``config``
    (too few examples, one class, a part under MIN_PART). Needs no model: the flow checks it before training."""
    if len(data) < 2 * MIN_PART:
        raise ValueError(f"{data.source}: {len(data)} examples are too few to calibrate on (need >= {2 * MIN_PART})")
    if len(set(data.labels)) < 2:  # every temperature would shrink towards 0: "always this class, surely"
        raise ValueError(f"{data.source}: every example is labelled {data.labels[0]!r}; calibration needs dev data "
                         "with at least two classes, drawn like the documents to be labelled")
    order = np.random.default_rng(config.seed).permutation(len(data))
    cut = int(round(config.fit_fraction * len(data)))
    fit, held = np.sort(order[:cut]), np.sort(order[cut:])
    if min(len(fit), len(held)) < MIN_PART:  # temperatures fitted on nothing, or a choice judged on nothing
        raise ValueError(f"{data.source}: fit_fraction {config.fit_fraction} splits {len(data)} examples into "
                         f"{len(fit)} to fit on and {len(held)} to judge on; each part needs >= {MIN_PART}")
    return fit, held


def calibrate(model: EarlyExitClassifier, data: Examples, config: CalibrationConfig,
              out: str | Path | None = None) -> CalibrationReport:
    """Fits temperatures, picks the threshold, sets both on ``model``; with ``out`` (the model directory)
    also saves rightsize.json, calibration.json, curve.csv and the two PNG plots there."""
    labels = np.array(data.label_ids(model.config.labels))
    fit, held = calibration_parts(data, config)
    logits, num_tokens = model.exit_logits(data.texts, data.pairs)  # (exits, n, labels): one pass over the data
    passed, alone, full = exit_costs(model, num_tokens)
    layers = model.config.exit_layers

    temperatures = cal.fit_temperatures(logits[:, fit], labels[fit])
    confidence, predicted = cal.calibrated_confidence(logits, temperatures)

    def part(rows):  # the curve arguments restricted to some documents
        return confidence[:, rows], predicted[:, rows], labels[rows], passed[:, rows], full[rows], layers

    if config.threshold is not None:
        choice = cal.ThresholdChoice(config.threshold, True, f"threshold {config.threshold} as given")
    else:
        choice = cal.choose_threshold(cal.speed_accuracy_curve(*part(fit)), target_drop=config.target_drop,
                                      flops_budget=config.flops_budget)

    def judged(rows) -> dict:
        point = cal.curve_point(*part(rows), choice.threshold)
        last = cal.curve_point(*part(rows), cal.ABOVE_ONE)
        return {**asdict(point), "accuracy_drop": last.accuracy - point.accuracy, "last_exit_accuracy": last.accuracy}

    report = CalibrationReport(
        config=asdict(config), data=data.source, dtype=model.dtype_name, documents_fit=len(fit), documents_held_out=len(held),
        temperatures=temperatures,
        exits=[asdict(m) for m in cal.exit_metrics(logits[:, held], labels[held], temperatures, layers)],
        threshold=choice.threshold, target_met=choice.met, choice=choice.message, fit=judged(fit), held_out=judged(held),
    )
    # stored under the precision the logits were computed in: a bfloat16 run gets its own temperatures
    model.set_config(model.config.with_calibration(model.dtype_name, temperatures, choice.threshold, report.summary()))
    if out is not None:
        _write_outputs(model, report, Path(out), logits[:, held], part(held), alone[:, held])
    return report


def _write_outputs(model, report, out: Path, held_logits, held, held_alone) -> None:
    confidence, predicted, labels, passed, full, layers = held
    curve = cal.speed_accuracy_curve(*held, max_points=CURVE_POINTS)
    singles = cal.single_exit_points(predicted, labels, held_alone, full, layers)
    oracle = cal.oracle_point(predicted, labels, passed, full, layers)
    chosen = cal.curve_point(*held, report.threshold)
    with open(out / CURVE_FILE, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["kind", "threshold", "accuracy", "mean_exit_layer", "flops_fraction"])
        for kind, points in (("early_exit", curve), ("single_exit", singles), ("oracle", [oracle]), ("chosen", [chosen])):
            for p in points:
                writer.writerow([kind, p.threshold, p.accuracy, p.mean_exit_layer, p.flops_fraction])
    plot_speed_accuracy(curve, singles, oracle, chosen, out / CURVE_PLOT,
                        title=f"held-out part of {Path(report.data).name} ({report.documents_held_out} documents)")
    plot_reliability(held_logits, labels, report.temperatures, layers, out / RELIABILITY_PLOT)
    (out / CALIBRATION_FILE).write_text(json.dumps(asdict(report), indent=2) + "\n")
    model.config.save(out)
    model.model_id = artifact_id(out)  # the artifact changed: new threshold and temperatures
    log.info("calibration written to %s", out)
