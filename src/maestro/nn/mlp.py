"""Multi-layer perceptrons with orthogonal initialisation.

Orthogonal weights with gain ``sqrt(2)`` for hidden layers and a small gain (0.01) for a policy's
output layer follow the PPO implementation study of Andrychowicz et al. 2021 (arXiv 2006.05990)
and MAPPO (Yu et al. 2022, arXiv 2103.01955, "network initialization: orthogonal"). An optional
``LayerNorm`` on the input is MAPPO's ``use_feature_normalization``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

Activation = Literal["relu", "tanh"]


def orthogonal_init(layer: nn.Linear, gain: float) -> nn.Linear:
    """Orthogonal weights scaled by ``gain`` and zero bias (in place); returns the layer."""
    nn.init.orthogonal_(layer.weight, gain=gain)
    nn.init.zeros_(layer.bias)
    return layer


class MLP(nn.Module):
    """``in_dim -> hidden... -> out_dim`` on the last axis of any ``(..., in_dim)`` tensor.

    Args:
        in_dim: input features.
        hidden: widths of the hidden layers (``()`` gives a linear map).
        out_dim: output features.
        activation: ``relu`` or ``tanh`` between layers.
        out_gain: orthogonal gain of the last layer (0.01 for policy logits, 1 for values).
        input_norm: apply ``LayerNorm(in_dim)`` to the input first.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: tuple[int, ...],
        out_dim: int,
        activation: Activation = "relu",
        out_gain: float = 1.0,
        input_norm: bool = False,
    ) -> None:
        super().__init__()
        act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
        layers: list[nn.Module] = [nn.LayerNorm(in_dim)] if input_norm else []
        width = in_dim
        for h in hidden:
            layers += [orthogonal_init(nn.Linear(width, h), math.sqrt(2.0)), act()]
            width = h
        layers.append(orthogonal_init(nn.Linear(width, out_dim), out_gain))
        self.net = nn.Sequential(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: Tensor) -> Tensor:
        """``(..., in_dim) -> (..., out_dim)``."""
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"MLP input has {x.shape[-1]} features (shape {tuple(x.shape)}), expected {self.in_dim}")
        return self.net(x)


def one_hot_ids(n_agents: int, device: torch.device | str = "cpu") -> Tensor:
    """``(N, N)`` float identity: row ``i`` is agent ``i``'s one-hot id (appended to inputs)."""
    return torch.eye(n_agents, device=device)
