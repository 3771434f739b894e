"""simple_spread and simple_tag: conformance, hand-computed rewards, configs, heuristics, fast path."""

from __future__ import annotations

import math

import pytest
import torch

from maestro.envs.api import random_actions
from maestro.envs.check import check_env
from maestro.envs.particle.common import HEURISTICS, ZERO, VectorObs, heuristic, rel_vec, self_vec
from maestro.envs.particle.simple_spread import assign_landmarks
from maestro.envs.particle.simple_tag import boundary_penalty
from maestro.envs.particle.world import (
    ContactPairs,
    Entities,
    PhysicsParams,
    contact_forces,
    contact_forces_bl,
    continuous_action_force,
    continuous_action_force_bl,
    discrete_action_force,
    discrete_action_force_bl,
    integrate,
    integrate_bl,
)
from maestro.registry import make_env


# ---------------------------------------------------------------------- conformance
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"n_agents": 1, "continuous_actions": True},
        {"n_agents": 5, "reward": "agent0", "continuous_actions": True, "max_cycles": 7},
        {"n_agents": 2, "terminate_on_success": True, "local_ratio": 0.0},
    ],
)
def test_check_env_simple_spread(kw):
    check_env("simple_spread", num_envs=4, seed=1, **kw)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"num_good": 2, "num_adversaries": 4, "num_obstacles": 1, "continuous_actions": True},
        {"num_obstacles": 0, "shaping": True, "max_cycles": 6, "terminate_on_success": True},
    ],
)
def test_check_env_simple_tag(kw):
    check_env("simple_tag", num_envs=4, seed=2, **kw)


def test_spaces_and_shapes_match_mpe2_defaults():
    s = make_env("simple_spread").spec
    assert s.groups["agent"].obs_shape == (18,) and s.state_shape == (54,) and s.max_steps == 25
    t = make_env("simple_tag", continuous_actions=True).spec
    assert t.groups["adversary"].obs_shape == (16,) and t.groups["prey"].obs_shape == (14,)
    assert t.state_shape == (3 * 16 + 14,) and t.groups["prey"].action_shape == (5,)
    assert set(t.info_keys) >= {"touches"} and set(s.info_keys) >= {"occupied_landmarks", "collisions", "success"}


# ---------------------------------------------------------------------- hand-computed cases
def _spread_with(agent_pos, landmark_pos, **kw):
    env = make_env("simple_spread", num_envs=1, n_agents=len(agent_pos), **kw)
    env.reset()
    s = env.get_state()
    s["agent_pos"] = torch.tensor([agent_pos])
    s["agent_vel"] = torch.zeros(1, len(agent_pos), 2)
    s["landmark_pos"] = torch.tensor([landmark_pos])
    env.set_state(s)
    return env


def test_spread_rewards_hand_computed():
    # Agents 0 and 1 overlap (0.2 < 0.3), agent 2 is alone. With zero velocities the positions
    # do not move during the step (MPE2 moves with the old velocity), so rewards use them as set.
    agents = [[0.0, 0.0], [0.2, 0.0], [0.9, 0.9]]
    lms = [[0.0, 0.5], [0.2, -0.3], [-0.8, -0.8]]
    G = -(0.5 + 0.3 + math.hypot(0.8, 0.8))  # closest agent to each landmark: 0 (0.5), 1 (0.3), 0
    env = _spread_with(agents, lms)
    out = env.step({"agent": torch.zeros(1, 3, dtype=torch.long)})
    expected = torch.tensor([[0.5 * G - 0.5, 0.5 * G - 0.5, 0.5 * G]])
    assert torch.allclose(out.reward["agent"], expected, atol=1e-6)
    assert out.info["collisions"].item() == 1.0 and out.info["occupied_landmarks"].item() == 0.0
    assert math.isclose(out.info["landmark_dist"].item(), -G, rel_tol=1e-6)

    env = _spread_with(agents, lms, local_ratio=0.25)
    out = env.step({"agent": torch.zeros(1, 3, dtype=torch.long)})
    assert torch.allclose(out.reward["agent"], torch.tensor([[0.75 * G - 0.25, 0.75 * G - 0.25, 0.75 * G]]), atol=1e-6)


def test_spread_agent0_reward_hand_computed():
    """MATRPO's variant: only agent 0 gets the coverage term; every agent pays for its collisions."""
    agents = [[0.0, 0.0], [0.2, 0.0], [0.1, 0.1], [-0.9, 0.9]]  # 0, 1, 2 all overlap pairwise
    lms = [[0.0, 0.0], [0.5, 0.5], [-0.9, 0.85], [0.9, -0.9]]
    G = -(0.0 + math.hypot(0.4, 0.4) + 0.05 + math.hypot(0.7, 0.9))
    env = _spread_with(agents, lms, reward="agent0")
    out = env.step({"agent": torch.zeros(1, 4, dtype=torch.long)})
    assert torch.allclose(out.reward["agent"], torch.tensor([[G - 2.0, -2.0, -2.0, 0.0]]), atol=1e-6)
    assert out.info["collisions"].item() == 3.0
    assert out.info["occupied_landmarks"].item() == 2.0  # landmark 0 (agent 0) and 2 (agent 3)


def test_spread_success_terminates_when_asked():
    agents = [[0.0, 0.0], [0.5, 0.5]]
    env = _spread_with(agents, [[0.05, 0.0], [0.5, 0.45]], terminate_on_success=True)
    out = env.step({"agent": torch.zeros(1, 2, dtype=torch.long)})
    assert out.terminated.item() and out.info["success"].item() == 1.0
    env = _spread_with(agents, [[0.05, 0.0], [0.5, 0.45]])
    out = env.step({"agent": torch.zeros(1, 2, dtype=torch.long)})
    assert not out.terminated.item() and out.info["success"].item() == 1.0


def test_prey_boundary_penalty_values():
    x = torch.tensor([0.0, 0.89, 0.95, 0.999, 1.0, 1.2, 2.0, 5.0])
    expected = torch.tensor([0.0, 0.0, 0.5, 0.99, 1.0, math.exp(0.4), math.exp(2.0), 10.0])
    assert torch.allclose(boundary_penalty(x), expected, atol=1e-5)


def _tag_with(agent_pos, obstacle_pos, **kw):
    env = make_env("simple_tag", num_envs=1, **kw)
    env.reset()
    s = env.get_state()
    s["agent_pos"] = torch.tensor([agent_pos])
    s["agent_vel"] = torch.zeros(1, len(agent_pos), 2)
    s["obstacle_pos"] = torch.tensor([obstacle_pos]).reshape(1, -1, 2)
    env.set_state(s)
    return env


def test_tag_rewards_hand_computed():
    # predators 0 and 1 touch the prey (0.1 < 0.125), predator 2 does not; prey at |x| = 0.95.
    agents = [[0.85, 0.0], [0.95, 0.1], [-0.5, -0.5], [0.95, 0.0]]
    env = _tag_with(agents, [[-0.5, 0.5], [0.0, -0.8]])
    noop = {"adversary": torch.zeros(1, 3, dtype=torch.long), "prey": torch.zeros(1, 1, dtype=torch.long)}
    out = env.step(noop)
    assert torch.allclose(out.reward["adversary"], torch.full((1, 3), 20.0))
    assert math.isclose(out.reward["prey"].item(), -20.0 - 0.5, abs_tol=1e-5)
    assert out.info["touches"].item() == 2.0 and out.info["caught"].item() == 1.0 and out.info["success"].item() == 1.0
    # a lone prey far out: only the boundary penalty, exp(2 * 1.2 - 2) + 0 for y = 0.3
    env = _tag_with([[0.0, 0.0], [0.3, 0.3], [-0.3, 0.0], [1.2, 0.3]], [[-0.5, 0.5], [0.0, -0.8]])
    out = env.step(noop)
    assert torch.equal(out.reward["adversary"], torch.zeros(1, 3))
    assert math.isclose(out.reward["prey"].item(), -math.exp(0.4), rel_tol=1e-5)


# ---------------------------------------------------------------------- configs
def test_bad_configs_name_the_key():
    with pytest.raises(ValueError, match="n_agentz.*valid keys: n_agents, local_ratio"):
        make_env("simple_spread", n_agentz=3)
    with pytest.raises(ValueError, match="'reward'"):
        make_env("simple_spread", reward="shared")
    with pytest.raises(ValueError, match="n_agents"):
        make_env("simple_spread", n_agents=0)
    with pytest.raises(ValueError, match="local_ratio"):
        make_env("simple_spread", local_ratio=1.5)
    with pytest.raises(ValueError, match="num_good"):
        make_env("simple_tag", num_good=0)
    with pytest.raises(ValueError, match="num_obstacles"):
        make_env("simple_tag", num_obstacles=-1)
    with pytest.raises(ValueError, match="valid keys: num_good"):
        make_env("simple_tag", N=3)


# ---------------------------------------------------------------------- heuristics
def _mean_return(env, policy, groups, episodes_of_steps):
    env.reset(seed=5)
    g = torch.Generator()
    g.manual_seed(5)
    totals = {k: [] for k in groups}
    for _ in range(episodes_of_steps):
        out = env.step(policy(env, g))
        for k in groups:
            totals[k].append(out.info[f"episode_return/{k}"][out.done].mean(-1))
    return {k: torch.cat(v).mean().item() for k, v in totals.items()}


@pytest.mark.parametrize("continuous", [False, True])
def test_heuristic_spread_beats_random(continuous):
    env = make_env("simple_spread", num_envs=64, continuous_actions=continuous)
    h = _mean_return(env, lambda e, g: heuristic("simple_spread")(e), ["agent"], 50)["agent"]
    r = _mean_return(env, lambda e, g: random_actions(e, g), ["agent"], 50)["agent"]
    assert h > r + 0.4 * abs(r), f"heuristic {h:.2f} vs random {r:.2f}"


@pytest.mark.parametrize("continuous", [False, True])
def test_heuristic_tag_beats_random(continuous):
    env = make_env("simple_tag", num_envs=64, continuous_actions=continuous)
    H = HEURISTICS["simple_tag"]

    def chase_only(e, g):
        return {"adversary": H(e)["adversary"], "prey": random_actions(e, g)["prey"]}

    def flee_vs_chase(e, g):
        return H(e)

    rand = _mean_return(env, lambda e, g: random_actions(e, g), ["adversary"], 50)["adversary"]
    chase = _mean_return(env, chase_only, ["adversary", "prey"], 50)
    both = _mean_return(env, flee_vs_chase, ["prey"], 50)["prey"]
    assert chase["adversary"] > rand + 10.0, f"chasing predators {chase['adversary']:.1f} vs random {rand:.1f}"
    assert both > chase["prey"] + 5.0, f"fleeing prey {both:.1f} vs random prey {chase['prey']:.1f} (against chasers)"


def test_heuristic_lookup_and_assignment():
    assert heuristic("simple_spread") is HEURISTICS["simple_spread"]
    with pytest.raises(ValueError, match="simple_spread"):
        heuristic("no_such_env")
    a = torch.tensor([[[0.0, 0.0], [1.0, 0.0]]])
    lm = torch.tensor([[[1.1, 0.0], [0.1, 0.0]]])
    assert assign_landmarks(a, lm).tolist() == [[1, 0]]
    big = torch.rand(3, 9, 2)
    perm = assign_landmarks(big, big.flip(1))  # greedy path (N > 7): still a permutation
    assert (perm.sort(-1).values == torch.arange(9)).all()


# ---------------------------------------------------------------------- fast path vs world.py
def test_batch_last_physics_matches_world_functions():
    g = torch.Generator().manual_seed(0)
    B = 6
    ent = Entities.build([0.15, 0.075, 0.05, 0.2, 0.2], 3, max_speed=[1.0, 1.3, None, None, None], accel=[3.0, 4.0, None, None, None], collide=[True, True, True, True, False])
    P = PhysicsParams()
    pos = torch.rand(B, 5, 2, generator=g) * 0.6 - 0.3  # crowded: many contacts
    vel = torch.rand(B, 5, 2, generator=g) - 0.5
    vel[:, 3:] = 0
    ref = contact_forces(pos, ent, P)
    fast = contact_forces_bl(pos.permute(1, 2, 0).contiguous(), ContactPairs.build(ent), P).permute(2, 0, 1)
    assert torch.allclose(ref, fast, atol=1e-4, rtol=1e-5)
    p_ref, v_ref = integrate(pos, vel, ref, ent, P)
    p_bl, v_bl = integrate_bl(pos[:, :3].permute(1, 2, 0), vel[:, :3].permute(1, 2, 0), ref[:, :3].permute(1, 2, 0), P, max_speed=ent.max_speed[:3].reshape(3, 1, 1))
    assert torch.allclose(p_ref[:, :3], p_bl.permute(2, 0, 1), atol=1e-6)
    assert torch.allclose(v_ref[:, :3], v_bl.permute(2, 0, 1), atol=1e-6)
    acc = ent.accel[:3]
    d = torch.randint(0, 5, (B, 3), generator=g)
    assert torch.equal(discrete_action_force(d, acc), discrete_action_force_bl(d, acc).permute(2, 0, 1))
    c = torch.rand(B, 3, 5, generator=g)
    assert torch.allclose(continuous_action_force(c, acc), continuous_action_force_bl(c, acc).permute(2, 0, 1))


def test_vector_obs_is_exact():
    x = torch.randn(4, 2, 7)  # (V, 2, B)
    vo = VectorObs(4, [[self_vec(0), rel_vec(2, 1), ZERO], [self_vec(3), rel_vec(1, 2), rel_vec(0, 3)]])
    out = vo(x)  # (B, 2, 6)
    xb = x.permute(2, 0, 1)
    want = torch.stack(
        [
            torch.cat([xb[:, 0], xb[:, 2] - xb[:, 1], torch.zeros(7, 2)], -1),
            torch.cat([xb[:, 3], xb[:, 1] - xb[:, 2], xb[:, 0] - xb[:, 3]], -1),
        ],
        1,
    )
    assert torch.equal(out, want)


def test_render_draws_entities():
    for name in ("simple_spread", "simple_tag"):
        env = make_env(name, num_envs=2)
        env.reset(seed=0)
        img = env.render()
        assert img.shape == (350, 350, 3) and img.dtype.name == "uint8"
        assert (img != 255).any(axis=-1).mean() > 0.01  # something was drawn
