"""Multi-agent PPO: IPPO and MAPPO (from https://arxiv.org/abs/2103.01955).

Yu, Velu, Vinitsky, Gao, Wang, Bayen, Wu 2022, "The Surprising Effectiveness of PPO in Cooperative
Multi-Agent Games" (MAPPO), on top of PPO (Schulman et al. 2017, arXiv 1707.06347) with GAE
(Schulman et al. 2016, arXiv 1506.02438). IPPO (de Witt et al. 2020, arXiv 2011.09533) is the same
learner with per-agent critics on local observations; MAPPO's critic sees the global ``state``.

The learner's parts (``Config``, ``Policy``, critics, rollouts, the clipped-PPO update with the
MAPPO paper's practices, ``Learner``) are in ``maestro.core.ppo_family``, shared with the
master-slave transfer methods (``algos/transfer.py``); this module is the loop: each iteration
collects ``T`` steps of ``B`` copies, updates, folds the observations into the running statistics,
logs, evaluates and checkpoints through the run. Tensors are ``(T, B, N, ...)``.
"""

from __future__ import annotations

from typing import Any

from maestro.core.ppo_family import Config, Policy, build_learner, collect, make_adam, update, update_obs_norm
from maestro.core.run import Run
from maestro.core.schedules import linear, set_learning_rates
from maestro.core.seeding import make_generator
from maestro.registry import register_algo

__all__ = ["Config", "Policy", "train_ippo", "train_mappo", "train_ppo"]

CAPABILITIES = frozenset({"discrete", "continuous", "multi_group", "action_mask", "alive_mask", "on_policy"})
"""What both variants handle; MAPPO adds ``needs_state`` (a non-empty ``spec.state_shape``)."""


# ====================================================================== train
def train_ppo(cfg: Config, env: Any, run: Run, centralised: bool) -> Policy:
    """Train with ``run`` until its budget is spent or it is stopped; returns the policy.

    Each iteration collects ``cfg.rollout_steps`` steps of all ``env.num_envs`` copies, updates,
    logs, evaluates and checkpoints through ``run``. A resumed run continues bit for bit.
    """
    learner = build_learner(cfg, env, centralised)
    policy, critics, vnorm, buf = learner.policy, learner.critics, learner.vnorm, learner.buf
    optimiser = make_adam(cfg, *learner.params())
    generator = make_generator(run.seed + 7919, env.device)  # the trainer's sampling/minibatch randomness

    resumed = run.restore()
    if resumed is None:
        learner.start()
    else:
        learner.load(resumed)
        optimiser.load_state_dict(resumed["optimiser"])
        generator.set_state(resumed["generator"])

    def snapshot() -> dict[str, Any]:
        return {**learner.state(), "optimiser": optimiser.state_dict(), "generator": generator.get_state()}

    while not run.finished:
        lr, _ = set_learning_rates(optimiser, [cfg.lr, cfg.critic_lr], linear(1.0, cfg.lr_end_factor, run.env_steps / run.cfg.env_steps))
        learner.cur, ep_stats = collect(env, policy, buf, learner.cur, generator, learner.critic_step)
        loss_stats = update(cfg, policy, critics, optimiser, vnorm, buf, generator, centralised, env.spec, learner.scalers)
        update_obs_norm(policy, buf)
        run.step(cfg.rollout_steps * env.num_envs, {**ep_stats, **loss_stats, "train/lr": lr})
        run.maybe_evaluate(policy)
        run.maybe_checkpoint(snapshot)
    return policy


@register_algo("ippo", config=Config, capabilities=CAPABILITIES, summary="Independent PPO: per-agent critics on local observations (de Witt et al. 2020)")
def train_ippo(cfg: Config, env: Any, run: Run) -> Policy:
    """IPPO: PPO with a decentralised critic per group on each agent's observation."""
    return train_ppo(cfg, env, run, centralised=False)


@register_algo(
    "mappo", config=Config, capabilities=CAPABILITIES | {"needs_state"}, summary="Multi-agent PPO with a centralised critic on the global state (Yu et al. 2022)"
)
def train_mappo(cfg: Config, env: Any, run: Run) -> Policy:
    """MAPPO: PPO with a centralised critic per group on the global state and a one-hot agent id."""
    return train_ppo(cfg, env, run, centralised=True)
