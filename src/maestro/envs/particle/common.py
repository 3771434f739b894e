"""Shared building blocks of the particle scenarios (MPE2 / Lowe et al. 2017, arXiv 1706.02275).

What every scenario built on ``world.py`` needs besides the physics:

* ``VectorObs``: observations made of the world's 2-D vectors and their differences (own
  velocity, own position, relative positions of landmarks and of other agents, velocities of
  others...), computed for all copies and agents with one gather and one subtraction instead of
  a Python loop over agents. A world is summarised as ``x`` ``(B, V, 2)`` (its ``V`` vectors);
  every observation entry is ``x[plus] - x[minus]`` with a zero vector standing in for "nothing".
  In float32 this is bit-identical to computing each relative position directly.
* ``TokenMap``: the same observations as entity tokens (``maestro.envs.api.EntityObs``): one
  gather from the flat observation, so tokens and flat vector hold the very same numbers; and
  ``visible``, the field-of-view mask over tokens.
* ``uniform_positions``: initial positions drawn from the env's generator.
* ``steer``: turn desired velocities into discrete or continuous MPE actions (one-step
  look-ahead through the damped integrator); the scripted heuristics use it.
* ``render_particles``: the MPE look (entity colour x 200, black outline, camera fitted to the
  entities, y up) drawn with ``maestro.envs.render``'s numpy rasteriser.
* ``HEURISTICS`` / ``register_heuristic`` / ``heuristic``: scripted baseline policies by env name,
  each ``policy(env) -> actions`` reading the env's world directly.

Shapes: ``B`` copies, ``A`` agents of a group, ``V`` world vectors, ``F`` 2-D features per agent.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from maestro.envs.particle.world import PhysicsParams
from maestro.envs.render import canvas, draw_disc

# MPE2's colours (the renderer draws ``color * 200``).
AGENT_BLUE = (0.35, 0.35, 0.85)
GOOD_GREEN = (0.35, 0.85, 0.35)
ADVERSARY_RED = (0.85, 0.35, 0.35)
LANDMARK_GREY = (0.25, 0.25, 0.25)

Feature = tuple[int | None, int | None]
"""One 2-D observation feature ``x[plus] - x[minus]``; ``None`` stands for the zero vector."""


def self_vec(i: int) -> Feature:
    """The world vector ``i`` itself (e.g. the agent's own velocity)."""
    return (i, None)


def rel_vec(j: int, i: int) -> Feature:
    """``x[j] - x[i]``: vector ``j`` relative to vector ``i`` (e.g. a landmark seen by an agent)."""
    return (j, i)


ZERO: Feature = (None, None)
"""A zero feature (e.g. the communication of a silent agent)."""


class VectorObs:
    """Observations of one group whose entries are differences of the world's 2-D vectors.

    Args:
        n_vectors: ``V``, the number of 2-D vectors describing a world.
        features: per agent of the group, its list of ``F`` features (all agents the same ``F``);
            build them with ``self_vec``, ``rel_vec`` and ``ZERO``.
        device: where the map lives.

    Calling the object on the batch-last world ``x`` ``(V, 2, B)`` returns observations
    ``(B, A, 2F)`` float32, the features concatenated as ``[f0x, f0y, f1x, f1y, ...]``.

    The map is applied as one matrix product with a ``{-1, 0, 1}`` matrix, which also moves the
    batch axis first. Each entry sums at most two nonzero terms, so the result is bit-identical
    to computing ``x[plus] - x[minus]`` directly.
    """

    def __init__(self, n_vectors: int, features: Sequence[Sequence[Feature]], device: torch.device | str = "cpu") -> None:
        if not features:
            raise ValueError("VectorObs: features must list at least one agent")
        F = len(features[0])
        if any(len(f) != F for f in features):
            raise ValueError(f"VectorObs: every agent needs the same number of features, got {[len(f) for f in features]}")
        K = len(features) * F * 2
        m = torch.zeros(2 * n_vectors, K)
        col = 0
        for row in features:
            for p, q in row:
                for v, sign in ((p, 1.0), (q, -1.0)):
                    if v is None:
                        continue
                    if not 0 <= v < n_vectors:
                        raise ValueError(f"VectorObs: vector index {v} outside [0, {n_vectors})")
                    m[2 * v, col] += sign
                    m[2 * v + 1, col + 1] += sign
                col += 2
        self.n_vectors = n_vectors
        self.n_agents = len(features)
        self.obs_dim = 2 * F
        self.matrix = m.to(device)
        """``(2V, A * 2F)``: observation entries as signed sums of world coordinates."""

    def __call__(self, x: Tensor) -> Tensor:
        """Batch-last world ``x`` ``(V, 2, B)`` -> observations ``(B, A, 2F)``."""
        if tuple(x.shape[:2]) != (self.n_vectors, 2):
            raise ValueError(f"VectorObs: x has shape {tuple(x.shape)}, expected ({self.n_vectors}, 2, B)")
        B = x.shape[2]
        return torch.mm(x.reshape(2 * self.n_vectors, B).t(), self.matrix).view(B, self.n_agents, self.obs_dim)


TokenSource = tuple[int | None, int | None, int]
"""One entity of an observation: ``(position, velocity, kind)``: the flat-observation index of the
x coordinate of its position and of its velocity (y follows; ``None`` for zeros) and its kind's
index in ``spec.entity_kinds``."""


class TokenMap:
    """Entity tokens of one group as a gather from its flat observations.

    Args:
        obs_dim: ``D``, the flat observation's width.
        entities: the ``E`` entities of an observer, its own first (``TokenSource`` each); every
            agent of the group lays out its observation the same way.
        n_kinds: ``K``, the number of entity kinds.
        device: where the index lives.

    Calling the map on observations ``(B, N, D)`` returns tokens ``(B, N, E, 5 + K)``:
    ``(x, y, vx, vy, is_self, one-hot kind)`` (``maestro.spec.ENTITY_FEATURES``), every number a
    copy of an entry of the flat observation, a 0 or a 1.
    """

    def __init__(self, obs_dim: int, entities: Sequence[TokenSource], n_kinds: int, device: torch.device | str = "cpu") -> None:
        zero, one = obs_dim, obs_dim + 1  # slots appended to the observation
        F = 5 + n_kinds
        index = torch.full((len(entities), F), zero, dtype=torch.long)
        for e, (pos, vel, kind) in enumerate(entities):
            for start, col in ((pos, 0), (vel, 2)):
                if start is None:
                    continue
                if not 0 <= start < obs_dim - 1:
                    raise ValueError(f"TokenMap: entity {e}: index {start} outside the observation [0, {obs_dim - 1})")
                index[e, col], index[e, col + 1] = start, start + 1
            if not 0 <= kind < n_kinds:
                raise ValueError(f"TokenMap: entity {e}: kind {kind} outside [0, {n_kinds})")
            index[e, 5 + kind] = one
        index[0, 4] = one  # the observer's own token
        self.obs_dim, self.n_entities, self.token_dim = obs_dim, len(entities), F
        self.index = index.reshape(-1).to(device)
        """``(E * F,)``: the flat-observation slot of every token feature."""

    def __call__(self, obs: Tensor) -> Tensor:
        """Observations ``(B, N, D)`` -> tokens ``(B, N, E, F)``."""
        if obs.dim() != 3 or obs.shape[-1] != self.obs_dim:
            raise ValueError(f"TokenMap: observations have shape {tuple(obs.shape)}, expected (B, N, {self.obs_dim})")
        B, N, _ = obs.shape
        x = torch.cat([obs, obs.new_zeros(B, N, 1), obs.new_ones(B, N, 1)], dim=-1)
        return x.index_select(-1, self.index.to(obs.device)).view(B, N, self.n_entities, self.token_dim)


def visible(tokens: Tensor, view_radius: float | None) -> Tensor:
    """Field-of-view mask ``(B, N, E)`` of tokens ``(B, N, E, F)``: the observer's own token and
    every entity within ``view_radius`` of it (every entity when ``None``)."""
    if view_radius is None:
        return torch.ones(tokens.shape[:-1], dtype=torch.bool, device=tokens.device)
    d2 = tokens[..., 0] * tokens[..., 0] + tokens[..., 1] * tokens[..., 1]
    return (d2 <= view_radius * view_radius) | (tokens[..., 4] > 0)


def uniform_positions(rng: torch.Generator, shape: tuple[int, ...], low: Tensor | float, high: Tensor | float, device: torch.device) -> Tensor:
    """Uniform draws in ``[low, high)`` of ``shape`` from ``rng`` (bounds broadcast against ``shape``)."""
    u = torch.rand(shape, generator=rng, device=device)
    return low + (high - low) * u


# Unit force directions of the discrete actions [no-op, -x, +x, -y, +y] (MPE's ordering).
_DIRECTIONS = torch.tensor([[0.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])


def steer(vel: Tensor, v_des: Tensor, accel: Tensor, discrete: bool, params: PhysicsParams = PhysicsParams(), mass: float = 1.0) -> Tensor:
    """Actions that bring each agent's next velocity closest to ``v_des``.

    Uses the damped integrator of ``world.integrate`` (contacts and speed caps ignored):
    ``v' = v (1 - damping) + accel * u * dt / mass``.

    Args:
        vel, v_des: ``(B, A, 2)`` current and desired velocities.
        accel: ``(A,)`` the agents' action sensitivities.
        discrete: return ``(B, A)`` int64 in ``[0, 5)`` (the best of the five moves) or
            ``(B, A, 5)`` float32 in ``[0, 1]`` (the clipped exact control).
    """
    drift = vel * (1.0 - params.damping)
    gain = (accel * params.dt / mass)[:, None]  # (A, 1)
    if discrete:
        dirs = _DIRECTIONS.to(vel.device)
        nxt = drift[:, :, None, :] + gain[None, :, None, :] * dirs  # (B, A, 5, 2)
        return ((nxt - v_des[:, :, None, :]) ** 2).sum(-1).argmin(-1)
    u = ((v_des - drift) / gain).clamp(-1.0, 1.0)  # (B, A, 2): desired (a2 - a1, a4 - a3)
    act = torch.zeros(*u.shape[:-1], 5, device=vel.device)
    act[..., 1] = (-u[..., 0]).clamp(min=0.0)
    act[..., 2] = u[..., 0].clamp(min=0.0)
    act[..., 3] = (-u[..., 1]).clamp(min=0.0)
    act[..., 4] = u[..., 1].clamp(min=0.0)
    return act


def rest_velocity(pos: Tensor, vel: Tensor, target: Tensor, params: PhysicsParams = PhysicsParams()) -> Tensor:
    """Velocity ``(B, A, 2)`` to reach after this step so that an agent coasting from then on stops at ``target``.

    With MPE's integration (``p += v dt``, then ``v *= 1 - damping`` each step), coasting from
    ``p + v dt`` with velocity ``v'`` ends at ``p + v dt + v' dt / damping``.
    """
    return (target - pos - vel * params.dt) * (params.damping / params.dt)


def render_particles(
    pos: np.ndarray,
    size: np.ndarray,
    colors: Sequence[Sequence[float]],
    height: int = 350,
    width: int = 350,
) -> np.ndarray:
    """Draw discs the way MPE does: RGB ``(H, W, 3)`` uint8.

    Args:
        pos: ``(E, 2)`` world positions; size: ``(E,)`` radii; colors: ``E`` RGB triples in [0, 1]
            (drawn as ``color * 200`` with a black outline, in list order).
    The camera is centred at the origin and spans the largest ``|coordinate|`` (at least 1),
    with MPE's 0.9 margin; world ``y`` points up.
    """
    pos = np.asarray(pos, dtype=np.float64)
    size = np.asarray(size, dtype=np.float64)
    img = canvas(height, width)
    cam = max(1.0, float(np.abs(pos).max())) if pos.size else 1.0
    half = 0.5 * min(height, width) * 0.9
    for (x, y), r, c in zip(pos, size, colors):
        px = width / 2 + x / cam * half
        py = height / 2 - y / cam * half
        col = tuple(int(v * 200) for v in c)
        draw_disc(img, px, py, r / cam * half, col)
    return img


Heuristic = Callable[..., dict[str, Tensor]]
HEURISTICS: dict[str, Heuristic] = {}
"""Scripted baseline policies by registered env name: ``HEURISTICS[name](env) -> actions``."""


def register_heuristic(name: str) -> Callable[[Heuristic], Heuristic]:
    """Decorator adding a scripted policy ``policy(env) -> actions`` to ``HEURISTICS[name]``."""

    def deco(fn: Heuristic) -> Heuristic:
        HEURISTICS[name] = fn
        return fn

    return deco


def heuristic(name: str) -> Heuristic:
    """The scripted policy of env ``name``; a ``ValueError`` lists the envs that have one."""
    import maestro.envs  # noqa: F401  (registers the scenarios and their heuristics)

    if name not in HEURISTICS:
        raise ValueError(f"no heuristic policy for env {name!r}; available: {', '.join(sorted(HEURISTICS))}")
    return HEURISTICS[name]
