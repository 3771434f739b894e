"""BiCNet (Peng, Yuan, Wen, Yang, Tang, Long & Wang 2017, "Multiagent Bidirectionally-Coordinated
Nets", arXiv 1703.10069), adapted to stochastic policies and episodic policy gradient, batched
over ``(B, N)``.

BiCNet's actor and critic are each a bidirectional RNN whose *sequence axis is the agents*: agent
``i``'s output depends on the agents before it (forward pass) and after it (backward pass), which
is its communication channel (Peng et al. §3, Fig. 1). Per time step (no recurrence over time,
as in the paper):

    actor:   e_i = tanh(W_e s_i);  y = BiRNN_agents(e);  logits_i (or Gaussian mean) = W_a y_i
    critic:  e'_i = tanh(W'_e s_i); y' = BiRNN'_agents(e'); v_i = W_v y'_i

Adaptation (documented departure): the paper trains a deterministic actor with a Q critic
``Q_i(s, a)`` by the multi-agent deterministic policy gradient with replay. Here, to compare it
with CommNet and MS-MARL under the same learner (Kong et al. 2017, Algorithm 1), the actor is a
softmax (discrete) or fixed-sigma Gaussian (continuous) policy and the critic is a bidirectional
*state-value* network ``V_i(s)`` used as the REINFORCE baseline, trained on Monte-Carlo returns.

Absent agents are removed from the sequence (alive agents are packed in slot order with
``pack_padded_sequence``), so they take no part in either pass; their outputs are zero.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from maestro.nn.recurrent import CellKind, Hidden, ModelOut, check_inputs


def make_birnn(kind: CellKind, in_dim: int, hidden: int) -> nn.Module:
    """A one-layer bidirectional ``nn.RNN`` (tanh) / ``nn.GRU`` / ``nn.LSTM``, batch first."""
    cls = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}.get(kind)
    if cls is None:
        raise ValueError(f"cell kind must be one of ['rnn', 'gru', 'lstm'], got {kind!r}")
    return cls(in_dim, hidden, batch_first=True, bidirectional=True)


def over_agents(rnn: nn.Module, x: Tensor, alive: Tensor) -> Tensor:
    """Run a bidirectional RNN along the agent axis over the alive agents only.

    Args:
        rnn: a bidirectional, batch-first ``nn.RNN``/``nn.GRU``/``nn.LSTM`` of hidden size ``H``.
        x: ``(B, N, F)`` per-agent inputs.
        alive: ``(B, N)`` bool.

    Returns:
        ``(B, N, 2H)``: for each alive agent the concatenated forward/backward outputs of the
        sequence of alive agents in slot order; zeros for absent agents. Equal to running the RNN
        on the alive agents alone (a copy with none alive gives zeros).
    """
    B, N, _ = x.shape
    order = torch.argsort((~alive).to(torch.int8), dim=1, stable=True)  # alive agents first, slot order kept
    xs = x.gather(1, order.unsqueeze(-1).expand_as(x))
    lengths = alive.sum(1).clamp_min(1).cpu()  # a copy with nobody alive runs one masked step
    packed = pack_padded_sequence(xs, lengths, batch_first=True, enforce_sorted=False)
    y, _ = rnn(packed)
    y, _ = pad_packed_sequence(y, batch_first=True, total_length=N)  # (B, N, 2H) in sorted order
    out = torch.zeros_like(y).scatter(1, order.unsqueeze(-1).expand_as(y), y)
    return out * alive.to(out.dtype).unsqueeze(-1)


class BiCNet(nn.Module):
    """BiCNet actor and critic (see the module docstring). Stateless over time: ``hidden`` is ``{}``.

    Args:
        obs_dim: features of one agent's observation.
        n_agents: ``N``.
        action_dim: ``A``.
        state_dim: unused (part of the common model signature).
        hidden_size: ``H`` of each direction (50, as the other models).
        cell: the bidirectional RNN's cell (``lstm``, ``gru`` or ``rnn``).
    """

    def __init__(self, obs_dim: int, n_agents: int, action_dim: int, state_dim: int = 0, hidden_size: int = 50, cell: CellKind = "lstm") -> None:
        super().__init__()
        H = hidden_size
        self.obs_dim, self.n_agents, self.hidden_size = obs_dim, n_agents, H
        self.actor_enc = nn.Linear(obs_dim, H)
        self.actor_rnn = make_birnn(cell, H, H)
        self.actor_head = nn.Linear(2 * H, action_dim)
        self.critic_enc = nn.Linear(obs_dim, H)
        self.critic_rnn = make_birnn(cell, H, H)
        self.critic_head = nn.Linear(2 * H, 1)

    def init_hidden(self, B: int, device: torch.device | str) -> Hidden:
        """BiCNet keeps no state across time steps: ``{}``."""
        return {}

    def forward(self, obs: Tensor, state: Tensor | None, alive: Tensor, hidden: Hidden) -> ModelOut:
        """One time step: ``obs (B, N, obs_dim)``, ``alive (B, N)`` -> ``params (B, N, A)``, ``value (B, N)``."""
        check_inputs("BiCNet", obs, alive, self.n_agents, self.obs_dim)
        y = over_agents(self.actor_rnn, torch.tanh(self.actor_enc(obs)), alive)
        yv = over_agents(self.critic_rnn, torch.tanh(self.critic_enc(obs)), alive)
        return ModelOut(self.actor_head(y), self.critic_head(yv).squeeze(-1), {}, {})
