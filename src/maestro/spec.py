"""Static description of a batched multi-agent environment: its groups, shapes and spaces.

A *group* holds agents that share an observation and an action space (simple tag: ``adversary``
and ``prey``). Every tensor an environment exchanges is laid out ``(B, N_g, ...)``: env copies,
then the agents of the group; a trajectory adds a leading time axis ``(T, B, N_g, ...)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import gymnasium.spaces as gspaces


@dataclass(frozen=True)
class GroupSpec:
    """One group of agents.

    Attributes:
        name: group name, the key of every per-group dict (``obs``, ``reward``, ``alive``...).
        n_agents: number of agents ``N_g`` in the group.
        obs_shape: shape of one agent's observation (so a batch is ``(B, N_g, *obs_shape)``).
        action_space: one agent's action space: ``Discrete(n)`` (actions ``(B, N_g)`` int64)
            or ``Box(low, high, (d,))`` (actions ``(B, N_g, d)`` float32).
        has_action_mask: whether the env exposes legal-action masks ``(B, N_g, n)`` for this
            group through ``env.action_mask()``.
    """

    name: str
    n_agents: int
    obs_shape: tuple[int, ...]
    action_space: gspaces.Space
    has_action_mask: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.action_space, (gspaces.Discrete, gspaces.Box)):
            raise TypeError(
                f"group {self.name!r}: action_space must be Discrete or Box, "
                f"got {type(self.action_space).__name__}"
            )
        if isinstance(self.action_space, gspaces.Box) and len(self.action_space.shape) != 1:
            raise ValueError(
                f"group {self.name!r}: a Box action space must be 1-D, got shape {self.action_space.shape}"
            )

    @property
    def discrete(self) -> bool:
        """True for ``Discrete`` actions."""
        return isinstance(self.action_space, gspaces.Discrete)

    @property
    def action_dim(self) -> int:
        """Number of discrete actions, or the length of a continuous action vector."""
        if isinstance(self.action_space, gspaces.Discrete):
            return int(self.action_space.n)
        return int(self.action_space.shape[0])

    @property
    def action_shape(self) -> tuple[int, ...]:
        """Shape of one agent's action: ``()`` for discrete, ``(d,)`` for continuous."""
        return () if self.discrete else (self.action_dim,)

    @property
    def observation_space(self) -> gspaces.Box:
        """One agent's observation space (unbounded float32 Box)."""
        return gspaces.Box(-float("inf"), float("inf"), self.obs_shape, dtype="float32")


ENTITY_FEATURES = ("x", "y", "vx", "vy", "is_self")
"""The fixed features of an entity token, before the one-hot of its kind (``EnvSpec.entity_kinds``):
position relative to the observer (the observer's own position in its self token), velocity (zeros
where the observation does not include it) and 1 on the observer's own token."""


@dataclass(frozen=True)
class EnvSpec:
    """What an environment exchanges with its agents.

    Attributes:
        name: registered name of the environment.
        groups: the agent groups, in a fixed order.
        max_steps: episode length at which a copy is truncated.
        state_shape: shape of the global state of one copy (``(B, *state_shape)`` in a batch),
            the input of centralised critics and of a master agent.
        info_keys: names of the extra per-copy tensors the env reports in ``info`` on top of the
            standard ``done``, ``episode_length`` and ``episode_return/<group>``. Their value where
            a copy is done describes the episode (``success``, ``win``; a count of this step for
            the keys also listed in ``episode_sums``).
        episode_sums: the ``info_keys`` that count events of one step (``touches``,
            ``collisions``...); the env also reports their totals over the episode as
            ``info["episode_sum/<key>"]`` (valid where done).
        entity_kinds: the kinds of entity an agent sees (roles, then landmark kinds), for envs
            that also expose their observation as entity tokens (``env.entity_obs``,
            ``maestro.envs.api.EntityObs``); ``()`` for envs that do not. A token's kind is a
            one-hot over these.
        roles: the config variants the env offers for master-slave transfer (Guo & Duan,
            papers/000): ``("master", "slave")`` for an env whose config has a ``role`` field and
            whose class maps the slave's observation and action dimensions onto the master's
            (``slave_indices()``); empty for every other env.
        reward_features: length ``F`` of the features ``phi(s, a)`` the env's reward is linear in
            (``r = w . phi``), for envs that offer them to inverse RL (``env.reward_features(obs,
            action)``, ``env.expert_demonstration()``; ``maestro.algos.irl``); 0 for every other env.
    """

    name: str
    groups: dict[str, GroupSpec]
    max_steps: int
    state_shape: tuple[int, ...]
    info_keys: tuple[str, ...] = field(default_factory=tuple)
    episode_sums: tuple[str, ...] = field(default_factory=tuple)
    entity_kinds: tuple[str, ...] = field(default_factory=tuple)
    roles: tuple[str, ...] = field(default_factory=tuple)
    reward_features: int = 0

    def __post_init__(self) -> None:
        unknown = [k for k in self.episode_sums if k not in self.info_keys]
        if unknown:
            raise ValueError(f"{self.name}: episode_sums {unknown} are not info_keys {list(self.info_keys)}")

    @property
    def group_names(self) -> list[str]:
        return list(self.groups)

    @property
    def n_agents(self) -> int:
        """Total number of agents over all groups."""
        return sum(g.n_agents for g in self.groups.values())

    @property
    def discrete(self) -> bool:
        """True if every group acts with discrete actions."""
        return all(g.discrete for g in self.groups.values())

    @property
    def continuous(self) -> bool:
        """True if every group acts with continuous actions."""
        return not any(g.discrete for g in self.groups.values())

    @property
    def has_state(self) -> bool:
        """True if the env has a global state: ``state_shape`` non-empty with no zero-length axis.

        The one rule every algorithm, the compatibility check and the CLI use (``()`` and ``(0,)``
        both mean "no state").
        """
        return bool(self.state_shape) and math.prod(self.state_shape) > 0

    @property
    def has_entity_obs(self) -> bool:
        """True if the env exposes its observation as entity tokens (``entity_kinds`` non-empty)."""
        return bool(self.entity_kinds)

    @property
    def has_reward_features(self) -> bool:
        """True if the env's reward is linear in features it exposes (``reward_features > 0``)."""
        return self.reward_features > 0

    @property
    def entity_token_dim(self) -> int:
        """Features ``F`` of one entity token: ``(x, y, vx, vy, is_self)`` and the kind's one-hot."""
        return len(ENTITY_FEATURES) + len(self.entity_kinds)

    @property
    def state_dim(self) -> int:
        """Features of the flattened global state of one copy; 0 when ``has_state`` is False."""
        return int(math.prod(self.state_shape)) if self.has_state else 0


@dataclass(frozen=True)
class GroupLayout:
    """The plain facts of one group that a policy needs to rebuild itself without the env.

    A policy keeps one per group (``group_layout(spec)``) and saves them in its state as plain
    dicts (``to_dict``), which ``torch.load(weights_only=True)`` reads back.

    Attributes:
        n_agents: agents ``N_g`` in the group.
        obs_shape: one agent's observation shape.
        obs_dim: features of the flattened observation (``prod(obs_shape)``, 1 for ``()``).
        discrete: ``Discrete`` (True) or ``Box`` actions.
        action_dim: number of discrete actions, or the length of a continuous action.
        has_action_mask: whether the env exposes legal-action masks for the group.
        low, high: the Box's bounds per action dimension (``None`` for discrete actions).
    """

    n_agents: int
    obs_shape: tuple[int, ...]
    obs_dim: int
    discrete: bool
    action_dim: int
    has_action_mask: bool = False
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None

    @classmethod
    def of(cls, gs: GroupSpec) -> "GroupLayout":
        """The layout of a ``GroupSpec``."""
        low = high = None
        if not gs.discrete:
            low = tuple(float(x) for x in gs.action_space.low)  # type: ignore[attr-defined]
            high = tuple(float(x) for x in gs.action_space.high)  # type: ignore[attr-defined]
        obs_dim = int(math.prod(gs.obs_shape)) if gs.obs_shape else 1
        return cls(gs.n_agents, tuple(gs.obs_shape), obs_dim, gs.discrete, gs.action_dim, gs.has_action_mask, low, high)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a saved policy state (lists, no tuples; bounds only for Box actions)."""
        out: dict[str, Any] = {
            "n_agents": self.n_agents,
            "obs_shape": list(self.obs_shape),
            "obs_dim": self.obs_dim,
            "discrete": self.discrete,
            "action_dim": self.action_dim,
            "has_action_mask": self.has_action_mask,
        }
        if not self.discrete:
            out["low"], out["high"] = list(self.low or ()), list(self.high or ())
        return out

    @classmethod
    def from_dict(cls, d: "GroupLayout | dict[str, Any]") -> "GroupLayout":
        """Inverse of ``to_dict`` (a ``GroupLayout`` passes through); a missing key is a ``ValueError``."""
        if isinstance(d, GroupLayout):
            return d
        try:
            low = None if d.get("low") is None else tuple(float(x) for x in d["low"])
            high = None if d.get("high") is None else tuple(float(x) for x in d["high"])
            return cls(int(d["n_agents"]), tuple(int(x) for x in d["obs_shape"]), int(d["obs_dim"]), bool(d["discrete"]), int(d["action_dim"]), bool(d.get("has_action_mask", False)), low, high)
        except KeyError as err:
            raise ValueError(f"a saved group layout lacks the key {err.args[0]!r} (has {sorted(d)})") from None

    def space_text(self) -> str:
        """``Discrete(n)`` or ``Box(low, high, (d,))``, for error messages."""
        if self.discrete:
            return f"Discrete({self.action_dim})"
        return f"Box({min(self.low or (0.0,))}, {max(self.high or (0.0,))}, ({self.action_dim},))"


def group_layout(spec: EnvSpec) -> dict[str, GroupLayout]:
    """Per group of ``spec`` (in its order), the ``GroupLayout`` a policy is built from."""
    return {g: GroupLayout.of(gs) for g, gs in spec.groups.items()}


def layouts_from_dicts(layout: dict[str, Any]) -> dict[str, GroupLayout]:
    """``{group: GroupLayout}`` from a saved policy state's ``layout`` (dicts or layouts)."""
    return {g: GroupLayout.from_dict(d) for g, d in layout.items()}


def layouts_to_dicts(layout: dict[str, GroupLayout]) -> dict[str, dict[str, Any]]:
    """``{group: dict}`` for a policy state (``GroupLayout.to_dict`` per group)."""
    return {g: lay.to_dict() for g, lay in layout.items()}
