"""radiopath.training.loop: intra-op threads, horizon weighting of the binary head, modality
dropout and staged training."""

from __future__ import annotations

import pytest
import torch

from radiopath.errors import RadiopathInputError
from radiopath.training import train_cross_validated
from radiopath.training.data import PatientRecord
from radiopath.training.loop import _muted, horizon_weighting


def test_intra_op_threads_set_and_restored_and_bad_value_named():
    from radiopath.training.loop import intra_op_threads

    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    with intra_op_threads(target, torch.device("cpu")):
        assert torch.get_num_threads() == target
    assert torch.get_num_threads() == before
    with intra_op_threads(None, torch.device("cpu")):
        assert torch.get_num_threads() == before
    with pytest.raises(RadiopathInputError, match="num_threads"):
        with intra_op_threads(0, torch.device("cpu")):
            pass
    assert torch.get_num_threads() == before
    with pytest.raises(RadiopathInputError, match="num_threads"):
        train_cross_validated(
            "missing.csv",
            None,
            aggregator="mean",
            modalities="wsi",
            out_dir="x",
            config={"num_threads": 0},
        )


def test_horizon_weighting_balances_the_classes_and_needs_both():
    train = [
        PatientRecord(f"P{i}", t, e, ("wsi",))
        for i, (t, e) in enumerate([(1, 1), (2, 1), (3, 0), (8, 0), (9, 1), (10, 0), (11, 0)])
    ]
    # by 5: two events (P0, P1); P2 censored before 5: unknown; four followed past 5
    assert horizon_weighting(train, 5.0) == (5.0, 2.0)
    with pytest.raises(RadiopathInputError) as err:
        horizon_weighting(train, 0.5)
    assert err.value.field == "horizon"


def test_modality_dropout_never_drops_the_last_modality_and_staging_keeps_one():
    chunk = [
        PatientRecord("A", 1.0, 1, ("wsi", "ct", "clinical")),
        PatientRecord("B", 2.0, 0, ("ct",)),
    ]
    gen = torch.Generator().manual_seed(0)
    joint = {"unimodal": False, "dropout": 0.9}
    seen = set()
    for step in range(200):
        out = _muted(chunk, ["wsi", "ct", "clinical"], step, gen, **joint)
        assert all(len(r.modalities) >= 1 for r in out) and out[1].modalities == ("ct",)
        seen.add(out[0].modalities)
    assert len(seen) > 3  # several subsets of A's modalities were seen
    assert _muted(chunk, ["wsi"], 0, gen, unimodal=False, dropout=0.0) is chunk
    staged = {"unimodal": True, "dropout": 0.0}
    assert [r.modalities for r in _muted(chunk, ["wsi", "ct", "clinical"], 1, gen, **staged)] == [
        ("ct",),
        ("ct",),
    ]
    assert _muted(chunk, ["wsi", "ct", "clinical"], 0, gen, **staged)[1].modalities == ()


def test_training_reports_its_progress_to_the_encoders(small_cohort, small_graphs, tmp_path):
    """The loop tells the model how far training has got before every step, from 0 to just
    under 1 (what ``pooling.ratio_warmup`` reads); each fold starts again at 0."""
    from radiopath.models.multimodal import MultimodalSurvivalModel

    seen: list[float] = []
    original = MultimodalSurvivalModel.set_training_progress

    def record(self, progress):
        seen.append(progress)
        original(self, progress)

    config = {"preset": "paper", "epochs": 3, "folds": 2, "batch_size": 8, "hidden": 8}
    config["pooling"] = {"ratio_warmup": 0.5}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MultimodalSurvivalModel, "set_training_progress", record)
        train_cross_validated(
            small_cohort,
            small_graphs,
            aggregator="mean",
            modalities="wsi",
            out_dir=tmp_path / "run",
            config=config,
            progress=False,
        )
    starts = [i for i, p in enumerate(seen) if p == 0.0]
    assert len(starts) == 2  # one per fold
    for fold in (seen[: starts[1]], seen[starts[1] :]):
        assert all(b > a for a, b in zip(fold, fold[1:]))
        n = len(fold)  # 3 epochs x ceil(12 / 8) = 2 batches
        assert n == 6 and fold[-1] == pytest.approx((n - 1) / n)
