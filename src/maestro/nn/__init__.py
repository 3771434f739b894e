"""Neural-network building blocks shared by the algorithms (MLPs, action heads)."""

from maestro.nn.heads import (
    categorical_entropy,
    categorical_log_prob,
    categorical_sample,
    gaussian_entropy,
    gaussian_log_prob,
    gaussian_sample,
    mask_logits,
)
from maestro.nn.mlp import MLP, orthogonal_init

__all__ = [
    "MLP",
    "categorical_entropy",
    "categorical_log_prob",
    "categorical_sample",
    "gaussian_entropy",
    "gaussian_log_prob",
    "gaussian_sample",
    "mask_logits",
    "orthogonal_init",
]
