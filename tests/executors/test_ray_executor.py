"""Every stage that fans out, on a local Ray instance (``ray.init(address="local",
num_cpus=2)``): the same files as a local run, a killed worker retried, an interrupted stage
resumed without recomputing finished units, a bad input reported and skipped once."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
import ray_helpers
from ray_helpers import (
    Wrapped,
    counted,
    dies_once,
    make_state,
    square,
    tree_differences,
    with_state,
)

from radiopath.errors import RadiopathInputError
from radiopath.evaluation import evaluate_folds, evaluate_run
from radiopath.executors import open_executor
from radiopath.graph import build_cohort_graphs
from radiopath.io import read_cohort
from radiopath.training import train_cross_validated

ray = pytest.importorskip("ray")

TRAIN = {"epochs": 2, "batch_size": 8, "folds": 3}


@pytest.fixture(scope="module")
def ray_executor():
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    # the test's own unit wrappers travel by value (the workers cannot import this folder)
    ray.cloudpickle.register_pickle_by_value(ray_helpers)
    with open_executor("ray") as ex:  # joins the session above and leaves it running
        yield ex
    ray.shutdown()


def train(cohort, graphs, out, executor=None, **kwargs):
    return train_cross_validated(
        cohort,
        graphs,
        aggregator="sparra",
        modalities="wsi,ct",
        out_dir=out,
        config=TRAIN,
        progress=False,
        executor=executor,
        **kwargs,
    )


@pytest.fixture(scope="module")
def local_run(small_cohort, small_graphs, tmp_path_factory):
    out = tmp_path_factory.mktemp("local_run")
    train(small_cohort, small_graphs, out)
    return out


@pytest.fixture(scope="module")
def small_graphs(small_cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("graphs")
    build_cohort_graphs(small_cohort, out, progress=False)
    return out


def test_unit_errors_are_reported_once_and_lost_workers_retried(ray_executor, tmp_path):
    log = tmp_path / "calls.log"
    counting = Wrapped(ray_executor, counted(log))
    done = sorted(counting.map_unordered(square, [(2,), (-1,)]), key=lambda d: d.index)
    assert done[0].result() == 4 and isinstance(done[1].error, RadiopathInputError)
    assert len(log.read_text().splitlines()) == 2  # the bad unit ran once, no retry
    # a task, then an actor: the worker dies once mid-unit, Ray runs the unit again
    marker = tmp_path / "killed-task"
    killer = Wrapped(ray_executor, dies_once(marker))
    assert [d.result() for d in killer.map_unordered(square, [(3,)])] == [9] and marker.exists()
    marker = tmp_path / "killed-actor"
    killer = Wrapped(ray_executor, dies_once(marker))
    done = list(killer.map_unordered(with_state, [(3,)], shared={"base": 10}, setup=make_state))
    assert done[0].result()[0] == 13 and marker.exists()


@pytest.mark.slow
def test_graphs_on_ray_are_the_local_files_and_bad_files_are_skipped_alike(
    ray_executor, small_cohort, tmp_path
):
    shutil.copytree(small_cohort.parent, tmp_path / "cohort")
    cohort = read_cohort(tmp_path / "cohort" / "cohort.csv", check_files=False)
    with h5py.File(cohort.patients[1].files["wsi"][0], "r+") as fh:
        fh["features"][0, 0] = np.nan  # found by the worker that reads it
    cohort.patients[2].files["ct"][0].unlink()  # found before any unit runs
    local = build_cohort_graphs(cohort, tmp_path / "local", progress=False)
    on_ray = build_cohort_graphs(cohort, tmp_path / "ray", progress=False, executor=ray_executor)
    pd.testing.assert_frame_equal(local, on_ray, check_exact=True)
    assert len(local.attrs["failed"]) == 2 and len(local) == 46
    assert tree_differences(tmp_path / "local", tmp_path / "ray") == []
    with pytest.raises(RadiopathInputError, match="cannot read .features.|NaN or inf"):
        build_cohort_graphs(cohort, tmp_path / "s", strict=True, executor=ray_executor)


def test_training_on_ray_writes_the_local_files(
    ray_executor, small_cohort, small_graphs, local_run, tmp_path
):
    result = train(small_cohort, small_graphs, tmp_path, ray_executor)
    assert tree_differences(local_run, tmp_path) == []  # checkpoints and maps to the byte
    assert list(result.fold_c_index) == [0, 1, 2]


def test_in_memory_graphs_are_shipped_to_the_workers(ray_executor, small_cohort, tmp_path):
    local = train(small_cohort, None, tmp_path / "local")
    on_ray = train(small_cohort, None, tmp_path / "ray", ray_executor)
    assert local.fold_c_index == on_ray.fold_c_index
    assert tree_differences(tmp_path / "local", tmp_path / "ray") == []


@pytest.mark.slow
def test_killed_worker_is_retried_with_the_same_files(
    ray_executor, small_cohort, small_graphs, local_run, tmp_path
):
    marker = tmp_path / "killed"
    # the first fold's worker dies after writing everything, before returning its result
    killer = Wrapped(ray_executor, dies_once(marker, after=True))
    train(small_cohort, small_graphs, tmp_path / "run", killer)
    assert marker.exists()
    assert tree_differences(local_run, tmp_path / "run") == []


def _settled(folder, quiet_s: float = 3.0, limit_s: float = 90.0) -> list:
    """The finished folds' ``done.json`` once no file under ``checkpoints/`` has been
    written for ``quiet_s`` seconds: a cancel reaches a Ray worker asynchronously (at its
    next Python bytecode), so a cancelled fold may still write a checkpoint or finish."""
    import time

    def state():
        return sorted((p.name, p.stat().st_mtime_ns) for p in folder.glob("checkpoints/*"))

    seen, since, start = None, time.monotonic(), time.monotonic()
    while time.monotonic() - start < limit_s:
        now = state()
        if now != seen:
            seen, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
        time.sleep(0.2)
    return sorted(folder.glob("checkpoints/fold_*.done.json"))


def test_interrupted_training_resumes_without_recomputing(
    ray_executor, small_cohort, small_graphs, local_run, tmp_path
):
    """Interrupted after its first unit (one member of a fold's ensemble), the run resumes
    without submitting the members that finished, leaves their checkpoints untouched and
    ends with the uninterrupted run's files."""
    from radiopath.training.config import resolve_training_config
    from radiopath.training.ensemble import member_finished

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(small_cohort, small_graphs, out, Wrapped(ray_executor, stop_after=1))
    _settled(out)
    cfg = resolve_training_config(TRAIN)
    members = [(k, i) for k in range(3) for i in range(cfg.ensemble)]
    finished = [(k, i) for k, i in members if member_finished(out, k, i, cfg)]
    assert len(finished) >= 1
    paths = [out / "checkpoints" / (f"fold_{k}.member_{i}.pt" if i else f"fold_{k}.pt")
             for k, i in finished]  # fmt: skip
    stamps = {p: p.stat().st_mtime_ns for p in paths}
    again = Wrapped(ray_executor)
    train(small_cohort, small_graphs, out, again)
    assert again.submitted == len(members) - len(finished) + 3  # the rest, then 3 folds
    assert {p: p.stat().st_mtime_ns for p in paths} == stamps
    assert tree_differences(local_run, out) == []


@pytest.mark.slow
def test_evaluation_on_ray_equals_local(ray_executor, local_run, tmp_path):
    from radiopath.io import read_fold_embeddings

    folds = [read_fold_embeddings(p) for p in sorted(local_run.glob("embeddings/fold_*.npz"))]
    settings = {"aggregator": "sparra", "modalities": "wsi+ct", "config": {"cv": {"n_splits": 3}}}
    for backend, models in (("sksurv", ["coxph", "fsvm"]), ("torch", ["coxph", "coxnet"])):
        local = evaluate_folds(folds, models=models, backend=backend, **settings)
        on_ray = evaluate_folds(
            folds, models=models, backend=backend, executor=ray_executor, **settings
        )
        for name in ("predictions", "metrics", "selection"):
            pd.testing.assert_frame_equal(
                getattr(local, name), getattr(on_ray, name), check_exact=True
            )
    for name in ("local", "ray"):
        shutil.copytree(local_run, tmp_path / name)
    config = {"cv": {"n_splits": 3}}
    evaluate_run(tmp_path / "local", models=["coxph", "fsvm"], config=config)
    evaluate_run(tmp_path / "ray", models=["coxph", "fsvm"], config=config, executor=ray_executor)
    assert tree_differences(tmp_path / "local", tmp_path / "ray") == []


@pytest.mark.slow
def test_extraction_actors_write_the_local_files(ray_executor, tmp_path):
    from radiopath.extract import extract_cohort
    from radiopath.synthetic_images import IMAGE_MODE_EXTRACT, make_synthetic_image_cohort

    images = make_synthetic_image_cohort(
        tmp_path / "images",
        n_patients=4,
        slide_size=512,
        ct_shape=(32, 32, 16),
        seed=2,
        progress=False,
    )
    (tmp_path / "images" / pd.read_csv(images)["ct_image"][1]).unlink()
    local = extract_cohort(images, tmp_path / "local", progress=False, **IMAGE_MODE_EXTRACT)
    on_ray = extract_cohort(
        images, tmp_path / "ray", progress=False, executor=ray_executor, **IMAGE_MODE_EXTRACT
    )
    assert local.read_bytes() == on_ray.read_bytes()
    report = pd.read_csv(tmp_path / "ray" / "extract_report.csv")
    assert list(report.status) == ["ok", "ok", "ok", "failed"] + ["ok"] * 4
    assert tree_differences(tmp_path / "local", tmp_path / "ray") == []


@pytest.mark.slow
def test_sweep_points_on_ray_write_the_local_files(ray_executor, small_cohort, tmp_path):
    from radiopath.sweep import run_sweep

    exp = tmp_path / "exp.yaml"
    exp.write_text(
        "name: t\nbase:\n  aggregators: [mean]\n  models: [coxph]\n  folds: 3\n"
        "  train: {epochs: 1, batch_size: 8}\n  evaluation: {backend: torch, cv: {n_splits: 3}}\n"
        "grid:\n  train.ratio: [0.2, 0.5]\n"
    )
    # one output path for both (the points' ledgers hash their shared graph folder's path)
    run_sweep(exp, small_cohort, tmp_path / "sweep", progress=False)
    (tmp_path / "sweep").rename(tmp_path / "local")
    run_sweep(exp, small_cohort, tmp_path / "sweep", progress=False, executor=ray_executor)
    assert tree_differences(tmp_path / "local", tmp_path / "sweep") == []
