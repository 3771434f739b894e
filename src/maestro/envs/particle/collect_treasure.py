"""Cooperative treasure collection, batched in torch (MPE2 ``collect_treasure_v1``).

The task of Iqbal & Sha 2019, "Actor-Attention-Critic for Multi-Agent Reinforcement Learning"
(MAAC, arXiv 1810.02912), as maintained in MPE2 1.1.1 (``mpe2/collect_treasure``), which is the
parity reference; plus the modified reward of Li & He 2020, "Multi-Agent Trust Region Policy
Optimization" (MATRPO, arXiv 2010.07916, Sec. VI-A).

World. ``C`` collectors and ``D`` deposits (agents, in that order, ``N = C + D``) and ``T``
treasures of ``D`` types. Agents use the particle physics of ``world.py`` with MPE2's settings:
no contact forces at all (every entity is a "ghost"), ``accel = 1.5``, ``max_speed = 1``, mass 1
(collectors) or 2.25 (deposits), radius 0.05 (collectors), 0.075 (deposits), 0.025 (treasures).
One step, for every copy at once:

1. physics: action forces, then MPE2's integration (``world.integrate``);
2. pickup, treasure by treasure in index order: a treasure that is live at the start of the step
   is taken by the lowest-index *empty* collector overlapping it (``|p_c - p_t| < 0.075``); the
   collector now holds its type, the treasure is dead and parked at ``(-999, -999)``. A collector
   that took treasure ``t`` is no longer empty for treasures ``> t``. A treasure that was dead at
   the start of the step respawns (MPE2's ``respawn_prob`` is 1) at a uniform position in
   ``[-0.95, 0.95]^2`` with a uniform type; a respawned treasure can be taken from the next step on;
3. delivery: a holding collector overlapping the deposit of its type (``< 0.125``) delivers
   (it may be the step of its pickup);
4. rewards (below), computed after pickup and delivery, like MPE2's ``post_step`` + ``reward``.

Rewards. With ``G = 5 * (pickups + deliveries)`` of the step (shared), for collector ``c``
``k_c = -5 * #(other collectors within 0.1 of c)`` and ``s_c = -0.1 * d_c``, where ``d_c`` is
the distance to the nearest live treasure when ``c`` is empty (0 if none is live) or to the
deposit of its type when holding; for deposit ``d``
``q_d = -0.1 * (distance to the nearest collector holding type d, or, if none does, to the
centroid of all collectors)``.

* ``reward="mpe"`` (MPE2 / MAAC): ``r_c = k_c + s_c + G`` and ``r_d = q_d + G``.
* ``reward="matrpo"`` (MATRPO's modified task): the banks (deposits) get the collection and
  deposit reward and the hunters' distance penalty, the hunters (collectors) only their
  collision penalty: ``r_c = k_c`` and ``r_d = q_d + sum_c s_c + G``.
  The paper's text (its formulas were lost in extraction) says: "the banks are rewarded for
  successful collection and depositing of treasure. They are also negatively rewarded based on
  the minimum distance of each hunter to the treasures. The hunters do not receive any reward
  for collecting treasures, but are penalized for colliding with each other." The coefficients
  (5 per event, 0.1 per unit distance, -5 per collision) are MAAC's, which the paper modifies
  and the authors' public scenario (``hepengli/multiagent-particle-envs``,
  ``scenarios/collector.py``) keeps. From that scenario we also take that a *holding* hunter's
  term is its distance to the deposit of its type (a holding hunter cannot collect) and that the
  banks keep their own MAAC shaping ``q_d``. Two things of that scenario we do not copy: it adds
  the shared bonus once per hunter inside its loop (``C * G`` plus the deposit part once more),
  which reads as an indentation slip and is not what the paper describes, and it counts pickups
  after the treasure was already removed (so pickups earned almost nothing), which MPE2 fixed
  by counting events during the step, as we do. MATRPO's runs use 6 hunters + 2 banks and
  9 + 3 (the authors' scenario sets ``num_treasures = num_collectors``), 100-step paths
  (``max_cycles=100``), discrete actions.

Observations (MPE2's layout), ``n = D`` types. A collector sees ``[p (2), v (2),
onehot(holding) (n)]``, a deposit ``[p (2), v (2)]``; then every other agent sorted by distance
(ties by index), each ``[p_j - p_i (2), v_j (2), deposit_type_enc (n), holding_enc (n)]``; then
every treasure, live ones sorted by distance and dead ones last (by index), each
``[p_t - p_i (2), onehot(type) (n)]``, zeros for dead ones. Sizes: collectors
``4 + n + (N - 1)(4 + 2n) + T(2 + n)`` (86 by default), deposits the same minus ``n`` (84).
The global state is every agent's observation concatenated in agent order (collectors first),
MPE2's ``state()`` (684 by default).

Tensor shapes (``B`` copies): obs ``{"collector": (B, C, obs_c), "deposit": (B, D, obs_d)}``;
actions ``(B, N_g)`` int64 in ``[0, 5)`` (no-op, -x, +x, -y, +y) or ``(B, N_g, 5)`` float in
``[0, 1]``; rewards ``(B, N_g)``; state ``(B, C * obs_c + D * obs_d)``. Simulator state:
``pos``, ``vel`` ``(B, N, 2)``; ``holding`` ``(B, C)`` int64 (``-1`` = empty);
``treasure_pos`` ``(B, T, 2)``; ``treasure_type`` ``(B, T)`` int64; ``treasure_alive``
``(B, T)`` bool; ``respawn_pos`` ``(B, max_cycles, T, 2)`` and ``respawn_type``
``(B, max_cycles, T)``: the respawn draws of the episode. ``info`` (``spec.info_keys``, each
``(B,)`` float32, per step): ``collections`` (pickups), ``deposits`` (deliveries),
``collisions`` (overlapping collector pairs) and ``carrying`` (collectors holding a treasure
after the step).

Batching: every step is a fixed sequence of tensor operations over all copies and agents, with
no ``.item()``; the one Python loop runs over the ``T`` treasure slots in the pickup (MPE2's
first-come rule is sequential: whether a collector is still empty for treasure ``t`` depends on
treasures ``< t``); sorting by distance is ``torch.argsort(stable=True)`` plus ``index_select``
with index tensors precomputed in ``__init__``. ``heuristic_treasure`` is a scripted baseline
(nearest treasure, matching deposit, collision avoidance), registered in ``common.HEURISTICS``.

Deliberate departures from MPE2:

* respawn draws: MPE2 draws a respawned treasure's position and type lazily from its numpy
  generator; maestro draws a whole table of them per copy at reset (from ``self.rng``) and the
  respawn of treasure ``t`` at step ``k`` reads entry ``(k, t)``. The distribution is the same;
  a copy's trajectory then depends only on its own snapshot, so a batched copy replayed alone
  (``check_env``) or restored with ``set_state`` is exact. Parity tests write MPE2's draws into
  the table.
* float32 instead of float64 (agreement to 1e-5 in the parity tests); distances that tie to
  within float32 rounding may sort differently.
* continuous actions outside ``[0, 1]`` raise ``ValueError`` (MPE2's wrapper clips them).
* ``render`` uses ``common.render_particles`` (numpy, no pygame): MPE2's colours, camera fitted
  to the live entities, radii not rescaled with the zoom.
* ``num_deposits`` is limited to 6 as in MPE2 (its palette), and validated with a ``ValueError``
  naming the key, like every other field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import gymnasium.spaces as gspaces
import numpy as np
import torch
from torch import Tensor

from maestro.envs.api import BatchedEnv, group_spec
from maestro.envs.particle.common import register_heuristic, render_particles, rest_velocity, steer
from maestro.envs.particle.world import (
    Entities,
    PhysicsParams,
    continuous_action_force,
    discrete_action_force,
    integrate,
)
from maestro.registry import register_env
from maestro.spec import EnvSpec

# Radii and motion constants of MPE2's collect_treasure scenario.
COLLECTOR_SIZE = 0.05
DEPOSIT_SIZE = 0.075
TREASURE_SIZE = 0.025
ACCEL = 1.5
MAX_SPEED = 1.0
COLLECTOR_MASS = 1.0
DEPOSIT_MASS = 2.25
AGENT_BOUND = 1.0  # initial agent positions ~ U(-1, 1)^2
TREASURE_BOUND = 0.95  # treasure (re)spawn positions ~ U(-0.95, 0.95)^2
DEAD_POS = -999.0  # where a taken treasure is parked until it respawns
EVENT_REWARD = 5.0  # per pickup and per delivery, shared by everyone
COLLISION_PENALTY = 5.0  # per overlapping pair of collectors, to each of the two
DISTANCE_COEF = 0.1  # distance shaping
MAX_TYPES = 6  # MPE2 supports at most six treasure types (its colour palette)

# Matplotlib tab10 colours (the palette MPE2 uses for types), as RGB in [0, 1].
_TYPE_RGB = np.array(
    [
        [0x1F, 0x77, 0xB4],
        [0xFF, 0x7F, 0x0E],
        [0x2C, 0xA0, 0x2C],
        [0xD6, 0x27, 0x28],
        [0x94, 0x67, 0xBD],
        [0x8C, 0x56, 0x4B],
    ],
    dtype=np.float64,
) / 255.0
_EMPTY_RGB = np.array([0.85, 0.85, 0.85])


def _norm(v: Tensor) -> Tensor:
    """Euclidean norm over a last axis of size 2: ``(..., 2) -> (...)`` (cheaper than vector_norm on CPU)."""
    return (v[..., 0] * v[..., 0] + v[..., 1] * v[..., 1]).sqrt()


def _dist(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise distances ``(B, A, 2), (B, M, 2) -> (B, A, M)``."""
    return _norm(a[:, :, None] - b[:, None])


@dataclass(frozen=True)
class CollectTreasureConfig:
    """Configuration of ``collect_treasure`` (defaults: MPE2 ``collect_treasure_v1``)."""

    num_collectors: int = 6
    """number of collector agents (MATRPO's "hunters")"""
    num_deposits: int = 2
    """number of deposit agents (MATRPO's "banks"); also the number of treasure types (1..6)"""
    num_treasures: int = 6
    """number of treasures in the world at any time (taken ones respawn the next step)"""
    max_cycles: int = 25
    """episode length in steps (MATRPO uses 100)"""
    continuous_actions: bool = False
    """Box(0, 1, (5,)) actions instead of Discrete(5)"""
    reward: Literal["mpe", "matrpo"] = "mpe"
    """'mpe': MAAC/MPE2 rewards; 'matrpo': MATRPO's modification (module docstring)"""

    def __post_init__(self) -> None:
        for key, lo, hi in (
            ("num_collectors", 1, None),
            ("num_deposits", 1, MAX_TYPES),
            ("num_treasures", 1, None),
            ("max_cycles", 1, None),
        ):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
                rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
                raise ValueError(f"collect_treasure: {key!r} must be an integer {rng}, got {v!r}")
        if not isinstance(self.continuous_actions, bool):
            raise ValueError(f"collect_treasure: 'continuous_actions' must be true or false, got {self.continuous_actions!r}")
        if self.reward not in ("mpe", "matrpo"):
            raise ValueError(f"collect_treasure: 'reward' must be 'mpe' or 'matrpo', got {self.reward!r}")


def obs_dims(cfg: CollectTreasureConfig) -> tuple[int, int]:
    """Observation sizes ``(collector, deposit)`` of a config."""
    n, N, T = cfg.num_deposits, cfg.num_collectors + cfg.num_deposits, cfg.num_treasures
    dep = 4 + (N - 1) * (4 + 2 * n) + T * (2 + n)
    return dep + n, dep


@register_env("collect_treasure", config=CollectTreasureConfig)
class CollectTreasure(BatchedEnv):
    """Cooperative treasure collection (MAAC / MPE2 collect_treasure_v1; MATRPO's reward variant)."""

    reference_name = "collect_treasure_v1"

    def __init__(self, cfg: CollectTreasureConfig = CollectTreasureConfig(), num_envs: int = 1, seed: int = 0, device: str | torch.device = "cpu") -> None:
        super().__init__(cfg, num_envs, seed, device)
        C, D, T = cfg.num_collectors, cfg.num_deposits, cfg.num_treasures
        N, B, dev = C + D, num_envs, self.device
        self.C, self.D, self.T, self.N, self.K = C, D, T, N, cfg.max_cycles
        obs_c, obs_d = obs_dims(cfg)
        if cfg.continuous_actions:
            act: gspaces.Space = gspaces.Box(0.0, 1.0, (5,), dtype=np.float32)
        else:
            act = gspaces.Discrete(5)
        self.spec = EnvSpec(
            "collect_treasure",
            {
                "collector": group_spec("collector", C, obs_c, act),
                "deposit": group_spec("deposit", D, obs_d, act),
            },
            max_steps=cfg.max_cycles,
            state_shape=(C * obs_c + D * obs_d,),
            info_keys=("collections", "deposits", "collisions", "carrying"),
            episode_sums=("collections", "deposits", "collisions"),
        )
        self.params = PhysicsParams()
        self.ent = Entities.build(
            [COLLECTOR_SIZE] * C + [DEPOSIT_SIZE] * D,
            N,
            movable=[True] * N,
            collide=[False] * N,  # MPE2: ghosts, no contact forces
            max_speed=[MAX_SPEED] * N,
            accel=[ACCEL] * N,
            mass=[COLLECTOR_MASS] * C + [DEPOSIT_MASS] * D,
            device=dev,
        )
        # Precomputed index tensors.
        self._arange_b = torch.arange(B, device=dev)
        self._row_n = (self._arange_b * N)[:, None, None]  # row offsets of copy b in (B * N, ...) views
        self._row_t = (self._arange_b * T)[:, None, None]
        ar = torch.arange(N, device=dev)
        self._others = torch.stack([torch.cat([ar[:i], ar[i + 1 :]]) for i in range(N)])  # (N, N-1): j != i, ascending
        self._eye_c = torch.eye(C, dtype=torch.bool, device=dev)
        self._types = torch.arange(D, device=dev)
        # Agent encodings: deposits' own-type part is constant.
        self._dep_enc = torch.cat([torch.eye(D, device=dev), torch.zeros(D, D, device=dev)], dim=1)  # (D, 2n)
        # State.
        z2 = lambda n: torch.zeros(B, n, 2, device=dev)  # noqa: E731
        self.pos, self.vel = z2(N), z2(N)
        self.holding = torch.full((B, C), -1, dtype=torch.long, device=dev)
        self.treasure_pos = z2(T)
        self.treasure_type = torch.zeros(B, T, dtype=torch.long, device=dev)
        self.treasure_alive = torch.ones(B, T, dtype=torch.bool, device=dev)
        self.respawn_pos = torch.zeros(B, self.K, T, 2, device=dev)
        self.respawn_type = torch.zeros(B, self.K, T, dtype=torch.long, device=dev)
        self._obs_cache: dict[str, Tensor] | None = None

    # ------------------------------------------------------------------ hooks
    def _uniform(self, shape: tuple[int, ...], bound: float) -> Tensor:
        return (torch.rand(shape, generator=self.rng, device=self.device) * 2.0 - 1.0) * bound

    def _reset_copies(self, mask: Tensor) -> None:
        B, N, T, K, D = self.num_envs, self.N, self.T, self.K, self.D
        m2 = mask[:, None, None]
        self.pos = torch.where(m2, self._uniform((B, N, 2), AGENT_BOUND), self.pos)
        self.vel = torch.where(m2, torch.zeros_like(self.vel), self.vel)
        self.holding = torch.where(mask[:, None], torch.full_like(self.holding, -1), self.holding)
        ttype = torch.randint(0, D, (B, T), generator=self.rng, device=self.device)
        self.treasure_type = torch.where(mask[:, None], ttype, self.treasure_type)
        self.treasure_pos = torch.where(m2, self._uniform((B, T, 2), TREASURE_BOUND), self.treasure_pos)
        self.treasure_alive = self.treasure_alive | mask[:, None]
        rpos = self._uniform((B, K, T, 2), TREASURE_BOUND)
        rtype = torch.randint(0, D, (B, K, T), generator=self.rng, device=self.device)
        self.respawn_pos = torch.where(mask[:, None, None, None], rpos, self.respawn_pos)
        self.respawn_type = torch.where(mask[:, None, None], rtype, self.respawn_type)
        self._obs_cache = None

    def _step_world(self, actions: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor, dict[str, Tensor]]:
        C, T, B = self.C, self.T, self.num_envs
        a = torch.cat([actions["collector"], actions["deposit"]], dim=1)
        if self.cfg.continuous_actions:
            force = continuous_action_force(a, self.ent.accel)
        else:
            force = discrete_action_force(a, self.ent.accel)
        self.pos, self.vel = integrate(self.pos, self.vel, force, self.ent, self.params)

        # Pickup: sequential over treasures (the first-come rule of the reference), vectorised over copies.
        cpos = self.pos[:, :C]
        d_ct = _dist(cpos, self.treasure_pos)  # (B, C, T)
        touch = d_ct < (COLLECTOR_SIZE + TREASURE_SIZE)
        alive0 = self.treasure_alive
        holding = self.holding
        taken = []
        for t in range(T):
            cand = touch[:, :, t] & (holding < 0) & alive0[:, t, None]  # (B, C)
            first = cand & (cand.long().cumsum(1) == 1)
            holding = torch.where(first, self.treasure_type[:, t, None], holding)
            taken.append(cand.any(1))
        picked = torch.stack(taken, 1)  # (B, T)
        # Respawn the treasures that were dead at the start of the step (from this step's table row).
        k = self._t.clamp(max=self.K - 1)
        rpos = self.respawn_pos[self._arange_b, k]  # (B, T, 2)
        rtype = self.respawn_type[self._arange_b, k]  # (B, T)
        dead0 = ~alive0
        tpos = torch.where(dead0[..., None], rpos, self.treasure_pos)
        self.treasure_pos = torch.where(picked[..., None], torch.full_like(tpos, DEAD_POS), tpos)
        self.treasure_type = torch.where(dead0, rtype, self.treasure_type)
        self.treasure_alive = (alive0 & ~picked) | dead0

        # Delivery: each holding collector to the deposit of its type.
        dpos = self.pos[:, C:]
        target = dpos.gather(1, holding.clamp(min=0)[..., None].expand(-1, -1, 2))  # (B, C, 2)
        d_cd = _norm(target - cpos)  # (B, C)
        delivered = (holding >= 0) & (d_cd < (COLLECTOR_SIZE + DEPOSIT_SIZE))
        self.holding = torch.where(delivered, torch.full_like(holding, -1), holding)
        self._obs_cache = None

        n_pick = picked.sum(1).float()
        n_del = delivered.sum(1).float()
        G = EVENT_REWARD * (n_pick + n_del)  # (B,)
        k_c, s_c, q_d, n_pairs = self._reward_terms()
        if self.cfg.reward == "mpe":
            r_col = k_c + s_c + G[:, None]
            r_dep = q_d + G[:, None]
        else:
            r_col = k_c
            r_dep = q_d + s_c.sum(1, keepdim=True) + G[:, None]
        info = {
            "collections": n_pick,
            "deposits": n_del,
            "collisions": n_pairs,
            "carrying": (self.holding >= 0).sum(1).float(),
        }
        terminated = torch.zeros(B, dtype=torch.bool, device=self.device)
        return {"collector": r_col, "deposit": r_dep}, terminated, info

    def _reward_terms(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per-agent reward terms of the current world (after pickup and delivery).

        Returns ``k_c`` (B, C) collision penalty, ``s_c`` (B, C) collector distance shaping,
        ``q_d`` (B, D) deposit distance shaping (module docstring) and the number of overlapping
        collector pairs (B,).
        """
        C = self.C
        cpos, dpos = self.pos[:, :C], self.pos[:, C:]
        d_cc = _dist(cpos, cpos)
        overlap = (d_cc < 2 * COLLECTOR_SIZE) & ~self._eye_c
        n_over = overlap.sum(2).float()  # (B, C)
        k_c = -COLLISION_PENALTY * n_over
        d_ct = _dist(cpos, self.treasure_pos)
        d_near = torch.where(self.treasure_alive[:, None, :], d_ct, torch.full_like(d_ct, float("inf"))).amin(2)
        d_near = torch.where(torch.isfinite(d_near), d_near, torch.zeros_like(d_near))
        hold = self.holding
        target = dpos.gather(1, hold.clamp(min=0)[..., None].expand(-1, -1, 2))
        d_dep = _norm(target - cpos)
        s_c = -DISTANCE_COEF * torch.where(hold >= 0, d_dep, d_near)
        d_dc = _dist(dpos, cpos)  # (B, D, C)
        carrier = hold[:, None, :] == self._types[None, :, None]  # (B, D, C)
        d_carrier = torch.where(carrier, d_dc, torch.full_like(d_dc, float("inf"))).amin(2)
        centroid = cpos.mean(1, keepdim=True)
        d_centroid = _norm(centroid - dpos)
        q_d = -DISTANCE_COEF * torch.where(carrier.any(2), d_carrier, d_centroid)
        return k_c, s_c, q_d, n_over.sum(1) / 2

    def _observe(self) -> dict[str, Tensor]:
        if self._obs_cache is not None:
            return self._obs_cache
        B, C, D, N, T = self.num_envs, self.C, self.D, self.N, self.T
        pos, vel = self.pos, self.vel
        hold_oh = (self.holding[..., None] == self._types).float()  # (B, C, n)
        enc = torch.cat([torch.cat([torch.zeros_like(hold_oh), hold_oh], 2), self._dep_enc.expand(B, D, 2 * D)], 1)  # (B, N, 2n)
        feat = torch.cat([pos, vel, enc], -1)  # (B, N, F): what the others see of each agent
        F = feat.shape[-1]
        # Other agents by distance (stable: ties keep index order, as Python's sorted).
        others = self._others.expand(B, N, N - 1)
        order = torch.argsort(_dist(pos, pos).gather(2, others), dim=2, stable=True)
        j = others.gather(2, order) + self._row_n  # (B, N, N-1) rows of feat.reshape(B * N, F)
        seen = feat.reshape(B * N, F).index_select(0, j.reshape(-1)).reshape(B, N, N - 1, F)
        seen[..., :2] -= pos[:, :, None]  # positions relative to the observer (seen is a fresh tensor)
        agents_feat = seen.reshape(B, N, (N - 1) * F)
        # Treasures: live ones by distance, dead ones last, shown as zeros.
        alive = self.treasure_alive[:, None, :].expand(B, N, T)
        key = torch.where(alive, _dist(pos, self.treasure_pos), torch.full((), 1e6, device=self.device))
        t_order = torch.argsort(key, dim=2, stable=True)  # (B, N, T)
        tfeat = torch.cat([self.treasure_pos, (self.treasure_type[..., None] == self._types).float()], -1)  # (B, T, 2+n)
        Gd = tfeat.shape[-1]
        ts = tfeat.reshape(B * T, Gd).index_select(0, (t_order + self._row_t).reshape(-1)).reshape(B, N, T, Gd)
        ts[..., :2] -= pos[:, :, None]
        ts *= alive.gather(2, t_order)[..., None]
        treas_feat = ts.reshape(B, N, T * Gd)
        own = feat[..., :4]
        obs = {
            "collector": torch.cat([own[:, :C], hold_oh, agents_feat[:, :C], treas_feat[:, :C]], -1),
            "deposit": torch.cat([own[:, C:], agents_feat[:, C:], treas_feat[:, C:]], -1),
        }
        self._obs_cache = obs
        return obs

    def _global_state(self) -> Tensor:
        obs = self._observe()
        B = self.num_envs
        return torch.cat([obs["collector"].reshape(B, -1), obs["deposit"].reshape(B, -1)], 1)

    def _get_sim_state(self) -> dict[str, Tensor]:
        return {
            "pos": self.pos,
            "vel": self.vel,
            "holding": self.holding,
            "treasure_pos": self.treasure_pos,
            "treasure_type": self.treasure_type,
            "treasure_alive": self.treasure_alive,
            "respawn_pos": self.respawn_pos,
            "respawn_type": self.respawn_type,
        }

    def _set_sim_state(self, state: dict[str, Tensor]) -> None:
        hold, ttype = state["holding"], state["treasure_type"]
        if bool(((hold < -1) | (hold >= self.D)).any()):
            raise ValueError(f"collect_treasure: set_state['holding'] must lie in [-1, {self.D}) (-1 = empty)")
        for key in ("treasure_type", "respawn_type"):
            v = state[key]
            if bool(((v < 0) | (v >= self.D)).any()):
                raise ValueError(f"collect_treasure: set_state[{key!r}] must lie in [0, {self.D})")
        self.pos, self.vel, self.holding = state["pos"], state["vel"], hold
        self.treasure_pos, self.treasure_type, self.treasure_alive = state["treasure_pos"], ttype, state["treasure_alive"]
        self.respawn_pos, self.respawn_type = state["respawn_pos"], state["respawn_type"]
        self._obs_cache = None

    # ------------------------------------------------------------------ drawing
    def render(self) -> np.ndarray:
        """``(H, W, 3)`` uint8 image of copy 0 (MPE's look, ``common.render_particles``): deposits
        dark in their type's colour, live treasures in their type's colour, collectors grey when
        empty and tinted by the type they hold (MPE2's colours)."""
        C = self.C
        pos = self.pos[0].detach().cpu().double().numpy()
        hold = self.holding[0].cpu().numpy()
        alive = self.treasure_alive[0].cpu().numpy()
        tpos = self.treasure_pos[0].detach().cpu().double().numpy()[alive]
        ttype = self.treasure_type[0].cpu().numpy()[alive]
        colors = [_TYPE_RGB[d] * 0.35 for d in range(self.D)]
        colors += [_TYPE_RGB[t] for t in ttype]
        colors += [_EMPTY_RGB if h < 0 else 0.85 * _TYPE_RGB[h] for h in hold]
        xy = np.concatenate([pos[C:], tpos, pos[:C]], 0)
        size = np.array([DEPOSIT_SIZE] * self.D + [TREASURE_SIZE] * len(tpos) + [COLLECTOR_SIZE] * C)
        return render_particles(xy, size, colors)


AVOID = 0.2  # heuristic: collectors closer than this push each other apart
AVOID_GAIN = 10.0  # heuristic: desired speed per unit of overlap with the avoidance disc


@register_heuristic("collect_treasure")
def heuristic_treasure(env: CollectTreasure) -> dict[str, Tensor]:
    """Scripted baseline actions for every copy of a ``collect_treasure`` env.

    Empty collectors head for the nearest live treasure, holding ones for the deposit of their
    type; a deposit heads for the nearest collector carrying its type, or for the collectors'
    centroid when none does. Each agent aims to coast to rest at its target (``rest_velocity``)
    and ``steer`` picks the discrete move (or the continuous control) that gets closest.
    Returns ``{"collector": (B, C) | (B, C, 5), "deposit": (B, D) | (B, D, 5)}``.
    """
    C = env.C
    pos, vel = env.pos, env.vel
    cpos, dpos = pos[:, :C], pos[:, C:]
    d_ct = _dist(cpos, env.treasure_pos)
    d_ct = torch.where(env.treasure_alive[:, None, :], d_ct, torch.full_like(d_ct, float("inf")))
    nearest = d_ct.argmin(2)  # (B, C)
    t_target = env.treasure_pos.gather(1, nearest[..., None].expand(-1, -1, 2))
    any_alive = env.treasure_alive.any(1)[:, None, None]
    t_target = torch.where(any_alive, t_target, cpos)
    hold = env.holding
    d_target = dpos.gather(1, hold.clamp(min=0)[..., None].expand(-1, -1, 2))
    c_target = torch.where((hold >= 0)[..., None], d_target, t_target)
    d_dc = _dist(dpos, cpos)
    carrier = hold[:, None, :] == env._types[None, :, None]
    d_dc = torch.where(carrier, d_dc, torch.full_like(d_dc, float("inf")))
    nearest_c = cpos.gather(1, d_dc.argmin(2)[..., None].expand(-1, -1, 2))
    centroid = cpos.mean(1, keepdim=True).expand_as(dpos)
    dep_target = torch.where(carrier.any(2)[..., None], nearest_c, centroid)
    # Collectors also steer away from collectors closer than AVOID (overlaps cost -5 each).
    diff = cpos[:, :, None] - cpos[:, None]  # (B, C, C, 2): p_i - p_j
    d_cc = _norm(diff)[..., None]
    near = (d_cc < AVOID) & ~env._eye_c[None, :, :, None]
    push = torch.where(near, diff / d_cc.clamp(min=1e-6) * (AVOID - d_cc) * AVOID_GAIN, torch.zeros_like(diff)).sum(2)
    discrete = not env.cfg.continuous_actions
    out = {}
    for g, sl, tgt, mass in (("collector", slice(0, C), c_target, COLLECTOR_MASS), ("deposit", slice(C, None), dep_target, DEPOSIT_MASS)):
        v_des = rest_velocity(pos[:, sl], vel[:, sl], tgt, env.params)
        if g == "collector":
            v_des = v_des + push
        out[g] = steer(vel[:, sl], v_des, env.ent.accel[sl], discrete, env.params, mass=mass)
    return out
