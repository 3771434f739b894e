"""Returns and advantages: generalised advantage estimation and discounted returns.

GAE is from Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized
Advantage Estimation" (arXiv 1506.02438), eq. 16. With auto-resetting batched envs a step can
end an episode by *termination* (no bootstrap: the value of a terminal state is 0) or by
*truncation* (bootstrap from the value of the pre-reset observation, ``final_obs``), as in
Pardo et al. 2018, "Time Limits in Reinforcement Learning" (arXiv 1712.00378). Hence the two
inputs ``terminated`` (cuts the bootstrap) and ``done`` (cuts the recursion).

Shapes: ``(T, B, ...)`` (time, env copies, then anything, e.g. agents ``N``); ``terminated`` and
``done`` are ``(T, B)`` or already broadcastable to the rewards (``(T, B, 1)``).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _expand(flag: Tensor, like: Tensor, name: str) -> Tensor:
    """``flag`` ``(T, B)`` -> float ``(T, B, 1, ...)`` broadcastable to ``like`` ``(T, B, ...)``."""
    if flag.shape[:2] != like.shape[:2]:
        raise ValueError(f"{name} has shape {tuple(flag.shape)}, expected leading (T, B) = {tuple(like.shape[:2])}")
    f = flag.to(like.dtype)
    while f.dim() < like.dim():
        f = f.unsqueeze(-1)
    return f


def gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    done: Tensor,
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimates and lambda-returns.

    Args:
        rewards: ``(T, B, ...)`` reward of step ``t``.
        values: ``(T, B, ...)`` ``V(s_t)``.
        next_values: ``(T, B, ...)`` ``V(s'_t)`` where ``s'_t`` is the state step ``t`` reached
            (before any auto-reset, i.e. from ``final_obs``/``final_state``).
        terminated: ``(T, B)`` bool: ``s'_t`` is terminal (its value counts as 0).
        done: ``(T, B)`` bool: terminated or truncated: ``s_{t+1}`` starts a new episode.
        gamma: discount factor.
        lam: GAE lambda.

    Returns:
        ``(advantages, returns)``, both ``(T, B, ...)``, with ``returns = advantages + values``.

        ``delta_t = r_t + gamma (1 - term_t) V(s'_t) - V(s_t)`` and
        ``A_t = delta_t + gamma lam (1 - done_t) A_{t+1}``.
    """
    if not (rewards.shape == values.shape == next_values.shape):
        raise ValueError(
            f"gae: rewards {tuple(rewards.shape)}, values {tuple(values.shape)} and next_values "
            f"{tuple(next_values.shape)} must have the same (T, B, ...) shape"
        )
    not_term = 1.0 - _expand(terminated, rewards, "terminated")
    not_done = 1.0 - _expand(done, rewards, "done")
    deltas = rewards + gamma * not_term * next_values - values  # one batched op over all T
    carry = gamma * lam * not_done
    adv = torch.empty_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):  # the recursion is inherently sequential in T
        last = deltas[t] + carry[t] * last
        adv[t] = last
    return adv, adv + values


def discounted_returns(rewards: Tensor, done: Tensor, gamma: float, bootstrap: Tensor | None = None) -> Tensor:
    """Discounted returns-to-go ``G_t = r_t + gamma (1 - done_t) G_{t+1}`` (Sutton & Barto 2018, eq. 3.9).

    Args:
        rewards: ``(T, B, ...)``.
        done: ``(T, B)`` bool: the episode ended at step ``t`` (no value flows back across it).
        gamma: discount factor.
        bootstrap: ``(B, ...)`` value of the state after the last step (0 if ``None``).

    Returns:
        ``(T, B, ...)`` returns.
    """
    not_done = 1.0 - _expand(done, rewards, "done")
    out = torch.empty_like(rewards)
    last = torch.zeros_like(rewards[0]) if bootstrap is None else bootstrap.to(rewards.dtype)
    if last.shape != rewards.shape[1:]:
        raise ValueError(f"discounted_returns: bootstrap has shape {tuple(last.shape)}, expected {tuple(rewards.shape[1:])}")
    for t in range(rewards.shape[0] - 1, -1, -1):
        last = rewards[t] + gamma * not_done[t] * last
        out[t] = last
    return out


def weighted_mean(x: Tensor, weight: Tensor) -> Tensor:
    """Mean of ``x`` over the samples where the 0/1 ``weight`` (same shape) is 1; 0 if none is."""
    return (x * weight).sum() / weight.sum().clamp_min(1.0)


def standardise(x: Tensor, weight: Tensor, eps: float = 1e-8) -> Tensor:
    """``(x - mean) / (std + eps)`` with mean and (population) std over the samples where ``weight``
    is 1 (alive agents, valid steps): the advantage normalisation of PPO (Schulman et al. 2017,
    arXiv 1707.06347) and of the MS-MARL family. Any shape; ``weight`` as ``x``."""
    if weight.shape != x.shape:
        raise ValueError(f"standardise: weight has shape {tuple(weight.shape)}, expected {tuple(x.shape)} (the shape of x)")
    mu = weighted_mean(x, weight)
    sd = torch.sqrt(weighted_mean((x - mu).pow(2), weight)) + eps
    return (x - mu) / sd
