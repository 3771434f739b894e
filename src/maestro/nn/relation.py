"""Networks of multi-task MARL over entity tokens: relation network, role policies, critic, task auto-encoder.

Zhang 2020, "Multi-task MARL" (``papers/003``, Sec. 2.3-2.5): a task encoder ``psi(t)`` gives a
categorical distribution over ``K`` latent skills; an agent's skill ``z`` and its local observation
``s`` give relationships ``k = M_phi(s, z)`` through a relation network; the role policy
``pi_theta(a | s, k)`` and the critic ``Q_alpha(s, a, k)`` act and learn on them; a decoder
``psi'`` reconstructs the task description from ``psi(t)`` (eq. 6).

maestro's reading of "relationships" (the notes' Sec. 2.2 names the relationship as the ``q`` and
``k`` of a transformer's attention, which EPC learns separately in actor and critic and the notes
want learnt once, task-specifically): ``k`` is the **attention weights** of the observer over the
entities it sees, one distribution per head, computed by ``M_phi`` from the observer's own token
and its skill (the query) and every entity's token (the keys). The policy and the critic each
embed the entities with their own value networks and pool them with these weights, so the
relation network is the one place where relationships are learnt, shared by actor and critic.

Shapes: ``M`` observers (any flattening of ``(S, B, N)``), ``E`` entities per observer (its own
token first, ``maestro.envs.api.EntityObs``), ``F`` token features, ``K`` skills, ``H`` heads,
``D`` task-description features. No parameter depends on ``E``: one network serves any number of
agents and landmarks, and each module is equivariant under a permutation of the entities other
than the observer (the relations permute with them; the pooled outputs do not change).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from maestro.nn.mlp import MLP


def _check_tokens(tokens: Tensor, mask: Tensor | None, token_dim: int, who: str) -> None:
    if tokens.dim() != 3 or tokens.shape[-1] != token_dim:
        raise ValueError(f"{who}: tokens have shape {tuple(tokens.shape)}, expected (M, E, {token_dim})")
    if mask is not None and tuple(mask.shape) != tuple(tokens.shape[:2]):
        raise ValueError(f"{who}: mask has shape {tuple(mask.shape)}, expected {tuple(tokens.shape[:2])} (M, E)")


class RelationNet(nn.Module):
    """``k = M_phi(s, z)``: skill-conditioned attention of an observer over the entities it sees.

    Args:
        token_dim: ``F``.
        n_skills: ``K`` (the skill enters as a one-hot or relaxed one-hot; ``K = 0`` gives an
            unconditioned relation network, the no-skill ablation).
        hidden: width of the token embedding.
        heads: ``H`` attention heads (relations per observer).
        key_dim: width of each head's query and keys.

    ``forward(tokens (M, E, F), mask (M, E) bool, skill (..., M, K)) -> relations (..., M, H, E)``:
    per head ``softmax_e(q(e_self, z) . key(e_e) / sqrt(key_dim))`` over the visible entities (zero
    weight on masked ones), ``e`` an MLP embedding of the tokens. The skill may carry leading sample
    dims (the MI reward's ``N`` skills): the tokens are embedded once.
    """

    def __init__(self, token_dim: int, n_skills: int, hidden: int = 64, heads: int = 4, key_dim: int = 16) -> None:
        super().__init__()
        self.token_dim, self.n_skills, self.heads, self.key_dim = token_dim, n_skills, heads, key_dim
        self.embed = MLP(token_dim, (hidden,), hidden)
        self.query = nn.Linear(hidden + n_skills, heads * key_dim)
        self.key = nn.Linear(hidden, heads * key_dim)

    def forward(self, tokens: Tensor, mask: Tensor, skill: Tensor) -> Tensor:
        """Relations ``(..., M, H, E)``, each row a distribution over the visible entities."""
        _check_tokens(tokens, mask, self.token_dim, "RelationNet")
        M, E, _ = tokens.shape
        if skill.dim() < 2 or tuple(skill.shape[-2:]) != (M, self.n_skills):
            raise ValueError(f"RelationNet: skill has shape {tuple(skill.shape)}, expected (..., {M}, {self.n_skills}) (..., M, K)")
        lead = skill.shape[:-2]
        emb = torch.relu(self.embed(tokens))  # (M, E, hidden)
        own = emb[:, 0].expand(*lead, M, emb.shape[-1])
        q = self.query(torch.cat([own, skill], -1)).view(*lead, M, 1, self.heads, self.key_dim)
        keys = self.key(emb).view(M, E, self.heads, self.key_dim)
        logits = (q * keys).sum(-1).transpose(-1, -2) / math.sqrt(self.key_dim)  # (..., M, H, E)
        logits = logits.masked_fill(~mask[:, None, :], float("-inf"))
        return torch.softmax(logits, dim=-1)


class RelationalHead(nn.Module):
    """A network on ``(s, k)``: the observer's own token and the entities pooled by given relations.

    ``forward(tokens (M, E, F), relations (..., M, H, E), mask (M, E) bool) -> (..., M, out_dim)``:
    each head ``h`` pools its own value embedding of the entities, ``sum_e k[h, e] v_h(token_e)``; the
    pooled vectors and an embedding of the observer's own token go through an MLP. The role policies
    (``out_dim`` = actions, logits) and the critic (``Q(s, ., k)`` for every discrete action) are this
    network. Relations may carry leading sample dims; the tokens are embedded once.

    ``context_layers > 0`` first passes the embedded entities through that many Transformer encoder
    layers (self-attention among the entities the observer sees, ``H`` heads, no dropout; the
    ``mask`` is then required), so that an entity's value can depend on the others (a landmark
    already near another agent): EPC's policies (Long et al. 2020) attend among entities before
    pooling; the relations still decide the pooling. Permutation-equivariant over the entities as
    before (no positional encoding; the observer's token says "self").
    """

    def __init__(self, token_dim: int, heads: int, out_dim: int, hidden: int = 64, value_dim: int = 32, out_gain: float = 1.0, context_layers: int = 0) -> None:
        super().__init__()
        self.token_dim, self.heads, self.value_dim, self.context_layers = token_dim, heads, value_dim, context_layers
        width = token_dim
        if context_layers:
            self.embed = nn.Linear(token_dim, hidden)
            layer = nn.TransformerEncoderLayer(hidden, heads, dim_feedforward=2 * hidden, dropout=0.0, batch_first=True)
            self.context = nn.TransformerEncoder(layer, context_layers, enable_nested_tensor=False)
            width = hidden
        self.values = MLP(width, (hidden,), heads * value_dim)
        self.own = MLP(width, (hidden,), hidden)
        self.out = MLP(hidden + heads * value_dim, (hidden,), out_dim, out_gain=out_gain)

    def forward(self, tokens: Tensor, relations: Tensor, mask: Tensor | None = None) -> Tensor:
        _check_tokens(tokens, mask, self.token_dim, "RelationalHead")
        M, E, _ = tokens.shape
        if relations.dim() < 3 or tuple(relations.shape[-3:]) != (M, self.heads, E):
            raise ValueError(f"RelationalHead: relations have shape {tuple(relations.shape)}, expected (..., {M}, {self.heads}, {E}) (..., M, H, E)")
        lead = relations.shape[:-3]
        x = tokens
        if self.context_layers:
            if mask is None:
                raise ValueError("RelationalHead: context_layers > 0 needs the entity mask (M, E)")
            x = self.context(self.embed(tokens), src_key_padding_mask=~mask)  # (M, E, hidden)
        v = torch.relu(self.values(x)).view(M, E, self.heads, self.value_dim).transpose(1, 2)  # (M, H, E, dv)
        pooled = (relations.unsqueeze(-1) * v).sum(-2).reshape(*lead, M, self.heads * self.value_dim)
        own = torch.relu(self.own(x[:, 0])).expand(*lead, M, self.out.in_dim - self.heads * self.value_dim)
        return self.out(torch.cat([own, pooled], -1))


class TaskEncoder(nn.Module):
    """``psi(t)``: logits ``(T, K)`` of the skill distribution ``Cat(softmax(psi(t)))`` of each task.

    The description ``t`` ``(T, D)`` (``env.task_description()``: agents per role, landmarks, world
    size, field of view) is divided by ``scale`` ``(D,)``, a buffer fixed when the learner is built
    (the largest magnitude of each feature over its training tasks), so that unseen tasks are read in
    the training tasks' units.
    """

    def __init__(self, scale: Tensor, n_skills: int, hidden: int = 32) -> None:
        super().__init__()
        self.register_buffer("scale", scale.clone().float())
        self.net = MLP(scale.shape[0], (hidden,), n_skills)

    def normalise(self, desc: Tensor) -> Tensor:
        """``t / scale``, ``(T, D)``."""
        if desc.dim() != 2 or desc.shape[1] != self.scale.shape[0]:
            raise ValueError(f"TaskEncoder: task descriptions have shape {tuple(desc.shape)}, expected (T, {self.scale.shape[0]})")
        return desc / self.scale

    def forward(self, desc: Tensor) -> Tensor:
        """Skill logits ``(T, K)`` of raw descriptions ``(T, D)``."""
        return self.net(self.normalise(desc))


class TaskDecoder(nn.Module):
    """``psi'``: the normalised task description ``(T, D)`` back from the skill distribution ``(T, K)`` (eq. 6)."""

    def __init__(self, n_skills: int, desc_dim: int, hidden: int = 32) -> None:
        super().__init__()
        self.net = MLP(n_skills, (hidden,), desc_dim)

    def forward(self, probs: Tensor) -> Tensor:
        return self.net(probs)


def mi_reward(log_prob: Tensor, log_prob_samples: Tensor) -> Tensor:
    """The mutual-information reward of ``papers/003`` eq. (4)-(5) from log-probabilities.

    ``R = log [N pi(a | s, k) / sum_n pi(a | s, k_n)] = log pi(a | s, k) + log N - logsumexp_n log pi(a | s, k_n)``

    Args:
        log_prob: ``(...)``: ``log pi(a | s, k)`` of the desired action under the observer's own relations.
        log_prob_samples: ``(N, ...)``: ``log pi(a | s, k_n)`` under the relations of ``N`` sampled skills.
    """
    if log_prob_samples.shape[1:] != log_prob.shape:
        raise ValueError(f"mi_reward: samples have shape {tuple(log_prob_samples.shape)}, expected (N, {', '.join(map(str, log_prob.shape))})")
    n = log_prob_samples.shape[0]
    return log_prob + math.log(n) - torch.logsumexp(log_prob_samples, dim=0)


def reconstruction_loss(desc: Tensor, reconstruction: Tensor, eps: float = 1e-8) -> Tensor:
    """``papers/003`` eq. (6): the mean over tasks of ``|| T - psi'(psi(T)) ||_2`` (the norm, not its
    square; ``eps`` keeps its gradient finite at a perfect reconstruction). Both ``(T, D)``."""
    if desc.shape != reconstruction.shape:
        raise ValueError(f"reconstruction_loss: shapes {tuple(desc.shape)} and {tuple(reconstruction.shape)} differ")
    return ((desc - reconstruction).pow(2).sum(-1) + eps).sqrt().mean()
