r"""Compiled kernels of :class:`~radiopath.evaluation.estimators.rsf.NumbaRandomSurvivalForest`.

One survival tree is grown by :func:`grow_tree` with scikit-survival's rules (``SurvivalTree``
with ``LogrankCriterion`` under scikit-learn's best splitter), and :func:`apply_forest` sends
samples down every tree of a forest to a depth limit.

**Node estimates.** With :math:`Y(t)` the (bootstrap-weighted) number at risk and :math:`d(t)`
the weighted number of events of a node at each unique training time, a node stores the
Nelson-Aalen cumulative hazard :math:`\hat H(t) = \sum_{s \le t} d(s)/Y(s)` and the
Kaplan-Meier survival :math:`\hat S(t) = \prod_{s \le t} (1 - d(s)/Y(s))` at every unique
training time (constant after the node's last time), for every node, not only leaves.

**Split rule.** A split sends the samples with :math:`x_f \le c` to the left child L and is
scored by the absolute standardised log-rank statistic :math:`|U| / \sqrt{V}`,

.. math::

    U = \sum_t \Big(d_L(t) - Y_L(t) \frac{d(t)}{Y(t)}\Big), \qquad
    V = \sum_t \frac{Y_L(t)}{Y(t)} \Big(1 - \frac{Y_L(t)}{Y(t)}\Big)
        \frac{Y(t) - d(t)}{Y(t) - 1} d(t)

(the last factor is 0 where :math:`Y(t) \le 1`). scikit-survival recounts :math:`U` and
:math:`V` over every time for every candidate threshold. Here they are updated as samples
move left in feature order: with :math:`\tau_i` the time index of sample i and :math:`w_i` its
bootstrap count, :math:`U` is linear in the membership of L,
:math:`U = \sum_{i \in L} w_i (\delta_i - \hat H(\tau_i))`, and so is the first part of
:math:`V = \sum_{i \in L} w_i A(\tau_i) - \sum_t c(t) Y_L(t)^2` with
:math:`c(t) = v(t)/Y(t)^2`, :math:`v(t) = d(t)(Y(t)-d(t))/(Y(t)-1)` and
:math:`A(\tau) = \sum_{t \le \tau} v(t)/Y(t)`. Adding sample j to L raises the quadratic
part by :math:`w_j^2 C(\tau_j) + 2 w_j \sum_{i \in L} w_i C(\min(\tau_i, \tau_j))`, with
:math:`C(\tau) = \sum_{t \le \tau} c(t)`; the sum over L is two prefix sums over time kept in
Fenwick trees, so a feature costs :math:`O(s \log s)` for s node samples.

**Randomness.** Trees grow breadth-first: every node of depth k is split before any of depth
k + 1, so the random feature draws of the first k levels do not depend on deeper levels, and
a tree grown with ``max_depth=k`` is exactly the first k levels of a deeper one.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# scikit-learn's tolerance between feature values that count as distinct (FEATURE_THRESHOLD)
FEATURE_THRESHOLD = 1e-7


@njit(cache=True)
def _node_counts(seg, time_idx, event, weight, n_times):
    """Weighted numbers at risk ``Y`` and of events ``d`` at each time index."""
    d = np.zeros(n_times)
    leaving = np.zeros(n_times)
    for i in seg:
        leaving[time_idx[i]] += weight[i]
        if event[i]:
            d[time_idx[i]] += weight[i]
    at_risk = np.zeros(n_times)
    acc = 0.0
    for t in range(n_times - 1, -1, -1):
        acc += leaving[t]
        at_risk[t] = acc
    return at_risk, d


@njit(cache=True)
def _node_terms(seg, time_idx, event, weight, n_events_before):
    """The log-rank terms of a node's samples (``seg``, sorted by time), on the node's times.

    Returns ``(local, u, lin, wc, n_local, risk)``: each sample's index among the node's
    distinct times, its terms :math:`w(\\delta - \\hat H(\tau))`, :math:`w A(\tau)` and
    :math:`w C(\tau)` (see the module docstring), the number of distinct times, and the
    node's Nelson-Aalen cumulative hazard summed over the training event times
    (``n_events_before[g]`` counts the event times before global time index g).
    """
    s = seg.shape[0]
    local = np.empty(s, dtype=np.int64)
    first = np.empty(s + 1, dtype=np.int64)  # global index of each local time, then the end
    d = np.zeros(s)
    leaving = np.zeros(s)
    m = -1
    for k in range(s):
        i = seg[k]
        if k == 0 or time_idx[i] != time_idx[seg[k - 1]]:
            m += 1
            first[m] = time_idx[i]
        local[k] = m
        leaving[m] += weight[i]
        if event[i]:
            d[m] += weight[i]
    m += 1
    first[m] = n_events_before.shape[0] - 1
    H, A, C = np.empty(m), np.empty(m), np.empty(m)
    at_risk = h = a = c = risk = 0.0
    for t in range(m):
        at_risk += leaving[t]
    for t in range(m):
        y = at_risk
        h += d[t] / y
        if y > 1:
            v = (y - d[t]) / (y - 1.0) * d[t]
            a += v / y
            c += v / (y * y)
        H[t], A[t], C[t] = h, a, c
        risk += h * (n_events_before[first[t + 1]] - n_events_before[first[t]])
        at_risk -= leaving[t]
    u, lin, wc = np.empty(s), np.empty(s), np.empty(s)
    for k in range(s):
        i, t = seg[k], local[k]
        u[k] = weight[i] * ((1.0 if event[i] else 0.0) - H[t])
        lin[k] = weight[i] * A[t]
        wc[k] = weight[i] * C[t]
    return local, u, lin, wc, C, risk


@njit(cache=True)
def _best_threshold(xs, weight_seg, local, u, lin, wc, C, min_leaf, fenwick):
    """Best log-rank split of one feature: ``(statistic, threshold)``, ``-inf`` if none.

    ``xs`` are the node's values of the feature, the other arrays the node's samples'
    terms from :func:`_node_terms`, all in the node's (time) order. ``fenwick`` is scratch
    space ``[n_local + 1, 2]`` for the prefix sums over time of :math:`w C` and :math:`w`.
    """
    # the order within ties does not matter: only thresholds between distinct values count
    order = np.argsort(xs)
    s = xs.shape[0]
    fenwick[:] = 0.0
    size = fenwick.shape[0]
    u_left = lin_left = quad = w_left = 0.0
    best, threshold = -np.inf, 0.0
    for k in range(1, s):
        q = order[k - 1]
        w, tau = weight_seg[q], local[q]
        # sum over the current left child of w_i C(min(tau_i, tau)): two prefix sums
        below_c = below_w = 0.0
        pos = tau
        while pos > 0:
            below_c += fenwick[pos, 0]
            below_w += fenwick[pos, 1]
            pos -= pos & -pos
        quad += w * wc[q] + 2.0 * w * (below_c + C[tau] * (w_left - below_w))
        pos = tau + 1
        while pos < size:
            fenwick[pos, 0] += wc[q]
            fenwick[pos, 1] += w
            pos += pos & -pos
        w_left += w
        u_left += u[q]
        lin_left += lin[q]
        lo, hi = xs[q], xs[order[k]]
        if k < min_leaf or s - k < min_leaf or hi <= lo + FEATURE_THRESHOLD:
            continue
        var = lin_left - quad
        if var <= 1e-10 * lin_left:  # no information on either side (scikit-survival: -inf)
            continue
        stat = abs(u_left) / np.sqrt(var)
        if stat > best:
            best = stat
            threshold = lo / 2.0 + hi / 2.0
            if threshold == hi or not np.isfinite(threshold):
                threshold = lo
    return best, threshold


@njit(cache=True)
def _split_node(X, seg, weight, terms, min_leaf, max_features, features):
    """Draw features at random until ``max_features`` non-constant ones were scored.

    Returns ``(feature, threshold)``; feature -1 when no valid split exists.
    """
    local, u, lin, wc, C, _ = terms
    p = features.shape[0]
    fenwick = np.zeros((C.shape[0] + 1, 2))
    xs = np.empty(seg.shape[0], dtype=X.dtype)
    weight_seg = weight[seg]
    best, best_f, best_thr = -np.inf, -1, 0.0
    visited = constant = 0
    for j in range(p):
        if visited >= max_features and visited > constant:
            break
        r = np.random.randint(j, p)
        features[j], features[r] = features[r], features[j]
        f = features[j]
        visited += 1
        for k in range(seg.shape[0]):
            xs[k] = X[seg[k], f]
        if xs.max() <= xs.min() + FEATURE_THRESHOLD:
            constant += 1
            continue
        stat, thr = _best_threshold(xs, weight_seg, local, u, lin, wc, C, min_leaf, fenwick)
        if stat > best:
            best, best_f, best_thr = stat, f, thr
    return best_f, best_thr


@njit(cache=True)
def _partition(samples, lo, hi, X, f, threshold):
    """Stable partition of ``samples[lo:hi]`` into ``x_f <= threshold`` and the rest, in
    place (each part keeps its time order); returns where the right part starts."""
    seg = samples[lo:hi]
    goes_left = np.empty(hi - lo, dtype=np.bool_)
    for k in range(hi - lo):
        goes_left[k] = X[seg[k], f] <= threshold
    samples[lo:hi] = np.concatenate((seg[goes_left], seg[~goes_left]))
    return lo + int(goes_left.sum())


@njit(cache=True)
def _grow_tree(
    X, time_idx, event, weight, is_event_time, max_depth, min_samples_split, min_samples_leaf,
    max_features, seed, out_feature, out_threshold, out_left, out_right, out_risk, out_start,
    out_end, order,
):  # fmt: skip
    """Grow one tree into the ``out_*`` rows of its forest; returns its number of nodes.

    ``order`` receives the tree's drawn samples, each node's being ``order[start:end]``.
    """
    np.random.seed(seed)
    n_events_before = np.zeros(is_event_time.shape[0] + 1)
    n_events_before[1:] = np.cumsum(is_event_time)
    drawn = np.flatnonzero(weight > 0)
    # samples sorted by time; stable partitions keep every node's samples in that order
    samples = drawn[np.argsort(time_idx[drawn], kind="mergesort")]
    n = samples.shape[0]
    depth = np.zeros(out_feature.shape[0], dtype=np.int64)
    features = np.arange(X.shape[1])
    out_start[0], out_end[0] = 0, n
    n_nodes, node = 1, 0
    while node < n_nodes:
        lo, hi = out_start[node], out_end[node]
        seg = samples[lo:hi]
        terms = _node_terms(seg, time_idx, event, weight, n_events_before)
        out_risk[node] = terms[5]
        out_feature[node], out_left[node], out_right[node] = -1, -1, -1
        s = hi - lo
        if depth[node] < max_depth and s >= min_samples_split and s >= 2 * min_samples_leaf:
            f, thr = _split_node(X, seg, weight, terms, min_samples_leaf, max_features, features)
            if f >= 0:
                mid = _partition(samples, lo, hi, X, f, thr)
                out_start[n_nodes], out_end[n_nodes] = lo, mid
                out_start[n_nodes + 1], out_end[n_nodes + 1] = mid, hi
                depth[n_nodes] = depth[n_nodes + 1] = depth[node] + 1
                out_feature[node], out_threshold[node] = f, thr
                out_left[node], out_right[node] = n_nodes, n_nodes + 1
                n_nodes += 2
        node += 1
    order[:n] = samples
    return n_nodes


@njit(cache=True, nogil=True)
def grow_trees(
    X, time_idx, event, weights, seeds, is_event_time, max_depth, min_samples_split,
    min_samples_leaf, max_features, first, last, n_nodes, feature, threshold, left, right,
    risk, start, end, order,
):  # fmt: skip
    """Grow trees ``first .. last - 1`` of a forest into its node arrays (no GIL held).

    Parameters
    ----------
    X : float32 ``[n, p]``
    time_idx : int64 ``[n]``, index of each sample's time among the unique training times
    event : bool ``[n]``
    weights : float64 ``[n_trees, n]``, bootstrap counts (0 = not drawn)
    seeds : int64 ``[n_trees]``, seeds of the random feature draws
    is_event_time : bool ``[n_times]``
    max_depth, min_samples_split, min_samples_leaf, max_features : as scikit-learn's
    n_nodes : ``[n_trees]``, written: each tree's number of nodes
    feature, threshold, left, right, risk, start, end : ``[n_trees, 2 n + 1]``, written
        Per node, breadth-first, local to the tree (``left = right = feature = -1`` at
        leaves); ``risk`` is the node's Nelson-Aalen cumulative hazard summed over the
        training event times; the node's samples are ``order[t, start:end]``.
    order : ``[n_trees, n]``, written
    """
    for t in range(first, last):
        n_nodes[t] = _grow_tree(
            X, time_idx, event, weights[t], is_event_time, max_depth, min_samples_split,
            min_samples_leaf, max_features, seeds[t], feature[t], threshold[t], left[t],
            right[t], risk[t], start[t], end[t], order[t],
        )  # fmt: skip


@njit(cache=True)
def node_estimates(order, start, end, time_idx, event, weights, tree_of, n_times):
    """Nelson-Aalen cumulative hazard and Kaplan-Meier survival of every node.

    ``order`` / ``weights`` are per tree; node k belongs to tree ``tree_of[k]`` and holds
    ``order[tree_of[k], start[k]:end[k]]``. Returns ``(chf, surv)``, ``[n_nodes, n_times]``.
    """
    chf = np.zeros((start.shape[0], n_times))
    surv = np.zeros((start.shape[0], n_times))
    for k in range(start.shape[0]):
        t = tree_of[k]
        seg = order[t, start[k] : end[k]]
        at_risk, d = _node_counts(seg, time_idx, event, weights[t], n_times)
        h, s = 0.0, 1.0
        for j in range(n_times):
            if at_risk[j] > 0:
                ratio = d[j] / at_risk[j]
                h += ratio
                s *= 1.0 - ratio
            chf[k, j] = h
            surv[k, j] = s
    return chf, surv


@njit(cache=True)
def apply_forest(X, roots, feature, threshold, left, right, max_depth):
    """Node reached by every sample in every tree, going no deeper than ``max_depth``.

    The trees' nodes are concatenated (child indices are global); tree t starts at
    ``roots[t]``. Returns int64 ``[n_trees, n_samples]``.
    """
    out = np.empty((roots.shape[0], X.shape[0]), dtype=np.int64)
    for t in range(roots.shape[0]):
        for i in range(X.shape[0]):
            node = roots[t]
            level = 0
            while left[node] >= 0 and level < max_depth:
                node = left[node] if X[i, feature[node]] <= threshold[node] else right[node]
                level += 1
            out[t, i] = node
    return out
