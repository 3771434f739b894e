"""Shared machinery of the algorithms: returns, normalisers, seeding, checkpoints, evaluation, the run."""

from maestro.core.checkpoint import CheckpointError, latest_valid, load_checkpoint, save_atomic
from maestro.core.evaluate import evaluate, mean_ci95, summarise
from maestro.core.returns import discounted_returns, gae
from maestro.core.run import Run, RunConfig

__all__ = [
    "CheckpointError",
    "Run",
    "RunConfig",
    "discounted_returns",
    "evaluate",
    "gae",
    "latest_valid",
    "load_checkpoint",
    "mean_ci95",
    "save_atomic",
    "summarise",
]
