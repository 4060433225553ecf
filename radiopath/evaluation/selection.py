"""The one model-selection routine of both backends: choose a grid point, refit, retry.

Each backend only *scores*: it hands over, per outer fold, a :class:`Grid` -- the candidate
parameters and their inner-CV score on every inner split (the scikit-survival backend from
``GridSearchCV``, one point after the other; the torch backend from one batched solve of
every fold x split x point) -- and a ``refit`` that fits a batch of folds at given
parameters. Everything else is decided here, once:

* **the score of a grid point** is the mean of its inner-split scores; a point that some
  split could not score (its fit failed there, or no comparable pair) is NaN -- dropped,
  as in ``GridSearchCV`` with ``error_score=nan`` (:func:`mean_scores`);
* **the winner** (:func:`choose`) is the point with the highest finite mean score; ties go
  to the first in grid order (as ``GridSearchCV``); a NaN never wins; when every point is
  NaN, the most penalised available point is refit (:func:`most_penalised`) and the
  inner-CV score is recorded as NaN;
* **the retry policy** (:class:`RetryPolicy`): a fit that fails or does not converge is
  tried again with a stronger penalty (:meth:`RetryPolicy.stronger`), at most
  ``max_retries`` times (none for RSF, which has no penalty); each attempt is recorded in
  the message; the status is ``"ok"``, ``"retried"`` (a stronger penalty was needed),
  ``"not_converged"`` (kept, flagged) or ``"failed"``. The same policy rebuilds a Coxnet
  alpha path that cannot be computed, with a larger ``alpha_min_ratio``;
* **the records**: :func:`select_and_refit` writes each fold's
  :class:`~radiopath.evaluation.fitting.FittedModel` (parameters, inner-CV score, status,
  message).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from radiopath.evaluation.config import RetryConfig
from radiopath.evaluation.fitting import FitFailed, FittedModel, _failed, _finish

__all__ = [
    "Grid",
    "Outcome",
    "Retried",
    "RetryPolicy",
    "choose",
    "mean_scores",
    "most_penalised",
    "select_and_refit",
]


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Outcome:
    """What one attempt of one fit gave: ``value`` (the estimator, or what the caller
    needs), or ``failure`` (why it raised / overflowed); ``converged`` False with an
    optional ``detail`` flags a fit that reached its iteration limit."""

    value: object = None
    failure: str | None = None
    converged: bool = True
    detail: str = ""


@dataclass
class Retried:
    """The end of :meth:`RetryPolicy.run` for one fit."""

    value: object
    params: dict
    status: str  # "ok", "retried", "not_converged" or "failed"
    notes: list[str]

    @property
    def message(self) -> str:
        return "; ".join(self.notes)


def describe(params: Mapping) -> str:
    """``alpha=0.01, l1_ratio=0.5``: parameters as the messages name them."""
    return ", ".join(
        f"{k}={v[0] if isinstance(v, list) and len(v) == 1 else v:.4g}"
        if isinstance(v, float) or (isinstance(v, list) and len(v) == 1)
        else f"{k}={v}"
        for k, v in params.items()
    )


def clean_params(params: Mapping) -> dict:
    """Parameters as the selection table writes them (Coxnet's ``alphas=[a]`` as ``alpha``)."""
    out = {}
    for k, v in params.items():
        if k == "alphas":
            out["alpha"] = float(v[0])
        elif isinstance(v, np.generic):
            out[k] = v.item()
        else:
            out[k] = v
    return out


# ----------------------------------------------------------------------------- retry policy


@dataclass(frozen=True)
class RetryPolicy:
    """What happens to a fit that fails or does not converge (``evaluation.retry``)."""

    max_retries: int
    factor: float

    @classmethod
    def from_config(cls, retry: RetryConfig | Mapping, model: str) -> RetryPolicy:
        """The policy of ``model`` from the ``retry`` section (or a mapping of its keys, laid
        over its defaults); RSF has no penalty to strengthen, so no retries."""
        if not isinstance(retry, RetryConfig):
            retry = RetryConfig.from_mapping(retry, "evaluation.retry")
        return cls(0 if model == "rsf" else int(retry.max_retries), float(retry.factor))

    def stronger(self, model: str, params: Mapping) -> dict:
        """The next, more strongly penalised, parameters of a failed fit."""
        p, f = dict(params), self.factor
        if model == "coxph":
            p["alpha"] = max(float(p["alpha"]) * f, 1e-2)
        elif model == "fsvm":
            p["alpha"] = float(p["alpha"]) / f
        elif model == "coxnet":
            if "alpha_min_ratio" in p:  # an alpha path: stop it at a larger alpha
                p["alpha_min_ratio"] = min(float(p["alpha_min_ratio"]) * f, 0.5)
            if "alphas" in p:
                p["alphas"] = [float(a) * f for a in p["alphas"]]
            if "alpha" in p:
                p["alpha"] = float(p["alpha"]) * f
        else:
            raise FitFailed(f"{model} has no penalty to strengthen")
        return p

    def run(
        self,
        model: str,
        params: Sequence[Mapping],
        attempt: Callable[[list[int], list[dict]], Sequence[Outcome]],
        notes: Sequence[Sequence[str]] | None = None,
    ) -> list[Retried]:
        """Fit every item of ``params``, retrying failures with a stronger penalty.

        ``attempt(items, params)`` fits the listed items (indices into ``params``) at the
        given parameters in one go and returns their :class:`Outcome` in the same order;
        the items still to retry are attempted together again. ``notes`` are earlier
        records of each item (they make a successful fit ``"retried"``).
        """
        n = len(params)
        current = [dict(p) for p in params]
        log = [list(notes[i]) if notes is not None else [] for i in range(n)]
        done: list[Retried | None] = [None] * n
        todo = list(range(n))
        for k in range(self.max_retries + 1):
            if not todo:
                break
            outcomes = attempt(todo, [current[i] for i in todo])
            again = []
            for i, o in zip(todo, outcomes):
                done[i] = self._settle(model, current[i], o, log[i], last=k == self.max_retries)
                if done[i] is None:
                    current[i] = self.stronger(model, current[i])
                    again.append(i)
            todo = again
        return done  # type: ignore[return-value]

    def _settle(self, model, params, o: Outcome, notes: list[str], last: bool) -> Retried | None:
        """The record of one attempt, or None when it is to be retried (the note is kept)."""
        if o.failure is not None:
            notes.append(f"{describe(params)}: {o.failure}")
        elif not o.converged:
            detail = f" ({o.detail})" if o.detail else ""
            notes.append(f"{describe(params)} did not converge{detail}")
        else:
            if notes:
                notes.append(f"refit with {describe(params)}")
            return Retried(o.value, params, "retried" if notes else "ok", notes)
        if not last:
            return None
        if o.failure is not None:
            return Retried(None, params, "failed", notes)
        return Retried(o.value, params, "not_converged", notes)


# ----------------------------------------------------------------------------- the choice


@dataclass
class Grid:
    """The grid of one outer fold, scored by a backend.

    ``candidates[g]`` are the parameters of point ``g`` (None: not available, e.g. past
    the early stop of an alpha path); ``split_scores[s, g]`` its score on inner split
    ``s`` (NaN: the fit failed or the split could not score it). ``notes`` record what
    building the grid needed; ``problem`` says why there is no grid at all.
    """

    candidates: list[dict | None]
    split_scores: np.ndarray
    notes: list[str] = field(default_factory=list)
    problem: str | None = None


@dataclass(frozen=True)
class Choice:
    """The grid point chosen for one fold: its ``index``, ``params`` and mean inner-CV
    ``cv_score`` (NaN when every point was NaN and the most penalised one was taken)."""

    index: int
    params: dict
    cv_score: float


def mean_scores(split_scores: np.ndarray) -> np.ndarray:
    """``[S, G]`` -> ``[G]``: each point's mean over the inner splits; NaN when any split
    could not score it (its fit failed there), as ``GridSearchCV`` with ``error_score=nan``."""
    s = np.asarray(split_scores, dtype=float)
    if s.shape[0] == 0:
        return np.full(s.shape[1], np.nan)
    return s.mean(axis=0)


def most_penalised(model: str, candidates: Sequence[dict | None]) -> int:
    """Index of the most strongly penalised available candidate (-1 if none): the largest
    ``alpha`` of CoxPH and Coxnet, the smallest of FSVM, the first point otherwise."""
    alive = [g for g, c in enumerate(candidates) if c is not None]
    if not alive:
        return -1
    if model in ("coxph", "coxnet", "fsvm"):
        alpha = np.array([clean_params(candidates[g])["alpha"] for g in alive], dtype=float)
        return alive[int(np.argmin(alpha) if model == "fsvm" else np.argmax(alpha))]
    return alive[0]


def choose(model: str, grid: Grid) -> Choice | None:
    """The one rule that picks a fold's grid point (see the module docstring); None when
    the grid has no available point."""
    mean = mean_scores(grid.split_scores)
    alive = np.array([c is not None for c in grid.candidates])
    mean = np.where(alive, mean, np.nan)
    if np.isnan(mean).all():
        best = most_penalised(model, grid.candidates)
        if best < 0:
            return None
        return Choice(best, dict(grid.candidates[best]), float("nan"))
    best = int(np.nanargmax(mean))  # the first of equal scores
    return Choice(best, dict(grid.candidates[best]), float(mean[best]))


# ----------------------------------------------------------------------------- the routine


def select_and_refit(
    model: str,
    preps: Sequence,
    grids: Sequence[Grid],
    refit: Callable[[list[int], list[dict], list[Choice]], Sequence[Outcome]],
    policy: RetryPolicy,
) -> list[FittedModel]:
    """Choose each fold's grid point, refit it on the whole training split, retry, record.

    ``refit(folds, params, choices)`` fits the listed folds (indices into ``preps``) at
    ``params`` in one go and returns an :class:`Outcome` per fold whose ``value`` is the
    fitted estimator. Returns one :class:`FittedModel` per fold, in order.
    """
    out: list[FittedModel | None] = [None] * len(preps)
    choices: dict[int, Choice] = {}
    for f, (prep, grid) in enumerate(zip(preps, grids)):
        choice = None if grid.problem else choose(model, grid)
        if choice is None:
            why = grid.problem or "; ".join(grid.notes) or "no grid point to fit"
            out[f] = _failed(model, prep, {}, float("nan"), why)
        else:
            choices[f] = choice
    live = list(choices)

    def attempt(items, params):
        folds = [live[i] for i in items]
        return refit(folds, params, [choices[f] for f in folds])

    ends = policy.run(
        model, [choices[f].params for f in live], attempt, [grids[f].notes for f in live]
    )
    for f, end in zip(live, ends):
        params, cv = clean_params(end.params), choices[f].cv_score
        if end.status == "failed":
            out[f] = _failed(model, preps[f], params, cv, end.message)
        else:
            out[f] = _finish(model, preps[f], end.value, params, cv, end.status, end.message)
    return out  # type: ignore[return-value]
