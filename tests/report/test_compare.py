"""Several runs side by side: the configuration differences and the numbers of each run."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from radiopath.cli import main
from radiopath.report.compare import config_differences, run_names, summary_rows, write_comparison


def test_config_differences_list_changed_added_and_removed_keys():
    configs = {
        "a": {"seed": 0, "train": {"epochs": 2, "lr": 0.1}, "models": ["rsf"]},
        "b": {"seed": 0, "train": {"epochs": 5, "lr": 0.1}, "models": ["rsf", "coxph"]},
        "c": {"seed": 0, "train": {"epochs": 2}, "models": ["rsf"], "repeats": 3},
    }
    diff = {d["key"]: d["by_run"] for d in config_differences(configs)}
    assert diff == {
        "models": ['["rsf"]', '["rsf", "coxph"]', '["rsf"]'],
        "repeats": ["(not set)", "(not set)", "3"],
        "train.epochs": ["2", "5", "2"],
        "train.lr": ["0.1", "0.1", "(not set)"],
    }
    assert config_differences({"a": configs["a"], "b": json.loads(json.dumps(configs["a"]))}) == []


def test_summary_rows_average_models_and_mark_the_best(tmp_path, run_factory):
    make_run = run_factory
    runs = {
        "one": make_run(tmp_path / "one", seed=1),
        "two": make_run(tmp_path / "two", seed=2, shift=0.05),
    }
    metrics = pd.concat(
        [pd.read_csv(p / "metrics.csv").assign(run=n) for n, p in runs.items()], ignore_index=True
    )
    rows = summary_rows(metrics)
    assert len(rows) == 2 * 3
    fold_means = metrics.groupby(["run", "aggregator", "metric", "model"]).value.mean()
    expected = fold_means.groupby(level=[0, 1, 2]).mean()
    for r in rows:
        for metric, cell in r["cells"].items():
            assert cell.mean == pytest.approx(expected[(r["run"], r["aggregator"], metric)])
    c_index = {(r["run"], r["aggregator"]): r["cells"]["c_index"] for r in rows}
    best = max(c_index, key=lambda k: c_index[k].mean)
    assert [k for k, c in c_index.items() if c.best] == [best]
    ibs = {(r["run"], r["aggregator"]): r["cells"]["ibs"] for r in rows}
    assert [k for k, c in ibs.items() if c.best] == [min(ibs, key=lambda k: ibs[k].mean)]


def test_comparison_page_lists_runs_differences_and_links(tmp_path, run_factory):
    make_run = run_factory
    a = make_run(tmp_path / "a" / "run", seed=1)
    b = make_run(tmp_path / "b" / "run", seed=2, shift=0.05)
    (a / "report.html").write_text("<html></html>")
    page = write_comparison([a, b], tmp_path / "cmp")
    html = page.read_text()
    assert html.count('<tr data-run="a/run"') == 3 and html.count('<tr data-run="b/run"') == 3
    assert "<code>train.lr</code>" in html and "<code>seed</code>" in html
    assert 'href="../a/run/report.html"' in html  # b has no page of its own
    assert (tmp_path / "cmp" / "figures" / "runs.png").exists()


def test_run_names_are_unique_and_a_folder_without_metrics_is_named(tmp_path, run_factory):
    make_run = run_factory
    a, b = make_run(tmp_path / "x" / "run"), make_run(tmp_path / "y" / "run")
    assert list(run_names([a, b])) == ["x/run", "y/run"]
    result = CliRunner().invoke(
        main, ["report", "--runs", str(a), str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert str(tmp_path / "nothing" / "metrics.csv") in result.output
    result = CliRunner().invoke(main, ["report", "--runs", str(a), str(b)])
    assert result.exit_code == 2 and "--out" in result.output
    result = CliRunner().invoke(main, ["report", str(a), str(b)])
    assert result.exit_code == 2 and "--runs" in result.output


def test_sweep_folder_gets_one_page_with_its_points(tmp_path, run_factory):
    make_run = run_factory
    sweep = tmp_path / "sweep"
    frames = []
    for i, name in enumerate(["ratio=0.1", "ratio=0.5"]):
        make_run(sweep / name, seed=i)
        frames.append(pd.read_csv(sweep / name / "metrics.csv").assign(point=name))
    pd.concat(frames).to_csv(sweep / "sweep_metrics.csv", index=False)
    result = CliRunner().invoke(main, ["report", "--run", str(sweep)])
    assert result.exit_code == 0, result.output
    html = (sweep / "report.html").read_text()
    assert (
        html.count('<tr data-run="ratio=0.1"') == 3 and html.count('<tr data-run="ratio=0.5"') == 3
    )
    assert 'href="ratio=0.1/report.html"' not in html  # the points have no pages here
