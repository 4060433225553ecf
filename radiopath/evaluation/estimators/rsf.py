"""A random survival forest grown by compiled kernels, a drop-in for scikit-survival's.

:class:`NumbaRandomSurvivalForest` follows ``sksurv.ensemble.RandomSurvivalForest``
(Ishwaran et al. 2008, Ann Appl Stat 2(3)): the same bootstrap samples for the same
``random_state``, trees split by the log-rank statistic over ``max_features`` features drawn
at each node, ``min_samples_split`` / ``min_samples_leaf`` counted in distinct samples,
Nelson-Aalen and Kaplan-Meier estimates with bootstrap-weighted counts in every node, and
the same predictions: the risk score is the cumulative hazard summed over the training event
times, and survival and cumulative hazard functions are averaged over trees. Only the random
feature draws at the nodes come from another generator, so the forest agrees with
scikit-survival's in distribution, not tree for tree (``tests/evaluation/estimators/test_rsf.py``
checks the C-index over seeds). The kernels are in :mod:`._forest_kernels`; they score every
threshold of a feature in :math:`O(s \\log s)` where scikit-survival recounts the log-rank
statistic per threshold.

Trees grow breadth-first, so :meth:`NumbaRandomSurvivalForest.depth_risks` reads the forest
at any smaller ``max_depth`` exactly as if it had been grown to that depth: one forest per
inner split serves the whole depth grid of the inner cross-validation.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted
from sksurv.functions import StepFunction
from sksurv.util import check_y_survival

from radiopath.evaluation import _forest_kernels as kernels

__all__ = ["NumbaRandomSurvivalForest"]

# the bound of the per-tree seeds scikit-learn draws (np.iinfo(np.int32).max)
_MAX_INT = np.iinfo(np.int32).max
_UNLIMITED = np.iinfo(np.int64).max


class NumbaRandomSurvivalForest(BaseEstimator):
    """Random survival forest with scikit-survival's estimators and split rule, compiled.

    Parameters
    ----------
    n_estimators : int
    max_depth : int or None
        None grows until ``min_samples_split`` / ``min_samples_leaf`` stop it.
    min_samples_split, min_samples_leaf : int
        In distinct (bootstrap-drawn) samples, as scikit-learn counts them.
    max_features : int, float, "sqrt", "log2" or None
        Features scored at each node, as scikit-learn resolves it.
    bootstrap : bool
        Draw each tree's samples with replacement (scikit-learn's draw for ``random_state``).
    random_state : int, RandomState or None
    n_jobs : int or None
        Threads growing trees (None: 1; -1: one per CPU). The forest does not depend on it.

    Attributes
    ----------
    unique_times_, is_event_time_ : ndarray
        The sorted unique training times and whether an event happened at each.
    n_features_in_, max_features_ : int
    """

    def __init__(
        self,
        n_estimators: int = 100,
        *,
        max_depth: int | None = None,
        min_samples_split: int = 6,
        min_samples_leaf: int = 3,
        max_features="sqrt",
        bootstrap: bool = True,
        random_state=None,
        n_jobs: int | None = None,
    ):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.min_samples_split = min_samples_split
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.bootstrap = bootstrap
        self.random_state = random_state
        self.n_jobs = n_jobs

    # ------------------------------------------------------------------------- fitting

    def _resolve_max_features(self, p: int) -> int:
        mf = self.max_features
        if mf is None:
            return p
        if mf == "sqrt":
            return max(1, int(np.sqrt(p)))
        if mf == "log2":
            return max(1, int(np.log2(p)))
        if isinstance(mf, float) and 0.0 < mf <= 1.0:
            return max(1, int(mf * p))
        if isinstance(mf, (int, np.integer)) and not isinstance(mf, bool) and 1 <= mf <= p:
            return int(mf)
        raise ValueError(f"max_features must be 'sqrt', 'log2', None, a fraction or 1..{p}: {mf!r}")

    def _check_params(self) -> None:
        if int(self.n_estimators) < 1:
            raise ValueError(f"n_estimators must be >= 1, got {self.n_estimators!r}")
        if self.max_depth is not None and int(self.max_depth) < 1:
            raise ValueError(f"max_depth must be >= 1 or None, got {self.max_depth!r}")
        if int(self.min_samples_split) < 2 or int(self.min_samples_leaf) < 1:
            raise ValueError("min_samples_split must be >= 2 and min_samples_leaf >= 1")

    def fit(self, X, y) -> NumbaRandomSurvivalForest:
        """Grow ``n_estimators`` trees on bootstrap samples of ``(X, y)``.

        ``y`` is a structured array of (event, time), as scikit-survival's.
        """
        self._check_params()
        X = check_array(X, dtype=np.float32)
        event, time = check_y_survival(y)
        if X.shape[0] != time.shape[0]:
            raise ValueError(f"X has {X.shape[0]} samples but y has {time.shape[0]}")
        n, p = X.shape
        self.n_features_in_ = p
        self.max_features_ = self._resolve_max_features(p)
        self.unique_times_, time_idx = np.unique(time.astype(np.float64), return_inverse=True)
        self.is_event_time_ = np.zeros(self.unique_times_.shape[0], dtype=bool)
        self.is_event_time_[time_idx[event]] = True
        rng = check_random_state(self.random_state)
        # scikit-learn's draws: one seed per tree, the bootstrap sample from that seed
        seeds = np.array([rng.randint(_MAX_INT) for _ in range(int(self.n_estimators))])
        weights = _bootstrap_counts(seeds, n) if self.bootstrap else np.ones((len(seeds), n))
        args = (
            X,
            time_idx.astype(np.int64),
            event.astype(np.bool_),
            weights,
            seeds.astype(np.int64),
            self.is_event_time_,
            _UNLIMITED if self.max_depth is None else int(self.max_depth),
            int(self.min_samples_split),
            int(self.min_samples_leaf),
            self.max_features_,
        )
        self._store(self._grow(args, len(seeds), n), time_idx, event, weights)
        return self

    def _grow(self, args: tuple, T: int, n: int) -> dict:
        """Grow the T trees (:func:`._forest_kernels.grow_trees`), split over threads."""
        cap = 2 * n + 1  # a split leaves a sample on each side: at most n leaves
        grown = {
            "n_nodes": np.zeros(T, dtype=np.int64),
            "feature": np.full((T, cap), -1, dtype=np.int64),
            "threshold": np.zeros((T, cap)),
            "left": np.full((T, cap), -1, dtype=np.int64),
            "right": np.full((T, cap), -1, dtype=np.int64),
            "risk": np.zeros((T, cap)),
            "start": np.zeros((T, cap), dtype=np.int64),
            "end": np.zeros((T, cap), dtype=np.int64),
            "order": np.zeros((T, n), dtype=np.int64),
        }
        bounds = np.linspace(0, T, min(self._n_threads(), T) + 1).astype(int)
        ranges = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
        if len(ranges) == 1:
            kernels.grow_trees(*args, 0, T, *grown.values())
            return grown
        pool = _thread_pool(len(ranges))
        done = [pool.submit(kernels.grow_trees, *args, a, b, *grown.values()) for a, b in ranges]
        for job in done:
            job.result()
        return grown

    def _n_threads(self) -> int:
        if self.n_jobs is None:
            return 1
        n_jobs = int(self.n_jobs)
        return max(1, (os.cpu_count() or 1) if n_jobs < 0 else n_jobs)

    def _store(self, grown: dict, time_idx, event, weights) -> None:
        """Keep the grown nodes, tree after tree; child indices become forest-wide."""
        n_nodes, left, right = grown["n_nodes"], grown["left"], grown["right"]
        keep = np.arange(left.shape[1]) < n_nodes[:, None]
        self.roots_ = np.concatenate([[0], np.cumsum(n_nodes)[:-1]]).astype(np.int64)
        shift = self.roots_[:, None]
        self.feature_ = grown["feature"][keep]
        self.threshold_ = grown["threshold"][keep]
        self.left_ = np.where(left >= 0, left + shift, -1)[keep]
        self.right_ = np.where(right >= 0, right + shift, -1)[keep]
        self.node_risk_ = grown["risk"][keep]
        # what the node estimates are computed from, on first use
        self._nodes = (
            grown["order"],
            grown["start"][keep],
            grown["end"][keep],
            np.repeat(np.arange(len(n_nodes)), n_nodes),
        )
        self._samples = (time_idx.astype(np.int64), event.astype(np.bool_), weights)
        self._estimates = None

    # ------------------------------------------------------------------------- prediction

    def _leaves(self, X, depth: int | None = None) -> np.ndarray:
        check_is_fitted(self, "roots_")
        X = check_array(X, dtype=np.float32)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the forest {self.n_features_in_}")
        limit = self.max_depth if depth is None else depth
        limit = _UNLIMITED if limit is None else int(limit)
        return kernels.apply_forest(
            X, self.roots_, self.feature_, self.threshold_, self.left_, self.right_, limit
        )

    def predict(self, X) -> np.ndarray:
        """Risk scores: the cumulative hazard summed over the training event times."""
        return self.node_risk_[self._leaves(X)].mean(0)

    def depth_risks(self, X, depths: Sequence[int | None]) -> np.ndarray:
        """Risk scores of the forest read at each of ``depths`` (None: its own depth).

        Equal to :meth:`predict` of forests grown with those ``max_depth`` (not deeper than
        this one) and the same ``random_state``. Returns ``[len(depths), n_samples]``.
        """
        return np.stack([self.node_risk_[self._leaves(X, d)].mean(0) for d in depths])

    def _node_estimates(self) -> tuple[np.ndarray, np.ndarray]:
        """Nelson-Aalen and Kaplan-Meier of every node, ``[n_nodes, n_times]`` each."""
        if self._estimates is None:
            order, start, end, tree_of = self._nodes
            time_idx, event, weights = self._samples
            self._estimates = kernels.node_estimates(
                order, start, end, time_idx, event, weights, tree_of, self.unique_times_.shape[0]
            )
        return self._estimates

    def _average(self, values: np.ndarray, X) -> np.ndarray:
        leaves = self._leaves(X)
        out = np.zeros((leaves.shape[1], values.shape[1]))
        for tree_leaves in leaves:
            out += values[tree_leaves]
        return out / leaves.shape[0]

    def predict_cumulative_hazard_function(self, X, return_array: bool = False):
        """Nelson-Aalen cumulative hazards averaged over trees, at ``unique_times_``."""
        arr = self._average(self._node_estimates()[0], X)
        return arr if return_array else self._step_functions(arr)

    def predict_survival_function(self, X, return_array: bool = False):
        """Kaplan-Meier survival functions averaged over trees, at ``unique_times_``."""
        arr = self._average(self._node_estimates()[1], X)
        return arr if return_array else self._step_functions(arr)

    def _step_functions(self, arr: np.ndarray) -> np.ndarray:
        return np.array([StepFunction(self.unique_times_, row) for row in arr], dtype=object)


@functools.lru_cache(maxsize=4)
def _thread_pool(n_threads: int) -> ThreadPoolExecutor:
    """A pool kept for the process: forests are grown many times (every inner split)."""
    return ThreadPoolExecutor(n_threads, thread_name_prefix="radiopath-forest")


def _bootstrap_counts(seeds: np.ndarray, n: int) -> np.ndarray:
    """How often each sample is drawn for each tree: scikit-learn's draw for each tree seed."""
    rng = np.random.RandomState()
    counts = np.empty((len(seeds), n))
    for t, seed in enumerate(seeds):
        rng.seed(seed)
        counts[t] = np.bincount(rng.randint(0, n, n), minlength=n)
    return counts
