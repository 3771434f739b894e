"""Distributed MADDPG on a real local Ray (papers/002): the split update equals ``maddpg.update``; every
mode runs end to end through the recipe switch and resumes; data-parallel replicas stay bit-identical;
the genetic sync copies exactly the best worker's critics and target critics and never the actors; a
worker killed with SIGKILL is restarted and the run completes; exhausted restarts stop the run with a
clear error and a valid checkpoint."""

import copy
import json
import os
import signal

import pytest
import torch

ray = pytest.importorskip("ray")

from maestro.algos import maddpg as M  # noqa: E402
from maestro.core.checkpoint import latest_valid  # noqa: E402
from maestro.distributed import WorkerLostError, ray_utils  # noqa: E402
from maestro.distributed.common import apply_grads, make_learner, make_worker_env, tree_mean  # noqa: E402
from maestro.envs.particle.simple_tag import TagConfig  # noqa: E402
from maestro.recipes import load_recipe, resume_run, train_recipe  # noqa: E402

RECIPE = """
name: tiny_dist
env: simple_tag
env_config: {max_cycles: 10, continuous_actions: true}
algo: maddpg
algo_config: {hidden: [16, 16], batch_size: 32, warmup_steps: 64, update_every: 8, updates_per_step: 0.25,
              buffer_size: 5000, epsilon: 0.1, noise_rate: 0.1, checkpoint_replay: false}
seed: 0
run: {env_steps: 320, num_envs: 4, eval_every: 0, eval_episodes: 4, checkpoint_every: 160, tensorboard: false, progress: false}
distributed: {mode: genetic, workers: 2, critic_sync_rate: 40}
"""


# One local Ray per test module, and every test of the module on the same xdist worker (--dist loadgroup).
pytestmark = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


@pytest.fixture
def recipe_file(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(RECIPE)
    return p


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------- pure: the split update
def test_data_parallel_update_path_equals_maddpg_update():
    """The replica path of mode=data (critic grads -> averaged -> apply_grads, actor grads -> averaged ->
    apply_grads, soft updates) with one replica equals ``maddpg.update``, bit for bit."""
    cfg = M.Config(hidden=(16, 16), batch_size=16, warmup_steps=0, epsilon=0.1, noise_rate=0.1)
    a = make_learner(cfg, "simple_tag", TagConfig(max_cycles=10, continuous_actions=True), 4, 0, "cpu", True, 1000)
    a.run_steps(20, updates=False)
    b = copy.deepcopy(a)
    M.update(cfg, a.policy, a.nets, a.opts, a.buf, a.lay, True, a.generator)
    d = M._learner_batch(b.buf, b.lay, cfg.batch_size, b.generator)
    critic_params, actor_params = list(b.nets.critic.parameters()), list(b.policy.actors.parameters())
    loss, _ = M.critic_loss(cfg, b.policy, b.nets, b.lay, d, True, b.generator)
    b.opts["critic"].zero_grad(set_to_none=True)
    loss.backward()
    apply_grads(critic_params, tree_mean([[p.grad for p in critic_params]]), b.opts["critic"], cfg.max_grad_norm)
    loss = M.actor_loss(cfg, b.policy, b.nets, b.lay, d, True, b.generator)
    b.opts["actor"].zero_grad(set_to_none=True)
    loss.backward()
    groups = [list(b.policy.actors[g].parameters()) for g in b.lay.trained]
    apply_grads(actor_params, tree_mean([[p.grad for p in actor_params]]), b.opts["actor"], cfg.max_grad_norm, groups)
    M.soft_update(b.nets.target_critic, b.nets.critic, cfg.tau)
    M.soft_update(b.nets.target_actors, b.policy.actors, cfg.tau)
    for x, y in zip(list(a.policy.parameters()) + list(a.nets.parameters()), list(b.policy.parameters()) + list(b.nets.parameters())):
        assert torch.equal(x, y)


# ---------------------------------------------------------------------- every mode, end to end
@pytest.mark.parametrize("mode", ["genetic", "data", "model", "model_sampler"])
def test_mode_runs_and_resumes(local_ray, recipe_file, tmp_path, mode):
    recipe = load_recipe(recipe_file, [f"distributed.mode={mode}"])
    res = train_recipe(recipe, tmp_path / "runs")
    assert res.env_steps >= 320 and res.checkpoint is not None
    rows = [r for r in _metrics(res.dir) if "train/episodes" in r]
    assert rows and any("loss/critic" in r for r in rows)
    assert (res.dir / "workers").is_dir()  # the workers' logs live in the run directory
    _, payload, _ = latest_valid(res.dir / "checkpoints")
    assert "policy" in payload["state"]
    obs = res.policy.act(make_worker_env("simple_tag", recipe.env_config, 3, 1, "cpu").reset())[0]
    assert obs["adversary"].shape == (3, 3, 5)
    assert not ray_utils.ACTIVE  # every worker was terminated
    if mode == "data":
        _check_replicas_identical(payload)
    if mode in ("genetic", "data"):
        res2 = resume_run(res.dir, ["run.env_steps=480"])
        assert res2.env_steps >= 480 and res2.checkpoint.name.endswith("480.pt")


def _check_replicas_identical(payload):
    """Data-parallel replicas are bit-identical after several updates (exact equality)."""
    r0, r1 = payload["state"]["replicas"]
    assert r0["counters"]["updates"] == r1["counters"]["updates"] >= 5  # several synchronous updates happened
    for part in ("nets",):
        for k in r0[part]:
            assert torch.equal(r0[part][k], r1[part][k]), k
    for k in r0["policy"]["weights"]:
        assert torch.equal(r0["policy"]["weights"][k], r1["policy"]["weights"][k]), k
    s0, s1 = r0["opts"]["critic"]["state"], r1["opts"]["critic"]["state"]
    for i in s0:
        assert torch.equal(s0[i]["exp_avg_sq"], s1[i]["exp_avg_sq"])
    # ...while their env copies (own seeds) differ
    assert not torch.equal(r0["cur"]["obs"]["adversary"], r1["cur"]["obs"]["adversary"])


def test_genetic_sync_copies_best_critics_never_actors(local_ray, recipe_file, tmp_path):
    # sync every iteration (10 steps x 4 copies): the final checkpoint is taken right after a sync
    recipe = load_recipe(recipe_file, ["distributed.workers=3", "distributed.critic_sync_rate=40"])
    res = train_recipe(recipe, tmp_path / "runs")
    rows = [r for r in _metrics(res.dir) if "sync/best_worker" in r]
    assert [r["iteration"] for r in rows] == [1, 2, 3]  # 3 workers x 40 env steps per iteration
    last = rows[-1]
    scores = [last.get(f"sync/score/worker{k}", float("-inf")) for k in range(3)]
    best = int(last["sync/best_worker"])
    assert scores[best] == max(scores) and best == scores.index(max(scores))
    _, payload, _ = latest_valid(res.dir / "checkpoints")
    ws = payload["state"]["workers"]
    for k in range(3):
        for key in ws[best]["nets"]:
            same = torch.equal(ws[k]["nets"][key], ws[best]["nets"][key])
            if key.startswith(("critic.", "target_critic.")):
                assert same, (k, key)  # critics AND target critics are the best worker's
            elif key.startswith("target_actors.") and k != best:
                assert not same, (k, key)  # target actors never synced
        if k != best:
            for key, v in ws[k]["policy"]["weights"].items():
                if key.startswith("actors."):  # (the Box bounds are buffers, equal everywhere)
                    assert not torch.equal(v, ws[best]["policy"]["weights"][key])  # actors never synced
    assert payload["state"]["policy"]["weights"].keys() == ws[best]["policy"]["weights"].keys()


def test_adaptive_sync_interval_grows(local_ray, recipe_file, tmp_path):
    recipe = load_recipe(recipe_file, ["distributed.sync_growth=2.0", "distributed.critic_sync_rate=10", "algo_config.iteration_steps=5", "run.env_steps=320", "run.checkpoint_every=0"])
    res = train_recipe(recipe, tmp_path / "runs")
    rows = [r for r in _metrics(res.dir) if "sync/count" in r]
    # 8 iterations of 20 env steps per worker (2 workers); intervals 10, 20, 40, 80 -> syncs after iterations 1, 2, 4, 8
    assert [r["iteration"] for r in rows] == [1, 2, 4, 8]
    assert [r["dist/sync_interval"] for r in rows] == [20.0, 40.0, 80.0, 160.0]


# ---------------------------------------------------------------------- fault tolerance
def _kill_once(at_iteration, index):
    state = {"pid": None}

    def hook(run):
        if run.iteration == at_iteration and state["pid"] is None:
            pool = ray_utils.ACTIVE[-1]
            state["pid"] = pool.pids()[index]
            os.kill(state["pid"], signal.SIGKILL)

    return hook, state


@pytest.mark.parametrize("mode", ["genetic", "data"])
def test_killed_worker_is_restarted(local_ray, recipe_file, tmp_path, mode):
    recipe = load_recipe(recipe_file, [f"distributed.mode={mode}"])
    hook, state = _kill_once(2, 1)
    res = train_recipe(recipe, tmp_path / "runs", hooks=(hook,))
    assert state["pid"] is not None and res.env_steps >= 320
    rows = [r for r in _metrics(res.dir) if "dist/restarts" in r]
    assert rows[-1]["dist/restarts"] == 1.0
    assert "restarted and rejoined" in (res.dir / "log.txt").read_text()


def test_exhausted_restarts_stop_with_checkpoint(local_ray, recipe_file, tmp_path):
    recipe = load_recipe(recipe_file, ["distributed.max_restarts=0", "run.checkpoint_every=0"])
    hook, state = _kill_once(2, 0)
    with pytest.raises(WorkerLostError, match="worker0 died.*restarts .*exhausted"):
        train_recipe(recipe, tmp_path / "runs", hooks=(hook,))
    run_dir = next((tmp_path / "runs").rglob("config.yaml")).parent
    path, payload, _ = latest_valid(run_dir / "checkpoints")
    assert len(payload["state"]["workers"]) == 2 and "policy" in payload["state"]
    M.Policy.from_state(payload["state"]["policy"])  # the checkpoint's policy loads
    assert not ray_utils.ACTIVE
