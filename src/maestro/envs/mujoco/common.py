"""Pieces both MuJoCo bodies use: reset noise, snapshots, the side-view frame, the role map.

Each body (``walker2d.py``, ``humanoid.py``) is one ``BatchedEnv`` whose hooks call these
functions; the physics of the ``B`` copies lives in a ``BatchedPhysics`` (``physics.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import mujoco
import numpy as np
import torch
from torch import Tensor

from maestro.envs.mujoco.physics import BatchedPhysics
from maestro.envs.render import canvas, draw_disc, draw_line

ROLES = ("master", "slave")
"""The two config variants of every body (Guo & Duan, papers/000, Sec. 3.1)."""


@dataclass(frozen=True)
class BodyConfig:
    """What every MuJoCo body's config holds (a body adds nothing else today)."""

    role: Literal["master", "slave"] = "master"
    """``"master"`` (the full, harder task) or ``"slave"`` (the reduced or looser one)."""
    max_steps: int = 1000
    """Episode length before truncation (Gymnasium's ``TimeLimit``: 1000)."""
    threads: int = 1
    """1: the copies step in a loop, bit-identical to Gymnasium's env; more: ``mujoco.rollout`` on
    that many threads (``physics.py``)."""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"'role' must be one of {list(ROLES)}, got {self.role!r}")
        if self.max_steps < 1:
            raise ValueError(f"'max_steps' must be >= 1, got {self.max_steps}")
        if self.threads < 1:
            raise ValueError(f"'threads' must be >= 1, got {self.threads}")


def reset_noise(rng: torch.Generator, n: int, dim: int, scale: float) -> np.ndarray:
    """``(n, dim)`` float64 noise uniform in ``[-scale, scale)`` from the env's generator (Gymnasium
    draws the same law from NumPy: ``reset_model``'s ``np_random.uniform``)."""
    u = torch.rand((n, dim), generator=rng, dtype=torch.float64, device=rng.device)
    return (u.cpu().numpy() * 2.0 - 1.0) * scale


def place_copies(env: Any, qpos: np.ndarray, qvel: np.ndarray, index: np.ndarray | None) -> None:
    """Put copies ``index`` (default: all) of a body at ``qpos`` ``(n, nq)``, ``qvel`` ``(n, nv)`` as
    Gymnasium's ``reset`` does (``BatchedPhysics.reset``), then let the body refresh what it caches
    of those copies (``env._refresh(index)``: the observation, the centre of mass...)."""
    index = np.arange(env.num_envs) if index is None else np.asarray(index)
    env.physics.reset(index, np.asarray(qpos, dtype=np.float64).reshape(len(index), -1), np.asarray(qvel, dtype=np.float64).reshape(len(index), -1))
    env._refresh(index)


def reset_copies(env: Any, mask: Tensor, noise: float) -> None:
    """A body's ``_reset_copies``: the copies where ``mask`` restart at the model's initial ``qpos`` /
    ``qvel`` plus uniform noise in ``[-noise, noise]`` (Gymnasium's ``reset_model``)."""
    index = mask_index(mask)
    qpos = env.init_qpos + reset_noise(env.rng, len(index), env.model.nq, noise)
    qvel = env.init_qvel + reset_noise(env.rng, len(index), env.model.nv, noise)
    place_copies(env, qpos, qvel, index)


def mask_index(mask: Tensor) -> np.ndarray:
    """Indices ``(n,)`` of the true entries of a ``(B,)`` bool tensor."""
    return mask.nonzero().flatten().cpu().numpy()


def agent_obs(x: np.ndarray, device: torch.device) -> dict[str, Tensor]:
    """``{"agent": (B, 1, d) float32}`` from float64 ``(B, d)``."""
    return {"agent": torch.as_tensor(x, dtype=torch.float32, device=device).unsqueeze(1)}


def sim_state(physics: BatchedPhysics, cached: dict[str, np.ndarray], device: torch.device) -> dict[str, Tensor]:
    """The tensors of ``get_state``: the physics (``physics``, ``warmstart``) and the body's cached
    arrays (the observation and whatever a reward reads from before the step), all float64 ``(B, ...)``."""
    out = {k: torch.as_tensor(v, device=device) for k, v in physics.get_state().items()}
    out.update({k: torch.as_tensor(v.copy(), device=device) for k, v in cached.items()})
    return out


def restore_sim_state(physics: BatchedPhysics, state: dict[str, Tensor], cached: dict[str, np.ndarray]) -> None:
    """Inverse of ``sim_state``: writes the physics and fills ``cached``'s arrays in place."""
    physics.set_state(state["physics"].cpu().numpy().astype(np.float64), state["warmstart"].cpu().numpy().astype(np.float64))
    for k, v in cached.items():
        v[...] = state[k].cpu().numpy()


def side_view(physics: BatchedPhysics, size: int = 160, scale: float = 50.0) -> np.ndarray:
    """A ``(size, size, 3)`` uint8 side view (x right, z up) of copy 0: a line from each body to its
    parent and a disc per body, the camera following the root; the ground is the bottom band."""
    m, d = physics.model, physics.data[0]
    img = canvas(size, size, (235, 240, 250))
    ground = size - 20
    img[ground:] = np.asarray((200, 200, 190), dtype=np.uint8)
    cx = float(d.xpos[1, 0])

    def px(p: np.ndarray) -> tuple[float, float]:
        return size / 2 + (float(p[0]) - cx) * scale, ground - float(p[2]) * scale

    for b in range(1, m.nbody):
        parent = int(m.body_parentid[b])
        if parent > 0:
            draw_line(img, *px(d.xpos[parent]), *px(d.xpos[b]), (40, 40, 40))
    for b in range(1, m.nbody):
        draw_disc(img, *px(d.xpos[b]), 3.0, (200, 90, 60))
    return img


def load_model(path: Any) -> mujoco.MjModel:
    """``MjModel`` from an XML file."""
    return mujoco.MjModel.from_xml_path(str(path))
