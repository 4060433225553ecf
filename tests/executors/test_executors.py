"""The executor interface: settings checked up front, the local executor (in this process
and as a pool), no Ray import on the local path, and clear refusals of a missing ``ray``
package or an address no cluster answers on."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from ray_helpers import make_state, square, with_state

from radiopath.cli import main
from radiopath.errors import RadiopathInputError
from radiopath.executors import (
    ExecutorConfig,
    LocalExecutor,
    open_executor,
    resolve_executor_config,
)


def _graphs_command(cohort, out, *flags):
    return CliRunner().invoke(main, ["graphs", "--cohort", str(cohort), "--out", str(out), *flags])


@pytest.mark.parametrize(
    "value, field, message",
    [
        ({"name": "dask"}, "executor.name", "unknown executor 'dask'"),
        ({"name": "ray", "adress": "auto"}, "executor.adress", "did you mean 'address'"),
        ({"name": "local", "address": "auto"}, "executor.address", "only for the ray executor"),
        ({"name": "ray", "workers": 0}, "executor.workers", "integer >= 1"),
        ({"name": "ray", "gpus_per_task": -1}, "executor.gpus_per_task", ">= 0"),
        (3, "executor", "a name"),
    ],
)
def test_settings_are_checked_naming_the_key(value, field, message):
    with pytest.raises(RadiopathInputError, match=message) as info:
        resolve_executor_config(value)
    assert info.value.field == field


def test_settings_fill_defaults():
    assert resolve_executor_config(None) == ExecutorConfig()
    cfg = resolve_executor_config({"name": "ray", "address": "auto", "gpus_per_task": 1})
    assert (cfg.name, cfg.address, cfg.gpus_per_task, cfg.max_retries) == ("ray", "auto", 1.0, 3)
    assert resolve_executor_config("ray").as_dict()["name"] == "ray"


def test_missing_ray_package_is_named_before_any_work(monkeypatch, small_cohort, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    with pytest.raises(RadiopathInputError, match=r"needs the 'ray' package.*radiopath\[ray\]"):
        open_executor("ray")
    result = _graphs_command(small_cohort, tmp_path / "g", "--executor", "ray")
    assert result.exit_code == 2 and "'ray' package" in result.output
    assert not (tmp_path / "g").exists()


def test_local_executor_in_process_and_as_a_pool_agree():
    tasks = [(3,), (-1,), (5,)]
    for workers in (1, 2):
        ex = LocalExecutor(ExecutorConfig(workers=workers))
        done = sorted(ex.map_unordered(square, tasks, shared={"offset": 1}), key=lambda d: d.index)
        assert [d.value for d in done] == [10, None, 26]
        assert isinstance(done[1].error, RadiopathInputError)
        with pytest.raises(RadiopathInputError, match="negative input"):
            done[1].result()
        stateful = list(
            ex.map_unordered(with_state, [(1,), (2,)], shared={"base": 10}, setup=make_state)
        )
        assert sorted(d.value[0] for d in stateful) == [11, 12]
        in_this_process = all(d.value[1] == os.getpid() for d in stateful)
        assert in_this_process == (workers == 1) and ex.remote == (workers > 1)


def test_local_path_never_imports_ray(small_cohort, tmp_path):
    code = (
        "import sys\n"
        "from radiopath.cli import main\n"
        "from radiopath.graph import build_cohort_graphs\n"
        f"build_cohort_graphs({str(small_cohort)!r}, {str(tmp_path / 'g')!r}, progress=False,"
        " executor='local')\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unreachable_address_is_refused_naming_it(small_cohort, tmp_path):
    pytest.importorskip("ray")
    tic = time.perf_counter()
    with pytest.raises(
        RadiopathInputError, match=r"cannot reach a Ray cluster at '127\.0\.0\.1:1'"
    ):
        open_executor({"name": "ray", "address": "127.0.0.1:1"})
    with pytest.raises(RadiopathInputError, match="HOST:PORT"):
        open_executor({"name": "ray", "address": "nowhere"})
    result = _graphs_command(small_cohort, tmp_path / "g", "--address", "127.0.0.1:1")
    assert result.exit_code == 2 and "127.0.0.1:1" in result.output
    assert not (tmp_path / "g").exists()
    assert time.perf_counter() - tic < 30


@pytest.mark.slow
def test_training_folds_in_a_local_pool_write_the_same_files(small_cohort, tmp_path):
    from ray_helpers import tree_differences

    from radiopath.training import train_cross_validated

    for name, executor in (("serial", None), ("pool", {"name": "local", "workers": 2})):
        train_cross_validated(
            small_cohort,
            None,
            aggregator="mean",
            modalities="wsi,ct",
            out_dir=tmp_path / name,
            config={"epochs": 2, "batch_size": 8, "folds": 3},
            progress=False,
            executor=executor,
        )
    assert tree_differences(tmp_path / "serial", tmp_path / "pool") == []
