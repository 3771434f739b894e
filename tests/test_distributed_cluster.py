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

pytestmark = pytest.mark.xdist_group("ray")  # never beside another Ray of this test session

RECIPE = """
name: tiny_cluster
env: simple_tag
env_config: {max_cycles: 10, continuous_actions: true}
algo: maddpg
algo_config: {hidden: [16, 16], batch_size: 32, warmup_steps: 64, update_every: 8, updates_per_step: 0.25,
              buffer_size: 5000, epsilon: 0.1, noise_rate: 0.1, checkpoint_replay: false}
seed: 0
run: {env_steps: 320, num_envs: 4, eval_every: 0, eval_episodes: 4, checkpoint_every: 160, tensorboard: false, progress: false}
distributed: {mode: data, workers: 2, worker_cpus: 1}
"""


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
    recipe = load_recipe(p, [f"distributed.address={two_nodes.address}"])
    res = train_recipe(recipe, tmp_path / "runs")
    assert res.env_steps >= 320 and res.checkpoint is not None
    assert not ray.is_initialized()  # the run disconnected from the cluster it joined...
    assert len(two_nodes.list_all_nodes()) == 2  # ...and left the cluster itself running
    assert not ray_utils.ACTIVE
    # each replica reserved the single CPU of a node, so they ran on different nodes; both logged
    logs = sorted((res.dir / "workers").glob("replica*.log"))
    assert [q.name for q in logs] == ["replica0.log", "replica1.log"]
