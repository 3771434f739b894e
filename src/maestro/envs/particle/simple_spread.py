"""Cooperative navigation (``simple_spread``): N agents must cover N landmarks without colliding.

The scenario of Lowe et al. 2017 ("Multi-Agent Actor-Critic for Mixed Cooperative-Competitive
Environments", arXiv 1706.02275) with the semantics of MPE2 1.1.1's ``simple_spread_v3``
(``mpe2/simple_spread/simple_spread.py``), batched over ``B`` copies:

* agents: radius 0.15, colliding, silent, accel 5, no speed cap; landmarks: radius 0.05,
  neither colliding nor movable. Initial positions of agents, then landmarks, are uniform in
  ``[-1, 1]^2``; velocities start at zero.
* observation of agent ``i`` (``obs_dim = 4 + 2N + 4(N - 1)``):
  ``[v_i, p_i, (l_j - p_i) for each landmark j, (p_k - p_i) for each other agent k,
  comm_k for each other agent k]``; communication is all zeros (agents are silent, dim_c = 2).
* reward ``"mpe"`` (MPE2): ``r_i = (1 - local_ratio) * G - local_ratio * c_i`` with the
  global coverage term ``G = -sum_j min_i |p_i - l_j|`` and ``c_i`` the number of other agents
  overlapping agent ``i`` (``|p_i - p_k| < 0.3``).
* reward ``"agent0"``: the modified cooperative navigation of MATRPO (Li & He 2020,
  arXiv 2010.07916, Sec. VI-A and Fig. 1a): "only agent 1 is rewarded based on the proximity of
  any agent to each landmark" and "all agents are punished for colliding with each other".
  maestro implements ``r_0 = G - c_0`` and ``r_i = -c_i`` for ``i > 0``, i.e. the two terms
  of the original task without MPE2's ``local_ratio`` blend (the paper gives no weights; the
  unweighted sum is the original MPE reward of one agent, whose team reward was summed over
  agents). ``local_ratio`` is therefore not used by ``"agent0"``. This is also the authors'
  scenario (``hepengli/multiagent-particle-envs``, ``scenarios/simple_spread.py`` at its commit
  "final version", 7267bf1, 2020-09-22: agent 0 gets the coverage term once, every agent ``-1``
  per other agent it overlaps; an earlier commit, 03edf58, gave agent 0 ``N`` times the coverage
  term). Their observation leaves out MPE's communication slots, which are all zeros here, so
  the networks see the same information.
* ``terminate_on_success``: as MPE2, end the episode once every landmark has an agent within
  0.1.
* global state: the concatenation of all agents' observations, ``(N * obs_dim,)``, as MPE2's
  ``state()``.
* entity tokens (``entity_obs``, for networks over any N; ``spec.entity_kinds = ("agent",
  "landmark")``): per agent its own token ``(p_i, v_i)``, the other agents ``(p_k - p_i, 0)``
  and the landmarks ``(l_j - p_i, 0)``, copied from the flat observation; ``view_radius`` masks
  the entities farther away (the flat observation always holds them all). ``world_size`` is the
  half-width of the square where agents and landmarks start (MPE: 1). ``task_description``
  gives ``agents, landmarks, world_size, view_radius`` (an unlimited view as the start square's
  diagonal), the task of the multi-task learner (``papers/003``, Algorithm 1's input).

Tensors: the world is held batch-last (``world.py``'s fast path): agent positions/velocities
and landmark positions ``(N, 2, B)``, exposed as ``(B, N, 2)`` views ``agent_pos``,
``agent_vel``, ``landmark_pos`` (also the keys of ``get_state``); observations
``(B, N, obs_dim)``; rewards ``(B, N)``. ``info`` per step (all ``(B,)`` float32):
``occupied_landmarks`` (landmarks with an agent within 0.1, MPE's benchmark count),
``collisions`` (overlapping agent pairs), ``landmark_dist`` (``sum_j min_i |p_i - l_j|``,
MPE's benchmark ``min_dists``) and ``success`` (every landmark occupied).

Departures from MPE2, on purpose: float32 instead of float64 (parity tests hold to 1e-5); on
the last step of an episode that also succeeds with ``terminate_on_success``, MPE2 reports a
truncation and maestro a termination (the contract's ``truncated`` means "cut without
terminating"); MPE2's curriculum and partial-observability options are not provided.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import gymnasium.spaces as gspaces
import numpy as np
import torch
from torch import Tensor

from maestro.envs.api import BatchedEnv, EntityObs, Obs, group_spec
from maestro.envs.particle.common import (
    AGENT_BLUE,
    LANDMARK_GREY,
    ZERO,
    TokenMap,
    VectorObs,
    register_heuristic,
    rel_vec,
    rest_velocity,
    render_particles,
    self_vec,
    steer,
    uniform_positions,
    visible,
)
from maestro.envs.particle.world import (
    ContactPairs,
    Entities,
    PhysicsParams,
    contact_forces_bl,
    continuous_action_force_bl,
    discrete_action_force_bl,
    integrate_bl,
    pair_distances,
    pair_geometry,
)
from maestro.registry import register_env
from maestro.spec import EnvSpec

AGENT_SIZE = 0.15
LANDMARK_SIZE = 0.05
CAPTURE_RADIUS = 0.1
DIM_C = 2
REWARDS = ("mpe", "agent0")


@dataclass(frozen=True)
class SpreadConfig:
    """Configuration of ``simple_spread`` (MPE2 ``simple_spread_v3`` arguments)."""

    n_agents: int = 3
    """number of agents N (and of landmarks)"""
    local_ratio: float = 0.5
    """weight of the local (collision) term in the ``"mpe"`` reward; the global term gets 1 - local_ratio"""
    max_cycles: int = 25
    """episode length (steps) before truncation"""
    continuous_actions: bool = False
    """Box(0, 1, (5,)) actions instead of Discrete(5)"""
    reward: Literal["mpe", "agent0"] = "mpe"
    """"mpe": MPE2's blended reward; "agent0": MATRPO's modified task, only agent 0 gets the coverage term"""
    terminate_on_success: bool = False
    """end an episode once every landmark has an agent within 0.1 (MPE2 option)"""
    world_size: float = 1.0
    """half-width w of the square [-w, w]^2 where agents and landmarks start (MPE: 1)"""
    view_radius: float | None = None
    """field of view of the entity tokens: entities farther than this are masked out (None: all visible)"""

    def __post_init__(self) -> None:
        if self.world_size <= 0:
            raise ValueError(f"'world_size' must be > 0, got {self.world_size}")
        if self.view_radius is not None and self.view_radius <= 0:
            raise ValueError(f"'view_radius' must be > 0 or null (unlimited), got {self.view_radius}")
        if self.n_agents < 1:
            raise ValueError(f"'n_agents' must be >= 1, got {self.n_agents}")
        if not 0.0 <= self.local_ratio <= 1.0:
            raise ValueError(f"'local_ratio' must lie in [0, 1], got {self.local_ratio}")
        if self.max_cycles < 1:
            raise ValueError(f"'max_cycles' must be >= 1, got {self.max_cycles}")
        if self.reward not in REWARDS:
            raise ValueError(f"'reward' must be one of {list(REWARDS)}, got {self.reward!r}")


def spread_obs_features(n: int) -> list[list[tuple[int | None, int | None]]]:
    """``VectorObs`` features of the N agents over world vectors ``[v_0..v_N-1, p_0..p_N-1, l_0..l_N-1]``."""
    vel, pos, lm = 0, n, 2 * n
    rows = []
    for i in range(n):
        others = [k for k in range(n) if k != i]
        row = [self_vec(vel + i), self_vec(pos + i)]
        row += [rel_vec(lm + j, pos + i) for j in range(n)]
        row += [rel_vec(pos + k, pos + i) for k in others]
        row += [ZERO] * ((n - 1) * DIM_C // 2)
        rows.append(row)
    return rows


ENTITY_KINDS = ("agent", "landmark")


def spread_token_map(n: int, device: torch.device | str = "cpu") -> TokenMap:
    """Entity tokens of an agent's flat observation (layout of ``spread_obs_features``): itself,
    the other ``N - 1`` agents, the ``N`` landmarks."""
    agent, landmark = 0, 1
    entities = [(2, 0, agent)]  # own position, own velocity
    entities += [(4 + 2 * n + 2 * m, None, agent) for m in range(n - 1)]
    entities += [(4 + 2 * j, None, landmark) for j in range(n)]
    return TokenMap(4 + 2 * n + 4 * (n - 1), entities, len(ENTITY_KINDS), device)


@register_env("simple_spread", config=SpreadConfig)
class SimpleSpread(BatchedEnv):
    """Cooperative navigation: N agents cover N landmarks (MPE2 simple_spread_v3; MATRPO variant)."""

    reference_name = "simple_spread_v3"

    def __init__(self, cfg: SpreadConfig = SpreadConfig(), num_envs: int = 1, seed: int = 0, device: str | torch.device = "cpu") -> None:
        super().__init__(cfg, num_envs, seed, device)
        N, B, dev = cfg.n_agents, num_envs, self.device
        self.n = N
        self.params = PhysicsParams()
        self.ent = Entities.build([AGENT_SIZE] * N, N, device=dev)  # landmarks never collide: agents only
        self._pairs = ContactPairs.build(self.ent, dev)
        self._pair_inc = self._pairs.incidence.abs()  # (N, P): agent i takes part in pair p
        self._obs_map = VectorObs(3 * N, spread_obs_features(N), dev)
        obs_dim = self._obs_map.obs_dim
        space: gspaces.Space = gspaces.Box(0.0, 1.0, (5,), dtype=np.float32) if cfg.continuous_actions else gspaces.Discrete(5)
        self.spec = EnvSpec(
            "simple_spread",
            {"agent": group_spec("agent", N, obs_dim, space)},
            max_steps=cfg.max_cycles,
            state_shape=(N * obs_dim,),
            info_keys=("occupied_landmarks", "collisions", "landmark_dist", "success"),
            episode_sums=("collisions",),
            entity_kinds=ENTITY_KINDS,
        )
        self._tokens = spread_token_map(N, dev)
        self._agent0 = torch.zeros(N, 1, device=dev)
        self._agent0[0] = 1.0
        # The world, batch-last (see world.py): agents' positions/velocities and landmarks' positions.
        self._p = torch.zeros(N, 2, B, device=dev)
        self._v = torch.zeros(N, 2, B, device=dev)
        self._l = torch.zeros(N, 2, B, device=dev)
        self._update_obs()

    # ------------------------------------------------------------------ world views (B, N, 2)
    @property
    def agent_pos(self) -> Tensor:
        """Agent positions ``(B, N, 2)`` (a view)."""
        return self._p.permute(2, 0, 1)

    @property
    def agent_vel(self) -> Tensor:
        """Agent velocities ``(B, N, 2)`` (a view)."""
        return self._v.permute(2, 0, 1)

    @property
    def landmark_pos(self) -> Tensor:
        """Landmark positions ``(B, N, 2)`` (a view)."""
        return self._l.permute(2, 0, 1)

    # ------------------------------------------------------------------ hooks
    def _reset_copies(self, mask: Tensor) -> None:
        B, N = self.num_envs, self.n
        w = self.cfg.world_size
        fresh = uniform_positions(self.rng, (B, 2 * N, 2), -w, w, self.device).permute(1, 2, 0)  # agents, then landmarks
        self._p = torch.where(mask, fresh[:N], self._p)
        self._l = torch.where(mask, fresh[N:], self._l)
        self._v = torch.where(mask, torch.zeros_like(self._v), self._v)
        self._update_obs()

    def _step_world(self, actions: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor, dict[str, Tensor]]:
        a = actions["agent"]
        if self.cfg.continuous_actions:
            u = continuous_action_force_bl(a, self.ent.accel)
        else:
            u = discrete_action_force_bl(a, self.ent.accel)
        force = contact_forces_bl(self._p, self._pairs, self.params, self._geom) + u
        self._p, self._v = integrate_bl(self._p, self._v, force, self.params)
        self._update_obs()  # also the pair geometry, reused by the next step's contacts

        d = self._p[:, None] - self._l[None]  # (N agents, L, 2, B)
        min_d = (d * d).sum(2).sqrt_().amin(0)  # (L, B): closest agent to each landmark
        dist_sum = min_d.sum(0)  # (B,)
        touching = (self._geom[1][:, 0] < 2 * AGENT_SIZE).float()  # (P, B) overlapping agent pairs
        coll = self._pair_inc @ touching  # (N, B): other agents overlapping agent i
        if self.cfg.reward == "mpe":
            lr = self.cfg.local_ratio
            reward = (-(1.0 - lr)) * dist_sum - lr * coll
        else:
            reward = self._agent0 * (-dist_sum) - coll
        occupied = (min_d < CAPTURE_RADIUS).sum(0, dtype=torch.float32)
        success = occupied == self.n
        terminated = success if self.cfg.terminate_on_success else torch.zeros_like(success)
        info = {
            "occupied_landmarks": occupied,
            "collisions": touching.sum(0),
            "landmark_dist": dist_sum,
            "success": success.float(),
        }
        return {"agent": reward.t()}, terminated, info

    def _update_obs(self) -> None:
        """Recompute what derives from the world: observations and agent-pair geometry."""
        self._obs = self._obs_map(torch.cat([self._v, self._p, self._l], dim=0))
        self._geom = pair_geometry(self._p, self._pairs)

    def _observe(self) -> Obs:
        return {"agent": self._obs}

    def entity_obs(self, obs: Obs | None = None) -> dict[str, EntityObs]:
        """``obs`` (default: the current observations) as entity tokens ``(B, N, 2N, 7)`` with
        the field-of-view mask (module docstring)."""
        tokens = self._tokens((self._observe() if obs is None else obs)["agent"])
        return {"agent": EntityObs(tokens, visible(tokens, self.cfg.view_radius))}

    def task_description(self) -> dict[str, float]:
        """``agents, landmarks, world_size, view_radius`` (an unlimited view as ``2 sqrt(2) w``)."""
        w, r = self.cfg.world_size, self.cfg.view_radius
        return {"agents": float(self.n), "landmarks": float(self.n), "world_size": w, "view_radius": 2.0 * math.sqrt(2.0) * w if r is None else r}

    def _global_state(self) -> Tensor:
        return self._obs.reshape(self.num_envs, -1).clone()

    def _get_sim_state(self) -> dict[str, Tensor]:
        return {"agent_pos": self.agent_pos, "agent_vel": self.agent_vel, "landmark_pos": self.landmark_pos}

    def _set_sim_state(self, state: dict[str, Tensor]) -> None:
        self._p = state["agent_pos"].permute(1, 2, 0).contiguous()
        self._v = state["agent_vel"].permute(1, 2, 0).contiguous()
        self._l = state["landmark_pos"].permute(1, 2, 0).contiguous()
        self._update_obs()

    def render(self) -> np.ndarray:
        """RGB ``(350, 350, 3)`` uint8 of copy 0: agents (blue), then landmarks (grey), as MPE."""
        pos = torch.cat([self.agent_pos[0], self.landmark_pos[0]]).cpu().numpy()
        size = np.array([AGENT_SIZE] * self.n + [LANDMARK_SIZE] * self.n)
        return render_particles(pos, size, [AGENT_BLUE] * self.n + [LANDMARK_GREY] * self.n)


# ---------------------------------------------------------------------- scripted baseline
_PERMS: dict[tuple[int, str], Tensor] = {}
MAX_EXACT_ASSIGNMENT = 7
"""Largest N for which ``heuristic_spread`` enumerates all N! assignments (greedy above)."""


def _permutations(n: int, device: torch.device) -> Tensor:
    key = (n, str(device))
    if key not in _PERMS:
        import itertools

        _PERMS[key] = torch.tensor(list(itertools.permutations(range(n))), dtype=torch.long, device=device)
    return _PERMS[key]


def assign_landmarks(agent_pos: Tensor, landmark_pos: Tensor) -> Tensor:
    """Landmark index of each agent ``(B, N)`` minimising the summed distance.

    Exact (all ``N!`` permutations, batched over copies) for ``N <= MAX_EXACT_ASSIGNMENT``;
    greedy (closest remaining pair first) above.
    """
    _, d = pair_distances(agent_pos, landmark_pos)  # (B, N, L)
    B, N, _ = d.shape
    if N <= MAX_EXACT_ASSIGNMENT:
        perms = _permutations(N, d.device)  # (P, N): perms[p, i] = landmark of agent i
        cost = d[:, torch.arange(N, device=d.device), perms].sum(-1)  # (B, P)
        return perms[cost.argmin(-1)]
    out = torch.zeros(B, N, dtype=torch.long, device=d.device)
    d = d.clone()
    rows = torch.arange(B, device=d.device)
    for _ in range(N):  # N rounds, each batched over copies
        flat = d.reshape(B, -1).argmin(-1)
        i, j = flat // N, flat % N
        out[rows, i] = j
        d[rows, i, :] = float("inf")
        d[rows, :, j] = float("inf")
    return out


@register_heuristic("simple_spread")
def heuristic_spread(env: SimpleSpread) -> dict[str, Tensor]:
    """Agents head for the landmarks of an optimal assignment (the scripted baseline).

    Each agent aims the point where it would coast to rest (``rest_velocity``) at its assigned
    landmark; ``steer`` picks the discrete move (or continuous control) that gets closest.
    """
    target_idx = assign_landmarks(env.agent_pos, env.landmark_pos)
    target = torch.gather(env.landmark_pos, 1, target_idx[..., None].expand(-1, -1, 2))
    v_des = rest_velocity(env.agent_pos, env.agent_vel, target, env.params)
    return {"agent": steer(env.agent_vel, v_des, env.ent.accel, not env.cfg.continuous_actions, env.params)}
