"""Shared parts of distributed MADDPG: workers' learners, gradient averaging, merged statistics.

Zhou & Chen, "Distributed MADDPG" (``papers/002``): Sec. IV distributes MADDPG by data parallelism,
by model parallelism (a worker per agent) and by model parallelism with a sampler worker; Sec. V is
Distributed Genetic MADDPG. Every mode is built from the functions of ``maestro.algos.maddpg``
(``Policy``, ``Nets``, ``explore``, ``update``, ``target_actions``, ``critic_target``,
``soft_update``, ``clip_grad_norm_per_member``) and ``maestro.core.replay.ReplayBuffer``.

Every worker runs ``maddpg.Learner`` (MADDPG's training state and loop body, the same object
``train_maddpg`` runs); data-parallel replicas call ``maddpg.critic_loss`` / ``maddpg.actor_loss``
(``maddpg.update`` cut at its two optimiser steps) so that gradients can be averaged between them.
This module adds what only the distributed modes need: building a learner inside a worker,
applying averaged gradients, and merging the workers' statistics.

Shapes: ``B`` env copies per worker, ``A`` agents, ``L`` learners, ``S`` minibatch.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from torch import Tensor

from maestro.algos import maddpg as M
from maestro.core.seeding import seed_everything
from maestro.distributed.config import DistributedConfig, Mode, WorkerLostError  # noqa: F401  (re-exported)

log = logging.getLogger("maestro")


# ====================================================================== env + learner
def make_worker_env(env_name: str, env_cfg: Any, num_envs: int, seed: int, device: str) -> Any:
    """Build a registered env inside a worker process (the registry is filled by importing maestro)."""
    import maestro.algos  # noqa: F401  (registers algorithms; envs register on import of maestro.envs)
    from maestro.registry import env_entry

    return env_entry(env_name).cls(env_cfg, num_envs=num_envs, seed=seed, device=device)


def make_learner(cfg: M.Config, env_name: str, env_cfg: Any, num_envs: int, seed: int, device: str, centralised: bool, capacity: int) -> M.Learner:
    """A worker's ``maddpg.Learner`` on its own env copies, networks initialised from ``seed``."""
    env = make_worker_env(env_name, env_cfg, num_envs, seed, device)
    seed_everything(seed)
    return M.Learner(cfg, env, seed, centralised, capacity)


# ====================================================================== gradients and statistics
def apply_grads(params: list[Tensor], grads: list[Tensor] | None, opt: torch.optim.Optimizer, max_norm: float, groups: list[list[Tensor]] | None = None) -> None:
    """Set ``p.grad = g`` (the averaged gradients), clip per member (``maddpg``'s per-agent clip) and step."""
    if grads is not None:
        for p, g in zip(params, grads):
            p.grad = g.clone()
    if max_norm > 0:
        for ps in groups or [params]:
            M.clip_grad_norm_per_member(ps, max_norm)
    opt.step()


def tree_mean(trees: list[list[Tensor]]) -> list[Tensor]:
    """Element-wise mean of ``K`` equally shaped gradient lists (summed in worker order: deterministic)."""
    out = []
    for parts in zip(*trees):
        acc = parts[0].clone()
        for p in parts[1:]:
            acc += p
        out.append(acc / len(parts))
    return out


class Timer:
    """Seconds spent inside ``with`` blocks, summed."""

    def __init__(self) -> None:
        self.total = 0.0

    def __enter__(self) -> "Timer":
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.total += time.perf_counter() - self._t


def combine_stats(results: list[dict[str, float]], spec: Any, prefix_workers: bool = True) -> dict[str, float]:
    """Merge the workers' ``Learner.stats()`` into one row of the run's metric names: episode
    metrics as episode-weighted means over workers, ``train/episodes`` summed, losses averaged over
    the workers that updated, plus ``worker<k>/episode_return/<group>`` per worker."""
    count = sum(r.get("train/episodes", 0.0) for r in results)
    m: dict[str, float] = {"train/episodes": count}
    skip = {"train/episodes", "train/replay_size", "train/updates"}
    if count > 0:
        keys = sorted({k for r in results for k in r if k.startswith("train/") and k not in skip})
        for k in keys:
            m[k] = sum(r[k] * r["train/episodes"] for r in results if k in r and r.get("train/episodes", 0.0) > 0) / count
    for k in sorted({k for r in results for k in r if k.startswith("loss/")}):
        vals = [r[k] for r in results if k in r]
        m[k] = sum(vals) / len(vals)
    if prefix_workers and len(results) > 1:
        for i, r in enumerate(results):
            if r.get("train/episodes", 0.0) > 0:
                for g in spec.groups:
                    m[f"worker{i}/episode_return/{g}"] = r[f"train/episode_return/{g}"]
    return m


def lr_progress(cfg: Any, run: Any) -> float | None:
    """The budget fraction spent, for the workers' learning-rate schedule (``maddpg.Learner.anneal``),
    or ``None`` when the rates stay constant (``lr_end_factor`` 1). Called at the start of an
    iteration, as ``train_maddpg`` anneals: every mode anneals on the env steps of all its workers."""
    return None if getattr(cfg, "lr_end_factor", 1.0) == 1.0 else run.env_steps / run.cfg.env_steps


def anneal_workers(pool: Any, cfg: Any, run: Any) -> dict[str, float]:
    """Every live worker of ``pool`` sets its rates for this iteration (its ``anneal(progress)``, the
    same on all); returns the first live worker's ``{"train/lr/<net>": rate}`` ({} with constant rates)."""
    progress = lr_progress(cfg, run)
    if progress is None:
        return {}
    return next((r for r in pool.call("anneal", (progress,)) if r is not None), {})
