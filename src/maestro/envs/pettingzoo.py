"""Interoperation with PettingZoo's Parallel API (Terry et al., "PettingZoo: Gym for Multi-Agent
Reinforcement Learning", NeurIPS 2021, https://arxiv.org/abs/2009.14471; API reference:
https://pettingzoo.farama.org/api/parallel/).

Two converters:

``to_parallel_env(env)``
    A maestro ``BatchedEnv`` with ``num_envs == 1`` seen as a ``pettingzoo.ParallelEnv``.
    Agents are named ``<group>_<i>`` (``adversary_0``, ``prey_0``...), in group order.
    Observations are float32 arrays of ``GroupSpec.obs_shape``; actions are ``int`` (Discrete) or
    float32 arrays ``(d,)`` (Box); ``state()`` is the ``(*state_shape,)`` global state.

    Episode semantics: the batched env auto-resets inside ``step``; the wrapper returns the
    pre-reset ``final_obs`` / ``final_state`` of the finishing step, marks every agent terminated
    (or truncated) and empties ``agents``. The next ``reset()`` without a seed hands out the episode
    the batched env already started by its auto-reset (so the wrapper replays exactly the episode
    stream of the batched env); ``reset(seed=s)`` reseeds the env. ``step`` after the end of an
    episode raises ``RuntimeError``.

    Absent agents (``alive`` False: cars not yet on the grid, dead units): PettingZoo forbids
    reviving a removed agent, while a maestro agent slot may leave and come back within an
    episode. The wrapper therefore keeps *every* agent in ``agents`` until the episode ends and
    reports presence in ``infos[agent]["alive"]``; an absent agent observes zeros, earns 0 and its
    action is ignored (as in the batched contract). On the final step ``infos[..]["alive"]`` is the
    presence at the start of that step (the batched env reports presence after its auto-reset).
    Agents missing from the ``actions`` dict take action 0 (Discrete) or the point of the Box
    nearest 0.

    Actions are checked as strictly as MPE2 checks them (``Discrete.contains``), with an error that
    names the agent instead of a bare assertion: a ``Discrete`` action is one integer scalar
    (``int``, ``np.int64``, a 0-d integer array; ``np.array([2])``, ``2.0`` and ``True`` are
    refused, the message giving the expected and the received shape or type) in ``[0, n)``; a
    ``Box`` action is a ``(d,)`` array inside the bounds (no clipping).

    Rendering and metadata (PettingZoo's conventions): ``render_mode`` is ``None`` (the default:
    ``render()`` warns and returns ``None``) or ``"rgb_array"`` (``render()`` returns the
    ``(H, W, 3)`` uint8 frame of the env's current world, i.e. after the final step of an episode
    the first frame of the next one). ``"human"`` is refused with a ``ValueError``: showing a
    window needs a display server, and maestro's envs only draw arrays. ``metadata`` holds
    ``render_modes`` (``["rgb_array"]``), ``render_fps`` (the env's ``render_fps``, MPE2's 10) and
    ``name``: the versioned name of the PettingZoo env it mirrors (``simple_spread_v3``,
    ``simple_tag_v3``, ``collect_treasure_v1``: the env class's ``reference_name``), else the
    registered name.

    Copies: a wrapper that is pickled and unpickled (SuperSuit's ``concat_vec_envs_v1`` clones its
    env with cloudpickle) keeps the current world but draws a fresh random stream: the wrapped
    env gets a fresh seed (``BatchedEnv``, "Copies"), the spaces are reseeded from the operating
    system, and the next ``reset()`` starts a new episode from that stream even if the batched env
    had already begun one by its auto-reset. So copies start from distinct states, as MPE2's do;
    ``reset(seed=s)`` makes any copy reproducible. ``copy.deepcopy`` stays exact.

``from_parallel_env(factory, num_envs, seed)``
    Any PettingZoo ParallelEnv as a maestro ``BatchedEnv``: ``num_envs`` instances made by
    ``factory()`` are stepped **one by one in a Python loop**; this is the one place maestro
    accepts a per-copy loop (PettingZoo envs are single-copy numpy programs), so it is meant for
    interoperation and parity tests, not speed. Instance ``i`` is reset with ``seed + i`` on a
    seeded (or the first) reset; auto-resets continue each instance's own random stream.

    Groups: an agent ``name_<digits>`` belongs to group ``name`` (agents without a numeric suffix
    form a group of their own); agents of a group must share observation and action spaces (a
    ``ValueError`` names the two that differ). Tensors are ``obs[g]: (B, N_g, *obs_shape)``,
    actions ``(B, N_g)`` int64 (Discrete) or ``(B, N_g, d)`` float32 (Box), ``state: (B, *state_shape)``
    from ``env.state()`` when the env has a ``state_space``, else the concatenation of every agent's
    flattened observation. Observations of another space gymnasium can flatten (``Discrete`` as a
    one-hot, ``MultiDiscrete``, ``MultiBinary``, ``Tuple``, ``Dict``) are read as gymnasium's
    ``spaces.flatten`` of them, ``obs_shape`` being ``flatten_space``'s; a space with no fixed-size flat
    form (``Graph``, ``Sequence``, ``Text``) is refused naming the group. Observations may also be
    PettingZoo's action-masking form, a ``Dict`` of exactly an ``observation`` (itself any of the
    above) and an ``action_mask`` of the Discrete action's ``n`` entries, or the
    masks may come in ``infos[agent]["action_mask"]`` (``info_masks``; what ``to_parallel_env``
    writes, so a masked maestro env keeps its masks through the round trip): the
    group then has ``has_action_mask``, ``env.action_mask()[g]`` is ``(B, N_g, n)`` bool (all
    legal for absent agents) and an alive agent given a masked action raises ``ValueError``
    naming it, before any copy is stepped. An agent is alive while it is in ``env.agents`` (and its info does not say
    ``alive=False``, which makes ``from_parallel_env(to_parallel_env(e))`` faithful); absent agents
    observe zeros except in ``final_obs`` of a finished episode, which keeps the last observation
    of every agent for bootstrapping.

    Episode ends: an instance whose ``agents`` list empties has finished; it is ``terminated``
    unless an agent was truncated, which must coincide with ``max_steps`` (taken from the env's
    ``max_cycles`` / ``max_steps`` / ``max_episode_steps`` attribute, or given): a truncation at
    another step raises ``RuntimeError`` naming both numbers, since the batched contract defines
    truncation as the time limit.

    Snapshots: a PettingZoo env has no state API, so ``get_state()`` deep-copies every instance
    into a module-level side table and returns per-copy integer tokens (``"token": (B,)``) next
    to the cached ``obs/<g>``, ``alive/<g>``, ``state`` tensors, the step counter and returns.
    ``set_state`` deep-copies the instances back, so a snapshot can be restored many times, by
    any wrapper of the same factory, and sliced per copy (``check_env``'s batched-vs-single check
    works unchanged). The table keeps the last ``SNAPSHOT_CAPACITY`` instance copies (never fewer
    than the newest snapshot); restoring an evicted token raises ``ValueError``. The copy is
    ``copy.deepcopy`` except that ``gymnasium.utils.EzPickle`` objects (MPE2's raw envs), whose
    pickling rebuilds a *fresh* env from constructor arguments, are copied attribute by attribute,
    and pygame objects (render surfaces and fonts) are shared, not copied.

    Pickled copies draw a fresh ``seed`` (as every ``BatchedEnv``) and their next ``reset()``
    reseeds instance ``i`` with it plus ``i``, so copies diverge whatever the instances' own
    pickling keeps (MPE2's instances are rebuilt fresh by their ``EzPickle``).
"""

from __future__ import annotations

import copy
import itertools
import re
import types
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import gymnasium
import gymnasium.spaces as gspaces
import numpy as np
import torch
from torch import Tensor

from maestro.envs.api import BatchedEnv, Obs, exact_deepcopy
from maestro.spec import EnvSpec, GroupSpec

try:
    from pettingzoo import ParallelEnv
except ImportError as _err:  # pragma: no cover - depends on the installation
    raise ImportError(
        "maestro.envs.pettingzoo needs PettingZoo; install it with `pip install 'maestro-marl[dev]'` "
        "(or `pip install pettingzoo`)"
    ) from _err

try:
    from gymnasium.utils.ezpickle import EzPickle
except ImportError:  # pragma: no cover - gymnasium always ships it
    EzPickle = ()  # type: ignore[assignment,misc]

__all__ = ["MaestroParallelEnv", "PettingZooBatchedEnv", "PettingZooConfig", "SNAPSHOT_CAPACITY", "from_parallel_env", "to_parallel_env"]

SNAPSHOT_CAPACITY = 8192
"""Instance copies kept by the snapshot side table of ``PettingZooBatchedEnv.get_state``."""

_AGENT_RE = re.compile(r"^(.+)_(\d+)$")
_RENDER_MODES = (None, "rgb_array")


# ---------------------------------------------------------------------------------------------
# maestro -> PettingZoo
# ---------------------------------------------------------------------------------------------
def _default_action(space: gspaces.Space) -> Any:
    if isinstance(space, gspaces.Discrete):
        return 0
    box: gspaces.Box = space  # type: ignore[assignment]
    return np.clip(np.zeros(box.shape, dtype=np.float32), box.low, box.high).astype(np.float32)


class MaestroParallelEnv(ParallelEnv):
    """A ``num_envs == 1`` maestro env as a PettingZoo ``ParallelEnv`` (module docstring: semantics).

    Attributes:
        env: the wrapped ``BatchedEnv``.
        possible_agents: ``[f"{group}_{i}"]`` in group order.
        state_space: ``Box(-inf, inf, spec.state_shape, float32)``.
        max_cycles: the wrapped env's ``spec.max_steps`` (informative; PettingZoo's test sets it).
    """

    def __init__(self, env: BatchedEnv, render_mode: str | None = None) -> None:
        if not isinstance(env, BatchedEnv):
            raise ValueError(f"to_parallel_env expects a maestro BatchedEnv, got {type(env).__name__}")
        if env.num_envs != 1:
            raise ValueError(f"to_parallel_env needs an env with num_envs=1, got num_envs={env.num_envs}")
        if render_mode == "human":
            raise ValueError(
                "to_parallel_env: render_mode='human' is not supported: it needs a window on a display server, and maestro's "
                "envs only draw (H, W, 3) arrays; use render_mode='rgb_array' and show or save the frames "
                "(maestro.envs.render.write_gif, or `maestro render RUN`)"
            )
        if render_mode not in _RENDER_MODES:
            raise ValueError(f"to_parallel_env: render_mode must be one of {_RENDER_MODES}, got {render_mode!r}")
        self.env = env
        spec = env.spec
        self.metadata = {
            "render_modes": ["rgb_array"],
            "render_fps": int(env.render_fps),
            "name": env.reference_name or spec.name,
            "is_parallelizable": True,
        }
        self.render_mode = render_mode
        self.max_cycles = spec.max_steps
        self._where: dict[str, tuple[str, int]] = {}
        self.possible_agents: list[str] = []
        self.observation_spaces: dict[str, gspaces.Space] = {}
        self.action_spaces: dict[str, gspaces.Space] = {}
        for g, gs in spec.groups.items():
            for i in range(gs.n_agents):
                name = f"{g}_{i}"
                self.possible_agents.append(name)
                self._where[name] = (g, i)
                # one space object per agent, so that seeding one agent's space leaves the others alone
                self.observation_spaces[name] = copy.deepcopy(gs.observation_space)
                self.action_spaces[name] = copy.deepcopy(gs.action_space)
        self.state_space = gspaces.Box(-np.inf, np.inf, spec.state_shape, dtype=np.float32)
        self.agents: list[str] = []
        self._started = False
        self._fresh = False  # the batched env auto-reset at the end of the last episode
        self._final_state: np.ndarray | None = None
        self._alive: dict[str, np.ndarray] = {}

    # -------------------------------------------------------------- copies (module docstring)
    def __deepcopy__(self, memo: dict[int, Any]) -> "MaestroParallelEnv":
        return exact_deepcopy(self, memo)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickling: the wrapped env has drawn a fresh seed (``BatchedEnv.__setstate__``); reseed
        the spaces too, and make the next ``reset()`` draw a new episode from that stream."""
        self.__dict__.update(state)
        self._fresh = False
        for space in (*self.observation_spaces.values(), *self.action_spaces.values()):
            space.seed()

    def observation_space(self, agent: str) -> gspaces.Space:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> gspaces.Space:
        return self.action_spaces[agent]

    # -------------------------------------------------------------- conversions
    def _obs_dict(self, obs: Obs) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for g, x in obs.items():
            arr = x[0].detach().cpu().numpy().astype(np.float32, copy=True)
            for i in range(arr.shape[0]):
                out[f"{g}_{i}"] = arr[i]
        return out

    def _alive_np(self) -> dict[str, np.ndarray]:
        return {g: a[0].detach().cpu().numpy().copy() for g, a in self.env.alive().items()}

    def _infos(self, alive: dict[str, np.ndarray], masks: dict[str, Tensor] | None) -> dict[str, dict[str, Any]]:
        infos: dict[str, dict[str, Any]] = {}
        for a, (g, i) in self._where.items():
            d: dict[str, Any] = {"alive": bool(alive[g][i])}
            if masks is not None and g in masks:
                d["action_mask"] = masks[g][0, i].detach().cpu().numpy().astype(np.int8)
            infos[a] = d
        return infos

    def _actions(self, actions: dict[str, Any]) -> dict[str, Tensor]:
        if not isinstance(actions, dict):
            raise ValueError(f"{self.metadata['name']}: actions must be a dict keyed by agent name, got {type(actions).__name__}")
        unknown = sorted(set(actions) - set(self.agents))
        if unknown:
            raise ValueError(f"{self.metadata['name']}: actions for agents that are not live: {unknown}; live agents: {self.agents}")
        spec = self.env.spec
        batch: dict[str, np.ndarray] = {}
        for g, gs in spec.groups.items():
            default = _default_action(gs.action_space)
            if gs.discrete:
                batch[g] = np.zeros((1, gs.n_agents), dtype=np.int64)
            else:
                batch[g] = np.broadcast_to(default, (1, gs.n_agents, gs.action_dim)).astype(np.float32)
        for a, act in actions.items():
            g, i = self._where[a]
            gs = spec.groups[g]
            arr = np.asarray(act)
            if gs.discrete:  # as strict as gymnasium's Discrete.contains (MPE2 asserts it), but bools are refused
                if arr.shape != ():
                    raise ValueError(
                        f"{self.metadata['name']}: action of {a!r} must be a scalar integer (shape ()) for Discrete({gs.action_dim}), "
                        f"got shape {arr.shape}: {act!r}"
                    )
                if isinstance(act, (bool, np.bool_)) or not np.issubdtype(arr.dtype, np.integer):
                    raise ValueError(
                        f"{self.metadata['name']}: action of {a!r} must be an integer in [0, {gs.action_dim}), got {act!r} of type {type(act).__name__}"
                    )
                v = int(arr)
                if not 0 <= v < gs.action_dim:
                    raise ValueError(f"{self.metadata['name']}: action of {a!r} must be one integer in [0, {gs.action_dim}), got {act!r}")
                batch[g][0, i] = v
            else:
                box: gspaces.Box = gs.action_space  # type: ignore[assignment]
                if arr.shape != (gs.action_dim,):
                    raise ValueError(f"{self.metadata['name']}: action of {a!r} must have shape ({gs.action_dim},), got {arr.shape}")
                if not np.issubdtype(arr.dtype, np.number) or not bool(np.all((arr >= box.low) & (arr <= box.high))):
                    raise ValueError(
                        f"{self.metadata['name']}: action of {a!r} must lie in [{float(box.low.min())}, {float(box.high.max())}] "
                        f"(no clipping is done), got {arr}"
                    )
                batch[g][0, i] = arr.astype(np.float32)
        return {g: torch.as_tensor(x, device=self.env.device) for g, x in batch.items()}

    # -------------------------------------------------------------- the Parallel API
    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        """Start an episode (``options`` is accepted and ignored); returns ``(obs, infos)``."""
        if seed is not None or not self._started or not self._fresh:
            obs = self.env.reset(seed=seed)
        else:  # the batched env has already started a new episode by its auto-reset
            obs = self.env.observe()
        self._started, self._fresh = True, False
        self._final_state = None
        self.agents = list(self.possible_agents)
        self._alive = self._alive_np()
        return self._obs_dict(obs), self._infos(self._alive, self.env.action_mask())

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        """Step every agent; returns ``(obs, rewards, terminations, truncations, infos)`` keyed by agent."""
        if not self.agents:
            raise RuntimeError(f"{self.metadata['name']}: the episode is over (or reset() was never called); call reset()")
        out = self.env.step(self._actions(actions))
        done = bool(out.done[0])
        term, trunc = bool(out.terminated[0]), bool(out.truncated[0])
        live = list(self.agents)
        obs = self._obs_dict(out.final_obs)
        rewards_t = {g: r[0].detach().cpu().numpy() for g, r in out.reward.items()}
        rewards = {a: float(rewards_t[self._where[a][0]][self._where[a][1]]) for a in live}
        if done:
            alive = self._alive
            infos = self._infos(alive, None)
            for a in live:
                g, i = self._where[a]
                infos[a]["episode_return"] = float(out.info[f"episode_return/{g}"][0, i])
                infos[a]["episode_length"] = int(out.info["episode_length"][0])
            self._final_state = out.final_state[0].detach().cpu().numpy().astype(np.float32, copy=True)
            self._fresh = True
            self.agents = []
        else:
            alive = {g: a[0].detach().cpu().numpy().copy() for g, a in out.alive.items()}
            self._alive = alive
            infos = self._infos(alive, self.env.action_mask())
            self._final_state = None
        for k in self.env.spec.info_keys:
            v = out.info[k][0].detach().cpu()
            val: Any = v.item() if v.ndim == 0 else v.numpy().copy()
            for a in live:
                infos[a][k] = val
        terminations = {a: term for a in live}
        truncations = {a: trunc for a in live}
        return {a: obs[a] for a in live}, rewards, terminations, truncations, {a: infos[a] for a in live}

    def state(self) -> np.ndarray:
        """Global state ``(*state_shape,)`` float32 (the final state right after an episode ended)."""
        if not self._started:
            raise RuntimeError(f"{self.metadata['name']}: call reset() before state()")
        if self._final_state is not None:
            return self._final_state.copy()
        return self.env.state()[0].detach().cpu().numpy().astype(np.float32, copy=True)

    def render(self) -> np.ndarray | None:
        """``render_mode="rgb_array"``: RGB array ``(H, W, 3)`` uint8 of the env's current world;
        ``render_mode=None``: a warning and ``None`` (PettingZoo's convention)."""
        if self.render_mode is None:
            gymnasium.logger.warn(
                f"{self.metadata['name']}: render() was called on an env made with render_mode=None; "
                "pass render_mode='rgb_array' to to_parallel_env to get frames"
            )
            return None
        return self.env.render()

    def close(self) -> None:
        self.env.close()


def to_parallel_env(env: BatchedEnv | str, render_mode: str | None = None, **kwargs: Any) -> MaestroParallelEnv:
    """Wrap a maestro env with ``num_envs=1`` (or a registered name, made with ``kwargs``) as a ParallelEnv.

    Args:
        env: a ``BatchedEnv`` with ``num_envs=1``, or a registered name (``maestro list``).
        render_mode: ``None`` (no frames) or ``"rgb_array"`` (module docstring).
        **kwargs: with a name: ``seed``, ``device`` and fields of the env's config (``make_env``).

    Raises:
        ValueError: ``env.num_envs != 1`` (the message names ``num_envs``), an unknown or
            ``"human"`` render mode, keyword arguments given with an env object.
    """
    if isinstance(env, str):
        from maestro.registry import make_env

        kwargs.setdefault("num_envs", 1)
        env = make_env(env, **kwargs)
    elif kwargs:
        raise ValueError(f"to_parallel_env: keyword arguments {sorted(kwargs)} only apply to a registered env name")
    return MaestroParallelEnv(env, render_mode=render_mode)


# ---------------------------------------------------------------------------------------------
# snapshots of PettingZoo envs
# ---------------------------------------------------------------------------------------------
_SNAPSHOTS: "OrderedDict[int, Any]" = OrderedDict()
_TOKENS = itertools.count(1)
_ATOMIC = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, str, bytes, int, float, bool, complex, type(None), np.ndarray, np.generic, torch.Tensor, torch.Generator, range)


def _clone_env(root: Any) -> Any:
    """``copy.deepcopy(root)``, copying EzPickle objects by attributes and sharing pygame objects."""
    memo: dict[int, Any] = {}
    shells: list[tuple[Any, Any]] = []
    stack, seen = [root], set()
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, _ATOMIC):
            continue
        seen.add(id(o))
        if type(o).__module__.split(".")[0] == "pygame":
            memo[id(o)] = o  # render surfaces and fonts: shared, not state
            continue
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            stack.extend(o)
        elif isinstance(o, types.MethodType):
            stack.append(o.__self__)
        else:
            if EzPickle and isinstance(o, EzPickle):
                shell = type(o).__new__(type(o))
                memo[id(o)] = shell
                shells.append((o, shell))
            d = getattr(o, "__dict__", None)
            if isinstance(d, dict):
                stack.extend(d.values())
    keep_alive = [o for o, _ in shells]
    for o, shell in shells:
        shell.__dict__.update(copy.deepcopy(o.__dict__, memo))
    out = copy.deepcopy(root, memo)
    del keep_alive
    return out


def _store_snapshot(env: Any, keep: int) -> int:
    tok = next(_TOKENS)
    _SNAPSHOTS[tok] = _clone_env(env)
    while len(_SNAPSHOTS) > max(SNAPSHOT_CAPACITY, keep):
        _SNAPSHOTS.popitem(last=False)
    return tok


# ---------------------------------------------------------------------------------------------
# PettingZoo -> maestro
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PettingZooConfig:
    """How a ``PettingZooBatchedEnv`` was made (kept as ``env.cfg``)."""

    factory: Callable[[], Any]
    """zero-argument constructor of one PettingZoo ParallelEnv"""
    max_steps: int
    """episode length at which a copy is truncated"""
    name: str
    """name of the env in its spec"""
    info_mask_groups: tuple[str, ...] = ()
    """groups (Box observations, Discrete actions) whose legal-action masks come from
    ``infos[agent]["action_mask"]`` instead of a Dict observation"""


def _infer_groups(env: Any) -> dict[str, list[str]]:
    """Group agents by the prefix before the last ``_<digits>``, ordered by that index."""
    found: dict[str, list[tuple[int, str]]] = {}
    for a in env.possible_agents:
        m = _AGENT_RE.match(str(a))
        g, k = (m.group(1), int(m.group(2))) if m else (str(a), 0)
        found.setdefault(g, []).append((k, a))
    groups: dict[str, list[str]] = {}
    for g, members in found.items():
        idx = [k for k, _ in members]
        if len(set(idx)) != len(idx):
            raise ValueError(f"group {g!r}: agents {[a for _, a in members]} repeat an index")
        groups[g] = [a for _, a in sorted(members)]
    return groups


def _detect_max_steps(env: Any) -> int | None:
    for obj in (env, getattr(env, "unwrapped", None), getattr(env, "aec_env", None)):
        if obj is None:
            continue
        for attr in ("max_cycles", "max_steps", "max_episode_steps"):
            try:
                v = getattr(obj, attr)
            except Exception:  # wrappers may refuse some attributes before reset
                continue
            if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0:
                return int(v)
    return None


def _is_mask_dict(space: gspaces.Space) -> bool:
    """PettingZoo's action-masking form: a Dict of exactly ``observation`` and ``action_mask``."""
    return isinstance(space, gspaces.Dict) and set(space.spaces) == {"observation", "action_mask"}


def _masked_observation_space(g: str, agent: str, osp: gspaces.Dict, asp: gspaces.Space) -> gspaces.Space:
    """The ``observation`` part of PettingZoo's action-masking Dict space, after checking its mask fits ``asp``."""
    mask = osp["action_mask"]
    n_mask = int(np.prod(mask.shape)) if mask.shape is not None else -1
    if not isinstance(asp, gspaces.Discrete) or n_mask != int(asp.n):
        raise ValueError(f"group {g!r}: agent {agent!r} has an action_mask of shape {mask.shape} for action space {asp}; it needs one entry per Discrete action")
    return osp["observation"]


class PettingZooBatchedEnv(BatchedEnv):
    """``num_envs`` PettingZoo ParallelEnv instances as one maestro env (module docstring: semantics).

    Shapes: ``obs[g]`` ``(B, N_g, *obs_shape)`` float32, ``alive[g]`` ``(B, N_g)`` bool,
    ``state`` ``(B, *state_shape)`` float32; actions ``(B, N_g)`` int64 or ``(B, N_g, d)`` float32.
    """

    def __init__(self, cfg: PettingZooConfig, num_envs: int, seed: int = 0, device: str | torch.device = "cpu", first: Any = None) -> None:
        super().__init__(cfg, num_envs, seed, device)
        self._envs = [first if (i == 0 and first is not None) else cfg.factory() for i in range(num_envs)]
        e0 = self._envs[0]
        groups = _infer_groups(e0)
        self._where: dict[str, tuple[str, int]] = {}
        self._start: dict[str, int] = {}
        self._flatten: dict[str, gspaces.Space] = {}  # groups whose observations are read through gymnasium's flatten
        specs: dict[str, GroupSpec] = {}
        obs_dims: list[int] = []
        for g, members in groups.items():
            first = members[0]
            osp, asp = e0.observation_space(first), e0.action_space(first)
            for a in members[1:]:
                if e0.observation_space(a) != osp:
                    raise ValueError(f"group {g!r}: agents {first!r} and {a!r} have different observation spaces ({osp} vs {e0.observation_space(a)})")
                if e0.action_space(a) != asp:
                    raise ValueError(f"group {g!r}: agents {first!r} and {a!r} have different action spaces ({asp} vs {e0.action_space(a)})")
            masked = _is_mask_dict(osp)
            if masked:
                osp = _masked_observation_space(g, first, osp, asp)
            elif g in cfg.info_mask_groups:
                if not isinstance(asp, gspaces.Discrete):
                    raise ValueError(f"group {g!r}: action masks from infos need Discrete actions, agent {first!r} has {asp}")
                masked = True
            if not isinstance(osp, gspaces.Box):
                if not osp.is_np_flattenable:
                    raise ValueError(
                        f"group {g!r}: agent {first!r} has observation space {osp}, which has no fixed-size flat form; "
                        "Box observations, spaces gymnasium flattens (Discrete, MultiDiscrete, MultiBinary, Tuple, Dict) "
                        "and a Dict of an 'observation' and an 'action_mask' are supported"
                    )
                self._flatten[g] = osp
                osp = gspaces.flatten_space(osp)
            if isinstance(asp, gspaces.Discrete):
                self._start[g] = int(asp.start)
                act_space: gspaces.Space = gspaces.Discrete(int(asp.n))
            elif isinstance(asp, gspaces.Box) and len(asp.shape) == 1:
                act_space = gspaces.Box(asp.low.astype(np.float32), asp.high.astype(np.float32), asp.shape, dtype=np.float32)
            else:
                raise ValueError(f"group {g!r}: agent {first!r} has action space {asp}; only Discrete and 1-D Box are supported")
            specs[g] = GroupSpec(g, len(members), tuple(osp.shape), act_space, has_action_mask=masked)
            for i, a in enumerate(members):
                self._where[a] = (g, i)
            obs_dims.append(len(members) * int(np.prod(osp.shape)))
        state_space = getattr(e0, "state_space", None)
        self._has_state = isinstance(state_space, gspaces.Box)
        state_shape = tuple(state_space.shape) if self._has_state else (int(sum(obs_dims)),)
        self.spec = EnvSpec(cfg.name, specs, max_steps=cfg.max_steps, state_shape=state_shape)
        B = num_envs
        self._obs = {g: np.zeros((B, gs.n_agents, *gs.obs_shape), dtype=np.float32) for g, gs in specs.items()}
        self._alive_buf = {g: np.zeros((B, gs.n_agents), dtype=bool) for g, gs in specs.items()}
        self._mask = {g: np.ones((B, gs.n_agents, gs.action_dim), dtype=bool) for g, gs in specs.items() if gs.has_action_mask}
        self._info_masked = set(cfg.info_mask_groups)
        self._state = np.zeros((B, *state_shape), dtype=np.float32)
        self._reseed: int | None = None
        self._ever_reset = False

    # -------------------------------------------------------------- helpers
    def _write(self, i: int, obs: dict[str, Any], infos: dict[str, Any], env: Any, keep_all: bool) -> None:
        """Cache copy ``i``'s observations, presence and state after a reset or a step."""
        present = set(env.agents)
        for g in self._obs:
            self._obs[g][i] = 0.0
            self._alive_buf[g][i] = False
        for m in self._mask.values():
            m[i] = True
        for a in present:
            if a in self._where:
                info = infos.get(a) if isinstance(infos, dict) else None
                if not (isinstance(info, dict) and info.get("alive", True) is False):
                    g, j = self._where[a]
                    self._alive_buf[g][i, j] = True
        for a, o in obs.items():
            if a in self._where:
                g, j = self._where[a]
                if g in self._info_masked:
                    if self._alive_buf[g][i, j]:
                        self._mask[g][i, j] = self._info_mask(a, infos, self._mask[g].shape[-1])
                elif g in self._mask:
                    if self._alive_buf[g][i, j]:
                        self._mask[g][i, j] = np.asarray(o["action_mask"]).reshape(-1).astype(bool)
                    o = o["observation"]
                if keep_all or self._alive_buf[g][i, j]:
                    if g in self._flatten:
                        o = gspaces.flatten(self._flatten[g], o)
                    self._obs[g][i, j] = np.asarray(o, dtype=np.float32).reshape(self._obs[g].shape[2:])
        if self._has_state:
            self._state[i] = np.asarray(env.state(), dtype=np.float32).reshape(self._state.shape[1:])
        else:
            self._state[i] = np.concatenate([self._obs[g][i].reshape(-1) for g in self._obs])

    def _info_mask(self, agent: str, infos: Any, n: int) -> np.ndarray:
        """``infos[agent]["action_mask"]`` as ``(n,)`` bool; a missing or misshapen mask is a ``ValueError`` naming the agent."""
        info = infos.get(agent) if isinstance(infos, dict) else None
        mask = info.get("action_mask") if isinstance(info, dict) else None
        if mask is None:
            raise ValueError(f"{self.spec.name}: agent {agent!r} is present but its info has no 'action_mask' (its group reads masks from infos)")
        mask = np.asarray(mask).reshape(-1)
        if mask.shape[0] != n:
            raise ValueError(f"{self.spec.name}: agent {agent!r} has an info action_mask of {mask.shape[0]} entries, expected {n} (one per Discrete action)")
        return mask.astype(bool)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickling: a fresh ``seed`` (``BatchedEnv.__setstate__``), and the next ``reset()`` reseeds
        instance ``i`` with ``seed + i``, whatever the instances' own pickling kept of their streams."""
        super().__setstate__(state)
        self._ever_reset = False

    # -------------------------------------------------------------- hooks
    def reset(self, seed: int | None = None) -> Obs:
        """Reset every copy; instance ``i`` is reseeded with ``seed + i`` on a seeded or the first reset."""
        self._reseed = int(seed) if seed is not None else (None if self._ever_reset else self.seed)
        try:
            return super().reset(seed)
        finally:
            self._reseed = None
            self._ever_reset = True

    def _reset_copies(self, mask: Tensor) -> None:
        for i in mask.nonzero().flatten().tolist():
            env = self._envs[i]
            obs, infos = env.reset(seed=None if self._reseed is None else self._reseed + i)
            self._write(i, obs, infos, env, keep_all=False)

    def _step_world(self, actions: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor, dict[str, Tensor]]:
        acts = {g: a.detach().cpu().numpy().copy() for g, a in actions.items()}
        for g, m in self._mask.items():
            illegal = self._alive_buf[g] & ~np.take_along_axis(m, acts[g][..., None], -1)[..., 0]
            if illegal.any():
                i, j = (int(k[0]) for k in np.nonzero(illegal))
                raise ValueError(f"{self.spec.name}: actions[{g!r}] gives agent {j} of copy {i} action {int(acts[g][i, j])}, which its action mask forbids")
        discrete = {g: gs.discrete for g, gs in self.spec.groups.items()}
        rewards = {g: np.zeros((self.num_envs, gs.n_agents), dtype=np.float32) for g, gs in self.spec.groups.items()}
        terminated = np.zeros(self.num_envs, dtype=bool)
        t_next = (self._t + 1).tolist()
        for i, env in enumerate(self._envs):
            acting = list(env.agents)
            step_actions: dict[str, Any] = {}
            for a in acting:
                g, j = self._where[a]
                step_actions[a] = int(acts[g][i, j]) + self._start[g] if discrete[g] else acts[g][i, j]
            obs, rew, term, trunc, infos = env.step(step_actions)
            for a, r in rew.items():
                if a in self._where:
                    g, j = self._where[a]
                    rewards[g][i, j] = r
            ended = not env.agents
            if ended:
                truncated = any(bool(trunc.get(a, False)) for a in acting)
                if truncated and t_next[i] < self.spec.max_steps:
                    raise RuntimeError(
                        f"{self.spec.name}: copy {i} was truncated by the PettingZoo env after {t_next[i]} steps, "
                        f"but max_steps={self.spec.max_steps}; pass max_steps={t_next[i]} to from_parallel_env"
                    )
                terminated[i] = not truncated
            self._write(i, obs, infos, env, keep_all=ended)
        dev = self.device
        return {g: torch.as_tensor(r, device=dev) for g, r in rewards.items()}, torch.as_tensor(terminated, device=dev), {}

    def _observe(self) -> Obs:
        return {g: torch.tensor(x, device=self.device) for g, x in self._obs.items()}

    def action_mask(self) -> dict[str, Tensor] | None:
        """``(B, N_g, n)`` bool for the groups with Dict (action-masking) observations, else ``None``."""
        return {g: torch.tensor(m, device=self.device) for g, m in self._mask.items()} or None

    def _alive(self) -> dict[str, Tensor]:
        return {g: torch.tensor(x, device=self.device) for g, x in self._alive_buf.items()}

    def _global_state(self) -> Tensor:
        return torch.tensor(self._state, device=self.device)

    def _get_sim_state(self) -> dict[str, Tensor]:
        tokens = [_store_snapshot(env, keep=self.num_envs) for env in self._envs]
        s = {"token": torch.tensor(tokens, dtype=torch.long, device=self.device), "state": self._global_state()}
        for g in self._obs:
            s[f"obs/{g}"] = torch.tensor(self._obs[g], device=self.device)
            s[f"alive/{g}"] = torch.tensor(self._alive_buf[g], device=self.device)
        for g, m in self._mask.items():
            s[f"mask/{g}"] = torch.tensor(m, device=self.device)
        return s

    def _set_sim_state(self, state: dict[str, Tensor]) -> None:
        tokens = state["token"].tolist()
        lost = [t for t in tokens if t not in _SNAPSHOTS]
        if lost:
            raise ValueError(
                f"{self.spec.name}: set_state tokens {lost[:5]} are not in the snapshot table (it keeps the last "
                f"{SNAPSHOT_CAPACITY} instance copies; PettingZoo envs can only be restored from a recent get_state())"
            )
        self._envs = [_clone_env(_SNAPSHOTS[t]) for t in tokens]
        for g in self._obs:
            self._obs[g] = state[f"obs/{g}"].cpu().numpy().copy()
            self._alive_buf[g] = state[f"alive/{g}"].cpu().numpy().copy()
        for g in self._mask:
            self._mask[g] = state[f"mask/{g}"].cpu().numpy().copy()
        self._state = state["state"].cpu().numpy().copy()

    def render(self) -> np.ndarray:
        """RGB image ``(H, W, 3)`` uint8 of copy 0 (the factory must make envs with ``render_mode="rgb_array"``)."""
        frame = self._envs[0].render()
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
            raise RuntimeError(
                f"{self.spec.name}: render() of the PettingZoo env returned {type(frame).__name__}; "
                "make the env with render_mode='rgb_array' in the factory"
            )
        return np.ascontiguousarray(frame, dtype=np.uint8)

    def close(self) -> None:
        for env in self._envs:
            env.close()


def from_parallel_env(
    factory: Callable[[], Any],
    num_envs: int,
    seed: int = 0,
    device: str | torch.device = "cpu",
    max_steps: int | None = None,
    name: str | None = None,
    info_masks: bool | None = None,
) -> PettingZooBatchedEnv:
    """``num_envs`` copies of a PettingZoo ParallelEnv as a maestro ``BatchedEnv``.

    Args:
        factory: zero-argument constructor of one env, e.g. ``mpe2.simple_spread_v3.parallel_env``
            or ``functools.partial(simple_tag_v3.parallel_env, continuous_actions=True)``.
        num_envs: ``B``, the number of instances (stepped in a Python loop).
        seed: instance ``i`` is reset with ``seed + i``.
        device: device of every tensor exchanged.
        max_steps: episode length; default: the env's ``max_cycles``/``max_steps``/``max_episode_steps``.
        name: name in the spec; default: the env's ``metadata["name"]``.
        info_masks: read legal-action masks from ``infos[agent]["action_mask"]`` for the groups with
            Box observations and Discrete actions (PettingZoo's other masking convention, and what
            ``to_parallel_env`` writes); ``None`` (default): for the groups whose agents' infos carry
            an ``action_mask`` after one ``reset(seed=seed)`` of instance 0 (the first ``reset()``
            reseeds it, so the probe changes nothing); ``False``: never.

    Raises:
        ValueError: agents of one group with different spaces (names both), unsupported spaces,
            or no ``max_steps`` found.
    """
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"from_parallel_env: num_envs must be an integer >= 1, got {num_envs!r}")
    first = factory()  # becomes instance 0
    ms = max_steps if max_steps is not None else _detect_max_steps(first)
    if ms is None:
        raise ValueError(f"from_parallel_env: {type(first).__name__} has no max_cycles/max_steps/max_episode_steps attribute; pass max_steps=")
    if isinstance(ms, bool) or not isinstance(ms, (int, np.integer)) or ms < 1:
        raise ValueError(f"from_parallel_env: max_steps must be an integer >= 1, got {ms!r}")
    meta = getattr(first, "metadata", None)
    nm = name or (meta.get("name") if isinstance(meta, dict) else None) or type(first).__name__
    groups = [g for g, members in _infer_groups(first).items()
              if isinstance(first.action_space(members[0]), gspaces.Discrete) and not isinstance(first.observation_space(members[0]), gspaces.Dict)]
    if info_masks is None and groups:
        _, infos = first.reset(seed=seed)
        carries = {a for a, d in (infos or {}).items() if isinstance(d, dict) and "action_mask" in d}
        members = _infer_groups(first)
        groups = [g for g in groups if any(a in carries for a in members[g])]
    elif not info_masks:
        groups = []
    cfg = PettingZooConfig(factory, int(ms), str(nm), tuple(groups))
    return PettingZooBatchedEnv(cfg, num_envs=num_envs, seed=seed, device=device, first=first)
