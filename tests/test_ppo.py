"""PPO family: learns tiny tasks with known optima, honours masks and dead agents, keeps continuous
actions in the Box, refuses mismatches. (Determinism, resume and save/load of every algorithm:
``test_check_algo.py``.)"""

import gymnasium.spaces as gspaces
import numpy as np
import pytest
import torch

import maestro
from maestro.algos import IncompatibleError, check_compatible, incompatibility
from maestro.algos.ppo import Config, Policy, train_ippo, train_mappo
from maestro.core.run import Run, RunConfig
from maestro.envs.api import group_spec
from maestro.registry import AlgoEntry
from maestro.spec import EnvSpec, group_layout
from tiny_envs import MatchConfig, MatchEnv

FAST = Config(rollout_steps=5, epochs=4, lr=3e-3, critic_lr=3e-3)


def train_match(algo, iterations=30, B=32, deterministic_eval=False, **kw):
    mc = MatchConfig(**kw)
    cfg = RunConfig(env_steps=B * 5 * iterations, num_envs=B, eval_episodes=64, eval_deterministic=deterministic_eval, progress=False)
    with Run(cfg, None, seed=0, make_env=lambda n, s: MatchEnv(mc, n, s)) as run:
        policy = algo(FAST, MatchEnv(mc, B, 0), run)
    return policy, run.last_eval


@pytest.mark.parametrize("algo", [train_ippo, train_mappo])
def test_learns_discrete_match_to_optimum(algo):
    # optimum: return 5 (= max_steps); a uniform random policy gets 5/3
    _, ev = train_match(algo)
    assert ev["eval/episode_return"] >= 0.9 * 5.0, ev


def test_learns_continuous_match():
    # reward -|a - target| per step; random actions in [0, 1] average about -0.39 per step (-1.9 per episode)
    _, ev = train_match(train_mappo, iterations=40, continuous=True, deterministic_eval=True)
    assert ev["eval/episode_return"] >= -0.4, ev


def test_action_masks_are_honoured():
    # MatchEnv(masked=True) raises if a masked action is ever taken, in training or evaluation
    _, ev = train_match(train_ippo, iterations=6, masked=True)
    assert ev["eval/episode_return"] > 5.0 / 3


def test_dead_agents_are_masked_out():
    policy, ev = train_match(train_mappo, iterations=20, dead_agent=True)
    assert ev["eval/episode_return"] >= 0.9 * 2.5  # mean over agents: the dead one always gets 0
    assert all(torch.isfinite(p).all() for p in policy.parameters())


def test_continuous_actions_stay_inside_the_box():
    env = maestro.make_env("simple_spread", num_envs=64, seed=0, continuous_actions=True)
    policy = Policy(group_layout(env.spec), Config(init_log_std=1.0))
    acts, _ = policy.act(env.reset())
    assert acts["agent"].shape == (64, 3, 5) and acts["agent"].min() >= 0.0 and acts["agent"].max() <= 1.0
    env.step(acts)  # the env validates without clipping


def test_policy_rejects_wrong_observation_shape():
    policy = Policy(group_layout(MatchEnv(MatchConfig(), 2, 0).spec), Config())
    with pytest.raises(ValueError, match="expected"):
        policy.act({"agent": torch.zeros(2, 3, 3)})


def test_capability_mismatch_is_refused_with_a_clear_message():
    discrete_only = AlgoEntry("discrete_only", train_ippo, Config, frozenset({"discrete"}))
    spec = EnvSpec("boxes", {"g": group_spec("g", 2, 3, gspaces.Box(0.0, 1.0, (2,), dtype=np.float32))}, 5, (6,))
    with pytest.raises(IncompatibleError, match="'g' has continuous actions.*does not support 'continuous'"):
        check_compatible(discrete_only, spec)
    stateless = EnvSpec("nostate", {"g": group_spec("g", 2, 3, gspaces.Discrete(2))}, 5, (0,))
    assert "needs a global state" in incompatibility("mappo", stateless)
    assert incompatibility("ippo", stateless) is None


# ---------------------------------------------------------------------- recurrent actors
def train_cue(recurrent, iterations=60, B=64, seed=0):
    from tiny_envs import CueEnv

    cfg = Config(rollout_steps=8, epochs=4, minibatches=2, lr=3e-3, critic_lr=3e-3, hidden=(32,), recurrent=recurrent, entropy_coef=0.0)
    rc = RunConfig(env_steps=B * 8 * iterations, num_envs=B, eval_episodes=200, progress=False)
    with Run(rc, None, seed=seed, make_env=lambda n, s: CueEnv(num_envs=n, seed=s)) as run:
        policy = train_ippo(cfg, CueEnv(num_envs=B, seed=seed), run)
    return policy, run.last_eval


def test_recurrent_networks_learn_a_memory_task_feed_forward_ones_cannot():
    # the cue is seen at step 0 and must be named at step 3: chance is 0.5 per agent
    _, ff = train_cue(0)
    _, rnn = train_cue(16)
    assert rnn["eval/success"] >= 0.9, rnn
    assert ff["eval/success"] <= 0.65, ff


def test_the_update_replays_a_recurrent_rollout_exactly():
    # the update's log-probabilities, replayed from each copy's first state with the episode starts,
    # equal the rollout's own: the first PPO ratio is 1 even across episode boundaries inside the rollout
    from maestro.core.ppo_family import build_learner, prepare_batch
    from tiny_envs import CueEnv

    cfg = Config(rollout_steps=11, hidden=(16,), recurrent=8)  # 11 steps: episodes of 4 end mid-rollout
    env = CueEnv(num_envs=6, seed=3)
    learner = build_learner(cfg, env, centralised=False)
    learner.start()
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):  # the second rollout starts from carried, non-zero states
        stats, data = learner.collect(gen)
    d = data["agent"]
    assert d["obs"].shape == (11, 6, 2, 3) and d["h0"].shape == (1, 6, 2, 8) and d["starts"].shape == (11, 6)
    # the second rollout covers global steps 11..21; episodes end at steps 11, 15, 19 (k % 4 == 3), so new ones start at 1, 5, 9
    assert d["h0"].abs().sum() > 0 and d["starts"].all(1).tolist() == [t in (1, 5, 9) for t in range(11)]
    assert not d["starts"].any(1)[[0, 2, 3, 4, 6, 7, 8, 10]].any()
    logp, _ = learner.policy.evaluate_actions("agent", d["obs"], d["action"], None, d["h0"][0], d["starts"])
    torch.testing.assert_close(logp, d["logp"], rtol=0, atol=1e-6)
    # and a copy replayed alone, from its own state, gives the same: copies do not mix
    one, _ = learner.policy.evaluate_actions("agent", d["obs"][:, 2:3], d["action"][:, 2:3], None, d["h0"][0, 2:3], d["starts"][:, 2:3])
    torch.testing.assert_close(one, d["logp"][:, 2:3], rtol=0, atol=1e-6)
    # the critic: its replayed states end where the rollout's stepping left them (zeroed where the last step ended an episode)
    critic = learner.critics["agent"]
    out, states = critic(d["cin"], d["critic_h0"][0], d["starts"])
    last_done = learner.buf["done"][-1][:, None, None]
    torch.testing.assert_close(states[-1] * ~last_done, learner.cur["critic_hidden"]["agent"], rtol=0, atol=1e-6)
    assert d["critic_h0"].abs().sum() > 0
    torch.testing.assert_close(out.squeeze(-1), d["v_old"], rtol=0, atol=1e-6)


def test_a_recurrent_policy_carries_and_resets_its_state():
    from tiny_envs import CueEnv

    env = CueEnv(num_envs=4, seed=0)
    policy = Policy(group_layout(env.spec), Config(hidden=(16,), recurrent=8))
    obs = env.reset()
    _, h = policy.act(obs)
    assert set(h) == {"agent"} and h["agent"].shape == (4, 2, 8) and h["agent"].abs().sum() > 0
    _, h2 = policy.act(obs, None, h)
    assert not torch.equal(h2["agent"], h["agent"])  # the state moves on
    done = torch.tensor([True, False, True, False])
    reset = policy.reset_hidden(h2, done)
    assert reset["agent"][[0, 2]].abs().sum() == 0 and torch.equal(reset["agent"][[1, 3]], h2["agent"][[1, 3]])
    # saved and loaded, it keeps its width and acts the same from the same state
    loaded = Policy.from_state(policy.policy_state())
    assert loaded.recurrent == 8
    a1, n1 = policy.act(obs, None, h, deterministic=True)
    a2, n2 = loaded.act(obs, None, h, deterministic=True)
    assert torch.equal(a1["agent"], a2["agent"]) and torch.equal(n1["agent"], n2["agent"])
    # a feed-forward policy passes hidden through
    ff = Policy(group_layout(env.spec), Config(hidden=(16,)))
    assert ff.act(obs, None, "untouched")[1] == "untouched" and ff.reset_hidden("untouched", done) == "untouched"


def test_recurrent_settings_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match="recurrent networks need network 'mlp'"):
        Config(recurrent=8, network="stem_backbone_head")
    with pytest.raises(ValueError, match="recurrent must be >= 0"):
        Config(recurrent=-1)
    from tiny_envs import CueEnv

    cfg = Config(rollout_steps=4, minibatches=4, hidden=(8,), recurrent=4)
    with pytest.raises(ValueError, match="2 copies \\(run.num_envs\\) for minibatches=4"):
        with Run(RunConfig(env_steps=64, num_envs=2, progress=False), None, seed=0, make_env=lambda n, s: CueEnv(num_envs=n, seed=s)) as run:
            train_ippo(cfg, CueEnv(num_envs=2, seed=0), run)
