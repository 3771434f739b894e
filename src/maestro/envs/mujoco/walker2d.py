"""Walker2d master and slave (Guo & Duan, papers/000, Sec. 4.1.1), over Gymnasium's Walker2d-v5.

Gymnasium's ``Walker2d-v5`` (model ``walker2d_v5.xml``, 4 substeps of 2 ms per step), batched over
``B`` copies by ``BatchedPhysics``. One group ``agent`` with one agent:

* observation ``(B, 1, 17)``: ``qpos[1:]`` (8: root height z, root angle, six joint angles) and
  ``clip(qvel, -10, 10)`` (9), as Gymnasium's;
* action ``(B, 1, 6)`` in ``Box(-1, 1)``: the six joint torques;
* reward ``x_velocity + healthy - 1e-3 |a|^2`` with ``healthy = 1`` while healthy, as Gymnasium's;
* healthy: root angle in ``(-1, 1)`` and the height z of the root in the role's range; the episode
  terminates when it is not:

  - ``role="slave"``: ``z in (0.8, 2.0)``, Gymnasium's default;
  - ``role="master"``: ``z in (1.1, 1.4)``, the paper's strict constraint (also in the healthy reward).

* ``info["success"]``: the episode reached ``max_steps`` (1000) without falling, i.e. without
  leaving the role's healthy range (Table 1's success: judged with the master's constraint for the
  master). The reset draws ``qpos``/``qvel`` noise uniform in ``[-5e-3, 5e-3]`` as Gymnasium, from
  the env's torch generator.

With ``threads=1`` a copy's trajectory is bit-identical to Gymnasium's env with the same healthy
range, from the same state under the same actions (``tests/test_mujoco.py``).
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

FRAME_SKIP = 4
HEALTHY_Z = {"slave": (0.8, 2.0), "master": (1.1, 1.4)}
"""Root height range of each role (papers/000, Sec. 4.1.1)."""
HEALTHY_ANGLE = (-1.0, 1.0)
RESET_NOISE = 5e-3
CTRL_COST = 1e-3


@register_env("walker2d", config=BodyConfig)
class Walker2d(BatchedEnv):
    """Walker2d-v5 with a master (z in (1.1, 1.4)) and a slave (z in (0.8, 2.0)) role (papers/000)."""

    def __init__(self, cfg: BodyConfig, num_envs: int = 1, seed: int = 0, device: str | torch.device = "cpu") -> None:
        super().__init__(cfg, num_envs, seed, device)
        self.model = load_model(gymnasium_asset("walker2d_v5.xml"))
        self.physics = BatchedPhysics(self.model, FRAME_SKIP, num_envs, cfg.threads)
        self.dt = float(self.model.opt.timestep) * FRAME_SKIP
        self.healthy_z = HEALTHY_Z[cfg.role]
        self.init_qpos = self.physics.data[0].qpos.copy()
        self.init_qvel = self.physics.data[0].qvel.copy()
        low, high = self.model.actuator_ctrlrange.T.astype(np.float32)
        self.obs_dim = self.model.nq + self.model.nv - 1
        self.spec = EnvSpec(
            "walker2d",
            {"agent": group_spec("agent", 1, self.obs_dim, gspaces.Box(low, high, dtype=np.float32))},
            max_steps=cfg.max_steps,
            state_shape=(0,),
            info_keys=("success",),
            roles=("master", "slave"),
        )
        self._obs = np.zeros((num_envs, self.obs_dim))

    def slave_indices(self) -> tuple[list[int], list[int]]:
        """The slave's observation and action dimensions in the master's: the same 17 and 6."""
        return list(range(self.obs_dim)), list(range(self.model.nu))

    # ------------------------------------------------------------------ hooks
    def _observe_physics(self) -> np.ndarray:
        qpos, qvel = self.physics.gather("qpos"), self.physics.gather("qvel")
        return np.concatenate([qpos[:, 1:], np.clip(qvel, -10, 10)], axis=1)

    def _healthy(self, qpos: np.ndarray) -> np.ndarray:
        z, angle = qpos[:, 1], qpos[:, 2]
        return (self.healthy_z[0] < z) & (z < self.healthy_z[1]) & (HEALTHY_ANGLE[0] < angle) & (angle < HEALTHY_ANGLE[1])

    def place(self, qpos: np.ndarray, qvel: np.ndarray, index: np.ndarray | None = None) -> Obs:
        """Put copies ``index`` (default: all) at joint positions ``qpos`` ``(n, nq)`` and velocities
        ``qvel`` ``(n, nv)`` as Gymnasium's ``reset`` does; returns the observation. The step counters
        are left alone (tests, parity with Gymnasium)."""
        place_copies(self, qpos, qvel, index)
        return self._observe()

    def _refresh(self, index: np.ndarray) -> None:
        self._obs[index] = self._observe_physics()[index]

    def _reset_copies(self, mask: Tensor) -> None:
        reset_copies(self, mask, RESET_NOISE)

    def _step_world(self, actions: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor, dict[str, Tensor]]:
        action = actions["agent"][:, 0].cpu().numpy()  # (B, 6) float32, as a Gymnasium agent passes it
        x_before = self.physics.gather("qpos")[:, 0]
        self.physics.step(action.astype(np.float64))
        qpos = self.physics.gather("qpos")
        x_velocity = (qpos[:, 0] - x_before) / self.dt
        healthy = self._healthy(qpos)
        ctrl_cost = CTRL_COST * np.sum(np.square(action), axis=1)  # float32, as Gymnasium's
        reward = (x_velocity + healthy * 1.0) - ctrl_cost
        self._obs = self._observe_physics()
        terminated = torch.as_tensor(~healthy, device=self.device)
        success = (self._t + 1 >= self.spec.max_steps) & ~terminated
        return {"agent": torch.as_tensor(reward, dtype=torch.float32, device=self.device)[:, None]}, terminated, {"success": success}

    def _observe(self) -> Obs:
        return agent_obs(self._obs, self.device)

    def _global_state(self) -> Tensor:
        return torch.zeros(self.num_envs, 0, device=self.device)

    def _get_sim_state(self) -> dict[str, Tensor]:
        return sim_state(self.physics, {"obs": self._obs}, self.device)

    def _set_sim_state(self, state: dict[str, Tensor]) -> None:
        restore_sim_state(self.physics, state, {"obs": self._obs})

    def render(self) -> np.ndarray:
        """A side view of copy 0 (``common.side_view``)."""
        return side_view(self.physics)
