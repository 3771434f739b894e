"""What the master-slave methods share (Guo & Duan, papers/000, Sec. 3.2): the slave envs built from
the master's, their statistics' names, and the pairing of a master's and a slave's tensors.

Used by ``algos/transfer.py`` (pre-training, multi-tasking, gradient momentum on the MuJoCo bodies)
and ``algos/irl.py`` (gradient momentum under inverse RL, the architecture search).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from maestro.core.gradient_momentum import GradientMomentum
from maestro.core.ppo_family import Learner


def check_master(env: Any) -> None:
    """``ValueError`` unless ``env`` is the master role of an env that has master and slave roles."""
    if not {"master", "slave"} <= set(env.spec.roles):
        raise ValueError(f"the master-slave methods need an env with master and slave roles (walker2d, humanoid, nas); {env.spec.name!r} has roles {env.spec.roles}")
    if getattr(env.cfg, "role", None) != "master":
        raise ValueError(f"the recipe's env is the master: set env_config.role to 'master' (got {getattr(env.cfg, 'role', None)!r})")


def make_slave_env(env: Any, seed: int) -> Any:
    """The slave role of ``env``'s env (same config otherwise, same ``num_envs`` and device), seeded ``seed``."""
    return type(env)(dataclasses.replace(env.cfg, role="slave"), num_envs=env.num_envs, seed=seed, device=env.device)


def episode_stats(stats: dict[str, float], prefix: str) -> dict[str, float]:
    """``train/...`` episode statistics renamed ``<prefix>/...``."""
    return {prefix + k[len("train") :]: v for k, v in stats.items() if k.startswith("train/")}


def overlap_index(master: Learner, obs_index: Sequence[int], action_index: Sequence[int]) -> dict[int, tuple]:
    """The master's tensors of which a slave's smaller tensor is a part, by ``id``, each with the index
    that selects that part (``GradientMomentum``'s ``index``): the stems' input weights take the
    columns ``obs_index`` (the slave's observation features in the master's, ``env.slave_indices()``),
    the actors' heads and log-stds the rows ``action_index``."""
    obs = torch.as_tensor(list(obs_index), dtype=torch.long)
    act = torch.as_tensor(list(action_index), dtype=torch.long)
    out: dict[int, tuple] = {}
    for g, actor in master.policy.actors.items():
        out[id(actor.stem_linear().weight)] = (slice(None), obs)
        out[id(actor.head.weight)] = (act, slice(None))
        out[id(actor.head.bias)] = (act,)
        if g in master.policy.log_std:
            out[id(master.policy.log_std[g])] = (act,)
    for critic in master.critics.values():
        out[id(critic.stem_linear().weight)] = (slice(None), obs)
    return out


def pair_parameters(master: Learner, slave: Learner, overlap: dict[int, tuple] | None = None) -> tuple[list[nn.Parameter | None], list[nn.Parameter], list[tuple | None]]:
    """The slave's tensors aligned with the master's, the slave's tensors left without a master
    counterpart, and the index of each paired part (``GradientMomentum``'s ``slaves``, ``slave_only``
    and ``index``). Both agents' parameters are listed in the same order (actors, log-stds, critics),
    so equal shapes mean equal roles and pair whole (index ``None``); with ``overlap``
    (``overlap_index``) a slave tensor of another shape pairs the part of the master's it indexes, and
    without it such a tensor is left alone."""
    m_params = [*master.params()[0], *master.params()[1]]
    s_params = [*slave.params()[0], *slave.params()[1]]
    if len(m_params) != len(s_params):
        raise ValueError(f"master and slave networks differ in structure ({len(m_params)} vs {len(s_params)} tensors)")
    paired: list[nn.Parameter | None] = []
    alone: list[nn.Parameter] = []
    index: list[tuple | None] = []
    for m, s in zip(m_params, s_params):
        part = (overlap or {}).get(id(m))
        if s.shape == m.shape:
            paired.append(s)
            index.append(None)
        elif part is not None and m[part].shape == s.shape:
            paired.append(s)
            index.append(part)
        else:
            paired.append(None)
            index.append(None)
            alone.append(s)
    return paired, alone, index


def momentum_optimiser(master: Learner, slaves: list[Learner], pairing: str, lr: float, beta: float) -> GradientMomentum:
    """``GradientMomentum`` over ``master`` and ``slaves``: their tensors paired by ``pair_parameters``,
    whole by shape (``pairing="shape"``) or also by part (``"overlap"``, from the master env's
    ``slave_indices()``)."""
    overlap = overlap_index(master, *master.env.slave_indices()) if pairing == "overlap" else None
    pairs = [pair_parameters(master, s, overlap) for s in slaves]
    return GradientMomentum(
        [*master.params()[0], *master.params()[1]],
        [p for p, _, _ in pairs],
        [a for _, a, _ in pairs],
        lr=lr,
        beta=beta,
        index=[ix for _, _, ix in pairs],
    )


def momentum_step(optimiser: GradientMomentum, learners: list[Learner], names: list[str], max_grad_norm: float) -> Callable[[list[Tensor]], dict[str, Tensor]]:
    """``ppo_epochs``' step for gradient momentum: backpropagate the sum of every learner's loss (the
    networks are disjoint, so each receives its own loss's gradient), clip each learner's gradient
    norm to ``max_grad_norm`` (0: no clip; the norms are returned as ``<name>_grad_norm``), then one
    ``GradientMomentum`` step."""

    def step(losses: list[Tensor]) -> dict[str, Tensor]:
        optimiser.zero_grad()
        torch.stack(losses).sum().backward()
        norms = {}
        if max_grad_norm > 0:
            for name, learner in zip(names, learners):
                norms[f"{name}_grad_norm"] = nn.utils.clip_grad_norm_([*learner.params()[0], *learner.params()[1]], max_grad_norm)
        optimiser.step()
        return norms

    return step
