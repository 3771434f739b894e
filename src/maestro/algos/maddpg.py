"""MADDPG, with policy inference and policy ensembles; DDPG with local critics as the baseline.

Lowe, Wu, Tamar, Harb, Abbeel, Mordatch 2017, "Multi-Agent Actor-Critic for Mixed
Cooperative-Competitive Environments" (arXiv 1706.02275), as used by Zhou & Chen, "Distributed
MADDPG" (``papers/002``, Sec. 2 and Appendix Algorithm 1):

* every agent ``i`` has a deterministic actor ``mu_i(o_i)`` on its own observation and a
  centralised critic ``Q_i(x, a_1..a_N)`` on the observations and actions of all agents, of every
  group (Lowe Eq. 5-6). The critic regresses ``y = r_i + gamma (1 - terminated) Q'_i(x', a'_1..a'_N)``
  with ``a'_j = mu'_j(o'_j)`` from target networks, updated softly ``theta' <- tau theta + (1 - tau) theta'``;
  the actor ascends ``Q_i(x, a_1.., mu_i(o_i), ..a_N)`` with the other actions from the buffer.
* discrete actions: the actor's outputs are logits; it acts by sampling them (Gumbel-max), is
  differentiated through a straight-through Gumbel-softmax sample (``maestro.nn.gumbel``; Lowe Sec. 4),
  and its pre-activation outputs are penalised by ``actor_reg * mean(logits^2)`` (the original code,
  ``openai/maddpg``: ``p_reg = mean(square(p))``, weight 1e-3). Continuous actions: ``sigmoid``
  (or ``tanh``) of the outputs mapped onto the env's Box, so every action is inside the Box (maestro
  never clips); exploration adds Gaussian noise (``noise_rate`` x half the Box width, then clamped into
  the Box) and, with probability ``epsilon``, a uniform random action (the PyTorch MADDPG whose
  hyperparameters ``papers/002`` uses).
* gradients are clipped by norm per agent (``max_grad_norm``; 0.5 in ``openai/maddpg``).
* **policy inference** (Lowe Sec. 4.2, Eq. 7): agent ``i`` learns ``hat-mu_i^j`` of every other agent
  ``j`` by maximising the log-likelihood of ``j``'s stored actions plus ``inference_entropy`` times the
  entropy, and uses ``hat-mu_i^j(o'_j)`` instead of ``mu'_j(o'_j)`` in its critic target. Discrete:
  a categorical over logits (the target takes a one-hot sample); continuous: a Gaussian whose mean is
  mapped onto the Box (the target takes the mean).
* **policy ensembles** (Lowe Sec. 4.3, Eq. 8-9): ``K`` sub-policies per agent, each with its own
  critic; every env copy draws one sub-policy per agent at the start of each episode, and each
  sub-policy ``(i, k)`` learns from its own buffer ``D_i^(k)``: the transitions in which agent ``i``
  acted with ``k`` (``ReplayBuffer`` partitions, ``maestro.core.replay``). A critic target uses each
  other agent's sub-policy that acted in the sampled transition.
* **DDPG** (``ddpg``, Lillicrap et al. 2016, arXiv 1509.02971; Lowe's baseline): the same learner
  with each critic on the agent's own observation and action only.
* **frozen opponents**: ``frozen: {group: path}`` drives a group with a policy loaded from a run
  directory or a checkpoint (e.g. a pre-trained prey); its agents appear in the critics' inputs but are
  not trained. Loading checks the group's observation and action spaces against the env.

Batching: the networks of all agents (and sub-policies) of a group are one ``StackedMLP`` whose
weights are ``(M, in, out)`` and whose forward is one ``baddbmm`` per layer, so an update runs every
agent's minibatch at once; the critics of all learners are one stack. Observations and actions of
the groups are zero-padded to common widths (``obs_max``, ``act_max``) so a transition is one row
``(A, obs_max)`` in the buffer; padded inputs are zeros and leave the networks' functions unchanged.

The module reads top to bottom: ``Config`` -> networks (``StackedMLP``) and pure maths (critic
target, soft update, per-agent clipping) -> ``Policy`` (acts, saves, loads) -> frozen opponents ->
``collect`` (one env step of all copies into the buffer) -> ``update`` (one gradient step of every
critic, actor and inference net) -> ``train`` (the loop with the run). Shapes: ``B`` env copies,
``A`` agents over all groups, ``L`` learners (trained agents x ``K``), ``S`` minibatch size.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maestro.core.checkpoint import load_policy, newest_checkpoint, read_policy_state, save_policy, tree_to_device
from maestro.core.episodes import EpisodeStats
from maestro.core.replay import ReplayBuffer
from maestro.core.run import Run, env_restore, env_snapshot
from maestro.core.schedules import linear, off_policy_updates, set_learning_rates
from maestro.core.seeding import make_generator
from maestro.nn.gumbel import gumbel_softmax, one_hot_sample
from maestro.nn.heads import categorical_entropy, gaussian_entropy, gaussian_log_prob
from maestro.nn.target import soft_update
from maestro.registry import Smoke, register_algo
from maestro.spec import EnvSpec, GroupLayout, group_layout, layouts_from_dicts, layouts_to_dicts

CAPABILITIES = frozenset({"discrete", "continuous", "multi_group", "off_policy"})


# ====================================================================== config
@dataclass(frozen=True)
class Config:
    """MADDPG hyperparameters. Defaults are the original code's (``openai/maddpg``, Lowe et al. 2017,
    arXiv 1706.02275, Appendix: "Adam, learning rate 0.01, tau 0.01, gamma 0.95, replay buffer 10^6,
    batch 1024, two hidden layers of 64 units, updates every 100 samples")."""

    hidden: tuple[int, ...] = (64, 64)
    """Hidden widths of actors, critics and inference nets (ReLU)."""
    actor_lr: float = 1e-2
    """Adam learning rate of the actors."""
    critic_lr: float = 1e-2
    """Adam learning rate of the critics."""
    gamma: float = 0.95
    """Discount factor."""
    tau: float = 0.01
    """Soft target update rate: ``theta' <- tau theta + (1 - tau) theta'`` after every gradient update."""
    buffer_size: int = 1_000_000
    """Replay capacity in transitions (one transition = one env step of one copy, all agents)."""
    batch_size: int = 1024
    """Minibatch size ``S`` of every learner (each agent / sub-policy samples its own)."""
    warmup_steps: int = 25_600
    """Transitions stored before the first update (``openai/maddpg``: batch 1024 x 25 steps)."""
    update_every: int = 100
    """Env steps (summed over copies) between update rounds."""
    updates_per_step: float = 0.01
    """Gradient updates per env step: a round makes ``update_every * updates_per_step`` updates
    (fractions carry over). ``openai/maddpg``: one update every 100 steps (0.01)."""
    max_grad_norm: float = 0.5
    """Gradient norm clip, per agent and network (0 disables; ``openai/maddpg``: 0.5)."""
    actor_reg: float = 1e-3
    """Weight of the mean squared pre-activation actor outputs in the actor loss (``openai/maddpg``: 1e-3)."""
    gumbel_temperature: float = 1.0
    """Temperature of the straight-through Gumbel-softmax of discrete actors."""
    continuous_head: Literal["sigmoid", "tanh"] = "sigmoid"
    """Squashing of continuous actor outputs onto the Box: ``low + (high - low) * sigmoid(x)`` or ``(tanh(x) + 1) / 2``."""
    epsilon: float = 0.0
    """Probability of a uniformly random action per agent and step during training (``papers/002``: 0.1)."""
    noise_rate: float = 0.0
    """Std of the Gaussian exploration noise on continuous actions, in units of half the Box width (``papers/002``: 0.1)."""
    policy_inference: bool = False
    """Lowe Sec. 4.2: each agent learns approximations of the others' policies and uses them in its critic target."""
    inference_lr: float = 1e-2
    """Adam learning rate of the policy-inference networks."""
    lr_end_factor: float = 1.0
    """Every learning rate at the end of the budget as a fraction of its initial value, reached
    linearly over the run's env steps (1: constant, as ``openai/maddpg``). The distributed modes anneal
    every worker's optimisers the same way, on the env steps of all workers."""
    inference_entropy: float = 1e-3
    """Weight ``lambda`` of the entropy regulariser of the policy-inference likelihood (Lowe Eq. 7)."""
    ensemble_size: int = 1
    """``K`` sub-policies per agent (Lowe Sec. 4.3); one is drawn per episode, env copy and agent."""
    frozen: dict[str, str] = field(default_factory=dict)
    """Groups driven by a frozen pre-trained policy: ``{group: run directory or checkpoint file}``."""
    iteration_steps: int = 0
    """Vectorised env steps per logged iteration (0: one episode length, ``spec.max_steps``)."""
    checkpoint_replay: bool = True
    """Save the replay buffer in checkpoints (a resumed run then continues exactly; costs disk)."""

    SMOKE: ClassVar[Smoke] = Smoke(
        config={"hidden": (16,), "buffer_size": 512, "batch_size": 8, "warmup_steps": 8, "update_every": 4, "updates_per_step": 0.25, "iteration_steps": 3}
    )
    """``check_algo``'s settings: with 4 copies, updates start at the second env step (one per step)."""

    def __post_init__(self) -> None:
        for name in ("buffer_size", "batch_size", "update_every", "ensemble_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "iteration_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 < self.tau <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1] and tau in (0, 1], got {self.gamma}, {self.tau}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1], got {self.epsilon}")
        for name in ("actor_lr", "critic_lr", "inference_lr", "gumbel_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.lr_end_factor <= 1.0:
            raise ValueError(f"lr_end_factor must lie in [0, 1], got {self.lr_end_factor}")
        for name in ("updates_per_step", "max_grad_norm", "actor_reg", "noise_rate", "inference_entropy"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


# ====================================================================== networks and pure maths
class StackedMLP(nn.Module):
    """``M`` independent MLPs evaluated at once: ``(M, S, in) -> (M, S, out)``, one ``baddbmm`` per layer.

    Weights are ``(M, in, out)`` and biases ``(M, 1, out)``, initialised like ``nn.Linear``
    (uniform in ``+-1/sqrt(fan_in)``); Adam on the stack equals one Adam per member. ``index``
    (``(M',)`` long) evaluates members ``index`` on an input ``(M', S, in)``; ``detach`` uses the
    weights without recording their gradient (the critic inside an actor loss).
    """

    def __init__(self, members: int, in_dim: int, hidden: tuple[int, ...], out_dim: int) -> None:
        super().__init__()
        dims = [in_dim, *hidden, out_dim]
        self.members, self.in_dim, self.out_dim = members, in_dim, out_dim
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, o in zip(dims[:-1], dims[1:]):
            bound = 1.0 / math.sqrt(i)
            self.weights.append(nn.Parameter(torch.empty(members, i, o).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(members, 1, o).uniform_(-bound, bound)))

    def forward(self, x: Tensor, index: Tensor | None = None, detach: bool = False) -> Tensor:
        """``(M or len(index), S, in) -> (M or len(index), S, out)``."""
        m = self.members if index is None else index.shape[0]
        if x.dim() != 3 or x.shape[0] != m or x.shape[2] != self.in_dim:
            raise ValueError(f"StackedMLP input has shape {tuple(x.shape)}, expected ({m}, S, {self.in_dim})")
        last = len(self.weights) - 1
        for li, (w, b) in enumerate(zip(self.weights, self.biases)):
            if index is not None:
                w, b = w[index], b[index]
            if detach:
                w, b = w.detach(), b.detach()
            x = torch.baddbmm(b, x, w)
            if li < last:
                x = x.relu_()  # in place: baddbmm's backward does not need its output
        return x


def critic_target(reward: Tensor, terminated: Tensor, next_q: Tensor, gamma: float) -> Tensor:
    """TD target ``y = r + gamma * (1 - terminated) * Q'(x', a')`` (Lowe Eq. 6), any matching shapes.

    Truncated episodes bootstrap (only ``terminated`` cuts the return); ``next_q`` comes from the
    final observation of the step (``StepOut.final_obs``), not from the reset one.
    """
    return reward + gamma * (1.0 - terminated.to(reward.dtype)) * next_q


def clip_grad_norm_per_member(params: list[Tensor], max_norm: float) -> Tensor:
    """Clip gradients by norm separately for each member (leading axis ``M`` of every tensor).

    Equivalent to ``nn.utils.clip_grad_norm_`` on each agent's own network; returns the norms ``(M,)``
    before clipping.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(0)
    norm = torch.stack([g.reshape(g.shape[0], -1).pow(2).sum(1) for g in grads]).sum(0).sqrt()
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    torch._foreach_mul_(grads, [scale.view(-1, *([1] * (g.dim() - 1))) for g in grads])
    return norm


def squash_to_box(x: Tensor, low: Tensor, high: Tensor, head: str) -> Tensor:
    """Unbounded outputs ``(..., d)`` -> actions inside ``[low, high]`` (``sigmoid`` or ``tanh`` head)."""
    unit = torch.sigmoid(x) if head == "sigmoid" else 0.5 * (torch.tanh(x) + 1.0)
    return low + (high - low) * unit


# ====================================================================== layout
@dataclass(frozen=True)
class AgentLayout:
    """Where every agent and learner sits in the padded, flattened tensors (derived from the spec).

    ``A`` agents in group order; group ``g`` owns agents ``[offset[g], offset[g] + n_agents)``.
    Learners (trained agents x ``K`` sub-policies) are ordered group by group, then sub-policy,
    then agent, which is the member order of each group's actor stack.
    """

    groups: dict[str, GroupLayout]
    trained: tuple[str, ...]
    K: int
    offset: dict[str, int]
    n_agents: int
    obs_max: int
    act_max: int
    learner_agent: tuple[int, ...]
    learner_k: tuple[int, ...]
    learner_trained_index: tuple[int, ...]
    """Index of each learner's agent among the trained agents (rows of the inference stacks)."""

    @property
    def n_learners(self) -> int:
        return len(self.learner_agent)

    @property
    def n_trained_agents(self) -> int:
        return sum(self.groups[g].n_agents for g in self.trained)

    def learner_block(self, g: str) -> tuple[int, int]:
        """Learners ``[start, stop)`` of trained group ``g``."""
        start = 0
        for h in self.trained:
            n = self.K * self.groups[h].n_agents
            if h == g:
                return start, start + n
            start += n
        raise KeyError(g)


def make_layout(groups: dict[str, GroupLayout], trained: list[str], K: int) -> AgentLayout:
    """The ``AgentLayout`` of ``groups`` (``maestro.spec.group_layout``) with ``trained`` groups and ``K`` sub-policies."""
    offset, a = {}, 0
    for g, info in groups.items():
        offset[g] = a
        a += info.n_agents
    la, lk, lt = [], [], []
    t0 = 0
    for g in trained:
        n = groups[g].n_agents
        for k in range(K):
            for i in range(n):
                la.append(offset[g] + i)
                lk.append(k)
                lt.append(t0 + i)
        t0 += n
    return AgentLayout(
        groups=groups,
        trained=tuple(trained),
        K=K,
        offset=offset,
        n_agents=a,
        obs_max=max(info.obs_dim for info in groups.values()),
        act_max=max(info.action_dim for info in groups.values()),
        learner_agent=tuple(la),
        learner_k=tuple(lk),
        learner_trained_index=tuple(lt),
    )


def pad_last(x: Tensor, width: int) -> Tensor:
    """Zero-pad the last axis of ``x`` to ``width``."""
    return x if x.shape[-1] == width else F.pad(x, (0, width - x.shape[-1]))


# ====================================================================== policy
class Policy(nn.Module):
    """Decentralised MADDPG actors (``K`` sub-policies per agent) plus any frozen group policies.

    ``act(obs, state, hidden)`` maps per-group observations ``(B, N_g, *obs_shape)`` to env actions
    (``(B, N_g)`` int64 or ``(B, N_g, d)`` inside the Box). ``hidden`` carries the sub-policy each
    agent of each copy executes (``{"sub": {g: (B, N_g)}, "frozen": {g: hidden of that policy}}``);
    ``None`` draws them (one draw per episode: evaluation starts every episode with ``None``).
    Discrete actors sample their logits (argmax when ``deterministic``); continuous actors are
    deterministic (exploration noise belongs to training, see ``explore``).
    """

    def __init__(self, layout: dict[str, GroupLayout], arch: dict[str, Any], frozen: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.layout = layout = layouts_from_dicts(layout)
        self.arch = dict(arch)
        self.frozen_policies: dict[str, Any] = dict(frozen or {})  # not submodules: never trained, saved separately
        self.trained = [g for g in layout if g not in self.frozen_policies]
        K, hidden = int(arch["ensemble_size"]), tuple(arch["hidden"])
        self.actors = nn.ModuleDict()
        for g in self.trained:
            info = layout[g]
            self.actors[g] = StackedMLP(K * info.n_agents, info.obs_dim, hidden, info.action_dim)
            if not info.discrete:
                low, high = torch.tensor(info.low), torch.tensor(info.high)
                if not (torch.isfinite(low).all() and torch.isfinite(high).all()):
                    raise ValueError(f"maddpg needs a bounded Box for group {g!r}, got low {info.low} high {info.high}")
                self.register_buffer(f"low_{g}", low)
                self.register_buffer(f"high_{g}", high)

    @property
    def K(self) -> int:
        return int(self.arch["ensemble_size"])

    # ---------------------------------------------------------------- forward pieces
    def flat_obs(self, g: str, obs: Tensor) -> Tensor:
        """``(..., N, *obs_shape)`` -> ``(..., N, obs_dim)``, checking the shape."""
        info = self.layout[g]
        shape = tuple(info.obs_shape)
        k = obs.dim() - len(shape)
        if k < 1 or tuple(obs.shape[k:]) != shape or obs.shape[k - 1] != info.n_agents:
            raise ValueError(f"observations of group {g!r} have shape {tuple(obs.shape)}, expected (..., {info.n_agents}, {', '.join(map(str, shape))})")
        return obs.reshape(*obs.shape[:k], info.obs_dim)

    def preact_all(self, g: str, obs: Tensor, actors: nn.ModuleDict | None = None) -> Tensor:
        """Outputs of all ``K`` sub-policies of every agent of ``g``: obs ``(M, N, obs_dim)`` -> ``(K, N, M, act_dim)``."""
        net = (actors or self.actors)[g]
        M, N, D = obs.shape
        x = obs.permute(1, 0, 2).unsqueeze(0).expand(self.K, N, M, D).reshape(self.K * N, M, D)
        return net(x).reshape(self.K, N, M, -1)

    def preact(self, g: str, obs: Tensor, sub: Tensor | None, actors: nn.ModuleDict | None = None) -> Tensor:
        """Outputs of the sub-policies ``sub`` ``(M, N)``: obs ``(M, N, obs_dim)`` -> ``(M, N, act_dim)``."""
        out = self.preact_all(g, obs, actors)  # (K, N, M, d)
        if self.K == 1 or sub is None:
            return out[0].permute(1, 0, 2)
        idx = sub.t()[None, :, :, None].expand(1, *out.shape[1:])  # (1, N, M, d)
        return out.gather(0, idx)[0].permute(1, 0, 2)

    def box(self, g: str, x: Tensor) -> Tensor:
        """Continuous outputs -> actions in group ``g``'s Box."""
        return squash_to_box(x, getattr(self, f"low_{g}"), getattr(self, f"high_{g}"), self.arch["continuous_head"])

    def draw_sub(self, B: int, generator: torch.Generator | None, device: torch.device) -> dict[str, Tensor]:
        """Uniform sub-policy indices per trained group ``(B, N_g)``."""
        return {g: torch.randint(0, self.K, (B, self.layout[g].n_agents), generator=generator, device=device) for g in self.trained}

    def reset_hidden(self, hidden: dict[str, Any], done: Tensor, generator: torch.Generator | None) -> dict[str, Any]:
        """Redraw the sub-policies of the copies where ``done`` ``(B,)`` (a new episode), recursively for frozen ensembles."""
        sub = hidden["sub"]
        if self.K > 1:
            fresh = self.draw_sub(done.shape[0], generator, done.device)
            sub = {g: torch.where(done[:, None], fresh[g], s) for g, s in sub.items()}
        frozen = {}
        for g, h in hidden["frozen"].items():
            p = self.frozen_policies[g]
            frozen[g] = p.reset_hidden(h, done, generator) if (h is not None and hasattr(p, "reset_hidden")) else h
        return {"sub": sub, "frozen": frozen}

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
        """Env-ready actions for every group and the new ``hidden`` (see the class docstring).

        Args:
            obs: per group ``(B, N_g, *obs_shape)``.
            state: global state (passed to frozen policies only).
            hidden: ``None`` at the start of episodes, else what the previous call returned.
            action_mask: unused (MADDPG does not support masks; part of the common interface).
            deterministic: argmax of discrete actors (and frozen policies' modes).
            generator: torch generator for sampling.
            alive: per group ``(B, N_g)`` bool; passed on to frozen policies (MADDPG's own actors
                act for every agent; the env ignores absent agents' actions).
        """
        B = next(iter(obs.values())).shape[0]
        dev = next(iter(obs.values())).device
        if hidden is None:
            hidden = {"sub": self.draw_sub(B, generator, dev), "frozen": {g: None for g in self.frozen_policies}}
        acts: dict[str, Tensor] = {}
        for g in self.trained:
            x = self.preact(g, self.flat_obs(g, obs[g]), hidden["sub"][g])
            if self.layout[g].discrete:
                acts[g] = one_hot_sample(x, generator, deterministic).argmax(-1)
            else:
                acts[g] = self.box(g, x)
        new_frozen = {}
        for g, p in self.frozen_policies.items():
            a, new_frozen[g] = p.act(obs, state, hidden["frozen"].get(g), action_mask=action_mask, deterministic=deterministic, generator=generator, alive=alive)
            acts[g] = a[g]
        return acts, {"sub": hidden["sub"], "frozen": new_frozen}

    def to(self, *args: Any, **kwargs: Any) -> "Policy":  # frozen policies move with the policy
        super().to(*args, **kwargs)
        for p in self.frozen_policies.values():
            p.to(*args, **kwargs)
        return self

    def policy_state(self) -> dict[str, Any]:
        """Everything needed to rebuild this policy (frozen group policies nested as their own states)."""
        arch = dict(self.arch)
        arch["hidden"] = list(arch["hidden"])
        return {
            "class": "maestro.algos.maddpg:Policy",
            "layout": layouts_to_dicts(self.layout),
            "arch": arch,
            "weights": self.state_dict(),
            "frozen": {g: p.policy_state() for g, p in self.frozen_policies.items()},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], device: str | torch.device = "cpu") -> "Policy":
        """Rebuild a policy from ``policy_state()``."""
        frozen = {g: load_policy(s, str(device)) for g, s in state.get("frozen", {}).items()}
        policy = cls(state["layout"], state["arch"], frozen)
        policy.load_state_dict(state["weights"])
        return policy.to(device)

    def save(self, path: str | Path) -> Path:
        """Write the policy alone (atomically) to ``path``."""
        return save_policy(self, path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "Policy":
        """Load a policy written by ``save`` (or the policy inside a training checkpoint)."""
        return cls.from_state(read_policy_state(path, device), device)


# ====================================================================== frozen opponents
def load_frozen_policy(path: str | Path, device: str | torch.device = "cpu") -> Any:
    """The policy of a checkpoint file, or of the newest valid checkpoint of a run directory (or below it)."""
    p = Path(path)
    state = read_policy_state(p, device) if p.is_file() else newest_checkpoint(p, device, "frozen policy")["state"]["policy"]
    return load_policy(state, str(device))


def check_frozen_policy(policy: Any, group: str, env_info: GroupLayout, env_name: str, source: str) -> None:
    """Raise a ``ValueError`` naming both shapes if ``policy`` cannot act for ``group`` of the env."""
    layout = getattr(policy, "layout", None)
    if not isinstance(layout, dict) or group not in layout:
        have = list(layout) if isinstance(layout, dict) else "none"
        raise ValueError(f"frozen policy for group {group!r} from {source}: the checkpoint has no group {group!r} (its groups: {have})")
    ck = layout[group]
    same = (
        list(ck.obs_shape) == list(env_info.obs_shape)
        and ck.n_agents == env_info.n_agents
        and bool(ck.discrete) == bool(env_info.discrete)
        and ck.action_dim == env_info.action_dim
        and (ck.discrete or (list(ck.low) == list(env_info.low) and list(ck.high) == list(env_info.high)))
    )
    if not same:
        raise ValueError(
            f"frozen policy for group {group!r} from {source} does not fit env {env_name!r}: the checkpoint's group has "
            f"{ck.n_agents} agents, observation shape {tuple(ck.obs_shape)} and action space {ck.space_text()}; "
            f"the env's group has {env_info.n_agents} agents, observation shape {tuple(env_info.obs_shape)} "
            f"and action space {env_info.space_text()}"
        )


# ====================================================================== trainer state
class Nets(nn.Module):
    """Everything trained besides the actors: critics, target networks, inference nets."""

    def __init__(self, policy: Policy, lay: AgentLayout, cfg: Config, centralised: bool) -> None:
        super().__init__()
        hidden = tuple(cfg.hidden)
        A, L = lay.n_agents, lay.n_learners
        critic_in = A * (lay.obs_max + lay.act_max) if centralised else lay.obs_max + lay.act_max
        self.critic = StackedMLP(L, critic_in, hidden, 1)
        self.target_critic = copy.deepcopy(self.critic)
        self.target_actors = copy.deepcopy(policy.actors)
        for p in list(self.target_critic.parameters()) + list(self.target_actors.parameters()):
            p.requires_grad_(False)
        self.infer = nn.ModuleDict()
        self.infer_log_std = nn.ParameterDict()
        if cfg.policy_inference:
            T = lay.n_trained_agents
            for g, info in lay.groups.items():
                self.infer[g] = StackedMLP(T * info.n_agents, info.obs_dim, hidden, info.action_dim)
                if not info.discrete:
                    self.infer_log_std[g] = nn.Parameter(torch.zeros(T * info.n_agents, info.action_dim))


def replay_fields(lay: AgentLayout) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """The replay buffer's fields (shape of one transition, dtype): padded observations and critic
    actions of all ``A`` agents, rewards, the termination flag and each agent's sub-policy index."""
    A = lay.n_agents
    return {
        "obs": ((A, lay.obs_max), torch.float32),
        "next_obs": ((A, lay.obs_max), torch.float32),
        "act": ((A, lay.act_max), torch.float32),
        "reward": ((A,), torch.float32),
        "terminated": ((), torch.float32),
        "sub": ((A,), torch.int8),
    }


# ====================================================================== collect
def padded_obs(policy: Policy, lay: AgentLayout, obs: dict[str, Tensor]) -> Tensor:
    """Per-group observations -> ``(B, A, obs_max)`` (flattened, zero-padded, group order)."""
    return torch.cat([pad_last(policy.flat_obs(g, obs[g]), lay.obs_max) for g in lay.groups], 1)


def critic_action(lay: AgentLayout, g: str, a: Tensor) -> Tensor:
    """Env actions of group ``g`` -> the critics' representation ``(..., N_g, act_max)`` (one-hot if discrete)."""
    info = lay.groups[g]
    x = F.one_hot(a.long(), info.action_dim).float() if info.discrete else a.float()
    return pad_last(x, lay.act_max)


@torch.no_grad()
def explore(policy: Policy, lay: AgentLayout, cfg: Config, obs: dict[str, Tensor], state: Tensor, hidden: dict[str, Any], generator: torch.Generator) -> tuple[dict[str, Tensor], Tensor, dict[str, Any]]:
    """Exploratory env actions of every group, their critic representation ``(B, A, act_max)`` and the new hidden.

    Trained discrete groups sample their logits; continuous ones add ``noise_rate`` Gaussian noise
    (clamped into the Box); with probability ``epsilon`` an agent takes a uniform random action.
    Frozen groups act with their policy's own sampling.
    """
    acts, hidden = policy.act(obs, state, hidden, generator=generator)
    for g in policy.trained:
        info = lay.groups[g]
        a = acts[g]
        B, N = a.shape[0], info.n_agents
        if info.discrete:
            if cfg.epsilon > 0:
                rand = torch.randint(0, info.action_dim, (B, N), generator=generator, device=a.device)
                a = torch.where(torch.rand(B, N, generator=generator, device=a.device) < cfg.epsilon, rand, a)
        else:
            low, high = getattr(policy, f"low_{g}"), getattr(policy, f"high_{g}")
            if cfg.noise_rate > 0:
                a = a + cfg.noise_rate * 0.5 * (high - low) * torch.randn(a.shape, generator=generator, device=a.device)
                a = torch.minimum(torch.maximum(a, low), high)
            if cfg.epsilon > 0:
                rand = low + (high - low) * torch.rand(a.shape, generator=generator, device=a.device)
                a = torch.where(torch.rand(B, N, 1, generator=generator, device=a.device) < cfg.epsilon, rand, a)
        acts[g] = a
    crit = torch.cat([critic_action(lay, g, acts[g]) for g in lay.groups], 1)
    return acts, crit, hidden


def _sub_tensor(lay: AgentLayout, hidden: dict[str, Any], B: int, device: torch.device) -> Tensor:
    """Sub-policy index of every agent ``(B, A)`` int8 (0 for frozen agents)."""
    parts = [hidden["sub"][g] if g in hidden["sub"] else torch.zeros(B, lay.groups[g].n_agents, dtype=torch.long, device=device) for g in lay.groups]
    return torch.cat(parts, 1).to(torch.int8)


# ====================================================================== update
def learner_batch(buf: ReplayBuffer, lay: AgentLayout, S: int, generator: torch.Generator) -> dict[str, Tensor]:
    """A minibatch per learner: every field ``(L, S, ...)``; learner ``(i, k)`` samples ``D_i^(k)`` when ``K > 1``."""
    L = lay.n_learners
    if lay.K == 1:
        idx = buf.sample_index((L, S), generator)
    else:
        part = buf.sample_partitioned(S, generator)  # (A, K, S)
        la = torch.tensor(lay.learner_agent, device=part.device)
        lk = torch.tensor(lay.learner_k, device=part.device)
        idx = part[la, lk]
    return buf.gather(idx)


def target_actions(policy: Policy, nets: Nets, lay: AgentLayout, next_obs: Tensor, sub: Tensor, generator: torch.Generator) -> Tensor:
    """``a'_j = mu'_j(o'_j)`` of every agent on every learner's batch: ``(L, S, A, act_max)``.

    Trained groups use their target actors with the sub-policy that acted in the transition
    (one-hot samples of discrete logits, Box actions otherwise); frozen groups their own policy.
    """
    L, S, A, _ = next_obs.shape
    out = []
    for g, info in lay.groups.items():
        o, N, D = lay.offset[g], info.n_agents, info.obs_dim
        x = next_obs[:, :, o : o + N, :D].reshape(L * S, N, D)
        if g in nets.target_actors:
            z = policy.preact(g, x, sub[:, :, o : o + N].reshape(L * S, N).long(), nets.target_actors)
            a = one_hot_sample(z, generator) if info.discrete else policy.box(g, z)
        else:
            fp = policy.frozen_policies[g]
            obs_all = {h: next_obs[:, :, lay.offset[h] : lay.offset[h] + hi.n_agents, : hi.obs_dim].reshape(L * S, hi.n_agents, *hi.obs_shape) for h, hi in lay.groups.items()}
            a, _ = fp.act(obs_all, None, None, generator=generator)
            a = critic_action(lay, g, a[g])[..., : info.action_dim]
        out.append(pad_last(a, lay.act_max).reshape(L, S, N, lay.act_max))
    return torch.cat(out, 2)


def inferred_actions(policy: Policy, nets: Nets, lay: AgentLayout, next_obs: Tensor, generator: torch.Generator) -> Tensor:
    """``hat-mu_i^j(o'_j)`` of every agent ``j`` as approximated by each learner's agent ``i``: ``(L, S, A, act_max)``."""
    L, S = next_obs.shape[:2]
    lt = torch.tensor(lay.learner_trained_index, device=next_obs.device)
    out = []
    for g, info in lay.groups.items():
        o, N, D = lay.offset[g], info.n_agents, info.obs_dim
        members = (lt[:, None] * N + torch.arange(N, device=lt.device)).reshape(-1)  # (L * N,)
        x = next_obs[:, :, o : o + N, :D].permute(0, 2, 1, 3).reshape(L * N, S, D)
        z = nets.infer[g](x, index=members).reshape(L, N, S, -1).permute(0, 2, 1, 3)
        if info.discrete:
            a = one_hot_sample(z, generator)
        else:
            a = policy.box(g, z)
        out.append(pad_last(a, lay.act_max))
    return torch.cat(out, 2)


def inference_loss(net: StackedMLP, log_std: Tensor | None, members: Tensor, obs: Tensor, actions: Tensor, weight: Tensor, entropy_coef: float, box: Any = None) -> Tensor:
    """Negative regularised log-likelihood of observed actions under approximate policies (Lowe Eq. 7).

    ``L = -sum_m weight_m * mean_s [ log hat-pi_m(a | o) + lambda * H(hat-pi_m(. | o)) ]``.

    Args:
        net: the stack of approximate policies; ``members`` ``(M,)`` selects the nets evaluated.
        log_std: ``(stack, d)`` log std of continuous approximations (``None``: discrete).
        obs: ``(M, S, obs_dim)`` observations of the approximated agents.
        actions: ``(M, S, n)`` one-hot (discrete) or ``(M, S, d)`` Box actions they took.
        weight: ``(M,)`` weights (0 for an agent approximating itself).
        entropy_coef: ``lambda``.
        box: maps continuous outputs onto the Box (the mean of the Gaussian).
    """
    z = net(obs, index=members)
    if log_std is None:
        logp = (torch.log_softmax(z, -1) * actions).sum(-1)
        ent = categorical_entropy(z)
    else:
        ls = log_std[members].clamp(-5.0, 2.0)[:, None, :].expand_as(z)
        mean = box(z)
        logp = gaussian_log_prob(mean, ls, actions)
        ent = gaussian_entropy(ls, z.shape[:-1])
    return -((logp + entropy_coef * ent).mean(1) * weight).sum()


def critic_input(obs: Tensor, act: Tensor, la: Tensor, ar: Tensor, centralised: bool) -> Tensor:
    """Critic input of every learner ``(L, S, in)``: all observations and actions (MADDPG) or the
    learner's own (DDPG's local critics). ``obs`` ``(L, S, A, obs_max)``, ``act`` ``(L, S, A, act_max)``."""
    L, S = obs.shape[:2]
    if centralised:
        return torch.cat([obs.reshape(L, S, -1), act.reshape(L, S, -1)], -1)
    return torch.cat([obs[ar, :, la], act[ar, :, la]], -1)


def td_loss(critic: nn.Module, target_critic: nn.Module, d: dict[str, Tensor], a_next: Tensor, la: Tensor, ar: Tensor, centralised: bool, gamma: float) -> tuple[Tensor, Tensor]:
    """``sum_i mean_s (Q_i(x, a) - y_i)^2`` with ``y_i = r_i + gamma (1 - terminated) Q'_i(x', a')`` (Lowe
    et al. Eq. 6) for given target joint actions ``a_next`` ``(L, S, A, act_max)``; ``d`` a learner batch
    (``(L, S, ...)``), ``la`` ``(L,)`` each learner's agent, ``ar`` ``arange(L)``. Returns ``(loss, q)``,
    ``q`` ``(L, S)``. Shared by ``critic_loss`` and the model-parallel agent workers."""
    with torch.no_grad():
        q_next = target_critic(critic_input(d["next_obs"], a_next, la, ar, centralised)).squeeze(-1)  # (L, S)
        y = critic_target(d["reward"][ar, :, la], d["terminated"], q_next, gamma)
    q = critic(critic_input(d["obs"], d["act"], la, ar, centralised)).squeeze(-1)
    return (q - y).pow(2).mean(1).sum(), q


def critic_loss(cfg: Config, policy: Policy, nets: Nets, lay: AgentLayout, d: dict[str, Tensor], centralised: bool, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``td_loss`` with the target actions ``mu'(o')`` of the target actors (Lowe et al. Eq. 6; the
    others' target actions inferred when ``policy_inference``, Eq. 7) on a learner batch ``d``
    (``(L, S, ...)``). Returns ``(loss, q)``, ``q`` ``(L, S)``."""
    L, A = lay.n_learners, lay.n_agents
    dev = d["obs"].device
    la = torch.tensor(lay.learner_agent, device=dev)
    ar = torch.arange(L, device=dev)
    with torch.no_grad():
        a_next = target_actions(policy, nets, lay, d["next_obs"], d["sub"], generator)
        if cfg.policy_inference and centralised:
            own = F.one_hot(la, A).to(torch.float32)[:, None, :, None]  # (L, 1, A, 1)
            a_next = own * a_next + (1.0 - own) * inferred_actions(policy, nets, lay, d["next_obs"], generator)
    return td_loss(nets.critic, nets.target_critic, d, a_next, la, ar, centralised, cfg.gamma)


def policy_loss(critic: nn.Module, d: dict[str, Tensor], a_own: Tensor, reg: Tensor, la: Tensor, ar: Tensor, centralised: bool, actor_reg: float) -> Tensor:
    """``-sum_i mean_s Q_i(x, a_1.., mu_i(o_i), ..a_N) + actor_reg * reg`` (Lowe et al. Eq. 5 with the
    original code's regulariser) for the learners' own actions ``a_own`` ``(L, S, act_max)`` (differentiable)
    put into the batch's joint actions; ``la``, ``ar`` as in ``td_loss``. Shared by ``actor_loss`` and the
    model-parallel agent workers."""
    own = F.one_hot(la, d["act"].shape[2]).to(torch.float32)[:, None, :, None]  # (L, 1, A, 1)
    joint = own * a_own[:, :, None, :] + (1.0 - own) * d["act"]
    q_pi = critic(critic_input(d["obs"], joint, la, ar, centralised), detach=True).squeeze(-1)
    return -q_pi.mean(1).sum() + actor_reg * reg


def actor_loss(cfg: Config, policy: Policy, nets: Nets, lay: AgentLayout, d: dict[str, Tensor], centralised: bool, generator: torch.Generator) -> Tensor:
    """``policy_loss`` of every learner's actor (``mu_i(o_i)``; Gumbel-softmax for discrete actors) with the
    regulariser ``mean(pre-activation^2)`` summed over learners."""
    L = lay.n_learners
    dev = d["obs"].device
    la = torch.tensor(lay.learner_agent, device=dev)
    ar = torch.arange(L, device=dev)
    own_a, reg = [], torch.zeros((), device=dev)
    for g in lay.trained:
        info = lay.groups[g]
        s, e = lay.learner_block(g)
        obs_own = d["obs"][ar[s:e], :, la[s:e], : info.obs_dim]  # (K*N, S, obs_dim), member order = learner order
        z = policy.actors[g](obs_own)
        reg = reg + z.pow(2).mean((1, 2)).sum()
        if info.discrete:
            a = gumbel_softmax(z, cfg.gumbel_temperature, hard=True, generator=generator)
        else:
            a = policy.box(g, z)
        own_a.append(pad_last(a, lay.act_max))
    return policy_loss(nets.critic, d, torch.cat(own_a, 0), reg, la, ar, centralised, cfg.actor_reg)


def update(cfg: Config, policy: Policy, nets: Nets, opts: dict[str, torch.optim.Optimizer], buf: ReplayBuffer, lay: AgentLayout, centralised: bool, generator: torch.Generator) -> dict[str, Tensor]:
    """One gradient step of every critic, actor (and inference net), then the soft target updates.

    Returns detached loss tensors (summed into the iteration's means by the caller, no sync here).
    """
    S = cfg.batch_size
    d = learner_batch(buf, lay, S, generator)  # obs (L, S, A, obs_max), act (L, S, A, act_max), reward (L, S, A)...
    L = lay.n_learners
    dev = d["obs"].device

    # ---- critics
    c_loss, q = critic_loss(cfg, policy, nets, lay, d, centralised, generator)
    opts["critic"].zero_grad(set_to_none=True)
    c_loss.backward()
    if cfg.max_grad_norm > 0:
        clip_grad_norm_per_member(list(nets.critic.parameters()), cfg.max_grad_norm)
    opts["critic"].step()

    # ---- actors
    a_loss = actor_loss(cfg, policy, nets, lay, d, centralised, generator)
    opts["actor"].zero_grad(set_to_none=True)
    a_loss.backward()
    if cfg.max_grad_norm > 0:
        for g in lay.trained:
            clip_grad_norm_per_member(list(policy.actors[g].parameters()), cfg.max_grad_norm)
    opts["actor"].step()

    out = {"critic": c_loss.detach() / L, "actor": a_loss.detach() / L, "q": q.detach().mean()}

    # ---- policy inference: max log-likelihood of the others' actions + entropy (Lowe Eq. 7)
    if cfg.policy_inference and centralised:
        la = torch.tensor(lay.learner_agent, device=dev)
        lt = torch.tensor(lay.learner_trained_index, device=dev)
        loss = torch.zeros((), device=dev)
        for g, info in lay.groups.items():
            o, N, D = lay.offset[g], info.n_agents, info.obs_dim
            members = (lt[:, None] * N + torch.arange(N, device=dev)).reshape(-1)
            x = d["obs"][:, :, o : o + N, :D].permute(0, 2, 1, 3).reshape(L * N, S, D)
            acts = d["act"][:, :, o : o + N, : info.action_dim].permute(0, 2, 1, 3).reshape(L * N, S, -1)
            weight = (la[:, None] != (o + torch.arange(N, device=dev))).float().reshape(-1) / lay.K
            ls = nets.infer_log_std[g] if g in nets.infer_log_std else None
            box = (lambda z, g=g: policy.box(g, z)) if not info.discrete else None
            loss = loss + inference_loss(nets.infer[g], ls, members, x, acts, weight, cfg.inference_entropy, box)
        opts["infer"].zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm > 0:
            for g in lay.groups:
                params = list(nets.infer[g].parameters()) + ([nets.infer_log_std[g]] if g in nets.infer_log_std else [])
                clip_grad_norm_per_member(params, cfg.max_grad_norm)
        opts["infer"].step()
        out["inference"] = loss.detach()

    # ---- targets
    soft_update(nets.target_critic, nets.critic, cfg.tau)
    soft_update(nets.target_actors, policy.actors, cfg.tau)
    return out


# ====================================================================== the learner
def anneal_optimisers(cfg: Config, opts: dict[str, torch.optim.Optimizer], progress: float) -> dict[str, float]:
    """Set each optimiser of ``opts`` (keys ``actor``, ``critic``, ``infer``) to its initial learning
    rate times ``linear(1, lr_end_factor, progress)`` (``progress``: the fraction of the budget spent);
    returns ``{"train/lr/<net>": rate}``. Single-process MADDPG and every distributed worker use it."""
    base = {"actor": cfg.actor_lr, "critic": cfg.critic_lr, "infer": cfg.inference_lr}
    factor = linear(1.0, cfg.lr_end_factor, progress)
    return {f"train/lr/{k}": set_learning_rates(o, [base[k]], factor)[0] for k, o in opts.items()}


class Learner:
    """MADDPG's training state on one batched env, and its loop body (collect, store, update).

    Used by ``train_maddpg`` and by every worker of ``maestro.distributed`` (Distributed Genetic
    MADDPG runs one per worker). Holds the policy (frozen groups included), critics and targets,
    optimisers, replay buffer, sampling generator, counters and the current observations.

    Args:
        cfg: the MADDPG ``Config``.
        env: a batched env of ``B`` copies.
        seed: seeds the sampling generator (network initialisation uses the global torch RNG,
            seeded by the run or the worker).
        centralised: MADDPG (True) or DDPG's local critics (False).
        capacity: replay capacity.
    """

    def __init__(self, cfg: Config, env: Any, seed: int, centralised: bool, capacity: int) -> None:
        spec: EnvSpec = env.spec
        device = env.device
        if cfg.policy_inference and not centralised:
            raise ValueError("policy_inference needs centralised critics (maddpg); ddpg's local critics see no other agent's action")
        groups = group_layout(spec)
        unknown = [g for g in cfg.frozen if g not in groups]
        if unknown:
            raise ValueError(f"frozen groups {unknown} are not groups of env {spec.name!r} (groups: {list(groups)})")
        if len(cfg.frozen) == len(groups):
            raise ValueError(f"every group of {spec.name!r} is frozen: nothing to train")
        frozen = {}
        for g, path in cfg.frozen.items():
            p = load_frozen_policy(path, device)
            check_frozen_policy(p, g, groups[g], spec.name, str(path))
            frozen[g] = p
        arch = {"hidden": list(cfg.hidden), "ensemble_size": cfg.ensemble_size, "continuous_head": cfg.continuous_head}
        self.cfg, self.env, self.centralised = cfg, env, centralised
        self.policy = Policy(groups, arch, frozen).to(device)
        self.lay = make_layout(groups, self.policy.trained, cfg.ensemble_size)
        self.nets = Nets(self.policy, self.lay, cfg, centralised).to(device)
        self.opts: dict[str, torch.optim.Optimizer] = {
            "actor": torch.optim.Adam(self.policy.actors.parameters(), lr=cfg.actor_lr, foreach=True),
            "critic": torch.optim.Adam(self.nets.critic.parameters(), lr=cfg.critic_lr, foreach=True),
        }
        if cfg.policy_inference:
            params = list(self.nets.infer.parameters()) + list(self.nets.infer_log_std.parameters())
            self.opts["infer"] = torch.optim.Adam(params, lr=cfg.inference_lr, foreach=True)
        partition = ("sub", cfg.ensemble_size) if cfg.ensemble_size > 1 else None
        self.buf = ReplayBuffer(capacity, replay_fields(self.lay), device, partition)
        self.generator = make_generator(seed + 7919, device)
        self.counters: dict[str, Any] = {"since_round": 0, "credit": 0.0, "updates": 0, "env_steps": 0}
        self.cur: dict[str, Any] = {"obs": env.reset(), "state": env.state(), "hidden": None}
        self.episodes = EpisodeStats(spec, device)
        self._loss_sum: dict[str, Tensor] = {}
        self._n_updates = 0

    def anneal(self, progress: float) -> dict[str, float]:
        """``anneal_optimisers`` on this learner's optimisers."""
        return anneal_optimisers(self.cfg, self.opts, progress)

    def collect_step(self) -> None:
        """One vectorised env step of all ``B`` copies with exploration, stored in the replay buffer."""
        env, policy, lay, B, device = self.env, self.policy, self.lay, self.env.num_envs, self.env.device
        obs, state, hidden = self.cur["obs"], self.cur["state"], self.cur["hidden"]
        if hidden is None:
            hidden = {"sub": policy.draw_sub(B, self.generator, device), "frozen": {g: None for g in policy.frozen_policies}}
        acts, crit, hidden = explore(policy, lay, self.cfg, obs, state, hidden, self.generator)
        out = env.step(acts)
        self.buf.add(
            {
                "obs": padded_obs(policy, lay, obs),
                "next_obs": padded_obs(policy, lay, out.final_obs),
                "act": crit,
                "reward": torch.cat([out.reward[g] for g in lay.groups], 1),
                "terminated": out.terminated.float(),
                "sub": _sub_tensor(lay, hidden, B, device),
            }
        )
        hidden = policy.reset_hidden(hidden, out.done, self.generator)
        self.cur = {"obs": out.obs, "state": out.state, "hidden": hidden}
        self.episodes.add(out.info, out.done)  # summed on the device, one sync per ``stats()``
        self.counters["env_steps"] += B

    def maybe_update(self) -> None:
        """The update schedule after a collect step: ``update_every * updates_per_step`` gradient
        updates every ``update_every`` env steps, once ``warmup_steps`` transitions are stored."""
        cfg, c = self.cfg, self.counters
        due, c["since_round"], c["credit"] = off_policy_updates(
            c["since_round"], c["credit"], self.env.num_envs, len(self.buf), cfg.update_every, cfg.warmup_steps, cfg.updates_per_step
        )
        for _ in range(due):
            losses = update(cfg, self.policy, self.nets, self.opts, self.buf, self.lay, self.centralised, self.generator)
            for k, v in losses.items():
                self._loss_sum[k] = self._loss_sum.get(k, 0.0) + v
            self._n_updates += 1
            c["updates"] += 1

    def run_steps(self, n: int, updates: bool = True) -> dict[str, float]:
        """``n`` collect steps, each followed by the update schedule (unless ``updates`` is off);
        returns ``stats()``."""
        for _ in range(n):
            self.collect_step()
            if updates:
                self.maybe_update()
        return self.stats()

    def stats(self) -> dict[str, float]:
        """Metrics since the last call (``train/...`` episode statistics, ``loss/...`` means,
        ``train/replay_size``, ``train/updates``), then reset."""
        m = self.episodes.summary("train")
        for k, v in self._loss_sum.items():
            m[f"loss/{k}"] = float(v) / max(1, self._n_updates)
        m["train/replay_size"] = float(len(self.buf))
        m["train/updates"] = float(self.counters["updates"])
        self._loss_sum, self._n_updates = {}, 0
        return m

    def state_dict(self, replay: bool) -> dict[str, Any]:
        """Everything needed to continue exactly (the replay buffer only with ``replay``)."""
        snap = {
            "policy": self.policy.policy_state(),
            "nets": self.nets.state_dict(),
            "opts": {k: o.state_dict() for k, o in self.opts.items()},
            "generator": self.generator.get_state(),
            "counters": dict(self.counters),
            "env": env_snapshot(self.env),
            "cur": self.cur,
        }
        if replay:
            snap["replay"] = self.buf.state_dict()
        return snap

    def load_state_dict(self, s: dict[str, Any], env_state: bool = True, frozen: bool = False) -> None:
        """Inverse of ``state_dict``. ``env_state=False`` keeps this learner's env copies, generator
        and counters (a data-parallel replica taking another's weights); ``frozen`` also restores
        the frozen opponents the run started with (a resumed run: not whatever the path holds now)."""
        device = self.env.device
        if frozen:
            self.policy.frozen_policies = {g: load_policy(st, str(device)) for g, st in s["policy"]["frozen"].items()}
        self.policy.load_state_dict(s["policy"]["weights"])
        self.nets.load_state_dict(s["nets"])
        for k, o in self.opts.items():
            o.load_state_dict(s["opts"][k])
        if env_state:
            self.generator.set_state(s["generator"])
            self.counters.update(s["counters"])
            env_restore(self.env, s["env"])
            self.cur = tree_to_device(s["cur"], device)
        if "replay" in s:
            self.buf.load_state_dict(s["replay"])

    def critic_state(self) -> dict[str, Any]:
        """The critics and target critics (what Distributed Genetic MADDPG broadcasts)."""
        return {"critic": self.nets.critic.state_dict(), "target_critic": self.nets.target_critic.state_dict()}

    def load_critic_state(self, s: dict[str, Any]) -> None:
        self.nets.critic.load_state_dict(s["critic"])
        self.nets.target_critic.load_state_dict(s["target_critic"])


# ====================================================================== train
def train_maddpg(cfg: Config, env: Any, run: Run, centralised: bool = True) -> Policy:
    """Train with ``run`` until its budget is spent or it is stopped; returns the policy (frozen groups included).

    Each iteration steps all copies ``iteration_steps`` times (one episode length by default), storing
    every transition and running ``update_every * updates_per_step`` gradient updates every
    ``update_every`` env steps once ``warmup_steps`` transitions are stored; then logs, evaluates and
    checkpoints through ``run``. A resumed run continues exactly (with ``checkpoint_replay``).
    """
    B = env.num_envs
    T_iter = cfg.iteration_steps or env.spec.max_steps
    # A buffer larger than every transition the run will store is never used: cap it by the budget.
    capacity = min(cfg.buffer_size, run.cfg.env_steps + T_iter * B)
    learner = Learner(cfg, env, run.seed, centralised, capacity)
    resumed = run.restore()
    if resumed is not None:
        learner.load_state_dict(resumed, frozen=True)
    while not run.finished:
        lrs = learner.anneal(run.env_steps / run.cfg.env_steps) if cfg.lr_end_factor != 1.0 else {}
        run.step(T_iter * B, {**learner.run_steps(T_iter), **lrs})
        run.maybe_evaluate(learner.policy)
        run.maybe_checkpoint(lambda: learner.state_dict(cfg.checkpoint_replay))
    return learner.policy


@register_algo("maddpg", config=Config, capabilities=CAPABILITIES, summary="MADDPG: centralised critics, decentralised deterministic actors (Lowe et al. 2017), with policy inference and ensembles")
def train_maddpg_algo(cfg: Config, env: Any, run: Run) -> Policy:
    """MADDPG: a critic per agent on all observations and actions (Lowe et al. 2017)."""
    return train_maddpg(cfg, env, run, centralised=True)


@register_algo("ddpg", config=Config, capabilities=CAPABILITIES, summary="Independent DDPG: each agent's critic sees only its own observation and action (Lowe et al. 2017 baseline)")
def train_ddpg(cfg: Config, env: Any, run: Run) -> Policy:
    """DDPG baseline: the MADDPG learner with local critics (Lillicrap et al. 2016)."""
    return train_maddpg(cfg, env, run, centralised=False)
