"""The page's numbers are those of metrics.csv, its marks follow the summary's rules."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from radiopath.errors import RadiopathInputError
from radiopath.report import write_report
from radiopath.report.tables import read_metrics, study_tables


class StudyRows(HTMLParser):
    """The rows of the page's study tables: ``(aggregator, metric) -> {column: (sort, text)}``."""

    def __init__(self):
        super().__init__()
        self.rows: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}
        self.classes: dict[tuple[str, str, str], str] = {}
        self._table = False
        self._row = None
        self._cell = None
        self._text = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = "studies" in (a.get("class") or "")
        elif tag == "tr" and self._table and "data-aggregator" in a:
            self._row = (a["data-aggregator"], a["data-metric"])
            self.rows[self._row] = {}
        elif tag == "td" and self._row and "data-column" in a:
            self._cell = (a["data-column"], a.get("data-sort", ""))
            self.classes[(*self._row, a["data-column"])] = a.get("class") or ""
            self._text = []

    def handle_data(self, data):
        if self._cell:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "td" and self._cell:
            column, sort = self._cell
            self.rows[self._row][column] = (sort, " ".join("".join(self._text).split()))
            self._cell = None
        elif tag == "tr":
            self._row = None
        elif tag == "table":
            self._table = False


@pytest.fixture(scope="module")
def page(fake_run):
    write_report(fake_run)
    parser = StudyRows()
    parser.feed((fake_run / "report.html").read_text())
    return parser


def test_table_numbers_are_a_recomputation_of_metrics_csv(fake_run, page):
    metrics = pd.read_csv(fake_run / "metrics.csv")
    per_model = metrics.groupby(["aggregator", "metric", "model"]).value.agg(["mean", "std"])
    assert len(page.rows) == 3 * 4  # 3 aggregators x 4 metrics
    for (agg, metric, model), expected in per_model.iterrows():
        sort, text = page.rows[(agg, metric)][model]
        assert float(sort) == pytest.approx(expected["mean"], abs=1e-12)
        assert text.startswith(f"{expected['mean']:.3f} ({expected['std']:.3f})")
    # Avg. = mean over models of the fold means
    averages = per_model["mean"].groupby(level=[0, 1]).mean()
    for (agg, metric), value in averages.items():
        assert float(page.rows[(agg, metric)]["avg"][0]) == pytest.approx(value, abs=1e-12)
    # a study a model does not have (FSVM has no IBS) is n/a, not a number
    assert page.rows[("sparra", "ibs")]["fsvm"] == ("", "n/a")


def test_intervals_in_the_page_are_those_of_intervals_csv(fake_run, page):
    intervals = pd.read_csv(fake_run / "intervals.csv")
    row = intervals[(intervals.aggregator == "abmil") & (intervals.metric == "c_index")].iloc[0]
    text = page.rows[("abmil", "c_index")][row.model][1]
    assert f"[{row.ci_low:.3f}, {row.ci_high:.3f}]" in text


def test_best_of_each_study_is_highlighted(fake_run, page):
    metrics = pd.read_csv(fake_run / "metrics.csv")
    means = metrics.groupby(["model", "metric", "aggregator"]).value.mean()
    for (model, metric), by_agg in means.groupby(level=[0, 1]):
        by_agg = by_agg.droplevel([0, 1])
        best = by_agg.idxmin() if metric == "ibs" else by_agg.idxmax()
        for agg in by_agg.index:
            marked = "best" in page.classes[(agg, metric, model)].split()
            assert marked == (agg == best), (model, metric, agg)


def _toy_metrics(values: dict[str, list[float]], metric: str = "c_index") -> pd.DataFrame:
    rows = []
    for agg, folds in values.items():
        for f, v in enumerate(folds):
            rows.append(
                {
                    "aggregator": agg,
                    "modalities": "wsi",
                    "model": "coxph",
                    "fold": f,
                    "metric": metric,
                    "value": v,
                }
            )
    return pd.DataFrame(rows)


def _comparison(a, b, delta, p_holm, metric="c_index", model="coxph"):
    return {
        "aggregator_a": a,
        "aggregator_b": b,
        "modalities": "wsi",
        "model": model,
        "metric": metric,
        "delta": delta,
        "ci_low": delta - 0.01,
        "ci_high": delta + 0.01,
        "p": p_holm,
        "p_holm": p_holm,
        "family": "studies",
    }


def test_lower_is_better_for_ibs_and_significance_needs_every_pair():
    metrics = _toy_metrics(
        {"sparra": [0.30, 0.32], "abmil": [0.20, 0.22], "mean": [0.25, 0.27]}, "ibs"
    )
    (table,) = study_tables(metrics)
    best = {r.aggregator: r.cells[0].best for r in table.rows}
    assert best == {"sparra": False, "abmil": True, "mean": False}
    # abmil beats sparra significantly but not mean: no star
    comps = pd.DataFrame(
        [
            _comparison("sparra", "abmil", 0.1, 0.001, "ibs"),
            _comparison("abmil", "mean", -0.05, 0.20, "ibs"),
        ]
    )
    (table,) = study_tables(metrics, comparisons=comps)
    assert not any(c.significant for r in table.rows for c in r.cells)
    comps.loc[1, "p_holm"] = 0.01
    (table,) = study_tables(metrics, comparisons=comps)
    abmil = next(r for r in table.rows if r.aggregator == "abmil")
    assert abmil.cells[0].significant and abmil.cells[0].best
    assert next(w for w in table.wins if w["aggregator"] == "abmil")["significant"] >= 1


def test_failed_folds_are_counted_and_all_failed_is_said():
    metrics = _toy_metrics({"sparra": [0.7, np.nan, 0.6], "mean": [np.nan, np.nan, np.nan]})
    (table,) = study_tables(metrics)
    sparra = next(r for r in table.rows if r.aggregator == "sparra").cells[0]
    assert sparra.mean == pytest.approx(0.65) and sparra.partial == "2/3 folds"
    assert next(r for r in table.rows if r.aggregator == "mean").cells[0].text == "failed"


def test_a_run_without_metrics_or_with_a_bad_table_is_named(tmp_path):
    with pytest.raises(RadiopathInputError, match="no metrics.csv") as err:
        read_metrics(tmp_path)
    assert "metrics.csv" in str(err.value)
    (tmp_path / "metrics.csv").write_text("aggregator,fold\nx,0\n")
    with pytest.raises(RadiopathInputError, match="missing columns") as err:
        read_metrics(tmp_path)
    assert str(tmp_path / "metrics.csv") in str(err.value)


def test_a_run_with_only_metrics_gets_a_page_without_intervals(fake_run, tmp_path):
    (tmp_path / "metrics.csv").write_bytes((fake_run / "metrics.csv").read_bytes())
    written = write_report(tmp_path)
    html = written["html"].read_text()
    parser = StudyRows()
    parser.feed(html)
    assert len(parser.rows) == 12
    assert "no intervals or tests" in html and "No importance maps" in html
    assert not (tmp_path / "intervals.csv").exists()


def test_a_damaged_table_of_the_run_is_named(fake_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(fake_run, run)
    (run / "selection.csv").write_text("aggregator,fold\nsparra,0\n")
    with pytest.raises(RadiopathInputError, match="missing columns") as err:
        write_report(run, statistics={"bootstrap": 20})
    assert str(run / "selection.csv") in str(err.value)
