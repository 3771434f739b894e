"""Running mean / variance (Welford / Chan et al. 1979 parallel update) for value normalisation and
reward scaling.

MAPPO (Yu et al. 2022, arXiv 2103.01955, Sec. 4.1 "Value normalization") trains the critic on
standardised targets using running statistics of the returns; PPO for MuJoCo scales rewards by the
running standard deviation of a discounted return (``ReturnScaler``). The statistics are state
that a checkpoint must carry, so they are plain tensors in ``state_dict``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from maestro.nn.running_norm import merge_moments


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
        x = x.detach()
        self.mean, self.var, self.count = merge_moments(self.mean, self.var, self.count, x.reshape(-1), None if weight is None else weight.expand_as(x).reshape(-1))

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


class ReturnScaler:
    """Reward scaling of PPO for MuJoCo (Engstrom et al. 2020, arXiv 2005.12729, Sec. 3 "reward
    scaling"; SB3's ``VecNormalize``): rewards divided by the running standard deviation of a
    discounted return kept per env copy and agent, then clipped to ``[-clip, clip]``.

    ``scale(rewards, done)`` takes a whole rollout ``(T, B, N)`` at once: the returns
    ``G_t = gamma G_{t-1} + r_t`` (``G`` restarting after a finished episode) update the statistics,
    then every reward of the rollout is divided by the new standard deviation. State: the running
    returns ``(B, N)`` and the statistics (``state_dict``).
    """

    def __init__(self, gamma: float, clip: float = 10.0, device: torch.device | str = "cpu", eps: float = 1e-8) -> None:
        self.gamma, self.clip, self.eps = float(gamma), float(clip), float(eps)
        self.stats = RunningMeanStd(device)
        self.returns: Tensor | None = None

    def scale(self, rewards: Tensor, done: Tensor, weight: Tensor | None = None) -> Tensor:
        """Scaled rewards ``(T, B, N)`` from rewards ``(T, B, N)`` and ``done`` ``(T, B)`` (``weight``
        ``(T, B, N)`` 0/1 selects the samples that update the statistics)."""
        if rewards.dim() != 3 or done.shape != rewards.shape[:2]:
            raise ValueError(f"ReturnScaler.scale: rewards {tuple(rewards.shape)} must be (T, B, N) and done {tuple(done.shape)} (T, B)")
        if self.returns is None or self.returns.shape != rewards.shape[1:]:
            self.returns = torch.zeros(rewards.shape[1:], dtype=torch.float64, device=rewards.device)
        returns = torch.empty(rewards.shape, dtype=torch.float64, device=rewards.device)
        g = self.returns
        keep = (~done).to(torch.float64).unsqueeze(-1)
        for t in range(rewards.shape[0]):
            g = self.gamma * g + rewards[t].to(torch.float64)
            returns[t] = g
            g = g * keep[t]
        self.returns = g
        self.stats.update(returns, weight)
        std = torch.sqrt(self.stats.var + self.eps).to(rewards.dtype)
        return (rewards / std).clamp(-self.clip, self.clip)

    def state_dict(self) -> dict[str, Tensor]:
        out = dict(self.stats.state_dict())
        if self.returns is not None:
            out["returns"] = self.returns.clone()
        return out

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.stats.load_state_dict(state)
        self.returns = state["returns"].to(self.stats.mean.device).clone() if "returns" in state else None
