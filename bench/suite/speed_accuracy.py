"""Part 2, the papers' figure: accuracy against FLOPs fraction and against measured documents/second, for one
fine-tuned model ("system": a data set, a backbone, a training mode, a precision).

From one pass of every exit's logits over dev (temperatures, thresholds) and over test:
  - the early-exit curve over the whole threshold range, each exit alone, the full model, the oracle
    (accuracy and FLOPs: exact counts, no timing);
then, timed with ``predict`` on test (medians after a warm-up):
  - the full model, each shallower exit alone (a model truncated after that exit), early exit at the
    threshold calibrated on dev for ``target_drop`` and at thresholds chosen on dev for a few FLOPs budgets.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
from torch import nn

from models import EarlyExitClassifier
from models.calibration import exit_costs
from models.classifier import truncated_backbone
from models.precision import quantize_feed_forward
from ops import calibration as cal
from ops.cost import full_model_flops
from ops.examples import Examples

from suite.common import Splits, prefix, timed

FULL = cal.ABOVE_ONE  # a threshold no confidence reaches: every document runs to the last exit


def exit_alone(model: EarlyExitClassifier, k: int) -> EarlyExitClassifier:
    """Exit ``k`` used alone for every document: the backbone truncated after that exit, with that exit's head
    (in a cascade, stage ``k`` itself). The truncated backbone holds copies of the first layers' weights."""
    if model.cascade:
        return model.stage_model(k)
    layers = model.config.exit_layers[k]
    backbone = truncated_backbone(model.backbone.config, layers)
    config = model.config.with_updates(num_layers=layers, exit_layers=(layers,), calibrations={},
                                       temperatures=(model.config.temperatures[k],))
    view = EarlyExitClassifier(backbone, model.tokenizer, config)
    if model.dtype_name == "int8":  # int8 weights load only into int8 layers
        quantize_feed_forward(view.runner.layers)
    missing, _ = backbone.load_state_dict(model.backbone.state_dict(), strict=False)  # the deeper layers are unused
    if [key for key in missing if not key.startswith("pooler")]:
        raise RuntimeError(f"truncated backbone left weights unset: {missing[:3]}")
    view.exits = nn.ModuleList([model.exits[k]])
    view.dtype_name = model.dtype_name
    return view.to(model.device).eval()


def _curve_inputs(model: EarlyExitClassifier, data: Examples):
    logits, num_tokens = model.exit_logits(data.texts, data.pairs)  # (exits, n, labels)
    passed, alone, full = exit_costs(model, num_tokens)
    return logits, np.array(data.label_ids(model.config.labels)), passed, alone, full


def calibrate_on_dev(model: EarlyExitClassifier, dev: Examples, target_drop: float):
    """Per-exit temperatures and the threshold for ``target_drop``, fitted on ``dev`` in the model's precision
    and set on ``model``; returns (temperatures, the dev curve, the threshold choice)."""
    logits, gold, passed, _, full = _curve_inputs(model, dev)
    temperatures = cal.fit_temperatures(logits, gold)
    curve = cal.speed_accuracy_curve(*cal.calibrated_confidence(logits, temperatures), gold, passed, full,
                                     model.config.exit_layers)
    choice = cal.choose_threshold(curve, target_drop=target_drop)
    model.set_config(model.config.with_calibration(model.dtype_name, temperatures, choice.threshold, {}))
    return temperatures, curve, choice


def timed_predict(model: EarlyExitClassifier, test: Examples, gold: np.ndarray, threshold: float,
                  batch_size: int, repeats: int, full_model: EarlyExitClassifier | None = None) -> dict:
    """docs/s (median), accuracy, mean exit layer and FLOPs fraction of ``model.predict`` on ``test``; the FLOPs
    are counted against ``full_model``'s full depth (default: ``model``'s own; a truncated model is compared
    with the model it was cut from)."""
    small = prefix(test, batch_size)
    seconds, times, predictions = timed(
        lambda: model.predict(test.texts, test.pairs, threshold=threshold, batch_size=batch_size), repeats,
        lambda: model.predict(small.texts, small.pairs, threshold=threshold, batch_size=batch_size))
    ids = np.array([model.config.labels.index(p.label) for p in predictions])
    full_flops = [full_model_flops(p.num_tokens, (full_model or model).shape) for p in predictions]
    return {"docs_per_s": len(test) / seconds, "times_s": times, "accuracy": float((ids == gold).mean()),
            "mean_exit_layer": float(np.mean([p.exit_layer for p in predictions])),
            "flops_fraction": sum(p.flops for p in predictions) / sum(full_flops)}


def measure_system(model: EarlyExitClassifier, data: Splits, *, target_drop: float, budgets: tuple[float, ...],
                   repeats: int, batch_size: int, time_exits: bool = True) -> dict:
    """Everything part 2 reports for one model, in the precision it was loaded in."""
    layers = model.config.exit_layers
    temperatures, dev_curve, calibrated = calibrate_on_dev(model, data.dev, target_drop)

    logits, gold, passed, alone, full = _curve_inputs(model, data.test)
    confidence, predicted = cal.calibrated_confidence(logits, temperatures)
    args = (confidence, predicted, gold, passed, full, layers)
    oracle = cal.oracle_point(predicted, gold, passed, full, layers)
    result = {
        "exit_layers": list(layers), "temperatures": temperatures, "dtype": model.dtype_name,
        "test_documents": len(data.test), "dev_documents": len(data.dev), "test_source": data.test.source,
        "batch_size": batch_size, "repeats": repeats,
        "curve": [asdict(p) for p in cal.speed_accuracy_curve(*args, max_points=200)],
        "exits_alone": [{"exit_layer": int(layer), "accuracy": float((predicted[k] == gold).mean()),
                         "flops_fraction": float(alone[k].sum() / full.sum())} for k, layer in enumerate(layers)],
        "oracle": {"accuracy": oracle.accuracy, "flops_fraction": oracle.flops_fraction,
                   "mean_exit_layer": oracle.mean_exit_layer},
        "calibrated": {"threshold": calibrated.threshold, "target_drop": target_drop, "met_on_dev": calibrated.met},
        "timed": [],
    }

    def add(kind: str, threshold: float, on: EarlyExitClassifier = model, **extra) -> None:
        row = {"kind": kind, "threshold": threshold, **extra,
               **timed_predict(on, data.test, gold, threshold, batch_size, repeats, full_model=model)}
        result["timed"].append(row)
        print(f"  {kind:<22} {row['docs_per_s']:8.1f} docs/s  accuracy {row['accuracy']:.4f}  "
              f"FLOPs {row['flops_fraction']:.1%}", flush=True)

    # The full model: every layer of the one backbone; in a cascade, its last stage alone (a plain fine-tuned
    # model), not the whole cascade run to the end, which would cost the sum of all stages.
    last = len(layers) - 1
    add("full model", FULL, exit_alone(model, last) if model.cascade else model)
    add("early exit, calibrated", calibrated.threshold)
    for budget in budgets:
        choice = cal.choose_threshold(dev_curve, flops_budget=budget)
        if choice.met and all(abs(r["threshold"] - choice.threshold) > 1e-9 for r in result["timed"]):
            add("early exit, budget", choice.threshold, flops_budget=budget)
    if time_exits:
        for k in range(last):
            add("exit alone", FULL, exit_alone(model, k), exit_layer=int(layers[k]))
    full_rate = result["timed"][0]["docs_per_s"]
    for row in result["timed"]:
        row["speedup"] = row["docs_per_s"] / full_rate
    return result


def headline(system: dict, max_drop: float = 0.01) -> dict | None:
    """The fastest timed early-exit point whose test accuracy is within ``max_drop`` of the full model's,
    with its measured speedup, its FLOPs speedup and the oracle's FLOPs speedup (1 / FLOPs fraction)."""
    full = system["timed"][0]
    within = [r for r in system["timed"][1:] if r["kind"].startswith("early exit")
              and r["accuracy"] >= full["accuracy"] - max_drop - 1e-12]
    if not within:
        return None
    best = max(within, key=lambda r: r["docs_per_s"])
    oracle_speedup = 1 / system["oracle"]["flops_fraction"]
    flops_speedup = 1 / best["flops_fraction"]
    return {"kind": best["kind"], "threshold": best["threshold"], "speedup": best["speedup"],
            "accuracy_drop": full["accuracy"] - best["accuracy"], "flops_speedup": flops_speedup,
            "oracle_flops_speedup": oracle_speedup, "share_of_oracle": flops_speedup / oracle_speedup,
            "measured_share_of_oracle": best["speedup"] / oracle_speedup}
