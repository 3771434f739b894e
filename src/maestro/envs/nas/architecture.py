"""Architecture search as a sequential decision task, with master and slave roles (papers/000, Sec. 5).

Guo & Duan (papers/000, Sec. 5) validate gradient momentum on the inverse-RL architecture search of
IRLAS (Guo et al., CVPR 2019): an agent builds a network layer by layer, and a reward learnt by
inverse RL from an expert topology (ResNeXt) guides it. The *full* environment, the master's, has
"a maximal number of 25 layers and 15 candidate operations, resulting a search space of size
15^24"; the *reduced* one, the slaves', "8 layers and 11 candidate operations [...] 11^8". Neither
paper's text gives the encoding in full (IRLAS is cited, not included in ``papers/``), so this
module states the reading maestro takes:

* **Actions.** One group ``agent`` with one agent. At step ``t`` it picks the operation of layer
  ``t + 1`` among ``K`` candidates (``Discrete(K)``): ``K = 15`` for the master (``FULL_OPS``),
  ``K = 11`` for the slave (``REDUCED_OPS``, a subset of the same names). Layer 0 is the fixed input,
  so the master makes ``L = 24`` decisions (15^24 architectures) and the slave ``L = 8`` (11^8).
  Layers chain: each takes the previous one as input; ``add`` and ``concat`` also read the input of
  the current block (a residual or a dense connection), so the sequence of operations is the
  topology. ``terminal`` ends the architecture; the episode terminates on it or after ``L`` picks.
* **Observation** (the "state feature code" an agent acts on), ``L + (K + 1) + K`` floats: the
  position ``t`` one-hot, the previous layer's operation one-hot (index ``K`` is the input layer),
  and the histogram of the operations chosen so far divided by ``L``.
* **Reward features** ``phi(s_t, a_t)``: the one-hot of the pair (previous operation, chosen
  operation), ``(K + 1) * K`` features (``spec.reward_features``): which operation follows which, the
  topology's edges. The reward is linear in them, ``r_t = w . phi(s_t, a_t)``. The env's own ``w``
  (``default_reward_weights``) is the indicator of the expert's pairs, normalised to unit length: a
  hand-made "looks like ResNeXt" score. Inverse RL (``maestro.algos.irl``) replaces it with the
  weights it learns, reading ``reward_features`` and ``expert_demonstration``.
* **Expert** (``expert_ops``): ResNeXt in the role's vocabulary, a 3x3 convolution stem, then
  bottleneck blocks (``conv1x1, group_conv3x3, conv1x1, add``), two per stage, stages separated by a
  max-pool, as many whole units as fit in ``L - 1`` layers, then ``terminal``: 24 operations for the
  master, 6 for the slave.
* ``info["expert_match"]`` (valid where done): the fraction of the ``L`` positions where the
  architecture's operation equals the expert's (both padded after their ``terminal``).

What IRLAS adds and maestro leaves out: the accuracy of each searched network after training on
CIFAR-10 (the search's task reward) and its latency; papers/000's Figure 9 plots only the inverse-RL
loss, which is what this env supports. Building and training the networks is outside maestro.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import gymnasium.spaces as gspaces
import numpy as np
import torch
from torch import Tensor

from maestro.envs.api import BatchedEnv, Obs, group_spec
from maestro.envs.render import canvas, fill_rect
from maestro.registry import register_env
from maestro.spec import EnvSpec

FULL_OPS = (
    "terminal",
    "identity",
    "conv1x1",
    "conv3x3",
    "conv5x5",
    "sep_conv3x3",
    "sep_conv5x5",
    "sep_conv7x7",
    "group_conv3x3",
    "dil_conv3x3",
    "conv1x7_7x1",
    "max_pool3x3",
    "avg_pool3x3",
    "add",
    "concat",
)
"""The master's 15 candidate operations (IRLAS-style: convolutions, separable and grouped ones,
pooling, identity, and the two merges)."""
REDUCED_OPS = tuple(op for op in FULL_OPS if op not in ("sep_conv7x7", "dil_conv3x3", "conv1x7_7x1", "concat"))
"""The slaves' 11: the master's without ``sep_conv7x7``, ``dil_conv3x3``, ``conv1x7_7x1`` and ``concat``."""
ROLE_OPS = {"master": FULL_OPS, "slave": REDUCED_OPS}
ROLE_LAYERS = {"master": 24, "slave": 8}
"""Decisions per architecture: 24 after the fixed input (papers/000: 25 layers, 15^24) and 8 (11^8)."""

RESNEXT_BLOCK = ("conv1x1", "group_conv3x3", "conv1x1", "add")
"""A ResNeXt bottleneck block: reduce, grouped 3x3, expand, residual sum."""


def expert_ops(ops: tuple[str, ...], layers: int) -> list[int]:
    """The ResNeXt expert (module docstring) as operation indices into ``ops``: a ``conv3x3`` stem,
    then blocks, two per stage, stages separated by ``max_pool3x3``, as many whole units as fit in
    ``layers - 1``, then ``terminal``."""
    units: list[tuple[str, ...]] = [("conv3x3",)]
    pattern = (RESNEXT_BLOCK, RESNEXT_BLOCK, ("max_pool3x3",))
    while sum(len(u) for u in units) + len(pattern[(len(units) - 1) % 3]) <= layers - 1:
        units.append(pattern[(len(units) - 1) % 3])
    names = [name for u in units for name in u] + ["terminal"]
    return [ops.index(n) for n in names]


@dataclass(frozen=True)
class NasConfig:
    """Configuration of ``nas``: the role picks the vocabulary and the number of layers."""

    role: Literal["master", "slave"] = "master"
    """``"master"``: 24 decisions among 15 operations; ``"slave"``: 8 among 11 (module docstring)."""
    layers: int = 0
    """Decisions per architecture; 0: the role's (24 or 8)."""

    def __post_init__(self) -> None:
        if self.role not in ROLE_OPS:
            raise ValueError(f"'role' must be one of {list(ROLE_OPS)}, got {self.role!r}")
        if self.layers < 0 or 0 < self.layers < 2:
            raise ValueError(f"'layers' must be 0 (the role's) or >= 2, got {self.layers}")


@register_env("nas", config=NasConfig)
class Nas(BatchedEnv):
    """Layer-by-layer architecture search with a master (24 x 15 ops) and a slave (8 x 11) role (papers/000, IRLAS)."""

    render_fps = 4

    def __init__(self, cfg: NasConfig, num_envs: int = 1, seed: int = 0, device: str | torch.device = "cpu") -> None:
        super().__init__(cfg, num_envs, seed, device)
        self.ops = ROLE_OPS[cfg.role]
        self.K = len(self.ops)
        self.L = cfg.layers or ROLE_LAYERS[cfg.role]
        self.obs_dim = self.L + (self.K + 1) + self.K
        self.n_features = (self.K + 1) * self.K
        self.expert = expert_ops(self.ops, self.L)
        self.spec = EnvSpec(
            "nas",
            {"agent": group_spec("agent", 1, self.obs_dim, gspaces.Discrete(self.K))},
            max_steps=self.L,
            state_shape=(0,),
            info_keys=("expert_match",),
            roles=("master", "slave"),
            reward_features=self.n_features,
        )
        self.reward_weights = self.default_reward_weights().to(self.device)
        expert_padded = torch.full((self.L,), -1, dtype=torch.long)
        expert_padded[: len(self.expert)] = torch.tensor(self.expert)
        self._expert_padded = expert_padded.to(self.device)
        self._pos = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self._prev = torch.full((num_envs,), self.K, dtype=torch.long, device=self.device)
        self._arch = torch.full((num_envs, self.L), -1, dtype=torch.long, device=self.device)

    # ------------------------------------------------------------------ features, expert, roles
    def reward_features(self, obs: Tensor, action: Tensor) -> Tensor:
        """``phi(s, a)`` ``(..., F)`` float32 of observations ``(..., obs_dim)`` and operations ``(...)``
        int: the one-hot of (previous operation read from the observation, ``action``)."""
        prev = obs[..., self.L : self.L + self.K + 1].argmax(-1)
        index = prev * self.K + action.long()
        return torch.nn.functional.one_hot(index, self.n_features).to(torch.float32)

    def default_reward_weights(self) -> Tensor:
        """``(F,)``: the indicator of the expert's (previous, next) pairs, unit length (module docstring)."""
        w = torch.zeros(self.n_features)
        prev = self.K
        for a in self.expert:
            w[prev * self.K + a] = 1.0
            prev = a
        return w / w.norm()

    def expert_demonstration(self) -> tuple[Tensor, Tensor]:
        """The expert's trajectory: observations ``(T_E, obs_dim)`` and operations ``(T_E,)`` (``T_E``:
        24 for the master, 6 for the slave), on the env's device."""
        ops = torch.tensor(self.expert, device=self.device)
        obs = torch.stack([self._encode(torch.tensor([t]), torch.tensor([p]), ops[None, :t]) for t, p in enumerate([self.K, *self.expert[:-1]])]).reshape(len(ops), -1)
        return obs.to(self.device), ops

    def slave_indices(self) -> tuple[list[int], list[int]]:
        """The slave's observation and action dimensions in the master's (papers/000, Sec. 3.2.1):
        positions map to the same positions, operations to the master's operation of the same name."""
        if self.cfg.role != "master":
            raise ValueError("slave_indices() is asked of the master env")
        slave_ops, slave_L = REDUCED_OPS, ROLE_LAYERS["slave"]
        op = [self.ops.index(n) for n in slave_ops]
        obs = list(range(slave_L)) + [self.L + i for i in [*op, self.K]] + [self.L + self.K + 1 + i for i in op]
        return obs, op

    # ------------------------------------------------------------------ hooks
    def _encode(self, pos: Tensor, prev: Tensor, arch: Tensor) -> Tensor:
        """Observations ``(n, obs_dim)`` from positions ``(n,)``, previous operations ``(n,)`` and the
        operations chosen so far ``(n, <= L)`` (-1 where none)."""
        n = pos.shape[0]
        hist = torch.zeros(n, self.K, device=arch.device)
        if arch.shape[1]:
            valid = arch >= 0
            hist.scatter_add_(1, arch.clamp(min=0), valid.float())
        parts = [
            torch.nn.functional.one_hot(pos.clamp(max=self.L - 1).to(arch.device), self.L).float(),
            torch.nn.functional.one_hot(prev.to(arch.device), self.K + 1).float(),
            hist / self.L,
        ]
        return torch.cat(parts, dim=1)

    def _reset_copies(self, mask: Tensor) -> None:
        self._pos = torch.where(mask, torch.zeros_like(self._pos), self._pos)
        self._prev = torch.where(mask, torch.full_like(self._prev, self.K), self._prev)
        self._arch = torch.where(mask[:, None], torch.full_like(self._arch, -1), self._arch)

    def _step_world(self, actions: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor, dict[str, Tensor]]:
        a = actions["agent"][:, 0]
        reward = self.reward_weights[self._prev * self.K + a]  # w . phi(s, a), phi the one-hot of (previous op, a)
        self._arch = self._arch.scatter(1, self._pos[:, None], a[:, None])
        terminated = (a == 0) | (self._pos + 1 >= self.L)
        match = (self._arch == self._expert_padded).float().mean(1)
        self._prev = a
        self._pos = self._pos + 1
        return {"agent": reward[:, None]}, terminated, {"expert_match": match}

    def _observe(self) -> Obs:
        return {"agent": self._encode(self._pos, self._prev, self._arch)[:, None]}

    def _global_state(self) -> Tensor:
        return torch.zeros(self.num_envs, 0, device=self.device)

    def _get_sim_state(self) -> dict[str, Tensor]:
        return {"pos": self._pos.clone(), "prev": self._prev.clone(), "arch": self._arch.clone()}

    def _set_sim_state(self, state: dict[str, Tensor]) -> None:
        self._pos, self._prev, self._arch = state["pos"].long().clone(), state["prev"].long().clone(), state["arch"].long().clone()

    def render(self) -> np.ndarray:
        """Copy 0's architecture so far: one cell per layer, coloured by operation (the expert's row below)."""
        cell, pad = 12, 4
        img = canvas(2 * cell + 3 * pad, self.L * cell + 2 * pad, (245, 245, 245))
        palette = (np.array([[(37 * i) % 256, (91 * i + 60) % 256, (53 * i + 120) % 256] for i in range(self.K)]) * 0.8).astype(int)
        for row, ops in enumerate([self._arch[0].tolist(), self._expert_padded.tolist()]):
            y = pad + row * (cell + pad)
            for t, op in enumerate(ops):
                if op >= 0:
                    fill_rect(img, pad + t * cell, y, pad + (t + 1) * cell - 1, y + cell, tuple(int(c) for c in palette[op]))
        return img
