"""A tiny two-group env used to test the contract machinery itself (not registered)."""

from dataclasses import dataclass

import gymnasium.spaces as gspaces
import numpy as np
import torch

from maestro.envs.api import BatchedEnv, group_spec
from maestro.spec import EnvSpec


@dataclass(frozen=True)
class ToyConfig:
    n_walkers: int = 2
    """walkers (discrete group)"""
    max_steps: int = 6
    """episode length"""
    goal: float = 2.0
    """terminate when any walker passes this position"""


class ToyEnv(BatchedEnv):
    """Walkers on a line (discrete -1/0/+1) and one pusher (continuous in [-1, 1])."""

    def __init__(self, cfg=ToyConfig(), num_envs=1, seed=0, device="cpu"):
        super().__init__(cfg, num_envs, seed, device)
        self.spec = EnvSpec(
            "toy",
            {
                "walker": group_spec("walker", cfg.n_walkers, 2, gspaces.Discrete(3)),
                "pusher": group_spec("pusher", 1, 2, gspaces.Box(-1.0, 1.0, (1,), dtype=np.float32)),
            },
            max_steps=cfg.max_steps,
            state_shape=(cfg.n_walkers + 1,),
            info_keys=("reached", "moved"),
            episode_sums=("moved",),
        )
        self.pos = torch.zeros(num_envs, cfg.n_walkers + 1, device=self.device)

    def _reset_copies(self, mask):
        fresh = torch.rand(self.num_envs, self.cfg.n_walkers + 1, generator=self.rng, device=self.device) - 0.5
        self.pos = torch.where(mask[:, None], fresh, self.pos)

    def _step_world(self, actions):
        step = torch.cat([actions["walker"].float() - 1.0, actions["pusher"][..., 0]], dim=1) * 0.5
        self.pos = self.pos + step
        reached = (self.pos[:, :-1] > self.cfg.goal).any(1)
        r = -self.pos.abs()
        moved = (actions["walker"] != 1).sum(1).float()
        return {"walker": r[:, :-1], "pusher": r[:, -1:]}, reached, {"reached": reached.float(), "moved": moved}

    def _observe(self):
        t = self._t.float()[:, None, None]
        return {
            "walker": torch.cat([self.pos[:, :-1, None], t.expand(-1, self.cfg.n_walkers, 1)], -1),
            "pusher": torch.cat([self.pos[:, -1:, None], t], -1),
        }

    def _global_state(self):
        return self.pos.clone()

    def _get_sim_state(self):
        return {"pos": self.pos}

    def _set_sim_state(self, s):
        self.pos = s["pos"]

    def render(self):
        return np.zeros((8, 8, 3), dtype=np.uint8)
