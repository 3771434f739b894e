"""Pure maths: trust-region parts against naive references (dense KL Hessian, torch.linalg.solve,
a quadratic model where the TRPO step is known in closed form)."""

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from maestro.core.trust_region import (
    backtracking_line_search,
    batched_conjugate_gradient,
    batched_line_search,
    batched_trust_region_step,
    conjugate_gradient,
    fisher_vector_product,
    flat_grad,
    flat_params,
    make_batched_fisher_vector_product,
    make_fisher_vector_product,
    num_params,
    quadratic_trust_region,
    set_flat_params,
    step_scale,
    trpo_step,
)


def categorical_kl(old_logits, logits):
    """Mean over rows of KL(old || new) for categoricals given by logits ``(M, n)``."""
    old_logp = torch.log_softmax(old_logits, -1)
    logp = torch.log_softmax(logits, -1)
    return (old_logp.exp() * (old_logp - logp)).sum(-1).mean()


def tiny_policy(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    obs = torch.randn(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    return net, obs


def dense_kl_hessian(net, obs):
    """The naive reference: Hessian of the mean KL w.r.t. the flat parameters, by autograd.functional."""
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    theta0 = flat_params(net.parameters())
    old_logits = net(obs).detach()

    def kl_of(theta):
        pieces, offset = {}, 0
        for name, shape in zip(names, shapes):
            n = math.prod(shape)
            pieces[name] = theta[offset : offset + n].view(shape)
            offset += n
        return categorical_kl(old_logits, functional_call(net, pieces, (obs,)))

    return torch.autograd.functional.hessian(kl_of, theta0)


def test_flat_views_round_trip_and_flat_grad():
    net, obs = tiny_policy()
    params = list(net.parameters())
    theta = flat_params(params)
    assert theta.shape == (num_params(params),) == (31,)
    set_flat_params(params, theta + 1.0)
    assert torch.equal(flat_params(params), theta + 1.0)
    set_flat_params(params, theta)
    loss = net(obs).pow(2).mean()
    g = flat_grad(loss, params, retain_graph=True)
    loss.backward()
    assert torch.allclose(g, torch.cat([p.grad.reshape(-1) for p in params]))
    # a parameter the output does not use has a zero block, not an error
    unused = nn.Parameter(torch.ones(2, dtype=torch.float64))
    g2 = flat_grad(net(obs).sum(), params + [unused])
    assert g2.shape == (33,) and torch.equal(g2[-2:], torch.zeros(2, dtype=torch.float64))


def test_fisher_vector_product_matches_dense_kl_hessian():
    net, obs = tiny_policy()
    params = list(net.parameters())
    hessian = dense_kl_hessian(net, obs)
    old_logits = net(obs).detach()
    fvp = make_fisher_vector_product(lambda: categorical_kl(old_logits, net(obs)), params, damping=0.1)
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        v = torch.randn(31, dtype=torch.float64, generator=gen)
        assert torch.allclose(fvp(v), hessian @ v + 0.1 * v, atol=1e-10, rtol=1e-8)
    # the Fisher matrix is symmetric positive semi-definite
    assert torch.allclose(hessian, hessian.T, atol=1e-12)
    assert torch.linalg.eigvalsh(hessian).min() > -1e-10


def test_fisher_vector_product_on_a_subsample():
    net, obs = tiny_policy()
    params = list(net.parameters())
    index = torch.arange(0, 20, 5)  # every 5th sample, as the MATRPO authors do
    hessian = dense_kl_hessian(net, obs[index])
    old_logits = net(obs).detach()
    v = torch.randn(31, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    fv = fisher_vector_product(lambda: categorical_kl(old_logits[index], net(obs[index])), params, v, damping=0.0)
    assert torch.allclose(fv, hessian @ v, atol=1e-10, rtol=1e-8)


def test_conjugate_gradient_matches_solve_and_respects_the_cap():
    gen = torch.Generator().manual_seed(0)
    m = torch.randn(20, 20, dtype=torch.float64, generator=gen)
    a = m @ m.T + torch.eye(20, dtype=torch.float64)
    b = torch.randn(20, dtype=torch.float64, generator=gen)
    x = conjugate_gradient(lambda v: a @ v, b, max_iterations=60, residual_tol=1e-20)
    assert torch.allclose(x, torch.linalg.solve(a, b), atol=1e-8, rtol=1e-8)
    # one iteration is one steepest-descent step with exact line search from 0
    x1 = conjugate_gradient(lambda v: a @ v, b, max_iterations=1)
    assert torch.allclose(x1, b.dot(b) / b.dot(a @ b) * b)
    # a zero right-hand side needs no product at all
    calls = []
    x0 = conjugate_gradient(lambda v: calls.append(1) or a @ v, torch.zeros(20, dtype=torch.float64))
    assert not calls and torch.equal(x0, torch.zeros(20, dtype=torch.float64))


def quadratic_problem(seed=0, size=6):
    """Linear loss g^T (theta - theta0) and quadratic 'KL' 0.5 (theta - theta0)^T F (theta - theta0)."""
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(size, size, dtype=torch.float64, generator=gen)
    fisher = m @ m.T + 0.5 * torch.eye(size, dtype=torch.float64)
    g = torch.randn(size, dtype=torch.float64, generator=gen)
    theta = nn.Parameter(torch.randn(size, dtype=torch.float64, generator=gen))
    theta0 = theta.detach().clone()

    def loss_fn():
        return g.dot(theta - theta0)

    def kl_fn():
        d = theta - theta0
        return 0.5 * d.dot(fisher @ d)

    return theta, theta0, fisher, g, loss_fn, kl_fn


def test_trpo_step_reaches_kl_delta_on_a_quadratic():
    theta, theta0, fisher, g, loss_fn, kl_fn = quadratic_problem()
    delta = 0.01
    result = trpo_step([theta], loss_fn, kl_fn, delta, damping=0.0, cg_iterations=50, cg_residual_tol=1e-30)
    assert result.accepted and result.line_search.step_fraction == 1.0
    assert result.line_search.kl == pytest.approx(delta, rel=1e-8)
    natural = torch.linalg.solve(fisher, -g)
    expected_step = math.sqrt(2 * delta / natural.dot(fisher @ natural)) * natural
    assert torch.allclose(theta.detach() - theta0, expected_step, atol=1e-10)
    assert result.line_search.improvement == pytest.approx(result.expected_improvement, rel=1e-8)
    assert result.line_search.improvement > 0


def test_step_scale_formula_and_degenerate_direction():
    d = torch.tensor([1.0, 2.0])
    fd = torch.tensor([2.0, 1.0])  # d^T F d = 4
    assert step_scale(d, fd, 0.02).item() == pytest.approx(math.sqrt(2 * 0.02 / 4))
    assert step_scale(d, -fd, 0.02).item() == 0.0


def test_line_search_backtracks_on_kl_and_reverts_when_every_step_is_worse():
    theta, theta0, fisher, g, loss_fn, kl_fn = quadratic_problem(seed=1)
    delta = 0.01
    natural = torch.linalg.solve(fisher, -g)
    full = math.sqrt(2 * delta / natural.dot(fisher @ natural)) * natural
    # a step 4x too long has KL 16 delta: fractions 1 and 1/2 fail (16, 4 delta), 1/4 is accepted (delta)
    result = backtracking_line_search([theta], 4 * full, loss_fn, kl_fn, delta)
    assert result.accepted and result.step_fraction == 0.25 and result.tries == 3
    assert result.kl == pytest.approx(delta, rel=1e-8)
    # every step uphill: nothing accepted, the parameters are restored exactly
    set_flat_params([theta], theta0)
    result = backtracking_line_search([theta], -full, loss_fn, kl_fn, delta, max_backtracks=5)
    assert not result.accepted and result.step_fraction == 0.0 and result.improvement == 0.0
    assert result.tries == 5
    assert torch.equal(theta.detach(), theta0)


def test_line_search_refuses_non_finite_losses():
    theta, theta0, fisher, g, loss_fn, kl_fn = quadratic_problem(seed=2)
    natural = torch.linalg.solve(fisher, -g)
    full = math.sqrt(2 * 0.01 / natural.dot(fisher @ natural)) * natural

    def nan_when_far():
        d = theta - theta0
        return loss_fn() + (float("nan") if d.norm() > 0.6 * full.norm() else 0.0)

    result = backtracking_line_search([theta], full, nan_when_far, kl_fn, 0.01)
    assert result.accepted and result.step_fraction == 0.5 and math.isfinite(result.loss)


def test_trpo_step_on_a_policy_keeps_the_kl_and_improves_the_surrogate():
    net, obs = tiny_policy(seed=5)
    params = list(net.parameters())
    gen = torch.Generator().manual_seed(6)
    old_logits = net(obs).detach()
    actions = torch.distributions.Categorical(logits=old_logits).sample()
    advantages = torch.randn(20, dtype=torch.float64, generator=gen)
    old_logp = torch.log_softmax(old_logits, -1).gather(-1, actions[:, None]).squeeze(-1)

    def loss_fn():
        logp = torch.log_softmax(net(obs), -1).gather(-1, actions[:, None]).squeeze(-1)
        return -(torch.exp(logp - old_logp) * advantages).mean()

    def kl_fn():
        return categorical_kl(old_logits, net(obs))

    delta = 0.01
    result = trpo_step(params, loss_fn, kl_fn, delta, fvp_kl_fn=lambda: categorical_kl(old_logits[::2], net(obs[::2])))
    assert result.accepted
    assert 0 < result.line_search.kl <= 1.5 * delta
    assert float(kl_fn().detach()) == pytest.approx(result.line_search.kl)
    assert result.line_search.improvement > 0


def test_trpo_step_with_zero_gradient_does_nothing():
    net, obs = tiny_policy()
    params = list(net.parameters())
    before = flat_params(params)
    old_logits = net(obs).detach()
    result = trpo_step(params, lambda: 0.0 * net(obs).sum(), lambda: categorical_kl(old_logits, net(obs)), 0.01)
    assert not result.accepted and result.grad_norm == 0.0
    assert torch.equal(flat_params(params), before)


def test_bad_input_names_expected_and_received_shapes():
    net, obs = tiny_policy()
    params = list(net.parameters())
    with pytest.raises(ValueError, match=r"shape \(30,\), expected \(31,\)"):
        set_flat_params(params, torch.zeros(30, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"shape \(31, 1\), expected \(31,\)"):
        set_flat_params(params, torch.zeros(31, 1, dtype=torch.float64))
    old_logits = net(obs).detach()
    fvp = make_fisher_vector_product(lambda: categorical_kl(old_logits, net(obs)), params, 0.1)
    with pytest.raises(ValueError, match=r"shape \(7,\), expected \(31,\)"):
        fvp(torch.zeros(7, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"returned shape \(3,\), expected \(4,\)"):
        conjugate_gradient(lambda v: v[:3], torch.ones(4))
    with pytest.raises(ValueError, match=r"expected \(P,\)"):
        conjugate_gradient(lambda v: v, torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"full_step has shape \(5,\), expected \(31,\)"):
        backtracking_line_search(params, torch.zeros(5), lambda: torch.zeros(()), lambda: torch.zeros(()), 0.01)
    with pytest.raises(ValueError, match="damping"):
        make_fisher_vector_product(lambda: categorical_kl(old_logits, net(obs)), params, -1.0)
    with pytest.raises(ValueError, match="max_kl"):
        step_scale(torch.ones(2), torch.ones(2), 0.0)
    with pytest.raises(ValueError, match="empty parameter list"):
        flat_params([])


# ---------------------------------------------------------------------- K policies at once


def test_batched_conjugate_gradient_runs_each_row_as_its_own_solve():
    gen = torch.Generator().manual_seed(7)
    mats = []
    for k in range(3):
        m = torch.randn(12, 12, dtype=torch.float64, generator=gen)
        mats.append(m @ m.T + (0.1 + k) * torch.eye(12, dtype=torch.float64))
    a = torch.stack(mats)
    b = torch.randn(3, 12, dtype=torch.float64, generator=gen)
    b[1] = 0.0  # a row that is solved before the first product
    matvec = lambda v: torch.einsum("kij,kj->ki", a, v)  # noqa: E731
    for iterations in (1, 4, 40):
        x = batched_conjugate_gradient(matvec, b, max_iterations=iterations, residual_tol=1e-20)
        for k in range(3):
            alone = conjugate_gradient(lambda v: a[k] @ v, b[k], max_iterations=iterations, residual_tol=1e-20)
            assert torch.allclose(x[k], alone, atol=1e-12, rtol=1e-10)
    assert torch.allclose(x[2], torch.linalg.solve(a[2], b[2]), atol=1e-8)
    # a warm start at the solution needs no more work
    x_warm = batched_conjugate_gradient(matvec, b, max_iterations=1, residual_tol=1e-20, x0=x)
    assert torch.allclose(x_warm, x, atol=1e-8)


def test_batched_fisher_products_keep_rows_apart():
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(2, 3, 4, dtype=torch.float64, generator=gen)  # two linear softmax policies, (K, in, n)
    obs = torch.randn(2, 10, 3, dtype=torch.float64, generator=gen)
    old = torch.log_softmax(torch.einsum("kmi,kin->kmn", obs, w), -1).detach()

    def kl_rows(theta):
        logits = torch.einsum("kmi,kin->kmn", obs, theta.reshape(-1, 3, 4))
        return (old.exp() * (old - torch.log_softmax(logits, -1))).sum(-1).mean(-1)

    fvp = make_batched_fisher_vector_product(kl_rows, w.reshape(2, 12), damping=0.1)
    v = torch.randn(2, 12, dtype=torch.float64, generator=gen)
    out = fvp(v)
    for k in range(2):
        hessian = torch.autograd.functional.hessian(lambda t: kl_rows(torch.stack([t if j == k else w.reshape(2, 12)[j] for j in range(2)]))[k], w.reshape(2, 12)[k])
        assert torch.allclose(out[k], hessian @ v[k] + 0.1 * v[k], atol=1e-10)
    assert torch.allclose(fvp(v * torch.tensor([[1.0], [0.0]], dtype=torch.float64))[1], torch.zeros(12, dtype=torch.float64))


def test_batched_trust_region_step_equals_trpo_step_row_by_row():
    problems = [quadratic_problem(seed=s) for s in (10, 11, 12)]
    deltas = torch.tensor([0.01, 0.02, 0.005], dtype=torch.float64)
    theta0 = torch.stack([p[1] for p in problems])
    grads = torch.stack([p[3] for p in problems])
    grads[2] = 0.0  # no gradient: no step
    fishers = torch.stack([p[2] for p in problems])

    def fvp(v):
        return torch.einsum("kij,kj->ki", fishers, v)

    def evaluate(theta, rows):
        d = theta - theta0[rows]
        loss = (grads[rows] * d).sum(-1)
        kl = 0.5 * torch.einsum("ki,kij,kj->k", d, fishers[rows], d)
        return loss, kl, 10.0 * d

    theta, result = batched_trust_region_step(
        theta0, grads, fvp, evaluate, deltas, torch.zeros(3, dtype=torch.float64), cg_iterations=50, cg_residual_tol=1e-30
    )
    for k in range(2):
        param, start, _, _, loss_fn, kl_fn = problems[k]
        alone = trpo_step([param], loss_fn, kl_fn, float(deltas[k]), damping=0.0, cg_iterations=50, cg_residual_tol=1e-30)
        assert torch.allclose(theta[k], param.detach(), atol=1e-10)
        assert float(result.kl[k]) == pytest.approx(alone.line_search.kl, rel=1e-8)
        assert float(result.improvement[k]) == pytest.approx(alone.line_search.improvement, rel=1e-8)
        assert result.accepted[k] and float(result.step_fraction[k]) == 1.0
        assert torch.allclose(result.aux[k], 10.0 * (theta[k] - theta0[k]))
    assert not result.accepted[2] and torch.equal(theta[2], theta0[2]) and float(result.step_norm[2]) == 0.0
    assert torch.equal(result.aux[2], torch.zeros(6, dtype=torch.float64))


def test_batched_line_search_backtracks_each_row_on_its_own():
    _, theta0, fisher, g, _, _ = quadratic_problem(seed=1)
    natural = torch.linalg.solve(fisher, -g)
    full = math.sqrt(2 * 0.01 / natural.dot(fisher @ natural)) * natural
    calls = []

    def evaluate(theta, rows):
        calls.append(rows.tolist())
        d = theta - theta0
        return (g * d).sum(-1), 0.5 * torch.einsum("ki,ij,kj->k", d, fisher, d), None

    # row 0 exact (accepted at once), row 1 4x too long (fractions 1, 1/2 fail), row 2 uphill (never)
    steps = torch.stack([full, 4 * full, -full])
    theta, result = batched_line_search(theta0.expand(3, -1), steps, evaluate, 0.01, torch.zeros(3, dtype=torch.float64), max_backtracks=4)
    assert result.accepted.tolist() == [True, True, False]
    assert result.step_fraction.tolist() == [1.0, 0.25, 0.0]
    assert result.tries.tolist() == [1, 3, 4]
    assert calls == [[0, 1, 2], [1, 2], [1, 2], [2]]
    assert torch.equal(theta[2], theta0) and torch.allclose(theta[1], theta0 + full)


def _brute_force_trust_region(G, b, radius2, n=200_000, seed=0):
    """The best of many points of the ball (and of its boundary) for -b^T a + 0.5 a^T G a."""
    gen = torch.Generator().manual_seed(seed)
    r = b.shape[0]
    directions = torch.randn(n, r, generator=gen, dtype=torch.float64)
    directions = directions / directions.norm(dim=1, keepdim=True)
    radii = math.sqrt(radius2) * torch.rand(n, 1, generator=gen, dtype=torch.float64).pow(1.0 / r)
    points = torch.cat([directions * radii, directions * math.sqrt(radius2)])
    values = -(points @ b) + 0.5 * ((points @ G) * points).sum(1)
    return float(values.min())


@pytest.mark.parametrize("case", ["interior", "boundary", "singular", "zero_curvature"])
def test_quadratic_trust_region_meets_kkt_and_beats_sampled_points(case):
    gen = torch.Generator().manual_seed(3)
    r, radius2 = 3, 0.5
    B = torch.randn(r, r, generator=gen, dtype=torch.float64)
    b = torch.randn(r, generator=gen, dtype=torch.float64)
    G = {
        "interior": 20.0 * (B @ B.T + torch.eye(r, dtype=torch.float64)),  # Newton point well inside
        "boundary": 0.1 * (B @ B.T),
        "singular": torch.outer(B[0], B[0]),  # rank 1: b has a part in the null space, the minimiser is on the boundary
        "zero_curvature": torch.zeros(r, r, dtype=torch.float64),
    }[case]
    a = quadratic_trust_region(G, b, radius2)
    norm2 = float(a.pow(2).sum())
    assert norm2 <= radius2 * (1 + 1e-9)
    if case == "interior":
        assert torch.allclose(a, torch.linalg.solve(G, b)) and norm2 < radius2
    else:  # on the boundary, with (G + mu I) a = b for one mu >= 0 (KKT)
        assert norm2 == pytest.approx(radius2, rel=1e-6)
        mu = (b - G @ a) / a
        assert torch.allclose(mu, mu.mean().expand(r), rtol=1e-5, atol=1e-8) and float(mu.mean()) >= 0
    if case == "zero_curvature":
        assert torch.allclose(a, math.sqrt(radius2) * b / b.norm())
    value = float(-(a @ b) + 0.5 * a @ G @ a)
    assert value <= _brute_force_trust_region(G, b, radius2) + 1e-9


def test_quadratic_trust_region_edge_cases_and_bad_input():
    assert torch.equal(quadratic_trust_region(torch.eye(2), torch.zeros(2), 1.0), torch.zeros(2))
    with pytest.raises(ValueError, match=r"curvature \(2, 3\) and b \(2,\)"):
        quadratic_trust_region(torch.zeros(2, 3), torch.ones(2), 1.0)
    with pytest.raises(ValueError, match="radius2 = 0"):
        quadratic_trust_region(torch.eye(2), torch.ones(2), 0.0)
