"""Sweeps: every point's configuration, with each of its sub-configurations (train for every
aggregator, evaluation, graph presets, the benchmark's own keys), is built and checked before
the first point runs; a typo or a bad value, even in the last grid value, is refused within
2 s naming the dotted key and the experiment file, with nothing written."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from config_checks import FAST, empty_or_absent, write_yaml

from radiopath import sweep
from radiopath.cli import main
from radiopath.errors import RadiopathInputError
from radiopath.sweep import load_experiment, run_sweep, set_dotted

BASE = {
    "aggregators": ["sparra", "abmil", "mean"],
    "models": ["coxph"],
    "folds": 3,
    "train": {"epochs": 1},
}


@pytest.fixture
def no_point_runs(monkeypatch):
    def run_point(*args, **kwargs):
        raise AssertionError("a point ran before every point was checked")

    monkeypatch.setattr(sweep, "run_point", run_point)


def experiment(tmp_path, grid: dict, mode: str = "product", **extra):
    path = tmp_path / "exp.yaml"
    data = {"name": "t", "mode": mode, "base": BASE, "grid": grid, **extra}
    path.write_text(yaml.safe_dump(data))
    return path


# the last of five values is bad, in each sub-configuration of a point
FIFTH = [
    ("train.sparra.alpha0", [1.0, 2.0, 3.0, 4.0, -1.0], "train.sparra.alpha0"),
    ("train.abmil.dropout", [0.1, 0.2, 0.3, 0.4, 1.0], "train.abmil.dropout"),
    ("evaluation.coxph.alpha", [[1.0], [2.0], [3.0], [4.0], []], "evaluation.coxph.alpha"),
    ("graph.preset.wsi.k", [4, 6, 8, 10, 0], "graph.preset.wsi.k"),
    ("repeats", [1, 1, 2, 2, 0], "repeats"),
]


@pytest.mark.parametrize("mode", ["product", "one_at_a_time", "zip"])
@pytest.mark.parametrize(("key", "values", "field"), FIFTH, ids=[f for *_, f in FIFTH])
def test_a_bad_fifth_value_stops_the_sweep_before_its_first_point(
    small_cohort, tmp_path, refused_quickly, no_point_runs, mode, key, values, field
):
    exp = experiment(tmp_path, {key: values, "seed": [0, 1, 2, 3, 4]}, mode)
    out = tmp_path / "sweep"
    with refused_quickly(field, out, exp) as err:
        run_sweep(exp, small_cohort, out, progress=False)
    assert "sweep point " in str(err.value)


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ("train.sparar.alpha0", "train.sparar"),
        ("train.sparra.alpah0", "train.sparra.alpah0"),
        ("train.mean.dropout", "train.mean.dropout"),
        ("evaluation.rsf.max_depths", "evaluation.rsf.max_depths"),
        ("graph.preset.knn.kk", "graph.preset.knn"),
        ("statistic.bootstrap", "statistic"),
    ],
)
def test_a_grid_key_that_names_no_configuration_key_is_refused(
    small_cohort, tmp_path, refused_quickly, no_point_runs, key, field
):
    exp = experiment(tmp_path, {key: [1, 2]})
    out = tmp_path / "sweep"
    with refused_quickly(field, out, exp):
        run_sweep(exp, small_cohort, out, progress=False)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"gird": {"seed": [1]}}, "gird"),
        ({"mode": "grid"}, "mode"),
        ({"grid": [1, 2]}, "grid"),
        ({"grid": {"seed": []}}, "grid.seed"),
        ({"grid": {"seed": [1], "folds": [3, 4]}, "mode": "zip"}, "grid"),
        ({"base": "fast"}, "base"),
        ({"name": ["t"]}, "name"),
    ],
)
def test_the_experiment_file_itself_is_checked(tmp_path, extra, field):
    exp = experiment(tmp_path, **{"grid": {"seed": [0]}, **extra})
    with pytest.raises(RadiopathInputError) as err:
        load_experiment(exp)
    assert err.value.field == field and err.value.path == str(exp)


EXPERIMENT_RULES = sweep.ExperimentConfig.rules()


def test_every_experiment_key_has_a_rule():
    assert set(EXPERIMENT_RULES) == set(sweep.ExperimentConfig().to_dict())


@pytest.mark.parametrize("key", list(EXPERIMENT_RULES))
def test_a_wrong_value_of_every_experiment_key_is_refused_by_its_name(tmp_path, key):
    wrong = next(v for v in ("wrong", 12345) if not EXPERIMENT_RULES[key].accepts(v))
    data = {"name": "t", "base": BASE, "grid": {"seed": [0]}, key: wrong}
    exp = write_yaml(tmp_path / "exp.yaml", data)
    with pytest.raises(RadiopathInputError) as err:
        load_experiment(exp)
    assert err.value.field == key and err.value.path == str(exp)


def test_the_reference_page_is_generated_from_the_declarations():
    page = Path(__file__).resolve().parents[1] / "docs" / "config-sweep.md"
    assert page.read_text() == sweep.reference_page(), (
        "docs/config-sweep.md is out of date; regenerate it (command at its top)"
    )
    for key in EXPERIMENT_RULES:
        assert f"| `{key}` |" in page.read_text()


def test_the_cli_refuses_a_bad_point_naming_the_file(
    small_cohort, tmp_path, cli_refused_quickly, no_point_runs
):
    exp = experiment(tmp_path, {"train.epochs": [1, 1, 1, 1, 0]})
    out = tmp_path / "sweep"
    args = ["sweep", "--experiment", exp, "--cohort", small_cohort, "--out", out]
    cli_refused_quickly(args, "train.epochs", out, exp)
    # a flag's bad value is the flag's, not the file's
    output = cli_refused_quickly([*args, "--folds", 1], "folds", out)
    assert "exp.yaml" not in output


def sweep_file(tmp_path: Path, grid: dict) -> Path:
    base = {**FAST, "aggregators": ["sparra"]}
    return write_yaml(
        tmp_path / "exp.yaml", {"name": "t", "mode": "one_at_a_time", "base": base, "grid": grid}
    )


@pytest.mark.parametrize(
    ("grid", "field"),
    [
        # the first point is fine: the second is refused before the first runs
        ({"train.epochs": [1], "train.sparra.alpah0": [1.0]}, "train.sparra.alpah0"),
        ({"train.sparra.kl": ["paper", "bogus"]}, "train.sparra.kl"),
        ({"train.epochs": [1], "evaluation.coxph.alphas": [[1.0]]}, "evaluation.coxph.alphas"),
        ({"train.epochs": [1], "graph.preset": ["wsi-clustered", "nope"]}, "graph.preset"),
    ],
)
def test_sweep_checks_every_point_before_the_first(small_cohort, tmp_path, grid, field):
    out = tmp_path / "sweep"
    with pytest.raises(RadiopathInputError, match=f"field '{field}': sweep point "):
        run_sweep(sweep_file(tmp_path, grid), small_cohort, out, progress=False)
    assert empty_or_absent(out)


def test_sweep_cli_refuses_a_bad_point_before_writing(small_cohort, tmp_path):
    exp = sweep_file(tmp_path, {"train.epochs": [1], "train.pooling.score_nois": [0.5]})
    out = tmp_path / "sweep"
    result = CliRunner().invoke(
        main,
        ["sweep", "--experiment", str(exp), "--cohort", str(small_cohort), "--out", str(out)],
    )
    assert result.exit_code == 2, result.output
    assert "field 'train.pooling.score_nois'" in result.output
    assert empty_or_absent(out)


def test_experiment_files_load_and_expand():

    root = Path(__file__).resolve().parents[1] / "experiments"
    files = sorted(root.glob("*.yaml"))
    assert {"radiology.yaml", "pathology.yaml", "radiopathomics.yaml"} <= {f.name for f in files}
    for f in files:
        exp = load_experiment(f)
        assert exp.points()
    prior = load_experiment(root / "ablation-prior.yaml")
    assert len(prior.points()) == 9  # one at a time: 3 keys x 3 values
    assert set_dotted({"train": {"sparra": {"tau": 1}}}, "train.sparra.alpha0", 5.0) == {
        "train": {"sparra": {"tau": 1, "alpha0": 5.0}}
    }


@pytest.mark.slow
def test_sweep_gathers_points(small_cohort, tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        "name: t\nbase:\n  aggregators: [mean]\n  models: [coxph]\n  folds: 3\n"
        "  train: {epochs: 1, batch_size: 8}\n  evaluation: {backend: torch, cv: {n_splits: 3}}\n"
        "grid:\n  modalities: [[wsi], [ct]]\n"
    )
    gathered = run_sweep(exp, small_cohort, tmp_path / "sweep", progress=False)
    assert set(gathered.modalities) == {"wsi", "ct"}
    assert (tmp_path / "sweep" / "figures" / "ablation_modalities.png").exists()
    saved = pd.read_csv(tmp_path / "sweep" / "sweep_metrics.csv")
    assert len(saved) == len(gathered)
    page = (tmp_path / "sweep" / "report.html").read_text()  # the points side by side
    assert page.count('<tr data-run="modalities=') == 2 and "<code>modalities</code>" in page
