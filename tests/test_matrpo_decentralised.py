"""MATRPO with an actor per agent on a real local Ray (distributed.mode=decentralised): the same seed
gives the in-process run's parameters bit for bit, even with an agent killed (SIGKILL) mid-run and
restarted; in an ADMM round only log-ratio vectors cross, each to the neighbour on its edge; before
the rounds, for pooled advantage statistics (the default), three numbers from each agent and two back,
and nothing with each agent's own statistics."""

import json
import os
import signal

import pytest
import torch

ray = pytest.importorskip("ray")

from maestro.core.checkpoint import latest_valid  # noqa: E402
from maestro.core.consensus import ring_graph  # noqa: E402
from maestro.distributed import decentralised, ray_utils  # noqa: E402
from maestro.recipes import load_recipe, train_recipe  # noqa: E402

RECIPE = """
name: tiny_matrpo
env: simple_spread
env_config: {n_agents: 3, reward: agent0, max_cycles: 8}
algo: matrpo
algo_config: {rollout_steps: 4, hidden: [8], vf_epochs: 1, vf_minibatch: 4, admm_rounds: 6, max_kl: 0.01}
seed: 3
run: {env_steps: 48, num_envs: 4, eval_every: 0, eval_episodes: 2, checkpoint_every: 0, tensorboard: false, progress: false}
distributed: {mode: decentralised}
"""
M, N, B, D = 16, 3, 4, 18

pytestmark = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One in-process run and one decentralised run whose agent 1 is killed after iteration 1."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        tmp = tmp_path_factory.mktemp("matrpo_ray")
        path = tmp / "tiny.yaml"
        path.write_text(RECIPE)
        killed = {"pid": None}

        def kill_agent_1(run):
            if run.iteration == 1 and killed["pid"] is None:
                killed["pid"] = ray_utils.ACTIVE[-1].pids()[1]
                decentralised.COURIERS[-1].keep = True
                os.kill(killed["pid"], signal.SIGKILL)

        alone = train_recipe(load_recipe(path, ["distributed.mode=off"]), tmp / "in_process")
        apart = train_recipe(load_recipe(path), tmp / "decentralised", hooks=(kill_agent_1,))
        courier = decentralised.COURIERS[-1]
        own = ["algo_config.advantage_norm=agent"]
        own_alone = train_recipe(load_recipe(path, ["distributed.mode=off", *own]), tmp / "own_in_process")
        own_apart = train_recipe(load_recipe(path, own), tmp / "own_decentralised")
        yield alone, apart, killed, courier, (own_alone, own_apart, decentralised.COURIERS[-1])
    finally:
        ray.shutdown()


def _weights(res):
    _, payload, _ = latest_valid(res.dir / "checkpoints")
    return payload["state"]["policy"]["weights"]["theta"]


def test_same_seed_same_parameters_with_a_killed_agent_restarted(runs):
    alone, apart, killed, *_ = runs
    assert killed["pid"] is not None and apart.env_steps == alone.env_steps == 48
    assert torch.equal(_weights(alone), _weights(apart))
    rows = [json.loads(line) for line in (apart.dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["dist/restarts"] for r in rows if "dist/restarts" in r] == [0.0, 1.0, 1.0]
    assert "rolls back and the iteration runs again" in (apart.dir / "log.txt").read_text()
    assert sorted(p.name for p in (apart.dir / "agents").iterdir())[:2] == ["agent0-2.pt", "agent0-3.pt"]


def test_only_log_ratios_cross_in_the_admm_rounds(runs):
    _, _, _, courier, _ = runs
    log = courier.log  # the last iteration's calls
    methods = [entry[0] for entry in log]
    first, last = methods.index("local_step"), methods.index("finish")
    assert set(methods[:first]) == {"act", "prepare", "linearise"}
    assert set(methods[last:]) == {"finish", "state"}  # "state": the checkpoint and the returned policy gather the agents' parameters
    rounds = log[first:last]
    assert {m for m, *_ in rounds} == {"local_step", "exchange"}
    for method, agent, args, result in rounds:
        if method == "local_step":  # nothing sent; the agent's log-ratios (M, N) come back
            assert args == () and result == ("tensor", (M, N))
        else:  # the neighbour's log-ratios on an edge of the agent's, nothing back
            assert len(args) == 2 and isinstance(args[0], int) and args[1] == ("tensor", (M, N)) and result is True
    # each agent receives exactly what its neighbour on that edge sent in the same step
    kept = [k for k in courier.kept if k[0] in ("local_step", "exchange")][-(last - first):]
    sent = {}
    for method, agent, args, result in kept:
        if method == "local_step":
            sent[agent] = result
        else:
            edge = ring_graph(N).edges[args[0]].tolist()
            neighbour = edge[1] if edge[0] == agent else edge[0]
            assert agent in edge and torch.equal(args[1], sent[neighbour])
    # what an agent is given outside the rounds: its own observation and uniform draws, then its own
    # reached observations and rewards, the episode ends and the joint actions
    acts = [a for m, _, a, _ in log[:first] if m == "act"]
    assert all(a[1:] == (("tensor", (B, D)), ("tensor", (B, 5))) for a in acts)
    prepares = [a for m, _, a, _ in log[:first] if m == "prepare"]
    assert prepares and all(a == (("tensor", (4, B, D)), ("tensor", (4, B)), ("tensor", (4, B)), ("tensor", (4, B)), ("tensor", (4, B, N))) for a in prepares)

    # the pooled advantage statistics (the default): three numbers from each agent, two back
    prepared = [r for m, _, _, r in log[:first] if m == "prepare"]
    assert len(prepared) == N and all(set(r) == {"value_loss", "moments"} and r["moments"] == ("tensor", (3,)) for r in prepared)
    sent = [a for m, _, a, _ in log[:first] if m == "linearise"]
    assert len(sent) == N and all(len(a) == 2 and all(isinstance(v, float) for v in a) for a in sent) and len(set(sent)) == 1


def test_own_advantage_statistics_cross_nothing_and_give_the_in_process_parameters(runs):
    pooled, *_, (alone, apart, courier) = runs
    assert apart.env_steps == alone.env_steps == 48
    assert torch.equal(_weights(alone), _weights(apart))
    assert not torch.equal(_weights(alone), _weights(pooled)), "the statistics change the run"
    log = courier.log
    assert [r for m, _, _, r in log if m == "prepare"] == [{"value_loss": r["value_loss"]} for m, _, _, r in log if m == "prepare"]
    linearises = [(a, r) for m, _, a, r in log if m == "linearise"]
    assert len(linearises) == N and all(a == () and r is True for a, r in linearises), "own statistics: nothing crosses"
