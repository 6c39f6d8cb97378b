"""PNG plots: the speed/accuracy curve and per-exit reliability diagrams (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a screen
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ops.calibration import CurvePoint, reliability_bins, softmax  # noqa: E402


def plot_speed_accuracy(curve: list[CurvePoint], singles: list[CurvePoint], oracle: CurvePoint,
                        chosen: CurvePoint | None, path: str | Path, title: str = "") -> None:
    """FLOPs fraction (x) vs accuracy (y): the early-exit curve over thresholds, each exit alone, the oracle."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    ax.plot([p.flops_fraction for p in curve], [p.accuracy for p in curve], "-", lw=1.5, color="tab:blue",
            label="early exit (all thresholds)")
    ax.plot([p.flops_fraction for p in singles], [p.accuracy for p in singles], "s", color="tab:gray",
            label="one exit for every document")
    for p in singles:
        ax.annotate(f"L{p.mean_exit_layer:.0f}", (p.flops_fraction, p.accuracy), textcoords="offset points",
                    xytext=(4, -10), fontsize=8, color="tab:gray")
    ax.plot([oracle.flops_fraction], [oracle.accuracy], "*", ms=12, color="tab:green", label="oracle")
    if chosen is not None:
        ax.plot([chosen.flops_fraction], [chosen.accuracy], "o", ms=9, mfc="none", mew=2, color="tab:red",
                label=f"chosen threshold {chosen.threshold:.3f}")
    ax.set_xlabel("FLOPs spent / FLOPs of the full model")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, max(1.05, max(p.flops_fraction for p in curve) + 0.02))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or "speed/accuracy trade-off", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_reliability(logits: np.ndarray, labels: np.ndarray, temperatures, exit_layers, path: str | Path) -> None:
    """One panel per exit: accuracy per confidence bin before (T=1) and after temperature scaling."""
    n = len(exit_layers)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.2 * rows), dpi=110, squeeze=False)
    width = 1 / 15
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.axis("off")
            continue
        for t, color, name, shift in ((1.0, "tab:orange", "before", -width / 4), (temperatures[k], "tab:blue",
                                                                                    f"after (T={temperatures[k]:.2f})", width / 4)):
            probs = softmax(logits[k], t)
            correct = probs.argmax(-1) == labels
            bins = reliability_bins(probs.max(-1), correct)
            centres = [b[0] + shift for b in bins if b[3]]
            ax.bar(centres, [b[1] for b in bins if b[3]], width=width / 2, color=color, alpha=0.8, label=name)
        ax.plot([0, 1], [0, 1], "--", color="black", lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"exit after layer {exit_layers[k]}", fontsize=9)
        ax.set_xlabel("confidence", fontsize=8)
        ax.set_ylabel("accuracy", fontsize=8)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_data_map(confidence: np.ndarray, variability: np.ndarray, correctness: np.ndarray, path: str | Path,
                  title: str = "", max_points: int = 25_000, seed: int = 0) -> None:
    """The data map of Swayamdipta et al. (2020): variability (x) against confidence (y), one dot per training
    example, coloured by correctness; at most ``max_points`` dots (a seeded sample) so the PNG stays legible."""
    rows = np.arange(len(confidence))
    if len(rows) > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=max_points, replace=False))
    fig, ax = plt.subplots(figsize=(6.4, 5.2), dpi=120)
    dots = ax.scatter(variability[rows], confidence[rows], c=correctness[rows], cmap="coolwarm_r", vmin=0, vmax=1,
                      s=6, alpha=0.7, linewidths=0)
    fig.colorbar(dots, ax=ax, label="correctness (fraction of epochs right)")
    for text, xy in (("easy-to-learn", (0.03, 0.95)), ("hard-to-learn", (0.03, 0.03)), ("ambiguous", (0.75, 0.5))):
        ax.annotate(text, xy, xycoords="axes fraction", fontsize=9, color="black",
                    bbox=dict(boxstyle="round", fc="white", alpha=0.7))
    ax.set_xlabel("variability (std of p(gold) over epochs)")
    ax.set_ylabel("confidence (mean p(gold) over epochs)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(left=0)
    shown = f", {len(rows)} of {len(confidence)} shown" if len(rows) < len(confidence) else ""
    ax.set_title(f"{title}{shown}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
