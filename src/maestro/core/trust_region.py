"""Trust-region maths for TRPO and MATRPO: flat views, Fisher-vector products, conjugate gradient,
the step scaling and the backtracking line search, as pure functions.

TRPO is Schulman et al. 2015, "Trust Region Policy Optimization" (arXiv 1502.05477): maximise the
surrogate ``L(theta)`` subject to the mean KL ``D(theta_old || theta) <= delta``. With the linear model
``L ~ g^T s`` and the quadratic model ``D ~ 0.5 s^T F s`` (``F`` the Hessian of the mean KL at
``theta_old``, i.e. the Fisher information matrix, Appendix C of the paper) the step is
``s = sqrt(2 delta / (d^T F d)) d`` with ``d = F^{-1} g`` found by conjugate gradient from
Fisher-vector products alone (Appendix C), then a backtracking line search on the true surrogate
and KL, which keeps the first fraction of the step that improves the surrogate and meets the KL
bound.

MATRPO (Li & He, arXiv 2010.07916, Sections IV-C and V-B) runs one such step per agent and per ADMM
round on the agent's augmented Lagrangian instead of the plain surrogate: hence ``trpo_step`` takes
any scalar ``loss_fn`` to *minimise* (``-surrogate`` for TRPO), not the surrogate itself.

Conventions: ``P`` is the number of scalar parameters (the length of the flat vector); a ``loss_fn`` or
``kl_fn`` is a closure of no argument that evaluates the current parameters on data it has captured
(the whole batch ``T*B`` or, for the Fisher product, a subsample of it). ``kl_fn`` must compute the
mean ``KL(old || current)`` with the *old* distribution detached, so that at ``theta = theta_old``
its value and gradient are 0 and its Hessian is the Fisher matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor

ParamsLike = Iterable[Tensor]


def _as_list(params: ParamsLike) -> list[Tensor]:
    out = list(params)
    if not out:
        raise ValueError("trust_region: got an empty parameter list, expected at least one tensor")
    return out


def num_params(params: ParamsLike) -> int:
    """``P``, the total number of scalars in ``params``."""
    return sum(p.numel() for p in _as_list(params))


def flat_params(params: ParamsLike) -> Tensor:
    """The parameters concatenated into one detached vector ``(P,)`` (a copy, in the parameters' order)."""
    return torch.cat([p.detach().reshape(-1) for p in _as_list(params)])


def set_flat_params(params: ParamsLike, flat: Tensor) -> None:
    """Write ``flat`` ``(P,)`` back into ``params`` in place (no autograd history), inverse of ``flat_params``."""
    plist = _as_list(params)
    total = sum(p.numel() for p in plist)
    if flat.dim() != 1 or flat.numel() != total:
        raise ValueError(f"set_flat_params: flat vector has shape {tuple(flat.shape)}, expected ({total},)")
    offset = 0
    with torch.no_grad():
        for p in plist:
            n = p.numel()
            p.copy_(flat[offset : offset + n].view_as(p))
            offset += n


def flat_grad(
    output: Tensor, params: ParamsLike, *, retain_graph: bool | None = None, create_graph: bool = False
) -> Tensor:
    """Gradient of the scalar ``output`` with respect to ``params``, flattened to ``(P,)``.

    Parameters the output does not depend on get zeros (not an error), so a head that is unused in
    one loss still has its place in the vector.
    """
    plist = _as_list(params)
    if output.numel() != 1:
        raise ValueError(f"flat_grad: output has shape {tuple(output.shape)}, expected a scalar")
    grads = torch.autograd.grad(
        output, plist, retain_graph=retain_graph, create_graph=create_graph, allow_unused=True
    )
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, plist)])


def make_fisher_vector_product(
    kl_fn: Callable[[], Tensor], params: ParamsLike, damping: float = 0.0
) -> Callable[[Tensor], Tensor]:
    """A function ``v (P,) -> (F + damping I) v (P,)``, ``F`` the Hessian of ``kl_fn()`` at the current parameters.

    The KL and its gradient graph are built once, here; each product is then one backward pass
    (Pearlmutter 1994, "Fast exact multiplication by the Hessian"), so conjugate gradient's ``k``
    products cost ``k`` backwards, not ``2k`` forwards and backwards. To use a subsample of the batch
    (the TRPO paper uses a 10 % subsample; the MATRPO authors' code every 5th sample), give a ``kl_fn`` that
    evaluates the subsample. ``damping`` (``lambda`` in ``F + lambda I``) keeps the system positive
    definite when ``F`` is singular (it always is for over-parameterised networks).

    Args:
        kl_fn: closure returning the scalar mean ``KL(old.detach() || current)``.
        params: the policy's parameters (the order fixes the layout of ``v``).
        damping: non-negative damping added to the diagonal.
    """
    if damping < 0 or not math.isfinite(damping):
        raise ValueError(f"make_fisher_vector_product: damping = {damping}, expected a finite value >= 0")
    plist = _as_list(params)
    total = sum(p.numel() for p in plist)
    kl = kl_fn()
    if kl.numel() != 1:
        raise ValueError(f"make_fisher_vector_product: kl_fn returned shape {tuple(kl.shape)}, expected a scalar")
    grads = torch.autograd.grad(kl, plist, create_graph=True, allow_unused=True)
    # only parameters whose KL gradient depends on them take part in the second backward
    used = [k for k, g in enumerate(grads) if g is not None and g.requires_grad]
    sizes = [p.numel() for p in plist]

    def fvp(vector: Tensor) -> Tensor:
        if vector.shape != (total,):
            raise ValueError(f"fisher_vector_product: vector has shape {tuple(vector.shape)}, expected ({total},)")
        if not used:
            return damping * vector
        pieces = torch.split(vector, sizes)
        grad_dot_v = sum((grads[k] * pieces[k].view_as(grads[k])).sum() for k in used)
        hvps = torch.autograd.grad(grad_dot_v, [plist[k] for k in used], retain_graph=True, allow_unused=True)
        by_index = {k: h for k, h in zip(used, hvps) if h is not None}
        flat = torch.cat(
            [by_index[k].reshape(-1) if k in by_index else torch.zeros_like(pieces[k]) for k in range(len(plist))]
        )
        return flat.detach() + damping * vector

    return fvp


def fisher_vector_product(
    kl_fn: Callable[[], Tensor], params: ParamsLike, vector: Tensor, damping: float = 0.0
) -> Tensor:
    """``(F + damping I) v`` ``(P,)`` for one vector ``v`` ``(P,)``; see ``make_fisher_vector_product``."""
    return make_fisher_vector_product(kl_fn, params, damping)(vector)


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    max_iterations: int = 10,
    residual_tol: float = 1e-10,
) -> Tensor:
    """Approximate solution ``x`` ``(P,)`` of ``A x = b`` for a symmetric positive-definite ``A`` given as ``matvec``.

    Hestenes & Stiefel 1952 (as in Nocedal & Wright, "Numerical Optimization", Algorithm 5.2), from
    ``x_0 = 0``. Stops after ``max_iterations`` products, or when the squared residual norm
    ``r^T r`` falls below ``residual_tol``, or when a search direction has non-positive curvature
    ``p^T A p <= 0`` (``A`` is then not positive definite along ``p``: the iterate so far is returned,
    which for ``x_0 = 0`` and a first such direction is the zero vector). The one-system case of
    ``batched_conjugate_gradient``.

    Args:
        matvec: ``v (P,) -> A v (P,)``.
        b: right-hand side ``(P,)``.
        max_iterations: cap on the number of products (TRPO uses 10).
        residual_tol: tolerance on ``r^T r``.
    """
    if b.dim() != 1:
        raise ValueError(f"conjugate_gradient: b has shape {tuple(b.shape)}, expected (P,)")

    def rows_matvec(v: Tensor) -> Tensor:
        out = matvec(v[0])
        if out.shape != b.shape:
            raise ValueError(f"conjugate_gradient: matvec returned shape {tuple(out.shape)}, expected {tuple(b.shape)}")
        return out[None]

    return batched_conjugate_gradient(rows_matvec, b[None], max_iterations, residual_tol)[0]


def batched_conjugate_gradient(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    max_iterations: int = 10,
    residual_tol: float = 1e-10,
    x0: Tensor | None = None,
) -> Tensor:
    """``K`` independent conjugate-gradient solves ``A_k x_k = b_k`` at once, ``x`` ``(K, P)``.

    ``matvec`` maps ``(K, P) -> (K, P)`` row by row (block-diagonal ``A``: e.g. the Fisher products of
    ``K`` agents' separate policies, ``make_batched_fisher_vector_product``). Every row runs its own
    recursion (its own step lengths ``alpha_k``, ``beta_k``) and stops on its own, exactly as
    ``conjugate_gradient`` on that row alone would: when ``r_k^T r_k <= residual_tol`` or on a
    direction of non-positive curvature; a stopped row is fed zeros and no longer changes. The loop
    ends after ``max_iterations`` products or when every row has stopped.

    Args:
        matvec: ``V (K, P) -> (A_k v_k)_k (K, P)``.
        b: right-hand sides ``(K, P)``.
        max_iterations: cap on the number of products.
        residual_tol: tolerance on each row's ``r^T r``.
        x0: warm start ``(K, P)`` (default zeros); ``r_0 = b - A x0`` costs one more product.
    """
    if b.dim() != 2:
        raise ValueError(f"batched_conjugate_gradient: b has shape {tuple(b.shape)}, expected (K, P)")
    if max_iterations < 1:
        raise ValueError(f"conjugate_gradient: max_iterations = {max_iterations}, expected >= 1")

    def product(v: Tensor) -> Tensor:
        out = matvec(v)
        if out.shape != b.shape:
            raise ValueError(f"batched_conjugate_gradient: matvec returned shape {tuple(out.shape)}, expected {tuple(b.shape)}")
        return out

    if x0 is None:
        x = torch.zeros_like(b)
        r = b.clone()
    else:
        if x0.shape != b.shape:
            raise ValueError(f"batched_conjugate_gradient: x0 has shape {tuple(x0.shape)}, expected {tuple(b.shape)}")
        x = x0.clone()
        r = b - product(x)
    p = r.clone()
    rr = (r * r).sum(-1)
    running = rr > residual_tol
    for _ in range(max_iterations):
        if not bool(running.any()):
            break
        ap = product(p * running[:, None])
        curvature = (p * ap).sum(-1)
        running = running & (curvature > 0)
        alpha = torch.where(running, rr / torch.where(running, curvature, torch.ones_like(curvature)), torch.zeros_like(rr))
        x = x + alpha[:, None] * p
        r = r - alpha[:, None] * ap
        rr_new = (r * r).sum(-1)
        beta = torch.where(running, rr_new / torch.where(running, rr, torch.ones_like(rr)), torch.zeros_like(rr))
        p = r + beta[:, None] * p
        rr = torch.where(running, rr_new, rr)
        running = running & (rr > residual_tol)
    return x


def step_scale(direction: Tensor, f_direction: Tensor, max_kl: float) -> Tensor:
    """``beta = sqrt(2 delta / (d^T F d))``, so that ``0.5 (beta d)^T F (beta d) = delta`` (TRPO Appendix C).

    Args:
        direction: search direction ``d`` ``(P,)``.
        f_direction: ``F d`` ``(P,)`` (damped or not, as the caller's model of the KL).
        max_kl: ``delta > 0``.

    Returns a scalar tensor; ``0`` when ``d^T F d`` is not positive and finite (no step can be scaled).
    """
    if direction.dim() != 1 or f_direction.shape != direction.shape:
        raise ValueError(
            f"step_scale: direction {tuple(direction.shape)} and F direction {tuple(f_direction.shape)} "
            "must both be (P,)"
        )
    return batched_step_scale(direction[None], f_direction[None], max_kl)[0]


def batched_step_scale(direction: Tensor, f_direction: Tensor, max_kl: float | Tensor) -> Tensor:
    """``beta_k = sqrt(2 delta_k / (d_k^T F_k d_k))`` for ``K`` rows, ``(K,)``; 0 where ``d_k^T F_k d_k`` is
    not positive and finite.

    Args:
        direction: ``(K, P)``.
        f_direction: ``(K, P)``, row ``k`` is ``F_k d_k``.
        max_kl: ``delta > 0``, one for all rows or ``(K,)``.
    """
    if direction.dim() != 2 or f_direction.shape != direction.shape:
        raise ValueError(
            f"batched_step_scale: direction {tuple(direction.shape)} and F direction {tuple(f_direction.shape)} "
            "must both be (K, P)"
        )
    delta = torch.as_tensor(max_kl, dtype=direction.dtype, device=direction.device)
    if not bool((delta > 0).all()) or delta.dim() > 1 or (delta.dim() == 1 and delta.shape[0] != direction.shape[0]):
        raise ValueError(f"step_scale: max_kl = {max_kl}, expected > 0 (a number or one per row)")
    shs = (direction * f_direction).sum(-1)
    ok = torch.isfinite(shs) & (shs > 0)
    return torch.where(ok, torch.sqrt(2.0 * delta / torch.where(ok, shs, torch.ones_like(shs))), torch.zeros_like(shs))


def quadratic_trust_region(curvature: Tensor, b: Tensor, radius2: float, *, iterations: int = 60) -> Tensor:
    """The minimiser of ``-b^T a + 0.5 a^T G a`` over ``|a|^2 <= radius2``, ``G`` symmetric positive semidefinite.

    The trust-region subproblem (Nocedal & Wright 2006, Thm. 4.1) in a small space, as MATRPO's
    subspace step solves its convex local model (Li & He 2020, eqs. 13, 14, 17, 18) in an
    ``H``-orthonormal basis: ``a = (G + mu I)^{-1} b`` with ``mu = 0`` when that point is inside the ball,
    otherwise the ``mu > 0`` that puts it on the boundary (bisection on ``|a(mu)|^2``, which falls with
    ``mu``). ``G = 0`` gives ``a = sqrt(radius2) b / |b|``, the plain trust-region step.

    Args:
        curvature: ``(r, r)`` ``G``, symmetric positive semidefinite (negative eigenvalues from round-off
            are clipped to 0).
        b: ``(r,)`` the linear term.
        radius2: the squared radius (``2 delta`` for a KL bound ``delta`` in an ``H``-orthonormal basis).
        iterations: bisection iterations on ``mu``.

    Returns:
        ``(r,)`` the minimiser; zeros for ``b = 0``.
    """
    r = b.shape[0] if b.dim() == 1 else -1
    if b.dim() != 1 or curvature.shape != (r, r):
        raise ValueError(f"quadratic_trust_region: curvature {tuple(curvature.shape)} and b {tuple(b.shape)}, expected (r, r) and (r,)")
    if not radius2 > 0:
        raise ValueError(f"quadratic_trust_region: radius2 = {radius2}, expected > 0")
    b_norm = b.norm()
    if not bool(b_norm > 0):
        return torch.zeros_like(b)
    eigenvalues, vectors = torch.linalg.eigh(0.5 * (curvature + curvature.T))
    eigenvalues = eigenvalues.clamp_min(0.0)
    c = vectors.T @ b
    if bool(eigenvalues.min() > 1e-12 * eigenvalues.max().clamp_min(1e-30)):
        inside = vectors @ (c / eigenvalues)
        if bool(inside.pow(2).sum() <= radius2):
            return inside
    # bisection on the scalar mu, in float64 on the host: r numbers, so no tensor op (or sync) per iteration
    c2, lam = (c.double().pow(2)).tolist(), eigenvalues.double().tolist()
    low, high = 0.0, float(b_norm) / math.sqrt(radius2)  # |a(high)| <= |b| / high = radius
    for _ in range(iterations):
        mid = 0.5 * (low + high)
        if sum(ck / (lk + mid) ** 2 for ck, lk in zip(c2, lam)) > radius2:
            low = mid
        else:
            high = mid
    return vectors @ (c / (eigenvalues + high))


@dataclass(frozen=True)
class LineSearchResult:
    """What a backtracking line search did.

    Attributes:
        accepted: a step was accepted (else the parameters were restored to where they were).
        step_fraction: fraction of the full step taken (``backtrack_ratio ** k``), 0 when none.
        kl: KL at the final parameters (0 when reverted: they are the old ones).
        improvement: ``loss_before - loss_after`` at the final parameters (>= 0; 0 when reverted).
        loss: the loss at the final parameters.
        tries: number of candidate steps evaluated.
    """

    accepted: bool
    step_fraction: float
    kl: float
    improvement: float
    loss: float
    tries: int


def backtracking_line_search(
    params: ParamsLike,
    full_step: Tensor,
    loss_fn: Callable[[], Tensor],
    kl_fn: Callable[[], Tensor],
    max_kl: float,
    *,
    loss_before: float | Tensor | None = None,
    kl_factor: float = 1.5,
    backtrack_ratio: float = 0.5,
    max_backtracks: int = 10,
) -> LineSearchResult:
    """Try ``theta_0 + f * full_step`` for ``f = 1, r, r^2, ...`` and keep the first acceptable one.

    A candidate is accepted when the loss and the KL are finite, ``KL <= kl_factor * max_kl`` (1.5 in
    OpenAI Baselines' TRPO and in the MATRPO authors' code) and the loss is not larger than
    ``loss_before`` (the surrogate does not get worse). When no candidate is accepted the parameters
    are restored to ``theta_0`` exactly. Runs under ``torch.no_grad``.

    Args:
        params: the parameters, currently at ``theta_0``; left at the accepted point.
        full_step: ``(P,)``, the step at fraction 1.
        loss_fn: closure, scalar loss to minimise at the current parameters.
        kl_fn: closure, scalar mean ``KL(old || current)``.
        max_kl: ``delta``.
        loss_before: the loss at ``theta_0`` if already known (else it is evaluated).
        kl_factor: accept KL up to ``kl_factor * max_kl``.
        backtrack_ratio: ``r`` in ``(0, 1)``.
        max_backtracks: number of candidates tried.
    """
    plist = _as_list(params)
    theta0 = flat_params(plist)
    if full_step.shape != theta0.shape:
        raise ValueError(
            f"backtracking_line_search: full_step has shape {tuple(full_step.shape)}, expected {tuple(theta0.shape)}"
        )
    if not 0.0 < backtrack_ratio < 1.0:
        raise ValueError(f"backtracking_line_search: backtrack_ratio = {backtrack_ratio}, expected in (0, 1)")
    if max_backtracks < 1:
        raise ValueError(f"backtracking_line_search: max_backtracks = {max_backtracks}, expected >= 1")
    if not max_kl > 0 or not kl_factor > 0:
        raise ValueError(f"backtracking_line_search: max_kl = {max_kl}, kl_factor = {kl_factor}, expected both > 0")
    with torch.no_grad():
        before = float(loss_fn() if loss_before is None else loss_before)
        if not math.isfinite(before):
            raise ValueError(f"backtracking_line_search: the loss before the step is {before}, expected finite")
        fraction = 1.0
        for tries in range(1, max_backtracks + 1):
            set_flat_params(plist, theta0 + fraction * full_step)
            loss = float(loss_fn())
            kl = float(kl_fn())
            if math.isfinite(loss) and math.isfinite(kl) and kl <= kl_factor * max_kl and loss <= before:
                return LineSearchResult(True, fraction, kl, before - loss, loss, tries)
            fraction *= backtrack_ratio
        set_flat_params(plist, theta0)
    return LineSearchResult(False, 0.0, 0.0, 0.0, before, max_backtracks)


@dataclass(frozen=True)
class TrpoStepResult:
    """One trust-region step: the line search's outcome plus the model's numbers.

    Attributes:
        line_search: the ``LineSearchResult``.
        expected_improvement: ``-g^T s`` for the full step ``s`` (the linear model's loss decrease).
        grad_norm: ``||g||``.
        step_norm: ``||s||`` of the full step (0 when no step could be formed).
    """

    line_search: LineSearchResult
    expected_improvement: float
    grad_norm: float
    step_norm: float

    @property
    def accepted(self) -> bool:
        return self.line_search.accepted


def trpo_step(
    params: Sequence[Tensor],
    loss_fn: Callable[[], Tensor],
    kl_fn: Callable[[], Tensor],
    max_kl: float,
    *,
    fvp_kl_fn: Callable[[], Tensor] | None = None,
    damping: float = 0.1,
    cg_iterations: int = 10,
    cg_residual_tol: float = 1e-10,
    kl_factor: float = 1.5,
    backtrack_ratio: float = 0.5,
    max_backtracks: int = 10,
) -> TrpoStepResult:
    """One TRPO update of ``params`` in place: gradient, CG on the damped Fisher, scaling, line search.

    ``d = (F + damping I)^{-1} (-g)``, ``s = sqrt(2 delta / d^T (F + damping I) d) d`` and the line
    search of ``backtracking_line_search`` on ``loss_fn``/``kl_fn`` (Schulman et al. 2015, Appendix C).
    Minimises ``loss_fn`` (pass ``-surrogate``). A zero or non-finite gradient, or a direction of
    non-positive curvature, gives a rejected step with the parameters untouched.

    Args:
        params: the parameters, at ``theta_old`` (where ``kl_fn`` is 0).
        loss_fn: closure, scalar loss to minimise (it must depend differentiably on ``params``).
        kl_fn: closure, scalar mean ``KL(old.detach() || current)`` on the whole batch (line search).
        max_kl: ``delta``.
        fvp_kl_fn: closure for the Fisher products, e.g. on a subsample; defaults to ``kl_fn``.
        damping: Fisher damping (0.1 in Schulman's code, 0.01 in the MATRPO authors').
        cg_iterations: conjugate gradient iterations.
        cg_residual_tol: conjugate gradient tolerance on ``r^T r``.
        kl_factor, backtrack_ratio, max_backtracks: see ``backtracking_line_search``.
    """
    plist = _as_list(params)
    loss = loss_fn()
    grad = flat_grad(loss, plist)
    loss_before = float(loss.detach())
    grad_norm = float(grad.norm())
    if not (math.isfinite(grad_norm) and grad_norm > 0 and math.isfinite(loss_before)):
        return TrpoStepResult(LineSearchResult(False, 0.0, 0.0, 0.0, loss_before, 0), 0.0, grad_norm, 0.0)
    fvp = make_fisher_vector_product(fvp_kl_fn or kl_fn, plist, damping)
    direction = conjugate_gradient(fvp, -grad, cg_iterations, cg_residual_tol)
    full_step = step_scale(direction, fvp(direction), max_kl) * direction
    step_norm = float(full_step.norm())
    if not (math.isfinite(step_norm) and step_norm > 0):
        return TrpoStepResult(LineSearchResult(False, 0.0, 0.0, 0.0, loss_before, 0), 0.0, grad_norm, 0.0)
    expected = float(-grad.dot(full_step))
    result = backtracking_line_search(
        plist,
        full_step,
        loss_fn,
        kl_fn,
        max_kl,
        loss_before=loss_before,
        kl_factor=kl_factor,
        backtrack_ratio=backtrack_ratio,
        max_backtracks=max_backtracks,
    )
    return TrpoStepResult(result, expected, grad_norm, step_norm)


# ---------------------------------------------------------------------- K policies at once
# The functions below take the parameters of ``K`` separate policies (agents) as one tensor
# ``theta`` ``(K, P)`` (e.g. ``maestro.nn.stacked.StackedMLP``) and closures of ``theta`` returning one
# value per row ``(K,)``. The rows never mix: the Fisher of the summed per-row KLs is block diagonal,
# every row has its own conjugate-gradient recursion, step scaling and line search, so row ``k``'s
# result is what the one-policy functions above would give for policy ``k`` alone (Li & He, arXiv
# 2010.07916: every agent's step inside its own trust region), computed with batched tensor ops.


def make_batched_fisher_vector_product(
    kl_fn: Callable[[Tensor], Tensor], theta: Tensor, damping: float = 0.0
) -> Callable[[Tensor], Tensor]:
    """A function ``V (K, P) -> (F_k v_k + damping v_k)_k (K, P)``, ``F_k`` the Hessian of row ``k`` of ``kl_fn``.

    The KL gradient graph is built once, at ``theta`` (the old parameters), and each product is one
    backward pass through it (as ``make_fisher_vector_product``). It can be reused for any number of
    solves while the point of linearisation does not change (MATRPO: every ADMM round of an iteration).

    Args:
        kl_fn: ``theta (K, P) -> (K,)`` mean ``KL(old.detach() || current)`` of each row's policy.
        theta: ``(K, P)`` the point (detached; a leaf is made from it).
        damping: non-negative damping.
    """
    if damping < 0 or not math.isfinite(damping):
        raise ValueError(f"make_batched_fisher_vector_product: damping = {damping}, expected a finite value >= 0")
    if theta.dim() != 2:
        raise ValueError(f"make_batched_fisher_vector_product: theta has shape {tuple(theta.shape)}, expected (K, P)")
    leaf = theta.detach().requires_grad_(True)
    kl = kl_fn(leaf)
    if kl.shape != (theta.shape[0],):
        raise ValueError(f"make_batched_fisher_vector_product: kl_fn returned shape {tuple(kl.shape)}, expected ({theta.shape[0]},)")
    (grad,) = torch.autograd.grad(kl.sum(), leaf, create_graph=True)

    def fvp(vector: Tensor) -> Tensor:
        if vector.shape != theta.shape:
            raise ValueError(f"batched fisher_vector_product: vector has shape {tuple(vector.shape)}, expected {tuple(theta.shape)}")
        if not grad.requires_grad:
            return damping * vector
        (hvp,) = torch.autograd.grad((grad * vector).sum(), leaf, retain_graph=True, allow_unused=True)
        return (torch.zeros_like(vector) if hvp is None else hvp.detach()) + damping * vector

    return fvp


Evaluate = Callable[[Tensor, Tensor], "tuple[Tensor, Tensor, Tensor | None]"]
"""``evaluate(theta_rows (k, P), rows (k,) int64) -> (loss (k,), kl (k,), aux (k, ...) or None)`` at the given rows."""


@dataclass(frozen=True)
class BatchedStepResult:
    """Per row, what one trust-region step did (every field ``(K,)`` unless said otherwise).

    Attributes:
        accepted: bool, a candidate was accepted (else the row is back at ``theta_0`` exactly).
        step_fraction: fraction of the full step taken (0 where none).
        kl: KL at the final parameters (0 where reverted).
        improvement: ``loss_before - loss_after`` (0 where reverted).
        loss: the loss at the final parameters.
        expected_improvement: ``-g^T s`` of the full step.
        step_norm: ``||s||`` of the full step.
        tries: candidates evaluated per row (int64).
        aux: the ``aux`` that ``evaluate`` returned at each accepted row's parameters (rows not
            accepted: zeros), or ``None``.
    """

    accepted: Tensor
    step_fraction: Tensor
    kl: Tensor
    improvement: Tensor
    loss: Tensor
    expected_improvement: Tensor
    step_norm: Tensor
    tries: Tensor
    aux: Tensor | None = None


def batched_line_search(
    theta0: Tensor,
    full_step: Tensor,
    evaluate: Evaluate,
    max_kl: float | Tensor,
    loss_before: Tensor,
    *,
    kl_factor: float = 1.5,
    backtrack_ratio: float = 0.5,
    max_backtracks: int = 10,
) -> tuple[Tensor, BatchedStepResult]:
    """``backtracking_line_search`` for ``K`` rows at once: each row keeps its first acceptable fraction.

    Row ``k`` tries ``theta0_k + f full_step_k``, ``f = 1, r, r^2, ...``, and accepts when its loss and KL
    are finite, ``KL <= kl_factor * max_kl`` and the loss is not larger than ``loss_before_k``. Each
    try evaluates only the rows still searching (``evaluate`` gets their index), so the cost is one
    batched evaluation of the pending rows per try. Rows that accept nothing are returned at
    ``theta0`` exactly. Runs under ``torch.no_grad``.

    Returns:
        ``(theta (K, P), result)``; ``result.expected_improvement`` and ``step_norm`` are left 0 (filled
        by ``batched_trust_region_step``).
    """
    if theta0.dim() != 2 or full_step.shape != theta0.shape:
        raise ValueError(f"batched_line_search: theta0 {tuple(theta0.shape)} and full_step {tuple(full_step.shape)} must both be (K, P)")
    K = theta0.shape[0]
    if loss_before.shape != (K,):
        raise ValueError(f"batched_line_search: loss_before has shape {tuple(loss_before.shape)}, expected ({K},)")
    if not 0.0 < backtrack_ratio < 1.0 or max_backtracks < 1 or not kl_factor > 0:
        raise ValueError(
            f"batched_line_search: backtrack_ratio = {backtrack_ratio} (expected in (0, 1)), max_backtracks = "
            f"{max_backtracks} (>= 1), kl_factor = {kl_factor} (> 0)"
        )
    delta = torch.as_tensor(max_kl, dtype=theta0.dtype, device=theta0.device).expand(K)
    device = theta0.device
    theta = theta0.clone()
    accepted = torch.zeros(K, dtype=torch.bool, device=device)
    fraction_taken = torch.zeros(K, dtype=theta0.dtype, device=device)
    kl_taken = torch.zeros(K, dtype=theta0.dtype, device=device)
    loss_taken = loss_before.detach().clone()
    tries = torch.zeros(K, dtype=torch.int64, device=device)
    aux: Tensor | None = None
    fraction = 1.0
    with torch.no_grad():
        for _ in range(max_backtracks):
            rows = (~accepted).nonzero().squeeze(-1)
            if rows.numel() == 0:
                break
            candidate = theta0[rows] + fraction * full_step[rows]
            loss, kl, row_aux = evaluate(candidate, rows)
            if loss.shape != rows.shape or kl.shape != rows.shape:
                raise ValueError(f"batched_line_search: evaluate returned loss {tuple(loss.shape)} and kl {tuple(kl.shape)}, expected ({rows.numel()},)")
            tries[rows] += 1
            ok = torch.isfinite(loss) & torch.isfinite(kl) & (kl <= kl_factor * delta[rows]) & (loss <= loss_before[rows])
            good = rows[ok]
            theta[good] = candidate[ok]
            accepted[good] = True
            fraction_taken[good] = fraction
            kl_taken[good] = kl[ok]
            loss_taken[good] = loss[ok]
            if row_aux is not None:
                if aux is None:
                    aux = torch.zeros((K,) + tuple(row_aux.shape[1:]), dtype=row_aux.dtype, device=row_aux.device)
                aux[good] = row_aux[ok]
            fraction *= backtrack_ratio
    zeros = torch.zeros(K, dtype=theta0.dtype, device=device)
    result = BatchedStepResult(accepted, fraction_taken, kl_taken, loss_before - loss_taken, loss_taken, zeros, zeros, tries, aux)
    return theta, result


def batched_trust_region_step(
    theta0: Tensor,
    grad: Tensor,
    fvp: Callable[[Tensor], Tensor],
    evaluate: Evaluate,
    max_kl: float | Tensor,
    loss_before: Tensor,
    *,
    cg_iterations: int = 10,
    cg_residual_tol: float = 1e-10,
    kl_factor: float = 1.5,
    backtrack_ratio: float = 0.5,
    max_backtracks: int = 10,
) -> tuple[Tensor, BatchedStepResult]:
    """One TRPO step of every row from ``theta0`` given each row's loss gradient and a Fisher product.

    Row by row as ``trpo_step``: ``d_k = (F_k + damping I)^{-1} (-g_k)`` by conjugate gradient (the damping
    is inside ``fvp``), ``s_k = sqrt(2 delta_k / d_k^T (F_k + damping I) d_k) d_k``, then the line search.
    Rows with a zero or non-finite gradient or a degenerate direction take no step (they stay at
    ``theta0``). Splitting the gradient from the step lets a caller reuse one ``fvp`` (built once by
    ``make_batched_fisher_vector_product``) for many steps from the same ``theta0``.

    Args:
        theta0: ``(K, P)`` where every step starts (and where ``fvp`` was built).
        grad: ``(K, P)`` gradient of each row's loss at ``theta0``.
        fvp: ``(K, P) -> (K, P)`` damped Fisher products at ``theta0``.
        evaluate: see ``batched_line_search``.
        max_kl: ``delta`` (a number or ``(K,)``).
        loss_before: ``(K,)`` each row's loss at ``theta0``.
    """
    if grad.shape != theta0.shape or theta0.dim() != 2:
        raise ValueError(f"batched_trust_region_step: theta0 {tuple(theta0.shape)} and grad {tuple(grad.shape)} must both be (K, P)")
    grad = grad.detach()
    usable = torch.isfinite(grad).all(-1) & (grad.abs().amax(-1) > 0) & torch.isfinite(loss_before)
    grad = torch.where(usable[:, None], grad, torch.zeros_like(grad))
    direction = batched_conjugate_gradient(fvp, -grad, cg_iterations, cg_residual_tol)
    full_step = batched_step_scale(direction, fvp(direction), max_kl)[:, None] * direction
    full_step = torch.where(torch.isfinite(full_step).all(-1, keepdim=True), full_step, torch.zeros_like(full_step))
    step_norm = full_step.norm(dim=-1)
    stepping = step_norm > 0
    theta, result = batched_line_search(
        theta0,
        full_step,
        _only_rows(evaluate, stepping),
        max_kl,
        torch.where(stepping, loss_before, torch.full_like(loss_before, -math.inf)),
        kl_factor=kl_factor,
        backtrack_ratio=backtrack_ratio,
        max_backtracks=max_backtracks,
    )
    expected = -(grad * full_step).sum(-1)
    improvement = torch.where(result.accepted, result.improvement, torch.zeros_like(result.improvement))
    loss = torch.where(result.accepted, result.loss, loss_before)
    return theta, BatchedStepResult(
        result.accepted, result.step_fraction, result.kl, improvement, loss, expected, step_norm, result.tries, result.aux
    )


def _only_rows(evaluate: Evaluate, stepping: Tensor) -> Evaluate:
    """``evaluate`` restricted to the rows that have a step; the others report a loss of ``+inf`` (never accepted)."""

    def restricted(theta_rows: Tensor, rows: Tensor) -> "tuple[Tensor, Tensor, Tensor | None]":
        keep = stepping[rows]
        if bool(keep.all()):
            return evaluate(theta_rows, rows)
        loss = torch.full(rows.shape, math.inf, dtype=theta_rows.dtype, device=theta_rows.device)
        kl = torch.zeros(rows.shape, dtype=theta_rows.dtype, device=theta_rows.device)
        aux = None
        if bool(keep.any()):
            part_loss, part_kl, part_aux = evaluate(theta_rows[keep], rows[keep])
            loss[keep], kl[keep] = part_loss, part_kl
            if part_aux is not None:
                aux = torch.zeros((rows.numel(),) + tuple(part_aux.shape[1:]), dtype=part_aux.dtype, device=part_aux.device)
                aux[keep] = part_aux
        return loss, kl, aux

    return restricted
