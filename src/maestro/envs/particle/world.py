"""Batched particle-world physics: the multi-agent particle environments (MPE) in torch.

Semantics follow MPE2 1.1.1 (``mpe2/_mpe_utils/core.py`` and ``simple_env.py``), the maintained
successor of OpenAI's MPE (Lowe et al. 2017, "Multi-Agent Actor-Critic for Mixed
Cooperative-Competitive Environments", arXiv 1706.02275). One world step, for every copy at once:

1. action force: discrete action ``k`` in ``[no-op, -x, +x, -y, +y]`` gives ``u = accel * e_k``;
   a continuous action ``a`` in ``[0, 1]^5`` gives ``u = accel * (a2 - a1, a4 - a3)``
   (``accel`` defaults to 5, MPE's "sensitivity");
2. contact force between every pair of colliding entities ``a, b``:
   ``f = contact_force * (p_a - p_b) / |p_a - p_b| * k * log(1 + exp(-(|p_a - p_b| - s_a - s_b) / k))``
   with ``k = contact_margin``, applied ``+f`` to ``a`` and ``-f`` to ``b`` if they are movable;
3. integration of movable entities, in MPE2 1.1.1's order: ``p += v dt`` (with the velocity of
   the previous step), then ``v = v (1 - damping) + f / m dt``, then ``v`` is rescaled to
   ``max_speed`` if faster. (OpenAI's original MPE updated ``v`` before ``p``; MPE2 1.1.1, the
   parity reference, updates ``p`` first.)

All tensors are batched: positions and velocities ``(B, E, 2)`` for ``E`` entities (agents first,
then landmarks), entity properties ``(E,)``. The ``*_bl`` functions at the end are the same
equations on batch-last tensors ``(E, 2, B)``, which the scenarios step with for speed. Computation is in float32 (MPE2 uses float64; the
parity tests allow 1e-5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class PhysicsParams:
    """Constants of the particle world (MPE2 ``World`` defaults)."""

    dt: float = 0.1
    """integration time step"""
    damping: float = 0.25
    """fraction of velocity lost per step"""
    contact_force: float = 1e2
    """stiffness of the soft contact"""
    contact_margin: float = 1e-3
    """softness of the contact (the ``k`` of the softplus penetration)"""


@dataclass
class Entities:
    """Static properties of the ``E`` entities of a world (agents first, then landmarks).

    Attributes:
        size: ``(E,)`` radius.
        mass: ``(E,)`` mass (MPE's ``initial_mass``, 1 by default).
        movable: ``(E,)`` bool: integrated by the physics.
        collide: ``(E,)`` bool: takes part in contacts.
        max_speed: ``(E,)`` speed cap, ``inf`` for none.
        accel: ``(E,)`` action sensitivity of agents (MPE: 5 unless the agent sets ``accel``).
        n_agents: how many of the entities are agents (the first ``n_agents``).
    """

    size: Tensor
    mass: Tensor
    movable: Tensor
    collide: Tensor
    max_speed: Tensor
    accel: Tensor
    n_agents: int

    @staticmethod
    def build(
        sizes: list[float],
        n_agents: int,
        *,
        movable: list[bool] | None = None,
        collide: list[bool] | None = None,
        max_speed: list[float | None] | None = None,
        accel: list[float | None] | None = None,
        mass: list[float] | None = None,
        device: torch.device | str = "cpu",
    ) -> "Entities":
        """Entities from per-entity lists (``None`` in ``max_speed``/``accel`` = MPE's default)."""
        E = len(sizes)
        mv = movable if movable is not None else [i < n_agents for i in range(E)]
        co = collide if collide is not None else [True] * E
        ms = [float("inf") if s is None else float(s) for s in (max_speed or [None] * E)]
        ac = [5.0 if a is None else float(a) for a in (accel or [None] * E)]
        for name, seq in (("movable", mv), ("collide", co), ("max_speed", ms), ("accel", ac)):
            if len(seq) != E:
                raise ValueError(f"Entities.build: {name} has {len(seq)} entries, expected {E}")
        t = lambda x, dt=torch.float32: torch.tensor(x, dtype=dt, device=device)  # noqa: E731
        return Entities(
            size=t(sizes),
            mass=t(mass if mass is not None else [1.0] * E),
            movable=t(mv, torch.bool),
            collide=t(co, torch.bool),
            max_speed=t(ms),
            accel=t(ac),
            n_agents=n_agents,
        )

    def to(self, device: torch.device | str) -> "Entities":
        return Entities(
            self.size.to(device), self.mass.to(device), self.movable.to(device), self.collide.to(device),
            self.max_speed.to(device), self.accel.to(device), self.n_agents,
        )


# Unit force directions of the discrete actions [no-op, -x, +x, -y, +y] (MPE's ordering).
_DISCRETE_DIRECTIONS = torch.tensor([[0.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])


def discrete_action_force(action: Tensor, accel: Tensor) -> Tensor:
    """Force of discrete moves: ``action`` ``(B, N)`` in ``[0, 5)``, ``accel`` ``(N,)`` -> ``(B, N, 2)``."""
    dirs = _DISCRETE_DIRECTIONS.to(device=action.device)
    return dirs[action] * accel[:, None]


def continuous_action_force(action: Tensor, accel: Tensor) -> Tensor:
    """Force of continuous moves: ``action`` ``(B, N, 5)`` in ``[0, 1]`` -> ``(B, N, 2)``.

    ``u = accel * (a[2] - a[1], a[4] - a[3])``; ``a[0]`` (no-op) has no effect, as in MPE2.
    """
    u = action[..., 2::2] - action[..., 1::2]  # (a2 - a1, a4 - a3)
    return u * accel[:, None]


def pair_distances(pos_a: Tensor, pos_b: Tensor) -> tuple[Tensor, Tensor]:
    """Differences ``(B, A, C, 2)`` = ``pos_a[:, i] - pos_b[:, j]`` and their norms ``(B, A, C)``."""
    delta = pos_a[:, :, None, :] - pos_b[:, None, :, :]
    return delta, torch.linalg.vector_norm(delta, dim=-1)


def contact_forces(pos: Tensor, ent: Entities, params: PhysicsParams, colliders: Tensor | None = None) -> Tensor:
    """Sum of soft contact forces on each entity: ``pos`` ``(B, E, 2)`` -> ``(B, E, 2)``.

    Only the entities listed in ``colliders`` (indices, default: those with ``collide``) interact;
    forces on immovable entities are zero. Two entities at exactly the same point give NaN, as in
    MPE (division by a zero distance); particles in practice never coincide.
    """
    B, E, _ = pos.shape
    idx = colliders if colliders is not None else torch.nonzero(ent.collide).flatten()
    out = torch.zeros_like(pos)
    if idx.numel() < 2:
        return out
    p = pos[:, idx]
    delta, dist = pair_distances(p, p)
    size = ent.size[idx]
    dist_min = size[:, None] + size[None, :]
    k = params.contact_margin
    penetration = torch.nn.functional.softplus(-(dist - dist_min) / k) * k
    n = idx.numel()
    off_diag = ~torch.eye(n, dtype=torch.bool, device=pos.device)
    scale = torch.where(off_diag, params.contact_force * penetration / torch.where(off_diag, dist, torch.ones_like(dist)), torch.zeros_like(dist))
    f = (delta * scale[..., None]).sum(2)  # (B, n, 2): force on i from every j
    f = f * ent.movable[idx][None, :, None]
    return out.index_copy(1, idx, f)


def integrate(pos: Tensor, vel: Tensor, force: Tensor, ent: Entities, params: PhysicsParams) -> tuple[Tensor, Tensor]:
    """One integration step of movable entities (MPE2 1.1.1 order, see module docstring).

    ``pos``, ``vel``, ``force``: ``(B, E, 2)``. Returns the new ``(pos, vel)``.
    """
    mv = ent.movable[None, :, None]
    new_pos = torch.where(mv, pos + vel * params.dt, pos)
    v = vel * (1.0 - params.damping) + force / ent.mass[None, :, None] * params.dt
    speed = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    cap = ent.max_speed[None, :, None]
    v = torch.where(speed > cap, v / speed * cap, v)
    new_vel = torch.where(mv, v, vel)
    return new_pos, new_vel


def physics_step(pos: Tensor, vel: Tensor, action_force: Tensor, ent: Entities, params: PhysicsParams, colliders: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Advance the world one step.

    Args:
        pos, vel: ``(B, E, 2)``.
        action_force: ``(B, n_agents, 2)``: the agents' control forces (already scaled by accel).
        ent: entity properties; params: physics constants.
        colliders: optional precomputed indices of colliding entities.
    """
    force = contact_forces(pos, ent, params, colliders)
    force = torch.cat([force[:, : ent.n_agents] + action_force, force[:, ent.n_agents :]], dim=1)
    return integrate(pos, vel, force, ent, params)


def is_collision(pos_a: Tensor, size_a: Tensor, pos_b: Tensor, size_b: Tensor) -> Tensor:
    """MPE's overlap test ``|p_a - p_b| < s_a + s_b`` for all pairs: ``(B, A, 2), (A,), (B, C, 2), (C,)`` -> ``(B, A, C)`` bool."""
    _, dist = pair_distances(pos_a, pos_b)
    return dist < (size_a[:, None] + size_b[None, :])


# ---------------------------------------------------------------------------------------------
# Batch-last fast path. The functions above take ``(B, E, 2)`` tensors, whose innermost axis of
# length 2 defeats vectorisation on CPU (every broadcast op runs a 2-wide inner loop). The
# scenarios step through the same equations on *batch-last* tensors ``(E, 2, B)``: every
# elementwise op then runs over ``B`` contiguous floats. Same maths as ``contact_forces`` and
# ``integrate`` (tested against them), only the layout and the pair enumeration differ.


@dataclass
class ContactPairs:
    """Precomputed colliding pairs ``i < j`` among ``C`` entities, for ``contact_forces_bl``.

    Attributes:
        i, j: ``(P,)`` entity indices of each pair.
        dist_min: ``(P, 1, 1)`` sum of the pair's radii.
        incidence: ``(C, P)``: ``+1`` at ``(i, p)`` and ``-1`` at ``(j, p)`` where the entity is
            movable (MPE applies ``+f`` to ``a`` and ``-f`` to ``b``), else 0.
    """

    i: Tensor
    j: Tensor
    dist_min: Tensor
    incidence: Tensor

    @staticmethod
    def build(ent: Entities, device: torch.device | str = "cpu") -> "ContactPairs":
        """All pairs of colliding entities of ``ent`` (MPE's loop order ``a < b``), skipping pairs of
        two immovable entities (their force is never applied)."""
        E = ent.size.numel()
        col = ent.collide.cpu().tolist()
        mov = ent.movable.cpu().tolist()
        size = ent.size.cpu().tolist()
        pairs = [(a, b) for a in range(E) for b in range(a + 1, E) if col[a] and col[b] and (mov[a] or mov[b])]
        inc = torch.zeros(E, len(pairs))
        for p, (a, b) in enumerate(pairs):
            inc[a, p] = 1.0 if mov[a] else 0.0
            inc[b, p] = -1.0 if mov[b] else 0.0
        return ContactPairs(
            i=torch.tensor([a for a, _ in pairs], dtype=torch.long, device=device),
            j=torch.tensor([b for _, b in pairs], dtype=torch.long, device=device),
            dist_min=torch.tensor([size[a] + size[b] for a, b in pairs], device=device).reshape(-1, 1, 1),
            incidence=inc.to(device),
        )


def pair_geometry(pos: Tensor, pairs: ContactPairs) -> tuple[Tensor, Tensor]:
    """Differences ``p_i - p_j`` ``(P, 2, B)`` and distances ``(P, 1, B)`` of the pairs, batch-last."""
    delta = pos.index_select(0, pairs.i) - pos.index_select(0, pairs.j)
    return delta, (delta * delta).sum(1, keepdim=True).sqrt_()


def contact_forces_bl(pos: Tensor, pairs: ContactPairs, params: PhysicsParams, geometry: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Soft contact forces, batch-last: ``pos`` ``(C, 2, B)`` -> ``(C, 2, B)`` (see ``contact_forces``).

    ``geometry``: ``pair_geometry(pos, pairs)`` if already computed (a scenario that measured
    its collisions at the end of the previous step reuses them here).
    """
    C, _, B = pos.shape
    P = pairs.i.numel()
    if P == 0:
        return torch.zeros_like(pos)
    delta, dist = geometry if geometry is not None else pair_geometry(pos, pairs)
    k = params.contact_margin
    scale = torch.nn.functional.softplus((pairs.dist_min - dist) / k) * (k * params.contact_force) / dist
    f = delta * scale  # (P, 2, B): force on i, -force on j
    return (pairs.incidence @ f.reshape(P, 2 * B)).reshape(C, 2, B)


def integrate_bl(pos: Tensor, vel: Tensor, force: Tensor, params: PhysicsParams, mass: Tensor | None = None, max_speed: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``integrate`` for movable entities only, batch-last ``(M, 2, B)``.

    ``mass``: ``(M, 1, 1)`` (``None``: all 1); ``max_speed``: ``(M, 1, 1)`` (``None``: no cap).
    """
    new_pos = pos + vel * params.dt
    acc = force if mass is None else force / mass
    v = vel * (1.0 - params.damping) + acc * params.dt
    if max_speed is not None:
        speed = (v * v).sum(1, keepdim=True).sqrt_()  # (M, 1, B)
        v = torch.where(speed > max_speed, v / speed * max_speed, v)
    return new_pos, v


def discrete_action_force_bl(action: Tensor, accel: Tensor) -> Tensor:
    """Batch-last ``discrete_action_force``: ``action`` ``(B, N)`` -> ``(N, 2, B)``; ``accel`` ``(N,)``."""
    dirs_t = _DISCRETE_DIRECTIONS.t().to(device=action.device)  # (2, 5)
    return (dirs_t[:, action.t()] * accel[None, :, None]).transpose(0, 1)


def continuous_action_force_bl(action: Tensor, accel: Tensor) -> Tensor:
    """Batch-last ``continuous_action_force``: ``action`` ``(B, N, 5)`` -> ``(N, 2, B)``."""
    a = action.permute(1, 2, 0)  # (N, 5, B)
    return (a[:, 2::2] - a[:, 1::2]) * accel[:, None, None]
