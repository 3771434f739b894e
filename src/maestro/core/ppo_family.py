"""The parts of PPO that IPPO/MAPPO (``algos/ppo.py``) and the master-slave transfer methods
(``algos/transfer.py``) share: settings, policy, critics, rollouts, the clipped-PPO update and the
state of one learner. Each algorithm module owns its loop; this module has none.

PPO: Schulman et al. 2017 (arXiv 1707.06347) with GAE (Schulman et al. 2016, arXiv 1506.02438) and
the MAPPO paper's practices (Yu et al. 2022, arXiv 2103.01955): value normalisation, clipped
Huber value loss, orthogonal initialisation, input LayerNorm, advantage normalisation, gradient
norm clipping, Adam with eps 1e-5. For continuous control (MuJoCo; Engstrom et al. 2020, arXiv
2005.12729): running observation normalisation (kept in the policy), reward scaling by the running
standard deviation of a discounted return, and stem/backbone/head networks (Guo & Duan, papers/000).

- One actor and one critic **per group**, shared by the group's agents (parameter sharing within a
  group; heterogeneous teams such as simple tag's adversaries and prey get separate networks). An
  optional one-hot agent id lets shared networks specialise.
- Discrete actions: a Categorical over masked logits (``env.action_mask()`` for groups with
  ``has_action_mask``). Continuous actions: a diagonal Gaussian in ``[-1, 1]^d`` with a learned,
  state-independent log std, mapped affinely onto the env's Box after clipping (the log-probability
  is that of the unclipped sample, as in the MAPPO and CleanRL code).
- Agents that are not ``alive`` have their samples weighted out of every loss and statistic.
- Optional recurrent actors and critics (``recurrent: H``; the MAPPO paper's rMAPPO, Yu et al. 2022,
  their code's ``use_recurrent_policy``): a GRU between each network's hidden layers and its output
  layer (``maestro.nn.recurrent.GRUNet``), its state carried through the rollout and zeroed at
  episode starts (the critics step on their inputs as the actors act); the update replays each env
  copy's rollout from the states it began with, for the values and in every minibatch (truncated
  backpropagation through ``rollout_steps``), with minibatches of whole copies. Departures from
  rMAPPO's code: a chunk is the whole rollout (its ``data_chunk_length`` 10 cuts rollouts into
  chunks), and the GRU keeps PyTorch's initialisation (theirs is orthogonal).

Reads top to bottom: ``Config`` -> ``Policy`` (acts, saves, loads) -> critics -> ``collect`` (one
rollout of ``T`` steps of ``B`` copies) -> ``update`` (``prepare_batch``: GAE and targets;
``ppo_epochs``: epochs of minibatch PPO over one learner or several, ``ppo_loss`` per group) ->
``Learner`` (what one PPO learner keeps between iterations, with its checkpoint state).
Tensors are ``(T, B, N, ...)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maestro.core.checkpoint import read_policy_state, save_policy, tree_to_device
from maestro.core.episodes import EpisodeStats
from maestro.core.normalise import ReturnScaler, RunningMeanStd
from maestro.core.returns import gae, standardise, weighted_mean
from maestro.core.run import env_restore, env_snapshot
from maestro.nn.heads import (
    categorical_log_prob,
    categorical_log_prob_entropy,
    categorical_sample,
    gaussian_entropy,
    gaussian_log_prob,
    gaussian_sample,
    mask_logits,
    box_bounds,
    unit_to_box,
)
from maestro.nn.mlp import MLP
from maestro.nn.recurrent import GRUNet, reset_hidden
from maestro.nn.running_norm import RunningNorm
from maestro.nn.stem_backbone_head import StemBackboneHead
from maestro.registry import Smoke
from maestro.spec import EnvSpec, GroupLayout, group_layout, layouts_from_dicts, layouts_to_dicts


# ====================================================================== config
@dataclass(frozen=True)
class Config:
    """PPO hyperparameters. Defaults are MAPPO's for the particle envs (Yu et al. 2022, arXiv
    2103.01955, Appendix tables "Common hyperparameters" and "MPE"; their code ``marlbenchmark/on-policy``)."""

    rollout_steps: int = 25
    """Steps ``T`` per env copy collected between updates (MAPPO: episode length 25 for MPE)."""
    epochs: int = 10
    """Passes over each rollout (MAPPO MPE: ppo_epoch 10)."""
    minibatches: int = 1
    """Minibatches per epoch, splitting the ``T * B`` (time, copy) samples (MAPPO MPE: 1)."""
    lr: float = 7e-4
    """Adam learning rate of the actors (MAPPO MPE: 7e-4)."""
    critic_lr: float = 7e-4
    """Adam learning rate of the critics (MAPPO MPE: 7e-4)."""
    lr_end_factor: float = 1.0
    """Both learning rates at the end of the budget as a fraction of ``lr`` / ``critic_lr``, reached
    linearly (1: constant, MAPPO's default; 0: MAPPO's ``use_linear_lr_decay``)."""
    adam_eps: float = 1e-5
    """Adam epsilon (MAPPO: 1e-5)."""
    gamma: float = 0.99
    """Discount factor (MAPPO: 0.99)."""
    gae_lambda: float = 0.95
    """GAE lambda (MAPPO: 0.95)."""
    clip: float = 0.2
    """PPO ratio clipping epsilon (MAPPO: 0.2)."""
    value_clip: float = 0.2
    """Clip of the value change per update around the rollout's values (0 disables; MAPPO: 0.2)."""
    value_loss: Literal["huber", "mse"] = "huber"
    """Critic loss on (normalised) targets (MAPPO: Huber)."""
    huber_delta: float = 10.0
    """Huber loss threshold (MAPPO: 10)."""
    value_coef: float = 1.0
    """Weight of the value loss (MAPPO: 1)."""
    entropy_coef: float = 0.01
    """Weight of the entropy bonus (MAPPO MPE: 0.01)."""
    max_grad_norm: float = 10.0
    """Gradient norm clip, applied to actors and critics separately (MAPPO: 10; 0 disables)."""
    value_norm: bool = True
    """Train critics on targets standardised by running return statistics (MAPPO Sec. 4.1)."""
    normalize_advantages: bool = True
    """Standardise advantages over the alive samples of each group and rollout."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden layer widths of actors and critics (MAPPO: 64 units)."""
    activation: Literal["relu", "tanh"] = "relu"
    """Hidden activation (MAPPO: ReLU)."""
    feature_norm: bool = True
    """LayerNorm on network inputs (MAPPO's use_feature_normalization)."""
    agent_id: bool = False
    """Append a one-hot agent id to the actor input (the critic of MAPPO always gets it)."""
    critic_obs: bool = False
    """MAPPO: also feed the agent's own observation to the centralised critic (the paper's
    agent-specific global state); ignored by IPPO, whose critic sees only the observation."""
    init_log_std: float = -0.5
    """Initial log standard deviation of continuous actions, in the [-1, 1] action scale."""
    network: Literal["mlp", "stem_backbone_head"] = "mlp"
    """Actors and critics: plain MLPs, or stem -> backbone -> head networks (Guo & Duan, papers/000,
    Sec. 3.2.2; ``hidden`` (h, h, h) gives the paper's four-layer networks), whose parts the
    transfer methods of ``algos/transfer.py`` share and copy. The same function family either way."""
    obs_norm: bool = False
    """Standardise every observation feature by running statistics, clipped to ``obs_clip``
    (PPO for MuJoCo: Engstrom et al. 2020, arXiv 2005.12729). The statistics live in the policy
    (saved with it) and are updated after each update from the rollout's observations."""
    obs_clip: float = 10.0
    """Clip of the normalised observations (Gymnasium's and SB3's 10)."""
    reward_scale: bool = False
    """Divide rewards by the running standard deviation of a discounted return before GAE, clipped to
    ``reward_clip`` (PPO for MuJoCo; ``maestro.core.normalise.ReturnScaler``, saved in checkpoints)."""
    reward_clip: float = 10.0
    """Clip of the scaled rewards (SB3's 10)."""
    recurrent: int = 0
    """Width ``H`` of a GRU in every actor and critic, after their hidden layers and before their output
    layers (``maestro.nn.recurrent.GRUNet``; 0: feed-forward networks). Minibatches then split the ``B``
    env copies, not the ``T * B`` samples."""

    SMOKE: ClassVar[Smoke] = Smoke(config={"rollout_steps": 4, "epochs": 2, "minibatches": 2, "hidden": (16,)})
    """``check_algo``'s settings: every iteration updates (4 steps x 4 copies, two minibatches)."""

    def __post_init__(self) -> None:
        for name in ("rollout_steps", "epochs", "minibatches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"gamma and gae_lambda must lie in [0, 1], got {self.gamma}, {self.gae_lambda}")
        if self.lr <= 0 or self.critic_lr <= 0:
            raise ValueError(f"lr and critic_lr must be > 0, got {self.lr}, {self.critic_lr}")
        if not 0.0 <= self.lr_end_factor <= 1.0:
            raise ValueError(f"lr_end_factor must lie in [0, 1], got {self.lr_end_factor}")
        if self.network == "stem_backbone_head" and len(self.hidden) < 1:
            raise ValueError(f"network 'stem_backbone_head' needs at least one hidden width, got hidden={self.hidden}")
        if self.obs_clip <= 0 or self.reward_clip <= 0:
            raise ValueError(f"obs_clip and reward_clip must be > 0, got {self.obs_clip}, {self.reward_clip}")
        if self.recurrent < 0:
            raise ValueError(f"recurrent must be >= 0 (0: feed-forward networks), got {self.recurrent}")
        if self.recurrent and (self.network != "mlp" or len(self.hidden) < 1):
            raise ValueError(f"recurrent networks need network 'mlp' and at least one hidden width, got network={self.network!r}, hidden={self.hidden}")


# ====================================================================== policy
def make_network(cfg: Config, in_dim: int, out_dim: int, out_gain: float) -> nn.Module:
    """An actor or critic network ``(..., in_dim) -> (..., out_dim)`` of ``cfg.network``'s kind, or a
    ``GRUNet`` over sequences when ``cfg.recurrent``."""
    if cfg.recurrent:
        return GRUNet(in_dim, tuple(cfg.hidden), cfg.recurrent, out_dim, cfg.activation, out_gain, cfg.feature_norm)
    if cfg.network == "stem_backbone_head":
        return StemBackboneHead(in_dim, tuple(cfg.hidden), out_dim, cfg.activation, out_gain, cfg.feature_norm)
    return MLP(in_dim, tuple(cfg.hidden), out_dim, cfg.activation, out_gain=out_gain, input_norm=cfg.feature_norm)


class Policy(nn.Module):
    """Decentralised actors, one per group, each shared by the group's agents.

    ``act(obs, state, hidden)`` maps per-group observations ``(B, N_g, *obs_shape)`` to env-ready
    actions (``(B, N_g)`` int64 or ``(B, N_g, d)`` float inside the Box). Feed-forward actors pass
    ``hidden`` through unchanged; recurrent ones (``recurrent: H``) take and return
    ``{group: (B, N_g, H)}`` (``None``: zeros, an episode's start) and ``reset_hidden`` zeroes the
    copies whose episode ended. ``state`` is unused (it is part of the common interface of maestro
    policies).
    """

    def __init__(self, layout: dict[str, GroupLayout], cfg: Config) -> None:
        super().__init__()
        self.layout = layouts_from_dicts(layout)
        self.arch = {k: getattr(cfg, k) for k in ("hidden", "activation", "feature_norm", "agent_id", "init_log_std", "network", "obs_norm", "obs_clip", "recurrent")}
        self.actors = nn.ModuleDict()
        self.log_std = nn.ParameterDict()
        self.obs_norm = nn.ModuleDict({g: RunningNorm(info.obs_dim, cfg.obs_clip) for g, info in self.layout.items()} if cfg.obs_norm else {})
        for g, info in self.layout.items():
            n, in_dim = info.n_agents, info.obs_dim + (info.n_agents if cfg.agent_id else 0)
            self.actors[g] = make_network(cfg, in_dim, info.action_dim, 0.01)
            self.register_buffer(f"ids_{g}", torch.eye(n))
            if not info.discrete:
                self.log_std[g] = nn.Parameter(torch.full((info.action_dim,), float(cfg.init_log_std)))
                low, high, bounded = box_bounds(info.low or (), info.high or ())
                self.register_buffer(f"low_{g}", low)
                self.register_buffer(f"high_{g}", high)
                self.register_buffer(f"bounded_{g}", bounded)

    @property
    def recurrent(self) -> int:
        """The GRU width ``H`` of the actors and critics (0: feed-forward)."""
        return int(self.arch.get("recurrent", 0))

    def initial_hidden(self, batch: int, device: torch.device | str) -> dict[str, Tensor]:
        """Zero recurrent states ``{group: (batch, N_g, H)}``: an episode's start."""
        return {g: torch.zeros(batch, info.n_agents, self.recurrent, device=device) for g, info in self.layout.items()}

    def reset_hidden(self, hidden: Any, done: Tensor, generator: torch.Generator | None = None) -> Any:
        """Zero the recurrent states of the copies whose episode ended (``done`` ``(B,)``); feed-forward
        actors return ``hidden`` as it is."""
        if not self.recurrent or hidden is None:
            return hidden
        return reset_hidden(hidden, ~done)

    # ---------------------------------------------------------------- forward pieces
    def actor_input(self, g: str, obs: Tensor) -> Tensor:
        """``(..., N, *obs_shape)`` -> ``(..., N, obs_dim [+ N])`` (flattened, normalised obs, optional one-hot id)."""
        flat = self.norm_obs(g, obs)
        if self.arch["agent_id"]:
            n = self.layout[g].n_agents
            flat = torch.cat([flat, getattr(self, f"ids_{g}").expand(*flat.shape[:-1], n)], -1)
        return flat

    def flat_obs(self, g: str, obs: Tensor) -> Tensor:
        """``(..., N, *obs_shape)`` -> ``(..., N, obs_dim)``, checking the shape."""
        info = self.layout[g]
        shape = info.obs_shape
        k = obs.dim() - len(shape)
        if k < 1 or tuple(obs.shape[k:]) != shape or obs.shape[k - 1] != info.n_agents:
            raise ValueError(f"observations of group {g!r} have shape {tuple(obs.shape)}, expected (..., {info.n_agents}, {', '.join(map(str, shape))})")
        return obs.reshape(*obs.shape[:k], info.obs_dim)

    def norm_obs(self, g: str, obs: Tensor) -> Tensor:
        """``flat_obs``, standardised by the running statistics when ``obs_norm`` is on."""
        flat = self.flat_obs(g, obs)
        return self.obs_norm[g](flat) if g in self.obs_norm else flat

    def dist_params(self, g: str, obs: Tensor, mask: Tensor | None = None, out: Tensor | None = None) -> Tensor:
        """Masked logits ``(..., N, n)`` or Gaussian means ``(..., N, d)`` of group ``g``: of its
        feed-forward actor on ``obs``, or the recurrent actor's outputs ``out`` for them."""
        if out is None:
            out = self.actors[g](self.actor_input(g, obs))
        if self.layout[g].discrete:
            return mask_logits(out, mask)
        return out

    def to_env(self, g: str, raw: Tensor) -> Tensor:
        """Continuous samples in ``[-1, 1]`` scale -> env actions inside the Box (clipped); discrete unchanged."""
        if self.layout[g].discrete:
            return raw
        return unit_to_box(raw, getattr(self, f"low_{g}"), getattr(self, f"high_{g}"), getattr(self, f"bounded_{g}"))

    def sample(
        self, g: str, obs: Tensor, mask: Tensor | None, generator: torch.Generator | None, deterministic: bool = False, hidden: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Raw actions (``(B, N)`` int64 or ``(B, N, d)``), their log-probabilities ``(B, N)`` and, for a
        recurrent actor, its next state ``(B, N, H)`` from ``hidden`` (``None``: zeros); else ``None``."""
        out = nxt = None
        if self.recurrent:
            h0 = hidden if hidden is not None else torch.zeros(*obs.shape[:2], self.recurrent, device=obs.device)
            out, nxt = self.actors[g].step(self.actor_input(g, obs), h0)
        params = self.dist_params(g, obs, mask, out)
        if self.layout[g].discrete:
            a = categorical_sample(params, generator, deterministic)
            return a, categorical_log_prob(params, a), nxt
        a = gaussian_sample(params, self.log_std[g], generator, deterministic)
        return a, gaussian_log_prob(params, self.log_std[g], a), nxt

    def evaluate_actions(
        self, g: str, obs: Tensor, raw: Tensor, mask: Tensor | None, h0: Tensor | None = None, starts: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Log-probabilities and entropies ``(..., N)`` of stored raw actions under the current actor; a
        recurrent actor replays ``obs`` ``(T, B, N, ...)`` from ``h0`` ``(B, N, H)`` with the episode
        ``starts`` ``(T, B)`` (``GRUNet``)."""
        params = self.dist_params(g, obs, mask, self.actors[g](self.actor_input(g, obs), h0, starts)[0] if self.recurrent else None)
        if self.layout[g].discrete:
            return categorical_log_prob_entropy(params, raw)
        return gaussian_log_prob(params, self.log_std[g], raw), gaussian_entropy(self.log_std[g], params.shape[:-1])

    # ---------------------------------------------------------------- the policy interface
    @torch.no_grad()
    def act(
        self,
        obs: dict[str, Tensor],
        state: Tensor | None = None,
        hidden: Any = None,
        *,
        action_mask: dict[str, Tensor] | None = None,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        alive: dict[str, Tensor] | None = None,
    ) -> tuple[dict[str, Tensor], Any]:
        """Env-ready actions for every group, and the next ``hidden`` (feed-forward: unchanged).

        Args:
            obs: per group ``(B, N_g, *obs_shape)``.
            state: global state ``(B, *state_shape)`` (unused by decentralised actors).
            hidden: recurrent state ``{group: (B, N_g, H)}`` (``None``: zeros, an episode's start);
                ignored by feed-forward actors.
            action_mask: per group ``(B, N_g, n)`` bool legal actions, as ``env.action_mask()``.
            deterministic: take the argmax / mean instead of sampling.
            generator: torch generator for sampling (``None``: torch's global generator).
            alive: per group ``(B, N_g)`` bool (as ``env.alive()``); unused: the actors are
                per agent, and the env ignores the actions of absent agents.
        """
        acts, nxt = {}, {}
        for g in self.layout:
            mask = action_mask.get(g) if action_mask else None
            raw, _, nxt[g] = self.sample(g, obs[g], mask, generator, deterministic, hidden[g] if (self.recurrent and hidden is not None) else None)
            acts[g] = self.to_env(g, raw)
        return acts, (nxt if self.recurrent else hidden)

    def policy_state(self) -> dict[str, Any]:
        """Everything needed to rebuild this policy: class path, layout, architecture, weights."""
        arch = dict(self.arch)
        arch["hidden"] = list(arch["hidden"])
        return {"class": "maestro.core.ppo_family:Policy", "layout": layouts_to_dicts(self.layout), "arch": arch, "weights": self.state_dict()}

    @classmethod
    def from_state(cls, state: dict[str, Any], device: str | torch.device = "cpu") -> "Policy":
        """Rebuild a policy from ``policy_state()``."""
        arch = dict(state["arch"])
        arch["hidden"] = tuple(arch["hidden"])
        policy = cls(state["layout"], Config(**arch))
        policy.load_state_dict(state["weights"])
        return policy.to(device)

    def save(self, path: str | Path) -> Path:
        """Write the policy alone (atomically) to ``path``."""
        return save_policy(self, path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "Policy":
        """Load a policy written by ``save`` (or the policy inside a training checkpoint)."""
        return cls.from_state(read_policy_state(path, device), device)


# ====================================================================== critics
def critic_input_dim(info: GroupLayout, spec: EnvSpec, cfg: Config, centralised: bool) -> int:
    """Features of one agent's critic input: obs (IPPO) or state + one-hot id [+ obs] (MAPPO)."""
    if not centralised:
        return info.obs_dim + (info.n_agents if cfg.agent_id else 0)
    return spec.state_dim + info.n_agents + (info.obs_dim if cfg.critic_obs else 0)


def critic_input(policy: Policy, g: str, obs: Tensor, state: Tensor, cfg: Config, centralised: bool) -> Tensor:
    """``(..., N, features)`` critic input from obs ``(..., N, *obs_shape)`` and state ``(..., *state_shape)``."""
    if not centralised:
        return policy.actor_input(g, obs)
    n = policy.layout[g].n_agents
    own = policy.norm_obs(g, obs)  # (..., N, obs_dim)
    lead = own.shape[:-2]
    s = state.reshape(*lead, 1, -1).expand(*lead, n, -1)
    parts = [s, getattr(policy, f"ids_{g}").expand(*lead, n, n)]
    if cfg.critic_obs:
        parts.append(own)
    return torch.cat(parts, -1)


def build_critics(policy: Policy, spec: EnvSpec, cfg: Config, centralised: bool) -> nn.ModuleDict:
    """One value network per group, shared by its agents: ``(..., N, features) -> (..., N, 1)`` (a
    ``GRUNet`` over ``(T, B, N, features)`` sequences when ``cfg.recurrent``)."""
    return nn.ModuleDict(
        {
            g: make_network(cfg, critic_input_dim(info, spec, cfg, centralised), 1, 1.0)
            for g, info in policy.layout.items()
        }
    )


# ====================================================================== rollout storage
def allocate_rollout(spec: EnvSpec, T: int, B: int, device: torch.device, recurrent: int = 0) -> dict[str, Any]:
    """Preallocated ``(T, B, ...)`` buffers (allocated once, overwritten every rollout); with
    ``recurrent`` networks also each group's actor and critic states at the rollout's start, ``h0``
    and ``critic_h0`` ``(B, N, H)``."""
    z = lambda *shape, dtype=torch.float32: torch.zeros(*shape, dtype=dtype, device=device)  # noqa: E731
    buf: dict[str, Any] = {
        "state": z(T, B, *spec.state_shape),
        "final_state": z(T, B, *spec.state_shape),
        "terminated": z(T, B, dtype=torch.bool),
        "done": z(T, B, dtype=torch.bool),
        "groups": {},
    }
    for g, gs in spec.groups.items():
        N = gs.n_agents
        buf["groups"][g] = {
            "obs": z(T, B, N, *gs.obs_shape),
            "final_obs": z(T, B, N, *gs.obs_shape),
            "action": z(T, B, N, dtype=torch.long) if gs.discrete else z(T, B, N, gs.action_dim),
            "logp": z(T, B, N),
            "reward": z(T, B, N),
            "alive": z(T, B, N, dtype=torch.bool),
            "mask": z(T, B, N, gs.action_dim, dtype=torch.bool) if gs.has_action_mask else None,
        }
        if recurrent:
            buf["groups"][g]["h0"] = z(B, N, recurrent)
            buf["groups"][g]["critic_h0"] = z(B, N, recurrent)
    return buf


# ====================================================================== collect
@torch.no_grad()
def collect(
    env: Any, policy: Policy, buf: dict[str, Any], cur: dict[str, Any], generator: torch.Generator, critic_step: Callable[..., dict[str, Tensor]] | None = None
) -> tuple[dict[str, Any], dict[str, float]]:
    """Fill ``buf`` with ``T`` steps of all ``B`` copies from the current ``cur`` (obs, state, alive;
    recurrent networks: ``hidden`` and ``critic_hidden``, carried along, the critics' by
    ``critic_step(obs, state, critic_hidden) -> critic_hidden`` (``Learner.critic_step``)).

    Returns the new ``cur`` and the statistics of the episodes that ended in the rollout
    (``maestro.core.episodes``: ``train/episode_return[/<group>]``, ``train/episode_length``,
    ``train/<extra>``...).
    """
    spec = env.spec
    T = buf["done"].shape[0]
    groups = list(spec.groups)
    episodes = EpisodeStats(spec, env.device)
    obs, state, alive = cur["obs"], cur["state"], cur["alive"]
    hidden, critic_hidden = cur.get("hidden"), cur.get("critic_hidden")  # recurrent: {group: (B, N, H)}, zeroed where an episode begins
    if hidden is not None:
        if critic_step is None or critic_hidden is None:
            raise ValueError("collect: recurrent networks need the critics' states (cur['critic_hidden']) and critic_step")
        for g in groups:
            buf["groups"][g]["h0"].copy_(hidden[g])
            buf["groups"][g]["critic_h0"].copy_(critic_hidden[g])
    for t in range(T):
        masks = env.action_mask()
        actions = {}
        nxt = {}
        for g in groups:
            gb = buf["groups"][g]
            mask = masks.get(g) if (masks is not None and gb["mask"] is not None) else None
            raw, logp, nxt[g] = policy.sample(g, obs[g], mask, generator, hidden=hidden[g] if hidden is not None else None)
            gb["obs"][t].copy_(obs[g])
            gb["alive"][t].copy_(alive[g])
            gb["action"][t].copy_(raw)
            gb["logp"][t].copy_(logp)
            if mask is not None:
                gb["mask"][t].copy_(mask)
            actions[g] = policy.to_env(g, raw)
        buf["state"][t].copy_(state)
        if hidden is not None:
            critic_hidden = critic_step(obs, state, critic_hidden)  # type: ignore[misc]
        out = env.step(actions)
        done = out.done
        buf["terminated"][t].copy_(out.terminated)
        buf["done"][t].copy_(done)
        buf["final_state"][t].copy_(out.final_state)
        for g in groups:
            gb = buf["groups"][g]
            gb["reward"][t].copy_(out.reward[g])
            gb["final_obs"][t].copy_(out.final_obs[g])
        episodes.add(out.info, done)
        obs, state, alive = out.obs, out.state, out.alive
        if hidden is not None:
            hidden, critic_hidden = policy.reset_hidden(nxt, done), policy.reset_hidden(critic_hidden, done)
    new = {"obs": obs, "state": state, "alive": alive}
    if hidden is not None:
        new["hidden"], new["critic_hidden"] = hidden, critic_hidden
    return new, episodes.summary("train")  # one sync per rollout


# ====================================================================== update
def _value_error(err: Tensor, cfg: Config) -> Tensor:
    if cfg.value_loss == "huber":
        return F.huber_loss(err, torch.zeros_like(err), reduction="none", delta=cfg.huber_delta)
    return 0.5 * err.pow(2)


def prepare_batch(
    cfg: Config,
    policy: Policy,
    critics: nn.ModuleDict,
    vnorm: dict[str, RunningMeanStd],
    buf: dict[str, Any],
    centralised: bool,
    scalers: dict[str, ReturnScaler] | None = None,
) -> dict[str, dict[str, Tensor]]:
    """Per group, the rollout's samples flattened to ``(T * B, N, ...)`` with GAE advantages and
    value targets (``obs``, ``cin``, ``action``, ``logp``, ``adv``, ``target``, ``v_old``, ``w``
    [, ``mask``]). Rewards are scaled first when ``scalers`` are given (``cfg.reward_scale``); the
    value statistics ``vnorm`` are updated with the new returns. Recurrent networks keep the samples
    ``(T, B, N, ...)`` (a copy's steps stay in order) and add the actors' and critics' first states
    ``h0``, ``critic_h0`` ``(1, B, N, H)`` and the episode ``starts`` ``(T, B)`` (``done`` one step
    earlier), so every tensor has the copies on axis 1."""
    T, B = buf["done"].shape
    data: dict[str, dict[str, Tensor]] = {}
    with torch.no_grad():
        for g in policy.layout:
            gb = buf["groups"][g]
            w = gb["alive"].float()
            reward = scalers[g].scale(gb["reward"], buf["done"], w) if scalers else gb["reward"]
            cin = critic_input(policy, g, gb["obs"], buf["state"], cfg, centralised)  # (T, B, N, F)
            cin_next = critic_input(policy, g, gb["final_obs"], buf["final_state"], cfg, centralised)
            if policy.recurrent:  # replayed from the rollout's first states; the next observation is one more step of the same episode
                starts = torch.zeros_like(buf["done"])
                starts[1:] = buf["done"][:-1]
                out, states = critics[g](cin, gb["critic_h0"], starts)
                v_out = out.squeeze(-1)
                v_next_out = critics[g].step(cin_next, states)[0].squeeze(-1)
            else:
                v_out = critics[g](cin).squeeze(-1)  # (T, B, N), in normalised units if value_norm
                v_next_out = critics[g](cin_next).squeeze(-1)
            v = vnorm[g].denormalise(v_out) if cfg.value_norm else v_out
            v_next = vnorm[g].denormalise(v_next_out) if cfg.value_norm else v_next_out
            adv, ret = gae(reward, v, v_next, buf["terminated"], buf["done"], cfg.gamma, cfg.gae_lambda)
            if cfg.value_norm:
                vnorm[g].update(ret, w)
                target = vnorm[g].normalise(ret)
            else:
                target = ret
            if cfg.normalize_advantages:
                adv = standardise(adv, w)
            flat = (lambda x: x) if policy.recurrent else (lambda x: x.reshape(T * B, *x.shape[2:]))  # noqa: E731
            data[g] = {
                "obs": flat(gb["obs"]),
                "cin": flat(cin),
                "action": flat(gb["action"]),
                "logp": flat(gb["logp"]),
                "adv": flat(adv),
                "target": flat(target),
                "v_old": flat(v_out),
                "w": flat(w),
            }
            if gb["mask"] is not None:
                data[g]["mask"] = flat(gb["mask"])
            if policy.recurrent:
                data[g]["h0"], data[g]["critic_h0"], data[g]["starts"] = gb["h0"].unsqueeze(0), gb["critic_h0"].unsqueeze(0), starts
    return data


def ppo_loss(cfg: Config, policy: Policy, critics: nn.ModuleDict, g: str, d: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    """The clipped-surrogate PPO loss of group ``g`` on the minibatch ``d`` (rows of ``prepare_batch``'s
    data): ``policy + value_coef * value - entropy_coef * entropy``, and its detached parts."""
    h0 = d["h0"][0] if "h0" in d else None
    logp, ent = policy.evaluate_actions(g, d["obs"], d["action"], d.get("mask"), h0, d.get("starts"))
    log_ratio = logp - d["logp"]
    ratio = log_ratio.exp()
    pg = -torch.min(ratio * d["adv"], ratio.clamp(1.0 - cfg.clip, 1.0 + cfg.clip) * d["adv"])
    v = (critics[g](d["cin"], d["critic_h0"][0], d["starts"])[0] if h0 is not None else critics[g](d["cin"])).squeeze(-1)
    v_loss = _value_error(v - d["target"], cfg)
    if cfg.value_clip > 0:
        v_clipped = d["v_old"] + (v - d["v_old"]).clamp(-cfg.value_clip, cfg.value_clip)
        v_loss = torch.max(v_loss, _value_error(v_clipped - d["target"], cfg))
    p_loss, v_l, e = weighted_mean(pg, d["w"]), weighted_mean(v_loss, d["w"]), weighted_mean(ent, d["w"])
    loss = p_loss + cfg.value_coef * v_l - cfg.entropy_coef * e
    with torch.no_grad():
        stats = {
            "policy": p_loss.detach(),
            "value": v_l.detach(),
            "entropy": e.detach(),
            "approx_kl": weighted_mean((ratio - 1.0) - log_ratio, d["w"]),
            "clip_frac": weighted_mean(((ratio - 1.0).abs() > cfg.clip).float(), d["w"]),
        }
    return loss, stats


LearnerBatch = tuple[Policy, nn.ModuleDict, dict[str, dict[str, Tensor]]]
"""One learner's ``(policy, critics, prepare_batch data)`` in ``ppo_epochs``."""


def ppo_epochs(
    cfg: Config, batches: list[LearnerBatch], generator: torch.Generator, step: Callable[[list[Tensor]], dict[str, Tensor]]
) -> dict[str, float]:
    """``cfg.epochs`` passes of ``cfg.minibatches`` minibatches over each learner's samples.

    Per minibatch, ``step(losses)`` gets one loss per learner (summed over its groups) and does the
    optimisation (backward, clipping, optimiser steps), returning gradient norms to log. One learner
    is PPO (``update``); the transfer methods pass several (multi-tasking: the sum of both losses;
    gradient momentum: each loss's own gradient). Returns the mean losses ``loss/...``. Minibatches
    split the samples (axis 0), or, for recurrent networks, the env copies (axis 1: whole sequences).
    """
    axis = 1 if cfg.recurrent else 0
    sizes = [next(iter(data.values()))["w"].shape[axis] for _, _, data in batches]
    if cfg.recurrent and min(sizes) < cfg.minibatches:
        raise ValueError(f"recurrent networks split the env copies into minibatches: {min(sizes)} copies (run.num_envs) for minibatches={cfg.minibatches}")
    sums: dict[str, Tensor] = {}
    n_steps = n_terms = 0
    for _ in range(cfg.epochs):
        # one minibatch (MAPPO's MPE setting) is the whole batch: no shuffle or gather needed;
        # otherwise one gather per tensor and epoch, and the minibatches are contiguous slices of it
        shuffled = []
        for (_, _, data), n in zip(batches, sizes):
            if cfg.minibatches > 1:
                perm = torch.randperm(n, generator=generator, device=generator.device).to(next(iter(data.values()))["w"].device)
                data = {g: {k: (x[perm] if axis == 0 else x[:, perm]) for k, x in dg.items()} for g, dg in data.items()}
            shuffled.append(data)
        for i in range(cfg.minibatches):
            losses = []
            for (policy, critics, _), data, n in zip(batches, shuffled, sizes):
                mb = max(1, n // cfg.minibatches)
                loss = torch.zeros((), device=next(iter(data.values()))["w"].device)
                for g, dg in data.items():
                    d = {k: (x[i * mb : (i + 1) * mb] if axis == 0 else x[:, i * mb : (i + 1) * mb]) for k, x in dg.items()} if cfg.minibatches > 1 else dg
                    term, stats = ppo_loss(cfg, policy, critics, g, d)
                    loss = loss + term
                    for k, v in stats.items():
                        sums[k] = sums.get(k, 0.0) + v.cpu()
                    n_terms += 1
                losses.append(loss)
            for k, v in step(losses).items():
                sums[k] = sums.get(k, 0.0) + v.detach().cpu()
            n_steps += 1
    out = {f"loss/{k}": float(v) / max(1, n_steps if "grad_norm" in k else n_terms) for k, v in sums.items()}
    return out


def update(
    cfg: Config,
    policy: Policy,
    critics: nn.ModuleDict,
    optimiser: torch.optim.Optimizer,
    vnorm: dict[str, RunningMeanStd],
    buf: dict[str, Any],
    generator: torch.Generator,
    centralised: bool,
    spec: EnvSpec,
    scalers: dict[str, ReturnScaler] | None = None,
) -> dict[str, float]:
    """Advantages by GAE, then ``epochs`` x ``minibatches`` clipped-PPO steps on all groups at once.

    The samples are the ``T * B`` (time, copy) pairs; each minibatch holds every agent of every
    group at those pairs, so one optimiser step updates all actors and critics.
    """
    data = prepare_batch(cfg, policy, critics, vnorm, buf, centralised, scalers)
    return ppo_epochs(cfg, [(policy, critics, data)], generator, adam_step(cfg, optimiser, list(policy.parameters()), list(critics.parameters())))


def adam_step(cfg: Config, optimiser: torch.optim.Optimizer, actor_params: list[nn.Parameter], critic_params: list[nn.Parameter]) -> Callable[[list[Tensor]], dict[str, Tensor]]:
    """``ppo_epochs``'s ``step`` for one optimiser: backward of the summed losses, gradient norms of
    the actors and of the critics clipped separately to ``cfg.max_grad_norm``, one optimiser step."""

    def step(losses: list[Tensor]) -> dict[str, Tensor]:
        optimiser.zero_grad(set_to_none=True)
        total = losses[0] if len(losses) == 1 else torch.stack(losses).sum()
        total.backward()
        norms = {}
        if cfg.max_grad_norm > 0:
            norms["actor_grad_norm"] = nn.utils.clip_grad_norm_(actor_params, cfg.max_grad_norm)
            norms["critic_grad_norm"] = nn.utils.clip_grad_norm_(critic_params, cfg.max_grad_norm)
        optimiser.step()
        return norms

    return step


def update_obs_norm(policy: Policy, buf: dict[str, Any]) -> None:
    """Fold the rollout's observations of the alive agents into the policy's running statistics
    (``cfg.obs_norm``; after the update, so that the update saw the statistics the rollout used)."""
    for g, norm in policy.obs_norm.items():
        gb = buf["groups"][g]
        norm.update(policy.flat_obs(g, gb["obs"]), gb["alive"])


# ====================================================================== learner
@dataclass
class Learner:
    """One PPO learner on one env: networks, statistics, rollout buffer and current observations.

    ``train_ppo`` drives one; the transfer methods (``algos/transfer.py``) drive a master's and
    slaves' side by side. ``state()`` / ``load()`` carry everything a checkpoint needs of it
    (the optimiser and the sampling generator belong to the loop that drives it).
    """

    cfg: Config
    env: Any
    policy: Policy
    critics: nn.ModuleDict
    vnorm: dict[str, RunningMeanStd]
    scalers: dict[str, ReturnScaler] | None
    buf: dict[str, Any]
    centralised: bool
    cur: dict[str, Any] | None = None

    def start(self) -> None:
        """Reset the env and take its first observations (a fresh run)."""
        obs = self.env.reset()
        self.cur = {"obs": obs, "state": self.env.state(), "alive": self.env.alive()}
        if self.policy.recurrent:
            self.cur["hidden"] = self.policy.initial_hidden(self.env.num_envs, self.env.device)
            self.cur["critic_hidden"] = self.policy.initial_hidden(self.env.num_envs, self.env.device)

    @torch.no_grad()
    def critic_step(self, obs: dict[str, Tensor], state: Tensor, hidden: dict[str, Tensor]) -> dict[str, Tensor]:
        """Recurrent critics: each group's state ``(B, N, H)`` after one step on the critic input of ``obs``, ``state``."""
        return {g: self.critics[g].step(critic_input(self.policy, g, obs[g], state, self.cfg, self.centralised), h)[1] for g, h in hidden.items()}

    def collect(self, generator: torch.Generator) -> tuple[dict[str, float], dict[str, dict[str, Tensor]]]:
        """One rollout (``collect``) and its prepared samples (``prepare_batch``): ``(episode stats, data)``."""
        self.cur, stats = collect(self.env, self.policy, self.buf, self.cur, generator, self.critic_step)
        return stats, prepare_batch(self.cfg, self.policy, self.critics, self.vnorm, self.buf, self.centralised, self.scalers)

    def params(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """``(actor parameters, critic parameters)``."""
        return list(self.policy.parameters()), list(self.critics.parameters())

    def state(self) -> dict[str, Any]:
        out = {
            "policy": self.policy.policy_state(),
            "critics": self.critics.state_dict(),
            "vnorm": {g: v.state_dict() for g, v in self.vnorm.items()},
            "env": env_snapshot(self.env),
            "cur": self.cur,
        }
        if self.scalers:
            out["scalers"] = {g: v.state_dict() for g, v in self.scalers.items()}
        return out

    def load(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"]["weights"])
        self.critics.load_state_dict(state["critics"])
        for g, v in state["vnorm"].items():
            self.vnorm[g].load_state_dict(v)
        for g, v in state.get("scalers", {}).items():
            self.scalers[g].load_state_dict(v)  # type: ignore[index]
        env_restore(self.env, state["env"])
        self.cur = tree_to_device(state["cur"], self.env.device)


def build_learner(cfg: Config, env: Any, centralised: bool, policy: Policy | None = None) -> Learner:
    """A fresh ``Learner`` on ``env`` (``policy`` given: use it instead of a new one)."""
    spec: EnvSpec = env.spec
    if centralised and not spec.has_state:
        raise ValueError(f"mappo needs a global state, but {spec.name!r} has state_shape {spec.state_shape}")
    device = env.device
    policy = Policy(group_layout(spec), cfg).to(device) if policy is None else policy
    critics = build_critics(policy, spec, cfg, centralised).to(device)
    vnorm = {g: RunningMeanStd(device) for g in spec.groups}
    scalers = {g: ReturnScaler(cfg.gamma, cfg.reward_clip, device) for g in spec.groups} if cfg.reward_scale else None
    if policy.recurrent != cfg.recurrent:
        raise ValueError(f"the policy's recurrent width {policy.recurrent} differs from the config's recurrent={cfg.recurrent}")
    buf = allocate_rollout(spec, cfg.rollout_steps, env.num_envs, device, cfg.recurrent)
    return Learner(cfg, env, policy, critics, vnorm, scalers, buf, centralised)


def make_adam(cfg: Config, actor_params: list[nn.Parameter], critic_params: list[nn.Parameter]) -> torch.optim.Adam:
    """Adam with two parameter groups, actors at ``cfg.lr`` and critics at ``cfg.critic_lr``."""
    return torch.optim.Adam(
        [{"params": actor_params, "lr": cfg.lr}, {"params": critic_params, "lr": cfg.critic_lr}],
        eps=cfg.adam_eps,
        fused=True,  # one fused kernel per step: the default single-tensor loop costs ~15% of an update
    )
