"""Prefect: the cost report step, a thin shell over ``ops/accounting.py`` and ``ops/report.py``; publishes the
headline as a markdown artifact and a link to report.html."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from flows.caching import transient_only
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from ops.accounting import ReportConfig, summarize
from ops.report import ESTIMATE_NOTE, headline_rows, write_report
from ops.urls import local_path

ARTIFACT_KEY = "rightsize-cost-report"
LINK_ARTIFACT_KEY = "rightsize-cost-report-html"


def build_report(config: ReportConfig, out: str | Path) -> dict:
    """summary.json, report.md and report.html in ``out``; returns {summary, paths}."""
    # before reading the predictions, which may take a while
    folder = _local_folder(str(out))
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():  # a file where the folder, or one above it, should be
        raise ValueError(f"report folder {str(out)!r} cannot be made: {existing} is a file")
    summary = summarize(config)
    paths = write_report(summary, folder)
    return {"summary": summary, "paths": {k: str(v) for k, v in paths.items()}}


def _local_folder(out: str) -> Path:
    """The local folder a report is written to: a path or a file:// URL, not a remote URL."""
    try:
        local = local_path(out)
    except ImportError:  # a remote scheme whose fsspec package is not installed (gs:// without gcsfs)
        local = None
    if local is None:
        raise ValueError(f"report folder {out!r}: the report is written to a local folder, not a remote URL")
    return Path(local).absolute()


@task(retries=2, retry_condition_fn=transient_only, retry_delay_seconds=5)
def write_cost_report(config: ReportConfig, out: str) -> dict:
    return build_report(config, out)


def headline_markdown(summary: dict, html_path: str) -> str:
    lines = ["# Cost report", "", "| figure | value |", "|---|---|"]
    lines += [f"| {label} | {value} |" for _, label, value in headline_rows(summary)]
    lines += ["", ESTIMATE_NOTE if summary["cost"] is not None else f"Money unknown: {summary['money_unknown_because']}.",
              "", f"Full report: `{html_path}`"]
    return "\n".join(lines) + "\n"


@flow(name="rightsize-report")
def report_flow(config: ReportConfig, out: str) -> dict:
    result = write_cost_report(config, out)
    html_path = result["paths"]["html"]
    create_markdown_artifact(headline_markdown(result["summary"], html_path), key=ARTIFACT_KEY,
                             description="compute-cost headline")
    create_link_artifact(Path(html_path).resolve().as_uri(), link_text="report.html", key=LINK_ARTIFACT_KEY,
                         description="the full cost report (self-contained HTML)")
    return result
