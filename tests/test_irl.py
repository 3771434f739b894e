"""The architecture-search env (``nas``), apprenticeship learning (``core/irl.py``) and the ``irl``
learner with and without slaves (papers/000, Sec. 5, Fig. 9)."""

import dataclasses
import json
import math

import pytest
import torch

import maestro
from maestro.algos import IncompatibleError, check_compatible, incompatibility
from maestro.algos.irl import Config, expert_feature_expectations, step_positions
from maestro.core.irl import feature_expectations, projection_step, reward_weights
from maestro.envs.nas.architecture import FULL_OPS, REDUCED_OPS, expert_ops
from maestro.recipes import load_recipe, train_recipe


# ---------------------------------------------------------------------- the env
def test_roles_have_the_papers_search_spaces():
    master, slave = maestro.make_env("nas", role="master"), maestro.make_env("nas", role="slave")
    assert (master.spec.groups["agent"].action_dim, master.spec.max_steps) == (15, 24)  # 15^24
    assert (slave.spec.groups["agent"].action_dim, slave.spec.max_steps) == (11, 8)  # 11^8
    assert set(REDUCED_OPS) < set(FULL_OPS)
    assert master.spec.reward_features == 16 * 15 and slave.spec.reward_features == 12 * 11


def test_expert_is_resnext_in_each_vocabulary():
    block = ["conv1x1", "group_conv3x3", "conv1x1", "add"]
    master = [FULL_OPS[i] for i in expert_ops(FULL_OPS, 24)]
    assert master == ["conv3x3", *block, *block, "max_pool3x3", *block, *block, "max_pool3x3", *block, "terminal"]
    assert [REDUCED_OPS[i] for i in expert_ops(REDUCED_OPS, 8)] == ["conv3x3", *block, "terminal"]


def play(env, ops):
    """Play one architecture in copy 0 (every copy the same); the step outputs."""
    env.reset(seed=0)
    outs = []
    for a in ops:
        outs.append(env.step({"agent": torch.full((env.num_envs, 1), a, dtype=torch.long)}))
    return outs


def test_observation_encodes_position_previous_op_and_histogram():
    env = maestro.make_env("nas", role="slave")
    K, L = env.K, env.L
    conv3, conv1 = REDUCED_OPS.index("conv3x3"), REDUCED_OPS.index("conv1x1")
    outs = play(env, [conv3, conv1])
    obs = outs[-1].obs["agent"][0, 0]
    expected = torch.zeros(L + K + 1 + K)
    expected[2] = 1.0  # third decision next
    expected[L + conv1] = 1.0  # previous layer
    expected[L + K + 1 + conv3] = expected[L + K + 1 + conv1] = 1.0 / L
    torch.testing.assert_close(obs, expected)
    first = env.reset(seed=0)["agent"][0, 0]
    assert first[0] == 1.0 and first[L + K] == 1.0 and first[L + K + 1 :].sum() == 0  # the input layer


def test_replaying_the_expert_matches_it_and_earns_the_hand_computed_reward():
    env = maestro.make_env("nas", role="slave", num_envs=2)
    outs = play(env, env.expert)
    assert bool(outs[-1].terminated.all()) and not bool(torch.stack([o.done for o in outs[:-1]]).any())  # "terminal" ends it
    assert float(outs[-1].info["expert_match"][0]) == 1.0
    # six distinct (previous, next) pairs, each weighted 1/sqrt(6) by the default reward
    assert float(outs[-1].info["episode_return/agent"][0, 0]) == pytest.approx(6 / math.sqrt(6), rel=1e-6)


def test_expert_match_counts_equal_layers_and_the_episode_ends_after_L():
    env = maestro.make_env("nas", role="slave")
    ops = list(env.expert[:3]) + [REDUCED_OPS.index("identity")] * 5  # 3 of 8 layers right, never "terminal"
    outs = play(env, ops)
    assert bool(outs[-1].terminated[0]) and float(outs[-1].info["episode_length"][0]) == 8
    assert float(outs[-1].info["expert_match"][0]) == pytest.approx(3 / 8)


def test_reward_is_linear_in_the_features():
    env = maestro.make_env("nas", role="master", num_envs=16, seed=3)
    obs = env.reset(seed=3)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        a = torch.randint(0, env.K, (16, 1), generator=g)
        out = env.step({"agent": a})
        torch.testing.assert_close(out.reward["agent"], env.reward_features(obs["agent"], a) @ env.reward_weights)
        obs = out.obs


def test_slave_indices_map_operations_by_name():
    master = maestro.make_env("nas", role="master")
    obs_index, op_index = master.slave_indices()
    assert [FULL_OPS[i] for i in op_index] == list(REDUCED_OPS)
    slave = maestro.make_env("nas", role="slave")
    assert len(obs_index) == slave.obs_dim and len(set(obs_index)) == len(obs_index)
    # the slave's observation of an architecture sits at those indices of the master's observation of the same one
    s_obs = play(slave, [REDUCED_OPS.index("conv3x3"), REDUCED_OPS.index("add")])[-1].obs["agent"][0, 0]
    m_obs = play(master, [FULL_OPS.index("conv3x3"), FULL_OPS.index("add")])[-1].obs["agent"][0, 0]
    torch.testing.assert_close(m_obs[obs_index] * torch.tensor([1.0] * (8 + 12) + [24 / 8] * 11), s_obs)


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="role"):
        maestro.make_env("nas", role="boss")
    with pytest.raises(ValueError, match="layers"):
        maestro.make_env("nas", layers=1)


# ---------------------------------------------------------------------- apprenticeship learning
def test_feature_expectations_against_a_loop():
    g = torch.Generator().manual_seed(0)
    T, B, F, gamma = 12, 3, 5, 0.9
    phi = torch.rand(T, B, F, generator=g)
    done = torch.rand(T, B, generator=g) < 0.3
    pos, _ = step_positions(torch.tensor([0, 2, 0]), done)
    ref, starts = torch.zeros(F), 0
    for b in range(B):
        t = [0, 2, 0][b]
        for s in range(T):
            ref += gamma**t * phi[s, b]
            starts += t == 0
            t = 0 if done[s, b] else t + 1
    torch.testing.assert_close(feature_expectations(phi, pos, gamma), ref / starts)


def test_projection_step_is_the_orthogonal_projection_clipped_to_the_segment():
    mu_e = torch.tensor([1.0, 1.0])
    assert torch.equal(projection_step(None, torch.tensor([0.0, 0.0]), mu_e), torch.zeros(2))
    # mu_E projects onto the segment from (0, 0) to (2, 0) at (1, 0)
    torch.testing.assert_close(projection_step(torch.zeros(2), torch.tensor([2.0, 0.0]), mu_e), torch.tensor([1.0, 0.0]))
    # beyond the new point: clipped at it; behind the old one: stays
    torch.testing.assert_close(projection_step(torch.zeros(2), torch.tensor([0.5, 0.0]), mu_e), torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(projection_step(torch.zeros(2), torch.tensor([-1.0, 0.0]), mu_e), torch.zeros(2))
    w, t = reward_weights(mu_e, torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(w, torch.tensor([0.0, 1.0]))
    assert float(t) == 1.0


def test_the_margin_never_grows():
    g = torch.Generator().manual_seed(1)
    mu_e, mu_bar = torch.rand(6, generator=g), None
    margins = []
    for _ in range(30):
        mu_bar = projection_step(mu_bar, torch.rand(6, generator=g), mu_e)
        margins.append(float((mu_e - mu_bar).norm()))
    assert all(b <= a + 1e-6 for a, b in zip(margins, margins[1:])) and margins[-1] < margins[0]


def test_expert_feature_expectations_of_the_slave():
    env = maestro.make_env("nas", role="slave")
    mu = expert_feature_expectations(env, 0.5)
    pairs = list(zip([env.K, *env.expert[:-1]], env.expert))
    ref = torch.zeros(env.spec.reward_features)
    for t, (p, a) in enumerate(pairs):
        ref[p * env.K + a] += 0.5**t
    torch.testing.assert_close(mu, ref)


# ---------------------------------------------------------------------- the learner
def test_irl_needs_reward_features_and_roles():
    with pytest.raises(IncompatibleError, match="reward linear in features"):
        check_compatible("irl", dataclasses.replace(maestro.make_env("nas").spec, reward_features=0))
    assert incompatibility("irl", maestro.make_env("nas").spec) is None
    assert "coordinates several agents" in incompatibility("matrpo", maestro.make_env("nas").spec)
    with pytest.raises(ValueError, match="slaves"):
        Config(slaves=-1)


@pytest.mark.parametrize("slaves", [0, 1])
def test_irl_learns_to_match_the_expert(slaves, tmp_path):
    """On a 6-layer search the master's feature distance to the expert falls from about 1 to below
    a third within 12k env steps, alone and with a slave (a few seconds each)."""
    overrides = [
        f"algo_config.slaves={slaves}",
        "env_config.layers=6",
        "algo_config.rollout_steps=12",
        "run.env_steps=12000",
        "run.eval_every=0",
        "run.checkpoint_every=0",
    ]
    result = train_recipe(load_recipe("master_slave/nas_irl_gradient_momentum", overrides), out=tmp_path, progress=False)
    rows = [r for r in map(json.loads, (result.dir / "metrics.jsonl").read_text().splitlines()) if "irl/relative_distance" in r]
    first = [r["irl/relative_distance"] for r in rows[:3]]
    last = [r["irl/relative_distance"] for r in rows[-10:]]
    assert min(first) > 0.8
    assert sum(last) / len(last) < 0.33
    if slaves:
        assert "slave0/irl/relative_distance" in rows[-1]
