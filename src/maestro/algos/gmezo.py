"""GMEZO: greedy MDP with episodic zero-order optimisation (Usunier, Synnaeve, Lin & Chintala,
"Episodic Exploration for Deep Deterministic Policies for StarCraft Micromanagement", ICLR 2017,
arXiv 1609.02993, Algorithm 1), the third baseline of MS-MARL's Table 2 (Kong et al. 2017,
arXiv 1712.07305, §4.3, whose GMEZO figures are quoted from Peng et al. 2017).

The policy is deterministic. Each agent ``k`` scores each of its legal actions ``a`` by
``<w, psi_theta(s, k, a, c)>``: an embedding network ``psi_theta`` of the agent's observation, the
action's features and ``c``, the commands the team has already given in this step, with values in
``R^D`` (``D = 2 embed_dim``), and a last linear layer ``w`` in ``R^D``. The *greedy MDP* is how a
joint action is chosen: the agents pick one after the other (agent 0 first; the paper leaves the
order open), each the argmax of its scores given the earlier agents' picks, so that the joint
action needs ``N`` argmaxes over ``A`` actions instead of one over ``A^N``; ``c_a`` is the fraction
of the team's living agents that already picked ``a`` (an enemy already attacked by many: the
paper's "no overkill" needs this).

Exploration is in the policy's parameters, not its actions (*episodic zero-order*): each episode
draws ``u`` uniformly on the unit sphere of ``R^D`` and plays the whole episode greedily with
``w + delta u``. With ``r^_t`` the episode's normalised return from step ``t``, one update over a batch
of episodes (``n`` valid steps, copy ``b``'s direction ``u_b``) is

- ``w``: the zero-order estimate ``g_w = (1/n) sum_{t,b} r^_{t,b} u_b / delta`` (the return's change along
  ``u`` is ``delta <grad, u>``, and ``E[u u^T] = I/D``);
- ``theta``: backpropagation of the same estimate through the embedding, ``g_theta = (1/n)
  sum_{t,b} r^_{t,b} d<u_b, sum_k psi_theta(s_t, k, a^k_t, c^k_t)> / d theta / delta``: the scores of the
  actions taken moved along ``u``, and the return says whether that was good (Algorithm 1's
  "zero-order backpropagation": the gradient of ``psi``'s output is estimated, the rest is exact).

Both are ascent directions, applied by one optimiser step (``lr`` for ``w``, ``theta_lr`` for ``theta``).

How maestro reads what the paper leaves open (the text of arXiv 1609.02993 is not in
``papers/``; this follows Algorithm 1 as summarised above, and the choices are ours):

- ``r^``: the team's reward (the mean over agents of the env's per-agent rewards) summed from ``t`` to
  the episode's end (``gamma = 1``), minus its mean at step ``t`` over the batch's copies, scaled
  by the spread of those differences (``normalised_returns``). The paper normalises its cumulative
  rewards in its own way; with one ``u`` per copy, a baseline shared by the copies leaves both
  estimates unbiased, and one per step keeps the return's fall along every episode out of them
  (with a batch-wide baseline, the first unit-combat run collapsed at about 800k env steps:
  docs/unit_combat.md).
- ``psi(s, k, a, c) = [h(o_k, phi_a) ; c_a g(o_k, phi_a)]``: an MLP (ELU) of the agent's flat
  observation and the action's features ``phi_a``, with the commitment ``c_a`` entering
  multiplicatively, so that the ``N`` sequential picks of a step cost one network pass plus ``N``
  dot products. The paper's network pools unit embeddings; this one reads the flat observation.
- ``phi_a``: on ``unit_combat`` with ``action="target"`` (hold, move in 8 directions, attack enemy
  ``j``: the paper's action set), the action's kind, its move direction, and for an attack the
  target's token from the agent's observation (visible, relative position, hit points, cooldown,
  type); on any other discrete env, the action's one-hot.
- ``w`` starts as a Gaussian vector of norm 1, so ``delta`` is the exploration's size relative to
  the initial policy; the optimiser is maestro's choice: Adam, ``lr`` 1e-2 for ``w`` and ``theta_lr``
  1e-3 for the embedding, whose estimate is about ``D`` times noisier (one rate for both made the
  greedy policy jump between driving and braking on the traffic junction, docs/unit_combat.md).
  The unit-combat recipes depart from Usunier et al. there: ``theta_lr`` 0, the embedding kept at its
  random initialisation and only ``w`` learnt, because the embedding's zero-order updates degraded
  m15v16 in every probe (1e-3: a collapse to never shooting; 1e-4: a decline after 130k env steps)
  while ``w`` alone kept improving (docs/unit_combat.md#gmezo).

Tensors are ``(T, B, N, ...)``: time, env copies, agents. One group of agents, discrete actions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from maestro.core.checkpoint import read_policy_state, save_policy
from maestro.core.episodes import EpisodeStats
from maestro.core.returns import discounted_returns
from maestro.core.run import Run, env_restore, env_snapshot
from maestro.core.seeding import make_generator
from maestro.envs.api import BatchedEnv
from maestro.envs.units.engine import OWN_FEATURES, TOKEN_FEATURES, tokens
from maestro.registry import Smoke, register_algo
from maestro.spec import EnvSpec, GroupLayout, group_layout, layouts_from_dicts, layouts_to_dicts

CAPABILITIES = frozenset({"discrete", "action_mask", "alive_mask", "on_policy", "needs_teams"})
UNIT_MOVES = 8
"""``unit_combat``'s ``action="target"``: 0 hold, 1..8 moves, 9 + j attack enemy j."""
UNIT_ACTION_FEATURES = 3 + 2 + TOKEN_FEATURES
"""kind one-hot (hold, move, attack), move direction (cos, sin), the target's token."""


# ====================================================================== config
@dataclass(frozen=True)
class Config:
    """GMEZO hyperparameters (Usunier et al. 2017, Algorithm 1; the values are maestro's, see the module docstring)."""

    embed_dim: int = 64
    """``d``: the embedding ``psi``'s size is ``D = 2 d`` (the action part and the commitment part)."""
    hidden_size: int = 128
    """Width of the embedding MLP's hidden layer."""
    delta: float = 0.5
    """Exploration scale: each episode plays ``w + delta u`` with ``|u| = 1`` (``|w|`` starts near 1)."""
    lr: float = 1e-2
    """Learning rate of the ascent step on the last layer ``w``."""
    theta_lr: float = 1e-3
    """Learning rate of the ascent step on the embedding ``theta`` (its estimate is ``d`` times noisier
    than ``w``'s: see the module docstring)."""
    optimizer: Literal["adam", "rmsprop", "sgd"] = "adam"
    """Optimiser of the ascent step."""
    max_grad_norm: float = 0.0
    """Clip the norm of the ``theta`` and ``w`` estimate (0: no clipping)."""
    gamma: float = 1.0
    """Discount of the returns ``r^`` (1: the episode's remaining reward)."""

    SMOKE: ClassVar[Smoke] = Smoke(config={"embed_dim": 8, "hidden_size": 16})
    """``check_algo``'s settings: one update per batch of 4 episodes, a small embedding."""

    def __post_init__(self) -> None:
        if self.embed_dim < 1 or self.hidden_size < 1:
            raise ValueError(f"embed_dim and hidden_size must be >= 1, got {self.embed_dim}, {self.hidden_size}")
        if not (self.delta > 0 and math.isfinite(self.delta)):
            raise ValueError(f"delta must be a finite number > 0, got {self.delta}")
        if self.lr <= 0 or self.theta_lr < 0:
            raise ValueError(f"lr must be > 0 and theta_lr >= 0, got {self.lr}, {self.theta_lr}")
        if self.optimizer not in ("adam", "rmsprop", "sgd"):
            raise ValueError(f"optimizer must be one of adam, rmsprop, sgd, got {self.optimizer!r}")
        if self.max_grad_norm < 0:
            raise ValueError(f"max_grad_norm must be >= 0, got {self.max_grad_norm}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")


# ====================================================================== action features
def unit_action_features(obs: Tensor, n_agents: int, n_actions: int) -> Tensor:
    """``phi`` ``(..., N, A, 14)`` of ``unit_combat``'s target actions from observations ``(..., N, 7 + 9U)``.

    Per action: kind one-hot (hold, move, attack), the move's compass direction ``(cos, sin)``
    (east first, every 45 degrees toward +y, as the env), and for "attack enemy ``j``" enemy ``j``'s
    token as agent ``k`` observes it (zeros when out of view).
    """
    m = n_actions - 1 - UNIT_MOVES
    if m < 1:
        raise ValueError(f"unit_action_features: {n_actions} actions, expected 9 + M (hold, 8 moves, M attacks)")
    _, tok, _ = tokens(obs, n_agents + m)
    lead = obs.shape[:-1]
    dev, dt = obs.device, obs.dtype
    kind = torch.zeros(n_actions, 3, device=dev, dtype=dt)
    kind[0, 0], kind[1 : 1 + UNIT_MOVES, 1], kind[1 + UNIT_MOVES :, 2] = 1.0, 1.0, 1.0
    angle = torch.arange(UNIT_MOVES, device=dev, dtype=dt) * (math.pi / 4)
    direction = torch.zeros(n_actions, 2, device=dev, dtype=dt)
    direction[1 : 1 + UNIT_MOVES] = torch.stack([angle.cos(), angle.sin()], -1)
    fixed = torch.cat([kind, direction], -1).expand(*lead, n_actions, 5)
    target = torch.zeros(*lead, n_actions, TOKEN_FEATURES, device=dev, dtype=dt)
    target[..., 1 + UNIT_MOVES :, :] = tok[..., n_agents:, :]
    return torch.cat([fixed, target], -1)


# ====================================================================== policy
class Policy(nn.Module):
    """The greedy-MDP deterministic policy: ``psi_theta`` and the last layer ``w`` (module docstring).

    ``act`` plays ``w`` (evaluation); training plays ``w + delta u`` through ``greedy_actions``.
    """

    def __init__(self, layout: dict[str, Any], arch: dict[str, Any]) -> None:
        super().__init__()
        if len(layout) != 1:
            raise ValueError(f"gmezo trains one group of agents, got groups {list(layout)}")
        self.layout: dict[str, GroupLayout] = layouts_from_dicts(layout)
        self.group = next(iter(self.layout))
        info = self.layout[self.group]
        if not info.discrete:
            raise ValueError(f"gmezo needs discrete actions; group {self.group!r} has {info.space_text()}")
        self.arch = dict(arch)
        self.n_agents, self.obs_dim, self.n_actions = info.n_agents, info.obs_dim, info.action_dim
        self.features = str(arch["features"])
        if self.features not in ("one_hot", "unit_target"):
            raise ValueError(f"gmezo: unknown action features {self.features!r} (one_hot, unit_target)")
        fdim = UNIT_ACTION_FEATURES if self.features == "unit_target" else self.n_actions
        d, hid = int(arch["embed_dim"]), int(arch["hidden_size"])
        self.embed_dim = d
        self.body = nn.Sequential(nn.Linear(self.obs_dim + fdim, hid), nn.ELU(), nn.Linear(hid, hid), nn.ELU())
        self.h = nn.Sequential(nn.Linear(hid, d), nn.ELU())
        self.g = nn.Sequential(nn.Linear(hid, d), nn.ELU())
        w = torch.randn(2 * d)
        self.w = nn.Parameter(w / w.norm())

    # ---------------------------------------------------------------- pieces
    def flat_obs(self, obs: Tensor) -> Tensor:
        """``(..., N, *obs_shape)`` -> ``(..., N, obs_dim)``, checking the shape."""
        shape = self.layout[self.group].obs_shape
        n = len(shape)
        if obs.dim() < 1 + n or tuple(obs.shape[obs.dim() - n :]) != shape or obs.shape[obs.dim() - n - 1] != self.n_agents:
            raise ValueError(f"observations of group {self.group!r} have shape {tuple(obs.shape)}, expected (..., {self.n_agents}, {', '.join(map(str, shape))})")
        return obs.reshape(*obs.shape[: obs.dim() - n], self.obs_dim)

    def action_features(self, flat: Tensor) -> Tensor:
        """``phi`` ``(..., N, A, F)`` from flat observations ``(..., N, obs_dim)``."""
        if self.features == "unit_target":
            return unit_action_features(flat, self.n_agents, self.n_actions)
        eye = torch.eye(self.n_actions, device=flat.device, dtype=flat.dtype)
        return eye.expand(*flat.shape[:-1], self.n_actions, self.n_actions)

    def embed(self, flat: Tensor, phi: Tensor) -> tuple[Tensor, Tensor]:
        """``h, g`` ``(..., d)`` each, of observations ``(..., obs_dim)`` and action features ``(..., F)``
        (leading axes equal): ``psi = [h ; c g]``."""
        z = self.body(torch.cat([flat, phi], -1))
        return self.h(z), self.g(z)

    def all_actions(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """``h, g`` ``(B, N, A, d)`` for every agent and action at observations ``(B, N, *obs_shape)``."""
        flat = self.flat_obs(obs)
        phi = self.action_features(flat)
        return self.embed(flat.unsqueeze(-2).expand(*phi.shape[:-1], flat.shape[-1]), phi)

    def taken(self, obs: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """``h, g`` ``(..., N, d)`` of the actions taken ``(..., N)`` at observations ``(..., N, *obs_shape)``."""
        flat = self.flat_obs(obs)
        phi = self.action_features(flat)
        phi = phi.gather(-2, actions[..., None, None].expand(*actions.shape, 1, phi.shape[-1])).squeeze(-2)
        return self.embed(flat, phi)

    # ---------------------------------------------------------------- the policy interface
    @torch.no_grad()
    def act(
        self,
        obs: dict[str, Tensor],
        state: Tensor | None = None,
        hidden: Any = None,
        *,
        action_mask: dict[str, Tensor] | None = None,
        deterministic: bool = True,
        generator: torch.Generator | None = None,
        alive: dict[str, Tensor] | None = None,
    ) -> tuple[dict[str, Tensor], Any]:
        """Env-ready actions ``{group: (B, N)}`` of the unperturbed policy ``w`` (it is deterministic:
        ``deterministic`` and ``generator`` change nothing); ``hidden`` passes through."""
        o = obs[self.group]
        h, g = self.all_actions(o)
        al = alive[self.group] if alive is not None else self.flat_obs(o).ne(0).any(-1)
        mask = action_mask.get(self.group) if action_mask is not None else None
        actions, _ = greedy_actions(h, g, self.w.expand(o.shape[0], -1), mask, al)
        return {self.group: actions}, hidden

    def policy_state(self) -> dict[str, Any]:
        """Everything needed to rebuild the policy (``maestro.algos.load_policy``)."""
        return {"class": f"{type(self).__module__}:{type(self).__name__}", "layout": layouts_to_dicts(self.layout), "arch": self.arch, "weights": self.state_dict()}

    @classmethod
    def from_state(cls, state: dict[str, Any], device: str | torch.device = "cpu") -> "Policy":
        """Inverse of ``policy_state``."""
        policy = cls(state["layout"], state["arch"])
        policy.load_state_dict(state["weights"])
        return policy.to(device)

    def save(self, path: str | Path) -> Path:
        """Write the policy alone (atomically) to ``path``."""
        return save_policy(self, path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "Policy":
        """Load a policy written by ``save`` (or the policy inside a training checkpoint)."""
        return cls.from_state(read_policy_state(path, device), device)


# ====================================================================== the greedy MDP
def greedy_actions(h: Tensor, g: Tensor, w: Tensor, mask: Tensor | None, alive: Tensor) -> tuple[Tensor, Tensor]:
    """The greedy MDP's joint action: agents ``0..N-1`` in turn take the argmax over their legal
    actions of ``<w_1, h_{k,a}> + c_a <w_2, g_{k,a}>``, ``c_a`` the fraction of the ``N`` agents alive
    before it that already took ``a`` this step.

    Args:
        h, g: ``(B, N, A, d)`` the embedding's two parts for every agent and action.
        w: ``(B, 2d)`` each copy's last layer (``w + delta u`` in training).
        mask: ``(B, N, A)`` bool legal actions, or ``None`` (all legal).
        alive: ``(B, N)`` bool: dead agents still pick (among their legal actions: hold, on unit combat)
            but commit nothing.

    Returns:
        ``actions`` ``(B, N)`` int64 and ``commitment`` ``(B, N)``: ``c`` of the action each agent took, when it took it.
    """
    B, N, A, d = h.shape
    if g.shape != h.shape or w.shape != (B, 2 * d) or alive.shape != (B, N) or (mask is not None and mask.shape != (B, N, A)):
        raise ValueError(f"greedy_actions: h {tuple(h.shape)}, g {tuple(g.shape)}, w {tuple(w.shape)}, alive {tuple(alive.shape)}, mask {None if mask is None else tuple(mask.shape)}: expected (B, N, A, d) twice, (B, 2d), (B, N), (B, N, A)")
    base = torch.einsum("bnad,bd->bna", h, w[:, :d])  # (B, N, A): all of a step's scores but the commitments'
    slope = torch.einsum("bnad,bd->bna", g, w[:, d:])
    if mask is not None:
        base = base.masked_fill(~mask, float("-inf"))
    counts = torch.zeros(B, A, device=h.device, dtype=h.dtype)
    actions = torch.zeros(B, N, dtype=torch.long, device=h.device)
    commitment = torch.zeros(B, N, device=h.device, dtype=h.dtype)
    share = 1.0 / N
    for k in range(N):  # the greedy MDP: sequential by definition (N argmaxes, each batched over copies)
        scores = base[:, k] + counts * slope[:, k]
        a = scores.argmax(-1)
        actions[:, k] = a
        took = counts.gather(1, a[:, None]).squeeze(1)
        commitment[:, k] = took
        counts.scatter_add_(1, a[:, None], (alive[:, k].to(h.dtype) * share)[:, None])
    return actions, commitment


def sphere(generator: torch.Generator, n: int, d: int, device: torch.device | str) -> Tensor:
    """``(n, d)`` directions uniform on the unit sphere of ``R^d`` (normalised Gaussians)."""
    u = torch.randn(n, d, generator=generator, device=device)
    return u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)


# ====================================================================== collect
@torch.no_grad()
def play_batch(env: BatchedEnv, policy: Policy, u: Tensor, delta: float) -> tuple[dict[str, Tensor], dict[str, float]]:
    """One episode per env copy, in lockstep, copy ``b`` playing ``w + delta u_b`` throughout.

    Returns ``(batch, stats)``: ``obs`` ``(T, B, N, *obs_shape)``, ``actions`` and ``commitment`` and
    ``alive`` ``(T, B, N)``, ``reward`` ``(T, B)`` (the team's: the mean over agents), ``valid`` and
    ``done`` ``(T, B)`` (a copy that finished keeps being stepped; those steps are invalid); ``stats``
    the batch's episode metrics.
    """
    spec, grp = env.spec, policy.group
    gs = spec.groups[grp]
    obs = env.reset()
    alive = env.alive()[grp]
    w = policy.w + delta * u
    running = torch.ones(env.num_envs, dtype=torch.bool, device=env.device)
    rec: dict[str, list[Tensor]] = {k: [] for k in ("obs", "actions", "commitment", "alive", "reward", "valid", "done")}
    episodes = EpisodeStats(spec, env.device)
    for _ in range(spec.max_steps + 1):  # every copy finishes within max_steps
        mask = env.action_mask()[grp] if gs.has_action_mask else None
        h, g = policy.all_actions(obs[grp])
        actions, commitment = greedy_actions(h, g, w, mask, alive)
        step = env.step({grp: actions})
        rec["obs"].append(obs[grp])
        rec["actions"].append(actions)
        rec["commitment"].append(commitment)
        rec["alive"].append(alive & running[:, None])
        rec["reward"].append(step.reward[grp].mean(-1) * running)
        rec["valid"].append(running)
        rec["done"].append(step.done & running)
        episodes.add(step.info, step.done & running)
        running = running & ~step.done
        if not bool(running.any()):
            break
        obs, alive = step.obs, step.alive[grp]
    return {k: torch.stack(v) for k, v in rec.items()}, episodes.summary("train")


# ====================================================================== update
def normalised_returns(returns: Tensor, valid: Tensor, eps: float = 1e-8) -> Tensor:
    """``r^`` ``(T, B)``: each copy's return-to-go minus the mean at the same step over the copies
    still playing (the directions' baseline), divided by the spread of those differences over the
    batch; 0 on invalid steps and wherever a step has one copy playing.

    The baseline is per step, not one for the batch: the return-to-go falls along every episode,
    and a batch-wide baseline would turn that common fall into a weight shared by every copy, so
    that ``sum_b u_b`` (a random direction) entered every update; with episodes that do not differ
    the estimates are then exactly 0, as they should be.
    """
    if returns.shape != valid.shape or returns.dim() != 2:
        raise ValueError(f"normalised_returns: returns {tuple(returns.shape)} and valid {tuple(valid.shape)} must both be (T, B)")
    count = valid.sum(1, keepdim=True)
    baseline = (returns * valid).sum(1, keepdim=True) / count.clamp_min(1.0)
    diff = (returns - baseline) * valid * (count > 1)
    spread = torch.sqrt((diff.pow(2)).sum() / valid.sum().clamp_min(1.0))
    return diff / (spread + eps)


def zero_order_estimates(policy: Policy, batch: dict[str, Tensor], u: Tensor, delta: float, gamma: float) -> tuple[Tensor, Tensor, dict[str, float]]:
    """Algorithm 1's estimates as a surrogate and a direction (module docstring).

    Returns ``(surrogate, g_w, stats)``: ``surrogate`` is a scalar whose gradient in ``theta`` is
    ``g_theta`` (``(1/n) sum_{t,b} r^_{t,b} <u_b, sum_k alive psi_{t,b,k}> / delta``, with ``w`` detached), and
    ``g_w`` ``(2d,)`` is ``(1/n) sum_{t,b} r^_{t,b} u_b / delta``; both ascent directions.
    """
    valid = batch["valid"].float()
    n = valid.sum().clamp_min(1.0)
    returns = discounted_returns(batch["reward"], batch["done"], gamma)
    r_hat = normalised_returns(returns, valid)  # (T, B)
    h, g = policy.taken(batch["obs"], batch["actions"])  # (T, B, N, d)
    psi = torch.cat([h, batch["commitment"].unsqueeze(-1) * g], -1) * batch["alive"].unsqueeze(-1).float()
    along_u = torch.einsum("tbnd,bd->tb", psi, u)
    surrogate = (r_hat * along_u).sum() / (n * delta)
    g_w = torch.einsum("tb,bd->d", r_hat, u) / (n * delta)
    return surrogate, g_w, {"loss/surrogate": float(surrogate.detach()), "train/return_to_go": float((returns * valid).sum() / n)}


def make_optimizer(cfg: Config, policy: Policy) -> torch.optim.Optimizer:
    """Adam, RMSProp or SGD: ``w`` at ``cfg.lr``, the embedding at ``cfg.theta_lr``."""
    theta = [p for name, p in policy.named_parameters() if name != "w"]
    groups = [{"params": [policy.w], "lr": cfg.lr}, {"params": theta, "lr": cfg.theta_lr}]
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups)
    return torch.optim.Adam(groups)


# ====================================================================== train
def arch_for(spec: EnvSpec, cfg: Config) -> dict[str, Any]:
    """The policy's architecture: ``unit_target`` action features on ``unit_combat``, one-hot elsewhere."""
    gs = next(iter(spec.groups.values()))
    features = "unit_target" if spec.name == "unit_combat" else "one_hot"
    if features == "unit_target":
        enemies = gs.action_dim - 1 - UNIT_MOVES  # the target action's attacks, one per enemy
        if gs.obs_shape != (OWN_FEATURES + TOKEN_FEATURES * (gs.n_agents + enemies),):
            raise ValueError(f"gmezo on unit_combat needs action='target' (hold, 8 moves, an attack per enemy); got {gs.action_dim} actions for observations {gs.obs_shape}")
    return {"embed_dim": cfg.embed_dim, "hidden_size": cfg.hidden_size, "features": features}


@register_algo("gmezo", config=Config, capabilities=CAPABILITIES, summary="GMEZO: greedy MDP with episodic zero-order optimisation (Usunier et al. 2017)")
def train_gmezo(cfg: Config, env: Any, run: Run) -> Policy:
    """Train GMEZO until the run's budget is spent or it is stopped: each iteration plays one batch of
    ``env.num_envs`` episodes, each with its own direction ``u``, and takes one ascent step."""
    spec: EnvSpec = env.spec
    if len(spec.groups) != 1:
        raise ValueError(f"gmezo trains one group of agents; env {spec.name!r} has groups {list(spec.groups)}")
    device = env.device
    policy = Policy(layouts_to_dicts(group_layout(spec)), arch_for(spec, cfg)).to(device)
    optimiser = make_optimizer(cfg, policy)
    generator = make_generator(run.seed + 104729, device)

    resumed = run.restore()
    if resumed is not None:
        policy.load_state_dict(resumed["policy"]["weights"])
        optimiser.load_state_dict(resumed["optimiser"])
        generator.set_state(resumed["generator"])
        env_restore(env, resumed["env"])
    else:
        env.reset()

    def snapshot() -> dict[str, Any]:
        return {"policy": policy.policy_state(), "optimiser": optimiser.state_dict(), "generator": generator.get_state(), "env": env_snapshot(env)}

    while not run.finished:
        t0 = time.perf_counter()
        u = sphere(generator, env.num_envs, 2 * policy.embed_dim, device)
        batch, stats = play_batch(env, policy, u, cfg.delta)
        surrogate, g_w, parts = zero_order_estimates(policy, batch, u, cfg.delta, cfg.gamma)
        optimiser.zero_grad(set_to_none=True)
        (-surrogate).backward()
        policy.w.grad = -g_w.detach()  # w's estimate is zero-order: the surrogate holds w nowhere
        if cfg.max_grad_norm > 0:
            parts["loss/grad_norm"] = float(nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm))
        optimiser.step()
        parts["train/w_norm"] = float(policy.w.detach().norm())
        n_steps = int(batch["valid"].sum())
        dt = max(time.perf_counter() - t0, 1e-9)
        run.step(n_steps, {**stats, **parts, "time/episodes_per_s": env.num_envs / dt})
        run.maybe_evaluate(policy)
        run.maybe_checkpoint(snapshot)
    return policy
