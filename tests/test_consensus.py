"""Pure maths: the asynchronous edge-based ADMM against the centralised solution of a quadratic
consensus problem, against a naive per-endpoint transcription of Wei & Ozdaglar's algorithm, and the
graph validation."""

import pytest
import torch

from maestro.core.consensus import (
    admm_round,
    admm_step,
    complete_graph,
    consensus_residual,
    edge_matchings,
    edge_update,
    edge_schedule,
    graph_from_edges,
    group_rounds,
    init_admm,
    line_graph,
    make_graph,
    node_target,
    quadratic_consensus_minimiser,
    quadratic_local_updates,
    ring_graph,
    run_admm,
)

TREE7 = [(0, 1), (0, 2), (1, 3), (1, 4), (2, 5), (2, 6)]


def quadratic_problem(num_nodes, size=512, seed=0):
    gen = torch.Generator().manual_seed(seed)
    weights = 0.5 + 1.5 * torch.rand(num_nodes, generator=gen, dtype=torch.float64)
    centres = torch.randn(num_nodes, size, generator=gen, dtype=torch.float64)
    return weights, centres


# (graph, order, rho, rounds): each reaches max_i |x_i - x*| < 1e-6 within the stated rounds
# (seed 0, 64-vectors; measured 73 / 207 / 1029 / 336 / 453 / 383 rounds, the budgets leave a margin)
CASES = [
    ("ring3", ring_graph(3), "round_robin", 1.0, 150),
    ("ring5", ring_graph(5), "random", 1.0, 350),
    ("ring12", ring_graph(12), "random", 2.0, 1500),
    ("line6", line_graph(6), "round_robin", 2.0, 600),
    ("complete6", complete_graph(6), "round_robin", 1.0, 700),
    ("tree7", graph_from_edges(7, TREE7), "random", 2.0, 700),
]


@pytest.mark.parametrize("name,graph,order,rho,rounds", CASES, ids=[c[0] for c in CASES])
def test_admm_converges_to_the_centralised_minimiser(name, graph, order, rho, rounds):
    weights, centres = quadratic_problem(graph.num_nodes, size=64)
    target = quadratic_consensus_minimiser(weights, centres)
    # the centralised minimiser, directly: the weighted mean is where the summed gradient vanishes
    assert torch.allclose((weights[:, None] * (target - centres)).sum(0), torch.zeros_like(target), atol=1e-12)
    x0 = torch.zeros_like(centres)
    state, residuals = run_admm(
        graph, x0, quadratic_local_updates(weights, centres), rho, rounds,
        order=order, generator=torch.Generator().manual_seed(1),
    )
    assert state.rounds == rounds and residuals.shape == (rounds,)
    assert (state.x - target).abs().max() < 1e-6
    assert residuals[-1] < 1e-6 and residuals[0] > 1e-2


def naive_wei_ozdaglar(num_nodes, edges, weights, centres, rho, schedule):
    """Per-endpoint transcription of the asynchronous ADMM: z_ek and lambda_ek for both ends of every
    edge, A_ei = +1 for the first endpoint and -1 for the second, loops over nodes, edges and samples."""
    size = centres.shape[1]
    x = [[0.0] * size for _ in range(num_nodes)]
    z = {(e, k): [0.0] * size for e in range(len(edges)) for k in edges[e]}
    lam = {(e, k): [0.0] * size for e in range(len(edges)) for k in edges[e]}
    sign = {(e, k): (1.0 if k == edges[e][0] else -1.0) for e in range(len(edges)) for k in edges[e]}
    history = []
    for e in schedule:
        i, j = edges[e]
        new = {}
        for q in (i, j):
            mine = [f for f in range(len(edges)) if q in edges[f]]
            a, b = float(weights[q]), centres[q].tolist()
            row = []
            for s in range(size):
                # argmin a/2 (x - b)^2 + sum_f [lam (A x - z) + rho/2 (A x - z)^2]
                numerator = a * b[s] + sum(sign[f, q] * (rho * z[f, q][s] - lam[f, q][s]) for f in mine)
                row.append(numerator / (a + rho * len(mine)))
            new[q] = row
        for q in (i, j):
            x[q] = new[q]
        for s in range(size):
            ai, aj = sign[e, i] * x[i][s], sign[e, j] * x[j][s]
            mu = 0.5 * (lam[e, i][s] + lam[e, j][s]) + 0.5 * rho * (ai + aj)
            z[e, i][s] = ai + (lam[e, i][s] - mu) / rho
            z[e, j][s] = aj + (lam[e, j][s] - mu) / rho
            assert abs(z[e, i][s] + z[e, j][s]) < 1e-12  # the pair lies in Z
            lam[e, i][s] = lam[e, i][s] + rho * (ai - z[e, i][s])
            lam[e, j][s] = lam[e, j][s] + rho * (aj - z[e, j][s])
        history.append(torch.tensor(x, dtype=torch.float64))
    return history


def test_vectorised_rounds_match_the_naive_per_endpoint_algorithm():
    edges = [(0, 1), (1, 2), (1, 3), (3, 4), (0, 4)]
    graph = graph_from_edges(5, edges)
    weights, centres = quadratic_problem(5, size=3, seed=2)
    schedule = edge_schedule(graph, 25, "random", torch.Generator().manual_seed(3))
    expected = naive_wei_ozdaglar(5, edges, weights, centres, 0.7, schedule.tolist())
    state = init_admm(graph, torch.zeros(5, 3, dtype=torch.float64))
    updates = quadratic_local_updates(weights, centres)
    for edge, x_ref in zip(schedule.tolist(), expected):
        admm_round(state, graph, edge, updates, 0.7)
        assert torch.allclose(state.x, x_ref, atol=1e-12)


def test_local_updates_see_whole_vectors_and_the_penalty_rho_times_degree():
    graph = graph_from_edges(4, [(0, 1), (1, 2), (1, 3)])  # node 1 has degree 3
    calls = []

    def recorder(node):
        def update(target, penalty):
            calls.append((node, tuple(target.shape), penalty))
            return target
        return update

    state = init_admm(graph, torch.zeros(4, 5, 7))
    for edge in range(3):
        admm_round(state, graph, edge, [recorder(k) for k in range(4)], 2.0)
    assert calls[:2] == [(0, (5, 7), 2.0), (1, (5, 7), 6.0)]
    assert len(calls) == 6 and state.rounds == 3


def test_random_order_is_deterministic_with_a_seed():
    graph = ring_graph(6)
    weights, centres = quadratic_problem(6, size=64)
    updates = quadratic_local_updates(weights, centres)
    runs = [
        run_admm(graph, torch.zeros_like(centres), updates, 1.0, 60, order="random",
                 generator=torch.Generator().manual_seed(seed))[0].x
        for seed in (7, 7, 8)
    ]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])
    assert torch.equal(edge_schedule(graph, 8), torch.tensor([0, 1, 2, 3, 4, 5, 0, 1]))


def test_consensus_residual_is_the_largest_edge_disagreement():
    graph = line_graph(4)
    x = torch.tensor([[0.0, 1.0], [0.5, 1.0], [0.5, -2.0], [0.0, -2.0]])
    naive = max(abs(x[i, s] - x[j, s]).item() for i, j in graph.edges.tolist() for s in range(2))
    assert consensus_residual(x, graph).item() == naive == 3.0


def test_graph_builders():
    assert ring_graph(4).edges.tolist() == [[0, 1], [1, 2], [2, 3], [0, 3]]
    assert ring_graph(2).edges.tolist() == [[0, 1]]
    assert line_graph(3).edges.tolist() == [[0, 1], [1, 2]]
    assert complete_graph(4).num_edges == 6
    assert ring_graph(5).degree().tolist() == [2] * 5
    assert sorted(ring_graph(5).neighbours(0)) == [1, 4]
    assert make_graph("edges", 3, [(2, 0), (1, 2)]).edges.tolist() == [[0, 2], [1, 2]]
    assert make_graph("ring", 3).num_edges == 3


@pytest.mark.parametrize(
    "num_nodes,edges,message",
    [
        (3, [(0, 1), (1, 1)], r"edge 1 = \(1, 1\) is a self loop"),
        (3, [(0, 1), (1, 3)], r"edge 1 = \(1, 3\) has a node index outside \[0, 3\)"),
        (3, [(0, -1)], r"outside \[0, 3\)"),
        (4, [(0, 1), (2, 3)], r"not connected, nodes \[2, 3\] cannot be reached from node 0"),
        (3, [(0, 1), (1, 0), (1, 2)], r"edge 1 = \(1, 0\) is a duplicate"),
        (3, [(0, 1, 2)], r"expected a pair"),
        (1, [], r"num_nodes = 1, expected an integer >= 2"),
        (3, [], r"no edges"),
    ],
)
def test_bad_graphs_are_refused(num_nodes, edges, message):
    with pytest.raises(ValueError, match=message):
        graph_from_edges(num_nodes, edges)


def test_bad_arguments_are_refused():
    graph = ring_graph(3)
    weights, centres = quadratic_problem(3, size=4)
    updates = quadratic_local_updates(weights, centres)
    with pytest.raises(ValueError, match=r"x0 has shape \(2, 4\), expected \(3, \*S\)"):
        init_admm(graph, torch.zeros(2, 4))
    state = init_admm(graph, torch.zeros(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="2 local updates, expected one per node"):
        admm_round(state, graph, 0, updates[:2], 1.0)
    with pytest.raises(ValueError, match="rho = 0"):
        admm_round(state, graph, 0, updates, 0.0)
    with pytest.raises(ValueError, match=r"edge 3 outside \[0, 3\)"):
        admm_round(state, graph, 3, updates, 1.0)
    bad = [lambda t, p: t[:2]] * 3
    with pytest.raises(ValueError, match=r"node 0 returned shape \(2,\), expected \(4,\)"):
        admm_round(state, graph, 0, bad, 1.0)
    with pytest.raises(ValueError, match="order 'sorted'"):
        edge_schedule(graph, 3, "sorted")
    with pytest.raises(ValueError, match="unknown topology 'star'"):
        make_graph("star", 3)
    with pytest.raises(ValueError, match=r"expected \(N,\) and \(N, \*S\)"):
        quadratic_local_updates(torch.ones(3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"signs \(3,\), expected \(d, \*S\), \(d, \*S\) and \(d,\)"):
        node_target(torch.zeros(2, 4), torch.zeros(2, 4), torch.ones(3), 1.0)
    with pytest.raises(ValueError, match=r"x_j \(5,\)"):
        edge_update(torch.zeros(4), torch.zeros(5), torch.zeros(4), 1.0)
    with pytest.raises(ValueError, match="graph_from_edges"):
        type(graph)(3, graph.edges)


def test_rounds_on_a_matching_commute():
    graph = ring_graph(6)
    matchings = edge_matchings(graph)
    assert [m.tolist() for m in matchings] == [[0, 2, 4], [1, 3, 5]]
    assert len(edge_matchings(ring_graph(5))) == 3
    for m in edge_matchings(complete_graph(5)):
        nodes = graph_from_edges(5, complete_graph(5).edges.tolist()).edges[m].reshape(-1).tolist()
        assert len(nodes) == len(set(nodes))
    weights, centres = quadratic_problem(6, size=8)
    updates = quadratic_local_updates(weights, centres)
    states = []
    for order in ([0, 2, 4, 1, 3, 5] * 3, [4, 0, 2, 5, 1, 3] * 3):
        state = init_admm(graph, torch.zeros_like(centres))
        for edge in order:
            admm_round(state, graph, edge, updates, 1.0)
        states.append(state)
    assert torch.equal(states[0].x, states[1].x)
    assert torch.equal(states[0].z, states[1].z) and torch.equal(states[0].multipliers, states[1].multipliers)


def test_local_trust_region_steps_as_proximal_solvers_move_agents_towards_consensus():
    """MATRPO's mapping (docs/matrpo_derivation.md, section 3) on a toy: 3 agents with linear policies
    over the joint action (3 heads of 5 actions) on correlated observations, each ADMM local step one
    ``trpo_step`` from the old parameters on the augmented Lagrangian. The steps stay in their trust
    region, and with rho = 1 the agents' per-component log-ratios disagree several times less than
    after the same steps without consensus (rho ~ 0), for a similar size of policy change."""
    from maestro.core.trust_region import flat_params, set_flat_params, trpo_step

    agents, samples, moves, features, delta = 3, 64, 5, 6, 0.01
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(1, samples, features, generator=gen, dtype=torch.float64)
    obs = obs + 0.1 * torch.randn(agents, samples, features, generator=gen, dtype=torch.float64)
    nets = [torch.nn.Linear(features, agents * moves).double() for _ in range(agents)]
    for net in nets:
        with torch.no_grad():
            net.weight.copy_(0.3 * torch.randn(net.weight.shape, generator=gen, dtype=torch.float64))
            net.bias.zero_()
    theta_old = [flat_params(net.parameters()) for net in nets]

    def log_probs(i):
        return torch.log_softmax(nets[i](obs[i]).view(samples, agents, moves), -1)  # (M, N, A)

    with torch.no_grad():
        old = [log_probs(i) for i in range(agents)]
        u = torch.rand(samples, agents, moves, generator=gen, dtype=torch.float64)
        gumbel = -torch.log(-torch.log(u))
        actions = torch.stack([(old[i][:, i] + gumbel[:, i]).argmax(-1) for i in range(agents)], -1)  # (M, N)
    advantages = torch.randn(agents, samples, generator=gen, dtype=torch.float64)

    def log_ratios(i):  # x_i, (M, N)
        return (log_probs(i) - old[i]).gather(-1, actions[..., None]).squeeze(-1)

    def mean_kl(i, rows=slice(None)):
        return (old[i][rows].exp() * (old[i][rows] - log_probs(i)[rows])).sum((-2, -1)).mean()

    kls = []

    def local_step(i):
        def prox(target, penalty):
            params = list(nets[i].parameters())
            set_flat_params(params, theta_old[i])

            def lagrangian():
                x = log_ratios(i)
                return -(advantages[i] * x.sum(-1).exp()).mean() + penalty / (2 * samples) * (x - target).pow(2).sum()

            result = trpo_step(params, lagrangian, lambda: mean_kl(i), delta,
                               fvp_kl_fn=lambda: mean_kl(i, slice(None, None, 5)), damping=0.01)
            kls.append(result.line_search.kl)
            with torch.no_grad():
                return log_ratios(i)
        return prox

    outcome = {}
    for rho in (1e-6, 1.0):
        state, residuals = run_admm(ring_graph(agents), torch.zeros(agents, samples, agents, dtype=torch.float64),
                                    [local_step(i) for i in range(agents)], rho, 24)
        x = state.x
        disagreement = max((x[i] - x[j]).pow(2).mean().sqrt() for i, j in ring_graph(agents).edges.tolist())
        outcome[rho] = (float(disagreement), float(x.abs().mean()))
    assert 0 < max(kls) <= 1.5 * delta
    assert outcome[1.0][0] < 0.5 * outcome[1e-6][0]
    assert outcome[1.0][1] > 0.5 * outcome[1e-6][1]


def test_nodes_holding_only_their_own_edge_state_reproduce_the_rounds_bit_for_bit():
    """The decentralised reading: node q keeps its own copy of (z_e, lambda_e) for its edges, computes
    its target from them with ``node_target``, and per round only the two new local variables cross
    the edge; both ends apply ``edge_update``. Same iterates as ``run_admm``, bit for bit."""
    graph = graph_from_edges(5, [(0, 1), (1, 2), (2, 3), (3, 4), (0, 4), (1, 3)])
    weights, centres = quadratic_problem(5, size=16, seed=4)
    updates = quadratic_local_updates(weights, centres)
    rho, rounds = 1.5, 40
    central, _ = run_admm(graph, torch.zeros_like(centres), updates, rho, rounds, order="random",
                          generator=torch.Generator().manual_seed(9))
    copies = [{e: (torch.zeros(16, dtype=torch.float64), torch.zeros(16, dtype=torch.float64))
               for e, _ in graph.incident(q)} for q in range(5)]
    x = [torch.zeros(16, dtype=torch.float64) for _ in range(5)]
    crossed = []
    for edge in edge_schedule(graph, rounds, "random", torch.Generator().manual_seed(9)).tolist():
        i, j = graph.edges[edge].tolist()
        for q in (i, j):
            mine = graph.incident(q)
            z = torch.stack([copies[q][e][0] for e, _ in mine])
            lam = torch.stack([copies[q][e][1] for e, _ in mine])
            signs = torch.tensor([float(s) for _, s in mine])
            x[q] = updates[q](node_target(z, lam, signs, rho), rho * len(mine))
        crossed.append((x[i].shape, x[j].shape))  # i sends x_i to j and j sends x_j to i: nothing else
        for q in (i, j):
            copies[q][edge] = edge_update(x[i], x[j], copies[q][edge][1], rho)
    assert torch.equal(torch.stack(x), central.x)
    for e, (i, j) in enumerate(graph.edges.tolist()):
        assert torch.equal(copies[i][e][0], copies[j][e][0]) and torch.equal(copies[i][e][1], copies[j][e][1])
        assert torch.equal(copies[i][e][0], central.z[e]) and torch.equal(copies[i][e][1], central.multipliers[e])
    assert len(crossed) == rounds


@pytest.mark.parametrize("order", ["round_robin", "matchings", "random"])
def test_steps_of_disjoint_rounds_equal_the_rounds_one_by_one(order):
    graph = ring_graph(6)
    weights, centres = quadratic_problem(6, size=16, seed=3)
    updates = quadratic_local_updates(weights, centres)
    schedule = edge_schedule(graph, 40, order, torch.Generator().manual_seed(5))
    steps = group_rounds(graph, schedule)
    assert torch.equal(torch.cat(steps), schedule)
    if order == "matchings":
        assert [len(s) for s in steps] == [3] * 13 + [1]  # even edges, odd edges, ...
    state = init_admm(graph, torch.zeros_like(centres))
    for step in steps:
        admm_step(state, graph, step, lambda nodes, targets, penalties: torch.stack(
            [updates[q](targets[k], float(penalties[k])) for k, q in enumerate(nodes)]), 1.0)
    reference = init_admm(graph, torch.zeros_like(centres))
    for edge in schedule.tolist():
        admm_round(reference, graph, edge, updates, 1.0)
    assert state.rounds == reference.rounds == 40
    for a, b in ((state.x, reference.x), (state.z, reference.z), (state.multipliers, reference.multipliers)):
        assert torch.equal(a, b)


def test_admm_step_refuses_edges_that_share_a_node():
    graph = ring_graph(4)
    state = init_admm(graph, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="share a node"):
        admm_step(state, graph, torch.tensor([0, 1]), lambda nodes, t, p: t, 1.0)
