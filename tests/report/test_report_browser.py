"""The report page in a real browser: headless chromium over the DevTools protocol.

Skipped where chromium or websocket-client is absent (``.ci/run`` installs both). Set
``RADIOPATH_REPORT_SCREENSHOT=/path.png`` to keep the screenshot of the page.
"""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest

from radiopath.report import write_report

pytestmark = pytest.mark.browser

chromium = pytest.importorskip("chromium", reason="tests/report/chromium.py not importable")
if chromium.find_browser() is None:
    pytest.skip("no chromium on PATH (apt-get install chromium)", allow_module_level=True)
pytest.importorskip("websocket", reason="websocket-client is not installed (pip install -e .[dev])")

ROWS = """Array.from(document.querySelectorAll('table.studies tbody tr')).map(tr => [
  tr.dataset.aggregator, tr.dataset.metric,
  Array.from(tr.querySelectorAll('td[data-column]')).map(td => [td.dataset.column, td.dataset.sort])])"""


@pytest.fixture(scope="module")
def browser_page(fake_run, tmp_path_factory):
    write_report(fake_run)
    profile = tmp_path_factory.mktemp("chromium-profile")
    with chromium.Chromium(profile) as page:
        page.open((fake_run / "report.html").as_uri())
        yield page


def test_page_loads_without_errors_and_every_image_decodes(browser_page):
    images = browser_page.evaluate(
        "Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])"
    )
    assert len(images) > 20  # figures and the gallery
    undecoded = [alt for complete, width, alt in images if not complete or width == 0]
    assert undecoded == []
    assert browser_page.errors == []


def test_table_has_a_row_per_aggregator_and_metric_with_the_numbers_of_metrics_csv(
    browser_page, fake_run
):
    rows = browser_page.evaluate(ROWS)
    assert len(rows) == 3 * 4
    assert {(a, m) for a, m, _ in rows} == {
        (a, m) for a in ("sparra", "abmil", "mean") for m in ("c_index", "c_ipcw", "c_auc", "ibs")
    }
    metrics = pd.read_csv(fake_run / "metrics.csv")
    means = metrics.groupby(["aggregator", "metric", "model"]).value.mean()
    for agg, metric, cells in rows:
        for column, value in cells:
            if column in ("avg",) or value == "":
                continue
            assert float(value) == pytest.approx(means[(agg, metric, column)], abs=1e-12)


def test_clicking_a_header_sorts_the_rows(browser_page):
    before = browser_page.evaluate(ROWS)
    column = 2 + 1  # Aggregator, Metric, RSF, CoxPH: sort by CoxPH
    browser_page.evaluate(f"document.querySelectorAll('table.studies thead th')[{column}].click()")
    ascending = browser_page.evaluate(ROWS)
    values = [float(cells[1][1]) for _, _, cells in ascending]
    assert values == sorted(values) and ascending != before
    browser_page.evaluate(f"document.querySelectorAll('table.studies thead th')[{column}].click()")
    descending = [float(cells[1][1]) for _, _, cells in browser_page.evaluate(ROWS)]
    assert descending == sorted(values, reverse=True)
    assert browser_page.errors == []


def test_screenshot_of_the_page(browser_page, tmp_path):
    shot = browser_page.screenshot(tmp_path / "report.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    keep = os.environ.get("RADIOPATH_REPORT_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)
