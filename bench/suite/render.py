"""Results -> PNG plots beside the results file, and the README's performance section (between the markers
below), written from the newest results file of each machine only: no number enters the README any other way."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ops.plots import plt

BEGIN, END = "<!-- bench:begin (bench/run.py writes this section) -->", "<!-- bench:end -->"
COLOURS = {"joint": "tab:blue", "sweet": "tab:orange", "multi": "tab:green"}
STYLES = {"float32": "-", "bfloat16": "--", "int8": ":"}
RESULTS_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})-(.+)")  # a results file's stem: <date>-<machine>
LEGEND = (
    "**How to read the tables.** *Best*: the fastest timed early-exit threshold whose test accuracy is within 1 "
    "point of the same model's full depth (read off the test curve, as the papers read theirs). *Calibrated*: the "
    "threshold chosen on dev for at most 1 point lost, as a user would deploy it. The oracle sends each document "
    "to its first correct exit (the last when none is right), so it needs the gold label and is not timed: its "
    "speedup is in FLOPs, and *share of oracle* compares FLOPs with FLOPs. This oracle "
    "(`ops/calibration.oracle_point`, the one `rightsize calibrate` plots) sends documents that no exit gets right "
    "to the last exit, so it is the most accurate limit, not the cheapest one: a threshold that lets such documents "
    "leave early can spend fewer FLOPs than it, and the share then exceeds 100%. Speedups are over the same model's "
    "full depth in the same precision (in a cascade: its last stage alone, a plain fine-tuned model); *calibrated vs "
    "float32 full model* compares another precision's calibrated threshold with the float32 full model of the same "
    "model, data, mode and test documents in the same file (`-` where there is none), a ratio across processes where "
    "the file's commands measured the two apart. `exit alone` "
    "is a model truncated after that exit (the truncated-model baseline); FLOPs are against the full model.")


def _groups(results: dict) -> dict[tuple[str, str], list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for system in results.get("accuracy", {}).values():
        groups.setdefault((system["model"], system["data"]), []).append(system)
    return groups


def plot_name(results_file: Path, model: str, data: str) -> str:
    return f"{results_file.stem}-{model}-{data}.png"


def write_plots(results: dict, results_file: Path) -> None:
    """Per model and data set: accuracy against FLOPs fraction (left) and against measured documents/second
    (right); and the batching part's documents/second by batch size."""
    for (model, data), systems in _groups(results).items():
        fig, (by_flops, by_speed) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=110)
        for s in systems:
            colour, style, name = COLOURS[s["mode"]], STYLES.get(s["dtype"], ":"), f"{s['mode']} {s['dtype']}"
            by_flops.plot([p["flops_fraction"] for p in s["curve"]], [p["accuracy"] for p in s["curve"]], style,
                          color=colour, label=f"{name}: early exit")
            timed = sorted((r for r in s["timed"] if r["kind"] != "exit alone"), key=lambda r: r["docs_per_s"])
            by_speed.plot([r["docs_per_s"] for r in timed], [r["accuracy"] for r in timed], style + "o",
                          color=colour, ms=4, label=f"{name}: full model and early exit")
            if s["dtype"] == "float32":
                alone = s["exits_alone"]
                by_flops.plot([e["flops_fraction"] for e in alone], [e["accuracy"] for e in alone], "s",
                              color=colour, ms=5, label=f"{s['mode']}: each exit alone")
                by_flops.plot(s["oracle"]["flops_fraction"], s["oracle"]["accuracy"], "*", color=colour, ms=11,
                              label=f"{s['mode']}: oracle")
                alone_timed = [r for r in s["timed"] if r["kind"] == "exit alone"]
                by_speed.plot([r["docs_per_s"] for r in alone_timed], [r["accuracy"] for r in alone_timed], "s",
                              color=colour, ms=5, label=f"{s['mode']}: each exit alone")
        by_flops.set_xlabel("FLOPs / full model")
        by_speed.set_xlabel("documents / second (measured)")
        for ax in (by_flops, by_speed):
            ax.set_ylabel("test accuracy")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, loc="lower right")
        fig.suptitle(f"{model} on {data}: {systems[0]['test_documents']} test documents", fontsize=10)
        fig.tight_layout()
        fig.savefig(results_file.parent / plot_name(results_file, model, data))
        plt.close(fig)
    if "batching" in results:
        rows = results["batching"]["rows"]
        fig, ax = plt.subplots(figsize=(5.5, 4), dpi=110)
        sizes = [r["batch_size"] for r in rows]
        ax.plot(sizes, [r["full_docs_per_s"] for r in rows], "o-", label="full model")
        ax.plot(sizes, [r["early_exit_docs_per_s"] for r in rows], "o-", label="early exit (calibrated threshold)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("documents / second")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(results_file.parent / f"{results_file.stem}-batching.png")
        plt.close(fig)


def _hardware(machine: dict) -> str:
    where = f"GPU {machine['gpu']}" if machine.get("gpu") else f"CPU only ({machine['cpu']})"
    return (f"{where}, {machine['cores']} cores, {machine['threads']} torch threads, CPU capability "
            f"{machine['torch_cpu_capability']}, native bfloat16: {machine['native_bf16']}, torch {machine['torch']}")


def render(results: dict, results_file: Path) -> str:
    """The README's part (Markdown) for one results file."""
    rel = f"bench/results/{results_file.name}"
    lines = [f"### {_hardware(results['machine'])}", "",
             f"Numbers from `{rel}`. Commands that produced it: "
             + ", ".join(f"`{c}`" for c in results.get("commands", [])) + ".", ""]
    groups = _groups(results)
    if groups:
        lines += ["**Speedup at <= 1 point of accuracy lost:**", "",
                  "| model | data | mode | precision | test docs | full-model accuracy | docs/s full | best: speedup "
                  "(measured) | best: accuracy lost | best: FLOPs speedup | oracle FLOPs speedup | share of oracle "
                  "| calibrated: speedup / accuracy lost | calibrated vs float32 full model |",
                  "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        # the float32 full model of the same model, data, mode and test documents, for the other precisions' rows
        float32_full = {(s["model"], s["data"], s["mode"], s["test_source"]): s["timed"][0]
                        for s in results["accuracy"].values() if s["dtype"] == "float32"}
        for (model, data), systems in groups.items():
            for s in systems:
                full, h = s["timed"][0], s["headline"]
                base = None if s["dtype"] == "float32" else float32_full.get((model, data, s["mode"], s["test_source"]))
                cells = (["none within 1 point", "", "", "", ""] if h is None else
                         [f"{h['speedup']:.2f}x", f"{100 * h['accuracy_drop']:.2f} pt", f"{h['flops_speedup']:.2f}x",
                          f"{h['oracle_flops_speedup']:.2f}x", f"{h['share_of_oracle']:.0%}"])
                calibrated = next(r for r in s["timed"] if r["kind"] == "early exit, calibrated")
                lines.append(f"| {model} | {data} | {s['mode']} | {s['dtype']} | {s['test_documents']} | "
                             f"{full['accuracy']:.4f} | {full['docs_per_s']:.1f} | " + " | ".join(cells) +
                             f" | {calibrated['speedup']:.2f}x / {100 * (full['accuracy'] - calibrated['accuracy']):.2f} pt | "
                             + ("-" if base is None else f"{calibrated['docs_per_s'] / base['docs_per_s']:.2f}x / "
                                f"{100 * (base['accuracy'] - calibrated['accuracy']):.2f} pt") + " |")
        lines += ["", "Every timed point:", "",
                  "| model | data | mode | precision | batch | point | threshold | accuracy | mean exit layer | FLOPs "
                  "| docs/s | vs full |", "|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
        for (model, data), systems in groups.items():
            for s in systems:
                for r in s["timed"]:
                    point = r["kind"] + (f" L{r['exit_layer']}" if "exit_layer" in r else "") + (
                        f" {r['flops_budget']:.0%}" if "flops_budget" in r else "")
                    threshold = "-" if r["threshold"] > 1 else f"{r['threshold']:.4f}"
                    lines.append(f"| {model} | {data} | {s['mode']} | {s['dtype']} | {s['batch_size']} | {point} | "
                                 f"{threshold} | "
                                 f"{r['accuracy']:.4f} | {r['mean_exit_layer']:.2f} | {r['flops_fraction']:.1%} | "
                                 f"{r['docs_per_s']:.1f} | {r['speedup']:.2f}x |")
        lines.append("")
        for model, data in groups:
            lines += [f"![{model} on {data}](bench/results/{plot_name(results_file, model, data)})", ""]
    if "batching" in results:
        b = results["batching"]
        lines += [f"**Batching** ({b['model']} on {b['data']}, {b['documents']} documents, calibrated threshold "
                  f"{b['threshold']:.4f}): early exit one document at a time (batch 1, the published setting) "
                  "against batched early exit, both against the full model at the same batch size.", "",
                  "| batch size | full model docs/s | early exit docs/s | early exit vs full | same labels and exits as batch 1 |",
                  "|---:|---:|---:|---:|---:|"]
        for r in b["rows"]:
            lines.append(f"| {r['batch_size']} | {r['full_docs_per_s']:.1f} | {r['early_exit_docs_per_s']:.1f} | "
                         f"{r['early_exit_speedup']:.2f}x | {r['same_as_batch_1']:.1%} |")
        stops, beats = b["early_exit_stops_paying_from_batch"], b["full_beats_one_at_a_time_from_batch"]
        lines += ["", (f"Batched early exit stopped paying off (no faster than the full model at the same batch size) "
                       f"at batch size {stops}." if stops else "Batched early exit stayed faster than the full model "
                       f"at every batch size measured (up to {b['rows'][-1]['batch_size']}).") + " " +
                  (f"The plain full model, batched, beat early exit one document at a time from batch size {beats} on."
                   if beats else "The full model never beat early exit one document at a time at these batch sizes."),
                  "", f"![batching](bench/results/{results_file.stem}-batching.png)", ""]
    if "peers" in results:
        p = results["peers"]
        lines += [f"**Peers** ({p['model']} on {p['data']}, {p['documents']} documents; the same fine-tuned weights as "
                  "a plain classifier, each runtime at its best batch size of the same set; the peers take documents "
                  "in input order, rightsize sorts them by length):", "",
                  "| runtime | batch size | accuracy | docs/s |", "|---|---:|---:|---:|"]
        for r in p["rows"]:
            if "error" in r:
                lines.append(f"| {r['peer']} | - | - | not measured: {r['error']} |")
            else:
                lines.append(f"| {r['peer']} | {r['batch_size']} | {r['accuracy']:.4f} | {r['docs_per_s']:.1f} |")
        lines.append("")
    if "path" in results:
        w = results["path"]
        lines += [f"**The whole path** ({w['documents']} documents of AG News and SST-2 text, model load included, "
                  f"calibrated threshold {w['threshold']:.4f}):", "",
                  "| path | docs/s | vs predict |", "|---|---:|---:|"]
        lines += [f"| {r['path']} | {r['docs_per_s']:.1f} | {r['vs_predict']:.2f}x |" for r in w["rows"]]
        if "report" in results:
            r = results["report"]
            lines += ["", f"`rightsize report` on {r['rows']:,} prediction rows: {r['seconds']:.2f} s "
                      f"(peak RSS {r['peak_rss_mib']:.0f} MiB, fresh process, imports excluded)."]
        lines.append("")
    return "\n".join(lines)


def shown_files(results_dir: Path) -> list[Path]:
    """The results files the README shows: of each machine, the one with the newest date in its name
    (<date>-<machine>.json); newest first, by date and then by name. --quick files and other names never."""
    newest: dict[str, Path] = {}
    for f in sorted(results_dir.glob("*.json")):  # by name: date order within a machine
        match = RESULTS_NAME.fullmatch(f.stem)
        if match and not f.stem.endswith("-quick"):
            newest[match[2]] = f  # a later date of the same machine replaces an earlier one
    if not newest:
        raise SystemExit(f"{results_dir}: no results file (<date>-<machine>.json); run bench/run.py first")
    return sorted(newest.values(), key=lambda f: f.name, reverse=True)  # names start with the date


def write_readme(results_dir: Path, readme: Path) -> list[Path]:
    """Replaces the section between the markers in ``readme`` with ``render`` of each of ``shown_files``;
    returns those files."""
    text = readme.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise SystemExit(f"{readme}: needs exactly one {BEGIN!r} ... {END!r} pair")
    files = shown_files(results_dir)
    results = [json.loads(f.read_text()) for f in files]
    gpu_files = [f.name for f, r in zip(files, results) if (r.get("machine") or {}).get("gpu")]
    lines = [BEGIN, "", ("GPU results: " + ", ".join(f"`bench/results/{n}`" for n in gpu_files)) if gpu_files else
             "**No GPU numbers exist yet**: no GPU machine was available when the suite ran.", "",
             "One part per machine, the newest results file of each, newest first.", "", LEGEND, ""]
    lines += [render(r, f) for f, r in zip(files, results)] + [END]
    head, rest = text.split(BEGIN)
    tail = rest.split(END, 1)[1]
    readme.write_text(head + "\n".join(lines) + tail)
    return files
