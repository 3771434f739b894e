"""Apprenticeship learning by inverse RL: feature expectations and the projection method.

Abbeel & Ng, "Apprenticeship Learning via Inverse Reinforcement Learning" (ICML 2004): the reward
is linear in features, ``R(s, a) = w . phi(s, a)`` with ``||w||_2 <= 1``, so a policy's value is
``w . mu(pi)`` with its *feature expectations* ``mu(pi) = E[sum_t gamma^t phi(s_t, a_t)]``. A policy
whose ``mu`` is within ``eps`` of the expert's ``mu_E`` is within ``eps`` of the expert's value under
every such reward. The algorithm alternates: a reward ``w = mu_E - mu_bar`` (the direction in which
the policies found so far fall short of the expert), an RL step on it, and ``mu_bar`` moved towards
``mu_E`` by the projection of Sec. 3.1::

    mu_bar_i = mu_bar_{i-1} + c (mu_i - mu_bar_{i-1}),
    c = (mu_i - mu_bar_{i-1}) . (mu_E - mu_bar_{i-1}) / ||mu_i - mu_bar_{i-1}||^2

(``mu_bar`` is the orthogonal projection of ``mu_E`` on the line through ``mu_bar_{i-1}`` and
``mu_i``; ``t_i = ||mu_E - mu_bar_i||`` is the margin, which the paper proves shrinks). IRLAS (Guo
et al., CVPR 2019) learns its "mirror stimuli function" this way, a linear reward on the topology's
feature code; ``maestro.algos.irl`` uses these functions for it.

Where maestro departs: the paper's RL step runs to optimality, and ``c`` then lies in ``[0, 1]``;
maestro's RL step is one PPO update, so ``c`` is clipped to ``[0, 1]`` (``mu_bar`` stays a mixture of
the policies' feature expectations, and ``t`` never grows).
"""

from __future__ import annotations

import torch
from torch import Tensor


def feature_expectations(features: Tensor, position: Tensor, gamma: float) -> Tensor:
    """``mu = E[sum_t gamma^t phi_t]`` estimated from a batch of steps.

    Args:
        features: ``(..., F)``: ``phi(s, a)`` of every step (any leading shape, e.g. ``(T, B, N)``).
        position: ``(...)`` int: the step's index ``t`` within its episode.
        gamma: the discount.

    Returns ``(F,)``: ``sum gamma^t phi`` over every step divided by the number of episode starts
    (steps with ``t = 0``; at least 1). Over a rollout in which episodes run on across its edges this
    is the per-episode mean once the rollout holds many episodes (each episode's steps are counted
    wherever they fall).
    """
    if features.shape[:-1] != position.shape:
        raise ValueError(f"features {tuple(features.shape)} and position {tuple(position.shape)} disagree on the leading shape")
    disc = torch.pow(torch.as_tensor(gamma, dtype=features.dtype, device=features.device), position.to(features.dtype))
    total = (disc.unsqueeze(-1) * features).reshape(-1, features.shape[-1]).sum(0)
    starts = (position == 0).sum().clamp(min=1)
    return total / starts


def projection_step(mu_bar: Tensor | None, mu: Tensor, mu_expert: Tensor) -> Tensor:
    """The projection method's ``mu_bar_i`` (module docstring) from ``mu_bar_{i-1}`` (``None`` on the
    first iteration: ``mu_bar_0 = mu_0``), the new policy's ``mu`` and the expert's ``mu_E``, all ``(F,)``;
    the coefficient ``c`` clipped to ``[0, 1]``."""
    if mu_bar is None:
        return mu.clone()
    d = mu - mu_bar
    dd = torch.dot(d, d)
    if float(dd) == 0.0:
        return mu_bar.clone()
    c = (torch.dot(d, mu_expert - mu_bar) / dd).clamp(0.0, 1.0)
    return mu_bar + c * d


def reward_weights(mu_expert: Tensor, mu_bar: Tensor) -> tuple[Tensor, Tensor]:
    """``(w, t)``: the reward direction ``w = (mu_E - mu_bar) / t`` (unit length; zero when ``t = 0``)
    and the margin ``t = ||mu_E - mu_bar||``. The unit length keeps the RL step's reward scale fixed
    as ``t`` shrinks (Abbeel & Ng's ``w`` has norm ``t``; the optimal policy is the same)."""
    gap = mu_expert - mu_bar
    t = gap.norm()
    return (gap / t if float(t) > 0 else torch.zeros_like(gap)), t
