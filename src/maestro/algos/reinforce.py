"""Episodic multi-agent policy gradient: MS-MARL's Algorithm 1 (Kong, Xin, Liu & Wang 2017,
arXiv 1712.07305, §3.2 and §4.2) with the models Independent, CommNet (Sukhbaatar et al. 2016,
arXiv 1605.07736), BiCNet (Peng et al. 2017, arXiv 1703.10069), MS-MARL and MS-MARL + GCM.

One update = one *batch* of whole episodes, one per env copy (``B`` = ``run.num_envs``: 16 for
the traffic junction and 144 for combat in the paper), run in lockstep from ``env.reset()``:

1. **collect** (``run_batch``): step all copies until each has finished its first episode. The
   network runs with gradients as the episode unfolds (one forward pass; the graph is kept until
   the update), its recurrent state starting at zero; a copy that finished early keeps being
   stepped (the env auto-resets it) but those steps are *invalid* and masked out everywhere.
   Actions: softmax over masked logits (``env.action_mask()``) or ``N(mu, sigma^2)`` with a fixed
   or linearly annealed sigma (eq. 4-5; the mean is in ``[-1, 1]`` units, clipped and mapped onto
   the Box). Agents not ``alive`` (cars off the grid, dead units) are excluded from the loss and,
   inside every model, from communication.
2. **returns** (``batch_returns``): per agent and step, ``v_t = sum_{j >= t} gamma^{j-t} r_j``
   (eq. 1, ``gamma = 1`` in the paper) within the episode, cut where the agent leaves (a new car
   may take its slot). For combat the env gives the team's terminal reward to every unit, dead or
   alive (Algorithm 1: ``R_i += r_terminal`` for every ``i``), and a death does not cut the return,
   so that reward reaches the steps before a unit died.
3. **update** (``reinforce_loss``): ``-sum log pi(a_t|s_t) (v_t - b_t)`` with a learned baseline
   ``b_t`` (the model's value head, loss weight 0.03 as in CommNet) and an optional entropy bonus,
   summed over alive agents and divided by the number of valid env steps of the batch (as the
   CommNet/IC3Net code normalises), then one RMSProp step (lr 1e-3, alpha 0.97, eps 1e-6: the
   CommNet/IC3Net settings; Adam optional).
4. **log / evaluate / checkpoint** through the run; the traffic junction's curriculum
   (``env.set_progress(fraction)``) is advanced before each batch if the env has one.

Figure 6b: ``record_action_components`` records the master's and the slaves' components of the
action logits of a trained MS-MARL policy over one episode; ``maestro.reports.components`` draws them.

Tensors are ``(T, B, N, ...)``: time, env copies, agents. One group of agents (the paper's tasks).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn

from maestro.core.checkpoint import read_policy_state, save_policy
from maestro.core.episodes import EpisodeStats
from maestro.core.returns import discounted_returns, standardise
from maestro.core.run import Run, env_restore, env_snapshot
from maestro.core.schedules import linear, set_learning_rates
from maestro.core.seeding import make_generator
from maestro.envs.api import BatchedEnv
from maestro.nn.bicnet import BiCNet
from maestro.nn.commnet import CommNet
from maestro.nn.heads import (
    box_bounds,
    categorical_entropy,
    categorical_log_prob,
    categorical_sample,
    gaussian_log_prob,
    gaussian_sample,
    mask_logits,
    unit_to_box,
)
from maestro.nn.master_slave import MasterSlaveNet
from maestro.nn.recurrent import Hidden, ModelOut, reset_hidden
from maestro.registry import Smoke, register_algo
from maestro.spec import EnvSpec, GroupLayout, group_layout, layouts_from_dicts, layouts_to_dicts

ModelName = Literal["independent", "commnet", "bicnet", "ms_marl", "ms_marl_gcm"]
CAPABILITIES = frozenset({"discrete", "continuous", "action_mask", "alive_mask", "recurrent", "on_policy"})
"""What every model handles (one group of agents); ``ms_marl*`` add ``needs_state`` (the master's input)."""


# ====================================================================== config
@dataclass(frozen=True)
class Config:
    """Episodic policy-gradient hyperparameters. Defaults: MS-MARL §4.2 (Kong et al. 2017) and the
    CommNet/IC3Net code it ran for the baselines (Sukhbaatar et al. 2016; Singh et al. 2019)."""

    hidden_size: int = 50
    """Hidden size of every recurrent state, slaves and master (MS-MARL §4.2: 50; CommNet: 50)."""
    cell: Literal["rnn", "gru", "lstm"] | None = None
    """Recurrent cell of the agents (slaves); None: the model's default (MS-MARL slaves: rnn, Fig. 4;
    Independent/CommNet/BiCNet: lstm, as CommNet on the traffic junction)."""
    master_cell: Literal["rnn", "gru", "lstm"] = "lstm"
    """Recurrent cell of the MS-MARL master (Fig. 4: LSTM)."""
    comm_steps: int = 1
    """CommNet communication steps per time step (1: the recurrent CommNet of the reference code)."""
    aggregate: Literal["mean", "sum"] = "mean"
    """How the MS-MARL master combines the alive slaves' messages."""
    master_feedback: bool = False
    """MS-MARL: the master's previous hidden state also enters every slave's encoder (our reading of
    Fig. 1's broadcast across time steps; not the paper's model, see ``maestro.nn.master_slave``)."""
    master_state: bool = True
    """Feed the env's global state (e.g. occupancy map) to the MS-MARL master (False: Fig. 6a ablation)."""
    gamma: float = 1.0
    """Discount of the returns v_t (eq. 1: the undiscounted sum of future rewards)."""
    lr: float = 1e-3
    """Learning rate (MS-MARL §4.2: 0.001 for traffic junction and combat)."""
    lr_end_factor: float = 1.0
    """The learning rate at the end of the budget as a fraction of ``lr``, reached linearly
    (1: constant, as the paper; 0: annealed to zero)."""
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"
    """RMSProp as the CommNet/IC3Net code, or Adam."""
    rmsprop_alpha: float = 0.97
    """RMSProp smoothing constant (CommNet/IC3Net: 0.97)."""
    eps: float = 1e-6
    """Optimiser epsilon (CommNet/IC3Net RMSProp: 1e-6)."""
    value_coef: float = 0.03
    """Weight of the baseline's squared error (CommNet §4: alpha = 0.03)."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus (0: none, as the paper)."""
    normalize_advantages: bool = False
    """Standardise v_t - b_t over the alive, valid samples of the batch."""
    max_grad_norm: float = 0.0
    """Clip the gradient norm (0: no clipping, as the paper)."""
    sigma: float = 0.05
    """Continuous actions: standard deviation of the Gaussian policy in [-1, 1] action units (Alg. 1: 0.05)."""
    sigma_final: float | None = None
    """Continuous actions: anneal sigma linearly to this value over the budget (None: fixed; §4.2)."""
    mean_bound: Literal["none", "tanh"] = "none"
    """Continuous actions: the network's output is the Gaussian mean, as eq. (4) (``none``; the env
    clips the sample to [-1, 1], so a mean that drifts past ±1 stops exploring that component with
    a small fixed sigma), or ``tanh`` of it (the mean stays inside the box; not the paper's)."""
    curriculum: bool = True
    """Advance the env's curriculum (``env.set_progress``, the traffic junction's add rate) with training."""
    team_return: float = 0.0
    """Weight ``w`` of the team's return in each agent's return: ``v_t = (1 - w) v^i_t + w v^team_t``, with
    ``v^team_t`` the future reward of all agent slots averaged over the ``N`` slots (IC3Net's
    ``mean_ratio``; 0: each agent's own return, as eq. 1 per agent; 1: fully cooperative)."""
    team_terminal_reward: bool = True
    """Let an agent's return flow through its death when the env has a team terminal reward
    (combat's ``terminal_reward``, which the env gives to every unit, dead or alive): Alg. 1's
    ``R_i += r_terminal`` for every ``i`` then reaches the steps before the agent died. Off: a
    death cuts the return, as a car leaving the junction does."""

    SMOKE: ClassVar[Smoke] = Smoke(config={"hidden_size": 8})
    """``check_algo``'s settings: one update per batch of 4 episodes, small recurrent states."""

    def __post_init__(self) -> None:
        if self.hidden_size < 1 or self.comm_steps < 1:
            raise ValueError(f"hidden_size and comm_steps must be >= 1, got {self.hidden_size}, {self.comm_steps}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")
        if self.lr <= 0 or self.eps <= 0 or not 0.0 < self.rmsprop_alpha < 1.0:
            raise ValueError(f"lr and eps must be > 0 and rmsprop_alpha in (0, 1), got {self.lr}, {self.eps}, {self.rmsprop_alpha}")
        if not 0.0 <= self.lr_end_factor <= 1.0:
            raise ValueError(f"lr_end_factor must lie in [0, 1], got {self.lr_end_factor}")
        if self.sigma <= 0 or (self.sigma_final is not None and self.sigma_final <= 0):
            raise ValueError(f"sigma and sigma_final must be > 0, got {self.sigma}, {self.sigma_final}")
        if self.mean_bound not in ("none", "tanh"):
            raise ValueError(f"mean_bound must be 'none' or 'tanh', got {self.mean_bound!r}")
        if not 0.0 <= self.team_return <= 1.0:
            raise ValueError(f"team_return must lie in [0, 1], got {self.team_return}")
        for k in ("value_coef", "entropy_coef", "max_grad_norm"):
            if getattr(self, k) < 0:
                raise ValueError(f"{k} must be >= 0, got {getattr(self, k)}")


def model_arch(model: ModelName, cfg: Config) -> dict[str, Any]:
    """The constructor arguments of ``model`` from ``cfg`` (stored in the policy state)."""
    H = cfg.hidden_size
    if model in ("independent", "commnet"):
        return {"hidden_size": H, "cell": cfg.cell or "lstm", "comm_steps": 1 if model == "independent" else cfg.comm_steps, "communicate": model == "commnet"}
    if model == "bicnet":
        return {"hidden_size": H, "cell": cfg.cell or "lstm"}
    if model in ("ms_marl", "ms_marl_gcm"):
        return {
            "hidden_size": H,
            "slave_cell": cfg.cell or "rnn",
            "master_cell": cfg.master_cell,
            "gcm": model == "ms_marl_gcm",
            "master_state": cfg.master_state,
            "aggregate": cfg.aggregate,
            "master_feedback": cfg.master_feedback,
        }
    raise ValueError(f"unknown model {model!r}; expected one of independent, commnet, bicnet, ms_marl, ms_marl_gcm")


def build_model(model: ModelName, obs_dim: int, n_agents: int, action_dim: int, state_dim: int, arch: dict[str, Any]) -> nn.Module:
    """Instantiate a model of ``maestro.nn`` (``CommNet``, ``BiCNet`` or ``MasterSlaveNet``)."""
    cls = {"independent": CommNet, "commnet": CommNet, "bicnet": BiCNet, "ms_marl": MasterSlaveNet, "ms_marl_gcm": MasterSlaveNet}[model]
    return cls(obs_dim, n_agents, action_dim, state_dim, **arch)


def sigma_at(cfg: Config, progress: float) -> float:
    """Gaussian sigma at training fraction ``progress`` (linear from ``sigma`` to ``sigma_final``)."""
    return cfg.sigma if cfg.sigma_final is None else linear(cfg.sigma, cfg.sigma_final, progress)


# ====================================================================== policy
class Policy(nn.Module):
    """A communication model acting for the one group of an env.

    ``act(obs, state, hidden)`` maps ``{group: (B, N, *obs_shape)}`` to env-ready actions
    (``(B, N)`` int64, or ``(B, N, d)`` inside the Box) and the new hidden state (a dict of
    tensors; ``None`` starts an episode). The models need ``alive`` masks; ``act`` takes them as a
    keyword and otherwise infers them from the contract's zero observations of absent agents.
    """

    def __init__(
        self, model: ModelName, layout: dict[str, GroupLayout], state_dim: int, arch: dict[str, Any], sigma: float = 0.05, mean_bound: str = "none"
    ) -> None:
        super().__init__()
        if len(layout) != 1:
            raise ValueError(f"{model} trains one group of agents, got groups {list(layout)}")
        self.model_name, self.layout, self.state_dim, self.arch = model, layouts_from_dicts(layout), state_dim, dict(arch)
        self.group = next(iter(layout))
        info = self.layout[self.group]
        self.n_agents, self.obs_dim, self.discrete = info.n_agents, info.obs_dim, info.discrete
        self.net = build_model(model, info.obs_dim, info.n_agents, info.action_dim, state_dim, arch)
        self.register_buffer("log_sigma", torch.tensor(math.log(sigma)))
        self.mean_bound = mean_bound
        if not self.discrete:
            low, high, bounded = box_bounds(info.low or (), info.high or ())
            self.register_buffer("low", low)
            self.register_buffer("high", high)
            self.register_buffer("bounded", bounded)

    # ---------------------------------------------------------------- pieces
    def flat_obs(self, obs: Tensor) -> Tensor:
        """``(B, N, *obs_shape)`` -> ``(B, N, obs_dim)``, checking the shape."""
        shape = self.layout[self.group].obs_shape
        if obs.dim() < 2 or obs.shape[1] != self.n_agents or tuple(obs.shape[2:]) != shape:
            raise ValueError(f"observations of group {self.group!r} have shape {tuple(obs.shape)}, expected (B, {self.n_agents}, {', '.join(map(str, shape))})")
        return obs.reshape(obs.shape[0], self.n_agents, self.obs_dim)

    def step(self, obs: Tensor, state: Tensor | None, alive: Tensor, hidden: Hidden, mask: Tensor | None = None) -> ModelOut:
        """One time step of the model with gradients: ``params`` are masked logits or Gaussian means."""
        flat_state = state.reshape(state.shape[0], -1) if state is not None else None
        out = self.net(self.flat_obs(obs), flat_state, alive, hidden)
        if self.discrete:
            return out._replace(params=mask_logits(out.params, mask))
        return out if self.mean_bound == "none" else out._replace(params=torch.tanh(out.params))

    def sample(self, params: Tensor, generator: torch.Generator | None, deterministic: bool = False) -> Tensor:
        """Raw actions from ``params``: ``(B, N)`` int64 or ``(B, N, d)`` in ``[-1, 1]`` units (no gradient)."""
        params = params.detach()
        if self.discrete:
            return categorical_sample(params, generator, deterministic)
        return gaussian_sample(params, self.log_sigma.expand(params.shape[-1]), generator, deterministic)

    def log_prob(self, params: Tensor, raw: Tensor) -> tuple[Tensor, Tensor]:
        """``log pi(a)`` and the entropy, each ``(B, N)`` (eq. 5 for the Gaussian)."""
        if self.discrete:
            return categorical_log_prob(params, raw), categorical_entropy(params)
        log_std = self.log_sigma.expand(params.shape[-1])
        ent = (log_std + 0.5 * (1.0 + math.log(2.0 * math.pi))).sum().expand(params.shape[:-1])
        return gaussian_log_prob(params, log_std, raw), ent

    def to_env(self, raw: Tensor) -> Tensor:
        """Raw actions -> env actions: discrete unchanged; continuous clipped to ``[-1, 1]`` and mapped onto the Box."""
        if self.discrete:
            return raw
        return unit_to_box(raw, self.low, self.high, self.bounded)

    def infer_alive(self, obs: Tensor) -> Tensor:
        """``(B, N)`` bool: agents whose observation is not all zeros (absent agents observe zeros)."""
        return obs.reshape(obs.shape[0], self.n_agents, -1).ne(0).any(-1)

    # ---------------------------------------------------------------- the policy interface
    @torch.no_grad()
    def act(
        self,
        obs: dict[str, Tensor],
        state: Tensor | None = None,
        hidden: Hidden | None = None,
        *,
        action_mask: dict[str, Tensor] | None = None,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        alive: dict[str, Tensor] | None = None,
    ) -> tuple[dict[str, Tensor], Hidden]:
        """Env-ready actions for every agent and the new hidden state (``None`` = episode start)."""
        o = obs[self.group]
        B = o.shape[0]
        if hidden is None:
            hidden = self.net.init_hidden(B, o.device)
        al = alive[self.group] if alive is not None else self.infer_alive(o)
        mask = action_mask.get(self.group) if action_mask is not None else None
        out = self.step(o, state, al, hidden, mask)
        raw = self.sample(out.params, generator, deterministic)
        return {self.group: self.to_env(raw)}, out.hidden

    def policy_state(self) -> dict[str, Any]:
        """Everything needed to rebuild the policy (``maestro.algos.load_policy``)."""
        state = {
            "class": f"{type(self).__module__}:{type(self).__name__}",
            "model": self.model_name,
            "layout": layouts_to_dicts(self.layout),
            "state_dim": self.state_dim,
            "arch": self.arch,
            "weights": self.state_dict(),
        }
        if self.mean_bound != "none":  # (absent: the states written before mean_bound existed)
            state["mean_bound"] = self.mean_bound
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any], device: str | torch.device = "cpu") -> "Policy":
        """Inverse of ``policy_state``."""
        policy = cls(state["model"], state["layout"], int(state["state_dim"]), state["arch"], mean_bound=state.get("mean_bound", "none"))
        policy.load_state_dict(state["weights"])
        return policy.to(device)

    def save(self, path: str | Path) -> Path:
        """Write the policy alone (atomically) to ``path``."""
        return save_policy(self, path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "Policy":
        """Load a policy written by ``save`` (or the policy inside a training checkpoint)."""
        return cls.from_state(read_policy_state(path, device), device)


# ====================================================================== collect
def run_batch(env: BatchedEnv, policy: Policy, generator: torch.Generator, team_terminal_reward: bool = True) -> tuple[dict[str, Tensor], dict[str, float]]:
    """Play one episode in every env copy, in lockstep, keeping the autograd graph (Algorithm 1).

    Returns ``(batch, stats)``. ``batch`` holds ``(T, B, N)`` tensors, ``T`` = the longest episode:
    ``logp`` and ``entropy`` and ``value`` (with gradients), ``reward`` (0 on invalid steps),
    ``alive`` (the agent acted at step t), ``left`` (it was alive and is not after the step, or
    its slot took a new agent in the step: ``info["completed"]``, as the traffic junction's),
    and ``(T, B)`` ``valid`` (the copy is still in its first episode) and ``done``. ``stats`` are
    the batch's episode metrics (``train/episode_return``, ``train/<extra>``...).
    """
    spec, g, B, dev = env.spec, policy.group, env.num_envs, env.device
    gs = spec.groups[g]
    obs = env.reset()
    state = env.state()
    alive = env.alive()[g]
    hidden = policy.net.init_hidden(B, dev)
    running = torch.ones(B, dtype=torch.bool, device=dev)
    credit = team_terminal_reward and "terminal_reward" in spec.info_keys
    rec: dict[str, list[Tensor]] = {k: [] for k in ("logp", "entropy", "value", "reward", "alive", "left", "valid", "done")}
    episodes = EpisodeStats(spec, dev)
    for _ in range(spec.max_steps + 1):  # every copy finishes within max_steps
        masks = env.action_mask() if gs.has_action_mask else None
        out = policy.step(obs[g], state, alive, hidden, masks[g] if masks is not None else None)
        raw = policy.sample(out.params, generator)
        logp, ent = policy.log_prob(out.params, raw)
        step = env.step({g: policy.to_env(raw)})
        done = step.done & running
        reward = step.reward[g]  # the env gives the team's terminal reward to dead units too
        next_alive = step.alive[g]
        rec["logp"].append(logp)
        rec["entropy"].append(ent)
        rec["value"].append(out.value)
        rec["reward"].append(reward * running[:, None])
        rec["alive"].append(alive & running[:, None])
        left = alive & ~next_alive
        if "completed" in step.info:  # a slot may change agents within a step (IC3Net's is_completed)
            left = left | (alive & step.info["completed"])
        rec["left"].append(left)
        rec["valid"].append(running)
        rec["done"].append(done)
        episodes.add(step.info, done)
        running = running & ~step.done
        if not bool(running.any()):
            break
        obs, state, alive = step.obs, step.state, next_alive
        hidden = out.hidden
    batch = {k: torch.stack(v) for k, v in rec.items()}
    batch["cut"] = batch["done"][..., None] | (batch["left"] & ~torch.tensor(credit, device=dev))
    return batch, episodes.summary("train")


# ====================================================================== returns and loss
def batch_returns(reward: Tensor, cut: Tensor, gamma: float) -> Tensor:
    """Per-agent returns ``v_t = r_t + gamma (1 - cut_t) v_{t+1}`` (eq. 1), all ``(T, B, N)``.

    ``cut`` ends an agent's return at its episode's end and where it left the env (its slot may be
    reused by a new agent); see ``run_batch``.
    """
    if reward.shape != cut.shape:
        raise ValueError(f"batch_returns: reward {tuple(reward.shape)} and cut {tuple(cut.shape)} must both be (T, B, N)")
    return discounted_returns(reward, cut, gamma)


def mixed_returns(reward: Tensor, cut: Tensor, done: Tensor, gamma: float, team_weight: float) -> Tensor:
    """Each agent's return mixed with the team's (``Config.team_return``; IC3Net's ``mean_ratio``), ``(T, B, N)``.

    Args:
        reward, cut: ``(T, B, N)`` as ``batch_returns``.
        done: ``(T, B)`` the copy's episode ended at step ``t``.
        team_weight: ``w`` in ``(1 - w) v^i_t + w v^team_t``; ``v^team_t`` = the discounted sum of
            ``mean_i r^i`` from ``t`` to the episode's end (a slot's rewards count after its agent left).
    """
    own = batch_returns(reward, cut, gamma)
    if team_weight == 0.0:
        return own
    team = discounted_returns(reward.mean(-1), done, gamma).unsqueeze(-1)
    return (1.0 - team_weight) * own + team_weight * team


def reinforce_loss(
    logp: Tensor, entropy: Tensor, value: Tensor, returns: Tensor, weight: Tensor, n_steps: Tensor, cfg: Config
) -> tuple[Tensor, dict[str, Tensor]]:
    """REINFORCE with a learned baseline (eq. 1; CommNet §4), all inputs ``(T, B, N)``.

    ``weight`` is 1 for samples that count (alive agent, valid step) and 0 otherwise; the sums
    over samples are divided by ``n_steps`` (valid env steps of the batch). Returns the loss and
    its parts (detached).
    """
    adv = (returns - value).detach()
    if cfg.normalize_advantages:
        adv = standardise(adv, weight)
    pg = -(logp * adv * weight).sum() / n_steps
    v_loss = ((value - returns).pow(2) * weight).sum() / n_steps
    ent = (entropy * weight).sum() / n_steps
    loss = pg + cfg.value_coef * v_loss - cfg.entropy_coef * ent
    return loss, {"loss/policy": pg.detach(), "loss/value": v_loss.detach(), "loss/entropy": ent.detach()}


# ====================================================================== train
def make_optimizer(cfg: Config, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """RMSProp (``lr``, ``alpha``, ``eps``: the CommNet settings) or Adam."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, eps=cfg.eps)
    return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.rmsprop_alpha, eps=cfg.eps)


def train_reinforce(cfg: Config, env: Any, run: Run, model: ModelName) -> Policy:
    """Train ``model`` by Algorithm 1 until the run's budget is spent or it is stopped.

    Each iteration plays one batch of ``env.num_envs`` episodes, updates once, and reports the
    batch's valid env steps to ``run`` (steps of copies that had already finished are not counted).
    """
    spec: EnvSpec = env.spec
    if len(spec.groups) != 1:
        raise ValueError(f"{model} trains one group of agents; env {spec.name!r} has groups {list(spec.groups)}")
    sdim = spec.state_dim
    arch = model_arch(model, cfg)
    if arch.get("master_state") and sdim == 0:
        raise ValueError(f"{model}'s master needs the env's global state, but {spec.name!r} has state_shape {spec.state_shape}; set algo_config.master_state=false")
    device = env.device
    policy = Policy(model, group_layout(spec), sdim, arch, sigma=cfg.sigma, mean_bound=cfg.mean_bound).to(device)
    optimiser = make_optimizer(cfg, list(policy.parameters()))
    generator = make_generator(run.seed + 7919, device)
    set_progress = getattr(env, "set_progress", None) if cfg.curriculum else None

    resumed = run.restore()
    if resumed is not None:
        policy.load_state_dict(resumed["policy"]["weights"])
        optimiser.load_state_dict(resumed["optimiser"])
        generator.set_state(resumed["generator"])
        env_restore(env, resumed["env"])
    else:
        env.reset()  # so that a checkpoint taken before the first batch has an env state

    def snapshot() -> dict[str, Any]:
        return {"policy": policy.policy_state(), "optimiser": optimiser.state_dict(), "generator": generator.get_state(), "env": env_snapshot(env)}

    while not run.finished:
        t0 = time.perf_counter()
        progress = run.env_steps / run.cfg.env_steps
        extra: dict[str, float] = {}
        if callable(set_progress):
            extra["train/curriculum_progress"] = progress
            value = set_progress(progress)  # the traffic junction's add rate, unit combat's enemy count
            if isinstance(value, (int, float)):
                extra["train/curriculum_value"] = float(value)
        extra["train/lr"] = set_learning_rates(optimiser, [cfg.lr], linear(1.0, cfg.lr_end_factor, progress))[0]
        if not policy.discrete:
            sigma = sigma_at(cfg, progress)
            policy.log_sigma.fill_(math.log(sigma))
            extra["train/sigma"] = sigma
        batch, stats = run_batch(env, policy, generator, cfg.team_terminal_reward)
        returns = mixed_returns(batch["reward"], batch["cut"], batch["done"], cfg.gamma, cfg.team_return)
        n_steps = batch["valid"].sum().clamp_min(1).float()
        loss, parts = reinforce_loss(batch["logp"], batch["entropy"], batch["value"], returns, batch["alive"].float(), n_steps, cfg)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm > 0:
            parts["loss/grad_norm"] = nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm).detach()
        optimiser.step()
        dt = max(time.perf_counter() - t0, 1e-9)
        metrics = {**stats, **{k: float(v) for k, v in parts.items()}, **extra, "time/episodes_per_s": env.num_envs / dt}
        run.step(int(n_steps), metrics)
        run.maybe_evaluate(policy)
        run.maybe_checkpoint(snapshot)
    return policy


_SUMMARY = "episodic policy gradient (Kong et al. 2017, Alg. 1) with "


@register_algo("independent", config=Config, capabilities=CAPABILITIES, summary=_SUMMARY + "independent recurrent agents (no communication)")
def train_independent(cfg: Config, env: Any, run: Run) -> Policy:
    """Independent controllers: one recurrent policy shared by the agents, no communication."""
    return train_reinforce(cfg, env, run, "independent")


@register_algo("commnet", config=Config, capabilities=CAPABILITIES, summary=_SUMMARY + "CommNet (Sukhbaatar et al. 2016)")
def train_commnet(cfg: Config, env: Any, run: Run) -> Policy:
    """CommNet: agents exchange the mean of the other alive agents' hidden states."""
    return train_reinforce(cfg, env, run, "commnet")


@register_algo("bicnet", config=Config, capabilities=CAPABILITIES, summary=_SUMMARY + "BiCNet actor-critic over the agent axis (Peng et al. 2017)")
def train_bicnet(cfg: Config, env: Any, run: Run) -> Policy:
    """BiCNet: bidirectional RNNs across agents for the actor and the critic (stochastic adaptation)."""
    return train_reinforce(cfg, env, run, "bicnet")


@register_algo("ms_marl", config=Config, capabilities=CAPABILITIES | {"needs_state"}, summary=_SUMMARY + "the MS-MARL master-slave network (Kong et al. 2017)")
def train_ms_marl(cfg: Config, env: Any, run: Run) -> Policy:
    """MS-MARL: slave RNNs and a master LSTM over the env state and the slaves' messages; the master's
    proposal is broadcast and added to each slave's."""
    return train_reinforce(cfg, env, run, "ms_marl")


@register_algo(
    "ms_marl_gcm", config=Config, capabilities=CAPABILITIES | {"needs_state"}, summary=_SUMMARY + "MS-MARL + gated composition module (Kong et al. 2017)"
)
def train_ms_marl_gcm(cfg: Config, env: Any, run: Run) -> Policy:
    """MS-MARL + GCM: the master's proposal to each slave is gated by the slave's thought."""
    return train_reinforce(cfg, env, run, "ms_marl_gcm")


# ====================================================================== analysis (Figure 6b)
@torch.no_grad()
def record_action_components(policy: Policy, env: BatchedEnv, seed: int = 0, deterministic: bool = False) -> dict[str, np.ndarray]:
    """Play the first episode of every copy of ``env`` with an MS-MARL ``policy`` and record, per
    step, the master's and the slaves' components of the action logits (Kong et al. 2017, Fig. 6b).

    Returns numpy arrays: ``master``, ``slave``, ``probs`` ``(T, B, N, A)`` (``probs`` = the
    policy's action probabilities, masked), ``actions`` ``(T, B, N)``, ``alive`` ``(T, B, N)``
    (False also after a copy's episode ended).
    """
    if not isinstance(policy.net, MasterSlaveNet):
        raise ValueError(f"action components exist for MS-MARL policies only, got a {policy.model_name!r} policy")
    if not policy.discrete:
        raise ValueError("plotting action components needs discrete actions")
    g, B, dev = policy.group, env.num_envs, env.device
    gen = make_generator(seed, dev)
    obs, state = env.reset(seed=seed), env.state()
    alive = env.alive()[g]
    hidden = policy.net.init_hidden(B, dev)
    running = torch.ones(B, dtype=torch.bool, device=dev)
    rec: dict[str, list[Tensor]] = {k: [] for k in ("master", "slave", "probs", "actions", "alive")}
    for _ in range(env.spec.max_steps + 1):
        masks = env.action_mask()
        out = policy.step(obs[g], state, alive, hidden, masks.get(g) if masks is not None else None)
        raw = policy.sample(out.params, gen, deterministic)
        for k in ("master", "slave"):
            rec[k].append(out.parts[k])
        rec["probs"].append(torch.softmax(out.params, -1))
        rec["actions"].append(raw)
        rec["alive"].append(alive & running[:, None])
        step = env.step({g: policy.to_env(raw)})
        running = running & ~step.done
        if not bool(running.any()):
            break
        obs, state, alive, hidden = step.obs, step.state, step.alive[g], out.hidden
    return {k: torch.stack(v).cpu().numpy() for k, v in rec.items()}
