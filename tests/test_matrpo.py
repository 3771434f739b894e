"""MATRPO: credit passed by consensus where independent TRPO has none, every local step inside its
trust region, the local step's gradient against autograd of the augmented Lagrangian, batched
matchings equal to the rounds one by one, exact consensus on sampled log-ratios going to the zero
update, and the settings. (check_algo's registry tests cover training, determinism, resume and
save/load.)"""

import math

import pytest
import torch

import maestro
from maestro.algos import matrpo
from maestro.core.consensus import admm_round, edge_schedule, group_rounds, init_admm, ring_graph
from maestro.core.joint_policy import AgentAxis, HeadsOnBatch, JointPolicy
from maestro.core.run import Run, RunConfig
from test_trpo import prob_correct
from tiny_envs import OneRewardedConfig, OneRewardedEnv

SMALL = {"rollout_steps": 8, "hidden": (16,), "max_kl": 0.05, "vf_minibatch": 32, "vf_epochs": 2}


def _train(algo, iterations, seed=0, **overrides):
    entry = maestro.registry.algo_entry(algo)
    cfg = entry.config(**{**SMALL, **overrides})
    env = OneRewardedEnv(OneRewardedConfig(n_agents=2, n_targets=4), num_envs=32, seed=seed)
    with Run(RunConfig(env_steps=iterations * 8 * 32, num_envs=32, eval_episodes=0, progress=False, tensorboard=False), None, seed=seed) as run:
        return entry.train(cfg, env, run)


@pytest.mark.parametrize("local_step", ["trpo", "subspace"])
def test_matrpo_passes_agent_0s_credit_to_an_agent_that_independent_trpo_cannot_train(local_step):
    # only agent 0 is rewarded, for both agents naming their targets (tiny_envs.OneRewardedEnv)
    consensus = prob_correct(_train("matrpo", 15, admm_rounds=10, local_step=local_step))
    independent = prob_correct(_train("trpo_independent", 15))
    # the follower's probability of its target (uniform: 0.25; independent TRPO's follower only drifts
    # with its value net's noise, 0.28-0.41 over seeds 0-2; MATRPO's 0.55-0.80, subspace steps 0.50-0.82)
    assert float(consensus[1]) > 0.55 and float(independent[1]) < 0.4
    assert float(consensus.prod()) > 0.45 > float(independent.prod())  # both right at once: coordination


def _batch(n_agents=4, samples=48, seed=0, scale=1.0):
    env = OneRewardedEnv(OneRewardedConfig(n_agents=n_agents, n_targets=3), num_envs=samples, seed=seed)
    axis = AgentAxis.of(env.spec)
    policy = JointPolicy("consensus", axis, (8,), seed=seed)
    with torch.no_grad():
        policy.theta.mul_(scale)
    gen = torch.Generator().manual_seed(seed)
    obs = axis.stack_obs(env.reset())
    actions = torch.randint(0, 3, (samples, n_agents), generator=gen)
    advantages = torch.randn(n_agents, samples, generator=gen)
    return policy, obs, actions, advantages


def test_every_local_step_stays_in_its_trust_region():
    policy, obs, actions, advantages = _batch()
    cfg = matrpo.Config(**{**SMALL, "max_kl": 0.01, "admm_rounds": 12, "rho": 5.0})
    graph = matrpo.comm_graph(cfg, 4)
    steps = group_rounds(graph, edge_schedule(graph, cfg.admm_rounds, cfg.edge_order))
    recorded = []
    original = matrpo.LocalSteps.step

    def step(self, nodes, targets, penalties):
        x = original(self, nodes, targets, penalties)
        index = torch.tensor(nodes)
        x_again, kl = self.heads.log_ratios_and_kl(self.theta[index], index)  # recomputed from the kept parameters
        assert torch.allclose(x, x_again, atol=1e-6)
        recorded.append(kl)
        return x

    matrpo.LocalSteps.step = step
    try:
        theta_old = policy.theta.detach().clone()
        metrics = matrpo.admm_update(cfg, policy, obs, actions, advantages, graph, steps)
    finally:
        matrpo.LocalSteps.step = original
    kls = torch.cat(recorded)
    assert len(kls) == 2 * cfg.admm_rounds and bool((kls > 0).any())
    assert float(kls.max()) <= 1.5 * cfg.max_kl + 1e-7
    assert metrics["loss/local_kl_max"] == pytest.approx(float(kls.max()), rel=1e-5)
    assert not torch.equal(policy.theta.detach(), theta_old)


def test_the_local_step_gradient_is_the_lagrangians():
    policy, obs, actions, advantages = _batch(n_agents=3, scale=20.0)
    heads = HeadsOnBatch.of_batch(policy, obs, actions)
    rows = torch.tensor([1, 2])
    M = obs.shape[0]
    targets = 0.1 * torch.randn(2, M, 3, generator=torch.Generator().manual_seed(4))
    penalties = torch.tensor([2.0, 2.0])  # rho * degree on a ring

    leaf = heads.theta_old[rows].clone().requires_grad_(True)
    x, _ = heads.log_ratios_and_kl(leaf, rows)
    surrogate = (torch.exp(x.sum(-1)) * advantages[rows]).mean(-1)
    lagrangian = -surrogate + penalties / (2 * M) * (x - targets).pow(2).sum((1, 2))
    (grad,) = torch.autograd.grad(lagrangian.sum(), leaf)
    weights = -(advantages[rows].unsqueeze(-1) / M + penalties.reshape(-1, 1, 1) / M * targets)
    assert torch.allclose(heads.log_ratio_vjp(rows, weights), grad, atol=1e-6)


def test_a_matching_at_once_equals_its_rounds_one_by_one():
    policy, obs, actions, advantages = _batch(n_agents=4)
    cfg = matrpo.Config(**{**SMALL, "admm_rounds": 8})
    graph = ring_graph(4)
    schedule = edge_schedule(graph, cfg.admm_rounds, "matchings")
    batched = JointPolicy.from_state(policy.policy_state())
    matrpo.admm_update(cfg, batched, obs, actions, advantages, graph, group_rounds(graph, schedule))

    heads = HeadsOnBatch.of_batch(policy, obs, actions, cfg.fisher_every)
    local = matrpo.LocalSteps(cfg, heads, advantages)
    prox = [lambda target, penalty, q=q: local.step([q], target[None], torch.tensor([penalty]))[0] for q in range(4)]
    state = init_admm(graph, torch.zeros(4, obs.shape[0], 4))
    for edge in schedule.tolist():
        admm_round(state, graph, edge, prox, cfg.rho)
    assert torch.allclose(batched.theta.detach(), local.theta, atol=1e-6)


def test_settings_and_graph():
    assert matrpo.comm_graph(matrpo.Config(), 8).edges.tolist()[-1] == [0, 7]  # ring: ... hunter 6 - bank 2 - hunter 1
    assert matrpo.comm_graph(matrpo.Config(topology="edges", edges=((0, 1), (1, 2))), 3).num_edges == 2
    with pytest.raises(ValueError, match="topology"):
        matrpo.Config(edges=((0, 1),))
    with pytest.raises(ValueError, match="rho"):
        matrpo.Config(rho=0.0)
    with pytest.raises(ValueError, match="subspace_growth"):
        matrpo.Config(subspace_growth=0.5)
    with pytest.raises(ValueError, match="penalty_curvature is a setting of local_step: subspace, got local_step 'trpo'"):
        matrpo.Config(penalty_curvature=True)
    with pytest.raises(ValueError, match="not connected"):
        matrpo.comm_graph(matrpo.Config(topology="edges", edges=((0, 1),)), 3)


def test_subspace_steps_keep_the_true_kl_and_start_with_the_authors_step():
    policy, obs, actions, advantages = _batch(n_agents=4)
    cfg = matrpo.Config(**{**SMALL, "max_kl": 0.002, "admm_rounds": 12, "local_step": "subspace"})
    heads = HeadsOnBatch.of_batch(policy, obs, actions, cfg.fisher_every)
    targets = torch.zeros(2, obs.shape[0], 4)
    penalties = torch.tensor([2.0, 2.0])
    subspace = matrpo.make_local_steps(cfg, heads, advantages)
    authors = matrpo.make_local_steps(matrpo.Config(**{**SMALL, "max_kl": 0.002}), heads, advantages)
    x_subspace = subspace.step([0, 1], targets, penalties)
    authors.step([0, 1], targets, penalties)
    # a first activation adds the authors' exact direction: the same step (both halved by the true KL here),
    # and the model's log-ratios of the full step are the linearised ones
    rows = torch.tensor([0, 1])
    assert torch.allclose(subspace.final_theta()[rows], authors.final_theta()[rows], atol=1e-6)
    full = torch.stack([subspace.basis[q][0] * subspace.coefficients[q][0] for q in (0, 1)])
    assert torch.allclose(x_subspace, heads.log_ratio_jvp(rows, full), atol=1e-6)
    assert torch.allclose(0.5 * full, authors.final_theta()[rows] - heads.theta_old[rows], atol=1e-6)

    graph = matrpo.comm_graph(cfg, 4)
    policy_again = JointPolicy.from_state(policy.policy_state())
    metrics = matrpo.admm_update(cfg, policy_again, obs, actions, advantages, graph, group_rounds(graph, edge_schedule(graph, 12, "matchings")))
    assert metrics["loss/local_kl_max"] <= cfg.max_kl + 1e-9  # the model's KL of every step
    assert metrics["loss/kl_max"] <= cfg.kl_factor * cfg.max_kl  # the true KL of every agent's result
    assert not torch.equal(policy_again.theta.detach(), policy.theta.detach())
    x, kl = heads.log_ratios_and_kl(policy_again.theta.detach(), torch.arange(4))
    assert metrics["loss/kl"] == pytest.approx(float(kl.mean()), rel=1e-5)
    assert metrics["loss/surrogate_gain"] == pytest.approx(float((advantages * (x.sum(-1).exp() - 1)).mean()), rel=1e-4, abs=1e-9)
    executed = sum(x[m, :, m] for m in range(4))  # agent m's change of its own head m, on its own observation
    assert metrics["loss/team_surrogate_gain"] == pytest.approx(float((advantages * (executed.exp() - 1)).mean()), rel=1e-4, abs=1e-9)
    assert metrics["loss/team_surrogate_gain"] != metrics["loss/surrogate_gain"]  # the rounds stop short of consensus


def test_penalty_curvature_takes_the_convex_models_minimiser():
    """``penalty_curvature``: on a first activation (one basis direction ``Y``) the step is the 1-D minimiser
    ``b / (w Y^T Y)`` of the quadratic model, inside the trust region when the penalty is strong, where the
    authors' step goes to the boundary; with a vanishing penalty both are the same step."""
    policy, obs, actions, advantages = _batch(n_agents=4)
    heads = HeadsOnBatch.of_batch(policy, obs, actions, 1)
    M, delta = obs.shape[0], 0.01
    targets = torch.zeros(2, M, 4)

    def first_step(penalty, curvature):
        cfg = matrpo.Config(**{**SMALL, "max_kl": delta, "local_step": "subspace", "penalty_curvature": curvature})
        steps = matrpo.make_local_steps(cfg, heads, advantages)
        return steps, steps.step([0, 1], targets, torch.tensor([penalty, penalty]))

    held, x_held = first_step(2000.0, True)
    plain, _ = first_step(2000.0, False)
    w = 2000.0 / M
    for q in (0, 1):
        Y = held.images[q][..., 0]  # (M, N): the log-ratio image of the one H-unit direction
        b = (Y * advantages[q].unsqueeze(-1)).sum() / M
        alpha = b / (w * Y.pow(2).sum())
        assert float(alpha.abs()) < (2 * delta) ** 0.5  # the penalty holds the step inside the bound
        assert torch.allclose(held.coefficients[q], alpha.reshape(1), rtol=1e-4)
        assert torch.allclose(x_held[q], Y * alpha, atol=1e-7)

        def model(a):
            return float(-b * a + 0.5 * w * Y.pow(2).sum() * a * a)

        assert model(held.coefficients[q][0]) < model(plain.coefficients[q][0])  # the plain step overshoots
    assert held.kl_max < delta and plain.kl_max <= delta

    free, x_free = first_step(1e-9, True)
    _, x_plain = first_step(1e-9, False)
    assert torch.allclose(x_free, x_plain, atol=1e-7) and free.kl_max == pytest.approx(delta)

    cfg = matrpo.Config(**{**SMALL, "max_kl": delta, "admm_rounds": 12, "local_step": "subspace", "penalty_curvature": True, "rho": 5.0})
    graph = matrpo.comm_graph(cfg, 4)
    metrics = matrpo.admm_update(cfg, policy, obs, actions, advantages, graph, group_rounds(graph, edge_schedule(graph, 12, "matchings")))
    assert metrics["loss/local_kl_max"] <= delta + 1e-9 and metrics["loss/kl_max"] <= cfg.kl_factor * delta


def test_a_refresh_with_one_cg_iteration_adds_the_gradient_direction():
    """``refresh_cg_iterations: 1``: conjugate gradient's first iterate is the scaled gradient, so an
    agent's first basis direction is the Lagrangian's gradient, H-normalised."""
    policy, obs, actions, advantages = _batch(n_agents=3)
    cfg = matrpo.Config(**{**SMALL, "local_step": "subspace", "refresh_cg_iterations": 1})
    heads = HeadsOnBatch.of_batch(policy, obs, actions, cfg.fisher_every)
    steps = matrpo.make_local_steps(cfg, heads, advantages)
    steps.step([0, 1], torch.zeros(2, obs.shape[0], 3), torch.tensor([2.0, 2.0]))
    M = obs.shape[0]
    grad = heads.log_ratio_vjp(torch.tensor([0, 1]), -(advantages[:2].unsqueeze(-1) / M).expand(2, M, 3))
    for q in (0, 1):
        u = steps.basis[q][0]
        assert torch.allclose(u / u.norm(), -grad[q] / grad[q].norm(), atol=1e-5)
    with pytest.raises(ValueError, match="refresh_cg_iterations"):
        matrpo.Config(refresh_cg_iterations=-1)


def test_advantage_norm_per_agent_or_pooled():
    x = torch.tensor([[1.0, 3.0], [0.0, 0.4]])  # agent 0's advantages, agent 1's (smaller scale)
    per_agent = matrpo.normalise_advantages(x, "agent")
    assert torch.allclose(per_agent, torch.tensor([[-1.0, 1.0], [-1.0, 1.0]]), atol=1e-6), "each row to mean 0, std 1"
    pooled = matrpo.normalise_advantages(x, "pooled")
    mean, std = x.mean(), x.std(correction=0)
    assert torch.allclose(pooled, (x - mean) / std, atol=1e-6) and pooled[1].abs().max() < pooled[0].abs().max()
    with pytest.raises(ValueError, match="advantage_norm"):
        matrpo.Config(advantage_norm="team")


def test_pooled_statistics_from_the_agents_moments_are_the_union_statistics():
    from maestro.core.trpo_family import advantage_moments, pooled_statistics

    g = torch.Generator().manual_seed(0)
    rows = [torch.randn(50, generator=g) * s + m for s, m in ((1.0, 0.0), (0.1, 2.0), (5.0, -1.0))]
    mean, std = pooled_statistics([advantage_moments(r) for r in rows])
    union = torch.cat(rows).double()
    assert mean == pytest.approx(float(union.mean()), abs=1e-12) and std == pytest.approx(float(union.std(correction=0)), abs=1e-12)
    assert advantage_moments(rows[0]).shape == (3,), "three numbers cross per agent, whatever the batch"
    with pytest.raises(ValueError, match="no moments"):
        pooled_statistics([])
    with pytest.raises(ValueError, match="count"):
        pooled_statistics([torch.zeros(3, dtype=torch.float64)])



def test_exact_consensus_on_sampled_log_ratios_is_the_zero_update():
    """docs/matrpo.md, "Why more ADMM rounds do not help": agents that must agree on every sample's per-head
    log-ratio, each within its own small subspace of changes (``r`` <= 10 directions, ``M N`` = 192 values),
    can agree only on no change. ADMM with the convex model's exact local step (``penalty_curvature``)
    goes there as the rounds grow; the authors' step (to the bound every round) does not converge."""
    delta = 0.01

    def update(rounds, curvature):
        policy, obs, actions, advantages = _batch(n_agents=4)
        cfg = matrpo.Config(**{**SMALL, "max_kl": delta, "admm_rounds": rounds, "local_step": "subspace", "penalty_curvature": curvature, "rho": 5.0})
        graph = matrpo.comm_graph(cfg, 4)
        return matrpo.admm_update(cfg, policy, obs, actions, advantages, graph, group_rounds(graph, edge_schedule(graph, rounds, "matchings")))

    early, late = update(16, True), update(1000, True)
    assert late["loss/kl"] < early["loss/kl"] / 10 and late["loss/consensus_disagreement"] < early["loss/consensus_disagreement"] / 10
    assert early["loss/kl"] > delta / 2 and early["loss/team_surrogate_gain"] > 0  # stopped early, it does move, and gains
    early, late = update(16, False), update(1000, False)
    assert late["loss/kl"] > delta / 3 and late["loss/consensus_disagreement"] > early["loss/consensus_disagreement"] / 2


def test_admm_update_reuses_a_linearisation_of_theta_old_and_refuses_another():
    """``heads`` passed in (one linearisation for several updates on one batch) gives the update built
    without it, bit for bit; heads linearised at other parameters are refused by name."""
    from maestro.core.joint_policy import HeadsOnBatch

    cfg = matrpo.Config(**{**SMALL, "admm_rounds": 6, "local_step": "subspace"})
    policy, obs, actions, advantages = _batch(n_agents=3)
    graph = matrpo.comm_graph(cfg, 3)
    steps = group_rounds(graph, edge_schedule(graph, 6, "matchings"))
    theta_old = policy.theta.detach().clone()
    heads = HeadsOnBatch.of_batch(policy, obs, actions, cfg.fisher_every)
    built = matrpo.admm_update(cfg, policy, obs, actions, advantages, graph, steps)
    after_built = policy.theta.detach().clone()
    with torch.no_grad():
        policy.theta.copy_(theta_old)
    given = matrpo.admm_update(cfg, policy, obs, actions, advantages, graph, steps, heads)
    assert given == built and torch.equal(policy.theta, after_built)
    # the executed gain is executed_gains' mean over agents at the new parameters
    x, _ = heads.log_ratios_and_kl(policy.theta.detach(), torch.arange(3))
    assert float(matrpo.executed_gains(advantages, x).mean()) == pytest.approx(built["loss/team_surrogate_gain"], rel=1e-6, abs=1e-12)
    with pytest.raises(ValueError, match="other parameters"):
        matrpo.admm_update(cfg, policy, obs, actions, advantages, graph, steps, heads)  # policy has moved on


def test_believed_and_executed_gains_on_hand_computed_log_ratios():
    """Two agents, two samples. Agent ``i`` believes its own local joint ratio ``exp(x_i0 + x_i1)``; the
    team executes head ``m`` of agent ``m``, ``exp(x_00 + x_11)``. They agree at consensus."""
    advantages = torch.tensor([[1.0, -2.0], [0.5, 3.0]])  # (N=2, M=2)
    x = torch.tensor([  # (N, M, N): agent, sample, head
        [[0.1, 0.2], [0.0, -0.3]],
        [[0.4, -0.1], [0.2, 0.1]],
    ])
    e = math.expm1
    believed = [(1.0 * e(0.3) - 2.0 * e(-0.3)) / 2, (0.5 * e(0.3) + 3.0 * e(0.3)) / 2]
    executed_ratio = [e(0.1 - 0.1), e(0.0 + 0.1)]  # sample s: agent 0's head 0 + agent 1's head 1
    executed = [(1.0 * executed_ratio[0] - 2.0 * executed_ratio[1]) / 2, (0.5 * executed_ratio[0] + 3.0 * executed_ratio[1]) / 2]
    assert matrpo.believed_gains(advantages, x).tolist() == pytest.approx(believed)
    assert matrpo.executed_gains(advantages, x).tolist() == pytest.approx(executed)
    agreed = x[:1].expand(2, 2, 2)  # both agents hold agent 0's log-ratios
    assert torch.allclose(matrpo.believed_gains(advantages, agreed), matrpo.executed_gains(advantages, agreed))
    assert matrpo.believed_gains(advantages[:1], x[:1]).tolist() == pytest.approx(believed[:1])  # one agent alone (decentralised)
