"""CommNet (Sukhbaatar, Szlam & Fergus 2016, "Learning Multiagent Communication with
Backpropagation", arXiv 1605.07736) and its communication-free ablation, the *independent*
controller of the same paper (§5: "each agent is controlled by the same network without
communication"), batched over env copies and agents ``(B, N)``.

One time step, for every agent ``j`` (``e``, ``h``, ``c`` are ``(B, N, H)``, ``H`` = ``hidden_size``):

    e_j   = tanh(W_e s_j)                                  encoder of the local observation
    h_j^1 = cell(e_j + C^0 m_j(h_{t-1}), h_{j,t-1})        the recurrent step (RNN, GRU or LSTM),
                                                           m_j = mean of the *other* alive agents'
                                                           states (CommNet eq. 2, its recurrent
                                                           "temporal" variant, §3.1 and §3.2)
    h_j^{k+1} = tanh(e_j + H^k h_j^k + C^k m_j(h^k))       further communication steps k = 1..K-1
                                                           (eq. 1-2 with the skip connection to e)
    logits_j = W_a h_j^K,  value_j = W_v h_j^K             softmax policy head and baseline head

With ``K = comm_steps = 1`` this is the recurrent CommNet of the reference implementation
(IC3Net's ``commnet`` with ``--recurrent``: one communication per time step). The independent
controller is the same network with ``communicate=False`` (``m_j = 0``; ``K`` must be 1).

Absent agents (``alive`` False: cars off the grid, dead units) are left out of every mean, and
their hidden state is set to zero, so they neither send nor keep information; their outputs are
computed but must be masked by the learner.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from maestro.nn.recurrent import CellKind, Hidden, ModelOut, cell_keys, cell_step, check_inputs, make_cell, mean_of_others, zeros_hidden


class CommNet(nn.Module):
    """CommNet / independent controller (see the module docstring).

    Args:
        obs_dim: features of one agent's observation.
        n_agents: ``N``.
        action_dim: ``A`` (number of discrete actions, or continuous action size).
        state_dim: unused (CommNet has no global input); part of the common model signature.
        hidden_size: ``H`` (CommNet and MS-MARL: 50).
        cell: recurrent cell of the time step (``lstm`` as in CommNet's traffic junction).
        comm_steps: ``K`` communication steps per time step (>= 1).
        communicate: ``False`` gives the independent controller.
    """

    def __init__(
        self,
        obs_dim: int,
        n_agents: int,
        action_dim: int,
        state_dim: int = 0,
        hidden_size: int = 50,
        cell: CellKind = "lstm",
        comm_steps: int = 1,
        communicate: bool = True,
    ) -> None:
        super().__init__()
        if comm_steps < 1:
            raise ValueError(f"comm_steps must be >= 1, got {comm_steps}")
        if not communicate and comm_steps != 1:
            raise ValueError(f"the independent controller has no communication steps: comm_steps must be 1, got {comm_steps}")
        H = hidden_size
        self.obs_dim, self.n_agents, self.hidden_size, self.kind = obs_dim, n_agents, H, cell
        self.communicate = communicate
        self.encoder = nn.Linear(obs_dim, H)
        self.cell = make_cell(cell, H, H)
        self.comm0 = nn.Linear(H, H, bias=False) if communicate else None
        self.f = nn.ModuleList(nn.Linear(H, H) for _ in range(comm_steps - 1))
        self.C = nn.ModuleList(nn.Linear(H, H, bias=False) for _ in range(comm_steps - 1))
        self.policy_head = nn.Linear(H, action_dim)
        self.value_head = nn.Linear(H, 1)

    def init_hidden(self, B: int, device: torch.device | str) -> Hidden:
        """Zeros ``{"h": (B, N, H)}`` (plus ``"c"`` for an LSTM)."""
        return zeros_hidden({k: (self.n_agents, self.hidden_size) for k in cell_keys(self.kind)}, B, device)

    def forward(self, obs: Tensor, state: Tensor | None, alive: Tensor, hidden: Hidden) -> ModelOut:
        """One time step: ``obs (B, N, obs_dim)``, ``alive (B, N)`` bool -> ``ModelOut`` with
        ``params (B, N, A)``, ``value (B, N)`` and the new hidden state."""
        check_inputs("CommNet", obs, alive, self.n_agents, self.obs_dim)
        e = torch.tanh(self.encoder(obs))
        h_prev = hidden["h"]
        x = e + self.comm0(mean_of_others(h_prev, alive)) if self.comm0 is not None else e
        h, c = cell_step(self.cell, x, h_prev, hidden.get("c"))
        for f_k, C_k in zip(self.f, self.C):
            h = torch.tanh(e + f_k(h) + C_k(mean_of_others(h, alive)))
        a = alive.to(h.dtype).unsqueeze(-1)
        h = h * a
        new: Hidden = {"h": h}
        if c is not None:
            new["c"] = c * a
        return ModelOut(self.policy_head(h), self.value_head(h).squeeze(-1), new, {})
