"""MATRPO: decentralised trust-region MARL by ADMM consensus on likelihood ratios (from https://arxiv.org/abs/2010.07916).

Li & He 2020, "Multi-Agent Trust Region Policy Optimization" (the paper text in ``papers/004``, whose
formulas were lost in extraction; re-derived in ``docs/matrpo_derivation.md`` and checked against the
authors' code ``hepengli/matrpo``). Consensus solver: the asynchronous edge-based ADMM of Wei &
Ozdaglar 2013 (arXiv 1307.8254, ``maestro.core.consensus``); local step: TRPO (Schulman et al. 2015,
arXiv 1502.05477, ``maestro.core.trust_region``).

**The idea.** Every agent ``i`` has a *local policy over the joint action*, one categorical head per
agent, ``pi_i(a | o_i) = prod_m pi_i^m(a^m | o_i)``, on its own observation; it executes only its own
head ``pi_i^i`` (the other heads are its private model of the others). The team reward is the sum
of the private rewards, so TRPO's surrogate of the joint policy splits into one term per agent,
``sum_i E[pi(a|s)/pi_old(a|s) A_i]`` (eq. 5). Giving each term its own local policy and requiring the
local ratios to agree between neighbours of a communication graph (a ring) makes the sum the joint
surrogate again (eq. 6); observations replace the state (eq. 7, an approximation under partial
observability). KLs of products add and a marginal's KL is at most the joint's, so each agent keeps
its own trust region ``D_i = mean_s KL(pi_i_old || pi_i) <= delta`` (eq. 8).

**The sample problem.** With ``M = T * B`` samples and the executed joint actions known to all (the
paper's assumption), agent ``i``'s consensus variable is its per-head log-ratios
``x_i[s, m] = log pi_i^m(a^m_s | o_i,s) - log pi_i_old^m(a^m_s | o_i,s)``, ``(M, N)``, and the problem is

    min  sum_i f_i(theta_i),   f_i = -(1/M) sum_s A_i[s] exp(sum_m x_i[s, m]),
    s.t. x_i = x_j on every edge (i, j),   D_i(theta_i) <= delta.

Agreement per head (not only of the product) pins every agent's model of agent ``m`` to agent ``m``'s
own executed change along the connected graph; then every local ratio *is* the joint ratio.

**One iteration.** (1) Sample ``T`` steps of ``B`` copies, each agent acting from its own head.
(2) Per agent, privately: value net on its observation, GAE advantages ``A_i`` on its reward,
value regression (``maestro.core.trpo_family``); the advantages standardised with the pooled
statistics of all agents' (``advantage_norm``). (3) ADMM state
reset (``x = 0``, edge estimates ``z = 0``, multipliers ``lambda = 0``), then ``K`` rounds (Table I:
100/150/200/500). A round activates one edge ``(i, j)``; each endpoint ``q`` takes a *local step*
from the state before the round, then both update the edge:

    target  v_q = mean over q's edges e of (z_e - s_eq lambda_e / rho)        (M, N),  s_eq = +1 / -1
    local   theta_q <- one TRPO step from theta_q_old on the augmented Lagrangian
              L_q(theta) = -(1/M) sum_s A_q[s] exp(sum_m x_q[s, m]) + (rho d_q / 2M) ||x_q(theta) - v_q||^2
            within D_q <= delta (CG on the Fisher of D_q, step scaled to delta, line search on the true
            L_q and KL <= 1.5 delta); x_q <- x_q(theta_q), the exact log-ratios
    edge    z_e <- (x_i + x_j) / 2,    lambda_e <- lambda_e + (rho / 2)(x_i - x_j)

The gradient of ``L_q`` at ``theta_q_old`` is ``-(1/M) J_q^T (A_q 1^T + rho d_q v_q)``: the neighbours'
information enters as a per-sample, per-head correction of the advantage. After ``K`` rounds every
agent keeps the parameters of its last local step. Only ``x_i`` and ``x_j`` (two ``(M, N)`` tensors)
cross an edge in a round; both ends then hold the same ``z_e`` and ``lambda_e``. Observations,
rewards, advantages, value nets and policy parameters never leave their agent.

**What maestro computes differently (the same iterates, cheaper).**

- Rounds on edges with no common node commute (``consensus.group_rounds``). The default edge
  order ``"matchings"`` is a round-robin over the edges listed matching by matching (a ring of even
  length: the even edges, then the odd ones), so a whole matching's local steps run as one batched
  trust-region step (``trust_region.batched_trust_region_step``: every row its own CG, scaling and
  line search), exactly equal to running its rounds one after the other.
- Every local step starts from ``theta_old``, where the Fisher and the log-ratio Jacobian do not change
  during the iteration: the Fisher-product graph and the log-ratio graph (whose backward with the
  round's weights gives ``J^T w``) are built once per set of active agents and iteration and reused
  by every round.
- Agents' networks are rows of one parameter tensor (``nn.stacked``), so nothing loops over agents
  or samples in Python; the only loops are the sequential rounds and CG's iterations.

**Readings taken where the paper is open** (``docs/matrpo_derivation.md`` section 5 discusses each):
per-head log-ratios as the consensus variable (the authors' code; the paper writes the product);
edge order ``"matchings"`` by default (``"round_robin"`` in graph order is the authors', ``"random"``
Wei & Ozdaglar's; on a ring of 3 the first two are the same order); per-agent bound ``max_kl = delta``
as the authors use it (``delta / N`` is what eq. 8 guarantees before consensus); the local step is
the authors' (one TRPO step on the Lagrangian with a Fisher-only quadratic model: the penalty's
curvature ``rho d_q / M J^T J`` is not in the CG matrix), not the paper's unrecoverable closed form
(eq. 19); multipliers start at 0 (the authors': 1, which is the same on their cyclically oriented
ring); advantages standardised with all agents' pooled statistics, as the authors' code (``advantage_norm:
pooled``, the default: on navigation N=3, where only agent 1 is rewarded, per-agent statistics do not
learn, docs/matrpo.md; agents exchange three aggregate numbers for it); GAE cut at episode ends (the authors run across them);
step length ``sqrt(2 delta / d^T F d)`` (the authors' ``g^T d``: equal when CG converges); damping
0.01, 10 CG iterations, every 5th sample for the Fisher, 2x128 SELU trunk with one linear head per
agent (orthogonal init, head gain 0.001), value nets Adam 3e-4, 3 epochs of minibatches of 64, no
entropy bonus: the authors' settings.

**Cost.** A round is two local TRPO steps (a backward on ``M`` samples for ``J^T w``, ~11 Fisher products
on ``M/5``, 1-10 line-search forwards), so an iteration costs about ``2K`` local steps against one
centralised step; ``benchmarks/matrpo_cost.py`` measures the ratio to ``trpo_central`` (with the
paper's ``K`` it is far above issue 21's target of 2x: see the README).

**The subspace step** (``local_step: subspace``, not the default). The paper convexifies the local
problem (eqs. 13, 14, 17): log-ratios linear in the step, ``x_q = J_q Dtheta``, KL quadratic,
``0.5 Dtheta^T H_q Dtheta``. On that model the authors' step is ``Dtheta = beta H_q^{-1} g~_q`` with
``g~_q = (1/M) J_q^T (A_q 1^T + rho d_q v_q)``, which needs a conjugate-gradient solve and passes over the
``M`` samples every round. In a subspace ``span(U_q)`` of parameter space everything the round needs is
small: with ``Y_q = J_q U_q`` ``(M, N, r)`` kept, ``U_q^T g~_q = Y_q^T (A_q 1^T + rho d_q v_q) / M`` exactly,
the model KL is ``0.5 alpha^T (U^T H U) alpha`` and the log-ratios ``Y_q alpha``: a round costs
``O(M N r)`` and no network pass. ``U_q`` holds the agent's own exact step directions: on its
activations 1, 2, 3, 5, 9, 17, ... (``r`` grows as ``log2`` of its activations) the agent solves for
its full-space direction ``H_q^{-1} g~_q`` by conjugate gradient (the ``trpo`` step's direction) and
adds it, ``H``-orthonormalised, to ``U_q``; on those activations the step is the authors' step on the
linearised model, in between the best step within the directions it has found. The line search runs on
the model's Lagrangian (``exp`` of the linear log-ratios); after the rounds each agent's true KL is
checked and a step beyond ``kl_factor * delta`` halved. What differs from the ``trpo`` step: linear
instead of exact log-ratios (the paper's model, eq. 17, rather than the authors' code), and steps in
a subspace between refreshes.

``penalty_curvature`` (off by default, a departure from the authors' step): the paper's convex local
problem (eqs. 13, 14, 17, 18: linear surrogate, quadratic penalty on the linear log-ratios, quadratic KL)
has the penalty's curvature ``(rho d_q / M) J_q^T J_q`` besides the KL's; the authors' step keeps only the
KL's, so it always goes to the trust-region boundary along the Lagrangian's gradient, however strongly
the penalty holds the agent near its neighbours. In the subspace the whole model is ``r``-dimensional,
so its exact trust-region minimiser is cheap (``trust_region.quadratic_trust_region``, an ``r x r``
eigendecomposition): the step this flag takes. The paper's own closed form (eq. 19) was lost from the
text; this is the standard solution of the problem it states.

**Exact consensus is the zero update** (docs/matrpo.md, "Why more ADMM rounds do not help"; measured
with ``benchmarks/matrpo_rounds.py``). Agreement on every sample's per-head log-ratio asks each
agent's change ``x = J_q dtheta`` to lie in every other agent's range. In the subspace step the
ranges have about ``log2`` of the activations dimensions against ``M N`` values; for the full
networks of the recipes ``N P - (N - 1) M N`` is negative from N = 6 on. So run to convergence with
the exact local step, the rounds end at ``theta_old``, and with the authors' step they do not
converge. What an iteration changes is where the ``K`` rounds have got to: ``K`` and ``rho`` act as
regularisers, not as accuracy settings.

Tensors: ``(T, B, N, ...)`` time, env copies, agents; ``M = T * B``; per-agent consensus variables
``(N, M, N)`` (agent, sample, head).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from maestro.core.consensus import CommGraph, admm_step, consensus_residual, edge_schedule, group_rounds, init_admm, make_graph
from maestro.core.joint_policy import HeadsOnBatch, JointPolicy
from maestro.core.run import Run
from maestro.core.seeding import derived_seed, make_generator
from maestro.core.trpo_family import TrpoAgents, TrpoFamilyConfig, advantage_moments, agent_major, normalise_rows, normalise_with, pooled_statistics
from maestro.core.trust_region import batched_conjugate_gradient, batched_trust_region_step, quadratic_trust_region
from maestro.registry import Smoke, register_algo

CAPABILITIES = frozenset({"discrete", "multi_group", "on_policy", "needs_teams"})
"""Unmasked discrete actions of any number of groups (all with the same action count), at least two agents (a consensus graph)."""
Topology = Literal["ring", "line", "complete", "edges"]
EdgeOrder = Literal["matchings", "round_robin", "random"]
LocalStep = Literal["trpo", "subspace"]


@dataclass(frozen=True)
class Config(TrpoFamilyConfig):
    """MATRPO settings: Table I of Li & He 2020 (navigation, N=3 column) and the authors' code; the
    trust-region, batch and value settings are ``TrpoFamilyConfig``'s."""

    admm_rounds: int = 100
    """ADMM rounds ``K`` per iteration, one edge each (Table I: 100 / 150 / 200 / 500 for navigation
    N=3 / N=6 and treasure collection N=8 / N=12)."""
    rho: float = 1.0
    """ADMM penalty ``rho`` (Table I: 1 / 1 / 5 / 5), a per-sample penalty (the Lagrangian is a mean over samples)."""
    topology: Topology = "ring"
    """Communication graph: ``ring`` (the paper's, agents in axis order, e.g. hunters then banks), ``line``,
    ``complete``, or ``edges`` (the list in ``edges``)."""
    edges: tuple[tuple[int, int], ...] = ()
    """The edge list for ``topology: edges`` (agent indices on the agent axis: groups in the env's order)."""
    edge_order: EdgeOrder = "matchings"
    """Which edge each round activates: ``matchings`` (round-robin over the edges listed matching by
    matching, so a matching's rounds run as one batched step: module docstring), ``round_robin`` (graph
    order, the authors' code) or ``random`` (uniform, seeded: Wei & Ozdaglar's setting)."""

    local_step: LocalStep = "trpo"
    """``trpo``: the authors' local step (a TRPO step on the augmented Lagrangian from ``theta_old``, the
    exact log-ratios sent). ``subspace``: the same step on the paper's linearised model (eqs. 14, 17),
    solved in a small subspace of the agent's exact step directions, refreshed on its activations
    1, 2, 3, 5, 9, 17, ... (module docstring, "The subspace step"): an iteration 7-9x cheaper on navigation N=3.
    The shipped ``recipes/matrpo/`` set ``subspace``: Figure 2 was measured with it, and the ``trpo`` step
    diverged on navigation N=6 (seed 0; docs/matrpo.md)."""

    subspace_growth: float = 2.0
    """``local_step: subspace``: an agent adds its exact direction on its activations ``a_0 = 1`` and
    ``a_{k+1} = max(a_k + 1, growth * a_k - (growth - 1))``: 1, 2, 3, 5, 9, 17, ... for 2; 1, 2, 5, 17, 65
    for 4 (fewer refreshes: cheaper, a smaller subspace)."""

    refresh_cg_iterations: int = 0
    """``local_step: subspace``: conjugate-gradient iterations of a refresh (``0``: ``cg_iterations``)."""

    penalty_curvature: bool = False
    """``local_step: subspace``: take the trust-region minimiser of the convex local model, whose curvature
    includes the penalty's ``rho d_q / M Y_q^T Y_q`` (``trust_region.quadratic_trust_region``), instead of the
    authors' step (the Lagrangian's gradient scaled to the KL bound: Fisher curvature only). A step is
    then shorter than the bound where the penalty holds the agent near its neighbours (module docstring,
    "The subspace step")."""

    advantage_norm: Literal["agent", "pooled"] = "pooled"
    """``pooled`` (default): all agents' advantages standardised with one mean and std, as the authors'
    code does (it keeps the agents' relative scales: with only agent 1 rewarded, per-agent statistics
    blow the others' collision-only advantages up to agent 1's scale, and on navigation N = 3 MATRPO
    then does not learn; docs/matrpo.md). In the decentralised mode it costs each agent three numbers
    an iteration (count, sum and sum of squares of its advantages) and gives the same bits as in
    process. ``agent``: each agent's own statistics (nothing but log-ratios ever crosses)."""

    SMOKE: ClassVar[Smoke] = Smoke(config={"rollout_steps": 4, "hidden": (8,), "vf_epochs": 1, "vf_minibatch": 4, "admm_rounds": 4})
    """``check_algo``'s settings: 4 steps x 4 copies per iteration, one tiny hidden layer, 4 ADMM rounds."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.admm_rounds < 1:
            raise ValueError(f"admm_rounds must be >= 1, got {self.admm_rounds}")
        if not self.rho > 0:
            raise ValueError(f"rho must be > 0, got {self.rho}")
        if self.refresh_cg_iterations < 0:
            raise ValueError(f"refresh_cg_iterations must be >= 0 (0: cg_iterations), got {self.refresh_cg_iterations}")
        if self.subspace_growth < 1.0:
            raise ValueError(f"subspace_growth must be >= 1, got {self.subspace_growth}")
        if self.advantage_norm not in ("agent", "pooled"):
            raise ValueError(f"advantage_norm must be 'agent' or 'pooled', got {self.advantage_norm!r}")
        if self.penalty_curvature and self.local_step != "subspace":
            raise ValueError(f"penalty_curvature is a setting of local_step: subspace, got local_step {self.local_step!r}")
        if self.edges and self.topology != "edges":
            raise ValueError(f"edges {list(self.edges)} were given with topology {self.topology!r}; set topology: edges")


def comm_graph(cfg: Config, n_agents: int) -> CommGraph:
    """The communication graph of ``cfg`` on ``n_agents`` nodes (a ``ValueError`` names a bad edge list)."""
    return make_graph(cfg.topology, n_agents, list(cfg.edges) if cfg.topology == "edges" else None)


class LocalSteps:
    """The agents' local steps of one iteration: every row of a ``consensus`` policy at ``theta_old``.

    ``step(nodes, targets, penalties)`` is the batched proximal update ``consensus.admm_step`` asks
    for: one TRPO step of each listed agent on its augmented Lagrangian (module docstring), all from
    ``theta_old``; it returns the agents' exact new log-ratios ``(k, M, N)`` and keeps their new
    parameters in ``theta``. What a step linearises (``HeadsOnBatch``: the forward pass at ``theta_old``
    for ``J^T w`` and the Fisher products) is computed once per iteration and set of agents.

    Args:
        cfg: the settings (trust region, CG, line search).
        heads: the policy's heads on the batch at ``theta_old``.
        advantages: ``(K, M)`` each row's normalised advantages.
    """

    def __init__(self, cfg: Config, heads: HeadsOnBatch, advantages: Tensor) -> None:
        if advantages.shape != heads.old_logp.shape[:2]:
            raise ValueError(f"LocalSteps: advantages have shape {tuple(advantages.shape)}, expected {tuple(heads.old_logp.shape[:2])}")
        self.cfg, self.heads, self.advantages = cfg, heads, advantages
        self.theta = heads.theta_old.clone()
        self.steps = 0
        self.accepted = 0
        self.kl_max = 0.0
        self.kl_sum = 0.0
        self.final: tuple[Tensor, Tensor] | None = None  # final_theta's log-ratios (K, M, N) and KL (K,), where it computed them for every row

    def step(self, nodes: list[int], targets: Tensor, penalties: Tensor) -> Tensor:
        """One local TRPO step of each agent in ``nodes`` toward its ``targets`` ``(k, M, N)`` with proximal
        weight ``penalties`` ``(k,)`` (``rho * degree``); returns the new log-ratios ``(k, M, N)``."""
        cfg, heads = self.cfg, self.heads
        index = torch.tensor(nodes, device=self.theta.device)
        M = heads.num_samples
        advantages = self.advantages[index]
        weight = penalties.reshape(-1, 1, 1) / M
        grad = heads.log_ratio_vjp(index, -(advantages.unsqueeze(-1) / M + weight * targets))
        fvp = heads.fisher_product(index, cfg.cg_damping)
        loss_before = -advantages.mean(-1) + 0.5 * weight.reshape(-1) * targets.pow(2).sum((1, 2))

        def evaluate(theta: Tensor, local: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            x, kl = heads.log_ratios_and_kl(theta, index[local])
            surrogate = (torch.exp(x.sum(-1)) * advantages[local]).mean(-1)
            return -surrogate + 0.5 * weight[local].reshape(-1) * (x - targets[local]).pow(2).sum((1, 2)), kl, x

        theta, result = batched_trust_region_step(
            heads.theta_old[index], grad, fvp, evaluate, cfg.max_kl, loss_before,
            cg_iterations=cfg.cg_iterations, kl_factor=cfg.kl_factor, max_backtracks=cfg.max_backtracks,
        )
        self.theta[index] = theta
        self.steps += len(nodes)
        self.accepted += int(result.accepted.sum())
        self.kl_max = max(self.kl_max, float(result.kl.max()))
        self.kl_sum += float(result.kl.sum())
        return result.aux if result.aux is not None else torch.zeros_like(targets)  # x(theta_old) = 0 exactly

    def final_theta(self) -> Tensor:
        """``(K, P)`` every row's parameters after its last local step (``theta_old`` if it took none)."""
        return self.theta


class SubspaceSteps(LocalSteps):
    """``local_step: subspace`` (module docstring, "The subspace step"): the authors' step on the linearised
    model, solved in each agent's subspace of exact step directions.

    Per agent ``q`` it keeps an ``H``-orthonormal basis ``U_q`` (``u_i^T (F + damping I) u_j = delta_ij``) of
    the exact step directions it computed, their log-ratio images ``Y_q = J_q U_q`` ``(M, N, r)`` and
    ``H U_q`` (for the next orthogonalisation). A step: ``b = Y_q^T (A_q 1^T + rho d_q v_q) / M`` (the
    Lagrangian's ascent gradient in the subspace, exact there), the Fisher-model step ``alpha = b`` scaled to
    ``alpha^T alpha = 2 delta`` (with ``penalty_curvature``: the minimiser of ``-b^T alpha + 0.5 (rho d_q / M)
    alpha^T Y_q^T Y_q alpha`` in that ball), a backtracking line search on the model's Lagrangian with ``x = Y_q alpha``
    (cheap: no network pass), ``x`` sent. On its activations 1, 2, 3, 5, 9, 17, ... the agent first adds its
    exact full-space direction ``(F + damping I)^{-1} g~`` (conjugate gradient, as the ``trpo`` step); for
    ``subspace_growth`` other than 2, see its field.
    ``final_theta`` checks every agent's true KL and halves a step whose KL exceeds ``kl_factor * delta``.
    """

    def __init__(self, cfg: Config, heads: HeadsOnBatch, advantages: Tensor) -> None:
        super().__init__(cfg, heads, advantages)
        K = advantages.shape[0]
        self.activations = [0] * K
        self.next_refresh = [0] * K  # 0-based activation index of each agent's next refresh
        self.basis: list[list[Tensor]] = [[] for _ in range(K)]
        self.fisher_basis: list[list[Tensor]] = [[] for _ in range(K)]
        self.images: list[Tensor | None] = [None] * K
        self.grams: list[Tensor | None] = [None] * K  # Y_q^T Y_q (r, r), summed over samples and heads
        self.coefficients: list[Tensor | None] = [None] * K

    def _refresh(self, nodes: list[int], targets: Tensor, weights: Tensor) -> None:
        """Add each agent's exact step direction for its current target to its basis (batched over ``nodes``)."""
        heads, cfg = self.heads, self.cfg
        index = torch.tensor(nodes, device=self.theta.device)
        M = heads.num_samples
        grad = heads.log_ratio_vjp(index, -(self.advantages[index].unsqueeze(-1) / M + weights * targets))
        fvp = heads.fisher_product(index, cfg.cg_damping)
        direction = batched_conjugate_gradient(fvp, -grad, cfg.refresh_cg_iterations or cfg.cg_iterations)
        metric = fvp(direction)
        for k, q in enumerate(nodes):  # Gram-Schmidt in the H-metric against the agent's basis
            d, hd = direction[k], metric[k]
            for u, hu in zip(self.basis[q], self.fisher_basis[q]):
                c = u.dot(metric[k])
                d, hd = d - c * u, hd - c * hu
            norm = d.dot(hd)
            if norm > 1e-12 * direction[k].dot(metric[k]) and torch.isfinite(norm):
                direction[k], metric[k] = d / norm.sqrt(), hd / norm.sqrt()
            else:
                direction[k] = torch.zeros_like(d)
        keep = [k for k, q in enumerate(nodes) if bool(direction[k].abs().amax() > 0)]
        if not keep:
            return
        kept = torch.tensor(keep, device=index.device)
        images = heads.log_ratio_jvp(index[kept], direction[kept])  # (k', M, N)
        for j, k in enumerate(keep):
            q = nodes[k]
            self.basis[q].append(direction[k])
            self.fisher_basis[q].append(metric[k])
            column = images[j].unsqueeze(-1)
            self.images[q] = column if self.images[q] is None else torch.cat([self.images[q], column], -1)
            if self.cfg.penalty_curvature:
                self.grams[q] = torch.einsum("mnr,mns->rs", self.images[q], self.images[q])

    def step(self, nodes: list[int], targets: Tensor, penalties: Tensor) -> Tensor:
        cfg, M = self.cfg, self.heads.num_samples
        weights = penalties.reshape(-1, 1, 1) / M
        due = [k for k, q in enumerate(nodes) if self.activations[q] == self.next_refresh[q]]
        for k in due:  # 0-based 0, 1, 2, 4, 8, ... for growth 2
            a = self.next_refresh[nodes[k]]
            self.next_refresh[nodes[k]] = max(a + 1, int(cfg.subspace_growth * a))
        if due:
            self._refresh([nodes[k] for k in due], targets[due], weights[due])
        out = torch.zeros_like(targets)
        for k, q in enumerate(nodes):
            self.activations[q] += 1
            self.steps += 1
            images = self.images[q]
            if images is None:
                continue
            advantages, target, w = self.advantages[q], targets[k], weights[k, 0, 0]
            b = torch.einsum("mnr,mn->r", images, advantages.unsqueeze(-1) / M + w * target)
            shs = b.dot(b)
            if not (torch.isfinite(shs) and shs > 0):
                continue
            if cfg.penalty_curvature:  # the convex model's minimiser: -b^T a + 0.5 w a^T Y^T Y a, |a|^2 <= 2 delta
                full = quadratic_trust_region(w * self.grams[q], b, 2.0 * cfg.max_kl)
                full_kl = float(0.5 * full.dot(full))
            else:  # the authors' step: the gradient scaled to the bound
                full = torch.sqrt(2.0 * cfg.max_kl / shs) * b
                full_kl = cfg.max_kl
            before = -advantages.mean() + 0.5 * w * target.pow(2).sum()
            fraction = 1.0
            for _ in range(cfg.max_backtracks):
                x = images @ (fraction * full)
                lagrangian = -(torch.exp(x.sum(-1)) * advantages).mean() + 0.5 * w * (x - target).pow(2).sum()
                if torch.isfinite(lagrangian) and lagrangian <= before:
                    self.coefficients[q] = fraction * full
                    out[k] = x
                    self.accepted += 1
                    kl = full_kl * fraction**2  # the model's KL, 0.5 |alpha|^2 in the H-orthonormal basis
                    self.kl_max, self.kl_sum = max(self.kl_max, kl), self.kl_sum + kl
                    break
                fraction *= 0.5
            else:
                self.coefficients[q] = None
        return out

    def final_theta(self) -> Tensor:
        theta = self.heads.theta_old.clone()
        rows = [q for q, c in enumerate(self.coefficients) if c is not None]
        for q in rows:
            theta[q] += torch.stack(self.basis[q], -1) @ self.coefficients[q]
        if rows:  # the model's KL is delta at most; the true one must stay within kl_factor * delta
            index = torch.tensor(rows, device=theta.device)
            old = self.heads.theta_old[index]
            step = theta[index] - old
            scale = torch.ones(len(rows), device=theta.device)
            for _ in range(self.cfg.max_backtracks):
                x, kl = self.heads.log_ratios_and_kl(old + scale[:, None] * step, index)
                bad = ~(torch.isfinite(kl) & (kl <= self.cfg.kl_factor * self.cfg.max_kl))
                if not bool(bad.any()):
                    if len(rows) == theta.shape[0]:
                        self.final = (x, kl)
                    break
                scale = torch.where(bad, 0.5 * scale, scale)
            else:
                scale = torch.where(bad, torch.zeros_like(scale), scale)
            theta[index] = old + scale[:, None] * step
        self.theta = theta
        return theta


def make_local_steps(cfg: Config, heads: HeadsOnBatch, advantages: Tensor) -> LocalSteps:
    """The local steps of ``cfg.local_step`` for one iteration."""
    return SubspaceSteps(cfg, heads, advantages) if cfg.local_step == "subspace" else LocalSteps(cfg, heads, advantages)


def believed_gains(advantages: Tensor, x: Tensor) -> Tensor:
    """``(N,)`` each agent's surrogate gain on its own advantages ``(N, M)`` under its own local joint
    ratio, ``mean_s A_i[s] (exp(sum_m x_i[s, m]) - 1)``: ``x`` ``(N, M, N)`` the agents' per-head
    log-ratios (agent ``i``'s whole local joint policy). What each agent believes the update gains; equal
    to ``executed_gains`` at consensus. Per agent, so the decentralised mode computes it with ``N = 1``."""
    return (advantages * torch.expm1(x.sum(-1))).mean(-1)


def executed_gains(advantages: Tensor, x: Tensor) -> Tensor:
    """``(N,)`` each agent's surrogate gain on its own advantages ``(N, M)`` under the executed policy's
    ratio, ``mean_s A_i[s] (exp(sum_m x_m[s, m]) - 1)``: ``x`` ``(N, M, N)`` the agents' per-head
    log-ratios, of which the executed joint policy takes head ``m`` from agent ``m`` (eq. 5's joint
    surrogate, per agent)."""
    executed = torch.diagonal(x, dim1=0, dim2=2).sum(-1)  # (M,) log-ratio of the executed joint policy
    return (advantages * torch.expm1(executed)).mean(-1)


def admm_update(
    cfg: Config, policy: JointPolicy, obs: Tensor, actions: Tensor, advantages: Tensor, graph: CommGraph, steps: list[Tensor], heads: HeadsOnBatch | None = None
) -> dict[str, float]:
    """Steps (3) of the module docstring: ``K`` ADMM rounds (as ``steps`` of disjoint rounds); ``policy.theta`` is updated.

    Args:
        cfg: the settings.
        policy: a ``consensus`` policy at ``theta_old``.
        obs: ``(M, N, D)`` stacked observations.
        actions: ``(M, N)`` joint actions.
        advantages: ``(N, M)`` each agent's normalised advantages.
        graph: the communication graph.
        steps: ``consensus.group_rounds`` of the iteration's edge schedule.
        heads: the batch's ``HeadsOnBatch`` at ``policy``'s current parameters (built here when ``None``;
            passed in, one linearisation serves several updates from the same ``theta_old`` on one batch).

    Of the metrics, ``loss/surrogate_gain`` is what the agents believe: each agent's gain on its own
    advantages under its own local joint ratio, ``mean_s A_i[s] (exp(sum_m x_i[s, m]) - 1)``, averaged over
    agents. ``loss/team_surrogate_gain`` is what the team gets: the same advantages under the ratio of
    the policy executed, ``exp(sum_m x_m[s, m])`` (every agent's change of its own head), eq. 5's joint
    surrogate gain (over ``N``). They are equal at consensus. In process only: the decentralised mode never
    gathers the executed ratios.
    """
    if heads is None:
        heads = HeadsOnBatch.of_batch(policy, obs, actions, cfg.fisher_every)
    elif not torch.equal(heads.theta_old, policy.theta):
        raise ValueError("admm_update: heads were linearised at other parameters than the policy's (theta_old)")
    local = make_local_steps(cfg, heads, advantages)
    N, M = advantages.shape
    state = init_admm(graph, torch.zeros(N, M, heads.old_logp.shape[-1], device=obs.device))
    for edges in steps:
        admm_step(state, graph, edges, local.step, cfg.rho)
    with torch.no_grad():
        theta = local.final_theta()
        policy.theta.copy_(theta)
        x, kl = local.final if local.final is not None else heads.log_ratios_and_kl(theta, torch.arange(N, device=obs.device))
        gain = believed_gains(advantages, x)  # each agent's gain on its own advantages under its own ratio
        team_gain = executed_gains(advantages, x)  # each agent's advantages under the executed ratio
    return {
        "loss/consensus_residual": float(consensus_residual(state.x, graph)),
        "loss/consensus_disagreement": float((state.x[graph.edges[:, 0]] - state.x[graph.edges[:, 1]]).abs().mean()),
        "loss/kl": float(kl.mean()),
        "loss/surrogate_gain": float(gain.mean()),
        "loss/team_surrogate_gain": float(team_gain.mean()),
        "loss/kl_max": float(kl.max()),
        "loss/local_kl_max": local.kl_max,
        "loss/local_kl": local.kl_sum / max(local.steps, 1),
        "loss/local_step_accepted": local.accepted / max(local.steps, 1),
        "loss/admm_steps": float(len(steps)),
    }


def normalise_advantages(x: Tensor, how: str) -> Tensor:
    """``(N, M)`` advantages standardised per agent (``agent``) or over all agents at once (``pooled``:
    from each agent's ``advantage_moments``, three numbers, as the decentralised mode exchanges them)."""
    if how == "agent":
        return normalise_rows(x)
    return normalise_with(x, *pooled_statistics([advantage_moments(row) for row in x]))


@register_algo("matrpo", config=Config, capabilities=CAPABILITIES, summary="MATRPO: decentralised TRPO by ADMM consensus on likelihood ratios between ring neighbours (Li & He 2020)")
def train_matrpo(cfg: Config, env: Any, run: Run) -> JointPolicy:
    """MATRPO (Li & He 2020, arXiv 2010.07916) until the run's budget is spent or it is stopped."""
    agents = TrpoAgents(cfg, env, run, "consensus")
    N, D = agents.axis.n_agents, agents.axis.obs_dim
    M = agents.batch.num_samples
    graph = comm_graph(cfg, N)
    order_generator = make_generator(derived_seed(run.seed, "edge-order"))
    if agents.resumed is not None:
        order_generator.set_state(agents.resumed["edge_order"])

    def snapshot() -> dict[str, Any]:
        return {**agents.snapshot(), "edge_order": order_generator.get_state()}

    while not run.finished:
        t0 = time.perf_counter()
        stats = agents.sample()
        advantages, value_loss = agents.advantages()  # (T, B, N), (N,)
        t1 = time.perf_counter()
        steps = group_rounds(graph, edge_schedule(graph, cfg.admm_rounds, cfg.edge_order, order_generator))
        metrics = admm_update(
            cfg, agents.policy, agents.batch.obs.reshape(M, N, D), agents.batch.actions.reshape(M, N),
            normalise_advantages(agent_major(advantages), cfg.advantage_norm), graph, steps,
        )
        metrics["loss/value"] = float(value_loss.mean())
        metrics["time/admm_s"] = time.perf_counter() - t1
        metrics["time/iteration_s"] = time.perf_counter() - t0
        run.step(M, {**stats, **metrics})
        run.maybe_evaluate(agents.policy)
        run.maybe_checkpoint(snapshot)
    return agents.policy
