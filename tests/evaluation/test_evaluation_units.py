"""radiopath.evaluation.units: an evaluation killed in the middle of its grid search resumes
from the units it finished (moved from tests/training/test_faults.py)."""

from __future__ import annotations

import pandas as pd
import pytest

# on one thread, as when this test lived under tests/training/
pytestmark = pytest.mark.usefixtures("one_thread")


def test_interrupted_evaluation_resumes_from_finished_units(finished_run, monkeypatch, tmp_path):
    import shutil

    import radiopath.evaluation.units as units
    from radiopath.evaluation import evaluate_run

    run, out = finished_run
    run()
    clean_dir = tmp_path.parent / (tmp_path.name + "_clean")
    shutil.copytree(out, clean_dir)
    models = ["coxph", "fsvm"]
    clean = evaluate_run(clean_dir, models=models, backend="sksurv")

    real_fit = units._fit_sksurv
    calls = []

    def dies_on_third(model, prep, cfg, seed):
        calls.append((model, prep.fold))
        if len(calls) == 3:
            raise KeyboardInterrupt  # a kill in the middle of the grid search
        return real_fit(model, prep, cfg, seed)

    monkeypatch.setattr(units, "_fit_sksurv", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        evaluate_run(out, models=models, backend="sksurv")
    assert len(list((out / ".evaluation_units").glob("*.pkl"))) == 2
    calls.clear()
    resumed = evaluate_run(out, models=models, backend="sksurv")
    assert len(calls) == 2  # only the two units that had not finished
    assert not (out / ".evaluation_units").exists()
    pd.testing.assert_frame_equal(resumed.metrics, clean.metrics)
    pd.testing.assert_frame_equal(resumed.predictions, clean.predictions)
    for name in ("survival.csv", "selection.csv", "metrics.csv"):
        assert (out / name).read_bytes() == (clean_dir / name).read_bytes(), name
