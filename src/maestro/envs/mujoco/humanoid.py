"""Humanoid master and slave (Guo & Duan, papers/000, Sec. 4.1.2), over Gymnasium's Humanoid-v5.

Gymnasium's ``Humanoid-v5`` (model ``humanoid.xml``, 5 substeps of 3 ms per step), batched over
``B`` copies by ``BatchedPhysics``. One group ``agent`` with one agent. The reward, the healthy range
(root z in ``(1, 2)``, the episode terminates outside it) and the reset noise (``1e-2``) are
Gymnasium's for both roles:
``1.25 x_velocity (of the centre of mass) + 5 healthy - 0.1 |ctrl|^2 - min(5e-7 |cfrc_ext|^2, 10)``.

* ``role="master"``, the full body: Gymnasium's default observation ``(B, 1, 348)``:
  ``qpos[2:]`` (22) | ``qvel`` (23) | ``cinert[1:]`` (130) | ``cvel[1:]`` (78) |
  ``qfrc_actuator[6:]`` (17) | ``cfrc_ext[1:]`` (78); actions ``(B, 1, 17)`` in ``Box(-0.4, 0.4)``,
  all 17 actuators.
* ``role="slave"``, the reduced body: the joint positions and velocities only, observation
  ``(B, 1, 45)`` = the master's first 45 numbers (``SLAVE_OBS``): ``qpos[2:24]`` (root height,
  root orientation quaternion (4), the 17 hinge angles) and ``qvel[0:23]`` (root linear and angular
  velocity (6), the 17 hinge velocities); actions ``(B, 1, 11)``, the lower-body actuators
  ``SLAVE_ACTUATORS`` = actuators 0-10 (abdomen y/z/x, right hip x/z/y, right knee, left hip x/z/y,
  left knee); the six arm actuators (shoulders, elbows: 11-16) are held at 0. The paper keeps "joints
  locations and velocities (46 dim)" of Humanoid-v3 and the "lower body" actions; v5 has 45 such
  numbers (v3's 376-number observation also carried the world body's rows).
* ``info["success"]``: the episode reached ``max_steps`` (1000) without falling (the paper reports
  episode return and length for Humanoid, Table 2).

With ``threads=1`` a master copy's trajectory is bit-identical to Gymnasium's env, from the same
state under the same actions (``tests/test_mujoco.py``).
"""

from __future__ import annotations

import gymnasium.spaces as gspaces
import numpy as np
import torch
from torch import Tensor

from maestro.envs.api import BatchedEnv, Obs, group_spec
from maestro.envs.mujoco.common import BodyConfig, agent_obs, load_model, place_copies, reset_copies, restore_sim_state, side_view, sim_state
from maestro.envs.mujoco.physics import BatchedPhysics, gymnasium_asset
from maestro.registry import register_env
from maestro.spec import EnvSpec

FRAME_SKIP = 5
HEALTHY_Z = (1.0, 2.0)
RESET_NOISE = 1e-2
FORWARD_WEIGHT, HEALTHY_REWARD, CTRL_COST, CONTACT_COST, CONTACT_COST_MAX = 1.25, 5.0, 0.1, 5e-7, 10.0
SLAVE_OBS = tuple(range(45))
"""The slave's observation in the master's: ``qpos[2:24]`` and ``qvel[0:23]`` (module docstring)."""
SLAVE_ACTUATORS = tuple(range(11))
"""The slave's actuators: abdomen (3), right leg (4), left leg (4); the arms (11-16) stay at 0."""


@register_env("humanoid", config=BodyConfig)
class Humanoid(BatchedEnv):
    """Humanoid-v5 with a master (full body) and a slave (45 observations, 11 lower-body actuators) role (papers/000)."""

    def __init__(self, cfg: BodyConfig, num_envs: int = 1, seed: int = 0, device: str | torch.device = "cpu") -> None:
        super().__init__(cfg, num_envs, seed, device)
        self.model = load_model(gymnasium_asset("humanoid.xml"))
        self.physics = BatchedPhysics(self.model, FRAME_SKIP, num_envs, cfg.threads, post_constraint=True)
        self.dt = float(self.model.opt.timestep) * FRAME_SKIP
        self.init_qpos = self.physics.data[0].qpos.copy()
        self.init_qvel = self.physics.data[0].qvel.copy()
        self.body_mass = self.model.body_mass.copy()
        self.slave = cfg.role == "slave"
        self.full_obs_dim = (self.model.nq - 2) + self.model.nv + 10 * (self.model.nbody - 1) + 6 * (self.model.nbody - 1) + (self.model.nv - 6) + 6 * (self.model.nbody - 1)
        self.actuators = np.asarray(SLAVE_ACTUATORS if self.slave else range(self.model.nu))
        obs_dim = len(SLAVE_OBS) if self.slave else self.full_obs_dim
        low, high = self.model.actuator_ctrlrange[self.actuators].T.astype(np.float32)
        self.spec = EnvSpec(
            "humanoid",
            {"agent": group_spec("agent", 1, obs_dim, gspaces.Box(low, high, dtype=np.float32))},
            max_steps=cfg.max_steps,
            state_shape=(0,),
            info_keys=("success",),
            roles=("master", "slave"),
        )
        self._obs = np.zeros((num_envs, self.full_obs_dim))
        self._com = np.zeros((num_envs, 2))

    def slave_indices(self) -> tuple[list[int], list[int]]:
        """The slave's observation and action dimensions in the master's (``SLAVE_OBS``, ``SLAVE_ACTUATORS``)."""
        return list(SLAVE_OBS), list(SLAVE_ACTUATORS)

    # ------------------------------------------------------------------ hooks
    def _observe_physics(self) -> np.ndarray:
        """Gymnasium's ``_get_obs`` for every copy, ``(B, 348)`` float64."""
        g = self.physics.gather
        B = self.num_envs
        return np.concatenate(
            [g("qpos")[:, 2:], g("qvel"), g("cinert")[:, 1:].reshape(B, -1), g("cvel")[:, 1:].reshape(B, -1), g("qfrc_actuator")[:, 6:], g("cfrc_ext")[:, 1:].reshape(B, -1)],
            axis=1,
        )

    def _mass_center(self) -> np.ndarray:
        """``(B, 2)`` x, y of the centre of mass (Gymnasium's ``mass_center``)."""
        xipos = self.physics.gather("xipos")
        return np.einsum("b,nbj->nj", self.body_mass, xipos)[:, :2] / self.body_mass.sum()

    def place(self, qpos: np.ndarray, qvel: np.ndarray, index: np.ndarray | None = None) -> Obs:
        """The observation after ``common.place_copies`` (copies at a given joint state, as Gymnasium resets)."""
        place_copies(self, qpos, qvel, index)
        return self._observe()

    def _refresh(self, index: np.ndarray) -> None:
        self._obs[index] = self._observe_physics()[index]
        self._com[index] = self._mass_center()[index]

    def _reset_copies(self, mask: Tensor) -> None:
        reset_copies(self, mask, RESET_NOISE)

    def _step_world(self, actions: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor, dict[str, Tensor]]:
        action = actions["agent"][:, 0].cpu().numpy().astype(np.float64)
        ctrl = np.zeros((self.num_envs, self.model.nu))
        ctrl[:, self.actuators] = action
        com_before = self._com
        self.physics.step(ctrl)
        self._com = self._mass_center()
        x_velocity = (self._com[:, 0] - com_before[:, 0]) / self.dt
        z = self.physics.gather("qpos")[:, 2]
        healthy = (HEALTHY_Z[0] < z) & (z < HEALTHY_Z[1])
        cfrc_ext = self.physics.gather("cfrc_ext").reshape(self.num_envs, -1)
        contact_cost = np.clip(CONTACT_COST * np.sum(np.square(cfrc_ext), axis=1), -np.inf, CONTACT_COST_MAX)
        ctrl_cost = CTRL_COST * np.sum(np.square(ctrl), axis=1)
        reward = (FORWARD_WEIGHT * x_velocity + healthy * HEALTHY_REWARD) - (ctrl_cost + contact_cost)
        self._obs = self._observe_physics()
        terminated = torch.as_tensor(~healthy, device=self.device)
        success = (self._t + 1 >= self.spec.max_steps) & ~terminated
        return {"agent": torch.as_tensor(reward, dtype=torch.float32, device=self.device)[:, None]}, terminated, {"success": success}

    def _observe(self) -> Obs:
        return agent_obs(self._obs[:, list(SLAVE_OBS)] if self.slave else self._obs, self.device)

    def _global_state(self) -> Tensor:
        return torch.zeros(self.num_envs, 0, device=self.device)

    def _get_sim_state(self) -> dict[str, Tensor]:
        return sim_state(self.physics, {"obs": self._obs, "com": self._com}, self.device)

    def _set_sim_state(self, state: dict[str, Tensor]) -> None:
        restore_sim_state(self.physics, state, {"obs": self._obs, "com": self._com})

    def render(self) -> np.ndarray:
        """A side view of copy 0 (``common.side_view``)."""
        return side_view(self.physics)
