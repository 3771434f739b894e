"""Target networks: Polyak averaging of a lagging copy (Lillicrap et al. 2016, arXiv 1509.02971).

``theta' <- tau * theta + (1 - tau) * theta'`` after an update; ``tau = 1`` is the hard copy of DQN
(Mnih et al. 2015) and of the multi-task learner's Algorithm 1 (``papers/003``).
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def soft_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """Polyak averaging in place: ``theta' <- tau * theta + (1 - tau) * theta'`` for every parameter."""
    t_params = list(target.parameters())
    o_params = list(online.parameters())
    if len(t_params) != len(o_params):
        raise ValueError(f"soft_update: target has {len(t_params)} parameters, online {len(o_params)}")
    torch._foreach_lerp_(t_params, o_params, tau)
