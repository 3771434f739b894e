"""Action heads as pure functions: masked Categorical and diagonal Gaussian.

Every function works on any leading shape ``(...)``, typically ``(B, N)`` when acting and
``(M, N)`` on a minibatch. Sampling takes an explicit ``torch.Generator`` so that a training
run's randomness is one generator that is saved in checkpoints (resume is bitwise exact).
Categorical sampling uses the Gumbel-max trick (Gumbel 1954; Maddison et al. 2014), which is one
batched ``argmax`` and needs no ``torch.distributions`` objects on the hot path.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Logit given to illegal actions: exp(MASKED) == 0 in float32, and it stays finite so that
# probabilities * log-probabilities are 0, not NaN.
MASKED = -1e9


def mask_logits(logits: Tensor, mask: Tensor | None) -> Tensor:
    """Logits ``(..., n)`` with illegal actions (``mask`` ``(..., n)`` bool, False = illegal) at ``MASKED``.

    A row with no legal action is left unmasked (its agent is absent and its loss is masked out).
    """
    if mask is None:
        return logits
    if mask.shape != logits.shape:
        raise ValueError(f"action mask has shape {tuple(mask.shape)}, expected {tuple(logits.shape)} (..., n)")
    usable = mask | ~mask.any(-1, keepdim=True)
    return logits.masked_fill(~usable, MASKED)


def categorical_sample(logits: Tensor, generator: torch.Generator | None = None, deterministic: bool = False) -> Tensor:
    """Sample ``(...)`` int64 actions from logits ``(...,n)`` (Gumbel-max); ``deterministic`` takes the argmax."""
    if deterministic:
        return logits.argmax(-1)
    return gumbel_argmax(logits, torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype))


def gumbel_argmax(logits: Tensor, uniform: Tensor) -> Tensor:
    """The Gumbel-max sample ``(...)`` of logits ``(..., n)`` given its uniform draws ``(..., n)`` in ``[0, 1)``.

    ``categorical_sample`` draws ``uniform`` itself; a caller that draws it elsewhere (one generator
    for agents in different processes) gets the same action from the same numbers."""
    gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1.0 - 1e-7)))
    return (logits + gumbel).argmax(-1)


def categorical_log_prob(logits: Tensor, actions: Tensor) -> Tensor:
    """``log pi(a)``: logits ``(..., n)``, actions ``(...)`` int64 -> ``(...)``."""
    logp = torch.log_softmax(logits, -1)
    return logp.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)


def categorical_entropy(logits: Tensor) -> Tensor:
    """Entropy ``(...)`` of the categorical with logits ``(..., n)`` (masked logits contribute 0)."""
    logp = torch.log_softmax(logits, -1)
    return -(logp.exp() * logp).sum(-1)


def categorical_log_prob_entropy(logits: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
    """``categorical_log_prob`` and ``categorical_entropy`` from one ``log_softmax`` (the PPO update's pair)."""
    logp = torch.log_softmax(logits, -1)
    return logp.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1), -(logp.exp() * logp).sum(-1)


def gaussian_sample(mean: Tensor, log_std: Tensor, generator: torch.Generator | None = None, deterministic: bool = False) -> Tensor:
    """Sample ``(..., d)`` from ``N(mean, exp(log_std)^2)`` (``log_std`` broadcasts, e.g. ``(d,)``)."""
    if deterministic:
        return mean.clone()
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + eps * log_std.exp()


def gaussian_log_prob(mean: Tensor, log_std: Tensor, x: Tensor) -> Tensor:
    """Log density ``(...)`` of ``x`` ``(..., d)`` under the diagonal Gaussian, summed over ``d``."""
    z = (x - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2.0 * math.pi)).sum(-1)


def gaussian_entropy(log_std: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """Entropy of the diagonal Gaussian, summed over ``d``, expanded to ``shape`` (the leading dims)."""
    h = (log_std + 0.5 * (1.0 + math.log(2.0 * math.pi))).sum(-1)
    return h.expand(shape)


# ---------------------------------------------------------------------- Box actions
def box_bounds(low: tuple[float, ...] | list[float], high: tuple[float, ...] | list[float]) -> tuple[Tensor, Tensor, Tensor]:
    """A Box's bounds as ``(low, high, bounded)`` tensors ``(d,)`` for ``unit_to_box``.

    Dimensions with an infinite bound are marked unbounded and get ``[-1, 1]`` placeholders (their
    actions pass through ``unit_to_box`` unchanged).
    """
    lo, hi = torch.tensor(low, dtype=torch.float32), torch.tensor(high, dtype=torch.float32)
    if lo.shape != hi.shape or lo.dim() != 1:
        raise ValueError(f"Box bounds must be two vectors of one length, got low {tuple(lo.shape)} and high {tuple(hi.shape)}")
    bounded = torch.isfinite(lo) & torch.isfinite(hi)
    return torch.where(bounded, lo, torch.full_like(lo, -1.0)), torch.where(bounded, hi, torch.full_like(hi, 1.0)), bounded


def unit_to_box(raw: Tensor, low: Tensor, high: Tensor, bounded: Tensor) -> Tensor:
    """Actions ``(..., d)`` in ``[-1, 1]`` units -> env actions inside ``[low, high]``.

    ``raw`` is clipped to ``[-1, 1]`` and mapped affinely onto the Box (the Gaussian policies of PPO
    and the MS-MARL family sample in ``[-1, 1]`` units; their log-probabilities are those of the
    unclipped sample). Unbounded dimensions (``bounded`` False, from ``box_bounds``) pass through.
    """
    scaled = low + (raw.clamp(-1.0, 1.0) + 1.0) * 0.5 * (high - low)
    return torch.where(bounded, scaled, raw)
