"""Per-episode metrics of finished env copies, shared by every trainer and by evaluation.

``episode_metrics`` reads one step's ``info`` into per-copy values ``(B,)`` (meaningful where
the copy is done); ``EpisodeStats`` sums them over the finished copies of an iteration on the
device and turns them into the run's metric names with one host sync:

- ``episode_return/<group>``: the mean return of the group's agents; ``episode_return`` is the
  first group's; ``episode_return/<group>_sum``: the return summed over the group's agents (for
  groups of several agents; the Distributed MADDPG paper's metric for the predators);
- ``team_return``: the return summed over every agent of every group (the team reward of a
  cooperative task; the MATRPO paper's Fig. 2 metric);
- ``episode_length``;
- every ``spec.info_keys`` extra at the episode's last step (``success``, ``win``...), averaged
  over its trailing dimensions;
- ``<key>_per_episode``: the episode totals of the per-step counts in ``spec.episode_sums``
  (``touches_per_episode``, Lowe et al. 2017, Table 2);
- ``episodes``: how many episodes finished.
"""

from __future__ import annotations

import torch
from torch import Tensor

from maestro.spec import EnvSpec


def episode_metrics(spec: EnvSpec, info: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per-copy episode metrics ``{name: (B,) float}`` from one step's ``info`` (valid where done)."""
    B = info["done"].shape[0]
    out: dict[str, Tensor] = {}
    for g, gs in spec.groups.items():
        r = info[f"episode_return/{g}"].float()
        out[f"episode_return/{g}"] = r.mean(-1)
        if gs.n_agents > 1:
            out[f"episode_return/{g}_sum"] = r.sum(-1)
    out["episode_return"] = out[f"episode_return/{next(iter(spec.groups))}"]
    out["team_return"] = sum(info[f"episode_return/{g}"].float().sum(-1) for g in spec.groups)
    out["episode_length"] = info["episode_length"].float()
    for k in spec.info_keys:
        if k in info:
            out[k] = info[k].float().reshape(B, -1).mean(-1)
    for k in spec.episode_sums:
        out[f"{k}_per_episode"] = info[f"episode_sum/{k}"].float()
    return out


class EpisodeStats:
    """Sums of ``episode_metrics`` over the copies that finish, kept on the env's device.

    ``add`` costs a few tensor ops and no host sync; ``summary`` syncs once and resets.
    """

    def __init__(self, spec: EnvSpec, device: torch.device | str) -> None:
        self.spec = spec
        self.device = torch.device(device)
        self._sums: dict[str, Tensor] = {}
        self._count = torch.zeros((), device=self.device)

    def add(self, info: dict[str, Tensor], done: Tensor) -> None:
        """Count the episodes of the copies where ``done`` (``(B,)`` bool) is true."""
        w = done.float()
        self._count = self._count + w.sum()
        for k, v in episode_metrics(self.spec, info).items():
            self._sums[k] = self._sums.get(k, 0.0) + (v * w).sum()

    def summary(self, prefix: str = "train") -> dict[str, float]:
        """``{f"{prefix}/{name}": mean}`` over the episodes added since the last summary, plus
        ``f"{prefix}/episodes"``; only the count when no episode finished. Resets the sums."""
        count = float(self._count)
        stats = {f"{prefix}/{k}": float(v) / count for k, v in self._sums.items()} if count > 0 else {}
        stats[f"{prefix}/episodes"] = count
        self._sums = {}
        self._count = torch.zeros((), device=self.device)
        return stats
