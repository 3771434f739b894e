"""Consensus optimisation on a communication graph by the asynchronous edge-based ADMM.

The method is Wei & Ozdaglar 2013, "On the O(1/k) convergence of asynchronous distributed
alternating direction method of multipliers" (arXiv 1307.8254, Section 4, the asynchronous ADMM).
It solves

    min_x  sum_i f_i(x_i)   subject to  x_i = x_j  for every edge (i, j) of a connected graph,

where node ``i`` alone knows ``f_i``. MATRPO (Li & He, arXiv 2010.07916, Section IV-B) uses it to make
the agents agree on their sampled log-likelihood ratios: node ``i`` is agent ``i`` and ``x_i`` its
vector of log-ratios over the ``T*B`` samples (see ``docs/matrpo_derivation.md``).

**Formulation.** Following Wei & Ozdaglar, every edge ``e = (i, j)``, ``i < j``, splits its constraint
``x_i - x_j = 0`` into ``A_ei x_i = z_ei``, ``A_ej x_j = z_ej`` and ``z_ei + z_ej = 0`` with
``A_ei = +I``, ``A_ej = -I``, and carries a multiplier ``lambda_ek`` for each of its two constraints
``A_ek x_k = z_ek``. The augmented Lagrangian (penalty ``rho > 0``) is

    L = sum_i f_i(x_i) + sum_{e, k in e} [ lambda_ek^T (A_ek x_k - z_ek) + rho/2 ||A_ek x_k - z_ek||^2 ].

**One round** activates one edge ``e = (i, j)``:

1. each endpoint ``q`` in ``{i, j}`` minimises ``L`` over ``x_q`` with everything else fixed, which
   (because ``A_ek^2 = I``) is the proximal problem

       x_q <- argmin_x  f_q(x) + (rho d_q / 2) ||x - v_q||^2,
       v_q  = (1 / d_q) sum_{e' incident to q} A_e'q (z_e'q - lambda_e'q / rho),

   with ``d_q`` the degree of ``q``; this is the pluggable *local update* (``prox(target, penalty)``);
2. the edge minimises ``L`` over ``(z_ei, z_ej)`` on ``z_ei + z_ej = 0`` and takes a dual step
   ``lambda_ek <- lambda_ek + rho (A_ek x_k - z_ek)``. In closed form, with
   ``mu = (lambda_ei + lambda_ej)/2 + (rho/2)(x_i - x_j)``: ``z_ek = A_ek x_k + (lambda_ek - mu)/rho``
   and ``lambda_ei = lambda_ej = mu``.

Started (as here) with equal multipliers on both ends of every edge (zero), the two multipliers of
an edge stay equal, so the state is one multiplier ``lambda_e`` and one estimate per edge: writing
``z_e := A_ei z_ei = A_ej z_ej`` (the edge's estimate of the common value),
step 2 is ``z_e <- (x_i + x_j) / 2`` and ``lambda_e <- lambda_e + (rho / 2)(x_i - x_j)``, and the
target of step 1 is ``v_q = mean over incident e of (z_e - s_eq lambda_e / rho)`` with
``s_eq = +1`` if ``q`` is the edge's first (smaller) endpoint and ``-1`` otherwise. This module stores
exactly that state, which is what each endpoint of an edge holds in a decentralised run; the only
values that cross an edge in a round are the two endpoints' new ``x_i``, ``x_j`` (each side then
computes the same ``z_e`` and ``lambda_e``). A round is ``node_target`` (step 1's ``v_q``), the local
update and ``edge_update`` (step 2); an agent in its own process calls the same two functions on
its own copies and gets the in-process iterates bit for bit. Rounds on edges with no common node
commute (``edge_matchings`` partitions the edges into such sets).

**Vectorised.** Each node's variable is a tensor of any shape ``S`` (e.g. ``(T*B,)`` log-ratios,
or ``(N, T*B)``), the state holds ``x`` ``(N, *S)``, ``z`` and ``lambda`` ``(E, *S)``, and a round is a
handful of tensor operations on whole ``S``-tensors; only the rounds themselves, which are
sequential by nature, are a Python loop.

Wei & Ozdaglar prove ``O(1/k)`` convergence (of the ergodic average, in expectation) for convex
``f_i`` with edges drawn at random with positive probabilities; the tests check convergence to the
centralised minimiser on strongly convex quadratics for both the random and the round-robin order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

LocalUpdate = Callable[[Tensor, float], Tensor]
"""``prox(target, penalty) -> x``: a node's minimiser of ``f(x) + penalty/2 ||x - target||^2`` (shapes ``S``)."""


@dataclass(frozen=True)
class CommGraph:
    """An undirected, connected communication graph on nodes ``0..num_nodes-1``.

    Attributes:
        num_nodes: ``N``.
        edges: ``(E, 2)`` int64, each row ``(i, j)`` with ``i < j``, no duplicates, in the order that
            the round-robin schedule activates them.
    Build it with ``ring_graph``, ``line_graph``, ``complete_graph`` or ``graph_from_edges``, which
    validate it.
    """

    num_nodes: int
    edges: Tensor
    _incident: tuple[tuple[tuple[int, int], ...], ...] = field(repr=False, compare=False, default=())
    _pairs: tuple[tuple[int, int], ...] = field(repr=False, compare=False, default=())
    # per node: its incident edges' indices (E_q,) and signs s_eq (E_q,) float64, in ``incident`` order
    _index: tuple[Tensor, ...] = field(repr=False, compare=False, default=())
    _sign: tuple[Tensor, ...] = field(repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        if len(self._pairs) != int(self.edges.shape[0]) or len(self._index) != self.num_nodes:
            raise ValueError("CommGraph: build graphs with graph_from_edges / ring_graph / line_graph / complete_graph")

    @property
    def num_edges(self) -> int:
        """``E``."""
        return int(self.edges.shape[0])

    def degree(self) -> Tensor:
        """``(N,)`` int64 number of edges at each node."""
        return torch.bincount(self.edges.reshape(-1), minlength=self.num_nodes)

    def incident(self, node: int) -> tuple[tuple[int, int], ...]:
        """``((edge index, sign), ...)`` for the edges at ``node``; sign ``+1`` if ``node`` is the smaller endpoint."""
        return self._incident[node]

    def neighbours(self, node: int) -> list[int]:
        """The nodes sharing an edge with ``node``."""
        return [int(self.edges[e, 1 if s > 0 else 0]) for e, s in self.incident(node)]


def graph_from_edges(num_nodes: int, edges: Sequence[Sequence[int]] | Tensor) -> CommGraph:
    """Validate a user edge list and build the graph.

    Refused with a ``ValueError`` naming the problem: fewer than 2 nodes, an edge that is not a pair,
    a node index outside ``[0, num_nodes)``, a self loop, a duplicate edge (in either direction) or a
    graph that is not connected (the nodes not reachable from node 0 are named). Each edge is stored
    as ``(min, max)``; the order of the list is kept.
    """
    if int(num_nodes) != num_nodes or num_nodes < 2:
        raise ValueError(f"graph: num_nodes = {num_nodes}, expected an integer >= 2")
    num_nodes = int(num_nodes)
    rows = edges.tolist() if isinstance(edges, Tensor) else [list(e) for e in edges]
    if not rows:
        raise ValueError(f"graph: no edges for {num_nodes} nodes, expected a connected graph")
    seen: set[tuple[int, int]] = set()
    ordered: list[tuple[int, int]] = []
    for k, row in enumerate(rows):
        if len(row) != 2:
            raise ValueError(f"graph: edge {k} is {row}, expected a pair (i, j)")
        i, j = (int(v) for v in row)
        if not (0 <= i < num_nodes and 0 <= j < num_nodes):
            raise ValueError(f"graph: edge {k} = ({i}, {j}) has a node index outside [0, {num_nodes})")
        if i == j:
            raise ValueError(f"graph: edge {k} = ({i}, {j}) is a self loop")
        pair = (min(i, j), max(i, j))
        if pair in seen:
            raise ValueError(f"graph: edge {k} = ({i}, {j}) is a duplicate")
        seen.add(pair)
        ordered.append(pair)
    adjacency: list[list[int]] = [[] for _ in range(num_nodes)]
    for i, j in ordered:
        adjacency[i].append(j)
        adjacency[j].append(i)
    reached, frontier = {0}, [0]
    while frontier:
        node = frontier.pop()
        for other in adjacency[node]:
            if other not in reached:
                reached.add(other)
                frontier.append(other)
    if len(reached) != num_nodes:
        missing = sorted(set(range(num_nodes)) - reached)
        raise ValueError(f"graph: not connected, nodes {missing} cannot be reached from node 0")
    incident = tuple(
        tuple((e, 1 if i == node else -1) for e, (i, j) in enumerate(ordered) if node in (i, j))
        for node in range(num_nodes)
    )
    index = tuple(torch.tensor([e for e, _ in inc], dtype=torch.int64) for inc in incident)
    sign = tuple(torch.tensor([float(sg) for _, sg in inc], dtype=torch.float64) for inc in incident)
    return CommGraph(num_nodes, torch.tensor(ordered, dtype=torch.int64), incident, tuple(ordered), index, sign)


def ring_graph(num_nodes: int) -> CommGraph:
    """``0 - 1 - ... - (N-1) - 0`` (MATRPO's topology); for ``N = 2`` the single edge ``(0, 1)``."""
    if num_nodes == 2:
        return graph_from_edges(2, [(0, 1)])
    return graph_from_edges(num_nodes, [(k, (k + 1) % num_nodes) for k in range(num_nodes)])


def line_graph(num_nodes: int) -> CommGraph:
    """The path ``0 - 1 - ... - (N-1)``."""
    return graph_from_edges(num_nodes, [(k, k + 1) for k in range(num_nodes - 1)])


def complete_graph(num_nodes: int) -> CommGraph:
    """Every pair of nodes linked."""
    return graph_from_edges(num_nodes, [(i, j) for i in range(num_nodes) for j in range(i + 1, num_nodes)])


def make_graph(topology: str, num_nodes: int, edges: Sequence[Sequence[int]] | None = None) -> CommGraph:
    """A graph by name: ``"ring"`` (default of MATRPO), ``"line"``, ``"complete"`` or ``"edges"`` (with ``edges``)."""
    builders = {"ring": ring_graph, "line": line_graph, "complete": complete_graph}
    if topology == "edges":
        if edges is None:
            raise ValueError("graph: topology 'edges' needs an edge list")
        return graph_from_edges(num_nodes, edges)
    if topology not in builders:
        raise ValueError(f"graph: unknown topology {topology!r}, expected one of ['ring', 'line', 'complete', 'edges']")
    if edges is not None:
        raise ValueError(f"graph: an edge list was given with topology {topology!r}; use topology 'edges'")
    return builders[topology](num_nodes)


def edge_schedule(
    graph: CommGraph, rounds: int, order: str = "round_robin", generator: torch.Generator | None = None
) -> Tensor:
    """The edge activated in each round, ``(rounds,)`` int64.

    ``"round_robin"`` cycles through ``graph.edges`` in order (as the MATRPO authors' code does);
    ``"matchings"`` cycles through the edges too, listed matching by matching (``edge_matchings``: on
    a ring of even length the even edges, then the odd ones), so that ``group_rounds`` runs each
    matching as one step; ``"random"`` draws each round's edge uniformly and independently (Wei &
    Ozdaglar's setting), from ``generator`` so that a seed fixes the schedule.
    """
    if rounds < 0:
        raise ValueError(f"edge_schedule: rounds = {rounds}, expected >= 0")
    if order == "round_robin":
        return torch.arange(rounds, dtype=torch.int64) % graph.num_edges
    if order == "matchings":
        cycle = torch.cat(edge_matchings(graph))
        return cycle[torch.arange(rounds, dtype=torch.int64) % graph.num_edges]
    if order == "random":
        return torch.randint(graph.num_edges, (rounds,), generator=generator, dtype=torch.int64)
    raise ValueError(f"edge_schedule: order {order!r}, expected 'round_robin', 'matchings' or 'random'")


def group_rounds(graph: CommGraph, schedule: Tensor) -> list[Tensor]:
    """Split a schedule ``(rounds,)`` into steps of consecutive rounds on pairwise disjoint edges, each ``(E_k,)``.

    Rounds on edges with no common node commute, so running a step's rounds at once (their local
    updates batched, then their edge updates) gives exactly the iterate of running them one by one
    in the schedule's order. Greedy: a round joins the current step unless its edge shares a node
    with an edge already in it. ``"matchings"`` schedules split into whole matchings; a ring's
    ``"round_robin"`` into single rounds (consecutive ring edges share a node).
    """
    steps: list[list[int]] = []
    nodes: set[int] = set()
    for edge in schedule.tolist():
        i, j = graph._pairs[edge]
        if steps and i not in nodes and j not in nodes:
            steps[-1].append(edge)
            nodes.update((i, j))
        else:
            steps.append([edge])
            nodes = {i, j}
    return [torch.tensor(step, dtype=torch.int64) for step in steps]


def edge_matchings(graph: CommGraph) -> list[Tensor]:
    """A partition of the edges into matchings (sets of edges with no common node), each ``(E_k,)`` int64.

    Rounds on the edges of one matching commute (each reads and writes only its own endpoints' ``x``
    and its own and incident edges' ``z``, ``lambda``, and no two share an endpoint), so a matching can
    be run at once, e.g. its local steps in parallel, with exactly the result of running its edges one
    by one. Greedy colouring in edge order: a ring of even length gives 2 matchings, an odd one 3.
    """
    matchings: list[list[int]] = []
    used: list[set[int]] = []
    for e, (i, j) in enumerate(graph._pairs):
        for k, nodes in enumerate(used):
            if i not in nodes and j not in nodes:
                matchings[k].append(e)
                nodes.update((i, j))
                break
        else:
            matchings.append([e])
            used.append({i, j})
    return [torch.tensor(m, dtype=torch.int64) for m in matchings]


@dataclass
class AdmmState:
    """The iterate of the asynchronous ADMM (mutated in place by ``admm_round``).

    Attributes:
        x: ``(N, *S)`` each node's local variable.
        z: ``(E, *S)`` each edge's estimate of the common value (``z_e = A_ei z_ei``).
        multipliers: ``(E, *S)`` each edge's multiplier ``lambda_e`` (equal on its two ends).
        rounds: number of rounds run.
    """

    x: Tensor
    z: Tensor
    multipliers: Tensor
    rounds: int = 0


def init_admm(graph: CommGraph, x0: Tensor) -> AdmmState:
    """Start from ``x0`` ``(N, *S)``: ``z_e = (x_i + x_j)/2`` and zero multipliers.

    For MATRPO ``x0 = 0`` (every log-ratio is 0 at the old policies), hence ``z = 0``, as the authors start.
    """
    if x0.dim() < 1 or x0.shape[0] != graph.num_nodes:
        raise ValueError(f"init_admm: x0 has shape {tuple(x0.shape)}, expected ({graph.num_nodes}, *S)")
    x = x0.clone()
    z = 0.5 * (x[graph.edges[:, 0]] + x[graph.edges[:, 1]])
    return AdmmState(x, z, torch.zeros_like(z))


def node_target(z: Tensor, multipliers: Tensor, signs: Tensor, rho: float) -> Tensor:
    """``v_q = mean_e (z_e - s_eq lambda_e / rho)`` ``(*S)``, the point node ``q``'s proximal term pulls towards.

    Only node ``q``'s own copies of its edges' state are needed, so an agent in its own process calls
    this on what it holds, with exactly the arithmetic of ``admm_round`` (the one-node case of
    ``node_targets``).

    Args:
        z: ``(d_q, *S)`` the estimates of the edges at ``q`` (in ``graph.incident(q)`` order).
        multipliers: ``(d_q, *S)`` their multipliers.
        signs: ``(d_q,)`` ``+1`` where ``q`` is the edge's first endpoint, ``-1`` otherwise.
        rho: ADMM penalty.
    """
    if z.shape != multipliers.shape or signs.dim() != 1 or signs.shape[0] != z.shape[0]:
        raise ValueError(
            f"node_target: z {tuple(z.shape)}, multipliers {tuple(multipliers.shape)} and signs "
            f"{tuple(signs.shape)}, expected (d, *S), (d, *S) and (d,)"
        )
    return node_targets(z[None], multipliers[None], signs[None], rho)[0]


def node_targets(z: Tensor, multipliers: Tensor, signs: Tensor, rho: float) -> Tensor:
    """``node_target`` of ``k`` nodes of one degree ``d`` at once: ``z``, ``multipliers`` ``(k, d, *S)``, ``signs``
    ``(k, d)`` -> ``(k, *S)``, row by row the same arithmetic as ``node_target``."""
    if z.shape != multipliers.shape or signs.shape != z.shape[:2]:
        raise ValueError(
            f"node_targets: z {tuple(z.shape)}, multipliers {tuple(multipliers.shape)} and signs "
            f"{tuple(signs.shape)}, expected (k, d, *S), (k, d, *S) and (k, d)"
        )
    signs = signs.to(dtype=z.dtype, device=z.device).reshape(tuple(signs.shape) + (1,) * (z.dim() - 2))
    return (z - signs * multipliers / rho).mean(1)


def edge_update(x_first: Tensor, x_second: Tensor, multiplier: Tensor, rho: float) -> tuple[Tensor, Tensor]:
    """The edge step of a round: ``(z_e, lambda_e) = ((x_i + x_j)/2, lambda_e + (rho/2)(x_i - x_j))``, each ``(*S)``.

    ``x_first`` is the smaller endpoint's variable. Both endpoints of a decentralised run apply it to
    the same two tensors and so hold the same ``z_e`` and ``lambda_e``.
    """
    if x_first.shape != x_second.shape or multiplier.shape != x_first.shape:
        raise ValueError(
            f"edge_update: x_i {tuple(x_first.shape)}, x_j {tuple(x_second.shape)} and multiplier "
            f"{tuple(multiplier.shape)} must have the same shape S"
        )
    return 0.5 * (x_first + x_second), multiplier + (0.5 * rho) * (x_first - x_second)


def proximal_target(state: AdmmState, graph: CommGraph, node: int, rho: float) -> Tensor:
    """``node_target`` of ``node`` from the whole state ``(*S)``."""
    index = graph._index[node]
    return node_target(state.z[index], state.multipliers[index], graph._sign[node], rho)


def proximal_targets(state: AdmmState, graph: CommGraph, nodes: Sequence[int], rho: float) -> Tensor:
    """``node_target`` of several nodes from the whole state, ``(k, *S)`` in ``nodes``' order; nodes of one
    degree are computed together by ``node_targets`` (row by row the arithmetic of ``node_target``)."""
    out = torch.empty((len(nodes),) + tuple(state.z.shape[1:]), dtype=state.z.dtype, device=state.z.device)
    by_degree: dict[int, list[int]] = {}
    for position, node in enumerate(nodes):
        by_degree.setdefault(len(graph.incident(node)), []).append(position)
    for positions in by_degree.values():
        index = torch.stack([graph._index[nodes[p]] for p in positions]).to(state.z.device)
        signs = torch.stack([graph._sign[nodes[p]] for p in positions])
        out[torch.tensor(positions, device=out.device)] = node_targets(state.z[index], state.multipliers[index], signs, rho)
    return out


def admm_step(state: AdmmState, graph: CommGraph, edges: Tensor, new_x: Callable[[list[int], Tensor, Tensor], Tensor], rho: float) -> AdmmState:
    """The rounds of ``edges`` ``(k,)`` (pairwise disjoint, e.g. a step of ``group_rounds``) at once; mutates ``state``.

    ``new_x(nodes, targets (2k, *S), penalties (2k,))`` returns the endpoints' new variables ``(2k, *S)``
    (their proximal updates, batched), ``nodes`` being ``[i_1, j_1, i_2, j_2, ...]``. Then every edge
    takes ``edge_update``. Equal, bit for bit, to the rounds one by one (the edges share no node).
    """
    pairs = [graph._pairs[e] for e in edges.tolist()]
    nodes = [q for pair in pairs for q in pair]
    if len(set(nodes)) != len(nodes):
        raise ValueError(f"admm_step: edges {edges.tolist()} share a node; a step needs pairwise disjoint edges")
    if not rho > 0:
        raise ValueError(f"admm_step: rho = {rho}, expected > 0")
    targets = proximal_targets(state, graph, nodes, rho)
    penalties = torch.tensor([rho * len(graph.incident(q)) for q in nodes], dtype=state.x.dtype, device=state.x.device)
    new = new_x(nodes, targets, penalties)
    if new.shape != targets.shape:
        raise ValueError(f"admm_step: the local updates returned shape {tuple(new.shape)}, expected {tuple(targets.shape)}")
    index = torch.tensor(nodes, device=state.x.device)
    state.x[index] = new
    edge_index = edges.to(state.x.device)
    state.z[edge_index], state.multipliers[edge_index] = edge_update(new[0::2], new[1::2], state.multipliers[edge_index], rho)
    state.rounds += len(pairs)
    return state


def admm_round(
    state: AdmmState, graph: CommGraph, edge: int, local_updates: Sequence[LocalUpdate], rho: float
) -> AdmmState:
    """One asynchronous round on edge ``edge`` = ``(i, j)``; mutates and returns ``state``.

    Both endpoints solve their proximal problem from the state *before* the round (their order does
    not matter: they share no term until the edge update), then the edge's ``z_e`` and ``lambda_e``
    are updated from the two new local variables.

    Args:
        state: the iterate.
        graph: the graph.
        edge: index into ``graph.edges``.
        local_updates: one ``prox(target (*S), penalty) -> x (*S)`` per node, where ``penalty = rho * degree``.
        rho: ADMM penalty, > 0.
    """
    if len(local_updates) != graph.num_nodes:
        raise ValueError(f"admm_round: {len(local_updates)} local updates, expected one per node ({graph.num_nodes})")
    if not rho > 0:
        raise ValueError(f"admm_round: rho = {rho}, expected > 0")
    if not 0 <= edge < graph.num_edges:
        raise ValueError(f"admm_round: edge {edge} outside [0, {graph.num_edges})")
    i, j = graph._pairs[edge]
    targets = [proximal_target(state, graph, q, rho) for q in (i, j)]
    for q, target in zip((i, j), targets):
        penalty = rho * len(graph.incident(q))
        new = local_updates[q](target, penalty)
        if new.shape != state.x.shape[1:]:
            raise ValueError(
                f"admm_round: the local update of node {q} returned shape {tuple(new.shape)}, "
                f"expected {tuple(state.x.shape[1:])}"
            )
        state.x[q] = new
    state.z[edge], state.multipliers[edge] = edge_update(state.x[i], state.x[j], state.multipliers[edge], rho)
    state.rounds += 1
    return state


def consensus_residual(x: Tensor, graph: CommGraph) -> Tensor:
    """The largest disagreement over the edges, ``max_e max |x_i - x_j|``, a scalar tensor (``x`` ``(N, *S)``)."""
    if x.dim() < 1 or x.shape[0] != graph.num_nodes:
        raise ValueError(f"consensus_residual: x has shape {tuple(x.shape)}, expected ({graph.num_nodes}, *S)")
    return (x[graph.edges[:, 0]] - x[graph.edges[:, 1]]).abs().amax()


def run_admm(
    graph: CommGraph,
    x0: Tensor,
    local_updates: Sequence[LocalUpdate],
    rho: float,
    rounds: int,
    *,
    order: str = "round_robin",
    generator: torch.Generator | None = None,
    state: AdmmState | None = None,
) -> tuple[AdmmState, Tensor]:
    """Run ``rounds`` asynchronous rounds; return the state and the consensus residual after each round.

    Args:
        graph: the communication graph.
        x0: ``(N, *S)`` initial local variables (ignored when ``state`` is given).
        local_updates: one proximal solver per node (see ``admm_round``).
        rho: ADMM penalty.
        rounds: number of rounds (one edge each).
        order: ``"round_robin"`` or ``"random"`` (see ``edge_schedule``).
        generator: the random order's generator.
        state: continue from this state instead of ``init_admm(graph, x0)``.

    Returns:
        ``(state, residuals)`` with ``residuals`` ``(rounds,)`` the ``consensus_residual`` after each round.
    """
    if state is None:
        state = init_admm(graph, x0)
    schedule = edge_schedule(graph, rounds, order, generator).tolist()
    residuals = torch.empty(rounds, dtype=state.x.dtype, device=state.x.device)
    for k, edge in enumerate(schedule):
        admm_round(state, graph, edge, local_updates, rho)
        residuals[k] = consensus_residual(state.x, graph)
    return state, residuals


def quadratic_local_updates(weights: Tensor, centres: Tensor) -> list[LocalUpdate]:
    """Closed-form proximal solvers for ``f_i(x) = (a_i / 2) ||x - b_i||^2``.

    ``argmin_x (a/2)||x - b||^2 + (p/2)||x - v||^2 = (a b + p v) / (a + p)``.

    Args:
        weights: ``(N,)`` the ``a_i >= 0``.
        centres: ``(N, *S)`` the ``b_i``.
    """
    if weights.dim() != 1 or centres.dim() < 1 or centres.shape[0] != weights.shape[0]:
        raise ValueError(
            f"quadratic_local_updates: weights {tuple(weights.shape)} and centres {tuple(centres.shape)}, "
            "expected (N,) and (N, *S)"
        )
    if (weights < 0).any():
        raise ValueError("quadratic_local_updates: weights must be >= 0")

    def update_for(a: float, b: Tensor) -> LocalUpdate:
        return lambda target, penalty: (a * b + penalty * target) / (a + penalty)

    return [update_for(float(a), b) for a, b in zip(weights, centres)]


def quadratic_consensus_minimiser(weights: Tensor, centres: Tensor) -> Tensor:
    """The centralised solution ``sum_i a_i b_i / sum_i a_i`` ``(*S)`` of ``min_x sum_i (a_i/2)||x - b_i||^2``."""
    shape = (-1,) + (1,) * (centres.dim() - 1)
    return (weights.reshape(shape) * centres).sum(0) / weights.sum()
