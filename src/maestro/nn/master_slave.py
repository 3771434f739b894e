"""MS-MARL: the master-slave policy network of Kong, Xin, Liu & Wang 2017, "Revisiting the
Master-Slave Architecture in Multi-Agent Deep Reinforcement Learning" (arXiv 1712.07305),
§3.1, Figures 1 and 4, and its gated composition module (GCM), batched over ``(B, N)``.

One time step (``H`` = ``hidden_size`` = 50 in the paper; master LSTM, slave RNN, Fig. 4):

    slave i:   e_i  = tanh(W_e s_i)                           local observation s_i (B, N, obs_dim)
               h_i  = RNN(e_i, h_{i,t-1})                     the slave's "thought" (B, N, H)
               c_i  = tanh(W_c h_i)                           its message to the master
    master:    o    = tanh(W_o s^m)                           its own state s^m = env ``state``
                                                              (e.g. the occupancy map), (B, H)
               h^m  = LSTM([o ; agg_i c_i], h^m_{t-1})        agg = mean (or sum) over *alive* slaves
    actions:   a_i      = W_s h_i                             the slave's own proposal (B, N, A)
               a^{m->i} = W_m h^m                             regular MS-MARL: one proposal
                                                              broadcast to every slave
               a^{m->i} = W_m z_i (GCM)                       MS-MARL + GCM: a proposal per slave
               logits_i = a_i + a^{m->i}                      "added to independent action
                                                              proposals" (§3.1, Fig. 1)
    baseline:  v_i = W_v [h_i ; h^m]

The GCM (Fig. 4C; the figure is not in the text, which says it "resembles LSTM" and that regular
MS-MARL is "the special case where the gate related to the slave's thoughts shuts down"). Our
reading: an LSTM cell update whose carried memory is the master's thought and whose input is the
slave's, with the master's path always open:

    g_i = sigmoid(W_g [h^m ; h_i] + b_g)     slave gate (the LSTM input gate)
    u_i = tanh(W_u [h^m ; h_i] + b_u)        candidate (the LSTM cell input)
    z_i = h^m + g_i * u_i

With the slave gate shut (``g_i = 0``, ``slave_gate_open=False``) ``z_i = h^m`` and the proposal is
exactly regular MS-MARL's ``W_m h^m`` with the same weights (tested).

Ablation of Figure 6a: ``master_state=False`` drops ``o`` (the master sees only the messages).

Option ``master_feedback`` (off by default; a reading of Figure 1, where the master "broadcasts back
its action output to all agents" across the two unfolded time steps): the master's previous thought
also enters every slave's encoder, ``e_i = tanh(W_e s_i + W_f h^m_{t-1})``, so that a slave's own
proposal ``a_i`` can depend on what the master knows. The paper's text and Figure 4 describe only
the additive composition above; this is our extension, not the paper's model.

Absent slaves (``alive`` False) send no message, keep a zero hidden state and their outputs are
masked by the learner; a copy with no alive slave gives the master a zero message.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from maestro.nn.recurrent import (
    CellKind,
    Hidden,
    ModelOut,
    cell_keys,
    cell_step,
    check_inputs,
    make_cell,
    masked_mean,
    masked_sum,
    zeros_hidden,
)


def gated_composition(hm: Tensor, hs: Tensor, gate: nn.Linear, candidate: nn.Linear, slave_gate_open: bool = True) -> Tensor:
    """The GCM's composed thought ``z_i = h^m + g_i * u_i`` (see the module docstring).

    Args:
        hm: ``(B, H)`` the master's hidden state.
        hs: ``(B, N, H)`` the slaves' hidden states.
        gate: ``Linear(2H, H)`` of the slave gate ``g``.
        candidate: ``Linear(2H, H)`` of the candidate ``u``.
        slave_gate_open: ``False`` shuts the slave gate (``g = 0``): regular MS-MARL.

    Returns:
        ``(B, N, H)``.
    """
    hm_b = hm.unsqueeze(1).expand_as(hs)
    if not slave_gate_open:
        return hm_b
    z = torch.cat([hm_b, hs], -1)
    return hm_b + torch.sigmoid(gate(z)) * torch.tanh(candidate(z))


class MasterSlaveNet(nn.Module):
    """MS-MARL (``gcm=False``) and MS-MARL + GCM (``gcm=True``); see the module docstring.

    Args:
        obs_dim: features of a slave's observation.
        n_agents: ``N`` slaves.
        action_dim: ``A``.
        state_dim: features of the master's state (flattened env ``state``); 0 = no state.
        hidden_size: ``H`` of slaves and master (50 in the paper).
        slave_cell: slave recurrence (the paper: ``rnn``).
        master_cell: master recurrence (the paper: ``lstm``).
        gcm: use the gated composition module (per-slave master proposals).
        slave_gate_open: with ``gcm``, ``False`` shuts the slave gate (equals regular MS-MARL).
        master_state: feed the env state to the master (``False``: the Figure 6a ablation).
        aggregate: how the master combines the alive slaves' messages (``mean`` or ``sum``).
        master_feedback: feed the master's previous hidden state to every slave's encoder (see the
            module docstring; not in the paper).
    """

    def __init__(
        self,
        obs_dim: int,
        n_agents: int,
        action_dim: int,
        state_dim: int = 0,
        hidden_size: int = 50,
        slave_cell: CellKind = "rnn",
        master_cell: CellKind = "lstm",
        gcm: bool = False,
        slave_gate_open: bool = True,
        master_state: bool = True,
        aggregate: Literal["mean", "sum"] = "mean",
        master_feedback: bool = False,
    ) -> None:
        super().__init__()
        if aggregate not in ("mean", "sum"):
            raise ValueError(f"aggregate must be 'mean' or 'sum', got {aggregate!r}")
        if master_state and state_dim <= 0:
            raise ValueError("MS-MARL's master state needs an env with a global state (state_dim > 0); use master_state=False for the ablation")
        H = hidden_size
        self.obs_dim, self.n_agents, self.state_dim, self.hidden_size = obs_dim, n_agents, state_dim, H
        self.slave_kind, self.master_kind = slave_cell, master_cell
        self.gcm, self.slave_gate_open, self.use_state, self.aggregate = gcm, slave_gate_open, master_state, aggregate
        self.slave_enc = nn.Linear(obs_dim, H)
        self.feedback = nn.Linear(H, H, bias=False) if master_feedback else None
        self.slave_cell = make_cell(slave_cell, H, H)
        self.message = nn.Linear(H, H)
        self.state_enc = nn.Linear(state_dim, H) if master_state else None
        self.master_cell = make_cell(master_cell, 2 * H if master_state else H, H)
        self.slave_head = nn.Linear(H, action_dim)
        self.master_head = nn.Linear(H, action_dim)
        self.gate = nn.Linear(2 * H, H) if gcm else None
        self.candidate = nn.Linear(2 * H, H) if gcm else None
        self.value_head = nn.Linear(2 * H, 1)

    def init_hidden(self, B: int, device: torch.device | str) -> Hidden:
        """Zeros: ``slave_h (B, N, H)`` [``slave_c``], ``master_h (B, H)`` [``master_c``]."""
        spec = {f"slave_{k}": (self.n_agents, self.hidden_size) for k in cell_keys(self.slave_kind)}
        spec.update({f"master_{k}": (self.hidden_size,) for k in cell_keys(self.master_kind)})
        return zeros_hidden(spec, B, device)

    def forward(self, obs: Tensor, state: Tensor | None, alive: Tensor, hidden: Hidden) -> ModelOut:
        """One time step: ``obs (B, N, obs_dim)``, ``state (B, state_dim)``, ``alive (B, N)`` ->
        ``ModelOut``; ``parts`` holds ``slave`` and ``master`` ``(B, N, A)`` with
        ``params = slave + master`` (the Figure 6b components)."""
        check_inputs("MasterSlaveNet", obs, alive, self.n_agents, self.obs_dim)
        B = obs.shape[0]
        a = alive.to(obs.dtype).unsqueeze(-1)
        # slaves
        pre = self.slave_enc(obs)
        if self.feedback is not None:
            pre = pre + self.feedback(hidden["master_h"]).unsqueeze(1)
        e = torch.tanh(pre)
        hs, cs = cell_step(self.slave_cell, e, hidden["slave_h"], hidden.get("slave_c"))
        hs = hs * a
        msg = torch.tanh(self.message(hs))
        agg = masked_mean(msg, alive) if self.aggregate == "mean" else masked_sum(msg, alive)
        # master
        if self.state_enc is not None:
            if state is None:
                raise ValueError("MasterSlaveNet: master_state=True needs the env state (B, state_dim)")
            s = state.reshape(B, -1)
            if s.shape[1] != self.state_dim:
                raise ValueError(f"MasterSlaveNet: state has {s.shape[1]} features (shape {tuple(state.shape)}), expected {self.state_dim}")
            m_in = torch.cat([torch.tanh(self.state_enc(s)), agg], -1)
        else:
            m_in = agg
        hm, cm = cell_step(self.master_cell, m_in, hidden["master_h"], hidden.get("master_c"))
        # composition of the actions
        slave_prop = self.slave_head(hs)
        if self.gcm:
            assert self.gate is not None and self.candidate is not None
            master_prop = self.master_head(gated_composition(hm, hs, self.gate, self.candidate, self.slave_gate_open))
        else:
            master_prop = self.master_head(hm).unsqueeze(1).expand_as(slave_prop)
        value = self.value_head(torch.cat([hs, hm.unsqueeze(1).expand_as(hs)], -1)).squeeze(-1)
        new: Hidden = {"slave_h": hs, "master_h": hm}
        if cs is not None:
            new["slave_c"] = cs * a
        if cm is not None:
            new["master_c"] = cm
        return ModelOut(slave_prop + master_prop, value, new, {"slave": slave_prop, "master": master_prop})
