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
