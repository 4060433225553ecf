"""A whole benchmark on a simulated two-node Ray cluster (``ray.cluster_utils.Cluster``, one
CPU per node) writes the files of a local run; without an address, a run beside that cluster
starts a Ray instance of its own."""

from __future__ import annotations

import pytest
from ray_helpers import tree_differences

from radiopath.benchmark import run_benchmark

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def two_nodes():
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    if ray.is_initialized():
        ray.shutdown()
    cluster.shutdown()


@pytest.mark.slow
def test_benchmark_on_two_nodes_writes_the_local_files(
    fast_benchmark, two_nodes, small_cohort, tmp_path
):
    # same folder names: the report is titled by its folder's name
    local = run_benchmark(small_cohort, tmp_path / "local" / "run", fast_benchmark, progress=False)
    executor = {"name": "ray", "address": two_nodes.address}
    on_ray = run_benchmark(
        small_cohort,
        tmp_path / "ray" / "run",
        {**fast_benchmark, "executor": executor},
        progress=False,
    )
    assert len(two_nodes.list_all_nodes()) == 2
    assert not ray.is_initialized()  # the benchmark connected, and disconnected at its end
    assert local.metrics.equals(on_ray.metrics)
    assert tree_differences(tmp_path / "local" / "run", tmp_path / "ray" / "run") == []


@pytest.mark.slow
def test_without_an_address_the_executor_starts_its_own_instance_beside_a_cluster(
    two_nodes, monkeypatch
):
    """No address and no ``RAY_ADDRESS``: a new Ray instance with ``workers`` CPUs, even while
    a cluster runs on this machine (a bare ``ray.init(num_cpus=...)`` would join that cluster
    and refuse the CPU count)."""
    from radiopath.executors.config import resolve_executor_config
    from radiopath.executors.ray_executor import connect

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not ray.is_initialized()
    assert connect(resolve_executor_config({"name": "ray", "workers": 1}))
    try:
        assert ray.cluster_resources().get("CPU") == 1  # its own node, not the cluster's two
        assert len(ray.nodes()) == 1
    finally:
        ray.shutdown()
    assert len(two_nodes.list_all_nodes()) == 2  # the cluster is untouched
