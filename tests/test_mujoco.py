"""The MuJoCo bodies (walker2d, humanoid; papers/000 Sec. 4.1): the batched contract, trajectories
against Gymnasium's own envs, the master/slave healthy ranges and success flags on hand-set states,
and the reduced Humanoid's observation indices and actuators."""

import copy

import mujoco
import numpy as np
import pytest
import torch

import maestro
from maestro.envs.check import check_env
from maestro.envs.mujoco.humanoid import SLAVE_ACTUATORS, SLAVE_OBS

gym = pytest.importorskip("gymnasium")


@pytest.mark.parametrize("name", ["walker2d", "humanoid"])
@pytest.mark.parametrize("role", ["master", "slave"])
def test_check_env(name, role):
    check_env(name, num_envs=3, seed=1, role=role, max_steps=15)


def test_check_env_rollout_stepper():
    check_env("humanoid", num_envs=3, seed=2, max_steps=12, threads=2)


@pytest.mark.parametrize("threads", [1, 2])
def test_deepcopy_continues_exactly(threads):
    env = maestro.make_env("humanoid", num_envs=2, seed=0, threads=threads)
    env.reset()
    twin = copy.deepcopy(env)
    a = {"agent": torch.full((2, 1, 17), 0.1)}
    for _ in range(3):
        assert torch.equal(env.step(a).obs["agent"], twin.step(a).obs["agent"])


def _actions(space, n, seed, scale):
    rng = np.random.default_rng(seed)
    return (scale * rng.uniform(space.low, space.high, size=(n, *space.shape))).astype(np.float32)


@pytest.mark.parametrize(
    "name, gym_id, role, gym_kwargs, threads, atol",
    [
        ("walker2d", "Walker2d-v5", "slave", {}, 1, 0.0),
        ("walker2d", "Walker2d-v5", "master", {"healthy_z_range": (1.1, 1.4)}, 1, 0.0),
        ("humanoid", "Humanoid-v5", "master", {}, 1, 0.0),
        ("walker2d", "Walker2d-v5", "slave", {}, 2, 1e-6),
    ],
)
def test_trajectories_match_gymnasium(name, gym_id, role, gym_kwargs, threads, atol):
    """From Gymnasium's reset state, the same actions give the same observations, rewards and
    terminations: bit for bit with the loop stepper, to solver round-off with mujoco.rollout."""
    genv = gym.make(gym_id, **gym_kwargs)
    gobs, _ = genv.reset(seed=7)
    env = maestro.make_env(name, num_envs=1, seed=0, role=role, threads=threads)
    env.reset()
    data = genv.unwrapped.data
    obs = env.place(data.qpos.copy(), data.qvel.copy())
    np.testing.assert_array_equal(obs["agent"][0, 0].numpy(), gobs.astype(np.float32))
    steps = 0
    for a in _actions(genv.action_space, 40, seed=3, scale=0.3):
        gobs, grew, gterm, _, _ = genv.step(a)
        out = env.step({"agent": torch.as_tensor(a)[None, None]})
        np.testing.assert_allclose(out.final_obs["agent"][0, 0].numpy(), gobs.astype(np.float32), rtol=atol, atol=atol)
        np.testing.assert_allclose(float(out.reward["agent"][0, 0]), np.float32(grew), rtol=atol, atol=atol)
        assert bool(out.terminated[0]) == gterm
        steps += 1
        if gterm:
            break
    assert steps >= 10


def _walker(role, z, max_steps=1000):
    env = maestro.make_env("walker2d", num_envs=1, seed=0, role=role, max_steps=max_steps)
    env.reset()
    qpos = env.init_qpos.copy()
    qpos[1] = z
    env.place(qpos, np.zeros(env.model.nv))
    return env


@pytest.mark.parametrize("z, slave_falls, master_falls", [(1.05, False, True), (1.25, False, False), (1.5, False, True), (0.7, True, True)])
def test_walker_healthy_ranges_on_hand_set_states(z, slave_falls, master_falls):
    zero = {"agent": torch.zeros(1, 1, 6)}
    for role, falls in (("slave", slave_falls), ("master", master_falls)):
        out = _walker(role, z).step(zero)
        assert bool(out.terminated[0]) == falls, (role, z)
        # the healthy reward is the role's: 1 while healthy (the first step barely moves the walker)
        assert abs(float(out.reward["agent"][0, 0]) - (0.0 if falls else 1.0)) < 0.05, (role, z, float(out.reward["agent"][0, 0]))


def test_walker_success_is_surviving_max_steps_under_the_roles_constraint():
    zero = {"agent": torch.zeros(1, 1, 6)}
    slave = _walker("slave", 1.05, max_steps=3)
    master = _walker("master", 1.05, max_steps=3)
    outs = [slave.step(zero) for _ in range(3)]
    assert [bool(o.done[0]) for o in outs] == [False, False, True]
    assert bool(outs[-1].truncated[0]) and bool(outs[-1].info["success"][0])
    first = master.step(zero)
    assert bool(first.terminated[0]) and not bool(first.info["success"][0])
    upright = _walker("master", 1.25, max_steps=3)
    last = [upright.step(zero) for _ in range(3)][-1]
    assert bool(last.truncated[0]) and bool(last.info["success"][0])


def test_reduced_humanoid_observation_indices_and_actuators():
    master = maestro.make_env("humanoid", num_envs=1, seed=0, role="master")
    slave = maestro.make_env("humanoid", num_envs=1, seed=0, role="slave")
    assert master.spec.groups["agent"].obs_shape == (348,) and master.spec.groups["agent"].action_dim == 17
    assert slave.spec.groups["agent"].obs_shape == (45,) and slave.spec.groups["agent"].action_dim == 11
    m = master.model
    names = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_ACTUATOR, i) for i in range(m.nu)]
    kept = [names[i] for i in SLAVE_ACTUATORS]
    assert all(n.startswith(("abdomen", "right_hip", "right_knee", "left_hip", "left_knee")) for n in kept) and len(kept) == 11
    assert all(n.startswith(("right_shoulder", "left_shoulder", "right_elbow", "left_elbow")) for n in set(names) - set(kept))
    rng = np.random.default_rng(0)
    master.reset()
    slave.reset()
    qpos = master.init_qpos + rng.uniform(-0.05, 0.05, m.nq)
    qvel = rng.uniform(-0.5, 0.5, m.nv)
    full = master.place(qpos, qvel)["agent"][0, 0]
    reduced = slave.place(qpos, qvel)["agent"][0, 0]
    # the slave sees qpos[2:] and qvel: the master's first 45 numbers
    np.testing.assert_array_equal(reduced.numpy(), full[list(SLAVE_OBS)].numpy())
    np.testing.assert_array_equal(reduced.numpy(), np.concatenate([qpos[2:], qvel]).astype(np.float32))
    # the slave's 11 actions drive the lower-body actuators, the arms stay at 0; the same control
    # through the master gives the same step
    a = (0.3 * rng.uniform(-0.4, 0.4, 11)).astype(np.float32)
    out_s = slave.step({"agent": torch.as_tensor(a)[None, None]})
    np.testing.assert_array_equal(slave.physics.data[0].ctrl, np.concatenate([a, np.zeros(6)]).astype(np.float64))
    out_m = master.step({"agent": torch.as_tensor(np.concatenate([a, np.zeros(6, np.float32)]))[None, None]})
    np.testing.assert_array_equal(out_s.final_obs["agent"][0, 0].numpy(), out_m.final_obs["agent"][0, 0, :45].numpy())
    assert float(out_s.reward["agent"][0, 0]) == float(out_m.reward["agent"][0, 0])
    assert slave.slave_indices() == (list(range(45)), list(range(11)))


def test_role_is_validated():
    with pytest.raises(ValueError, match="role"):
        maestro.make_env("walker2d", role="boss")
