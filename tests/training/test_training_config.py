"""Every key of the training configuration: a wrong value is refused, naming its dotted key."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from config_checks import ROOT, empty_or_absent, refused, write_yaml

from radiopath.cli import main
from radiopath.config import check_known_keys
from radiopath.config_rules import leaf_keys, nested
from radiopath.errors import RadiopathInputError
from radiopath.models.aggregators import AGGREGATORS
from radiopath.training import train_cross_validated
from radiopath.training.config import (
    DEFAULT_CONFIG,
    PRESETS,
    TrainingConfig,
    allowed_keys,
    resolve_training_config,
)
from radiopath.training.config import DEFAULT_CONFIG as TRAINING_DEFAULTS

# keys whose wrong value belongs to another key's message, with that key
NAMED_AS = {"modalities": "modalities", "aggregator": "aggregator"}

LEAVES = list(leaf_keys(DEFAULT_CONFIG))


@pytest.mark.parametrize(("key", "default"), LEAVES, ids=[k for k, _ in LEAVES])
def test_a_wrong_value_of_every_key_is_refused_by_its_dotted_name(key, default):
    wrong = 12345 if isinstance(default, str) else "wrong"
    if key == "preset":
        wrong = "no-such-preset"
    with pytest.raises(RadiopathInputError) as err:
        resolve_training_config(nested(key, wrong))
    assert err.value.field == NAMED_AS.get(key, key)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("lr", 0),
        ("lr", float("inf")),
        ("seed", 1.5),
        ("epochs", True),
        ("dropout", 1.0),
        ("ratio.wsi", 0),
        ("validation.fraction", 0.95),
        ("sparra.hidden_channels", 0),
        ("abmil.dropout", -0.1),
        ("cache_graphs", 1),
        ("num_threads", 0),
    ],
)
def test_out_of_range_values_are_refused_too(key, value):
    with pytest.raises(RadiopathInputError) as err:
        resolve_training_config(nested(key, value))
    assert err.value.field == key


def test_the_defaults_and_every_preset_pass():
    from radiopath.training.config import PRESETS

    for preset in PRESETS:
        cfg = resolve_training_config({"preset": preset})
        assert cfg.preset == preset and list(cfg.modalities) == DEFAULT_CONFIG["modalities"]


# the top level, each aggregator's section and a per-modality setting: a typo at depth
TYPOS = [
    ("sparra", {"pooling": {"score_nois": 0.5}}, "pooling.score_nois"),
    ("sparra", {"sparra": {"alpah0": 1.0}}, "sparra.alpah0"),
    ("abmil", {"abmil": {"hiden_channels": 64}}, "abmil.hiden_channels"),
    ("mean", {"mean": {"dropout": 0.1}}, "mean.dropout"),
    ("sparra", {"ratio": {"wsi": 0.5, "pet": 0.5}}, "ratio.pet"),
]


@pytest.mark.parametrize(("aggregator", "config", "field"), TYPOS, ids=[t[2] for t in TYPOS])
def test_a_typo_at_depth_is_refused_before_training(
    small_cohort, tmp_path, refused_quickly, aggregator, config, field
):

    out = tmp_path / "run"
    with refused_quickly(field, out):
        train_cross_validated(
            small_cohort,
            None,
            aggregator=aggregator,
            modalities=["wsi", "ct"],
            out_dir=out,
            config=config,
            progress=False,
        )


@pytest.mark.parametrize(("aggregator", "config", "field"), TYPOS, ids=[t[2] for t in TYPOS])
def test_the_cli_names_the_config_file(
    small_cohort, tmp_path, cli_refused_quickly, aggregator, config, field
):

    bad = tmp_path / "train.yaml"
    bad.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    args = ["train", "--cohort", small_cohort, "--aggregator", aggregator, "--out", out]
    cli_refused_quickly([*args, "--config", bad], field, out, bad)


def test_a_bad_flag_is_not_blamed_on_the_config_file(small_cohort, tmp_path, cli_refused_quickly):

    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"epochs": 2}))
    out = tmp_path / "run"
    args = ["train", "--cohort", small_cohort, "--aggregator", "mean", "--out", out]
    args += ["--config", config, "--epochs", 0]
    assert "train.yaml" not in cli_refused_quickly(args, "epochs", out)


def test_fingerprint_ignores_runtime_keys_only():
    """A resume may change how a run executes (threads, monitoring), not what it learns.
    ``ensemble: 1`` and ``validation.patience: null``, keys added later, leave the
    fingerprint runs had before them (those runs still resume); other values change it."""
    from radiopath.runkit import config_fingerprint
    from radiopath.training.config import RUNTIME_KEYS, resolve_training_config

    def fingerprint(cfg):
        data = cfg.to_dict()
        if data["ensemble"] == 1:
            del data["ensemble"]
        if data["validation"]["patience"] is None:
            del data["validation"]["patience"]
        assert cfg.fingerprint() == config_fingerprint(data, exclude=RUNTIME_KEYS)
        return cfg.fingerprint()

    cfg = resolve_training_config({})
    assert "ensemble" in cfg.to_dict() and "patience" in cfg.to_dict()["validation"]
    runtime = resolve_training_config({"num_threads": 2, "monitor_test": False})
    assert fingerprint(runtime) == fingerprint(cfg)
    for change in (
        {"pooling": {"score_noise": 1.0}},
        {"cox_memory": True},
        {"sparra": {"sharpness": 2.0}},
        {"ensemble": 2},
        {"validation": {"patience": 0.2}},
    ):
        assert fingerprint(resolve_training_config(change)) != fingerprint(cfg)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"fusion": "sum"}, "fusion"),
        ({"fusion": "late", "modalities": ["wsi"]}, "fusion"),
        ({"late": {"weights": "best"}}, "late.weights"),
        ({"head": "binary"}, "horizon"),
        ({"head": "binary", "horizon": -1}, "horizon"),
        ({"horizon": 5.0}, "horizon"),
        ({"clinical": {"hidden": []}}, "clinical.hidden"),
        ({"clinical": {"scaling": "robust"}}, "clinical.scaling"),
        ({"clinical": {"dropuot": 0.1}}, "clinical.dropuot"),
        ({"modality_dropout": 1.0}, "modality_dropout"),
        ({"staged": {"unimodal_fraction": 1.5}}, "staged.unimodal_fraction"),
        ({"fusion_lr_scale": 0}, "fusion_lr_scale"),
        ({"modalities": ["wsi", "genomics"]}, "modalities"),
    ],
)
def test_bad_fusion_settings_are_refused_by_name(override, field):
    with pytest.raises(RadiopathInputError) as err:
        resolve_training_config(override)
    assert err.value.field == field


def test_horizon_given_as_text_and_the_two_label_rules_agree():
    cfg = resolve_training_config({"head": "binary", "horizon": "5y", "time_unit": "months"})
    from radiopath.training.config import training_horizon

    assert training_horizon(cfg) == pytest.approx(60.0)
    with pytest.raises(RadiopathInputError) as err:
        resolve_training_config({"head": "binary", "horizon": "5 parsecs"})
    assert err.value.field == "horizon"
    with pytest.raises(RadiopathInputError) as err:
        resolve_training_config({"head": "binary", "horizon": "5y", "time_unit": "weeks"})
    assert err.value.field == "time_unit"
    # the loss's labels (torch) and the evaluation's (numpy) follow one rule
    from radiopath.evaluation.horizon import horizon_labels as numpy_labels
    from radiopath.models.losses import horizon_labels as torch_labels

    rng = np.random.default_rng(0)
    time = np.round(rng.exponential(10, 200), 0)
    event = rng.uniform(size=200) < 0.6
    label, usable = numpy_labels(time, event, 10.0)
    t_label, t_usable = torch_labels(torch.tensor(time), torch.tensor(event), 10.0)
    assert (t_usable.numpy() == usable).all() and (t_label.numpy() == label.astype(bool)).all()


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
    assert resolve_training_config({"ratio": 0.5}).ratio.to_dict() == {"wsi": 0.5, "ct": 0.5}


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


# the typed tree: every key declared once, with its rule (or conversion) and its doc
RULES = TrainingConfig.rules()
CANDIDATES = ("wrong", 12345, -1, 1.5, 0, [], ["wrong"], True)


def _wrong_for(rule):
    return next(v for v in CANDIDATES if not rule.accepts(v))


@pytest.mark.parametrize("key", list(RULES))
def test_every_rule_refuses_a_wrong_value_naming_the_key_and_the_allowed_values(key):
    rule = RULES[key]
    with pytest.raises(RadiopathInputError) as err:
        resolve_training_config(nested(key, _wrong_for(rule)))
    assert err.value.field == key and rule.describe() in err.value.reason


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("aggregator", "maxpool", "unknown aggregator 'maxpool'"),
        ("aggregator", ["sparra"], "unknown aggregator"),
        ("modalities", 3, "must be a list of modalities"),
        ("modalities", "wsi,wsi", "listed twice"),
        ("modalities", [], "no modality given"),
        ("graph_preset", "no-such-graph-preset", None),
    ],
)
def test_keys_checked_by_their_conversion_are_refused_by_name(key, value, reason):
    assert key not in RULES
    with pytest.raises(RadiopathInputError) as err:
        resolve_training_config({key: value})
    assert err.value.field.split(".")[0] == key
    assert reason is None or reason in err.value.reason


def test_every_leaf_has_a_rule_or_a_conversion_and_a_doc():
    from dataclasses import fields

    def leaves(cls, prefix=""):
        for f in fields(cls):
            sub = f.metadata.get("section")
            yield from leaves(sub, f"{prefix}{f.name}.") if sub else [(prefix + f.name, f)]

    keys = []
    for key, f in leaves(TrainingConfig):
        keys.append(key)
        meta = f.metadata
        assert meta["doc"] and (meta["rule"] or meta["convert"] or meta["allowed"]), key
    assert keys == [k for k, _ in LEAVES if k != "mean"]  # mean: a section with no key


def test_the_reference_page_is_generated_from_the_declarations():
    from radiopath.config_rules import leaf_keys
    from radiopath.training.config import reference_page

    page = ROOT / "docs" / "config-training.md"
    assert page.read_text() == reference_page(), (
        "docs/config-training.md is out of date; regenerate it (command at its top)"
    )
    for key, value in leaf_keys(DEFAULT_CONFIG):  # every key is documented
        assert f"| `train.{key}` |" in page.read_text() or value == {}, key
    assert "## `train.mean`" in page.read_text()


def test_runtime_keys_are_marked_in_their_docs():
    from radiopath.training.config import RUNTIME, RUNTIME_KEYS

    assert set(RUNTIME_KEYS) == {
        "monitor_test",
        "cache_graphs",
        "cache_limit_gb",
        "strict",
        "amp",
        "num_threads",
        "tune_malloc",
        "importance",
    }
    page = (ROOT / "docs" / "config-training.md").read_text()
    for key in RUNTIME_KEYS:
        assert f"| `train.{key}` |" in page and RUNTIME in page.split(f"`train.{key}`")[1]


def test_a_built_configuration_is_frozen_and_round_trips():
    import dataclasses
    import json
    import pickle

    cfg = resolve_training_config(
        {"ratio": 0.3, "clinical": {"columns": ["age"]}}, aggregator="abmil", modalities="wsi"
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.sparra.alpha0 = 3.0  # type: ignore[misc]
    assert cfg.modalities == ("wsi",) and cfg.clinical.columns == ("age",)
    assert cfg.to_dict()["modalities"] == ["wsi"] and cfg.to_dict()["ratio"] == {
        "wsi": 0.3,
        "ct": 0.3,
    }
    assert list(cfg.to_dict()) == list(DEFAULT_CONFIG)
    assert resolve_training_config(cfg.to_dict()) == cfg  # resolving a record gives it back
    assert resolve_training_config(cfg) is cfg
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert json.loads(json.dumps(cfg.to_dict())) == cfg.to_dict()


def test_layers_keep_todays_semantics():
    # a None value is ignored at any depth; the flags win over the file
    cfg = resolve_training_config(
        {"lr": None, "sparra": {"alpha0": None}, "epochs": 3}, seed=None, lr=0.01
    )
    assert cfg.lr == 0.01 and cfg.sparra.alpha0 == 2.0 and cfg.seed == 0
    # epochs named without steps run epochs; steps named too keep the steps
    assert cfg.steps is None and cfg.epochs == 3
    assert resolve_training_config({"epochs": 3, "steps": 7}).steps == 7
    assert resolve_training_config({}).steps == PRESETS["learned"]["steps"]
    # a built configuration is the base of the flags laid over it, validated again
    over = resolve_training_config(cfg, aggregator="mean", ratio=0.4)
    assert (over.aggregator, over.ratio.wsi, over.lr) == ("mean", 0.4, 0.01)
    with refused("sparra.alpah0", "alpha0"):
        resolve_training_config(cfg, sparra={"alpah0": 1.0})
    with refused("conv.wsi"):
        resolve_training_config(cfg, conv="sage")


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_builds_and_its_dict_is_the_layered_dict(preset):
    """to_dict() is the dict the earlier resolver built by deep-merging the layers: the same
    keys, order and values (run records and fingerprints stay byte-identical)."""
    import json

    from radiopath.config import deep_merge

    cfg = resolve_training_config({"preset": preset})
    layered = deep_merge(deep_merge(DEFAULT_CONFIG, PRESETS[preset]), {"preset": preset})
    assert json.dumps(cfg.to_dict()) == json.dumps(layered)
    assert TrainingConfig.from_mapping(PRESETS[preset]).to_dict() == {
        **layered,
        "preset": "learned",
    }


@pytest.mark.parametrize(
    "pca, field",
    [
        ({"components": -1}, "pca.components"),
        ({"components": 2.5}, "pca.components"),
        ({"components": "all"}, "pca.components"),
        ({"whiten": "yes"}, "pca.whiten"),
        ({"component": 4}, "pca.component"),
    ],
)
def test_bad_pca_settings_are_named(pca, field):
    with pytest.raises(RadiopathInputError, match=field.replace(".", r"\.")):
        resolve_training_config({"pca": pca})
