"""The contract machinery (BatchedEnv, validate_actions, check_env) on a toy env."""

import pytest
import torch

from maestro.envs.api import random_actions
from maestro.envs.check import check_env
from toy_env import ToyConfig, ToyEnv


def make(num_envs, seed):
    return ToyEnv(ToyConfig(), num_envs=num_envs, seed=seed)


def test_check_env_passes_on_toy():
    check_env(make, num_envs=5, seed=3)


def test_auto_reset_and_final_obs():
    env = make(3, 0)
    env.reset()
    acts = {"walker": torch.full((3, 2), 1), "pusher": torch.zeros(3, 1, 1)}
    for i in range(5):
        out = env.step(acts)
        assert not out.done.any()
    out = env.step(acts)  # step 6 = max_steps: truncation of every copy
    assert out.truncated.all() and not out.terminated.any()
    assert (out.info["episode_length"] == 6).all()
    # final_obs carries t = 6, the fresh obs t = 0
    assert (out.final_obs["walker"][..., 1] == 6).all()
    assert (out.obs["walker"][..., 1] == 0).all()
    assert (env.get_state()["t"] == 0).all()


def test_episode_return_is_sum_of_rewards():
    env = make(2, 1)
    env.reset()
    total = torch.zeros(2, 2)
    acts = {"walker": torch.full((2, 2), 2), "pusher": torch.zeros(2, 1, 1)}
    while True:
        out = env.step(acts)
        total += out.reward["walker"]
        if out.done.all():
            break
    assert torch.allclose(out.info["episode_return/walker"], total)


@pytest.mark.parametrize(
    "bad, msg",
    [
        ({"walker": torch.zeros(2, 3, dtype=torch.long)}, "shape"),
        ({"walker": torch.zeros(2, 2)}, "integer"),
        ({"walker": torch.full((2, 2), 3)}, "[0, 3)"),
        ({"pusher": torch.full((2, 1, 1), 1.5)}, "no clipping"),
        ({"pusher": torch.full((2, 1, 1), float("nan"))}, "pusher"),
        ({"pusher": torch.zeros(2, 1, 1, dtype=torch.long)}, "float"),
    ],
)
def test_bad_actions_raise_naming_group(bad, msg):
    env = make(2, 0)
    env.reset()
    acts = {"walker": torch.zeros(2, 2, dtype=torch.long), "pusher": torch.zeros(2, 1, 1)}
    acts.update(bad)
    with pytest.raises(ValueError) as err:
        env.step(acts)
    assert msg in str(err.value) and next(iter(bad)) in str(err.value)


def test_missing_group_and_step_before_reset():
    env = make(2, 0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step({})
    env.reset()
    with pytest.raises(ValueError, match="missing \\['pusher'\\]"):
        env.step({"walker": torch.zeros(2, 2, dtype=torch.long)})


def test_set_state_validates():
    env = make(2, 0)
    env.reset()
    s = env.get_state()
    with pytest.raises(ValueError, match="pos"):
        env.set_state({**s, "pos": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="missing"):
        env.set_state({"pos": s["pos"]})


def test_episode_sums_total_the_per_step_counts():
    env = make(3, 2)
    env.reset()
    gen = torch.Generator().manual_seed(0)
    total = torch.zeros(3)
    finished = 0
    for _ in range(40):
        out = env.step(random_actions(env, gen))
        total += out.info["moved"]
        d = out.done
        assert torch.equal(out.info["episode_sum/moved"][d], total[d])
        finished += int(d.sum())
        total[d] = 0
    assert finished > 3
