"""The evaluation's units of work, runnable on any executor (:mod:`radiopath.executors`).

A unit is one (model, fold) fit -- scikit-survival's grid search, or the truncated RSF --
or, for the torch backend's CoxPH, Coxnet and FSVM, one model over every fold: those solve
all inner folds x grid points x outer folds in one batched call, and the batch is what
their grid search sees, so it is the smallest unit that gives the same numbers. (A unit is
within one aggregator's evaluation; the benchmark evaluates its aggregators one stage after
the other.)

The prepared folds (the embeddings) reach the workers once, as a shared object; a unit
names its fold by index. It writes its finished fit to the evaluation's unit cache itself,
so an evaluation killed part-way resumes from every unit that finished, wherever it ran.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from threadpoolctl import threadpool_limits

from radiopath.evaluation._cox import torch_threads
from radiopath.evaluation.config import EvaluationConfig
from radiopath.evaluation.fitting import FittedModel
from radiopath.evaluation.prepare import PreparedFold
from radiopath.evaluation.sksurv_backend import _fit_sksurv, _rsf_truncated
from radiopath.evaluation.torch_backend import _torch_coxnet, _torch_coxph, _torch_fsvm

#: Models the torch backend fits on all folds in one batched call.
BATCHED = {"coxph": _torch_coxph, "fsvm": _torch_fsvm, "coxnet": _torch_coxnet}


def plan_units(
    models: Sequence[str], fittable: Sequence[PreparedFold], done: set, backend: str
) -> list[tuple[str, int | None]]:
    """``(model, fold index)`` of every fit still to do (index None: the model's batched
    fit over all folds; a partly cached batched model is fitted again on all its folds,
    which gives identical results in one batch)."""
    units: list[tuple[str, int | None]] = []
    for m in models:
        todo = [i for i, p in enumerate(fittable) if (m, p.fold) not in done]
        if not todo:
            continue
        if backend == "torch" and m in BATCHED:
            units.append((m, None))
        else:
            units += [(m, i) for i in todo]
    return units


def fit_unit(
    model: str,
    index: int | None,
    *,
    preps: Sequence[PreparedFold],
    cfg: EvaluationConfig,
    device: torch.device,
    seed: int,
    strategy: str,
    engine: str = "sksurv",
    cache=None,
) -> list[FittedModel]:
    """Fit one unit (see :func:`plan_units`) and put its fits in ``cache``.

    BLAS runs on one thread inside a unit: a multi-threaded BLAS sums in an order that
    depends on its thread count, so without the limit a fit's last bits would depend on
    the cores of the process it lands in (a Ray task gets one thread per CPU it asks for).
    """
    with threadpool_limits(limits=1, user_api="blas"), torch_threads(cfg.num_threads, device):
        if index is None:
            with torch.no_grad():
                fits = list(BATCHED[model](preps, cfg, device, seed))
        elif model == "rsf" and (strategy == "truncate" or engine == "numba"):
            # the compiled forest's truncated trees are the shallower trees: no grid needed
            fits = [_rsf_truncated(preps[index], cfg, seed, engine)]
        else:
            fits = [_fit_sksurv(model, preps[index], cfg, seed)]
    if cache is not None:
        for fm in fits:
            cache.put(fm)
    return fits
