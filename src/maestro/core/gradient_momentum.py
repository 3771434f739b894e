"""Gradient momentum over one master and K slaves (Guo & Duan, papers/000, Sec. 3.2.3, eqs. (1)-(2)).

The paper, for the master's parameters ``W`` and a slave's ``w`` (``S_t``, ``s_t``: their vanilla
gradients; ``alpha`` the learning rate, ``beta`` the momentum rate)::

    (1)  V_t = beta V_{t-1} + (1 - beta) S_t,      W = W - alpha V_t
    (2)  v_t = beta v_{t-1} + (1 - beta) s_t,      w = w - alpha V_t

with the words: "at each step of the gradient descent of the slave agents, we first use the
gradient of the master agent as the initialization. Then the slave agent explore the policy space,
find a reasonable gradient direction and use it to update the master's policy [...] For the slave
agent, we replace the term of momentum in the optimizer with the gradient of the master agent".

Taken letter by letter, (1)-(2) never let a slave's gradient reach the master (``v_t`` is computed
and unused), which contradicts the words. maestro's reading keeps every printed update and adds
the one coupling the words describe. Per parameter tensor that the master and slave ``k`` share
(same role and shape), at step ``t``:

    V_t     = beta V_{t-1} + (1 - beta) S_t            master momentum, (1)
    v^k_t   = beta V_t     + (1 - beta) s^k_t          slave k's momentum with its momentum term
                                                       replaced by the master's ("initialization")
    W      <- W - alpha * mean_k v^k_t                 the slaves' directions update the master
    w^k    <- w^k - alpha * V_t                        the slaves' updates use the master's momentum, (2)

So the master moves along ``beta V_t + (1 - beta) mean_k s^k_t``: its own momentum dominates
(``beta = 0.9``) and the slaves' exploration corrects it, while the slaves follow the master's
momentum. With no slave paired to a tensor the master takes plain momentum SGD ``W <- W - alpha V_t``
(eq. (1)); a slave tensor with no master counterpart (a head of another shape) takes plain momentum
SGD on its own gradient, ``v_t = beta v_{t-1} + (1 - beta) s_t``, ``w <- w - alpha v_t``. The state
(``state_dict``) is ``V`` and those slaves' own ``v``.

**Pairing a part of a tensor** (``index``): where the slave's inputs and actions are a subset of the
master's (Humanoid's 45 of 348 observations and 11 of 17 actuators; ``nas``'s 11 of 15 operations),
a slave tensor of another shape can still share the role of *part* of a master tensor: the stem's
columns of the shared inputs, the head's rows of the shared actions. Given ``index`` (the slave's
entries are ``W[index]``), the rules above apply entry by entry: the entries some slaves cover move
along ``beta V_t + (1 - beta) mean s^k_t`` (the mean over the slaves covering each entry), the others
along ``V_t``, and the slave moves along ``V_t[index]``. With no ``index`` only equal shapes pair (the
tensors the two networks share whole), as before.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn


class GradientMomentum:
    """The optimiser of the module docstring over ``master`` parameters and ``slaves`` parameter lists.

    Args:
        master: the master's parameters ``W`` (a list of tensors).
        slaves: one list per slave, aligned with ``master``: entry ``i`` is the slave's tensor that
            shares the role of ``master[i]`` (same shape) or ``None``.
        slave_only: one list per slave of the slave's tensors with no master counterpart.
        index: ``None`` or one list per slave aligned with ``master``: entry ``i`` is ``None`` (the
            slave's tensor pairs the whole of ``master[i]``, same shape) or a tuple indexing
            ``master[i]`` so that ``master[i][index]`` has the slave tensor's shape (module docstring).
        lr: ``alpha``.
        beta: the momentum rate.

    ``step()`` reads ``.grad`` (a missing gradient counts as zero) and updates in place.
    """

    def __init__(
        self,
        master: Sequence[nn.Parameter],
        slaves: Sequence[Sequence[nn.Parameter | None]],
        slave_only: Sequence[Sequence[nn.Parameter]] = (),
        lr: float = 1e-2,
        beta: float = 0.9,
        index: Sequence[Sequence[tuple | None]] | None = None,
    ) -> None:
        if lr <= 0 or not 0.0 <= beta < 1.0:
            raise ValueError(f"gradient momentum needs lr > 0 and beta in [0, 1), got lr={lr}, beta={beta}")
        self.master = list(master)
        self.slaves = [list(s) for s in slaves]
        self.slave_only = [list(s) for s in slave_only] or [[] for _ in self.slaves]
        if len(self.slave_only) != len(self.slaves):
            raise ValueError(f"slave_only has {len(self.slave_only)} lists for {len(self.slaves)} slaves")
        self.index = [list(ix) for ix in index] if index is not None else [[None] * len(self.master) for _ in self.slaves]
        if len(self.index) != len(self.slaves):
            raise ValueError(f"index has {len(self.index)} lists for {len(self.slaves)} slaves")
        for k, paired in enumerate(self.slaves):
            if len(paired) != len(self.master) or len(self.index[k]) != len(self.master):
                raise ValueError(f"slave {k} pairs {len(paired)} tensors (and {len(self.index[k])} indices) with the master's {len(self.master)}")
            for i, (w, W, ix) in enumerate(zip(paired, self.master, self.index[k])):
                target = W.shape if ix is None else W[ix].shape
                if w is not None and w.shape != target:
                    raise ValueError(f"slave {k} tensor {i} has shape {tuple(w.shape)}, its part of the master's tensor {tuple(target)}")
        self.lr, self.beta = float(lr), float(beta)
        self.V = [torch.zeros_like(W) for W in self.master]
        self.v = [[torch.zeros_like(w) for w in own] for own in self.slave_only]

    def parameters(self) -> list[nn.Parameter]:
        """Every tensor the optimiser updates, each once."""
        seen: dict[int, nn.Parameter] = {}
        for p in [*self.master, *(w for s in self.slaves for w in s if w is not None), *(w for s in self.slave_only for w in s)]:
            seen.setdefault(id(p), p)
        return list(seen.values())

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    @staticmethod
    def _grad(p: Tensor) -> Tensor:
        return p.grad if p.grad is not None else torch.zeros_like(p)

    @torch.no_grad()
    def step(self) -> None:
        """One update of every tensor (module docstring); gradients are read before any tensor moves."""
        a, b = self.lr, self.beta
        master_dirs = []
        for i, W in enumerate(self.master):
            self.V[i].mul_(b).add_(self._grad(W), alpha=1.0 - b)
            paired = [(s[i], ix[i]) for s, ix in zip(self.slaves, self.index) if s[i] is not None]
            if paired and all(part is None for _, part in paired):
                mean_s = torch.stack([self._grad(w) for w, _ in paired]).mean(0)
                master_dirs.append(b * self.V[i] + (1.0 - b) * mean_s)
            elif paired:  # some slaves cover a part of W: the mean over the slaves covering each entry
                total, count = torch.zeros_like(W), torch.zeros_like(W)
                for w, part in paired:
                    sel = (slice(None),) if part is None else part
                    total[sel] += self._grad(w)
                    count[sel] += 1.0
                mixed = b * self.V[i] + (1.0 - b) * total / count.clamp(min=1.0)
                master_dirs.append(torch.where(count > 0, mixed, self.V[i]))
            else:
                master_dirs.append(self.V[i])
        own_dirs = []
        for k, own in enumerate(self.slave_only):
            for j, w in enumerate(own):
                self.v[k][j].mul_(b).add_(self._grad(w), alpha=1.0 - b)
            own_dirs.append(list(self.v[k]))
        for i, W in enumerate(self.master):
            W.sub_(master_dirs[i], alpha=a)
            for s, ix in zip(self.slaves, self.index):
                if s[i] is not None:
                    s[i].sub_(self.V[i] if ix[i] is None else self.V[i][ix[i]], alpha=a)
        for own, dirs in zip(self.slave_only, own_dirs):
            for w, d in zip(own, dirs):
                w.sub_(d, alpha=a)

    def state_dict(self) -> dict[str, Any]:
        return {"V": [x.clone() for x in self.V], "v": [[x.clone() for x in own] for own in self.v], "lr": self.lr, "beta": self.beta}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["V"]) != len(self.V) or [len(x) for x in state["v"]] != [len(x) for x in self.v]:
            raise ValueError("gradient momentum state does not match the optimiser's tensors")
        self.V = [x.to(W.device).clone() for x, W in zip(state["V"], self.master)]
        self.v = [[x.clone() for x in own] for own in state["v"]]
        self.lr, self.beta = float(state["lr"]), float(state["beta"])
