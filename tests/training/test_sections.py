"""The sections of the training configuration: a typo at depth in each is refused by its
dotted name; each aggregator's section holds its constructor's options; per-modality keys."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest
from config_checks import refused

from radiopath.models.aggregators import AGGREGATORS
from radiopath.training.config import TrainingConfig, resolve_training_config

SECTIONS = [f.name for f in fields(TrainingConfig) if f.metadata.get("section")]


@pytest.mark.parametrize("name", SECTIONS)
def test_a_typo_in_every_section_is_refused_by_its_dotted_name(name):
    cls = next(f.metadata["section"] for f in fields(TrainingConfig) if f.name == name)
    keys = [f.name for f in fields(cls)]
    typo = f"{keys[0]}x" if keys else "dropout"
    with refused(f"{name}.{typo}", keys[0] if keys else None):
        resolve_training_config({name: {typo: 1}})
    with refused(f"{name}.{typo}"):  # laid over a built configuration too
        resolve_training_config(resolve_training_config({}), **{name: {typo: 1}})


def test_there_is_a_section_per_aggregator_with_its_constructors_options():
    assert set(AGGREGATORS) <= set(SECTIONS)
    for name, cls in AGGREGATORS.items():
        params = inspect.signature(cls.__init__).parameters
        options = {p for p in params if p not in ("self", "in_channels", "reconstruct_channels")}
        section = resolve_training_config({"aggregator": name})
        assert set(section.aggregator_options()) == options, name


@pytest.mark.parametrize(
    ("given", "wsi", "ct"),
    [
        ({"ratio": 0.3}, 0.3, 0.3),
        ({"ratio": {"ct": 0.7}}, 0.5, 0.7),  # the learned preset's 0.5 for the other
        ({"conv": "gin"}, "gin", "gin"),
        ({"conv": {"wsi": "gin"}}, "gin", "gcn_root"),  # the learned preset's for the other
    ],
)
def test_a_per_modality_key_takes_one_value_or_one_per_modality(given, wsi, ct):
    cfg = resolve_training_config(given)
    key = next(iter(given))
    assert (getattr(cfg, key).wsi, getattr(cfg, key).ct) == (wsi, ct)


def test_a_wrong_per_modality_scalar_names_the_first_modality():
    with refused("ratio.wsi"):
        resolve_training_config({"ratio": 1.5})
    with refused("conv.wsi"):
        resolve_training_config({"conv": "sage"})
