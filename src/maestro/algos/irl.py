"""Inverse RL for architecture search, alone or with slaves by gradient momentum (papers/000, Sec. 5).

Guo & Duan validate gradient momentum (Sec. 3.2.3) on IRLAS (Guo et al., CVPR 2019): "We use 1
master 2 slaves and perform momentum gradient to the master-slave", the master on the full search
space (25 layers, 15 operations), the slaves on a reduced one (8 layers, 11 operations), and Figure 9
plots "the loss between inverse policy and the expert policy", lower being better, against "the
baseline method, which we perform the inverse reinforcement learning directly on the full
environment". maestro's reading, on the ``nas`` env (``maestro.envs.nas``, whose docstring gives the
encoding):

* **Inverse RL** (``maestro.core.irl``): apprenticeship learning, IRLAS's way of learning its
  "mirror stimuli function": the reward is linear in the env's features, ``r_t = w . phi(s_t, a_t)``
  (``env.reward_features``), the expert's feature expectations ``mu_E = sum_t gamma^t phi`` come from
  ``env.expert_demonstration()`` (ResNeXt), and after every ``irl_every`` rollouts ``w`` moves with
  the rollout's estimate of the policy's ``mu``. ``irl_method="matching"`` (the default):
  ``w = (mu_E - mu) / ||mu_E - mu||``, the gap to the current policy, so that each PPO update descends
  ``||mu_E - mu(pi)||`` (apprenticeship learning with linear costs in the unit ball, Ho & Ermon 2016,
  arXiv 1606.03476, Sec. 5); ``"projection"``: Abbeel & Ng's (2004) projection method,
  ``w = (mu_E - mu_bar) / ||mu_E - mu_bar||`` with ``mu_bar`` projected towards ``mu_E``. The
  projection method's product is the mixture of the policies found; its last policy drifted away from
  the expert on ``nas`` (docs/master_slave.md), hence the default. Each role has its own ``mu_E``,
  ``mu_bar`` and ``w`` (the slaves' features are over their own vocabulary). The rollout's rewards are
  recomputed with the new ``w`` before its PPO update (the env's own reward is not used).
* **The RL step**: PPO (``core/ppo_family.py``) with stem -> backbone -> head actors and critics, one
  update per rollout, every agent on its own env.
* **Master and slaves**: ``slaves = K`` slaves, updated with the master by ``GradientMomentum``
  (eqs. (1)-(2), the reading in ``core/gradient_momentum.py``); the backbones and the critics'
  heads have the same shapes and are paired, the stems and the actors' heads (whose shapes follow
  the vocabularies) are not. ``slaves = 0`` is Figure 9's baseline: the master alone, with the same
  optimiser (momentum SGD, eq. (1)) and the same inverse RL.
* **The loss of Figure 9**: ``irl/feature_distance``, ``||mu_E - mu(pi)||`` of the master's current
  policy (the rollout's estimate; ``irl/relative_distance`` divides it by ``||mu_E||``), beside
  ``irl/margin`` (the projection method's ``t``) and the episodes' ``train/expert_match`` (share of
  layers equal to the expert's).

Budget: ``run.env_steps`` counts every env's steps (master and slaves), as ``algos/transfer.py``; the
master's alone are ``train/master_env_steps``. What IRLAS adds and maestro leaves out: the searched
networks' accuracy after training (its task reward). The paper gives no RL settings for this
experiment; the defaults below are maestro's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from maestro.core import ppo_family as ppo
from maestro.core.irl import feature_expectations, projection_step, reward_weights
from maestro.core.master_slave import check_master, episode_stats, make_slave_env, momentum_optimiser, momentum_step
from maestro.core.ppo_family import Learner, Policy, build_learner, ppo_epochs, prepare_batch, update_obs_norm
from maestro.core.run import Run
from maestro.core.schedules import linear
from maestro.core.seeding import make_generator
from maestro.registry import Smoke, register_algo

CAPABILITIES = frozenset({"discrete", "on_policy", "needs_roles", "needs_reward_features"})
"""One group, master and slave roles, a reward linear in features the env exposes (``nas``)."""


@dataclass(frozen=True)
class Config(ppo.Config):
    """PPO's ``Config`` with the architecture search's defaults, plus the master-slave and IRL settings."""

    rollout_steps: int = 48
    """Steps per env copy between updates (two full master architectures)."""
    epochs: int = 4
    """Passes over each rollout."""
    minibatches: int = 4
    """Minibatches per epoch."""
    gamma: float = 0.99
    """Discount of the returns and of the feature expectations."""
    hidden: tuple[int, ...] = (64, 64, 64)
    """Stem 64, backbone 64 -> 64, head: the paper's four-layer actor and critic."""
    activation: Literal["relu", "tanh"] = "tanh"
    network: Literal["mlp", "stem_backbone_head"] = "stem_backbone_head"
    """Stem / backbone / head networks: gradient momentum pairs their backbones."""
    feature_norm: bool = False
    """The observation is one-hots and a histogram: no input LayerNorm."""
    max_grad_norm: float = 0.5
    """Gradient clip of each agent's networks."""
    slaves: int = 2
    """Number K of slaves (papers/000: 2); 0 is inverse RL on the master alone (Figure 9's baseline)."""
    momentum_lr: float = 0.1
    """The learning rate ``alpha`` of eqs. (1)-(2), annealed as ``lr`` (``lr_end_factor``)."""
    momentum_beta: float = 0.9
    """The momentum rate ``beta`` of eqs. (1)-(2)."""
    momentum_pairing: Literal["shape", "overlap"] = "shape"
    """Which master and slave tensors pair: ``"shape"``, those of equal shape (backbones, stem biases,
    critic heads); ``"overlap"``, also the stems' columns and the actor heads' rows of the slave's
    features and operations (``env.slave_indices()``; ``core/gradient_momentum.py``)."""
    irl_every: int = 1
    """Rollouts between updates of the reward weights ``w``."""
    irl_method: Literal["matching", "projection"] = "matching"
    """How ``w`` follows the policies (module docstring): ``"matching"``, ``w`` the unit gap between the
    expert's and the current policy's feature expectations (Ho & Ermon 2016's linear-cost
    apprenticeship learning, a descent on ``||mu_E - mu(pi)||``); ``"projection"``, Abbeel & Ng's
    projection method (the gap to the projected mixture ``mu_bar``)."""

    SMOKE: ClassVar[Smoke] = Smoke(config={"rollout_steps": 4, "epochs": 2, "minibatches": 2, "hidden": (8, 8), "slaves": 1})
    """``check_algo``'s settings: a master and one slave, every iteration an IRL and a PPO update."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.network != "stem_backbone_head":
            raise ValueError(f"irl needs network='stem_backbone_head', got {self.network!r}")
        if self.slaves < 0 or self.irl_every < 1:
            raise ValueError(f"slaves must be >= 0 and irl_every >= 1, got {self.slaves}, {self.irl_every}")
        if self.momentum_lr <= 0 or not 0.0 <= self.momentum_beta < 1.0:
            raise ValueError(f"momentum_lr must be > 0 and momentum_beta in [0, 1), got {self.momentum_lr}, {self.momentum_beta}")


# ====================================================================== inverse RL per role
def expert_feature_expectations(env: Any, gamma: float) -> Tensor:
    """``mu_E`` ``(F,)`` of ``env``'s expert demonstration (one episode)."""
    obs, actions = env.expert_demonstration()
    phi = env.reward_features(obs, actions)
    return feature_expectations(phi, torch.arange(len(actions), device=phi.device), gamma)


@dataclass
class Inverse:
    """One role's inverse-RL state: ``mu_E``, ``mu_bar`` (``None`` before the first update), the
    reward weights ``w``, and each env copy's step index within its episode ``(B,)``."""

    mu_expert: Tensor
    mu_bar: Tensor | None
    w: Tensor
    t: Tensor

    def state(self) -> dict[str, Any]:
        return {"mu_bar": self.mu_bar, "w": self.w, "t": self.t}

    def load(self, s: dict[str, Any]) -> None:
        self.mu_bar, self.w, self.t = s["mu_bar"], s["w"], s["t"]


def step_positions(t0: Tensor, done: Tensor) -> tuple[Tensor, Tensor]:
    """Each step's index within its episode ``(T, B)`` from the copies' indices at the rollout's start
    ``t0`` ``(B,)`` and the ``done`` flags ``(T, B)``; and the indices after the rollout ``(B,)``."""
    out, t = [], t0
    for d in done:
        out.append(t)
        t = torch.where(d, torch.zeros_like(t), t + 1)
    return torch.stack(out), t


def collect_with_irl(cfg: Config, learner: Learner, inv: Inverse, update_reward: bool, generator: torch.Generator) -> tuple[dict[str, float], dict[str, Any], dict[str, float]]:
    """One rollout of ``learner`` on its env; the policy's feature expectations from it; the reward
    weights updated (``update_reward``); the rollout's rewards recomputed as ``w . phi``; PPO's
    prepared samples. Returns ``(episode stats, samples, IRL metrics)``."""
    learner.cur, stats = ppo.collect(learner.env, learner.policy, learner.buf, learner.cur, generator)
    (g,) = learner.env.spec.groups
    gb = learner.buf["groups"][g]
    phi = learner.env.reward_features(gb["obs"], gb["action"])  # (T, B, N, F)
    pos, inv.t = step_positions(inv.t, learner.buf["done"])
    mu = feature_expectations(phi, pos[..., None].expand(phi.shape[:-1]), cfg.gamma)
    if update_reward or inv.mu_bar is None:
        inv.mu_bar = projection_step(inv.mu_bar, mu, inv.mu_expert)
        inv.w, _ = reward_weights(inv.mu_expert, mu if cfg.irl_method == "matching" else inv.mu_bar)
    margin = (inv.mu_expert - inv.mu_bar).norm()
    gb["reward"].copy_(phi @ inv.w)
    data = prepare_batch(cfg, learner.policy, learner.critics, learner.vnorm, learner.buf, learner.centralised, learner.scalers)
    dist = (inv.mu_expert - mu).norm()
    metrics = {"irl/feature_distance": float(dist), "irl/relative_distance": float(dist / inv.mu_expert.norm()), "irl/margin": float(margin)}
    return stats, data, metrics


# ====================================================================== the trainer
@register_algo("irl", config=Config, capabilities=CAPABILITIES, summary="Inverse RL (apprenticeship learning: feature matching or projection) for architecture search, master alone or with slaves by gradient momentum (Guo & Duan, IRLAS)")
def train_irl(cfg: Config, env: Any, run: Run) -> Policy:
    """Figure 9 of papers/000: inverse RL on the master, helped by ``cfg.slaves`` slaves through
    gradient momentum (module docstring). Returns the master's policy."""
    check_master(env)
    generator = make_generator(run.seed + 7919, env.device)
    master = build_learner(cfg, env, centralised=False)
    slaves = [build_learner(cfg, make_slave_env(env, run.seed + 101 * (k + 1)), centralised=False) for k in range(cfg.slaves)]
    everyone = [master, *slaves]
    names = ["master", *(f"slave{k}" for k in range(cfg.slaves))]
    optimiser = momentum_optimiser(master, slaves, cfg.momentum_pairing, cfg.momentum_lr, cfg.momentum_beta)
    inverse = []
    for learner in everyone:
        mu_e = expert_feature_expectations(learner.env, cfg.gamma)
        inverse.append(Inverse(mu_e, None, torch.zeros_like(mu_e), torch.zeros(learner.env.num_envs, dtype=torch.long, device=env.device)))
    iteration = 0

    resumed = run.restore()
    if resumed is None:
        for learner in everyone:
            learner.start()
    else:
        for learner, inv, state in zip(everyone, inverse, [resumed, *resumed["slaves"]]):
            learner.load(state)
            inv.load(state["irl"])
        optimiser.load_state_dict(resumed["optimiser"])
        generator.set_state(resumed["generator"])
        iteration = resumed["iteration"]

    def snapshot() -> dict[str, Any]:
        states = [{**learner.state(), "irl": inv.state()} for learner, inv in zip(everyone, inverse)]
        return {**states[0], "slaves": states[1:], "optimiser": optimiser.state_dict(), "generator": generator.get_state(), "iteration": iteration}

    step = momentum_step(optimiser, everyone, names, cfg.max_grad_norm)
    while not run.finished:
        optimiser.lr = cfg.momentum_lr * linear(1.0, cfg.lr_end_factor, run.env_steps / run.cfg.env_steps)
        update_reward = iteration % cfg.irl_every == 0
        batches, metrics = [], {}
        for name, learner, inv in zip(names, everyone, inverse):
            stats, data, irl_metrics = collect_with_irl(cfg, learner, inv, update_reward, generator)
            batches.append((learner.policy, learner.critics, data))
            if name == "master":
                metrics.update(stats)
                metrics.update(irl_metrics)
            else:
                metrics.update(episode_stats(stats, name))
                metrics.update({f"{name}/{k}": v for k, v in irl_metrics.items()})
        losses = ppo_epochs(cfg, batches, generator, step)
        for learner in everyone:
            update_obs_norm(learner.policy, learner.buf)
        iteration += 1
        master_steps = iteration * cfg.rollout_steps * master.env.num_envs
        steps = cfg.rollout_steps * sum(learner.env.num_envs for learner in everyone)
        run.step(steps, {**metrics, **losses, "train/lr": optimiser.lr, "train/master_env_steps": float(master_steps)})
        run.maybe_evaluate(master.policy)
        run.maybe_checkpoint(snapshot)
    return master.policy
