"""Policies over the joint discrete action of all agents, for the TRPO family of Li & He (arXiv 2010.07916).

MATRPO's paper compares three ways of giving ``N`` agents a policy (Sec. VI), all with discrete
actions (the particle worlds' {left, right, up, down, stay}) and 2x128 SELU networks:

- ``central`` (centralised TRPO): **one** network over the concatenation of all agents'
  observations, with one categorical head per agent: ``pi(a | o) = prod_m pi^m(a^m | o_1..o_N)``;
- ``independent`` (independent TRPO): agent ``i``'s own network on its own observation with one head
  for its own action, ``pi_i(a^i | o_i)``;
- ``consensus`` (MATRPO): agent ``i``'s own network on its own observation with one head **per
  agent**, a local policy over the joint action ``pi_i(a | o_i) = prod_m pi_i^m(a^m | o_i)``; agent
  ``i`` executes its own component ``pi_i^i``; the other heads are its private model of the others.

All three are ``K`` networks (``K = 1`` or ``N``) held as the rows of one parameter tensor ``theta``
``(K, P)`` (``maestro.nn.stacked.StackedMLP``), so that the trust-region maths treats the rows as
separate problems without a Python loop over agents. Every network has ``C`` heads (``C = N``
for ``central`` and ``consensus``, 1 for ``independent``).

``AgentAxis`` puts the agents of all groups on one axis (groups in the env's order, e.g. treasure
collection's 6 hunters then 2 banks), observations zero-padded to the widest group.

Shapes: ``B`` env copies, ``M`` samples (``T * B``), ``N`` agents, ``D`` padded observation,
``A`` actions per agent, ``K`` networks, ``C`` heads per network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
from torch import Tensor, nn

from maestro.core.checkpoint import read_policy_state, save_policy
from maestro.core.seeding import derived_seed, make_generator
from maestro.nn.heads import categorical_sample
from maestro.nn.stacked import Activation, StackedMLP
from maestro.spec import EnvSpec

Mode = Literal["central", "independent", "consensus"]
MODES = ("central", "independent", "consensus")
POLICY_HEAD_GAIN = 0.001
"""Orthogonal gain of the policy heads (the MATRPO authors' code: ``init_scale=0.001``): near-uniform first policies."""


@dataclass(frozen=True)
class AgentAxis:
    """All agents of an env's groups on one axis ``N`` (groups in spec order), discrete actions only.

    Attributes:
        groups: group names, in the env's order.
        counts: agents per group.
        obs_dims: flattened observation size per group.
        num_actions: discrete actions of every agent (equal for all groups).
    """

    groups: tuple[str, ...]
    counts: tuple[int, ...]
    obs_dims: tuple[int, ...]
    num_actions: int

    @classmethod
    def of(cls, spec: EnvSpec) -> "AgentAxis":
        """The axis of ``spec``; a ``ValueError`` names a group with continuous actions, action masks or another action count."""
        names, counts, dims, actions = [], [], [], set()
        for g, gs in spec.groups.items():
            if not gs.discrete or gs.has_action_mask:
                raise ValueError(f"env {spec.name!r}: group {g!r} has {gs.action_space} actions{' with masks' if gs.has_action_mask else ''}; the TRPO family here needs unmasked discrete actions")
            if len(gs.obs_shape) != 1:
                raise ValueError(f"env {spec.name!r}: group {g!r} has observations of shape {gs.obs_shape}; the TRPO family here needs vectors (obs_dim,)")
            names.append(g)
            counts.append(gs.n_agents)
            dims.append(gs.obs_shape[0])
            actions.add(gs.action_dim)
        if len(actions) != 1:
            raise ValueError(f"env {spec.name!r}: groups have {sorted(actions)} discrete actions; every agent must have the same number")
        return cls(tuple(names), tuple(counts), tuple(dims), actions.pop())

    @property
    def n_agents(self) -> int:
        """``N``."""
        return sum(self.counts)

    @property
    def obs_dim(self) -> int:
        """``D``, the padded observation width (the widest group's)."""
        return max(self.obs_dims)

    @property
    def concat_dim(self) -> int:
        """Width of all agents' observations concatenated (unpadded): the central policy's input."""
        return sum(n * d for n, d in zip(self.counts, self.obs_dims))

    def stack_obs(self, obs: dict[str, Tensor]) -> Tensor:
        """``{group: (..., N_g, obs_dim_g)}`` -> ``(..., N, D)``, each group's features zero-padded to ``D``."""
        parts = []
        for g, n, d in zip(self.groups, self.counts, self.obs_dims):
            o = obs[g]
            if o.dim() < 2 or o.shape[-2:] != (n, d):
                raise ValueError(f"observations of group {g!r} have shape {tuple(o.shape)}, expected (..., {n}, {d})")
            parts.append(torch.nn.functional.pad(o, (0, self.obs_dim - d)) if d < self.obs_dim else o)
        return torch.cat(parts, -2)

    def concat(self, stacked: Tensor) -> Tensor:
        """``(..., N, D)`` padded -> ``(..., concat_dim)``: every agent's real features, in agent order."""
        parts, start = [], 0
        for n, d in zip(self.counts, self.obs_dims):
            parts.append(stacked[..., start : start + n, :d].reshape(*stacked.shape[:-2], n * d))
            start += n
        return torch.cat(parts, -1)

    def stack(self, per_group: dict[str, Tensor]) -> Tensor:
        """``{group: (..., N_g)}`` (rewards) -> ``(..., N)``."""
        return torch.cat([per_group[g] for g in self.groups], -1)

    def split(self, joint: Tensor) -> dict[str, Tensor]:
        """``(..., N)`` (actions) -> ``{group: (..., N_g)}``."""
        return dict(zip(self.groups, torch.split(joint, list(self.counts), -1)))

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a saved policy state."""
        return {"groups": list(self.groups), "counts": list(self.counts), "obs_dims": list(self.obs_dims), "num_actions": self.num_actions}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AgentAxis":
        """Inverse of ``to_dict``."""
        return cls(tuple(d["groups"]), tuple(int(x) for x in d["counts"]), tuple(int(x) for x in d["obs_dims"]), int(d["num_actions"]))


class JointPolicy(nn.Module):
    """``K`` policy networks with ``C`` categorical heads each, as one parameter ``theta`` ``(K, P)`` (module docstring).

    Args:
        mode: ``central``, ``independent`` or ``consensus``.
        axis: the agents.
        hidden: hidden widths (paper: ``(128, 128)``).
        activation: hidden activation (paper: ``selu``).
        seed: the network of agent ``i`` draws its initial weights from ``policy_generators(seed, [i])`` alone.
        agents: per-agent modes: hold the networks of these agents only (an agent in its own process
            holds ``[i]``); ``act`` and ``executed_logits`` need the whole team (``agents=None``).
    """

    def __init__(
        self,
        mode: Mode,
        axis: AgentAxis | dict[str, Any],
        hidden: tuple[int, ...] = (128, 128),
        activation: Activation = "selu",
        seed: int = 0,
        agents: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"JointPolicy: mode {mode!r}, expected one of {list(MODES)}")
        self.mode = mode
        self.axis = axis if isinstance(axis, AgentAxis) else AgentAxis.from_dict(axis)
        self.hidden, self.activation = tuple(hidden), activation
        N, A = self.axis.n_agents, self.axis.num_actions
        if agents is not None and (mode == "central" or sorted(set(agents)) != list(agents) or not all(0 <= a < N for a in agents)):
            raise ValueError(f"JointPolicy: agents {list(agents)} must be increasing indices in [0, {N}) of a per-agent mode, got mode {mode!r}")
        self.agents = list(range(N)) if agents is None else [int(a) for a in agents]
        self.num_nets = 1 if mode == "central" else len(self.agents)
        self.num_heads = 1 if mode == "independent" else N
        in_dim = self.axis.concat_dim if mode == "central" else self.axis.obs_dim
        self.net = StackedMLP(in_dim, self.hidden, self.num_heads * A, activation)
        self.theta = nn.Parameter(self.net.init(policy_generators(seed, range(1) if mode == "central" else self.agents), out_gain=POLICY_HEAD_GAIN))

    # ---------------------------------------------------------------- the networks
    def inputs(self, stacked: Tensor) -> Tensor:
        """Network inputs from stacked observations ``(..., N, D)``: ``(1, ..., concat_dim)`` or ``(K, ..., D)`` (the held agents')."""
        if self.mode == "central":
            return self.axis.concat(stacked).unsqueeze(0)
        if len(self.agents) < self.axis.n_agents:
            stacked = stacked[..., self.agents, :]
        return stacked.movedim(-2, 0)

    def logits(self, theta: Tensor, inputs: Tensor) -> Tensor:
        """``theta`` ``(k, P)`` and their rows of ``inputs`` ``(k, ..., in)`` -> logits ``(k, ..., C, A)``."""
        out = self.net(theta, inputs)
        return out.reshape(*out.shape[:-1], self.num_heads, self.axis.num_actions)

    def head_actions(self, joint: Tensor) -> Tensor:
        """The actions each network's heads score: joint actions ``(..., N)`` -> ``(K, ..., C)``.

        ``central`` and ``consensus``: every network scores the whole joint action; ``independent``:
        network ``i`` scores ``a^i``.
        """
        if self.mode == "independent":
            return joint[..., self.agents].movedim(-1, 0).unsqueeze(-1)
        return joint.unsqueeze(0).expand(self.num_nets, *joint.shape)

    def executed_logits(self, stacked: Tensor) -> Tensor:
        """Logits ``(..., N, A)`` of the executed policy at observations ``(..., N, D)``.

        ``central``: its ``N`` heads; ``independent``: each network's head; ``consensus``: agent ``i``'s
        own head ``pi_i^i`` (the diagonal of ``(N, ..., N, A)``).
        """
        if len(self.agents) < self.axis.n_agents:
            raise ValueError(f"JointPolicy: the executed policy needs every agent's network; this one holds agents {self.agents}")
        logits = self.logits(self.theta, self.inputs(stacked))
        if self.mode == "central":
            return logits[0]
        if self.mode == "independent":
            return logits.squeeze(-2).movedim(0, -2)
        eye = torch.arange(self.axis.n_agents, device=logits.device)
        return logits.movedim(-2, 1)[eye, eye].movedim(0, -2)

    # ---------------------------------------------------------------- the policy interface
    @torch.no_grad()
    def sample(self, stacked: Tensor, generator: torch.Generator | None = None, deterministic: bool = False) -> Tensor:
        """Joint actions ``(..., N)`` int64 at stacked observations ``(..., N, D)`` (Gumbel-max, ``maestro.nn.heads``)."""
        return categorical_sample(self.executed_logits(stacked), generator, deterministic)

    @torch.no_grad()
    def act(self, obs: dict[str, Tensor], state: Tensor | None = None, hidden: Any = None, *, deterministic: bool = False,
            generator: torch.Generator | None = None, **unused: Any) -> tuple[dict[str, Tensor], Any]:
        """Env-ready actions ``{group: (B, N_g)}`` from ``{group: (B, N_g, *obs_shape)}``; ``hidden`` passes through
        (feed-forward policies); ``state`` and the interface's ``action_mask`` and ``alive`` are unused (no
        masked actions; absent agents' actions are ignored by the env)."""
        return self.axis.split(self.sample(self.axis.stack_obs(obs), generator, deterministic)), hidden

    def policy_state(self) -> dict[str, Any]:
        """Everything needed to rebuild the policy: class path, mode, agents, architecture, weights."""
        return {
            "class": "maestro.core.joint_policy:JointPolicy",
            "mode": self.mode,
            "axis": self.axis.to_dict(),
            "arch": {"hidden": list(self.hidden), "activation": self.activation},
            "agents": list(self.agents),
            "weights": self.state_dict(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], device: str | torch.device = "cpu") -> "JointPolicy":
        """Inverse of ``policy_state``."""
        arch = state["arch"]
        held = state.get("agents")
        agents = None if held is None or state["mode"] == "central" or len(held) == AgentAxis.from_dict(state["axis"]).n_agents else held
        policy = cls(state["mode"], state["axis"], tuple(arch["hidden"]), arch["activation"], agents=agents)
        policy.load_state_dict(state["weights"])
        return policy.to(device)

    def save(self, path: str | Path) -> Path:
        """Write the policy alone (atomically) to ``path``."""
        return save_policy(self, path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "JointPolicy":
        """Load a policy written by ``save`` (or the policy inside a training checkpoint)."""
        return cls.from_state(read_policy_state(path, device), device)


def policy_generators(seed: int, rows: Any) -> list[torch.Generator]:
    """One generator per policy row (agent) for its initial weights, from ``derived_seed(seed, "policy", k)``."""
    return [make_generator(derived_seed(seed, "policy", int(k))) for k in rows]


def head_log_probs(logits: Tensor, actions: Tensor) -> Tensor:
    """``log pi^c(a^c)`` ``(..., C)`` from logits ``(..., C, A)`` and actions ``(..., C)``."""
    return torch.log_softmax(logits, -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)


def heads_kl(old_log_probs: Tensor, logits: Tensor) -> Tensor:
    """``sum_c KL(old^c || new^c)`` ``(...)`` from the old heads' log-probabilities ``(..., C, A)`` (detached) and new logits.

    KLs of independent components add, so this is the KL of the product distribution (eq. 8 of
    Li & He: the joint KL is the sum of the per-agent KLs).
    """
    return (old_log_probs.exp() * (old_log_probs - torch.log_softmax(logits, -1))).sum((-1, -2))


class HeadsOnBatch:
    """A ``JointPolicy``'s networks on one batch of ``M`` samples, linearised at ``theta_old`` (one TRPO/MATRPO iteration).

    Holds each network's inputs, the actions its heads score, the old heads' log-probabilities and the
    forward pass at ``theta_old`` (``StackedMLP.linearise``), and provides what a trust-region step from
    ``theta_old`` needs, for any set of rows (networks):

    - ``log_ratios_and_kl``: at new parameters, the per-head log-ratios
      ``x[k, s, c] = log pi_k^c(a^c_s | o_s; theta_k) - log pi_k^c(a^c_s | o_s; theta_k_old)`` and the mean KL
      from the old policy (summed over heads: the KL of the product);
    - ``log_ratio_vjp``: ``J^T w`` for the Jacobian ``J = dx / dtheta`` at ``theta_old`` (the gradient of any
      loss of the log-ratios, e.g. the TRPO surrogate ``-(1/M) J^T (A 1^T)``);
    - ``fisher_product``: the Fisher (the Hessian of the mean KL at ``theta_old``) times vectors, on every
      ``fisher_every``-th sample, in the Gauss-Newton form ``J_z^T (diag(p) - p p^T) J_z v`` per head
      (exact at ``theta_old``, where the KL's gradient in the logits vanishes).

    Args:
        policy: the policy, at ``theta_old``.
        inputs: ``(K, M, in)`` each held network's inputs (``policy.inputs`` of the stacked observations).
        actions: ``(K, M, C)`` the actions its heads score (``policy.head_actions`` of the joint actions).
        fisher_every: the Fisher products use every ``fisher_every``-th sample (the MATRPO authors': 5).
    """

    def __init__(self, policy: JointPolicy, inputs: Tensor, actions: Tensor, fisher_every: int = 5) -> None:
        K = policy.theta.shape[0]
        if inputs.dim() != 3 or inputs.shape[0] != K or actions.shape != (K, inputs.shape[1], policy.num_heads):
            raise ValueError(f"HeadsOnBatch: inputs {tuple(inputs.shape)} and actions {tuple(actions.shape)}, expected ({K}, M, in) and ({K}, M, {policy.num_heads})")
        if fisher_every < 1:
            raise ValueError(f"HeadsOnBatch: fisher_every = {fisher_every}, expected >= 1")
        self.policy = policy
        self.theta_old = policy.theta.detach().clone()
        self.inputs, self.actions = inputs, actions
        self.fisher_every = fisher_every
        self.lin = policy.net.linearise(self.theta_old, self.inputs)
        K, M = self.inputs.shape[:2]
        logits = self.lin.output.reshape(K, M, policy.num_heads, policy.axis.num_actions)
        self.old_log_probs = torch.log_softmax(logits, -1)  # (K, M, C, A)
        self.old_logp = self.old_log_probs.gather(-1, self.actions.unsqueeze(-1)).squeeze(-1)  # (K, M, C)
        self._rows: dict[tuple[int, ...], Any] = {}

    @classmethod
    def of_batch(cls, policy: JointPolicy, obs: Tensor, actions: Tensor, fisher_every: int = 5) -> "HeadsOnBatch":
        """From stacked observations ``(M, N, D)`` and joint actions ``(M, N)``."""
        if obs.dim() != 3 or actions.shape != obs.shape[:2]:
            raise ValueError(f"HeadsOnBatch: obs {tuple(obs.shape)} and actions {tuple(actions.shape)}, expected (M, N, D) and (M, N)")
        return cls(policy, policy.inputs(obs), policy.head_actions(actions), fisher_every)

    @property
    def num_samples(self) -> int:
        """``M``."""
        return self.inputs.shape[1]

    def log_ratios_and_kl(self, theta: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """``theta`` ``(k, P)`` of networks ``rows`` ``(k,)`` -> log-ratios ``(k, M, C)`` and mean KL ``(k,)``, one forward pass."""
        logits = self.policy.logits(theta, self.inputs[rows])
        ratios = head_log_probs(logits, self.actions[rows]) - self.old_logp[rows]
        return ratios, heads_kl(self.old_log_probs[rows], logits).mean(-1)

    def _pieces(self, rows: Tensor) -> Any:
        """The linearisation restricted to ``rows`` (cached per set of rows): all samples, and the Fisher subsample."""
        key = tuple(rows.tolist())
        if key not in self._rows:
            every_row = len(key) == self.lin.theta.shape[0] and key == tuple(range(len(key)))
            lin = self.lin if every_row else self.lin.rows(rows)  # (all rows in order: no copy)
            sub = lin.samples(self.fisher_every)
            sub = type(sub)(sub.theta, tuple(x.contiguous() for x in sub.inputs), tuple(d if d is None else d.contiguous() for d in sub.derivatives), sub.output.contiguous())
            old = self.old_log_probs[rows]
            score = torch.nn.functional.one_hot(self.actions[rows], old.shape[-1]).to(old.dtype) - old.exp()  # dx/dz (k, M, C, A)
            self._rows[key] = (lin, sub, old[:, :: self.fisher_every].exp().contiguous(), score)
        return self._rows[key]

    def log_ratio_vjp(self, rows: Tensor, weights: Tensor) -> Tensor:
        """``J^T w`` ``(k, P)``: the gradient at ``theta_old`` of ``sum_{s,c} weights[k, s, c] x[k, s, c]`` for ``weights`` ``(k, M, C)``."""
        lin, _, _, score = self._pieces(rows)
        if weights.shape != score.shape[:3]:
            raise ValueError(f"log_ratio_vjp: weights have shape {tuple(weights.shape)}, expected {tuple(score.shape[:3])}")
        cotangent = (weights.unsqueeze(-1) * score).reshape(lin.output.shape)
        return self.policy.net.vjp(lin, cotangent)

    def log_ratio_jvp(self, rows: Tensor, tangent: Tensor) -> Tensor:
        """``J v`` ``(k, M, C)``: the log-ratios' first-order change along ``tangent`` ``(k, P)`` at ``theta_old``
        (the paper's linearisation, eq. 17)."""
        lin, _, _, score = self._pieces(rows)
        return (self.policy.net.jvp(lin, tangent).reshape(score.shape) * score).sum(-1)

    def fisher_product(self, rows: Tensor, damping: float) -> Any:
        """``V (k, P) -> (F_k v_k + damping v_k)_k``, ``F_k`` the Hessian of network ``rows[k]``'s mean KL at ``theta_old``
        on the Fisher subsample (Gauss-Newton form, see the class docstring)."""
        if damping < 0:
            raise ValueError(f"fisher_product: damping = {damping}, expected >= 0")
        _, sub, probs, _ = self._pieces(rows)
        net, m = self.policy.net, probs.shape[1]

        def fvp(vector: Tensor) -> Tensor:
            u = net.jvp(sub, vector).reshape(probs.shape)
            fu = probs * (u - (probs * u).sum(-1, keepdim=True))
            return net.vjp(sub, fu.reshape(sub.output.shape)) / m + damping * vector

        return fvp
