"""radiopath.training.late: late fusion of unimodal runs."""

from __future__ import annotations

import numpy as np
import pytest

from radiopath.io import FoldEmbeddings, write_fold_embeddings
from radiopath.runkit import write_json
from radiopath.training.late import combine_fold
from radiopath.training.loop import c_index


def _fake_unimodal(out, fold, modality, ids, split, time, event, risk, inner_c=None):
    write_fold_embeddings(
        out / "unimodal" / modality / "embeddings" / f"fold_{fold}.npz",
        FoldEmbeddings(
            fold, np.array(ids), np.array(split), time, event, np.zeros((len(ids), 2)), risk
        ),
    )
    write_json(
        out / "unimodal" / modality / "checkpoints" / f"fold_{fold}.done.json",
        {"inner_validation_c_index": inner_c},
    )


@pytest.mark.parametrize("kind", ["equal", "c_index", "cox"])
def test_late_fusion_of_identical_risks_keeps_the_unimodal_c_index(tmp_path, kind):
    rng = np.random.default_rng(0)
    n = 40
    ids = [f"P{i:02d}" for i in range(n)]
    split = ["train"] * 30 + ["test"] * 10
    time = rng.exponential(10, n)
    event = (rng.uniform(size=n) < 0.7).astype(np.int64)
    risk = -np.log(time) + rng.normal(0, 1.0, n)  # informative, so Cox weights are positive
    for m in ("wsi", "ct"):
        _fake_unimodal(tmp_path, 0, m, ids, split, time, event, risk, inner_c=0.7)
    fused, rows = combine_fold(tmp_path, 0, ["wsi", "ct"], kind)
    test = fused.part("test")
    order = {p: i for i, p in enumerate(ids)}
    own = risk[[order[p] for p in test.patient_id]]
    assert c_index(test.time, test.event, test.risk) == pytest.approx(
        c_index(test.time, test.event, own), abs=1e-12
    )
    assert [r["modality"] for r in rows] == ["wsi", "ct"]
    assert rows[0]["weight"] == pytest.approx(rows[1]["weight"], rel=1e-6)


def test_late_fusion_scores_a_patient_from_the_modalities_it_has(tmp_path):
    ids = ["A", "B", "C", "D", "E"]
    time = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    event = np.array([1, 1, 0, 1, 0])
    split = ["train", "train", "train", "test", "test"]
    wsi = np.array([3.0, 1.0, 2.0, 5.0, 0.0])
    _fake_unimodal(tmp_path, 0, "wsi", ids, split, time, event, wsi)
    # E has no CT
    _fake_unimodal(
        tmp_path, 0, "ct", ids[:4], split[:4], time[:4], event[:4], np.array([1.0, 0.0, -1.0, 4.0])
    )
    fused, _ = combine_fold(tmp_path, 0, ["wsi", "ct"], "equal")
    got = dict(zip(fused.patient_id, fused.risk))
    z_wsi = (wsi - wsi[:3].mean()) / wsi[:3].std()
    z_ct_d = (4.0 - 0.0) / np.std([1.0, 0.0, -1.0])
    assert got["E"] == pytest.approx(z_wsi[4])
    assert got["D"] == pytest.approx((z_wsi[3] + z_ct_d) / 2)
    # a presence column per modality, E lacking CT
    e_row = list(fused.patient_id).index("E")
    assert fused.embedding[e_row].tolist()[2:] == [1.0, 0.0]
