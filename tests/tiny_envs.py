"""Tiny batched envs with known optima for the PPO and run tests (not registered)."""

from dataclasses import dataclass

import gymnasium.spaces as gspaces
import numpy as np
import torch

from maestro.envs.api import BatchedEnv, group_spec
from maestro.spec import EnvSpec


@dataclass(frozen=True)
class MatchConfig:
    n_agents: int = 2
    """agents in the one group"""
    n_targets: int = 3
    """size of the target alphabet (and of Discrete actions)"""
    max_steps: int = 5
    """episode length"""
    continuous: bool = False
    """Box(0, 1, (1,)) actions: reward -|a - target / (n_targets - 1)|"""
    masked: bool = False
    """expose action masks forbidding action (target + 1) % n_targets; taking it raises"""
    dead_agent: bool = False
    """the last agent is never alive (zero obs, zero reward)"""


class MatchEnv(BatchedEnv):
    """Each agent sees a one-hot target and is rewarded for naming it (optimum: return = max_steps)."""

    def __init__(self, cfg=MatchConfig(), num_envs=1, seed=0, device="cpu"):
        super().__init__(cfg, num_envs, seed, device)
        space = gspaces.Box(0.0, 1.0, (1,), dtype=np.float32) if cfg.continuous else gspaces.Discrete(cfg.n_targets)
        self.spec = EnvSpec(
            "match",
            {"agent": group_spec("agent", cfg.n_agents, cfg.n_targets, space, has_action_mask=cfg.masked and not cfg.continuous)},
            max_steps=cfg.max_steps,
            state_shape=(cfg.n_agents * cfg.n_targets,),
            info_keys=("success",),
        )
        self.target = torch.zeros(num_envs, cfg.n_agents, dtype=torch.long, device=self.device)
        self.illegal = 0

    def _draw(self, mask):
        fresh = torch.randint(0, self.cfg.n_targets, self.target.shape, generator=self.rng, device=self.device)
        self.target = torch.where(mask[:, None], fresh, self.target)

    def _reset_copies(self, mask):
        self._draw(mask)

    def _step_world(self, actions):
        a = actions["agent"]
        if self.cfg.continuous:
            r = -(a[..., 0] - self.target.float() / (self.cfg.n_targets - 1)).abs()
            ok = r > -0.1
        else:
            if self.cfg.masked:
                forbidden = (self.target + 1) % self.cfg.n_targets
                if bool((a == forbidden).any()):
                    raise AssertionError("an illegal (masked) action was taken")
            ok = a == self.target
            r = ok.float()
        alive = self._alive()["agent"]
        self._draw(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        return {"agent": r}, torch.zeros(self.num_envs, dtype=torch.bool, device=self.device), {"success": (ok | ~alive).all(1).float()}

    def _alive(self):
        alive = torch.ones(self.num_envs, self.cfg.n_agents, dtype=torch.bool, device=self.device)
        if self.cfg.dead_agent:
            alive[:, -1] = False
        return {"agent": alive}

    def action_mask(self):
        if not (self.cfg.masked and not self.cfg.continuous):
            return None
        m = torch.ones(self.num_envs, self.cfg.n_agents, self.cfg.n_targets, dtype=torch.bool, device=self.device)
        m.scatter_(2, ((self.target + 1) % self.cfg.n_targets)[..., None], False)
        return {"agent": m}

    def _observe(self):
        obs = torch.nn.functional.one_hot(self.target, self.cfg.n_targets).float()
        if self.cfg.dead_agent:
            obs[:, -1] = 0.0
        return {"agent": obs}

    def _global_state(self):
        return self._observe()["agent"].reshape(self.num_envs, -1)

    def _get_sim_state(self):
        return {"target": self.target}

    def _set_sim_state(self, s):
        self.target = s["target"]

    def render(self):
        return np.zeros((8, 8, 3), dtype=np.uint8)


@dataclass(frozen=True)
class OneRewardedConfig(MatchConfig):
    n_agents: int = 3
    """agents; agent 0 is the only one rewarded"""


class OneRewardedEnv(MatchEnv):
    """MATRPO's modified tasks in miniature: agent ``i`` must name its target ``t_i``; every agent sees all
    targets (one-hot, as the navigation agents see every landmark and agent); only agent 0 is rewarded,
    ``r_0 = (1/N) sum_i [a_i == t_i]``, the others get 0. Independent learners leave agents 1.. at the
    uniform policy (their advantages are 0): the success rate is ``1/N + (N - 1)/(N n_targets)`` at
    best; a learner that passes agent 0's credit on reaches 1. Targets, state and rendering: ``MatchEnv``'s."""

    def __init__(self, cfg=OneRewardedConfig(), num_envs=1, seed=0, device="cpu"):
        super().__init__(cfg, num_envs, seed, device)
        N, n = cfg.n_agents, cfg.n_targets
        self.spec = EnvSpec(
            "one_rewarded",
            {"leader": group_spec("leader", 1, N * n, gspaces.Discrete(n)), "follower": group_spec("follower", N - 1, N * n, gspaces.Discrete(n))},
            max_steps=cfg.max_steps,
            state_shape=(N * n,),
            info_keys=("success",),
        )

    def _step_world(self, actions):
        a = torch.cat([actions["leader"], actions["follower"]], 1)
        hit = (a == self.target).float()
        self._draw(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        never = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return {"leader": hit.mean(1, keepdim=True), "follower": torch.zeros_like(hit[:, 1:])}, never, {"success": hit.mean(1)}

    def _alive(self):
        return BatchedEnv._alive(self)

    def _observe(self):
        everything = torch.nn.functional.one_hot(self.target, self.cfg.n_targets).float().reshape(self.num_envs, 1, -1)
        return {"leader": everything, "follower": everything.expand(-1, self.cfg.n_agents - 1, -1).clone()}

    def _global_state(self):
        return self._observe()["leader"].reshape(self.num_envs, -1)


@dataclass(frozen=True)
class CueConfig:
    n_agents: int = 2
    """agents in the one group, each with its own cue"""
    max_steps: int = 4
    """episode length: the cue is shown at step 0, the answer is paid at the last step"""


class CueEnv(BatchedEnv):
    """A memory task: each agent sees a one-hot cue (one of 2) at the first step only, then zeros and
    a flag on the last step; naming its cue at the last step pays 1, every other step 0; the episode
    terminates there. A feed-forward policy cannot do better than chance (success 0.5 per agent); a
    recurrent one that keeps the cue reaches 1. ``success``: the share of agents that named their cue."""

    def __init__(self, cfg=CueConfig(), num_envs=1, seed=0, device="cpu"):
        super().__init__(cfg, num_envs, seed, device)
        self.spec = EnvSpec("cue", {"agent": group_spec("agent", cfg.n_agents, 3, gspaces.Discrete(2))}, cfg.max_steps, (cfg.n_agents * 3,), ("success",))
        self.cue = torch.zeros(num_envs, cfg.n_agents, dtype=torch.long, device=self.device)

    def _reset_copies(self, mask):
        fresh = torch.randint(0, 2, self.cue.shape, generator=self.rng, device=self.device)
        self.cue = torch.where(mask[:, None], fresh, self.cue)

    def _step_world(self, actions):
        last = self._t == self.cfg.max_steps - 1  # (B,) the step being taken is the last
        ok = actions["agent"] == self.cue
        r = (ok & last[:, None]).float()
        return {"agent": r}, last, {"success": ok.float().mean(1)}

    def _observe(self):
        obs = torch.zeros(self.num_envs, self.cfg.n_agents, 3, device=self.device)
        first = (self._t == 0)[:, None, None]
        obs[..., :2] = torch.nn.functional.one_hot(self.cue, 2).float() * first
        obs[..., 2] = (self._t == self.cfg.max_steps - 1).float()[:, None]
        return {"agent": obs}

    def _global_state(self):
        return self._observe()["agent"].reshape(self.num_envs, -1)

    def _get_sim_state(self):
        return {"cue": self.cue}

    def _set_sim_state(self, s):
        self.cue = s["cue"]

    def render(self):
        return np.zeros((8, 8, 3), dtype=np.uint8)
