"""Centralised and independent TRPO: the baselines of MATRPO (Li & He 2020, arXiv 2010.07916, Sec. VI).

TRPO is Schulman et al. 2015 (arXiv 1502.05477): maximise the importance-sampled surrogate
``E[pi(a|s) / pi_old(a|s) * A]`` subject to ``E[KL(pi_old || pi)] <= delta``, one natural-gradient step
per batch (conjugate gradient on Fisher-vector products, step scaled to the KL bound, backtracking
line search; ``maestro.core.trust_region``). The two baselines of the MATRPO paper:

- ``trpo_central`` ("a fully centralized method, which uses TRPO to learn a global policy by reducing
  the problem to a single-agent RL"): one 2x128 SELU network over the concatenation of all agents'
  observations, one categorical head per agent, the joint action's probability their product;
  trained on the **team** advantage ``A = sum_i A_i`` (the team reward is the sum of the private
  rewards, so the team advantage is the sum of the private ones, eq. 5 of the paper);
- ``trpo_independent`` ("an independent learning method, which uses TRPO to learn a local policy by
  maximizing the local expected rewards"): agent ``i``'s own network on its own observation, one
  head for its own action, trained on its own advantage ``A_i``, each agent its own TRPO step inside
  its own KL bound.

In both, every agent has a value network on its own observation, regressed on its private
reward's returns, and GAE advantages (``maestro.core.trpo_family``). Advantages are normalised
(mean 0, std 1) before the step: the team advantage as one column, the independent agents' each
with its own statistics.

One iteration: sample ``T`` steps of ``B`` copies (Table I: 100 x 100 = 10k env steps) -> advantages
and value fit -> one TRPO step (all independent agents at once: their ``N`` networks are the rows
of one parameter tensor and every batched trust-region operation keeps the rows apart) -> log,
evaluate, checkpoint.

Departures from the authors' code (``hepengli/matrpo``): their "central" mode trains the first
agent's local policy over the joint action on that agent's own observation and advantage; maestro's
central policy sees every observation and the team advantage, as the paper's text and issue 21
describe. Their GAE runs across episode ends (``finite=False``); maestro cuts it there and
bootstraps truncations from the value of the final observation. Their step length uses ``g^T d``,
maestro ``d^T F d`` (equal when CG converges).

Tensors: ``(T, B, N, ...)`` time, env copies, agents; ``M = T * B`` samples; ``K`` networks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from maestro.core.joint_policy import HeadsOnBatch, JointPolicy
from maestro.core.run import Run
from maestro.core.trpo_family import TrpoAgents, TrpoFamilyConfig, agent_major, normalise_rows
from maestro.core.trust_region import batched_trust_region_step
from maestro.registry import Smoke, register_algo

CAPABILITIES = frozenset({"discrete", "multi_group", "on_policy"})
"""Unmasked discrete actions of any number of groups (all with the same action count)."""


@dataclass(frozen=True)
class Config(TrpoFamilyConfig):
    """TRPO settings (all in ``TrpoFamilyConfig``): Table I of the MATRPO paper and the authors' code."""

    SMOKE: ClassVar[Smoke] = Smoke(config={"rollout_steps": 4, "hidden": (8,), "vf_epochs": 1, "vf_minibatch": 4})
    """``check_algo``'s settings: 4 steps x 4 copies per iteration, one tiny hidden layer."""


def trpo_update(cfg: TrpoFamilyConfig, policy: JointPolicy, obs: Tensor, actions: Tensor, advantages: Tensor) -> dict[str, float]:
    """One TRPO step of each of the policy's ``K`` networks on its own advantages; ``policy.theta`` is updated.

    Args:
        cfg: trust-region settings.
        policy: ``central`` (``K = 1``) or ``independent`` (``K = N``).
        obs: ``(M, N, D)`` stacked observations.
        actions: ``(M, N)`` joint actions.
        advantages: ``(K, M)`` normalised advantages of each network.

    Returns the step's metrics (means over the networks).
    """
    heads = HeadsOnBatch.of_batch(policy, obs, actions, cfg.fisher_every)
    K = heads.theta_old.shape[0]
    if advantages.shape != (K, heads.num_samples):
        raise ValueError(f"trpo_update: advantages have shape {tuple(advantages.shape)}, expected ({K}, {heads.num_samples})")
    rows = torch.arange(K, device=obs.device)

    def loss_of(log_ratios: Tensor, rows: Tensor) -> Tensor:  # -surrogate per row, (k,)
        return -(torch.exp(log_ratios.sum(-1)) * advantages[rows]).mean(-1)

    # at theta_old every log-ratio is 0: the loss is -mean(A) and its gradient -(1/M) J^T (A 1^T)
    loss = -advantages.mean(-1)
    weights = -(advantages / heads.num_samples).unsqueeze(-1).expand_as(heads.old_logp)
    grad = heads.log_ratio_vjp(rows, weights)
    fvp = heads.fisher_product(rows, cfg.cg_damping)

    def evaluate(theta: Tensor, rows: Tensor) -> tuple[Tensor, Tensor, None]:
        log_ratios, kl = heads.log_ratios_and_kl(theta, rows)
        return loss_of(log_ratios, rows), kl, None

    theta, result = batched_trust_region_step(
        heads.theta_old, grad, fvp, evaluate, cfg.max_kl, loss.detach(),
        cg_iterations=cfg.cg_iterations, kl_factor=cfg.kl_factor, max_backtracks=cfg.max_backtracks,
    )
    with torch.no_grad():
        policy.theta.copy_(theta)
    return {
        "loss/surrogate_improvement": float(result.improvement.mean()),
        "loss/expected_improvement": float(result.expected_improvement.mean()),
        "loss/kl": float(result.kl.mean()),
        "loss/kl_max": float(result.kl.max()),
        "loss/step_accepted": float(result.accepted.float().mean()),
        "loss/step_fraction": float(result.step_fraction.mean()),
    }


def train_trpo(cfg: Config, env: Any, run: Run, central: bool) -> JointPolicy:
    """Train centralised (``central``) or independent TRPO until the run's budget is spent or it is stopped."""
    agents = TrpoAgents(cfg, env, run, "central" if central else "independent")
    N, D = agents.axis.n_agents, agents.axis.obs_dim
    M = agents.batch.num_samples
    while not run.finished:
        t0 = time.perf_counter()
        stats = agents.sample()
        advantages, value_loss = agents.advantages()  # (T, B, N), (N,)
        if central:
            advantages = advantages.sum(-1, keepdim=True)  # the team advantage
        advantages = normalise_rows(agent_major(advantages))  # (K, M)
        metrics = trpo_update(cfg, agents.policy, agents.batch.obs.reshape(M, N, D), agents.batch.actions.reshape(M, N), advantages)
        metrics["loss/value"] = float(value_loss.mean())
        metrics["time/iteration_s"] = time.perf_counter() - t0
        run.step(M, {**stats, **metrics})
        run.maybe_evaluate(agents.policy)
        run.maybe_checkpoint(agents.snapshot)
    return agents.policy


@register_algo("trpo_central", config=Config, capabilities=CAPABILITIES, summary="Centralised TRPO: one policy over all observations, the joint action, the team advantage (MATRPO's baseline)")
def train_trpo_central(cfg: Config, env: Any, run: Run) -> JointPolicy:
    """Centralised TRPO (Li & He 2020, Sec. VI): one network over the concatenated observations."""
    return train_trpo(cfg, env, run, central=True)


@register_algo("trpo_independent", config=Config, capabilities=CAPABILITIES, summary="Independent TRPO: each agent its own TRPO on its observation and private reward (MATRPO's baseline)")
def train_trpo_independent(cfg: Config, env: Any, run: Run) -> JointPolicy:
    """Independent TRPO (Li & He 2020, Sec. VI): each agent's own network, advantage and trust region."""
    return train_trpo(cfg, env, run, central=False)
