"""The cost report as people read it: ``summary.json``, ``report.md`` (with PNG plots beside it) and one
self-contained ``report.html`` (plots embedded as data URIs, inline CSS, no script: it opens offline).

Input is the summary dict of ``ops/accounting.py``; nothing here reads predictions.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")  # files only; never needs a screen
matplotlib.rcParams["text.parse_math"] = False  # labels and run ids are user text: "$x$" is not a formula
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

SUMMARY_FILE = "summary.json"
MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"
ESTIMATE_NOTE = ("The full-model cost is an estimate: the measured cost scaled by the FLOPs the full model would "
                 "have spent over the FLOPs spent, which assumes time grows with FLOPs.")


def flops_text(value: float | None) -> str:
    if value is None:
        return "unknown"
    for unit, size in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if abs(value) >= size:
            return f"{value / size:.3f} {unit}"
    return f"{value:.0f} FLOP"


def money_text(value: float | None) -> str:
    """Two decimals, or three significant digits below 1 (a demo costs fractions of a cent)."""
    if value is None:
        return "unknown"
    return f"{value:,.2f}" if abs(value) >= 1 or value == 0 else np.format_float_positional(value, precision=3, fractional=False, trim="-")


def _number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def _percent(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1%}"


# The headline figures: (summary key, label, formatter). The HTML cells carry the raw value in data-value.
HEADLINE: list[tuple[str, str, Callable[[Any], str]]] = [
    ("documents", "documents labelled", _number),
    ("dead_letters", "dead letters (not labelled)", _number),
    ("truncated", "truncated at max length", _number),
    ("tokens", "tokens", _number),
    ("flops", "FLOPs spent", flops_text),
    ("full_flops", "FLOPs of the full model", flops_text),
    ("flops_saved_fraction", "FLOPs saved", _percent),
    ("mean_exit_layer", "mean exit layer", lambda v: _number(v, 2)),
    ("wall_seconds", "wall time (s)", lambda v: _number(v, 1)),
    ("documents_per_second", "documents / second", lambda v: _number(v, 1)),
    ("cost", "cost", money_text),
    ("full_model_cost_estimate", "full model cost (estimate)", money_text),
    ("cost_per_1000_documents", "cost per 1,000 documents", money_text),
]


def headline_rows(summary: dict) -> list[tuple[str, str, str]]:
    """(key, label, formatted value) for each headline figure."""
    return [(key, label, fmt(summary[key])) for key, label, fmt in HEADLINE]


# -- plots ------------------------------------------------------------------------------------------------


PLOT_FILES = ("exit_histogram.png", "cost_by_label.png", "confidence_by_exit.png", "flops_by_length.png",
              "trend.png")  # every plot a report may write, and the only files of ``out`` it removes


def plot_files(summary: dict) -> dict[str, bytes]:
    """File name -> PNG bytes of each plot the summary supports (the trend only with several runs)."""
    if not summary["documents"]:
        return {}  # nothing was labelled: the tables say so, there is nothing to draw
    plots = {
        "exit_histogram.png": _exit_histogram(summary),
        "cost_by_label.png": _cost_by_label(summary),
        "confidence_by_exit.png": _confidence_by_exit(summary),
        "flops_by_length.png": _flops_by_length(summary),
    }
    if len(summary["runs"]) > 1:
        plots["trend.png"] = _trend(summary)
    return plots


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _exit_histogram(summary: dict) -> bytes:
    rows = summary["by_exit_layer"]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    ax.bar([str(r["exit_layer"]) for r in rows], [r["documents"] for r in rows], color="tab:blue")
    ax.set(xlabel="exit layer", ylabel="documents", title="where documents left the network")
    return _png(fig)


def _cost_by_label(summary: dict) -> bytes:
    rows = summary["by_label"]
    names = [r["label"] for r in rows]
    spent = np.array([r["flops"] for r in rows], dtype=float)
    full = np.array([r["full_flops"] for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    ax.bar(names, spent, color="tab:blue", label="FLOPs spent")
    ax.bar(names, full - spent, bottom=spent, color="tab:gray", alpha=0.35, label="saved by early exit")
    ax.set(ylabel="FLOPs", title="compute by predicted label")
    ax.legend()
    ax.tick_params(axis="x", labelrotation=30 if len(names) > 5 else 0)
    return _png(fig)


def _confidence_by_exit(summary: dict) -> bytes:
    rows = summary["confidence_by_exit"]
    counts = np.array([r["documents_per_bin"] for r in rows], dtype=float)  # (exits, bins)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(rows) + 1.8), dpi=100)
    image = ax.imshow(shares, aspect="auto", cmap="Blues", vmin=0, vmax=1, extent=(0, 1, len(rows) - 0.5, -0.5))
    ax.set_yticks(range(len(rows)), [f"layer {r['exit_layer']}" for r in rows])
    ax.set(xlabel="calibrated confidence", title="confidence of the documents leaving at each exit")
    fig.colorbar(image, ax=ax, label="share of the exit's documents")
    return _png(fig)


def _flops_by_length(summary: dict) -> bytes:
    rows = summary["by_length"]
    names = [f"{r['tokens_from']}-{r['tokens_below'] - 1}" if r["tokens_below"] else f"{r['tokens_from']}+" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    ax.bar(x - 0.2, [r["full_flops"] for r in rows], 0.4, color="tab:gray", alpha=0.5, label="full model")
    ax.bar(x + 0.2, [r["flops"] for r in rows], 0.4, color="tab:blue", label="spent")
    ax.set_xticks(x, names)
    ax.set(xlabel="tokens per document", ylabel="FLOPs", title="compute by document length")
    ax.legend()
    return _png(fig)


def run_names(runs: list[dict], short: bool = False) -> list[str]:
    """Each run's id, and its folder too where one id appears in two folders (a copied run, one --run-id under
    two outputs). ``short``, for plot ticks: the id's last 14 characters, and on a second line the last 18 of the
    folder the run was written under."""
    ids = Counter(r["run_id"] for r in runs)
    names = []
    for r in runs:
        name = r["run_id"][-14:] if short else r["run_id"]
        if ids[r["run_id"]] > 1:
            name += f"\n…{r['folder'].rsplit('/', 1)[0][-18:]}" if short else f" ({r['folder']})"
        names.append(name)
    return names


def _trend(summary: dict) -> bytes:
    runs = summary["runs"]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    x = np.arange(len(runs))
    saved = [np.nan if r["flops_saved_fraction"] is None else r["flops_saved_fraction"] for r in runs]
    ax.plot(x, saved, "o-", color="tab:blue", label="FLOPs saved")
    lowest = min((v for v in saved if not np.isnan(v)), default=0.0)
    ax.set_ylim(min(0.0, lowest - 0.05), 1)  # below 0: a run that spent more than the full model
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_ylabel("FLOPs saved (fraction)")
    ax.set_xticks(x, run_names(runs, short=True), rotation=30, ha="right", fontsize=7)
    money = [r["cost_per_1000_documents"] for r in runs]
    if any(m is not None for m in money):
        right = ax.twinx()
        right.plot(x, [np.nan if m is None else m for m in money], "s--", color="tab:red", label="cost / 1,000 docs")
        right.set_ylabel("cost per 1,000 documents")
        right.set_ylim(bottom=0)  # from zero: a 4% change is not drawn full height
        right.legend(loc="lower right")
    ax.legend(loc="lower left")
    ax.set_title("trend over runs")
    return _png(fig)


# -- documents --------------------------------------------------------------------------------------------


def _tables(summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of the breakdown tables, shared by Markdown and HTML."""
    by_exit = [[str(r["exit_layer"]), _number(r["documents"]), _percent(r["documents"] / summary["documents"]),
                flops_text(r["flops"]), _number(r["mean_confidence"], 3)] for r in summary["by_exit_layer"]]
    by_label = [[str(r["label"]), _number(r["documents"]), flops_text(r["flops"]),
                 _percent(r["flops_saved_fraction"]), _number(r["mean_exit_layer"], 2)] for r in summary["by_label"]]
    by_length = [[f"{r['tokens_from']}-{r['tokens_below'] - 1}" if r["tokens_below"] else f"{r['tokens_from']}+",
                  _number(r["documents"]), flops_text(r["flops"]), _percent(r["flops_saved_fraction"]),
                  _number(r["mean_exit_layer"], 2)] for r in summary["by_length"]]
    runs = [[name, (r["started"] or "unknown")[:19].replace("T", " "), _number(r["documents"]),
             _number(r["dead_letters"]), _percent(r["flops_saved_fraction"]), _number(r["mean_exit_layer"], 2),
             _number(r["wall_seconds"], 1), money_text(r["cost"]), money_text(r["cost_per_1000_documents"])]
            for name, r in zip(run_names(summary["runs"]), summary["runs"])]
    return [
        ("By exit layer", ["exit layer", "documents", "share", "FLOPs", "mean confidence"], by_exit),
        ("By predicted label", ["label", "documents", "FLOPs", "FLOPs saved", "mean exit layer"], by_label),
        ("By document length (tokens)", ["tokens", "documents", "FLOPs", "FLOPs saved", "mean exit layer"], by_length),
        ("Runs", ["run id", "started", "documents", "dead letters", "FLOPs saved", "mean exit layer", "wall s",
                  "cost", "cost / 1,000 docs"], runs),
    ]


def _money_note(summary: dict) -> str:
    if summary["cost"] is None:
        return f"Money: unknown ({summary['money_unknown_because']})."
    note = (f"Money: measured wall time x {summary['devices']} device(s) x {summary['price_per_hour']} per "
            f"device-hour. {ESTIMATE_NOTE}")
    if summary.get("money_unknown_because"):
        note += f" Not in the money figures: {summary['money_unknown_because']}."
    return note


def _notes(summary: dict) -> list[str]:
    notes = [_money_note(summary)]
    if summary.get("left_out_cut_short"):
        notes.append(f"Left out: {len(summary['left_out_cut_short'])} folder(s) holding part of a run, from a swap "
                     f"on an object store that was cut short (run the job again): "
                     f"{', '.join(summary['left_out_cut_short'])}.")
    return notes


def render_markdown(summary: dict, plots: list[str]) -> str:
    lines = ["# rightsize cost report", "", f"Predictions: `{summary['predictions']}` ({summary['files']} files, "
             f"{len(summary['runs'])} runs, models {', '.join(summary['models'])})", "",
             "| figure | value |", "|---|---|"]
    lines += [f"| {label} | {value} |" for _, label, value in headline_rows(summary)]
    lines.append("")
    for note in _notes(summary):
        lines += [note, ""]
    for title, header, rows in _tables(summary):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        lines.append("")
    lines += ["## Plots", ""] + [f"![{name}]({name})" for name in plots] + [""]
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 9px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{width:49%;margin:0.5em 0}
.note{color:#555;font-size:0.9em}"""


def render_html(summary: dict, plots: dict[str, bytes]) -> str:
    """One file: every plot a data URI, so it opens offline and can be mailed as it is."""
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>rightsize cost report</title>",
             f"<style>{_CSS}</style></head><body><h1>rightsize cost report</h1>",
             f"<p>Predictions: <code>{e(summary['predictions'])}</code> ({summary['files']} files, "
             f"{len(summary['runs'])} runs, models {e(', '.join(summary['models']))})</p>",
             "<table id='headline'><tr><th>figure</th><th>value</th></tr>"]
    for key, label, value in headline_rows(summary):
        raw = "" if summary[key] is None else repr(summary[key])
        parts.append(f"<tr><td>{e(label)}</td><td data-key='{key}' data-value='{e(raw)}'>{e(value)}</td></tr>")
    parts.append("</table>" + "".join(f"<p class='note'>{e(note)}</p>" for note in _notes(summary)))
    for title, header, rows in _tables(summary):
        parts.append(f"<h2>{e(title)}</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</table>")
    parts.append("<h2>Plots</h2>")
    for name, png in plots.items():
        data = base64.b64encode(png).decode()
        parts.append(f"<img alt='{e(name)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(summary: dict, out: str | Path) -> dict[str, Path]:
    """Writes summary.json, report.md with its PNGs, and report.html into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in PLOT_FILES:  # a plot of an earlier report (the trend) must not outlive it; nothing else goes
        (out / name).unlink(missing_ok=True)
    plots = plot_files(summary)
    for name, png in plots.items():
        (out / name).write_bytes(png)
    paths = {"summary": out / SUMMARY_FILE, "markdown": out / MARKDOWN_FILE, "html": out / HTML_FILE}
    paths["summary"].write_text(json.dumps(summary, indent=2) + "\n")
    paths["markdown"].write_text(render_markdown(summary, list(plots)))
    paths["html"].write_text(render_html(summary, plots), encoding="utf-8")
    return paths
