"""Multi-task MARL: task encoder, latent skills, relation network and MI reward across team sizes.

Shenao Zhang, "Multi-task MARL" (notes, April 2020; ``papers/003``), Sec. 2.3-2.6 and Algorithm 1.
One policy per role serves tasks with different numbers of agents and landmarks (EPC, Long et al.
ICLR 2020, arXiv 2003.10423, has to clone and retrain per size): agents read the world as entity
tokens (``maestro.envs.api.EntityObs``) and every network is attention over entities
(``maestro.nn.relation``), so no parameter depends on the number of entities.

The parts, with the notes' symbols (``t`` a task, ``s`` an agent's local observation):

* task encoder ``psi(t)``: logits of ``Cat(K)`` over latent skills, from the task description
  (``env.task_description()``: agents per role, landmarks, world size, field of view);
* skill ``z ~ Cat(psi(t))`` drawn per agent at the start of each episode (Gumbel-max when acting;
  the straight-through Gumbel-softmax of ``maestro.nn.gumbel`` where a gradient must reach ``psi``);
* relation network ``k = M_phi(s, z)``, deterministic (eq. 3's choice): the attention weights of the
  agent over the entities it sees, its query built from its own token and ``z``;
* role policy ``pi_theta_i(a | s, k)`` per role (env group) and one critic ``Q_alpha(s, a, k)``, both
  pooling the entities with ``k`` (``maestro.nn.relation`` explains this reading of "relationships");
  the critic also reads the actions of the other agents in view, on their tokens (``critic_actions``,
  the default): MADDPG's centralised critic, which the notes build on, in a form that takes any N;
  both first pass the entities through a Transformer encoder layer (``context_layers``, not in the
  notes; EPC's policies attend among entities too), so that what an entity means can depend on the
  others before the relations pool them.

Updates (Algorithm 1), every ``update_every`` env steps once ``warmup_steps`` are stored, with
minibatches of ``batch_size`` transitions from every task's own replay buffer ``D_t``:

1. ``round_updates`` optimisation steps of policies and critic with ``k`` held fixed (no gradient to
   ``phi``, the notes' "we fix the relationships when optimizing policy and critic"):
   critic ``L(alpha) = mean (y - Q_alpha(s, a, k))^2``, ``y = r + gamma (1 - terminated)
   Q_target(s+, a+, k+)``, ``a+ ~ pi_target(. | s+, k+)``; policy gradient
   ``grad log pi_theta(a | s, k) (Q_alpha(s, a, k) - V)``, ``V = sum_a pi_theta(a | s, k) Q_alpha(s, a, k)``,
   with the buffer's action ``a`` (``policy_gradient="sampled"``, Algorithm 1) or summed over all
   actions (``"expected"``), plus ``entropy_coef`` times the entropy (not in the notes; 0 removes it).
2. one step of ``phi`` and ``psi`` on the MI reward of eq. (5) (``mi_reward`` of ``maestro.nn.relation``)::

       R_t(s, k, a) = log [ N pi_target(a | s, k) / sum_{n=1..N} pi_target(a | s, M_phi(s, z_n)) ],
       a ~ pi_theta(. | s, k),   z_n ~ gumbel_softmax(psi(t)),

   and of ``psi`` (and the decoder ``psi'``) on eq. (6), ``L_psi = || T - psi'(psi(T)) ||_2`` over the
   training tasks: the loss ``-mean R + ae_coef * L_psi``. The target policy ``pi_target`` (the
   version before this round's policy steps, eq. 5's ``pi_theta``) is frozen, so the MI reward's
   gradient reaches ``phi`` and ``psi`` only, never ``theta``; ``a`` is the current, "better" policy's
   desired action (eq. 5's ``pi_theta'``).
3. targets ``pi_target, Q_target <- pi, Q`` (``tau = 1``, Algorithm 1's hard copy; ``tau < 1`` averages).

maestro's readings where the notes are informal (each is a choice, stated):

* ``k`` in the replay: Algorithm 1 stores the ``k_j`` computed while acting; maestro stores the
  skill ``z_j`` and recomputes ``k = M_phi(s, z)`` with the current ``phi`` at update time (``phi``
  changes between collection and update, and the policy must learn on the relations it acts with).
  The target's next relations are ``M_phi(s+, z)`` with the same skill (Algorithm 1 reuses ``k_j^b``).
* the numerator of eq. (5) uses the agent's own stored skill (its ``k``; gradient to ``phi``); the
  ``N`` samples of the denominator are drawn per task and shared by the minibatch, straight-through
  one-hot samples, so ``psi`` gets its gradient through them.
* the ``1/B`` sums are means over the minibatch and the agents; each gradient step sums the losses of
  all tasks (Algorithm 1 loops over tasks; the sum is one batched step per network).
* ``V`` is the policy's expectation of the critic (the notes name ``V`` without defining it).
* the advantages ``Q - V`` of a minibatch are divided by their standard deviation (the
  ``"expected"`` variant: by their policy-weighted root mean square) before the gradient, so that
  the step and the entropy weight do not depend on the reward's scale (a PPO practice, not the
  notes'). Observed on simple_spread N = 1-3: with few updates per env step (0.02) the policies lock
  onto "stand still" (under random behaviour standing still beats a random move, and ``Q`` is about
  -19 while the action gaps are tenths) before the critic resolves directions, with or without the
  scaling; the defaults make 0.1 updates per env step, and the ``"expected"`` variant locked in
  where ``"sampled"`` learned.
* the MI step uses its own minibatch per task (Algorithm 1 reuses the last one).

Ablations: ``skills=False`` (no skill: ``M_phi(s)``, no MI reward or auto-encoder, ``phi`` is then
never trained, as the notes train it by the MI reward alone); ``mi_reward=False``; ``autoencoder=False``.

Tasks: the registry's contract hands ``train`` one env. The learner's tasks are ``Config.tasks``,
overrides of that env's config (``[{n_agents: 3}, {n_agents: 4}]``), each built with
``maestro.registry.make_env`` (same name, copies and device; seed ``seed + 7919 i``); an override
that leaves the config as it is reuses the env itself, and no overrides train on the env alone. The
env handed in is also where the run evaluates: a recipe may set it to a held-out task (``n_agents:
6``) to follow zero-shot generalisation during training. ``init_from`` starts from another run's
networks (fine-tuning on a new task).

The policy acts on any env of the family: ``Policy.bind(env)`` (``maestro.core.evaluate`` calls it)
makes it read that env's tokens and task description; unbound, it reads the env it was trained with.

The module reads top to bottom: ``Config`` -> ``Policy`` (acts, saves, loads) -> trainer networks,
tasks and the losses (``td_and_policy_losses``, ``mi_loss``, ``autoencoder_loss``) -> ``Learner``
(collect, update, state) -> ``train``. Shapes: ``S`` minibatch, ``B`` env copies, ``A`` agents of a
task (groups concatenated in group order), ``E`` entities, ``F`` token features, ``H`` heads,
``K`` skills, ``N`` MI samples, ``D`` task-description features.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maestro.config import ConfigError, config_to_dict
from maestro.core.checkpoint import newest_checkpoint, read_policy_state, save_policy, tree_to_device
from maestro.core.episodes import EpisodeStats
from maestro.core.replay import ReplayBuffer
from maestro.core.run import Run, env_restore, env_snapshot
from maestro.core.schedules import off_policy_updates, set_learning_rates
from maestro.core.seeding import make_generator
from maestro.envs.api import BatchedEnv
from maestro.nn.gumbel import gumbel_softmax
from maestro.nn.heads import MASKED, categorical_sample
from maestro.nn.relation import RelationalHead, RelationNet, TaskDecoder, TaskEncoder, mi_reward, reconstruction_loss
from maestro.nn.target import soft_update
from maestro.registry import Smoke, make_env, register_algo

CAPABILITIES = frozenset({"discrete", "multi_group", "off_policy", "needs_entity_obs"})


# ====================================================================== config
@dataclass(frozen=True)
class Config:
    """Hyperparameters of the multi-task learner. The notes give none; defaults are maestro's
    (MADDPG-like off-policy settings for the particle worlds, small attention networks)."""

    tasks: tuple[dict[str, Any], ...] = ()
    """Training tasks as overrides of the env's config (``{n_agents: 4}``); empty: the env alone."""
    n_skills: int = 4
    """``K`` latent skills of ``Cat(psi(t))``."""
    skills: bool = True
    """Ablation switch: False removes the skill (``k = M_phi(s)``), hence the MI reward and the auto-encoder."""
    mi_reward: bool = True
    """Ablation switch: train ``phi`` and ``psi`` on the MI reward of eq. (5)."""
    autoencoder: bool = True
    """Ablation switch: train ``psi`` on the task auto-encoder loss of eq. (6)."""
    mi_samples: int = 8
    """``N`` skill samples per task in the denominator of eq. (5)."""
    gumbel_temperature: float = 1.0
    """Temperature of the Gumbel-softmax skill samples of the MI step."""
    ae_coef: float = 1.0
    """Weight of ``L_psi`` (eq. 6) beside ``-R`` in the loss of ``phi, psi, psi'``."""
    hidden: int = 32
    """Width of the token embeddings and hidden layers of relation net, policies and critic."""
    heads: int = 4
    """``H`` attention heads: relations per agent."""
    key_dim: int = 8
    """Width of each head's query and keys in ``M_phi``."""
    value_dim: int = 16
    """Width of each head's pooled entity values in the policies and the critic."""
    context_layers: int = 1
    """Transformer encoder layers among the entities in the policies and the critic before the
    relations pool them (``maestro.nn.relation.RelationalHead``; 0: none, the entities are pooled
    as embedded one by one). One layer is what brought the learner near MADDPG on navigation N = 3
    (docs/multitask.md); without it the policy sees the entities only through a weighted mean
    whose weights (the relations) it does not train."""
    task_hidden: int = 32
    """Hidden width of the task encoder and decoder."""
    lr: float = 1e-3
    """Adam learning rate of the role policies."""
    critic_lr: float = 1e-3
    """Adam learning rate of the critic."""
    relation_lr: float = 1e-3
    """Adam learning rate of the relation network, task encoder and decoder."""
    gamma: float = 0.95
    """Discount factor."""
    tau: float = 1.0
    """Target update after each round: ``theta' <- tau theta + (1 - tau) theta'`` (1: Algorithm 1's copy)."""
    critic_actions: bool = True
    """The critic reads the other agents' actions: each other agent's token carries the one-hot of
    its action (zeros on the observer's own token and on landmarks; an entity out of view gets no
    attention, so its action is not read). ``Q(s, a_i, k | a_-i) - V`` is then COMA's
    counterfactual advantage (Foerster et al. 2018), MADDPG's centralised critic read through the
    relations; False: Q of the agent's local observation and own action only (a reading of the
    notes' ``Q(s, a, k)`` in which every other agent is part of the environment)."""
    policy_gradient: Literal["sampled", "expected"] = "sampled"
    """``sampled``: Algorithm 1's ``grad log pi(a|s,k) (Q - V)`` at the buffer's action; ``expected``: summed over actions."""
    rl_relations: bool = False
    """Let the critic and policy losses train ``phi`` too (the relations of the current state carry
    their gradient; those of the next state stay fixed), beside the MI reward. Not the notes' (they
    fix the relationships in the policy and critic steps)."""
    pg_normalise: bool = True
    """Divide a minibatch's advantages ``Q - V`` by their standard deviation (``"expected"``: by their
    policy-weighted root mean square) before the gradient (module docstring); False: the raw ``Q - V``,
    so that ``"expected"`` is the exact gradient of ``E_pi[Q]``, the objective MADDPG's actor ascends."""
    entropy_coef: float = 0.01
    """Weight of the policies' entropy bonus (not in the notes; 0 removes it)."""
    max_grad_norm: float = 10.0
    """Gradient norm clip of each optimiser (0 disables)."""
    buffer_size: int = 200_000
    """Replay capacity of each task's buffer ``D_t``, in transitions (one env step of one copy)."""
    batch_size: int = 128
    """Minibatch ``S`` drawn from each task's buffer per gradient step."""
    warmup_steps: int = 2_000
    """Env steps (all tasks) stored before the first update."""
    update_every: int = 100
    """Env steps (all tasks and copies) between update rounds (Algorithm 1's "steps before update")."""
    round_updates: int = 10
    """Policy and critic steps per round (Algorithm 1's "# optimization steps"); one MI and auto-encoder step follows."""
    iteration_steps: int = 0
    """Vectorised steps of every task per logged iteration (0: one episode of the env handed in)."""
    init_from: str = ""
    """Start from the networks of this multitask run directory or checkpoint (fine-tuning); "" starts afresh."""
    init_optimisers: bool = False
    """With ``init_from``: also start from that run's Adam moments (the learning rates stay this
    config's), so the first steps on the new task are sized as the last ones of the source were;
    False: fresh optimisers, whose first Adam steps move every parameter by about its learning rate."""
    actor_delay_steps: int = 0
    """Env steps after ``warmup_steps`` during which only the critic learns (the policies, relation
    net and task encoder stay as they are): lets a fine-tune's critic fit the new task before its
    advantages move the policy (docs/multitask.md, "The fine-tune")."""
    checkpoint_replay: bool = True
    """Save the replay buffers in checkpoints (a resumed run then continues exactly; costs disk)."""

    SMOKE: ClassVar[Smoke] = Smoke(
        config={"n_skills": 3, "mi_samples": 3, "hidden": 16, "heads": 2, "key_dim": 4, "value_dim": 8, "task_hidden": 8, "buffer_size": 512, "batch_size": 8, "warmup_steps": 8, "update_every": 4, "round_updates": 1, "iteration_steps": 3}
    )
    """``check_algo``'s settings: with 4 copies, a round (policy, critic, MI, auto-encoder) every step from the second."""

    def __post_init__(self) -> None:
        for name in ("n_skills", "mi_samples", "hidden", "heads", "key_dim", "value_dim", "task_hidden", "buffer_size", "batch_size", "update_every", "round_updates"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "iteration_steps", "actor_delay_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.init_optimisers and not self.init_from:
            raise ValueError("init_optimisers needs init_from (the run whose optimiser states to start from)")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 < self.tau <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1] and tau in (0, 1], got {self.gamma}, {self.tau}")
        for name in ("lr", "critic_lr", "relation_lr", "gumbel_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("entropy_coef", "max_grad_norm", "ae_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for i, t in enumerate(self.tasks):
            if not isinstance(t, dict):
                raise ValueError(f"tasks[{i}] must be a mapping of env config overrides, got {t!r}")


ARCH_KEYS = ("n_skills", "skills", "hidden", "heads", "key_dim", "value_dim", "task_hidden", "critic_actions", "context_layers")
"""The ``Config`` fields that shape the networks (a fine-tuned run must agree on them)."""


# ====================================================================== policy
def group_slices(env: BatchedEnv) -> dict[str, tuple[int, int]]:
    """``{group: (offset, N_g)}``: where each group's agents sit on the task's agent axis ``A``."""
    out, a = {}, 0
    for g, gs in env.spec.groups.items():
        out[g] = (a, gs.n_agents)
        a += gs.n_agents
    return out


def task_tokens(env: BatchedEnv, obs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Entity tokens ``(..., A, E, F)`` and mask ``(..., A, E)`` of per-group observations (groups concatenated)."""
    ents = env.entity_obs(obs)
    return torch.cat([ents[g].tokens for g in env.spec.groups], -3), torch.cat([ents[g].mask for g in env.spec.groups], -2)


def task_vector(env: BatchedEnv, device: torch.device) -> Tensor:
    """``env.task_description()`` as a ``(D,)`` float tensor (in its key order)."""
    return torch.tensor(list(env.task_description().values()), dtype=torch.float32, device=device)


class Policy(nn.Module):
    """Role policies ``pi_theta_i(a | s, k)`` with the relation network ``M_phi`` and task encoder ``psi``.

    ``act(obs, state, hidden)`` reads the bound env's entity tokens and task description (``bind``;
    unbound: an env built from ``arch["env"]`` and ``arch["env_config"]``, the one it was trained with)
    and returns ``(B, N_g)`` int64 actions per group. ``hidden`` is ``{"skill": (B, A) int64}``, each
    agent's skill for the episode; ``None`` draws them from ``Cat(psi(t))`` with ``generator`` (skills
    are drawn even when ``deterministic``, which takes the policies' argmax actions).
    """

    def __init__(self, arch: dict[str, Any]) -> None:
        super().__init__()
        self.arch = copy.deepcopy(dict(arch))
        a = self.arch
        F_, H = int(a["token_dim"]), int(a["heads"])
        self.skill_dim = int(a["n_skills"]) if a["skills"] else 0
        self.relation = RelationNet(F_, self.skill_dim, a["hidden"], H, a["key_dim"])
        self.encoder = TaskEncoder(torch.tensor(a["desc_scale"], dtype=torch.float32), int(a["n_skills"]), a["task_hidden"])
        layers = int(a.get("context_layers", 0))
        self.actors = nn.ModuleDict({g: RelationalHead(F_, H, int(n), a["hidden"], a["value_dim"], out_gain=0.01, context_layers=layers) for g, n in a["n_actions"].items()})
        self._view: BatchedEnv | None = None

    # ---------------------------------------------------------------- the env it reads
    def bind(self, env: BatchedEnv) -> "Policy":
        """Act on ``env``'s tasks from now on (its tokens and description); returns ``self``.

        Raises a ``ValueError`` if ``env`` is not of the family the policy was trained on (other
        groups, entity kinds, action counts or task-description keys).
        """
        a, spec = self.arch, env.spec
        if not spec.has_entity_obs:
            raise ValueError(f"the multitask policy needs entity tokens; env {spec.name!r} has none (spec.entity_kinds is empty)")
        got = {
            "groups": {g: gs.action_dim for g, gs in spec.groups.items()},
            "entity_kinds": list(spec.entity_kinds),
            "desc_keys": list(env.task_description()),
        }
        want = {"groups": dict(a["n_actions"]), "entity_kinds": list(a["entity_kinds"]), "desc_keys": list(a["desc_keys"])}
        bad = [k for k in want if want[k] != got[k]]
        if bad or not all(gs.discrete for gs in spec.groups.values()):
            raise ValueError(f"the multitask policy (trained on {a['env']!r}) cannot act on env {spec.name!r}: " + "; ".join(f"{k}: policy {want[k]}, env {got[k]}" for k in bad) + ("" if bad else "; its actions are not all discrete"))
        self._view = env
        return self

    def view(self) -> BatchedEnv:
        """The bound env, or (built once) the env of ``arch`` it was trained with."""
        if self._view is None:
            dev = next(self.parameters()).device
            self._view = make_env(self.arch["env"], num_envs=1, seed=0, device=dev, **self.arch["env_config"])
        return self._view

    # ---------------------------------------------------------------- pieces
    def skill_input(self, skill: Tensor) -> Tensor:
        """Skill indices ``(...)`` -> the relation net's input ``(..., K)`` one-hot (``(..., 0)`` without skills)."""
        if self.skill_dim == 0:
            return torch.zeros(*skill.shape, 0, device=skill.device)
        return F.one_hot(skill.long(), self.skill_dim).float()

    def draw_skills(self, desc: Tensor, shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
        """Skills ``shape`` int64 drawn from ``Cat(softmax(psi(t)))`` for the description ``(D,)`` (zeros without skills)."""
        if self.skill_dim == 0:
            return torch.zeros(shape, dtype=torch.long, device=desc.device)
        logits = self.encoder(desc[None])[0]
        return categorical_sample(logits.expand(*shape, logits.shape[0]), generator)

    def relations(self, tokens: Tensor, mask: Tensor, skill_in: Tensor) -> Tensor:
        """``k = M_phi(s, z)``: tokens ``(S, A, E, F)``, mask ``(S, A, E)``, skill input ``(..., S, A, K)``
        -> ``(..., S, A, H, E)`` (leading sample dims on the skill: the MI reward's ``N`` skills)."""
        S, A, E, F_ = tokens.shape
        lead = skill_in.shape[:-3]
        k = self.relation(tokens.reshape(S * A, E, F_), mask.reshape(S * A, E), skill_in.reshape(*lead, S * A, self.skill_dim))
        return k.view(*lead, S, A, *k.shape[-2:])

    def logits(self, tokens: Tensor, relations: Tensor, slices: dict[str, tuple[int, int]], mask: Tensor, actors: nn.ModuleDict | None = None) -> dict[str, Tensor]:
        """Per group the logits ``(..., S, N_g, n_g)`` of ``pi_i(. | s, k)``: tokens ``(S, A, E, F)``,
        relations ``(..., S, A, H, E)``, entity mask ``(S, A, E)``."""
        actors = self.actors if actors is None else actors
        S, _, E, F_ = tokens.shape
        lead = relations.shape[:-4]
        out = {}
        for g, (o, n) in slices.items():
            tok = tokens[:, o : o + n].reshape(S * n, E, F_)
            rel = relations[..., o : o + n, :, :].reshape(*lead, S * n, *relations.shape[-2:])
            out[g] = actors[g](tok, rel, mask[:, o : o + n].reshape(S * n, E)).view(*lead, S, n, -1)
        return out

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
        """Actions ``(B, N_g)`` per group and ``{"skill": (B, A)}`` (see the class docstring).
        ``state``, ``action_mask`` and ``alive`` are part of the common interface and unused."""
        env = self.view()
        tokens, mask = task_tokens(env, obs)
        B, A = tokens.shape[:2]
        if hidden is None:
            hidden = {"skill": self.draw_skills(task_vector(env, tokens.device), (B, A), generator)}
        skill = hidden["skill"]
        if tuple(skill.shape) != (B, A):
            raise ValueError(f"multitask policy: hidden skills have shape {tuple(skill.shape)}, expected ({B}, {A}) (B, A)")
        rel = self.relations(tokens, mask, self.skill_input(skill))
        logits = self.logits(tokens, rel, group_slices(env), mask)
        return {g: categorical_sample(z, generator, deterministic) for g, z in logits.items()}, hidden

    def policy_state(self) -> dict[str, Any]:
        """Everything needed to rebuild this policy (plain data and weights)."""
        return {"class": "maestro.algos.multitask:Policy", "arch": copy.deepcopy(self.arch), "weights": self.state_dict()}

    @classmethod
    def from_state(cls, state: dict[str, Any], device: str | torch.device = "cpu") -> "Policy":
        """Inverse of ``policy_state`` (``load`` reads it from a policy file or a checkpoint)."""
        return cls(state["arch"]).load_weights(state["weights"]).to(device)

    def load_weights(self, weights: dict[str, Tensor]) -> "Policy":
        """``load_state_dict(weights)``, returning the policy."""
        self.load_state_dict(weights)
        return self

    save = save_policy
    """``policy.save(path)``: write the policy alone, atomically."""

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "Policy":
        return cls.from_state(read_policy_state(path, device), device)


def policy_arch(cfg: Config, env: BatchedEnv, tasks: list[BatchedEnv]) -> dict[str, Any]:
    """The policy's ``arch`` (plain data): network sizes, the env family, and the description scale
    (per feature the largest magnitude over the training tasks, 1 where it is 0)."""
    descs = torch.stack([task_vector(t, torch.device("cpu")) for t in tasks])
    scale = descs.abs().amax(0)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return {
        **{k: getattr(cfg, k) for k in ARCH_KEYS},
        "env": env.registered_name or env.spec.name,
        "env_config": config_to_dict(env.cfg),
        "token_dim": env.spec.entity_token_dim,
        "entity_kinds": list(env.spec.entity_kinds),
        "n_actions": {g: gs.action_dim for g, gs in env.spec.groups.items()},
        "desc_keys": list(env.task_description()),
        "desc_scale": scale.tolist(),
    }


# ====================================================================== trainer networks and tasks
class Nets(nn.Module):
    """What is trained besides the policy: critic ``Q_alpha(s, ., k)``, decoder ``psi'`` and the targets."""

    def __init__(self, policy: Policy) -> None:
        super().__init__()
        a = policy.arch
        n_act = max(a["n_actions"].values())
        critic_tokens = int(a["token_dim"]) + (n_act if a.get("critic_actions") else 0)
        self.critic = RelationalHead(critic_tokens, int(a["heads"]), n_act, a["hidden"], a["value_dim"], context_layers=int(a.get("context_layers", 0)))
        self.decoder = TaskDecoder(int(a["n_skills"]), len(a["desc_keys"]), a["task_hidden"])
        self.target_critic = copy.deepcopy(self.critic)
        self.target_actors = copy.deepcopy(policy.actors)
        for p in list(self.target_critic.parameters()) + list(self.target_actors.parameters()):
            p.requires_grad_(False)


def build_tasks(cfg: Config, env: BatchedEnv) -> tuple[list[BatchedEnv], list[str]]:
    """The training tasks' envs (``Config.tasks`` over ``env``'s config; the module docstring) and their labels."""
    if not cfg.tasks:
        return [env], [env.spec.name]
    if not env.spec.has_entity_obs:
        raise ValueError(f"multitask: env {env.spec.name!r} exposes no entity tokens (spec.entity_kinds is empty)")
    base = config_to_dict(env.cfg)
    envs, labels = [], []
    for i, over in enumerate(cfg.tasks):
        unknown = [k for k in over if k not in base]
        if unknown:
            raise ValueError(f"multitask: tasks[{i}] overrides {unknown}, which are not fields of {env.spec.name!r}'s config (fields: {', '.join(base)})")
        conf = {**base, **over}
        same = conf == base and env not in envs
        envs.append(env if same else make_env(env.registered_name, num_envs=env.num_envs, seed=env.seed + 7919 * (i + 1), device=env.device, **conf))
        labels.append(",".join(f"{k}={v}" for k, v in over.items()) or env.spec.name)
    if len(set(labels)) != len(labels):
        raise ValueError(f"multitask: tasks repeat one another: {labels}")
    return envs, labels


def replay_fields(env: BatchedEnv) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """One task's buffer: flat observations per group (tokens are recomputed when sampled), the
    task's ``A`` actions, rewards and skills, and the termination flag."""
    A = env.spec.n_agents
    fields: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    for g, gs in env.spec.groups.items():
        fields[f"obs/{g}"] = ((gs.n_agents, *gs.obs_shape), torch.float32)
        fields[f"next_obs/{g}"] = ((gs.n_agents, *gs.obs_shape), torch.float32)
    fields.update({"act": ((A,), torch.long), "reward": ((A,), torch.float32), "skill": ((A,), torch.long), "terminated": ((), torch.float32)})
    return fields


def sample_batch(env: BatchedEnv, buf: ReplayBuffer, S: int, generator: torch.Generator) -> dict[str, Tensor]:
    """A minibatch of ``S`` transitions of one task with tokens: ``tokens``/``next_tokens`` ``(S, A, E, F)``,
    ``mask``/``next_mask`` ``(S, A, E)``, ``act``, ``reward``, ``skill`` ``(S, A)``, ``terminated`` ``(S,)``."""
    d = buf.gather(buf.sample_index((S,), generator))
    groups = env.spec.groups
    tokens, mask = task_tokens(env, {g: d[f"obs/{g}"] for g in groups})
    next_tokens, next_mask = task_tokens(env, {g: d[f"next_obs/{g}"] for g in groups})
    return {"tokens": tokens, "mask": mask, "next_tokens": next_tokens, "next_mask": next_mask, "act": d["act"], "reward": d["reward"], "skill": d["skill"], "terminated": d["terminated"]}


def _pad_logits(logits: dict[str, Tensor], n: int) -> Tensor:
    """Per-group logits ``(S, N_g, n_g)`` -> ``(S, A, n)``, missing actions at ``MASKED``."""
    return torch.cat([F.pad(z, (0, n - z.shape[-1]), value=MASKED) for z in logits.values()], -2)


@functools.lru_cache(maxsize=None)
def _others(A: int, device: torch.device) -> Tensor:
    """``(A, A - 1)``: row ``i`` the other agents in the env's order (built once per team size)."""
    return torch.tensor([[j for j in range(A) if j != i] for i in range(A)], dtype=torch.long, device=device).reshape(A, A - 1)


def with_actions(tokens: Tensor, act: Tensor, n_act: int) -> Tensor:
    """The critic's tokens when it reads the others' actions (``Config.critic_actions``): tokens
    ``(S, A, E, F)`` and actions ``(S, A)`` -> ``(S, A, E, F + n_act)``, observer ``i``'s token of
    agent ``j != i`` (slot ``1 + j - [j > i]``: own token first, then the other agents in the env's
    order, ``EntityObs``) extended by ``one_hot(a_j)``, every other token by zeros."""
    S, A, E, _ = tokens.shape
    seen = F.one_hot(act, n_act).to(tokens.dtype)[:, _others(A, tokens.device)]  # (S, A, A - 1, n): agent i's view of the others' actions
    extra = F.pad(seen, (0, 0, 1, E - A))  # slot 0 (itself) and the landmarks: zeros
    return torch.cat([tokens, extra], -1)


def td_and_policy_losses(cfg: Config, policy: Policy, nets: Nets, slices: dict[str, tuple[int, int]], d: dict[str, Tensor], generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Algorithm 1's critic and policy losses on one task's minibatch ``d`` (``sample_batch``), with the
    relations ``k = M_phi(s, z)`` held fixed (unless ``rl_relations``: then those of the current state
    pass the gradient to ``phi``). Returns ``(critic loss, policy loss, mean Q)``."""
    n_act = nets.critic.out.out_dim
    with torch.set_grad_enabled(cfg.rl_relations):
        rel = policy.relations(d["tokens"], d["mask"], policy.skill_input(d["skill"]))
    with torch.no_grad():
        rel_next = policy.relations(d["next_tokens"], d["next_mask"], policy.skill_input(d["skill"]))
        logits_next = _pad_logits(policy.logits(d["next_tokens"], rel_next, slices, d["next_mask"], nets.target_actors), n_act)
        a_next = categorical_sample(logits_next, generator)  # a+ ~ pi_target(. | s+, k+)
        next_q_tokens = with_actions(d["next_tokens"], a_next, n_act) if cfg.critic_actions else d["next_tokens"]
        q_next = _critic(nets.target_critic, next_q_tokens, rel_next, d["next_mask"]).gather(-1, a_next[..., None]).squeeze(-1)
        y = d["reward"] + cfg.gamma * (1.0 - d["terminated"][:, None]) * q_next
    q_tokens = with_actions(d["tokens"], d["act"], n_act) if cfg.critic_actions else d["tokens"]
    q_all = _critic(nets.critic, q_tokens, rel, d["mask"])  # (S, A, n): Q(s, ., k | the others' buffer actions)
    q = q_all.gather(-1, d["act"][..., None]).squeeze(-1)
    critic_loss = (q - y).pow(2).mean()

    logp = torch.log_softmax(_pad_logits(policy.logits(d["tokens"], rel, slices, d["mask"]), n_act), -1)
    pi = logp.exp()
    q_fixed = q_all.detach().masked_fill(pi == 0, 0.0)
    v = (pi.detach() * q_fixed).sum(-1, keepdim=True)  # V = sum_a pi(a|s,k) Q(s,a,k)
    if cfg.policy_gradient == "sampled":
        adv = (q_fixed.gather(-1, d["act"][..., None]) - v).squeeze(-1)
        scale = adv.std() + 1e-6 if cfg.pg_normalise else 1.0
        pg = -(logp.gather(-1, d["act"][..., None]).squeeze(-1) * adv / scale).mean()
    else:
        adv = (q_fixed - v).masked_fill(pi == 0, 0.0)
        scale = (pi.detach() * adv.pow(2)).sum(-1).mean().sqrt() + 1e-6 if cfg.pg_normalise else 1.0
        pg = -(pi * adv).sum(-1).mean() / scale
    entropy = -(pi * logp).sum(-1).mean()
    return critic_loss, pg - cfg.entropy_coef * entropy, q.detach().mean()


def _critic(critic: RelationalHead, tokens: Tensor, rel: Tensor, mask: Tensor) -> Tensor:
    """``Q(s, ., k)`` ``(S, A, n)`` of tokens ``(S, A, E, F)``, relations ``(S, A, H, E)`` and entity mask ``(S, A, E)``."""
    S, A = tokens.shape[:2]
    return critic(tokens.reshape(S * A, *tokens.shape[2:]), rel.reshape(S * A, *rel.shape[2:]), mask.reshape(S * A, -1)).view(S, A, -1)


def mi_loss(cfg: Config, policy: Policy, nets: Nets, slices: dict[str, tuple[int, int]], d: dict[str, Tensor], desc: Tensor, generator: torch.Generator) -> Tensor:
    """``-mean R_t`` of eq. (5) on one task's minibatch ``d`` with description ``desc`` ``(D,)``.

    The desired action ``a ~ pi_theta(. | s, k)`` comes from the current policy (no gradient); the
    reward is read under the frozen target policy; ``k = M_phi(s, z)`` with the stored skill in the
    numerator, ``N = mi_samples`` straight-through Gumbel-softmax skills ``z_n ~ psi(t)`` in the
    denominator. Gradients reach ``phi`` (relation net) and ``psi`` (task encoder) only.
    """
    tokens, mask = d["tokens"], d["mask"]
    S, A = tokens.shape[:2]
    N = cfg.mi_samples
    n_act = nets.critic.out.out_dim
    rel_own = policy.relations(tokens, mask, policy.skill_input(d["skill"]))  # (S, A, H, E), gradient to phi
    with torch.no_grad():
        desired = categorical_sample(_pad_logits(policy.logits(tokens, rel_own.detach(), slices, mask), n_act), generator)  # (S, A)
    logits_skill = policy.encoder(desc[None]).expand(N, -1)  # (N, K), gradient to psi
    z = gumbel_softmax(logits_skill, cfg.gumbel_temperature, hard=True, generator=generator)
    rel_n = policy.relations(tokens, mask, z[:, None, None, :].expand(N, S, A, z.shape[-1]))  # (N, S, A, H, E)
    logp_own = torch.log_softmax(_pad_logits(policy.logits(tokens, rel_own, slices, mask, nets.target_actors), n_act), -1)
    logp_n = torch.log_softmax(_pad_logits(policy.logits(tokens, rel_n, slices, mask, nets.target_actors), n_act), -1)
    own = logp_own.gather(-1, desired[..., None]).squeeze(-1)  # (S, A)
    samples = logp_n.gather(-1, desired.expand(N, S, A)[..., None]).squeeze(-1)  # (N, S, A)
    return -mi_reward(own, samples).mean()


def autoencoder_loss(policy: Policy, nets: Nets, descs: Tensor) -> Tensor:
    """Eq. (6) over the training tasks' descriptions ``(T, D)``: ``mean_t || T - psi'(softmax(psi(T))) ||_2`` (normalised units)."""
    probs = torch.softmax(policy.encoder(descs), -1)
    return reconstruction_loss(policy.encoder.normalise(descs), nets.decoder(probs))


# ====================================================================== the learner
class Learner:
    """The training state (policy, networks, optimisers, one buffer and env per task, generator,
    counters) and the loop body: ``collect`` every task, ``maybe_update`` on the schedule."""

    def __init__(self, cfg: Config, env: BatchedEnv, seed: int, capacity: int) -> None:
        if not env.spec.has_entity_obs:
            raise ValueError(f"multitask: env {env.spec.name!r} exposes no entity tokens (spec.entity_kinds is empty)")
        self.cfg, self.device = cfg, env.device
        self.envs, self.labels = build_tasks(cfg, env)
        self.policy = Policy(policy_arch(cfg, env, self.envs)).to(self.device)
        for t in self.envs:
            self.policy.bind(t)  # a task of another family fails here, naming the difference
        self.policy.bind(env)
        self.nets = Nets(self.policy).to(self.device)
        source_opts = self._init_from(cfg.init_from) if cfg.init_from else None
        self.slices = [group_slices(t) for t in self.envs]
        self.descs = torch.stack([task_vector(t, self.device) for t in self.envs])
        self.opts: dict[str, torch.optim.Optimizer] = {
            "actor": torch.optim.Adam(self.policy.actors.parameters(), lr=cfg.lr),
            "critic": torch.optim.Adam(self.nets.critic.parameters(), lr=cfg.critic_lr),
        }
        if (cfg.skills and (cfg.mi_reward or cfg.autoencoder)) or cfg.rl_relations:
            params = list(self.policy.relation.parameters()) + list(self.policy.encoder.parameters()) + list(self.nets.decoder.parameters())
            self.opts["relation"] = torch.optim.Adam(params, lr=cfg.relation_lr)
        if cfg.init_optimisers:
            self._init_optimisers(cfg.init_from, source_opts)
        self.bufs = [ReplayBuffer(capacity, replay_fields(t), self.device) for t in self.envs]
        self.generator = make_generator(seed + 7919, self.device)
        self.counters: dict[str, Any] = {"since_round": 0, "credit": 0.0, "updates": 0, "rounds": 0, "env_steps": 0}
        self.cur = []
        for t, desc in zip(self.envs, self.descs):
            obs = t.reset()
            self.cur.append({"obs": obs, "skill": self.policy.draw_skills(desc, (t.num_envs, t.spec.n_agents), self.generator)})
        self.episodes = [EpisodeStats(t.spec, self.device) for t in self.envs]
        self._loss_sum: dict[str, Tensor] = {}
        self._n: dict[str, int] = {}

    def _init_from(self, path: str) -> dict[str, Any] | None:
        """Load another multitask run's policy and trainer networks (same architecture); returns its
        optimiser states (None when the checkpoint has none)."""
        state = newest_checkpoint(path, self.device, "multitask init_from")
        state = state.get("state", state)
        src = state["policy"]
        if src.get("class") != "maestro.algos.multitask:Policy":
            raise ConfigError(f"multitask init_from {path}: not a multitask policy (class {src.get('class')!r})")
        mine = self.policy.arch
        bad = [k for k in (*ARCH_KEYS, "token_dim", "entity_kinds", "n_actions", "desc_keys") if src["arch"].get(k) != mine.get(k)]
        if bad:
            raise ConfigError(f"multitask init_from {path}: the networks differ in " + ", ".join(f"{k} ({src['arch'].get(k)} there, {mine.get(k)} here)" for k in bad))
        self.policy.load_state_dict(src["weights"])  # the description scale too: held-out tasks in the source's units
        self.policy.arch["desc_scale"] = list(src["arch"]["desc_scale"])
        if "nets" in state:
            self.nets.load_state_dict(state["nets"])
        else:
            self.nets.target_actors.load_state_dict(self.policy.actors.state_dict())
        return state.get("opts")

    def _init_optimisers(self, path: str, source: dict[str, Any] | None) -> None:
        """Start every optimiser from the source run's state (``init_optimisers``), keeping this config's learning rates."""
        if source is None or set(source) != set(self.opts):
            have = "none" if source is None else ", ".join(sorted(source))
            raise ConfigError(f"multitask init_optimisers: {path} has optimiser states for {have}, this run needs {', '.join(sorted(self.opts))} (same ablation switches)")
        for k, opt in self.opts.items():
            lrs = [g["lr"] for g in opt.param_groups]
            opt.load_state_dict(source[k])  # brings the source's rates too
            set_learning_rates(opt, lrs, 1.0)

    def collect(self) -> None:
        """One vectorised step of every task's ``B`` copies, stored in its buffer; new skills for finished copies."""
        for i, (env, buf, cur) in enumerate(zip(self.envs, self.bufs, self.cur)):
            self.policy.bind(env)
            acts, _ = self.policy.act(cur["obs"], None, {"skill": cur["skill"]}, generator=self.generator)
            out = env.step(acts)
            groups = env.spec.groups
            row = {f"obs/{g}": cur["obs"][g] for g in groups}
            row.update({f"next_obs/{g}": out.final_obs[g] for g in groups})
            row.update(
                act=torch.cat([acts[g] for g in groups], 1),
                reward=torch.cat([out.reward[g] for g in groups], 1),
                skill=cur["skill"],
                terminated=out.terminated.float(),
            )
            buf.add(row)
            skill = cur["skill"]
            if bool(out.done.any()):
                fresh = self.policy.draw_skills(self.descs[i], tuple(skill.shape), self.generator)
                skill = torch.where(out.done[:, None], fresh, skill)
            self.cur[i] = {"obs": out.obs, "skill": skill}
            self.episodes[i].add(out.info, out.done)
            self.counters["env_steps"] += env.num_envs

    def maybe_update(self, new_steps: int) -> None:
        """Algorithm 1's round when due: ``round_updates`` policy/critic steps, one MI + auto-encoder step, targets."""
        cfg, c = self.cfg, self.counters
        due, c["since_round"], c["credit"] = off_policy_updates(c["since_round"], c["credit"], new_steps, min(len(b) for b in self.bufs) * len(self.bufs), cfg.update_every, cfg.warmup_steps, 1.0 / cfg.update_every)
        if not due:
            return
        actors = cfg.actor_delay_steps == 0 or c["env_steps"] >= cfg.warmup_steps + cfg.actor_delay_steps
        for _ in range(due * cfg.round_updates):
            self._step_policy_critic(actors)
        if actors and cfg.skills and (cfg.mi_reward or cfg.autoencoder):
            self._step_relation()
        soft_update(self.nets.target_critic, self.nets.critic, cfg.tau)
        soft_update(self.nets.target_actors, self.policy.actors, cfg.tau)
        c["rounds"] += 1

    def _log(self, **losses: Tensor) -> None:
        for k, v in losses.items():
            self._loss_sum[k] = self._loss_sum.get(k, 0.0) + v.detach()
            self._n[k] = self._n.get(k, 0) + 1

    def _step_policy_critic(self, actors: bool = True) -> None:
        """One step of the critic and (``actors``) the policies (and the relation net with ``rl_relations``)."""
        cfg = self.cfg
        c_loss = p_loss = q_mean = torch.zeros((), device=self.device)
        for env, buf, sl in zip(self.envs, self.bufs, self.slices):
            d = sample_batch(env, buf, cfg.batch_size, self.generator)
            c, p, q = td_and_policy_losses(cfg, self.policy, self.nets, sl, d, self.generator)
            c_loss, p_loss, q_mean = c_loss + c, p_loss + p, q_mean + q
        groups = [("critic", list(self.nets.critic.parameters()))]
        if actors:
            groups.append(("actor", list(self.policy.actors.parameters())))
            if cfg.rl_relations:
                groups.append(("relation", list(self.policy.relation.parameters())))
        for name, _ in groups:
            self.opts[name].zero_grad(set_to_none=True)
        (c_loss + p_loss if actors else c_loss).backward()  # the critic's parameters get the critic loss, the actors' the policy loss (Q is detached there)
        for name, params in groups:
            if cfg.max_grad_norm > 0:
                nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            self.opts[name].step()
        self.counters["updates"] += 1
        T = len(self.envs)
        self._log(critic=c_loss / T, policy=p_loss / T, q=q_mean / T)

    def _step_relation(self) -> None:
        cfg = self.cfg
        loss = torch.zeros((), device=self.device)
        if cfg.mi_reward:
            mi = torch.zeros((), device=self.device)
            for env, buf, sl, desc in zip(self.envs, self.bufs, self.slices, self.descs):
                mi = mi + mi_loss(cfg, self.policy, self.nets, sl, sample_batch(env, buf, cfg.batch_size, self.generator), desc, self.generator)
            loss = loss + mi / len(self.envs)
            self._log(mi_reward=-mi / len(self.envs))
        if cfg.autoencoder:
            ae = autoencoder_loss(self.policy, self.nets, self.descs)
            loss = loss + cfg.ae_coef * ae
            self._log(autoencoder=ae)
        opt = self.opts["relation"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm > 0:
            nn.utils.clip_grad_norm_([p for group in opt.param_groups for p in group["params"]], cfg.max_grad_norm)
        opt.step()

    def run_steps(self, n: int) -> dict[str, float]:
        """``n`` collect steps of every task, each followed by the update schedule; returns ``stats()``."""
        per_step = sum(t.num_envs for t in self.envs)
        for _ in range(n):
            self.collect()
            self.maybe_update(per_step)
        return self.stats()

    @torch.no_grad()
    def stats(self) -> dict[str, float]:
        """Per task ``train/<label>/...`` episode statistics and skill entropy ``H(psi(t))``, their mean
        ``train/episode_return``, ``loss/...`` means; then reset."""
        m: dict[str, float] = {}
        returns = []
        for label, ep in zip(self.labels, self.episodes):
            s = ep.summary(f"train/{label}")
            m.update(s)
            if f"train/{label}/episode_return" in s:
                returns.append(s[f"train/{label}/episode_return"])
        if returns:
            m["train/episode_return"] = sum(returns) / len(returns)
        if self.policy.skill_dim:
            logp = torch.log_softmax(self.policy.encoder(self.descs), -1)
            for label, h in zip(self.labels, (-(logp.exp() * logp).sum(-1)).tolist()):
                m[f"skills/{label}/entropy"] = h
        for k, v in self._loss_sum.items():
            m[f"loss/{k}"] = float(v) / max(1, self._n[k])
        m["train/updates"] = float(self.counters["updates"])
        self._loss_sum, self._n = {}, {}
        return m

    def state_dict(self, replay: bool) -> dict[str, Any]:
        """Everything needed to continue exactly (the replay buffers only with ``replay``)."""
        tasks = []
        for env, buf, cur in zip(self.envs, self.bufs, self.cur):
            t = {"env": env_snapshot(env), "cur": cur}
            if replay:
                t["replay"] = buf.state_dict()
            tasks.append(t)
        return {
            "policy": self.policy.policy_state(),
            "nets": self.nets.state_dict(),
            "opts": {k: o.state_dict() for k, o in self.opts.items()},
            "generator": self.generator.get_state(),
            "counters": dict(self.counters),
            "tasks": tasks,
        }

    def load_state_dict(self, s: dict[str, Any]) -> None:
        """Inverse of ``state_dict``."""
        self.policy.load_state_dict(s["policy"]["weights"])
        self.policy.arch = copy.deepcopy(s["policy"]["arch"])
        self.nets.load_state_dict(s["nets"])
        for k, o in self.opts.items():
            o.load_state_dict(s["opts"][k])
        self.generator.set_state(s["generator"])
        self.counters.update(s["counters"])
        for i, (env, t) in enumerate(zip(self.envs, s["tasks"])):
            env_restore(env, t["env"])
            self.cur[i] = tree_to_device(t["cur"], self.device)
            if "replay" in t:
                self.bufs[i].load_state_dict(t["replay"])


# ====================================================================== train
@register_algo("multitask", config=Config, capabilities=CAPABILITIES, summary="Multi-task MARL: task encoder, Gumbel skills, relation network over entity tokens, MI reward (Zhang 2020, papers/003)")
def train_multitask(cfg: Config, env: Any, run: Run) -> Policy:
    """Train across ``cfg.tasks`` (Algorithm 1 of ``papers/003``) until the run's budget (env steps of
    all tasks) is spent or it is stopped; returns the policy, bound to ``env``.

    Each iteration steps every task's copies ``iteration_steps`` times with the update schedule after
    each step, then logs, evaluates (on ``env``) and checkpoints through ``run``.
    """
    T_iter = cfg.iteration_steps or env.spec.max_steps
    n_tasks = max(1, len(cfg.tasks))
    capacity = min(cfg.buffer_size, math.ceil(run.cfg.env_steps / n_tasks) + T_iter * env.num_envs)
    learner = Learner(cfg, env, run.seed, capacity)
    resumed = run.restore()
    if resumed is not None:
        learner.load_state_dict(resumed)
    per_iter = T_iter * sum(t.num_envs for t in learner.envs)
    while not run.finished:
        run.step(per_iter, learner.run_steps(T_iter))
        run.maybe_evaluate(learner.policy)
        run.maybe_checkpoint(lambda: learner.state_dict(cfg.checkpoint_replay))
    return learner.policy.bind(env)
