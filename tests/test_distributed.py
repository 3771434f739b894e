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
from maestro.distributed.data_parallel import schedule  # noqa: E402
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
    d = M.learner_batch(b.buf, b.lay, cfg.batch_size, b.generator)
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


@pytest.mark.parametrize("per_worker", [1, 2, 4], ids=["one-agent", "two-agents", "all-agents"])
@pytest.mark.parametrize("centralised", [True, False], ids=["maddpg", "ddpg"])
def test_model_parallel_agent_update_equals_maddpg_update(centralised, per_worker):
    """Every ``AgentWorker`` (its block's actors and critics, copied from a single-process learner) takes
    the step ``maddpg.update`` takes for its learners on the same minibatch and target actions (the
    workers and ``maddpg`` share ``td_loss`` / ``policy_loss``; continuous actions: deterministic targets),
    and its target actions are the single-process ones. Blocks of 2 mix groups (a predator and the prey)."""
    from maestro.spec import group_layout
    from maestro.distributed.model_parallel import AgentWorker, block_members, worker_blocks

    cfg = M.Config(hidden=(16, 16), batch_size=16, warmup_steps=0, epsilon=0.1, noise_rate=0.1)
    lr = make_learner(cfg, "simple_tag", TagConfig(max_cycles=10, continuous_actions=True), 4, 0, "cpu", centralised, 1000)
    lr.run_steps(20, updates=False)
    lay = lr.lay
    gen = torch.Generator()
    gen.set_state(lr.generator.get_state())
    d = M.learner_batch(lr.buf, lay, cfg.batch_size, gen)  # the minibatch maddpg.update draws next
    with torch.no_grad():
        a_next = M.target_actions(lr.policy, lr.nets, lay, d["next_obs"], d["sub"], gen)
    blocks = worker_blocks(lay.n_learners, per_worker)
    assert [e - s for s, e in blocks] == {1: [1, 1, 1, 1], 2: [2, 2], 4: [4]}[per_worker]

    def pairs(w, s, e):
        """(worker module, single-process module, the member rows it holds) for the block ``[s, e)``."""
        out = [(w.critic, lr.nets.critic, slice(s, e)), (w.target_critic, lr.nets.target_critic, slice(s, e))]
        for g, ix in block_members(lay, s, e).items():
            rows = slice(ix[0], ix[-1] + 1)
            out += [(w.policy.actors[g], lr.policy.actors[g], rows), (w.target_actor[g], lr.nets.target_actors[g], rows)]
        return out

    workers = []
    for k, (s, e) in enumerate(blocks):
        w = AgentWorker(cfg, centralised, group_layout(lr.env.spec), lr.policy.trained, blocks, k, 10 + k)
        for mine, full, rows in pairs(w, s, e):
            for pd, ps in zip(mine.parameters(), full.parameters()):
                pd.data.copy_(ps.data[rows])
        targets = w.target(d)  # (m, L, S, act_max): the block's agents' target actions
        torch.testing.assert_close(targets.permute(1, 2, 0, 3), a_next[:, :, list(lay.learner_agent[s:e])])
        workers.append(w)
    M.update(cfg, lr.policy, lr.nets, lr.opts, lr.buf, lay, centralised, lr.generator)
    for k, (s, e) in enumerate(blocks):
        workers[k].update(d, a_next, None)
        for mine, full, rows in pairs(workers[k], s, e):
            for pw, pf in zip(mine.parameters(), full.parameters()):
                torch.testing.assert_close(pw.data, pf.data[rows], rtol=1e-5, atol=1e-6)


def test_schedule_matches_train_maddpg_credit():
    """``data_parallel.schedule`` over chunks gives ``updates_per_step`` updates per env step after warmup."""
    credit, total, stored = 0.0, 0, 0
    for _ in range(40):  # 40 chunks of 2 vectorised steps of 2 replicas x 4 copies
        stored += 2 * 4 * 2
        k, credit = schedule(credit, stored, 2, 4, 2, 64, 0.25)
        total += k
        assert 0.0 <= credit < 1.0
    assert total == int((40 * 16 - 48) * 0.25)  # credit starts with the chunk that reaches 64 stored


# ---------------------------------------------------------------------- every mode, end to end
MODES = [("genetic", None), ("data", "allreduce"), ("data", "coordinator"), ("model", "allreduce"), ("model", "coordinator"), ("model_sampler", None)]


@pytest.mark.parametrize("mode,transport", MODES, ids=[m if t is None else f"{m}-{t}" for m, t in MODES])
def test_mode_runs_and_resumes(local_ray, recipe_file, tmp_path, mode, transport):
    # with the learning-rate schedule on: every worker anneals its rates as train_maddpg does
    recipe = load_recipe(recipe_file, [f"distributed.mode={mode}", "algo_config.lr_end_factor=0.5"] + ([f"distributed.transport={transport}"] if transport else []))
    res = train_recipe(recipe, tmp_path / "runs")
    assert res.env_steps >= 320 and res.checkpoint is not None
    rows = [r for r in _metrics(res.dir) if "train/episodes" in r]
    assert rows and any("loss/critic" in r for r in rows)
    assert (res.dir / "workers").is_dir()  # the workers' logs live in the run directory
    _, payload, _ = latest_valid(res.dir / "checkpoints")
    assert "policy" in payload["state"]
    per_iteration = rows[0]["env_steps"]
    for r in rows:  # each iteration at the budget fraction spent before it, on the env steps of all workers
        assert r["train/lr/actor"] == pytest.approx(1e-2 * (1.0 - 0.5 * (r["env_steps"] - per_iteration) / 320), rel=1e-6), r["env_steps"]
    last = 1e-2 * (1.0 - 0.5 * (rows[-1]["env_steps"] - per_iteration) / 320)
    workers = payload["state"].get("workers") or payload["state"].get("replicas") or payload["state"]["agents"]
    for w in workers:  # the rates the workers' optimisers hold, not only the logged ones
        for net in ("actor", "critic"):
            assert w["opts"][net]["param_groups"][0]["lr"] == pytest.approx(last, rel=1e-6), net
    obs = res.policy.act(make_worker_env("simple_tag", recipe.env_config, 3, 1, "cpu").reset())[0]
    assert obs["adversary"].shape == (3, 3, 5)
    assert not ray_utils.ACTIVE  # every worker was terminated
    if mode == "data":
        _check_replicas_identical(payload)
    res2 = resume_run(res.dir, ["run.env_steps=480"])  # every mode resumes from its checkpoint
    assert res2.env_steps >= 480 and res2.checkpoint.name.endswith("480.pt")


def _assert_same_weights(r0, r1):
    """Networks, policy and both Adam states equal bit for bit."""
    for k in r0["nets"]:
        assert torch.equal(r0["nets"][k], r1["nets"][k]), k
    for k in r0["policy"]["weights"]:
        assert torch.equal(r0["policy"]["weights"][k], r1["policy"]["weights"][k]), k
    for opt in ("critic", "actor"):
        s0, s1 = r0["opts"][opt]["state"], r1["opts"][opt]["state"]
        assert s0.keys() == s1.keys()
        for i in s0:
            for m in ("exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(s0[i][m], s1[i][m]), (opt, i, m)


def _check_replicas_identical(payload):
    """Data-parallel replicas are bit-identical after several updates (exact equality)."""
    reps = payload["state"]["replicas"]
    r0 = reps[0]
    for r in reps[1:]:
        assert r0["counters"]["updates"] == r["counters"]["updates"] >= 5  # several synchronous updates happened
        _assert_same_weights(r0, r)
        # ...while their env copies (own seeds) differ
        assert not torch.equal(r0["cur"]["obs"]["adversary"], r["cur"]["obs"]["adversary"])


def test_data_allreduce_equals_coordinator_bit_for_bit(local_ray, recipe_file, tmp_path):
    """With 2 replicas the gloo all-reduce (sum, / 2) and the coordinator's mean give the same bits, and
    both transports run the same schedule, micro-batches and RNG draws: the trained replicas are equal."""
    out = {}
    for t in ("allreduce", "coordinator"):
        recipe = load_recipe(recipe_file, ["distributed.mode=data", f"distributed.transport={t}", "run.checkpoint_every=0"])
        res = train_recipe(recipe, tmp_path / t)
        _, payload, _ = latest_valid(res.dir / "checkpoints")
        _check_replicas_identical(payload)
        out[t] = payload["state"]["replicas"]
        rows = [r for r in _metrics(res.dir) if "dist/update_s" in r]
        assert rows and all(r["dist/update_s"] > 0 and 0.0 <= r["dist/comm_share"] <= 1.0 for r in rows)
    a, c = out["allreduce"], out["coordinator"]
    for ra, rc in zip(a, c):
        assert ra["counters"] == rc["counters"]
        _assert_same_weights(ra, rc)


BLOCKS = [(False, 1), (True, 1), (False, 2), (True, 2)]


@pytest.mark.parametrize("frozen_prey,per_worker", BLOCKS, ids=["all-trained", "frozen-prey", "all-trained-2-per-worker", "frozen-prey-2-per-worker"])
def test_model_allreduce_equals_coordinator_bit_for_bit(local_ray, recipe_file, tmp_path, frozen_prey, per_worker):
    """Model-parallel: the workers' replicated envs and buffers with all-gathered actions and target actions
    (``allreduce``) make exactly the coordinator transport's draws and updates: every agent's actor, critic and
    targets end bit-identical (with a frozen prey too, whose actions both draw from the shared generator).
    Two agents per worker: blocks (predator, predator), (predator, prey) when all train; (2, 1) predators,
    uneven blocks padded in the all-gathers, with the frozen prey."""
    extra = [f"distributed.agents_per_worker={per_worker}"]
    if frozen_prey:
        prey = train_recipe(load_recipe(recipe_file, ["distributed.mode=off", "run.env_steps=80"]), tmp_path / "prey")
        extra.append(f"algo_config.frozen={{prey: {prey.dir}}}")
    out = {}
    for t in ("allreduce", "coordinator"):
        recipe = load_recipe(recipe_file, ["distributed.mode=model", f"distributed.transport={t}", "run.checkpoint_every=0"] + extra)
        res = train_recipe(recipe, tmp_path / t)
        _, payload, _ = latest_valid(res.dir / "checkpoints")
        out[t] = payload["state"]
        rows = [r for r in _metrics(res.dir) if "dist/update_s" in r]
        assert rows and all(r["dist/update_s"] > 0 and 0.0 <= r["dist/comm_share"] <= 1.0 for r in rows)
        assert any("loss/critic" in r for r in rows)
    a, c = out["allreduce"], out["coordinator"]
    assert len(a["agents"]) == len(c["agents"]) == -(-(3 if frozen_prey else 4) // per_worker)
    for x, y in zip(a["agents"], c["agents"]):
        for part in ("actor", "critic", "target_critic", "target_actor"):
            for k in x[part]:
                assert torch.equal(x[part][k], y[part][k]), (part, k)
    assert a["model"] == c["model"]
    assert torch.equal(a["cur"]["obs"]["adversary"], c["cur"]["obs"]["adversary"])  # the replicas stepped the same env
    if per_worker > 1:  # a checkpoint resumes with the blocks it was written with, and says so otherwise
        with pytest.raises(ValueError, match=r"has 2 agent workers, this run has \d \(\d trained agents, distributed.agents_per_worker=1\)"):
            resume_run(res.dir, ["distributed.agents_per_worker=1", "run.env_steps=480"])
        assert not ray_utils.ACTIVE  # the workers started before the refusal were terminated


def test_data_allreduce_three_replicas_stay_identical(local_ray, recipe_file, tmp_path):
    """With 3 ranks gloo still hands every rank the same reduced bits (exact equality of all replicas)."""
    recipe = load_recipe(recipe_file, ["distributed.mode=data", "distributed.workers=3", "run.env_steps=480", "run.checkpoint_every=0"])
    res = train_recipe(recipe, tmp_path / "runs")
    _, payload, _ = latest_valid(res.dir / "checkpoints")
    assert len(payload["state"]["replicas"]) == 3
    _check_replicas_identical(payload)


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


KILLS = [("genetic", None), ("data", "allreduce"), ("data", "coordinator"), ("model", "allreduce"), ("model", "coordinator")]


@pytest.mark.parametrize("mode,transport", KILLS, ids=[m if t is None else f"{m}-{t}" for m, t in KILLS])
def test_killed_worker_is_restarted(local_ray, recipe_file, tmp_path, mode, transport):
    recipe = load_recipe(recipe_file, [f"distributed.mode={mode}"] + ([f"distributed.transport={transport}"] if transport else []))
    hook, state = _kill_once(2, 1)
    res = train_recipe(recipe, tmp_path / "runs", hooks=(hook,))
    assert state["pid"] is not None and res.env_steps >= 320
    rows = [r for r in _metrics(res.dir) if "dist/restarts" in r]
    assert rows[-1]["dist/restarts"] == 1.0
    text = (res.dir / "log.txt").read_text()
    assert "restarted and rejoined" in text
    if transport == "allreduce" and mode == "data":
        assert "gloo group broke" in text  # the survivor's collective failed and a new group was formed
        _, payload, _ = latest_valid(res.dir / "checkpoints")
        _check_replicas_identical(payload)  # bit-identical again after the resync


@pytest.mark.parametrize("mode,per_worker", [("data", 1), ("model", 1), ("model", 2)], ids=["data", "model", "model-2-per-worker"])
def test_allreduce_worker_killed_mid_chunk(local_ray, recipe_file, tmp_path, mode, per_worker):
    """A worker killed while the workers are inside a chunk (stepping or in a collective): the survivors'
    collectives fail within the timeout, the group is re-formed and the run completes (data: replicas
    identical again; model, one agent or a block of two per worker: the restarted worker took a live
    worker's env and replay replica)."""
    import threading

    recipe = load_recipe(recipe_file, [f"distributed.mode={mode}", f"distributed.agents_per_worker={per_worker}", "distributed.collective_timeout_s=20", "algo_config.updates_per_step=1.0", "run.env_steps=480"])
    state = {"pid": None}

    def hook(run):
        if run.iteration == 2 and state["pid"] is None:
            pool = ray_utils.ACTIVE[-1]
            state["pid"] = pool.pids()[0]
            call = pool.call

            def call_and_kill(method, *args, **kw):  # the kill lands once the next chunk is under way, whatever the machine's speed
                if method == "train_chunk" and "timer" not in state:
                    state["timer"] = threading.Timer(0.02, os.kill, (state["pid"], signal.SIGKILL))
                    state["timer"].start()
                return call(method, *args, **kw)

            pool.call = call_and_kill

    res = train_recipe(recipe, tmp_path / "runs", hooks=(hook,))
    assert state["pid"] is not None and res.env_steps >= 480
    assert [r for r in _metrics(res.dir) if "dist/restarts" in r][-1]["dist/restarts"] == 1.0
    assert "gloo group broke" in (res.dir / "log.txt").read_text()
    _, payload, _ = latest_valid(res.dir / "checkpoints")
    if mode == "data":
        _check_replicas_identical(payload)
    else:
        assert len(payload["state"]["agents"]) == 4 // per_worker and "shared_gen" in payload["state"]


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
