"""Running mean / variance (Welford / Chan et al. 1979 parallel update) for value normalisation.

MAPPO (Yu et al. 2022, arXiv 2103.01955, Sec. 4.1 "Value normalization") trains the critic on
standardised targets using running statistics of the returns; the statistics are state that a
checkpoint must carry, so they are plain tensors in ``state_dict``.
"""

from __future__ import annotations

import torch
from torch import Tensor


class RunningMeanStd:
    """Running mean and variance of a scalar stream, kept in float64.

    ``update(x, weight)`` folds in the entries of ``x`` where ``weight`` (same shape, 0/1) is set.
    """

    def __init__(self, device: torch.device | str = "cpu", eps: float = 1e-5) -> None:
        self.mean = torch.zeros((), dtype=torch.float64, device=device)
        self.var = torch.ones((), dtype=torch.float64, device=device)
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        self.eps = eps

    def update(self, x: Tensor, weight: Tensor | None = None) -> None:
        """Fold the batch ``x`` (any shape) into the statistics, counting only ``weight > 0`` entries."""
        x = x.detach().to(torch.float64)
        w = torch.ones_like(x) if weight is None else weight.detach().to(torch.float64).expand_as(x)
        n = w.sum()
        if float(n) == 0.0:
            return
        mean_b = (w * x).sum() / n
        var_b = (w * (x - mean_b).pow(2)).sum() / n
        delta = mean_b - self.mean
        total = self.count + n
        self.mean = self.mean + delta * n / total
        m2 = self.var * self.count + var_b * n + delta.pow(2) * self.count * n / total
        self.var = m2 / total
        self.count = total

    @property
    def std(self) -> Tensor:
        return torch.sqrt(self.var.clamp_min(self.eps))

    def normalise(self, x: Tensor) -> Tensor:
        """``(x - mean) / std`` in the dtype of ``x``."""
        return ((x - self.mean) / self.std).to(x.dtype)

    def denormalise(self, x: Tensor) -> Tensor:
        """``x * std + mean`` in the dtype of ``x``."""
        return (x * self.std + self.mean).to(x.dtype)

    def state_dict(self) -> dict[str, Tensor]:
        return {"mean": self.mean.clone(), "var": self.var.clone(), "count": self.count.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        dev = self.mean.device
        self.mean, self.var, self.count = (state[k].to(dev, torch.float64).clone() for k in ("mean", "var", "count"))
