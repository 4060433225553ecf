"""Every key of the benchmark's configuration tree: a wrong value is refused by its dotted
name before any work, driven from the declarations of :class:`BenchmarkConfig` (a new key
without a rule or a check fails :func:`test_every_key_is_checked`); a typo at depth in every
section; the record a run writes; the reference page."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from radiopath.benchmark import run_benchmark
from radiopath.benchmark_config import (
    DEFAULTS,
    BenchmarkConfig,
    benchmark_record,
    build_benchmark_config,
)
from radiopath.config import deep_merge
from radiopath.config_rules import leaf_keys, nested
from radiopath.errors import RadiopathInputError
from radiopath.executors.config import DEFAULTS as EXECUTOR_DEFAULTS
from radiopath.io import read_cohort
from radiopath.typed_config import TypedConfig

LEAVES = [k for k, _ in leaf_keys(BenchmarkConfig().to_dict())]
RULES = BenchmarkConfig.rules()
# the keys without a rule of their own, checked when the configuration is built (by a
# conversion or by their stage), with a wrong value of each
CHECKED_WHEN_BUILT = {
    "graph.preset": "no-such-preset",
    "evaluation.metrics.horizons": "wrong",
    "endpoint.horizon": "soon",
    "executor": 12345,
}
CANDIDATES = ("wrong", 12345, -1, 0.5, [], {"x": 1})


def test_every_key_is_checked():
    assert set(LEAVES) == set(RULES) | set(CHECKED_WHEN_BUILT)


def wrong_value(key: str):
    """A value the key's rule refuses (or its stage's check, when it has no rule)."""
    if key in CHECKED_WHEN_BUILT:
        return CHECKED_WHEN_BUILT[key]
    return next(v for v in CANDIDATES if not RULES[key].accepts(v))


@pytest.fixture(scope="module")
def cohort(small_cohort):
    return read_cohort(small_cohort)


def quick(**over) -> dict:
    """DEFAULTS with three folds (the test cohort has few events) and ``over`` laid over."""
    return deep_merge(deep_merge(DEFAULTS, {"folds": 3}), over)


@pytest.mark.parametrize("key", LEAVES)
def test_a_wrong_value_of_every_key_is_refused_by_its_dotted_name(cohort, key):
    with pytest.raises(RadiopathInputError) as err:
        build_benchmark_config(quick(**nested(key, wrong_value(key))), cohort)
    assert err.value.field == key


@pytest.mark.parametrize("key", list(EXECUTOR_DEFAULTS))
def test_a_wrong_value_of_every_executor_key_is_refused_by_its_dotted_name(cohort, key):
    with pytest.raises(RadiopathInputError) as err:
        build_benchmark_config(quick(executor={key: "wrong"}), cohort)
    assert err.value.field == f"executor.{key}"


def sections(cls: type = BenchmarkConfig, path: str = ""):
    """``(dotted path, class)`` of every section of the tree, the top level included."""
    yield path, cls
    for f in dataclasses.fields(cls):
        if isinstance(f.default_factory, type) and issubclass(f.default_factory, TypedConfig):
            yield from sections(f.default_factory, f"{path}.{f.name}".lstrip("."))


SECTIONS = list(sections())


@pytest.mark.parametrize(("path", "cls"), SECTIONS, ids=[p or "top" for p, _ in SECTIONS])
def test_a_typo_in_every_section_is_refused_by_its_dotted_name(cohort, path, cls):
    key = dataclasses.fields(cls)[0].name
    typo = f"{path}.{key}x".lstrip(".")
    with pytest.raises(RadiopathInputError, match=f"did you mean '{key}'") as err:
        build_benchmark_config(quick(**nested(typo, 1)), cohort)
    assert err.value.field == typo


def test_the_built_configuration_is_frozen_and_recorded_as_before(cohort, fast_benchmark):
    layered = quick(**fast_benchmark)
    cfg = build_benchmark_config(layered, cohort)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.folds = 4  # type: ignore[misc]
    assert cfg.evaluation.backend == "torch" and cfg.evaluation.protocol().cv.n_splits == 3
    record = benchmark_record(cfg, layered, "cohort.csv")
    assert list(record) == [*DEFAULTS, "cohort"]
    # train and evaluation as given (the keys set), every other section in full
    assert record["evaluation"] == {"backend": "torch", "cv": {"n_splits": 3}}
    assert record["train"] == {"epochs": 2, "batch_size": 8}
    assert record["executor"]["name"] == "local" and record["statistics"]["bootstrap"] == 1000
    assert record["aggregators"] == ["sparra", "mean"]  # lists, as the file had them


def test_a_binary_head_scores_the_endpoint_at_its_own_horizon(cohort):
    train = {"head": "binary", "horizon": 100}
    cfg = build_benchmark_config(quick(train=train, aggregators=["mean"]), cohort)
    assert (cfg.endpoint.horizon, cfg.endpoint.score) == (100, "binary")


def test_the_reference_page_is_generated_from_the_declarations():
    from radiopath.benchmark_config import reference_page

    page = Path(__file__).resolve().parents[1] / "docs" / "config-benchmark.md"
    assert page.read_text() == reference_page(), (
        "docs/config-benchmark.md is out of date; regenerate it (command at its top)"
    )
    for key in LEAVES:  # every key is documented
        assert f"| `{key}` |" in page.read_text()


FAST = {
    "aggregators": ["sparra", "abmil", "mean"],
    "models": ["coxph"],
    "folds": 3,
    "train": {"epochs": 1},
}
# a typo at depth in every section: train (each aggregator's), evaluation (each model's
# grid), graph (its presets), statistics, clinical, endpoint, executor
TYPOS = [
    ({"train": {"pooling": {"score_nois": 0.5}}}, "train.pooling.score_nois"),
    ({"train": {"sparra": {"alpah0": 1.0}}}, "train.sparra.alpah0"),
    ({"train": {"abmil": {"hiden_channels": 8}}}, "train.abmil.hiden_channels"),
    ({"train": {"mean": {"dropout": 0.1}}}, "train.mean.dropout"),
    ({"evaluation": {"rsf": {"max_depths": [2]}}}, "evaluation.rsf.max_depths"),
    ({"evaluation": {"coxph": {"alphas": [1.0]}}}, "evaluation.coxph.alphas"),
    ({"evaluation": {"coxnet": {"l1_ratios": [0.5]}}}, "evaluation.coxnet.l1_ratios"),
    ({"evaluation": {"fsvm": {"alphas": [0.5]}}}, "evaluation.fsvm.alphas"),
    ({"graph": {"workrs": 2}}, "graph.workrs"),
    ({"graph": {"preset": {"wsi": {"kk": 3}}}}, "graph.preset.wsi.kk"),
    ({"statistics": {"bootstrp": 10}}, "statistics.bootstrp"),
    ({"clinical": {"leibovich": {"t_stag": "t"}}}, "clinical.leibovich.t_stag"),
    ({"endpoint": {"horizn": 365}}, "endpoint.horizn"),
    ({"executor": {"name": "local", "workrs": 2}}, "executor.workrs"),
]


@pytest.mark.parametrize(("bad", "field"), TYPOS, ids=[f for _, f in TYPOS])
def test_a_typo_at_depth_is_refused_before_any_stage(
    small_cohort, tmp_path, refused_quickly, bad, field
):

    out = tmp_path / "run"
    with refused_quickly(field, out):
        run_benchmark(small_cohort, out, deep_merge(FAST, bad), progress=False)


@pytest.mark.parametrize(("bad", "field"), TYPOS[1::4], ids=[f for _, f in TYPOS[1::4]])
def test_a_typo_in_the_config_file_names_the_file(
    small_cohort, tmp_path, refused_quickly, cli_refused_quickly, bad, field
):
    import yaml

    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump(deep_merge(FAST, bad)))
    out = tmp_path / "run"
    with refused_quickly(field, out, config):
        run_benchmark(small_cohort, out, config_file=config, progress=False)
    args = ["benchmark", "--cohort", small_cohort, "--out", out, "--config", config]
    cli_refused_quickly(args, field, out, config)


def test_a_bad_override_is_not_blamed_on_the_config_file(small_cohort, tmp_path, refused_quickly):
    import yaml

    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump(FAST))
    out = tmp_path / "run"
    with refused_quickly("folds", out) as err:
        run_benchmark(small_cohort, out, {"folds": 1}, config_file=config, progress=False)
    assert err.value.path is None


def test_benchmark_takes_a_study_file_but_not_a_grid():

    from radiopath.benchmark import _benchmark_config_file

    root = Path(__file__).resolve().parents[1] / "experiments"
    study = _benchmark_config_file(root / "radiology.yaml")
    assert study["modalities"] == ["ct"] and study["aggregators"] == ["sparra", "abmil", "mean"]
    with pytest.raises(RadiopathInputError, match="grid.*radiopath sweep"):
        _benchmark_config_file(root / "ablation-topk.yaml")
