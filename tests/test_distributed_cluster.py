"""Distributed MADDPG joining an existing multi-node Ray cluster (``distributed.address``, the CLI's
``--ray-address``): a 2-node ``ray.cluster_utils.Cluster`` on this machine, one CPU per node, so that
the two data-parallel replicas (one CPU each) must run on different nodes and all-reduce across them.

The nodes listen on 127.0.0.2, a loopback alias: Ray rewrites 127.0.0.1 / localhost in a cluster
address to the machine's outward IP, where nodes started on 127.0.0.1 do not listen."""

import os

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from maestro.distributed import ray_utils  # noqa: E402
from maestro.recipes import load_recipe, train_recipe  # noqa: E402
from test_distributed import RECIPE  # noqa: E402  (the tiny simple_tag MADDPG recipe)

pytestmark = pytest.mark.xdist_group("ray")  # never beside another Ray of this test session


@pytest.fixture
def two_nodes():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.2"})
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.2")
    try:
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


def test_data_parallel_replicas_on_two_nodes(two_nodes, tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(RECIPE)
    recipe = load_recipe(p, ["distributed.mode=data", "distributed.worker_cpus=1", f"distributed.address={two_nodes.address}"])
    res = train_recipe(recipe, tmp_path / "runs")
    assert res.env_steps >= 320 and res.checkpoint is not None
    assert not ray.is_initialized()  # the run disconnected from the cluster it joined...
    assert len(two_nodes.list_all_nodes()) == 2  # ...and left the cluster itself running
    assert not ray_utils.ACTIVE
    # each replica reserved the single CPU of a node, so they ran on different nodes; both logged
    logs = sorted((res.dir / "workers").glob("replica*.log"))
    assert [q.name for q in logs] == ["replica0.log", "replica1.log"]
