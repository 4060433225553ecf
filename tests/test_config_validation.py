"""Every configuration typo, at any depth, is refused before any work starts: the error names
the dotted key and the keys allowed there, and nothing is written to the output folder."""

from __future__ import annotations

import copy
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from radiopath.benchmark import DEFAULTS as BENCHMARK_DEFAULTS
from radiopath.benchmark import run_benchmark, validate_benchmark_config
from radiopath.cli import main
from radiopath.config import KeysOf, check_known_keys, config_section, deep_merge
from radiopath.errors import RadiopathInputError
from radiopath.evaluation.config import DEFAULT_CONFIG as EVALUATION_DEFAULTS
from radiopath.evaluation.config import resolve_evaluation_config
from radiopath.graph.cohort import resolve_cohort_presets
from radiopath.graph.config import load_preset
from radiopath.io import read_cohort
from radiopath.models.aggregators import AGGREGATORS
from radiopath.sweep import load_experiment, run_sweep, set_dotted
from radiopath.training.config import DEFAULT_CONFIG as TRAINING_DEFAULTS
from radiopath.training.config import PRESETS, allowed_keys, resolve_training_config

ROOT = Path(__file__).resolve().parents[1]
FAST = {
    "aggregators": ["sparra", "mean"],
    "models": ["coxph"],
    "folds": 3,
    "train": {"epochs": 1, "batch_size": 8},
    "evaluation": {"backend": "torch", "cv": {"n_splits": 3}},
}


def refused(field: str, allowed: str | None = None):
    """``pytest.raises`` for an error naming ``field`` (and an allowed key, if given)."""
    pattern = f"field '{field}'"
    if allowed is not None:
        pattern += f".*allowed keys: .*'{allowed}'"
    return pytest.raises(RadiopathInputError, match=pattern)


def empty_or_absent(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


# ----------------------------------------------------------------------------- the helper


def test_check_known_keys_walks_every_depth():
    allowed = {
        "a": 1,
        "sec": {"x": 1, "inner": {"y": 2}},
        "per": KeysOf(("wsi", "ct"), scalar=True),
    }
    check_known_keys({"a": 2, "sec": {"inner": {"y": 3}}, "per": {"ct": 1}}, allowed)
    check_known_keys({"per": 0.5}, allowed)  # one value for every modality
    with refused("sec.inner.z", "y"):
        check_known_keys({"sec": {"inner": {"z": 1}}}, allowed)
    with refused("per.pet", "wsi"):
        check_known_keys({"per": {"pet": 1}}, allowed)
    with refused("top.sec"):  # a section given something else than a mapping
        check_known_keys({"sec": 3}, allowed, "top")
    with pytest.raises(RadiopathInputError, match="did you mean 'inner'"):
        check_known_keys({"sec": {"iner": {}}}, allowed)
    with pytest.raises(RadiopathInputError, match="file 'c.yaml', field 'b'"):
        check_known_keys({"b": 1}, allowed, path="c.yaml")


def test_config_section_names_the_full_key():
    with refused("train.sparra.kl"), config_section("train"):
        raise RadiopathInputError("bad", field="sparra.kl")
    with refused("graph.preset.wsi"), config_section("graph.preset", whole="preset"):
        raise RadiopathInputError("bad", field="preset.wsi")
    with refused("train"), config_section("train"):
        raise RadiopathInputError("bad")
    # an error in a file names the key inside that file
    with pytest.raises(RadiopathInputError, match="file 'p.yaml', field 'k'"):
        with config_section("graph"):
            raise RadiopathInputError("bad", path="p.yaml", field="k")


# ----------------------------------------------------------------------------- extract


@pytest.mark.parametrize(
    ("config", "field", "allowed"),
    [
        ({"ct_spacng": [1, 1, 1]}, "ct_spacng", "ct_spacing"),
        ({"encoder": {"wsi": "handcrafted", "pet": "handcrafted"}}, "encoder.pet", "ct"),
        ({"checkpoint": {"cat": "w.pt"}}, "checkpoint.cat", "wsi"),
    ],
)
def test_extract_refuses_unknown_keys(tmp_path, config, field, allowed):
    bad = write_yaml(tmp_path / "extract.yaml", config)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["extract", "--cohort", str(tmp_path / "c.csv"), "--out", str(out), "--config", str(bad)],
    )
    assert result.exit_code == 2, result.output
    assert f"field '{field}'" in result.output and f"'{allowed}'" in result.output
    assert "extract.yaml" in result.output
    assert empty_or_absent(out)


# ----------------------------------------------------------------------------- graph presets


def test_graph_preset_refuses_unknown_keys(small_cohort, tmp_path):
    bad = write_yaml(tmp_path / "bad.yaml", {"method": "clustered", "threshhold": 0.9})
    with pytest.raises(RadiopathInputError, match="bad.yaml.*field 'threshhold'.*'threshold'"):
        load_preset(bad)
    with refused("preset.threshhold", "threshold"):
        resolve_cohort_presets({"threshhold": 0.9}, ["wsi"])
    with refused("preset.wsi.threshhold", "threshold"):
        resolve_cohort_presets({"wsi": {"threshhold": 0.9}}, ["wsi", "ct"])
    with refused("preset.pet", "wsi"):
        resolve_cohort_presets({"wsi": "wsi-clustered", "pet": "ct-clustered-3d"}, ["wsi"])
    out = tmp_path / "graphs"
    result = CliRunner().invoke(
        main, ["graphs", "--cohort", str(small_cohort), "--out", str(out), "--preset", str(bad)]
    )
    assert result.exit_code == 2 and "field 'threshhold'" in result.output
    assert empty_or_absent(out)


def test_shipped_graph_presets_load():
    for folder in (ROOT / "graphs", ROOT / "radiopath" / "graph" / "presets"):
        files = sorted(folder.glob("*.yaml"))
        assert files
        for f in files:
            load_preset(f)


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize(
    ("config", "field", "allowed"),
    [
        ({"epoch": 3}, "epoch", "epochs"),
        ({"pooling": {"score_nois": 0.5}}, "pooling.score_nois", "score_noise"),
        ({"validation": {"fractoin": 0.2}}, "validation.fractoin", "fraction"),
        ({"ratio": {"wsi": 0.2, "pet": 0.5}}, "ratio.pet", "ct"),
        ({"conv": {"cat": "gin"}}, "conv.cat", "wsi"),
        ({"sparra": {"alpah0": 1.0}}, "sparra.alpah0", "alpha0"),
        ({"abmil": {"hiden_channels": 64}}, "abmil.hiden_channels", "hidden_channels"),
        ({"mean": {"dropout": 0.1}}, "mean.dropout", None),
        ({"graph_preset": {"wsi": {"threshhold": 0.9}}}, "graph_preset.wsi.threshhold", "k"),
    ],
)
def test_training_refuses_unknown_keys(config, field, allowed):
    with refused(field, allowed):
        resolve_training_config(config)


def test_training_refuses_a_section_that_is_not_a_mapping():
    with refused("sparra"):
        resolve_training_config({"sparra": True})
    assert resolve_training_config({"ratio": 0.5})["ratio"] == {"wsi": 0.5, "ct": 0.5}


def test_training_presets_and_aggregator_sections_are_known_keys():
    for preset in PRESETS.values():
        check_known_keys(preset, allowed_keys())
    # each aggregator's section holds exactly the options its constructor takes
    for name, cls in AGGREGATORS.items():
        params = inspect.signature(cls.__init__).parameters
        options = {p for p in params if p not in ("self", "in_channels", "reconstruct_channels")}
        assert set(TRAINING_DEFAULTS[name]) == options, name


def test_train_cli_refuses_a_typo_before_writing(small_cohort, tmp_path):
    bad = write_yaml(tmp_path / "train.yaml", {"epochs": 1, "sparra": {"alpah0": 1.0}})
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--cohort",
            str(small_cohort),
            "--aggregator",
            "sparra",
            "--out",
            str(out),
            "--config",
            str(bad),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "field 'sparra.alpah0'" in result.output and "'alpha0'" in result.output
    assert empty_or_absent(out)


# ----------------------------------------------------------------------------- evaluation


def test_evaluation_refuses_unknown_top_level_keys():
    with refused("evaluation.screning", "screening"):
        resolve_evaluation_config({"screning": {"enabled": False}})
    with refused("evaluation.screning"):
        resolve_evaluation_config({"evaluation": {"screning": {"enabled": False}}})


SECTIONS = [k for k, v in EVALUATION_DEFAULTS.items() if isinstance(v, dict)]


@pytest.mark.parametrize("section", SECTIONS)
def test_evaluation_refuses_unknown_keys_in_every_section(section):
    assert {"rsf", "coxph", "coxnet", "fsvm"} <= set(SECTIONS)
    key = next(iter(EVALUATION_DEFAULTS[section]))
    with refused(f"evaluation.{section}.{key}s", key):
        resolve_evaluation_config({section: {f"{key}s": 1}})


def test_evaluation_grid_typo_is_not_ignored():
    with refused("evaluation.coxph.alphas", "alpha"):
        resolve_evaluation_config({"coxph": {"alphas": [1.0, 10.0]}})


# ----------------------------------------------------------------------------- benchmark


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"aggregator": ["sparra"]}, "aggregator"),
        ({"train": {"pooling": {"score_nois": 0.5}}}, "train.pooling.score_nois"),
        ({"train": {"sparra": {"alpah0": 1.0}}}, "train.sparra.alpah0"),
        ({"train": {"abmil": {"hiden_channels": 8}}}, "train.abmil.hiden_channels"),
        ({"train": {"mean": {"x": 1}}}, "train.mean.x"),
        ({"train": {"ratio": {"pet": 0.5}}}, "train.ratio.pet"),
        ({"train": {"seed": 3}}, "train.seed"),  # set by the benchmark's own seed
        ({"train": {"sparra": {"kl": "bogus"}}}, "train.sparra.kl"),  # a value, by training
        ({"train": {"preset": "fastest"}}, "train.preset"),
        ({"evaluation": {"coxph": {"alphas": [1.0]}}}, "evaluation.coxph.alphas"),
        ({"evaluation": {"backnd": "torch"}}, "evaluation.backnd"),
        ({"graph": {"presett": "wsi-clustered"}}, "graph.presett"),
        ({"graph": {"preset": {"threshhold": 0.9}}}, "graph.preset.threshhold"),
        ({"graph": {"preset": "no-such-preset"}}, "graph.preset"),
        ({"statistics": {"bootstrp": 10}}, "statistics.bootstrp"),
    ],
)
def test_benchmark_refuses_bad_keys_before_the_graph_stage(small_cohort, tmp_path, bad, field):
    out = tmp_path / "run"
    with refused(field):
        run_benchmark(small_cohort, out, deep_merge(FAST, bad), progress=False)
    assert empty_or_absent(out)


def test_benchmark_checks_the_train_section_whatever_it_trains(small_cohort):
    cohort = read_cohort(small_cohort)
    validate_benchmark_config(deep_merge(BENCHMARK_DEFAULTS, FAST), cohort)
    for aggregators, train, field in (
        (["abmil_mil"], {"ratio": {"wsi": 1.5}}, "train.ratio.wsi"),  # a variant: trains ABMIL
        (["raw_mean"], {"sparra": {"alpah0": 1.0}}, "train.sparra.alpah0"),  # trains nothing
    ):
        cfg = deep_merge(BENCHMARK_DEFAULTS, {**FAST, "aggregators": aggregators, "train": train})
        with refused(field):
            validate_benchmark_config(cfg, cohort)


def test_benchmark_cli_refuses_a_typo_in_its_config_file(small_cohort, tmp_path):
    bad = write_yaml(tmp_path / "bench.yaml", {**FAST, "train": {"pooling": {"score_nois": 1}}})
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        ["benchmark", "--cohort", str(small_cohort), "--out", str(out), "--config", str(bad)],
    )
    assert result.exit_code == 2, result.output
    assert "field 'train.pooling.score_nois'" in result.output and "'score_noise'" in result.output
    assert empty_or_absent(out)


def test_every_experiment_point_is_a_valid_benchmark(small_cohort):
    cohort = read_cohort(small_cohort)
    files = sorted((ROOT / "experiments").glob("*.yaml"))
    assert files
    for f in files:
        exp = load_experiment(f)
        base = deep_merge(BENCHMARK_DEFAULTS, exp.base)
        for point in exp.points():
            cfg = copy.deepcopy(base)
            for key, value in point.items():
                cfg = set_dotted(cfg, key, value)
            cfg["folds"] = 3  # the test cohort has few events
            validate_benchmark_config(cfg, cohort)


# ----------------------------------------------------------------------------- sweep


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


# ----------------------------------------------------------------------------- matplotlib


def test_importing_radiopath_keeps_the_matplotlib_backend():
    code = (
        "import matplotlib; before = matplotlib.get_backend(); "
        "import radiopath.report, radiopath.sweep, radiopath.viz.importance, radiopath.benchmark; "
        "assert matplotlib.get_backend() == before, (before, matplotlib.get_backend())"
    )
    env = {**os.environ, "MPLBACKEND": "svg", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_naming_file_names_the_file_for_its_own_keys_only():
    from radiopath.config import naming_file

    data = {"ratio": 0.5, "sparra": {"kl": "x"}}
    for field, named in (("sparra.kl", True), ("ratio.wsi", True), ("epochs", False)):
        with pytest.raises(RadiopathInputError) as err, naming_file("t.yaml", data):
            raise RadiopathInputError("bad", field=field)
        assert (err.value.path == "t.yaml") is named and err.value.field == field
    with pytest.raises(RadiopathInputError) as err:  # a flag set it again
        with naming_file("t.yaml", data, overrides={"sparra": {"kl": "y"}, "epochs": None}):
            raise RadiopathInputError("bad", field="sparra.kl")
    assert err.value.path is None
    with pytest.raises(RadiopathInputError, match="file 't.yaml', field 'evaluation.cv.k'"):
        with naming_file("t.yaml", {"cv": {"k": 1}}, "evaluation"):
            raise RadiopathInputError("bad", field="evaluation.cv.k")
