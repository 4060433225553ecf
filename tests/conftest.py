"""Shared fixtures: a small synthetic cohort and a small synthetic image cohort, each made once
per test session (when a test first asks for it)."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

# Under pytest-xdist (``-n auto --dist loadfile``, the README's test command: one worker per
# core, each file's tests on one worker so its module fixtures are made once) each worker runs
# torch on one thread, rather than every worker on as many threads as there are cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory):
    """A 24-patient synthetic cohort with small bags (path to its cohort.csv)."""
    from radiopath.datasets import make_synthetic_cohort

    out = tmp_path_factory.mktemp("small_cohort")
    return make_synthetic_cohort(
        out,
        n_patients=24,
        dim=8,
        wsi_patches=(120, 240),
        ct_patches=(80, 160),
        seed=3,
        progress=False,
    )


@pytest.fixture
def one_thread():
    """Torch on one thread for the test (small graphs train faster, and the CI machine is
    shared); the sub-folders that want it for every test request it from an autouse fixture."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fast_benchmark():
    """The settings of a quick benchmark run (two aggregators, two models, three folds, two
    epochs, the torch backend), a fresh dict for each test."""
    return {
        "aggregators": ["sparra", "mean"],
        "models": ["coxph", "fsvm"],
        "folds": 3,
        "train": {"epochs": 2, "batch_size": 8},
        "evaluation": {"backend": "torch", "cv": {"n_splits": 3}},
    }


@pytest.fixture(scope="session")
def small_graphs(small_cohort, tmp_path_factory):
    """Folder of graphs (with manifest.csv) for the session's small cohort."""
    from radiopath.graph import build_cohort_graphs

    out = tmp_path_factory.mktemp("small_graphs")
    build_cohort_graphs(small_cohort, out, progress=False)
    return out


@pytest.fixture(scope="session")
def image_cohort(tmp_path_factory):
    """A small synthetic image cohort (path to its cohort.csv)."""
    from radiopath.synthetic_images import make_synthetic_image_cohort

    out = tmp_path_factory.mktemp("image_cohort")
    return make_synthetic_image_cohort(
        out, n_patients=8, slide_size=768, ct_shape=(40, 40, 24), seed=5, progress=False
    )


@pytest.fixture(scope="session")
def extracted_cohort(image_cohort, tmp_path_factory):
    """The image cohort through ``extract_cohort`` with the hand-crafted encoder."""
    from radiopath.extract import extract_cohort
    from radiopath.synthetic_images import IMAGE_MODE_EXTRACT

    out = tmp_path_factory.mktemp("extracted")
    return extract_cohort(image_cohort, out, progress=False, **IMAGE_MODE_EXTRACT)


@pytest.fixture()
def finished_run(small_cohort, small_graphs, tmp_path):
    """``(run, out)``: ``run(**kw)`` trains (or resumes) a quick two-fold ABMIL run of the
    small cohort in ``out`` (the test's ``tmp_path``)."""
    from radiopath.training import train_cross_validated

    def run(**kw):
        return train_cross_validated(
            small_cohort,
            small_graphs,
            aggregator="abmil",
            modalities="wsi",
            out_dir=tmp_path,
            config={"epochs": 2, "folds": 2, "batch_size": 8, "hidden": 16},
            progress=False,
            **kw,
        )

    return run, tmp_path


def nothing_in(out) -> bool:
    """Whether the output folder ``out`` is absent or empty."""
    return not out.exists() or not any(out.iterdir())


@contextmanager
def _refused_quickly(field: str, out=None, path=None, seconds: float = 2.0):
    """Expect a :class:`RadiopathInputError` naming ``field`` (and the file ``path``) raised
    within ``seconds``, with the output folder ``out`` absent or empty afterwards."""
    from radiopath.errors import RadiopathInputError

    start = time.perf_counter()
    with pytest.raises(RadiopathInputError) as err:
        yield err
    elapsed = time.perf_counter() - start
    assert err.value.field == field, str(err.value)
    assert path is None or err.value.path == str(path), str(err.value)
    assert elapsed < seconds, f"refused after {elapsed:.2f} s: {err.value}"
    assert out is None or nothing_in(out)


@pytest.fixture
def refused_quickly():
    """``with refused_quickly(field, out, path): ...`` (see :func:`_refused_quickly`)."""
    return _refused_quickly


@pytest.fixture
def cli_refused_quickly():
    """``cli_refused_quickly(args, field, out, path)``: the command line ``args`` exits with
    status 2 within 2 s, its message naming ``field`` (and the file ``path``), and writes
    nothing to ``out``."""
    from click.testing import CliRunner

    from radiopath.cli import main

    def run(args, field, out, path=None):
        start = time.perf_counter()
        result = CliRunner().invoke(main, [str(a) for a in args])
        elapsed = time.perf_counter() - start
        assert result.exit_code == 2, result.output
        where = f"field '{field}'" if path is None else f"file '{path}', field '{field}'"
        assert where in result.output, result.output
        assert elapsed < 2.0, f"refused after {elapsed:.2f} s: {result.output}"
        assert nothing_in(out)
        return result.output

    return run
