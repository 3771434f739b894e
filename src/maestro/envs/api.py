"""The batched environment contract (``DESIGN.md``, "The environment contract").

An environment steps ``B`` copies of a multi-agent task at once on torch tensors::

    env = maestro.make_env("simple_spread", num_envs=1024, seed=0, n_agents=3)
    obs = env.reset(seed=0)                 # dict[group, Tensor[B, N_g, *obs_shape]]
    out = env.step(actions)                 # dict[group, Tensor[B, N_g] int64 | Tensor[B, N_g, d] float32]

Copies that finish (``terminated`` or ``truncated``) are reset inside ``step``; ``out.obs`` is then
the first observation of the new episode and ``out.final_obs`` the observation the step reached
before that reset (equal to ``out.obs`` for the copies that did not finish), so a learner can
always bootstrap from ``final_obs``.

``BatchedEnv`` holds the bookkeeping every env shares (validation of actions, step counters,
episode returns, auto-reset, seeding, state snapshots); a scenario implements six hooks:
``_reset_copies``, ``_step_world``, ``_observe``, ``_global_state``, ``_get_sim_state`` and
``_set_sim_state`` (plus ``_alive`` / ``action_mask`` / ``render`` where they apply). This is the
one base class in maestro: it fixes the contract's semantics in one place, and it has no deeper
hierarchy.
"""

from __future__ import annotations

import abc
import copy
import secrets
from dataclasses import dataclass
from typing import Any

import gymnasium.spaces as gspaces
import torch
from torch import Tensor

from maestro.spec import EnvSpec, GroupSpec

Obs = dict[str, Tensor]


@dataclass
class StepOut:
    """What ``env.step`` returns. ``B`` = number of env copies, ``N_g`` = agents of group g.

    Attributes:
        obs: per group ``(B, N_g, *obs_shape)``: the observation to act on next (after auto-reset).
        reward: per group ``(B, N_g)`` float32: reward of this step. The env decides what absent
            agents receive: usually 0, but a team reward (combat's terminal reward) reaches every
            member of the team, dead or alive, as in CommNet and MS-MARL's Algorithm 1.
        terminated: ``(B,)`` bool: the episode ended in a terminal state.
        truncated: ``(B,)`` bool: the episode hit ``max_steps`` without terminating.
        final_obs: per group ``(B, N_g, *obs_shape)``: the observation reached by this step,
            before any auto-reset (bootstrap from it).
        alive: per group ``(B, N_g)`` bool: which agents exist in ``obs`` (cars on the grid,
            units alive); absent agents' observations are zeros and their actions are ignored.
        state: ``(B, *state_shape)``: global state after auto-reset (centralised critic, master).
        final_state: ``(B, *state_shape)``: global state before auto-reset.
        info: dict of ``(B, ...)`` tensors: ``done``, ``episode_length`` (int64),
            ``episode_return/<group>`` (``(B, N_g)``) and ``episode_sum/<key>`` for the keys of
            ``spec.episode_sums``, valid where ``done``; plus env extras (``success``, ``win``,
            ``touches``...) listed in ``spec.info_keys``.
    """

    obs: Obs
    reward: dict[str, Tensor]
    terminated: Tensor
    truncated: Tensor
    final_obs: Obs
    alive: dict[str, Tensor]
    state: Tensor
    final_state: Tensor
    info: dict[str, Tensor]

    @property
    def done(self) -> Tensor:
        """``(B,)`` bool: ``terminated | truncated``."""
        return self.terminated | self.truncated


@dataclass
class EntityObs:
    """One group's observation as entity tokens, for networks that take any number of entities.

    ``E`` entities per observer: its own token first, then the other agents (in the env's agent
    order, every role), then the landmarks. A token is ``spec.entity_token_dim`` features:
    ``maestro.spec.ENTITY_FEATURES`` (relative position, velocity, is-self) and a one-hot over
    ``spec.entity_kinds``. Envs with this view declare ``spec.entity_kinds`` and implement
    ``entity_obs``; the flat ``obs`` is unchanged.

    Attributes:
        tokens: ``(B, N_g, E, F)`` float32.
        mask: ``(B, N_g, E)`` bool: the entities the observer sees (its own token always; others
            within the env's field of view).
    """

    tokens: Tensor
    mask: Tensor


def _box_bounds(box: gspaces.Box) -> tuple[float, float] | None:
    """``(low, high)`` if the Box has the same bounds in every dimension, else ``None``."""
    lo, hi = box.low.reshape(-1), box.high.reshape(-1)
    if (lo == lo[0]).all() and (hi == hi[0]).all():
        return float(lo[0]), float(hi[0])
    return None


def validate_actions(spec: EnvSpec, actions: Any, num_envs: int, device: torch.device) -> dict[str, Tensor]:
    """Check a batch of actions against the spec and return them on ``device``.

    Discrete groups take ``(B, N_g)`` integer tensors in ``[0, n)``; continuous groups take
    ``(B, N_g, d)`` floating tensors inside the Box bounds. Nothing is clipped: a wrong key,
    shape, dtype or range (NaN included) raises a ``ValueError`` naming the group, the expected
    and the received. Costs one min/max reduction per group.
    """
    if not isinstance(actions, dict):
        raise ValueError(f"{spec.name}: actions must be a dict keyed by group {spec.group_names}, got {type(actions).__name__}")
    if len(actions) != len(spec.groups) or any(g not in actions for g in spec.groups):
        missing = [g for g in spec.groups if g not in actions]
        extra = [g for g in actions if g not in spec.groups]
        raise ValueError(f"{spec.name}: action groups must be {spec.group_names}; missing {missing}, unexpected {extra}")
    out: dict[str, Tensor] = {}
    for g, gs in spec.groups.items():
        a = actions[g]
        if not isinstance(a, Tensor):
            raise ValueError(f"{spec.name}: actions[{g!r}] must be a torch.Tensor, got {type(a).__name__}")
        expected = (num_envs, gs.n_agents, *gs.action_shape)
        if a.shape != expected:
            raise ValueError(f"{spec.name}: actions[{g!r}] has shape {tuple(a.shape)}, expected {expected} (B, N_g{', d' if not gs.discrete else ''})")
        if a.device != device:
            a = a.to(device)
        if gs.discrete:
            if a.dtype.is_floating_point or a.dtype == torch.bool or a.is_complex():
                raise ValueError(f"{spec.name}: actions[{g!r}] must be an integer tensor (discrete), got {a.dtype}")
            n = gs.action_dim
            if a.numel():
                lo, hi = torch.aminmax(a)
                if int(lo) < 0 or int(hi) >= n:
                    bad = int(lo) if int(lo) < 0 else int(hi)
                    raise ValueError(f"{spec.name}: actions[{g!r}] must lie in [0, {n}), got {bad}")
            out[g] = a if a.dtype == torch.long else a.long()
        else:
            if not a.dtype.is_floating_point:
                raise ValueError(f"{spec.name}: actions[{g!r}] must be a float tensor (continuous), got {a.dtype}")
            box: gspaces.Box = gs.action_space  # type: ignore[assignment]
            if a.numel():
                bounds = _box_bounds(box)
                if bounds is not None:
                    amin, amax = (float(x) for x in torch.aminmax(a))
                    ok = amin >= bounds[0] and amax <= bounds[1]  # False for NaN
                else:
                    lo_t = torch.as_tensor(box.low, dtype=a.dtype, device=device)
                    hi_t = torch.as_tensor(box.high, dtype=a.dtype, device=device)
                    ok = bool(((a >= lo_t) & (a <= hi_t)).all())
                if not ok:
                    lo_t = torch.as_tensor(box.low, dtype=a.dtype, device=device)
                    hi_t = torch.as_tensor(box.high, dtype=a.dtype, device=device)
                    bad = a[~((a >= lo_t) & (a <= hi_t))][0].item()
                    raise ValueError(
                        f"{spec.name}: actions[{g!r}] must lie in [{float(box.low.min())}, {float(box.high.max())}] "
                        f"(no clipping is done), got {bad}"
                    )
            out[g] = a if a.dtype == torch.float32 else a.float()
    return out


def random_actions(env: "BatchedEnv", generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Uniformly random legal actions for every copy and agent (respecting action masks); an unbounded
    Box dimension draws from N(0, 1), a half-bounded one the bound plus or minus Exp(1), as gymnasium's ``Box.sample``."""
    acts: dict[str, Tensor] = {}
    masks = env.action_mask()
    B, dev = env.num_envs, env.device
    for g, gs in env.spec.groups.items():
        if gs.discrete:
            n = gs.action_dim
            if masks is not None and g in masks:
                w = masks[g].float().reshape(-1, n) + 1e-12 * (~masks[g].reshape(-1, n).any(-1, keepdim=True))
                acts[g] = torch.multinomial(w, 1, generator=generator).reshape(B, gs.n_agents)
            else:
                acts[g] = torch.randint(0, n, (B, gs.n_agents), device=dev, generator=generator)
        else:
            box: gspaces.Box = gs.action_space  # type: ignore[assignment]
            lo = torch.as_tensor(box.low, dtype=torch.float32, device=dev)
            hi = torch.as_tensor(box.high, dtype=torch.float32, device=dev)
            shape = (B, gs.n_agents, gs.action_dim)
            u = torch.rand(shape, device=dev, generator=generator)
            fin_lo, fin_hi = torch.isfinite(lo), torch.isfinite(hi)
            if bool((fin_lo & fin_hi).all()):
                acts[g] = lo + (hi - lo) * u
                continue
            # as gymnasium's Box.sample: N(0, 1) where unbounded, the bound -/+ Exp(1) where half-bounded
            z = torch.randn(shape, device=dev, generator=generator)
            e = -torch.log1p(-u)  # Exp(1) from the same uniforms
            half = torch.where(fin_lo, lo + e, torch.where(fin_hi, hi - e, z))
            acts[g] = torch.where(fin_lo & fin_hi, lo + (hi - lo) * u, half)
    return acts


class BatchedEnv(abc.ABC):
    """Shared machinery of every maestro environment (see the module docstring).

    Subclasses set ``self.spec`` in ``__init__`` (after calling ``super().__init__``) and implement
    the hooks. ``B = num_envs`` copies live on ``device``; randomness comes from ``self.rng``, a
    ``torch.Generator`` on that device seeded by ``seed``, so that a seed fixes every trajectory.

    Copies: ``copy.deepcopy(env)`` is exact (same world, same generator state, so the same future).
    A pickled and unpickled env (cloudpickle, ``multiprocessing``, SuperSuit's ``concat_vec_envs_v1``)
    keeps its world but draws a fresh ``seed`` from the operating system and reseeds ``rng`` with it,
    so that independent copies made by pickling play independent episodes unless seeded, as MPE2's
    envs do (their ``EzPickle`` rebuilds them with a fresh seed); ``reset(seed=s)`` makes a copy
    reproducible again. maestro's own Ray workers build their envs with explicit seeds and move env
    state with ``get_state``/``rng.get_state()``, never by pickling an env, so this does not touch them.
    """

    spec: EnvSpec
    registered_name: str = ""
    reference_name: str = ""
    """Versioned name of the PettingZoo env this one mirrors (``"simple_spread_v3"``), or ``""``;
    ``to_parallel_env`` reports it as ``metadata["name"]``."""
    render_fps: int = 10
    """Frames per second at which ``render()`` frames are meant to be played (MPE2's 10)."""

    def __init__(self, cfg: Any, num_envs: int, seed: int, device: str | torch.device) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        self.cfg = cfg
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.seed = int(seed)
        self.rng = torch.Generator(device=self.device)
        self.rng.manual_seed(self.seed)
        self._t: Tensor | None = None
        self._ep_return: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ hooks (scenario)
    @abc.abstractmethod
    def _reset_copies(self, mask: Tensor) -> None:
        """Draw a new initial world for the copies where ``mask`` (``(B,)`` bool) is true."""

    @abc.abstractmethod
    def _step_world(self, actions: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor, dict[str, Tensor]]:
        """Advance every copy one step. Returns ``(reward per group (B, N_g), terminated (B,), info)``."""

    @abc.abstractmethod
    def _observe(self) -> Obs:
        """Observation of every agent, per group ``(B, N_g, *obs_shape)`` float32."""

    @abc.abstractmethod
    def _global_state(self) -> Tensor:
        """Global state ``(B, *state_shape)`` float32."""

    @abc.abstractmethod
    def _get_sim_state(self) -> dict[str, Tensor]:
        """Every tensor that defines the world of each copy, each with leading dim ``B``."""

    @abc.abstractmethod
    def _set_sim_state(self, state: dict[str, Tensor]) -> None:
        """Inverse of ``_get_sim_state`` (inputs are already validated and on the device)."""

    def _alive(self) -> dict[str, Tensor]:
        """Which agents exist, per group ``(B, N_g)`` bool. Default: all of them (a cached,
        read-only tensor); envs whose agents come and go override this."""
        if getattr(self, "_all_alive", None) is None:
            self._all_alive = {g: torch.ones(self.num_envs, gs.n_agents, dtype=torch.bool, device=self.device) for g, gs in self.spec.groups.items()}
        return self._all_alive

    def action_mask(self) -> dict[str, Tensor] | None:
        """Legal actions per group ``(B, N_g, n)`` bool for groups with ``has_action_mask``; else ``None``."""
        return None

    def entity_obs(self, obs: Obs | None = None) -> dict[str, EntityObs]:
        """Observations ``obs`` (default: the current ones; also ``final_obs`` of a step) as entity
        tokens per group (``EntityObs``), for envs whose ``spec.entity_kinds`` is non-empty."""
        raise NotImplementedError(f"{self.spec.name} does not expose entity tokens (spec.entity_kinds is empty)")

    def task_description(self) -> dict[str, float]:
        """The task as named numbers (agents per role, landmarks, world size, field of view...), for
        learners across tasks (``maestro.algos.multitask``); envs with entity tokens provide it."""
        raise NotImplementedError(f"{self.spec.name} gives no task description")

    @abc.abstractmethod
    def render(self) -> Any:
        """RGB image ``(H, W, 3)`` uint8 of copy 0."""

    # ------------------------------------------------------------------ the contract
    def reset(self, seed: int | None = None) -> Obs:
        """Reset every copy (reseeding the env's generator if ``seed`` is given); returns ``obs``."""
        if seed is not None:
            self.seed = int(seed)
            self.rng.manual_seed(self.seed)
        B = self.num_envs
        self._t = torch.zeros(B, dtype=torch.long, device=self.device)
        self._ep_return = {g: torch.zeros(B, gs.n_agents, device=self.device) for g, gs in self.spec.groups.items()}
        self._ep_sum = {k: torch.zeros(B, device=self.device) for k in self.spec.episode_sums}
        self._reset_copies(torch.ones(B, dtype=torch.bool, device=self.device))
        return self._observe()

    def step(self, actions: dict[str, Tensor]) -> StepOut:
        """Advance all copies by one step with ``actions`` (see ``validate_actions``); auto-resets."""
        if self._t is None:
            raise RuntimeError(f"{self.spec.name}: call reset() before step()")
        acts = validate_actions(self.spec, actions, self.num_envs, self.device)
        reward, terminated, extra = self._step_world(acts)
        # Counters are replaced, never mutated in place, so info may hold them without copies.
        self._t = self._t + 1
        truncated = (self._t >= self.spec.max_steps) & ~terminated
        done = terminated | truncated
        self._ep_return = {g: self._ep_return[g] + reward[g] for g in self.spec.groups}
        info: dict[str, Tensor] = {"done": done, "episode_length": self._t}
        for g in self.spec.groups:
            info[f"episode_return/{g}"] = self._ep_return[g]
        info.update(extra)
        if self._ep_sum:
            self._ep_sum = {k: v + extra[k].float().reshape(self.num_envs, -1).sum(-1) for k, v in self._ep_sum.items()}
            info.update({f"episode_sum/{k}": v for k, v in self._ep_sum.items()})
        final_obs = self._observe()
        final_state = self._global_state()
        if bool(done.any()):
            self._reset_copies(done)
            self._t = torch.where(done, torch.zeros_like(self._t), self._t)
            self._ep_return = {g: torch.where(done[:, None], torch.zeros_like(r), r) for g, r in self._ep_return.items()}
            self._ep_sum = {k: torch.where(done, torch.zeros_like(v), v) for k, v in self._ep_sum.items()}
            obs, state = self._observe(), self._global_state()
        else:
            obs, state = final_obs, final_state
        return StepOut(obs, reward, terminated, truncated, final_obs, self._alive(), state, final_state, info)

    def state(self) -> Tensor:
        """Global state ``(B, *state_shape)`` of the current step."""
        return self._global_state()

    def alive(self) -> dict[str, Tensor]:
        """Alive masks ``(B, N_g)`` of the current step."""
        return self._alive()

    def observe(self) -> Obs:
        """Observations of the current step (what the last ``reset``/``step`` returned)."""
        return self._observe()

    def get_state(self) -> dict[str, Tensor]:
        """A snapshot (cloned tensors, each ``(B, ...)``) of everything that defines every copy.

        Includes the step counter ``t``, the running ``episode_return/<group>`` and
        ``episode_sum/<key>``, so that
        ``set_state(get_state())`` restores the env exactly (the generator is not included).
        """
        if self._t is None:
            raise RuntimeError(f"{self.spec.name}: call reset() before get_state()")
        s = {k: v.clone() for k, v in self._get_sim_state().items()}
        s["t"] = self._t.clone()
        for g, r in self._ep_return.items():
            s[f"episode_return/{g}"] = r.clone()
        for k, v in self._ep_sum.items():
            s[f"episode_sum/{k}"] = v.clone()
        return s

    def set_state(self, state: dict[str, Tensor]) -> None:
        """Restore a snapshot of the same keys and shapes as ``get_state()`` (for this ``num_envs``).

        Slicing every tensor of a snapshot to copy ``i`` (``v[i:i+1]``) and setting it on a
        ``num_envs=1`` env reproduces that copy alone, which ``check_env`` and the parity tests use.
        """
        if self._t is None:
            self.reset()
        ref = self.get_state()
        if not isinstance(state, dict):
            raise ValueError(f"{self.spec.name}: set_state expects a dict of tensors, got {type(state).__name__}")
        missing = sorted(set(ref) - set(state))
        extra = sorted(set(state) - set(ref))
        if missing or extra:
            raise ValueError(f"{self.spec.name}: set_state keys differ: missing {missing}, unexpected {extra}")
        clean: dict[str, Tensor] = {}
        for k, r in ref.items():
            v = torch.as_tensor(state[k])
            if tuple(v.shape) != tuple(r.shape):
                raise ValueError(f"{self.spec.name}: set_state[{k!r}] has shape {tuple(v.shape)}, expected {tuple(r.shape)}")
            clean[k] = v.to(device=self.device, dtype=r.dtype).clone()
        self._t = clean.pop("t")
        self._ep_return = {g: clean.pop(f"episode_return/{g}") for g in self.spec.groups}
        self._ep_sum = {k: clean.pop(f"episode_sum/{k}") for k in self.spec.episode_sums}
        self._set_sim_state(clean)

    def close(self) -> None:
        """Release resources (nothing to release for pure-torch envs)."""

    # ------------------------------------------------------------------ copies (class docstring)
    def __deepcopy__(self, memo: dict[int, Any]) -> "BatchedEnv":
        """An exact copy: every attribute deep-copied, the generator state included."""
        return exact_deepcopy(self, memo)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickling: restore the attributes, then draw a fresh seed (a new generator, so that a
        shallow ``copy.copy`` never reseeds the original's generator)."""
        self.__dict__.update(state)
        self.seed = secrets.randbits(63)
        self.rng = torch.Generator(device=self.device)
        self.rng.manual_seed(self.seed)

    def __repr__(self) -> str:
        groups = ", ".join(f"{g}×{gs.n_agents}" for g, gs in self.spec.groups.items())
        return f"{type(self).__name__}({self.spec.name!r}, num_envs={self.num_envs}, groups=[{groups}], device={self.device})"


def exact_deepcopy(obj: Any, memo: dict[int, Any]) -> Any:
    """``copy.deepcopy``'s default copy of a plain object (``__dict__`` deep-copied, no ``__setstate__``),
    for classes whose ``__setstate__`` does more than restore, such as ``BatchedEnv``'s fresh seed."""
    cls = type(obj)
    new = cls.__new__(cls)
    memo[id(obj)] = new
    new.__dict__.update(copy.deepcopy(obj.__dict__, memo))
    return new


def group_spec(name: str, n_agents: int, obs_dim: int | tuple[int, ...], action_space: gspaces.Space, **kw: Any) -> GroupSpec:
    """Shorthand for a ``GroupSpec`` with a 1-D observation of ``obs_dim`` (or a given shape)."""
    shape = (obs_dim,) if isinstance(obs_dim, int) else tuple(obs_dim)
    return GroupSpec(name, n_agents, shape, action_space, **kw)
