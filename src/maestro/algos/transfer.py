"""Master-slave transfer: pre-training, multi-tasking and gradient momentum (Guo & Duan, papers/000).

"Improve the Training Efficiency for Multi-Agent RL using Master-Slave Framework", Sec. 3.2: a cheap
*slave* environment (fewer degrees of freedom, or looser constraints) helps the expensive *master*
environment learn. The recipe's env is the master (``role="master"``, e.g. ``walker2d``,
``humanoid``); the slaves are the same env with ``role="slave"``, built here with their own seeds.
Every agent is PPO for continuous control (``core/ppo_family.py``: its ``Learner``, ``prepare_batch``,
``ppo_epochs``) with stem -> backbone -> head actors and critics (``nn/stem_backbone_head.py``,
four-layer MLPs with ``hidden = (64, 64, 64)``), running observation normalisation and reward scaling.

* ``pretraining`` (Sec. 3.2.1): PPO on the slave for ``slave_steps`` env steps, then PPO on the master
  from the slave's weights for the rest of the budget. Where the shapes differ (Humanoid: 45 vs 348
  observations, 11 vs 17 actions) the slave's weights fill the overlapping columns of the stems and
  rows of the actor's head and the rest is zero (``copy_overlap``); the log-std of the slave's
  actions and the observation statistics of the overlapping features are copied (the others keep
  their fresh values), the value and reward statistics are copied. The master's optimiser starts fresh.
* ``multitasking`` (Sec. 3.2.2): master and slave trained at the same time, each on its own env,
  actors and critics sharing the backbone (and the stem when the observation spaces are equal, as
  for Walker2d), each with its own head; one Adam step per minibatch on the sum of both PPO losses,
  so the shared parts receive both gradients.
* ``gradient_momentum`` (Sec. 3.2.3): one master and ``slaves`` = K slaves, each its own network on
  its own env, updated by ``maestro.core.gradient_momentum.GradientMomentum``, eqs. (1)-(2) (the
  reading is stated there: the master moves along ``beta V_t + (1 - beta) mean_k s^k_t``, the slaves
  along the master's momentum ``V_t``). Tensors of equal shape are paired (Walker2d: all of them;
  Humanoid: all but the stems' weights, the actor's head and its log-std, whose shapes follow the
  observation and action sizes); the others take plain momentum SGD on their own gradients.

Budget: ``run.env_steps`` counts the steps of every env (master and slaves): the interaction cost.
Metrics: the master's episodes are ``train/...`` (the run's key metric); the slaves' are
``slave/...`` (``slave<k>/...`` for gradient momentum). Evaluation runs the master's policy on
the master env; during pre-training's slave phase nothing is evaluated and the checkpoints hold the
slave's policy. The paper reports no budgets or PPO hyperparameters for these experiments; the
defaults are CleanRL's ``ppo_continuous_action`` for MuJoCo.

The module reads top to bottom: ``Config`` -> the slave envs -> the three trainers, each
(build, ``run.restore()``, ``snapshot()``, the loop).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from maestro.core import ppo_family as ppo
from maestro.core.master_slave import check_master, episode_stats, make_slave_env, momentum_optimiser, momentum_step
from maestro.core.ppo_family import Learner, Policy, adam_step, build_learner, make_adam, ppo_epochs, update_obs_norm
from maestro.core.run import Run
from maestro.core.schedules import linear, set_learning_rates
from maestro.core.seeding import make_generator
from maestro.nn.stem_backbone_head import StemBackboneHead, copy_overlap, share_parts
from maestro.registry import Smoke, register_algo

CAPABILITIES = frozenset({"continuous", "discrete", "on_policy", "needs_roles"})
"""One group of agents, an env with master and slave roles (``EnvSpec.roles``)."""


# ====================================================================== config
@dataclass(frozen=True)
class Config(ppo.Config):
    """PPO's ``Config`` with MuJoCo defaults (CleanRL ``ppo_continuous_action``: 2048 steps per
    update as 8 copies x 256, 10 epochs of 32 minibatches, lr 3e-4 annealed, tanh, 0.5 value
    coefficient, no entropy bonus, gradient clip 0.5, observation normalisation and reward scaling)
    and the paper's stem/backbone/head networks, plus the transfer settings."""

    rollout_steps: int = 256
    """Steps per env copy between updates (x 8 copies = CleanRL's 2048)."""
    minibatches: int = 32
    """Minibatches per epoch (CleanRL: 32)."""
    lr: float = 3e-4
    """Adam learning rate of the actors (CleanRL: 3e-4)."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critics (CleanRL: 3e-4)."""
    lr_end_factor: float = 0.0
    """Learning rates annealed linearly to 0 over each phase (CleanRL's ``anneal_lr``)."""
    value_loss: Literal["huber", "mse"] = "mse"
    """Plain squared error on the (unnormalised) returns (CleanRL)."""
    value_coef: float = 0.5
    """CleanRL's ``vf_coef``."""
    entropy_coef: float = 0.0
    """CleanRL's ``ent_coef`` for MuJoCo."""
    max_grad_norm: float = 0.5
    """CleanRL's gradient clip."""
    value_norm: bool = False
    """CleanRL trains the critic on raw (scaled-reward) returns."""
    hidden: tuple[int, ...] = (64, 64, 64)
    """Stem 64, backbone 64 -> 64, head: the paper's four-layer actor and critic."""
    activation: Literal["relu", "tanh"] = "tanh"
    """CleanRL's MuJoCo activation."""
    feature_norm: bool = False
    """No input LayerNorm: observation normalisation instead."""
    init_log_std: float = 0.0
    """Initial action standard deviation 1 (CleanRL)."""
    network: Literal["mlp", "stem_backbone_head"] = "stem_backbone_head"
    """Stem / backbone / head actors and critics (the parts the transfer methods share and copy)."""
    obs_norm: bool = True
    """Running observation normalisation (CleanRL's ``NormalizeObservation``)."""
    reward_scale: bool = True
    """Reward scaling (CleanRL's ``NormalizeReward``)."""
    slave_steps: int = 500_000
    """Pre-training: env steps of the slave phase (counted in the run's budget)."""
    slaves: int = 1
    """Gradient momentum: number K of slaves (the paper's architecture search used 2)."""
    momentum_lr: float = 3e-2
    """Gradient momentum: the learning rate ``alpha`` of eqs. (1)-(2), annealed as ``lr``."""
    momentum_beta: float = 0.9
    """Gradient momentum: the momentum rate ``beta`` of eqs. (1)-(2)."""
    momentum_pairing: Literal["shape", "overlap"] = "shape"
    """Gradient momentum: which master and slave tensors pair (``core/gradient_momentum.py``):
    ``"shape"``, those of equal shape, whole (Humanoid: not the stems' input weights, the actor's head
    and log-std; the Table 2 runs); ``"overlap"``, also the part of those that the slave's
    observations and actions cover (``env.slave_indices()``)."""

    SMOKE: ClassVar[Smoke] = Smoke(
        config={"rollout_steps": 4, "epochs": 2, "minibatches": 2, "hidden": (8, 8), "slave_steps": 16},
        num_envs=4,
        iterations=3,
        stop_at=1,
    )
    """``check_algo``'s settings: pre-training switches to the master after the first iteration (16
    slave steps), so the resume check crosses the switch."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.network != "stem_backbone_head":
            raise ValueError(f"the transfer methods need network='stem_backbone_head', got {self.network!r}")
        if self.slave_steps < 0 or self.slaves < 1:
            raise ValueError(f"slave_steps must be >= 0 and slaves >= 1, got {self.slave_steps}, {self.slaves}")
        if self.momentum_lr <= 0 or not 0.0 <= self.momentum_beta < 1.0:
            raise ValueError(f"momentum_lr must be > 0 and momentum_beta in [0, 1), got {self.momentum_lr}, {self.momentum_beta}")


# ====================================================================== helpers
def nets(learner: Learner) -> list[StemBackboneHead]:
    """The learner's actor and critic networks, in a fixed order."""
    return [*learner.policy.actors.values(), *learner.critics.values()]


# ====================================================================== pre-training
@torch.no_grad()
def start_from_slave(master: Learner, slave: Learner, obs_index: list[int], action_index: list[int]) -> None:
    """Initialise ``master`` from ``slave`` (module docstring, pre-training): overlapping weights
    copied, the rest zero; log-std, observation statistics (overlap), value and reward statistics copied."""
    for g in master.policy.layout:
        copy_overlap(slave.policy.actors[g], master.policy.actors[g], obs_index, action_index)
        copy_overlap(slave.critics[g], master.critics[g], obs_index, [0])
        if g in master.policy.log_std:
            master.policy.log_std[g][action_index] = slave.policy.log_std[g]
        if g in master.policy.obs_norm:
            for name in ("mean", "var", "count"):
                getattr(master.policy.obs_norm[g], name)[obs_index] = getattr(slave.policy.obs_norm[g], name)
        master.vnorm[g].load_state_dict(slave.vnorm[g].state_dict())
        if master.scalers and slave.scalers:
            master.scalers[g].load_state_dict(slave.scalers[g].state_dict())


@register_algo("pretraining", config=Config, capabilities=CAPABILITIES, summary="Master-slave pre-training: PPO on the slave, then the master from its weights (Guo & Duan)")
def train_pretraining(cfg: Config, env: Any, run: Run) -> Policy:
    """Pre-training (papers/000, Sec. 3.2.1): the slave for ``cfg.slave_steps`` env steps, then the master."""
    check_master(env)
    generator = make_generator(run.seed + 7919, env.device)
    slave = build_learner(cfg, make_slave_env(env, run.seed + 101), centralised=False)
    learner, optimiser = slave, make_adam(cfg, *slave.params())
    phase = "slave"

    def switch_to_master() -> None:
        nonlocal learner, optimiser, phase
        master = build_learner(cfg, env, centralised=False)
        start_from_slave(master, slave, *env.slave_indices())
        learner, optimiser, phase = master, make_adam(cfg, *master.params()), "master"

    resumed = run.restore()
    if resumed is None:
        slave.start()
    else:
        if resumed["phase"] == "master":
            switch_to_master()
        learner.load(resumed)
        optimiser.load_state_dict(resumed["optimiser"])
        generator.set_state(resumed["generator"])

    def snapshot() -> dict[str, Any]:
        return {**learner.state(), "optimiser": optimiser.state_dict(), "generator": generator.get_state(), "phase": phase}

    while not run.finished:
        if phase == "slave" and run.env_steps >= cfg.slave_steps:
            switch_to_master()
            learner.start()
        if phase == "slave":
            progress = run.env_steps / max(1, cfg.slave_steps)
        else:
            progress = (run.env_steps - cfg.slave_steps) / max(1, run.cfg.env_steps - cfg.slave_steps)
        lr, _ = set_learning_rates(optimiser, [cfg.lr, cfg.critic_lr], linear(1.0, cfg.lr_end_factor, progress))
        stats, data = learner.collect(generator)
        losses = ppo_epochs(cfg, [(learner.policy, learner.critics, data)], generator, adam_step(cfg, optimiser, *learner.params()))
        update_obs_norm(learner.policy, learner.buf)
        episodes = stats if phase == "master" else episode_stats(stats, "slave")
        run.step(cfg.rollout_steps * env.num_envs, {**episodes, **losses, "train/lr": lr, "train/phase": float(phase == "master")})
        if phase == "master":
            run.maybe_evaluate(learner.policy)
        run.maybe_checkpoint(snapshot)
    return learner.policy


# ====================================================================== multi-tasking
def share_networks(master: Learner, slave: Learner) -> list[str]:
    """Make the slave's actors and critics use the master's backbones, and stems too when the
    observation spaces are equal; returns the shared parts."""
    same_obs = all(master.policy.layout[g].obs_shape == slave.policy.layout[g].obs_shape for g in master.policy.layout)
    parts = ["stem", "backbone"] if same_obs else ["backbone"]
    for m, s in zip(nets(master), nets(slave)):
        share_parts(m, s, parts)
    return parts


def unique(params: list[nn.Parameter]) -> list[nn.Parameter]:
    """``params`` without repeats (shared modules appear in both agents), in first-seen order."""
    seen: dict[int, nn.Parameter] = {}
    for p in params:
        seen.setdefault(id(p), p)
    return list(seen.values())


@register_algo("multitasking", config=Config, capabilities=CAPABILITIES, summary="Master-slave multi-tasking: both trained at once, sharing backbone (and stem) (Guo & Duan)")
def train_multitasking(cfg: Config, env: Any, run: Run) -> Policy:
    """Multi-tasking (papers/000, Sec. 3.2.2): master and slave PPO on their own envs, shared backbone."""
    check_master(env)
    generator = make_generator(run.seed + 7919, env.device)
    master = build_learner(cfg, env, centralised=False)
    slave = build_learner(cfg, make_slave_env(env, run.seed + 101), centralised=False)
    share_networks(master, slave)
    actor_params = unique([*master.params()[0], *slave.params()[0]])
    critic_params = unique([*master.params()[1], *slave.params()[1]])
    optimiser = make_adam(cfg, actor_params, critic_params)

    resumed = run.restore()
    if resumed is None:
        master.start()
        slave.start()
    else:
        master.load(resumed)
        slave.load(resumed["slave"])
        optimiser.load_state_dict(resumed["optimiser"])
        generator.set_state(resumed["generator"])

    def snapshot() -> dict[str, Any]:
        return {**master.state(), "slave": slave.state(), "optimiser": optimiser.state_dict(), "generator": generator.get_state()}

    while not run.finished:
        lr, _ = set_learning_rates(optimiser, [cfg.lr, cfg.critic_lr], linear(1.0, cfg.lr_end_factor, run.env_steps / run.cfg.env_steps))
        stats, data = master.collect(generator)
        slave_stats, slave_data = slave.collect(generator)
        batches = [(master.policy, master.critics, data), (slave.policy, slave.critics, slave_data)]
        losses = ppo_epochs(cfg, batches, generator, adam_step(cfg, optimiser, actor_params, critic_params))
        update_obs_norm(master.policy, master.buf)
        update_obs_norm(slave.policy, slave.buf)
        steps = cfg.rollout_steps * (env.num_envs + slave.env.num_envs)
        run.step(steps, {**stats, **episode_stats(slave_stats, "slave"), **losses, "train/lr": lr})
        run.maybe_evaluate(master.policy)
        run.maybe_checkpoint(snapshot)
    return master.policy


# ====================================================================== gradient momentum
@register_algo("gradient_momentum", config=Config, capabilities=CAPABILITIES, summary="Master-slave gradient momentum: eqs. (1)-(2) over one master and K slaves (Guo & Duan)")
def train_gradient_momentum(cfg: Config, env: Any, run: Run) -> Policy:
    """Gradient momentum (papers/000, Sec. 3.2.3): the master and ``cfg.slaves`` slaves, each its own
    PPO loss on its own env, updated together by ``GradientMomentum``."""
    check_master(env)
    generator = make_generator(run.seed + 7919, env.device)
    master = build_learner(cfg, env, centralised=False)
    slaves = [build_learner(cfg, make_slave_env(env, run.seed + 101 * (k + 1)), centralised=False) for k in range(cfg.slaves)]
    optimiser = momentum_optimiser(master, slaves, cfg.momentum_pairing, cfg.momentum_lr, cfg.momentum_beta)
    everyone = [master, *slaves]

    resumed = run.restore()
    if resumed is None:
        for learner in everyone:
            learner.start()
    else:
        master.load(resumed)
        for s, state in zip(slaves, resumed["slaves"]):
            s.load(state)
        optimiser.load_state_dict(resumed["optimiser"])
        generator.set_state(resumed["generator"])

    def snapshot() -> dict[str, Any]:
        return {**master.state(), "slaves": [s.state() for s in slaves], "optimiser": optimiser.state_dict(), "generator": generator.get_state()}

    step = momentum_step(optimiser, everyone, ["master", *(f"slave{k}" for k in range(len(slaves)))], cfg.max_grad_norm)

    while not run.finished:
        optimiser.lr = cfg.momentum_lr * linear(1.0, cfg.lr_end_factor, run.env_steps / run.cfg.env_steps)
        collected = [learner.collect(generator) for learner in everyone]
        batches = [(learner.policy, learner.critics, data) for learner, (_, data) in zip(everyone, collected)]
        losses = ppo_epochs(cfg, batches, generator, step)
        for learner in everyone:
            update_obs_norm(learner.policy, learner.buf)
        metrics = dict(collected[0][0])
        for k, (stats, _) in enumerate(collected[1:]):
            metrics.update(episode_stats(stats, f"slave{k}"))
        steps = cfg.rollout_steps * sum(learner.env.num_envs for learner in everyone)
        run.step(steps, {**metrics, **losses, "train/lr": optimiser.lr})
        run.maybe_evaluate(master.policy)
        run.maybe_checkpoint(snapshot)
    return master.policy
