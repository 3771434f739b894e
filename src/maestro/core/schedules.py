"""Schedules over the training budget: pure functions of the training fraction ``progress`` in ``[0, 1]``,
and the off-policy update schedule (how many gradient updates are due after new env steps).

The trainers evaluate the budget schedules once per iteration from ``run.env_steps / run.cfg.env_steps``,
so a resumed run follows the same schedule bit for bit (nothing about them is stored); the update
schedule's two counters are part of the trainer's checkpointed state.
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


def off_policy_updates(
    since_round: int, credit: float, new_steps: int, stored: float, update_every: int, warmup: int, updates_per_step: float
) -> tuple[int, int, float]:
    """The update schedule of MADDPG-style learners (``openai/maddpg``: one update every 100 samples).

    After ``new_steps`` env steps (summed over copies and replicas) have been added, with ``stored``
    transitions in the replay buffer(s): once at least ``update_every`` steps have gathered since the
    last round (``since_round``), a round earns ``since_round * updates_per_step`` credit if the buffer
    holds ``warmup`` transitions (at least 1), else none; every whole unit of credit is one update due
    now, and fractions carry over. ``update_every=1`` makes every call a round (the data-parallel
    replicas call it once per chunk of ``update_every`` steps).

    Returns ``(updates due, new since_round, new credit)``. Pure: the single-process learner, the
    data- and model-parallel coordinators and every worker compute the same numbers from the same inputs.
    """
    if new_steps < 0 or update_every < 1:
        raise ValueError(f"off_policy_updates: new_steps must be >= 0 and update_every >= 1, got {new_steps}, {update_every}")
    since_round += new_steps
    if since_round >= update_every:
        if stored >= max(warmup, 1):
            credit += since_round * updates_per_step
        since_round = 0
    due = int(credit)
    return due, since_round, credit - due
