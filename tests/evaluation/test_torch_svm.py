"""The survival SVM's solver helpers (radiopath/evaluation/torch_svm.py): ranks with ties
broken as scikit-survival breaks them."""

from __future__ import annotations

import numpy as np

from radiopath.evaluation.torch_svm import survival_ranks


def test_survival_ranks_break_ties_like_sksurv():
    from sksurv.svm.survival_svm import BaseSurvivalSVM

    time = np.array([3.0, 1.0, 3.0, 2.0, 3.0, 1.0, 5.0])
    order = BaseSurvivalSVM._argsort_and_resolve_ties(time, np.random.RandomState(7))
    ranks = survival_ranks(time, 7)
    np.testing.assert_array_equal(np.argsort(ranks), order)
    assert sorted(ranks.tolist()) == list(range(len(time)))
