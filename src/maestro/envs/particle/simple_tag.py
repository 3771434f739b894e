"""Predator-prey (``simple_tag``): slower predators chase faster prey among obstacles.

The scenario of Lowe et al. 2017 ("Multi-Agent Actor-Critic for Mixed Cooperative-Competitive
Environments", arXiv 1706.02275), used by Distributed MADDPG (3 predators, 1 prey, 2 obstacles),
with the semantics of MPE2 1.1.1's ``simple_tag_v3`` (``mpe2/simple_tag/simple_tag.py``),
batched over ``B`` copies:

* agents, in MPE2's order: the ``num_adversaries`` predators (group ``adversary``: radius 0.075,
  accel 3, max speed 1.0), then the ``num_good`` prey (group ``prey``: radius 0.05, accel 4,
  max speed 1.3); all collide, all silent. Obstacles: radius 0.2, colliding, immovable.
  Initial positions: agents uniform in ``[-1, 1]^2``, then obstacles uniform in
  ``[-0.9, 0.9]^2``; velocities zero.
* observation of an agent: ``[v, p, (o - p) per obstacle, (p_k - p) per other agent (world
  order), v_k of every *prey* other than itself]`` (MPE2 passes the velocities of good agents
  only): ``4 + 2 L + 2 (N - 1) + 2 G`` for a predator, ``... + 2 (G - 1)`` for a prey.
* rewards (MPE2's ``shape = False``): every predator gets ``+10`` per overlapping
  (predator, prey) pair in the whole world; a prey gets ``-10`` per predator overlapping it
  and ``-sum_{x, y} bound(|coordinate|)`` with ``bound(x) = 0`` below 0.9,
  ``10 (x - 0.9)`` below 1, else ``min(exp(2x - 2), 10)``. ``shaping=True`` adds MPE's optional
  distance shaping (prey: ``+0.1 * sum of distances to predators``; predator: ``-0.1 * sum over
  predators of the distance to the closest prey``, as the reference code computes it).
* ``terminate_on_success``: as MPE2, end the episode when every prey overlaps a predator.
* global state: all observations concatenated in MPE2's agent order (predators first).
* entity tokens (``entity_obs``; ``spec.entity_kinds = ("adversary", "prey", "obstacle")``): per
  agent its own token ``(p, v)``, the other agents in world order ``(p_k - p, v_k)`` (``v_k``
  for prey only, zeros for predators, as the flat observation) and the obstacles ``(o - p, 0)``,
  copied from the flat observation; ``view_radius`` masks the entities farther away.
  ``world_size`` scales the arena: where agents and obstacles start and the prey's boundary
  penalty (applied to ``|coordinate| / world_size``; MPE: 1). ``task_description`` gives
  ``adversaries, prey, obstacles, world_size, view_radius`` (``papers/003``, Algorithm 1's input).

Tensors: the world is held batch-last (``world.py``'s fast path): positions of agents then
obstacles ``(N + L, 2, B)``, agent velocities ``(N, 2, B)``, exposed as ``(B, ., 2)`` views
``agent_pos``, ``agent_vel``, ``obstacle_pos`` (also the keys of ``get_state``); observations ``(B, A, 16)`` / ``(B, G, 14)`` for the default (1 prey, 3 predators,
2 obstacles); rewards ``(B, A)`` / ``(B, G)``. ``info`` (``(B,)`` float32): ``touches``
(overlapping predator-prey pairs this step), ``caught`` (prey overlapped by a predator) and
``success`` (every prey caught).

Departures from MPE2, on purpose: float32 (parity to 1e-5); a success on the very last step is a
termination (MPE2 reports it as a truncation); no curriculum or partial observability options.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium.spaces as gspaces
import numpy as np
import torch
from torch import Tensor

from maestro.envs.api import BatchedEnv, EntityObs, Obs, group_spec
from maestro.envs.particle.common import (
    ADVERSARY_RED,
    GOOD_GREEN,
    LANDMARK_GREY,
    TokenMap,
    VectorObs,
    register_heuristic,
    rel_vec,
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
    pair_geometry,
)
from maestro.registry import register_env
from maestro.spec import EnvSpec

ADVERSARY_SIZE, PREY_SIZE, OBSTACLE_SIZE = 0.075, 0.05, 0.2
ADVERSARY_ACCEL, PREY_ACCEL = 3.0, 4.0
ADVERSARY_MAX_SPEED, PREY_MAX_SPEED = 1.0, 1.3
TOUCH_REWARD = 10.0


@dataclass(frozen=True)
class TagConfig:
    """Configuration of ``simple_tag`` (MPE2 ``simple_tag_v3`` arguments)."""

    num_good: int = 1
    """number of prey (good agents)"""
    num_adversaries: int = 3
    """number of predators (adversaries)"""
    num_obstacles: int = 2
    """number of immovable obstacles"""
    max_cycles: int = 25
    """episode length (steps) before truncation"""
    continuous_actions: bool = False
    """Box(0, 1, (5,)) actions instead of Discrete(5)"""
    shaping: bool = False
    """add MPE's optional distance shaping to both rewards (off in MPE2)"""
    terminate_on_success: bool = False
    """end an episode when every prey overlaps a predator (MPE2 option)"""
    world_size: float = 1.0
    """scale w of the arena: agents start in [-w, w]^2, obstacles in [-0.9w, 0.9w]^2, the prey's boundary penalty acts on |x| / w (MPE: 1)"""
    view_radius: float | None = None
    """field of view of the entity tokens: entities farther than this are masked out (None: all visible)"""

    def __post_init__(self) -> None:
        if self.world_size <= 0:
            raise ValueError(f"'world_size' must be > 0, got {self.world_size}")
        if self.view_radius is not None and self.view_radius <= 0:
            raise ValueError(f"'view_radius' must be > 0 or null (unlimited), got {self.view_radius}")
        for key in ("num_good", "num_adversaries", "max_cycles"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key!r} must be >= 1, got {getattr(self, key)}")
        if self.num_obstacles < 0:
            raise ValueError(f"'num_obstacles' must be >= 0, got {self.num_obstacles}")


def tag_obs_features(n_adv: int, n_good: int, n_obs: int) -> tuple[list, list]:
    """``VectorObs`` features of predators and prey over ``[v_0..v_N-1, p_0..p_N-1, o_0..o_L-1]``."""
    n = n_adv + n_good
    vel, pos, obst = 0, n, 2 * n
    rows = []
    for i in range(n):
        row = [self_vec(vel + i), self_vec(pos + i)]
        row += [rel_vec(obst + j, pos + i) for j in range(n_obs)]
        row += [rel_vec(pos + k, pos + i) for k in range(n) if k != i]
        row += [self_vec(vel + k) for k in range(n_adv, n) if k != i]
        rows.append(row)
    return rows[:n_adv], rows[n_adv:]


ENTITY_KINDS = ("adversary", "prey", "obstacle")


def tag_token_maps(n_adv: int, n_good: int, n_obs: int, device: torch.device | str = "cpu") -> tuple[TokenMap, TokenMap]:
    """Entity tokens of a predator's and of a prey's flat observation (layout of ``tag_obs_features``):
    itself, the other agents in world order (prey with their velocity), the obstacles."""
    n = n_adv + n_good
    others, prey_vel = 4 + 2 * n_obs, 4 + 2 * n_obs + 2 * (n - 1)
    maps = []
    for role, first in ((0, 0), (1, n_adv)):  # a representative observer of each group
        kinds = [0] * n_adv + [1] * n_good
        ents: list[tuple[int | None, int | None, int]] = [(2, 0, role)]
        q = 0  # index among the prey other than the observer
        for m, k in enumerate(k for k in range(n) if k != first):
            vel = None
            if kinds[k] == 1:
                vel, q = prey_vel + 2 * q, q + 1
            ents.append((others + 2 * m, vel, kinds[k]))
        ents += [(4 + 2 * j, None, 2) for j in range(n_obs)]
        dim = 4 + 2 * n_obs + 2 * (n - 1) + 2 * (n_good - role)
        maps.append(TokenMap(dim, ents, len(ENTITY_KINDS), device))
    return maps[0], maps[1]


def boundary_penalty(x: Tensor) -> Tensor:
    """MPE's prey boundary penalty of ``|coordinate|`` ``x`` (elementwise)."""
    return torch.where(x < 0.9, torch.zeros_like(x), torch.where(x < 1.0, (x - 0.9) * 10.0, torch.exp(2.0 * x - 2.0).clamp(max=10.0)))


@register_env("simple_tag", config=TagConfig)
class SimpleTag(BatchedEnv):
    """Predator-prey: predators chase faster prey among obstacles (MPE2 simple_tag_v3)."""

    reference_name = "simple_tag_v3"

    def __init__(self, cfg: TagConfig = TagConfig(), num_envs: int = 1, seed: int = 0, device: str | torch.device = "cpu") -> None:
        super().__init__(cfg, num_envs, seed, device)
        A, G, L, B, dev = cfg.num_adversaries, cfg.num_good, cfg.num_obstacles, num_envs, self.device
        N = A + G
        self.n_adv, self.n_good, self.n_obst, self.n = A, G, L, N
        self.params = PhysicsParams()
        self.ent = Entities.build(
            [ADVERSARY_SIZE] * A + [PREY_SIZE] * G + [OBSTACLE_SIZE] * L,
            N,
            max_speed=[ADVERSARY_MAX_SPEED] * A + [PREY_MAX_SPEED] * G + [None] * L,
            accel=[ADVERSARY_ACCEL] * A + [PREY_ACCEL] * G + [None] * L,
            device=dev,
        )
        self._pairs = ContactPairs.build(self.ent, dev)
        pair_of = {(a, b): k for k, (a, b) in enumerate(zip(self._pairs.i.tolist(), self._pairs.j.tolist()))}
        self._adv_prey = torch.tensor([pair_of[(a, A + g)] for a in range(A) for g in range(G)], dtype=torch.long, device=dev)
        self._accel = self.ent.accel[:N]
        self._max_speed = self.ent.max_speed[:N].reshape(N, 1, 1)
        adv_rows, prey_rows = tag_obs_features(A, G, L)
        self._obs_adv = VectorObs(2 * N + L, adv_rows, dev)
        self._obs_prey = VectorObs(2 * N + L, prey_rows, dev)
        da, dg = self._obs_adv.obs_dim, self._obs_prey.obs_dim
        space: gspaces.Space = gspaces.Box(0.0, 1.0, (5,), dtype=np.float32) if cfg.continuous_actions else gspaces.Discrete(5)
        self.spec = EnvSpec(
            "simple_tag",
            {"adversary": group_spec("adversary", A, da, space), "prey": group_spec("prey", G, dg, space)},
            max_steps=cfg.max_cycles,
            state_shape=(A * da + G * dg,),
            info_keys=("touches", "caught", "success"),
            episode_sums=("touches",),
            entity_kinds=ENTITY_KINDS,
        )
        self._tokens = dict(zip(("adversary", "prey"), tag_token_maps(A, G, L, dev)))
        # obstacle positions are drawn in [-0.9, 0.9], agents in [-1, 1] (as MPE2)
        self._spawn_scale = (torch.tensor([1.0] * N + [0.9] * L) * cfg.world_size).to(dev).reshape(N + L, 1, 1)
        # The world, batch-last (see world.py): positions of agents then obstacles, agents' velocities.
        self._p = torch.zeros(N + L, 2, B, device=dev)
        self._v = torch.zeros(N, 2, B, device=dev)
        self._obs: dict[str, Tensor] = {}
        self._update_obs()

    # ------------------------------------------------------------------ world views (B, ., 2)
    @property
    def agent_pos(self) -> Tensor:
        """Positions ``(B, N, 2)`` of predators then prey (a view)."""
        return self._p[: self.n].permute(2, 0, 1)

    @property
    def agent_vel(self) -> Tensor:
        """Velocities ``(B, N, 2)`` of predators then prey (a view)."""
        return self._v.permute(2, 0, 1)

    @property
    def obstacle_pos(self) -> Tensor:
        """Obstacle positions ``(B, L, 2)`` (a view)."""
        return self._p[self.n :].permute(2, 0, 1)

    # ------------------------------------------------------------------ hooks
    def _reset_copies(self, mask: Tensor) -> None:
        fresh = uniform_positions(self.rng, (self.num_envs, self.n + self.n_obst, 2), -1.0, 1.0, self.device).permute(1, 2, 0)
        self._p = torch.where(mask, fresh * self._spawn_scale, self._p)
        self._v = torch.where(mask, torch.zeros_like(self._v), self._v)
        self._update_obs()

    def _step_world(self, actions: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor, dict[str, Tensor]]:
        a = torch.cat([actions["adversary"], actions["prey"]], dim=1)
        if self.cfg.continuous_actions:
            u = continuous_action_force_bl(a, self._accel)
        else:
            u = discrete_action_force_bl(a, self._accel)
        N, A = self.n, self.n_adv
        force = contact_forces_bl(self._p, self._pairs, self.params, self._geom)[:N] + u
        p, self._v = integrate_bl(self._p[:N], self._v, force, self.params, max_speed=self._max_speed)
        self._p = torch.cat([p, self._p[N:]], dim=0) if self.n_obst else p
        self._update_obs()  # also the pair geometry, reused by the next step's contacts

        prey = p[A:]
        dist = self._geom[1].index_select(0, self._adv_prey).view(A, self.n_good, -1)  # (A, G, B)
        touch = (dist < ADVERSARY_SIZE + PREY_SIZE).float()
        touches = touch.sum((0, 1))  # (B,)
        caught_by = touch.sum(0)  # (G, B): predators overlapping each prey
        r_adv = (TOUCH_REWARD * touches).expand(A, -1)
        r_prey = -TOUCH_REWARD * caught_by - boundary_penalty(prey.abs() / self.cfg.world_size).sum(1)
        if self.cfg.shaping:
            r_prey = r_prey + 0.1 * dist.sum(0)
            r_adv = r_adv - 0.1 * dist.amin(1).sum(0)
        caught = (caught_by > 0).sum(0, dtype=torch.float32)
        success = caught == self.n_good
        terminated = success if self.cfg.terminate_on_success else torch.zeros_like(success)
        info = {"touches": touches, "caught": caught, "success": success.float()}
        return {"adversary": r_adv.t(), "prey": r_prey.t()}, terminated, info

    def _update_obs(self) -> None:
        """Recompute what derives from the world: observations and colliding-pair geometry."""
        x = torch.cat([self._v, self._p], dim=0)
        self._obs = {"adversary": self._obs_adv(x), "prey": self._obs_prey(x)}
        self._geom = pair_geometry(self._p, self._pairs)

    def _observe(self) -> Obs:
        return self._obs

    def entity_obs(self, obs: Obs | None = None) -> dict[str, EntityObs]:
        """``obs`` (default: the current observations) as entity tokens per group
        ``(B, N_g, N + L, 8)`` with the field-of-view mask (module docstring)."""
        obs = self._observe() if obs is None else obs
        out = {}
        for g, tokens_of in self._tokens.items():
            tokens = tokens_of(obs[g])
            out[g] = EntityObs(tokens, visible(tokens, self.cfg.view_radius))
        return out

    def task_description(self) -> dict[str, float]:
        """``adversaries, prey, obstacles, world_size, view_radius`` (an unlimited view as ``2 sqrt(2) w``)."""
        w, r = self.cfg.world_size, self.cfg.view_radius
        return {
            "adversaries": float(self.n_adv),
            "prey": float(self.n_good),
            "obstacles": float(self.n_obst),
            "world_size": w,
            "view_radius": 2.0 * math.sqrt(2.0) * w if r is None else r,
        }

    def _global_state(self) -> Tensor:
        B = self.num_envs
        return torch.cat([self._obs["adversary"].reshape(B, -1), self._obs["prey"].reshape(B, -1)], dim=1)

    def _get_sim_state(self) -> dict[str, Tensor]:
        return {"agent_pos": self.agent_pos, "agent_vel": self.agent_vel, "obstacle_pos": self.obstacle_pos}

    def _set_sim_state(self, state: dict[str, Tensor]) -> None:
        self._p = torch.cat([state["agent_pos"], state["obstacle_pos"]], dim=1).permute(1, 2, 0).contiguous()
        self._v = state["agent_vel"].permute(1, 2, 0).contiguous()
        self._update_obs()

    def render(self) -> np.ndarray:
        """RGB ``(350, 350, 3)`` uint8 of copy 0: predators (red), prey (green), obstacles (grey)."""
        pos = self._p[:, :, 0].cpu().numpy()
        colors = [ADVERSARY_RED] * self.n_adv + [GOOD_GREEN] * self.n_good + [LANDMARK_GREY] * self.n_obst
        return render_particles(pos, self.ent.size.cpu().numpy(), colors)


# ---------------------------------------------------------------------- scripted baseline
@register_heuristic("simple_tag")
def heuristic_tag(env: SimpleTag, lead: float = 0.3, wall: float = 0.8) -> dict[str, Tensor]:
    """Predators chase, prey flee (the scripted baseline).

    * each predator runs at full speed toward the nearest prey's position ``lead`` seconds ahead;
    * each prey runs at full speed away from the predators (sum of ``(p - q) / |p - q|^2``) and
      back from the arena's edge beyond ``wall`` (where the boundary penalty starts at 0.9).
    """
    A = env.n_adv
    pos, vel = env.agent_pos, env.agent_vel  # (B, N, 2)
    adv_p, prey_p, prey_v = pos[:, :A], pos[:, A:], vel[:, A:]
    ahead = prey_p + lead * prey_v  # (B, G, 2)
    to_prey = ahead[:, None] - adv_p[:, :, None]  # (B, A, G, 2)
    nearest = (to_prey * to_prey).sum(-1).argmin(-1)  # (B, A)
    chase = torch.gather(to_prey, 2, nearest[..., None, None].expand(-1, -1, 1, 2))[:, :, 0]
    away = prey_p[:, :, None] - adv_p[:, None]  # (B, G, A, 2)
    flee = (away / (away * away).sum(-1, keepdim=True).clamp(min=1e-6)).sum(2)  # (B, G, 2)
    flee = flee - 4.0 * (prey_p.abs() - wall).clamp(min=0.0) * prey_p.sign() * flee.norm(dim=-1, keepdim=True).clamp(min=1.0)

    def unit(v: Tensor) -> Tensor:
        return v / v.norm(dim=-1, keepdim=True).clamp(min=1e-6)

    v_des = torch.cat([unit(chase) * ADVERSARY_MAX_SPEED, unit(flee) * PREY_MAX_SPEED], dim=1)
    acts = steer(vel, v_des, env._accel, not env.cfg.continuous_actions, env.params)
    return {"adversary": acts[:, :A], "prey": acts[:, A:]}
