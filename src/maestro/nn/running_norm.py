"""Running moments (Chan, Golub & LeVeque 1979 parallel update) and a running observation normaliser.

``merge_moments`` folds a weighted batch into running ``(mean, var, count)`` statistics of any
feature shape; ``maestro.core.normalise.RunningMeanStd`` (value normalisation, reward scaling)
and ``RunningNorm`` (observation normalisation) both use it.

``RunningNorm`` is the observation normalisation of PPO for MuJoCo (Engstrom et al. 2020,
"Implementation Matters in Deep Policy Gradients", arXiv 2005.12729, Sec. 3; Gymnasium's
``NormalizeObservation`` and SB3's ``VecNormalize``): each feature standardised by its running
mean and variance and clipped to ``[-clip, clip]``. Its statistics are buffers of the module, so a
policy that holds one saves and loads them with its weights; each feature keeps its own count, so
statistics copied into part of a larger normaliser (master-slave pre-training) stay exact.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def merge_moments(mean: Tensor, var: Tensor, count: Tensor, x: Tensor, weight: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Running statistics after folding in the samples of ``x``.

    Args:
        mean, var, count: float64 statistics of feature shape ``F`` (``()`` for a scalar stream;
            ``count`` of shape ``F`` or ``()``).
        x: ``(..., *F)`` samples (the leading axes are reduced).
        weight: ``(...)`` 0/1 per sample (``None``: all count).

    Returns:
        ``(mean, var, count)`` of shape ``F`` (population variance), unchanged if no sample counts.
    """
    feat = mean.dim()
    if tuple(x.shape[x.dim() - feat :]) != tuple(mean.shape):
        raise ValueError(f"merge_moments: samples of shape {tuple(x.shape)} do not end in the feature shape {tuple(mean.shape)}")
    lead = x.shape[: x.dim() - feat]
    x = x.detach().to(torch.float64).reshape(-1, *mean.shape)
    if weight is None:
        w = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
    else:
        w = weight.detach().to(torch.float64).expand(lead).reshape(-1)
    n = w.sum()
    if float(n) == 0.0:
        return mean, var, count
    wf = w.reshape(-1, *([1] * feat))
    mean_b = (wf * x).sum(0) / n
    var_b = (wf * (x - mean_b).pow(2)).sum(0) / n
    delta = mean_b - mean
    total = count + n
    new_mean = mean + delta * n / total
    m2 = var * count + var_b * n + delta.pow(2) * count * n / total
    return new_mean, m2 / total, total


class RunningNorm(nn.Module):
    """``(..., dim) -> (..., dim)``: ``clip((x - mean) / sqrt(var + eps), -clip, clip)`` with running statistics.

    Starts at mean 0, variance 1 (the identity before the first ``update``). ``update`` is called by
    the trainer (not by ``forward``), so statistics change only where the trainer says.
    """

    def __init__(self, dim: int, clip: float = 10.0, eps: float = 1e-8) -> None:
        super().__init__()
        self.clip, self.eps = float(clip), float(eps)
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.zeros(dim, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: Tensor, weight: Tensor | None = None) -> None:
        """Fold the samples ``x`` ``(..., dim)`` (``weight`` ``(...)`` 0/1) into the statistics, in place."""
        mean, var, count = merge_moments(self.mean, self.var, self.count, x, weight)
        self.mean.copy_(mean)
        self.var.copy_(var)
        self.count.copy_(count)

    def forward(self, x: Tensor) -> Tensor:
        """Standardised, clipped ``x`` in its own dtype."""
        scale = torch.rsqrt(self.var + self.eps).to(x.dtype)
        return ((x - self.mean.to(x.dtype)) * scale).clamp(-self.clip, self.clip)
