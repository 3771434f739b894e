"""Schedules over the training budget: pure functions of the training fraction ``progress`` in ``[0, 1]``.

The trainers evaluate them once per iteration from ``run.env_steps / run.cfg.env_steps``, so a
resumed run follows the same schedule bit for bit (nothing about a schedule is stored).
"""

from __future__ import annotations

from typing import Sequence

import torch


def linear(start: float, end: float, progress: float) -> float:
    """``start`` at ``progress <= 0``, ``end`` at ``progress >= 1``, linear in between."""
    p = min(max(float(progress), 0.0), 1.0)
    return start + (end - start) * p


def set_learning_rates(optimiser: torch.optim.Optimizer, base: Sequence[float], factor: float) -> list[float]:
    """Set parameter group ``k``'s learning rate to ``base[k] * factor``; returns the new rates.

    Raises:
        ValueError: if ``base`` does not have one rate per parameter group.
    """
    groups = optimiser.param_groups
    if len(base) != len(groups):
        raise ValueError(f"set_learning_rates: {len(base)} base rates for {len(groups)} parameter groups")
    rates = [float(b) * factor for b in base]
    for g, lr in zip(groups, rates):
        g["lr"] = lr
    return rates
