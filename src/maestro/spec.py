"""Static description of a batched multi-agent environment: its groups, shapes and spaces.

A *group* holds agents that share an observation and an action space (simple tag: ``adversary``
and ``prey``). Every tensor an environment exchanges is laid out ``(B, N_g, ...)``: env copies,
then the agents of the group; a trajectory adds a leading time axis ``(T, B, N_g, ...)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    """

    name: str
    groups: dict[str, GroupSpec]
    max_steps: int
    state_shape: tuple[int, ...]
    info_keys: tuple[str, ...] = field(default_factory=tuple)
    episode_sums: tuple[str, ...] = field(default_factory=tuple)

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
