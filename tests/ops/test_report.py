"""The report files: summary.json, report.md, and a self-contained report.html whose numbers are the summary's,
checked in the file and as a person sees it in a real headless Chromium."""

import base64
import html
import json
import re
import shutil
from pathlib import Path

import pytest

from ops.accounting import ReportConfig, summarize
from ops.report import HEADLINE, write_report
from tests.ops.test_accounting import write_runs

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture()
def report(tmp_path):
    summary = summarize(ReportConfig(write_runs(tmp_path), price_per_hour=3.0, devices=2))
    return write_report(summary, tmp_path / "report"), summary


def test_html_embeds_every_plot_and_holds_the_summary_numbers(report):
    paths, summary = report
    page = paths["html"].read_text()
    assert json.loads(paths["summary"].read_text()) == summary
    sources = re.findall(r"<img [^>]*src='([^']*)'", page)
    plots = sorted(p.name for p in paths["html"].parent.glob("*.png"))
    assert len(sources) == len(plots) == 5  # 4 plots + the trend, since there are two runs
    for src in sources:  # every image inline, a real PNG
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", page)  # nothing to fetch
    cells = dict(re.findall(r"data-key='(\w+)' data-value='([^']*)'", page))
    assert set(cells) == {key for key, _, _ in HEADLINE}
    for key, _, _ in HEADLINE:
        raw = html.unescape(cells[key])
        assert (None if raw == "" else float(raw)) == pytest.approx(summary[key])
    assert "estimate" in page
    # What a person reads, formatted here independently of ops/report.py.
    shown = dict(re.findall(r"data-key='(\w+)' data-value='[^']*'>([^<]*)<", page))
    assert shown["documents"] == "4" and shown["flops_saved_fraction"] == "35.0%"
    assert shown["mean_exit_layer"] == "2.00" and shown["cost"] == "3.00" and shown["full_model_cost_estimate"] == "4.32"
    assert shown["flops"] == "1300 FLOP" and shown["wall_seconds"] == "1,800.0"
    rows = re.findall(r"<tr><td>(x|y)</td><td>(\d+)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td></tr>", page)
    assert rows == [("x", "2", "350 FLOP", "61.1%", "1.50"), ("y", "2", "950 FLOP", "13.6%", "2.50")]


def test_a_rewritten_report_removes_its_old_plots_and_nothing_else(report, tmp_path):
    """The trend of a two-run report must not outlive it when the next report has one run; a PNG of the
    user's in the same folder is not the report's to remove."""
    import pyarrow.parquet as pq
    from tests.ops.test_accounting import _table

    paths, _ = report
    out = paths["html"].parent
    (out / "holiday.png").write_bytes(b"\x89PNG mine")
    assert (out / "trend.png").exists()
    pq.write_table(_table([("z", "x", 1, 5, 10, 20, 0.9)], "r"), tmp_path / "one.parquet")
    write_report(summarize(ReportConfig(str(tmp_path / "one.parquet"))), out)
    assert not (out / "trend.png").exists() and (out / "exit_histogram.png").exists()
    assert (out / "holiday.png").read_bytes() == b"\x89PNG mine"


def test_user_text_is_escaped_and_not_parsed(tmp_path):
    """A label is user text: HTML markup is escaped, "$...$" is not a matplotlib formula, "|" keeps the
    Markdown table whole."""
    import pyarrow.parquet as pq
    from tests.ops.test_accounting import _table

    pq.write_table(_table([("z", "<b>$x^$|y</b>", 1, 5, 10, 20, 0.9)], "r"), tmp_path / "p.parquet")
    paths = write_report(summarize(ReportConfig(str(tmp_path / "p.parquet"))), tmp_path / "out")
    page = paths["html"].read_text()
    assert "&lt;b&gt;$x^$|y&lt;/b&gt;" in page and "<b>$x" not in page
    assert "| <b>$x^$\\|y</b> | 1 |" in paths["markdown"].read_text()


def test_report_of_an_empty_predictions_file(tmp_path):
    from ops.predictions import PredictionWriter

    with PredictionWriter(str(tmp_path / "empty.parquet")):
        pass  # what 'rightsize predict' writes when every input was a dead letter
    paths = write_report(summarize(ReportConfig(str(tmp_path / "empty.parquet"))), tmp_path / "out")
    summary = json.loads(paths["summary"].read_text())
    assert summary["documents"] == 0 and summary["flops_saved_fraction"] is None and summary["runs"] == []
    assert "documents labelled | 0 |" in paths["markdown"].read_text()


def test_markdown_links_its_plots(report):
    paths, summary = report
    text = paths["markdown"].read_text()
    for name in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (paths["markdown"].parent / name).stat().st_size > 0
    assert f"| documents labelled | {summary['documents']:,} |" in text


def test_report_in_a_real_browser(report, tmp_path):
    """Opens report.html in headless Chromium: every image decoded with a non-zero size, no request left the
    file, and a screenshot is saved."""
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (make setup installs Debian's chromium; it needs apt as root)")
    sync_api = pytest.importorskip("playwright.sync_api")
    paths, _ = report
    requests = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.on("request", lambda r: requests.append(r.url))
        page.goto(paths["html"].as_uri(), wait_until="load")
        images = page.eval_on_selector_all(
            "img", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight, e.width, e.height])")
        headline = page.inner_text("#headline")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert len(images) == 5
    assert all(done and nw > 0 and nh > 0 and w > 0 and h > 0 for done, nw, nh, w, h in images), images
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    assert "documents labelled" in headline and (tmp_path / "report.png").stat().st_size > 10_000
