"""Recurrent cells and the shared pieces of the communication models (Independent, CommNet,
MS-MARL, BiCNet), batched over env copies and agents ``(B, N)``.

- ``make_cell`` / ``cell_step``: an Elman RNN (tanh), GRU or LSTM cell (Hochreiter & Schmidhuber
  1997) applied to any leading shape ``(..., in)`` by flattening it to one batch, so ``B * N``
  agents step in one call. A hidden state is a ``dict[str, Tensor]`` (``{"h"}`` or ``{"h", "c"}``
  for an LSTM); a model's whole hidden state is a flat dict of such tensors with prefixed keys,
  which resets, masks and checkpoints uniformly.
- ``mean_of_others`` / ``masked_mean``: the communication averages of CommNet (Sukhbaatar et al.
  2016, arXiv 1605.07736, eq. 2: ``c_j = 1/(J-1) sum_{j' != j} h_j'``) and of the MS-MARL master's
  aggregation of slave messages (Kong et al. 2017, §3.1), over *alive* agents only, so absent
  cars and dead units take no part in communication.
- ``reset_hidden``: zero the hidden state of copies (episode start) or agents (absent).
- ``ModelOut``: what every model returns for one time step.
- ``GRUNet``: an MLP, a GRU and an output layer over ``(T, B, N, ...)`` sequences (PPO's recurrent actors and critics).

Every model of ``maestro.nn.{commnet, master_slave, bicnet}`` has the same interface::

    net = Model(obs_dim, n_agents, action_dim, state_dim, **arch)
    hidden = net.init_hidden(B, device)                      # dict of (B, ...) zeros
    out = net(obs (B, N, obs_dim), state (B, state_dim), alive (B, N) bool, hidden) -> ModelOut
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from maestro.nn.mlp import MLP, orthogonal_init

CellKind = Literal["rnn", "gru", "lstm"]
Hidden = dict[str, Tensor]


class ModelOut(NamedTuple):
    """One time step of a model.

    Attributes:
        params: ``(B, N, A)`` action logits (discrete) or Gaussian means (continuous).
        value: ``(B, N)`` value estimates (the learned baseline of REINFORCE).
        hidden: the new hidden state (flat dict of ``(B, ...)`` tensors; zero for absent agents).
        parts: named components of ``params`` for analysis, e.g. MS-MARL's ``slave`` and
            ``master`` proposals ``(B, N, A)`` (``params = slave + master``); may be empty.
    """

    params: Tensor
    value: Tensor
    hidden: Hidden
    parts: dict[str, Tensor]


def make_cell(kind: CellKind, in_dim: int, hidden: int) -> nn.Module:
    """``nn.RNNCell`` (tanh), ``nn.GRUCell`` or ``nn.LSTMCell`` of ``in_dim -> hidden``."""
    if kind == "rnn":
        return nn.RNNCell(in_dim, hidden, nonlinearity="tanh")
    if kind == "gru":
        return nn.GRUCell(in_dim, hidden)
    if kind == "lstm":
        return nn.LSTMCell(in_dim, hidden)
    raise ValueError(f"cell kind must be one of ['rnn', 'gru', 'lstm'], got {kind!r}")


def cell_keys(kind: CellKind) -> tuple[str, ...]:
    """Hidden tensors of a cell kind: ``("h",)`` or ``("h", "c")`` for an LSTM."""
    return ("h", "c") if kind == "lstm" else ("h",)


def cell_step(cell: nn.Module, x: Tensor, h: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """One step of ``cell`` on ``x (..., in)`` with state ``h (..., H)`` (and ``c`` for an LSTM).

    The leading dims (``(B, N)`` for agents, ``(B,)`` for a master) are flattened into one batch.
    Returns ``(h', c')`` of shape ``(..., H)`` (``c'`` is ``None`` unless the cell is an LSTM).
    """
    lead = x.shape[:-1]
    if h.shape[:-1] != lead:
        raise ValueError(f"cell_step: hidden has shape {tuple(h.shape)}, expected leading dims {tuple(lead)} of input {tuple(x.shape)}")
    xf, hf = x.reshape(-1, x.shape[-1]), h.reshape(-1, h.shape[-1])
    if isinstance(cell, nn.LSTMCell):
        if c is None:
            raise ValueError("cell_step: an LSTM cell needs its cell state c")
        h2, c2 = cell(xf, (hf, c.reshape(-1, c.shape[-1])))
        return h2.view(*lead, -1), c2.view(*lead, -1)
    return cell(xf, hf).view(*lead, -1), None


def zeros_hidden(spec: dict[str, tuple[int, ...]], B: int, device: torch.device | str) -> Hidden:
    """``{name: zeros(B, *shape)}`` for a hidden-state layout ``{name: shape}``."""
    return {k: torch.zeros(B, *shape, device=device) for k, shape in spec.items()}


def reset_hidden(hidden: Hidden, keep: Tensor) -> Hidden:
    """Zero the hidden state where ``keep`` is False.

    Args:
        hidden: flat dict of ``(B, ...)`` tensors.
        keep: ``(B,)`` bool (per copy: False at an episode start) or ``(B, N)`` bool (per agent,
            applied only to tensors whose second dim is ``N``, i.e. per-agent state).
    """
    out: Hidden = {}
    for k, v in hidden.items():
        if keep.dim() == 2 and (v.dim() < 3 or v.shape[1] != keep.shape[1]):
            out[k] = v  # a per-copy tensor (e.g. the master's) is not reset per agent
            continue
        m = keep.to(v.dtype)
        while m.dim() < v.dim():
            m = m.unsqueeze(-1)
        out[k] = v * m
    return out


def masked_mean(x: Tensor, alive: Tensor) -> Tensor:
    """Mean of ``x (B, N, H)`` over the alive agents (``alive (B, N)`` bool) -> ``(B, H)``; 0 if none."""
    w = alive.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


def masked_sum(x: Tensor, alive: Tensor) -> Tensor:
    """Sum of ``x (B, N, H)`` over the alive agents -> ``(B, H)``."""
    return (x * alive.to(x.dtype).unsqueeze(-1)).sum(1)


def mean_of_others(x: Tensor, alive: Tensor) -> Tensor:
    """CommNet's communication vector: for each agent ``j`` the mean of ``x`` over the *other*
    alive agents, ``(sum_{j' alive} x_j' - [j alive] x_j) / max(1, #alive - [j alive])``.

    Args:
        x: ``(B, N, H)`` hidden states.
        alive: ``(B, N)`` bool.

    Returns:
        ``(B, N, H)``; zero for an agent with no other alive agent. Absent agents' ``x`` never
        enters anyone's average (their rows are computed but are masked by the caller).
    """
    w = alive.to(x.dtype).unsqueeze(-1)  # (B, N, 1)
    xs = x * w
    total = xs.sum(1, keepdim=True)  # (B, 1, H)
    count = w.sum(1, keepdim=True)  # (B, 1, 1)
    return (total - xs) / (count - w).clamp_min(1.0)


def check_inputs(name: str, obs: Tensor, alive: Tensor, n_agents: int, obs_dim: int) -> None:
    """Shape checks shared by the models: ``obs (B, N, obs_dim)`` and ``alive (B, N)`` bool."""
    if obs.dim() != 3 or obs.shape[1] != n_agents or obs.shape[2] != obs_dim:
        raise ValueError(f"{name}: obs has shape {tuple(obs.shape)}, expected (B, {n_agents}, {obs_dim})")
    if alive.shape != obs.shape[:2] or alive.dtype != torch.bool:
        raise ValueError(f"{name}: alive has shape {tuple(alive.shape)} {alive.dtype}, expected bool {tuple(obs.shape[:2])}")


class GRUNet(nn.Module):
    """``in_dim -> hidden... -> GRU(H) -> out_dim`` over sequences: an MLP (its last hidden width the
    GRU's input, after the activation), a GRU cell, a linear output layer (orthogonal, ``out_gain``).
    PPO's recurrent actors and critics (``maestro.core.ppo_family``, the MAPPO paper's rMAPPO).

    ``forward(x (T, B, N, in_dim), h0 (B, N, H), starts (T, B) | None) -> (out (T, B, N, out_dim),
    states (T, B, N, H))``: the state is zeroed before every step where ``starts`` says an episode
    begins; ``states[t]`` is the state after step ``t``. ``step(x (..., in_dim), h (..., H)) -> (out,
    h')`` is one step for any leading shape.
    """

    def __init__(self, in_dim: int, hidden: tuple[int, ...], width: int, out_dim: int, activation: str = "relu", out_gain: float = 1.0, input_norm: bool = False) -> None:
        super().__init__()
        if len(hidden) < 1:
            raise ValueError(f"GRUNet needs at least one hidden width (the GRU's input), got hidden={hidden}")
        self.trunk = MLP(in_dim, tuple(hidden[:-1]), hidden[-1], activation, out_gain=2.0**0.5, input_norm=input_norm)  # type: ignore[arg-type]
        self.act = nn.ReLU() if activation == "relu" else nn.Tanh()
        self.cell = nn.GRUCell(hidden[-1], width)
        self.head = orthogonal_init(nn.Linear(width, out_dim), out_gain)
        self.width = width

    def step(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """One step: ``x (..., in_dim)``, ``h (..., H)`` -> ``(out (..., out_dim), h' (..., H))``."""
        h2, _ = cell_step(self.cell, self.act(self.trunk(x)), h)
        return self.head(h2), h2

    def forward(self, x: Tensor, h0: Tensor, starts: Tensor | None = None) -> tuple[Tensor, Tensor]:
        T, B, N = x.shape[:3]
        if h0.shape != (B, N, self.width):
            raise ValueError(f"GRUNet: state has shape {tuple(h0.shape)}, expected ({B}, {N}, {self.width}) for input {tuple(x.shape)}")
        feats = self.act(self.trunk(x))  # the trunk over all steps at once
        h, states = h0, []
        for t in range(T):
            if starts is not None:
                h = h * (~starts[t]).to(h.dtype)[:, None, None]
            h, _ = cell_step(self.cell, feats[t], h)
            states.append(h)
        out = torch.stack(states)
        return self.head(out), out
