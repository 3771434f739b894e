"""Centralised and independent TRPO and the parts they share with MATRPO: stacked networks against
separate ones and autograd, the agent axis, the three policy modes, the Gauss-Newton Fisher product
against the KL's Hessian, per-agent value nets, and the two baselines' behaviour on a task where only
agent 0 is rewarded. (check_algo's registry tests cover training, determinism, resume, save/load.)"""

import math

import pytest
import torch
from torch import nn

import maestro
from maestro.algos import trpo
from maestro.core.joint_policy import AgentAxis, HeadsOnBatch, JointPolicy, heads_kl
from maestro.core.run import Run, RunConfig
from maestro.core.trpo_family import AgentValues, agent_major, normalise_rows
from maestro.core.trust_region import make_batched_fisher_vector_product
from maestro.nn.stacked import StackedMLP
from tiny_envs import OneRewardedConfig, OneRewardedEnv


@pytest.mark.parametrize("activation", ["selu", "tanh", "relu"])
def test_stacked_mlp_rows_are_separate_networks_with_exact_jvp_and_vjp(activation):
    net = StackedMLP(5, (7, 6), 4, activation)
    theta = net.init([torch.Generator().manual_seed(k) for k in range(3)], out_gain=1.0, dtype=torch.float64)
    assert theta.shape == (3, 5 * 7 + 7 + 7 * 6 + 6 + 6 * 4 + 4)
    x = torch.randn(3, 11, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    act = {"selu": nn.SELU, "tanh": nn.Tanh, "relu": nn.ReLU}[activation]
    for k in range(3):  # row k is an ordinary MLP with the row's weights
        layers = net.unflatten(theta[k : k + 1])
        seq = nn.Sequential(nn.Linear(5, 7), act(), nn.Linear(7, 6), act(), nn.Linear(6, 4)).double()
        for lin, (w, b) in zip([seq[0], seq[2], seq[4]], layers):
            lin.weight.data, lin.bias.data = w[0].t().clone(), b[0].clone()
        assert torch.allclose(net(theta, x)[k], seq(x[k]), atol=1e-12)
    lin = net.linearise(theta, x)
    v = torch.randn_like(theta)
    w = torch.randn(3, 11, 4, dtype=torch.float64)
    _, jv = torch.func.jvp(lambda t: net(t, x), (theta,), (v,))
    assert torch.allclose(net.jvp(lin, v), jv, atol=1e-10)
    leaf = theta.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((net(leaf, x) * w).sum(), leaf)
    assert torch.allclose(net.vjp(lin, w), grad, atol=1e-10)


def test_a_row_drawn_alone_equals_its_row_in_the_stack():
    net = StackedMLP(4, (8,), 3)
    stack = net.init([torch.Generator().manual_seed(k) for k in (10, 11, 12)], out_gain=0.001)
    alone = net.init([torch.Generator().manual_seed(11)], out_gain=0.001)
    assert torch.equal(stack[1], alone[0])


def test_agent_axis_stacks_pads_concatenates_and_splits():
    env = maestro.make_env("collect_treasure", num_envs=2, seed=0, num_collectors=3, num_deposits=2)
    axis = AgentAxis.of(env.spec)
    obs = env.reset()
    c, d = obs["collector"].shape[-1], obs["deposit"].shape[-1]
    assert (axis.n_agents, axis.obs_dim, axis.concat_dim) == (5, c, 3 * c + 2 * d)
    stacked = axis.stack_obs(obs)
    assert stacked.shape == (2, 5, c)
    assert torch.equal(stacked[:, 3:, :d], obs["deposit"]) and torch.equal(stacked[:, 3:, d:], torch.zeros(2, 2, c - d))
    assert torch.equal(axis.concat(stacked), torch.cat([obs["collector"].reshape(2, -1), obs["deposit"].reshape(2, -1)], -1))
    joint = torch.arange(10).reshape(2, 5)
    split = axis.split(joint)
    assert torch.equal(split["collector"], joint[:, :3]) and torch.equal(axis.stack(split), joint)
    assert AgentAxis.from_dict(axis.to_dict()) == axis
    with pytest.raises(ValueError, match="action_mask|masks"):
        AgentAxis.of(maestro.make_env("combat", num_envs=1).spec)


def test_the_three_modes_execute_the_right_heads():
    env = OneRewardedEnv(OneRewardedConfig(n_agents=3, n_targets=4), num_envs=5, seed=0)
    axis = AgentAxis.of(env.spec)
    stacked = axis.stack_obs(env.reset())  # (5, 3, 12)
    central = JointPolicy("central", axis, (8,), seed=1)
    assert central.theta.shape[0] == 1
    direct = central.net(central.theta, axis.concat(stacked)[None]).reshape(5, 3, 4)
    assert torch.allclose(central.executed_logits(stacked), direct)
    independent = JointPolicy("independent", axis, (8,), seed=1)
    own = independent.net(independent.theta, stacked.movedim(1, 0))  # (3, 5, 4)
    assert torch.allclose(independent.executed_logits(stacked), own.movedim(0, 1))
    consensus = JointPolicy("consensus", axis, (8,), seed=1)
    every = consensus.net(consensus.theta, stacked.movedim(1, 0)).reshape(3, 5, 3, 4)  # agent i's heads for every m
    executed = consensus.executed_logits(stacked)
    for i in range(3):
        assert torch.allclose(executed[:, i], every[i, :, i])
    assert (independent.net.out_dim, consensus.net.out_dim, central.net.out_dim) == (4, 12, 12)
    assert consensus.head_actions(torch.tensor([[0, 1, 2]])).shape == (3, 1, 3)
    assert independent.head_actions(torch.tensor([[0, 1, 2]])).tolist() == [[[0]], [[1]], [[2]]]


def test_fisher_product_and_log_ratio_gradient_equal_autograd():
    torch.manual_seed(0)
    env = OneRewardedEnv(OneRewardedConfig(n_agents=3, n_targets=4), num_envs=40, seed=0)
    axis = AgentAxis.of(env.spec)
    policy = JointPolicy("consensus", axis, (6,), seed=2).double()
    with torch.no_grad():
        policy.theta.mul_(30.0)  # away from uniform policies
    obs = axis.stack_obs(env.reset()).double()
    actions = torch.randint(0, 4, (40, 3), generator=torch.Generator().manual_seed(1))
    heads = HeadsOnBatch.of_batch(policy, obs, actions, fisher_every=3)
    rows = torch.tensor([2, 0])

    def kl_rows(theta):
        return heads_kl(heads.old_log_probs[rows][:, ::3], policy.logits(theta, heads.inputs[rows][:, ::3])).mean(-1)

    reference = make_batched_fisher_vector_product(kl_rows, heads.theta_old[rows], damping=0.01)
    v = torch.randn(2, heads.theta_old.shape[1], dtype=torch.float64)
    assert torch.allclose(heads.fisher_product(rows, 0.01)(v), reference(v), atol=1e-10)
    w = torch.randn(2, 40, 3, dtype=torch.float64)
    leaf = heads.theta_old[rows].clone().requires_grad_(True)
    x, kl = heads.log_ratios_and_kl(leaf, rows)
    assert torch.equal(x.detach(), torch.zeros_like(x)) and torch.allclose(kl, torch.zeros(2, dtype=torch.float64))
    (grad,) = torch.autograd.grad((x * w).sum(), leaf)
    assert torch.allclose(heads.log_ratio_vjp(rows, w), grad, atol=1e-10)


def test_value_rows_fit_alone_as_in_the_stack():
    gen = torch.Generator().manual_seed(3)
    obs, returns = torch.randn(3, 50, 6, generator=gen), torch.randn(3, 50, generator=gen)
    stack = AgentValues([0, 1, 2], 6, seed=4, hidden=(8,))
    alone = AgentValues([1], 6, seed=4, hidden=(8,))
    assert torch.equal(stack.theta[1], alone.theta[0])
    loss = stack.fit(obs, returns, epochs=2, minibatch=16)
    loss_alone = alone.fit(obs[1:2], returns[1:2], epochs=2, minibatch=16)
    assert torch.allclose(stack.theta[1], alone.theta[0], atol=1e-6) and torch.allclose(loss[1], loss_alone[0], atol=1e-6)
    assert not torch.allclose(stack.theta[0], AgentValues([0], 6, seed=4, hidden=(8,)).theta[0])  # it trained


def test_normalise_rows_by_hand():
    x = agent_major(torch.tensor([[[1.0, 5.0]], [[3.0, 5.0]]]))  # (T=2, B=1, K=2) -> (2, 2)
    out = normalise_rows(x)
    assert torch.allclose(out[0], torch.tensor([-1.0, 1.0]), atol=1e-6)
    assert torch.equal(out[1], torch.zeros(2))  # a constant row (an agent with no reward) stays 0


def _train(algo, iterations, seed=0, **overrides):
    cfg = trpo.Config(**{"rollout_steps": 8, "hidden": (16,), "max_kl": 0.05, "vf_minibatch": 32, "vf_epochs": 2, **overrides})
    env = OneRewardedEnv(OneRewardedConfig(n_agents=2, n_targets=4), num_envs=32, seed=seed)
    with Run(RunConfig(env_steps=iterations * 8 * 32, num_envs=32, eval_episodes=0, progress=False, tensorboard=False), None, seed=seed) as run:
        return maestro.registry.algo_entry(algo).train(cfg, env, run)


def prob_correct(policy, n_agents=2, n_targets=4):
    """Each agent's mean probability of naming its target under its executed head ``(N,)``."""
    env = OneRewardedEnv(OneRewardedConfig(n_agents=n_agents, n_targets=n_targets), num_envs=512, seed=5)
    stacked = policy.axis.stack_obs(env.reset(seed=5))
    with torch.no_grad():
        p = torch.softmax(policy.executed_logits(stacked), -1)
    return p.gather(-1, env.target.unsqueeze(-1)).squeeze(-1).mean(0)


def test_independent_trpo_cannot_train_an_unrewarded_agent_and_central_trpo_can():
    # the follower's advantages are only its value net's noise: it learns nothing about its target
    p = prob_correct(_train("trpo_independent", 10))
    assert p[0] > 0.6 and float(p[1]) < 0.35
    central = _train("trpo_central", 10)  # the team advantage reaches the follower's head
    assert bool((prob_correct(central) > 0.45).all())


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="max_kl"):
        trpo.Config(max_kl=0.0)
    with pytest.raises(ValueError, match="rollout_steps"):
        trpo.Config(rollout_steps=0)
    assert math.isclose(trpo.Config().gamma, 0.995) and trpo.Config().hidden == (128, 128)
