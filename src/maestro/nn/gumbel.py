"""Gumbel-softmax (concrete) samples with the straight-through estimator, as pure functions.

Jang, Gu, Poole 2017 ("Categorical Reparameterization with Gumbel-Softmax", arXiv 1611.01144) and
Maddison, Mnih, Teh 2017 (arXiv 1611.00712). MADDPG (Lowe et al. 2017, arXiv 1706.02275, Sec. 4:
"we use the Gumbel-Softmax estimator" for discrete communication/actions) differentiates the
critic through an actor's discrete action this way.

For logits ``z`` ``(..., n)`` and i.i.d. Gumbel noise ``g = -log(-log u)``:

* soft sample ``y = softmax((z + g) / t)``;
* hard (straight-through) sample ``y_hard = one_hot(argmax(z + g))`` in the forward pass, with the
  gradient of the soft sample in the backward pass: ``y_hard - y.detach() + y``.

The argmax of ``z + g`` is an exact sample of ``Categorical(softmax(z))`` (the Gumbel-max trick), so
the hard forward value is a real action the env can take.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gumbel_noise(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None = None, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """I.i.d. standard Gumbel noise ``-log(-log u)`` of ``shape`` (``u`` clamped away from 0 and 1)."""
    u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
    return -torch.log(-torch.log(u.clamp_(1e-20, 1.0 - 1e-7)))


def gumbel_softmax(
    logits: Tensor,
    temperature: float = 1.0,
    hard: bool = True,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    """A Gumbel-softmax sample ``(..., n)`` from ``logits`` ``(..., n)``.

    Args:
        logits: unnormalised log-probabilities.
        temperature: softmax temperature ``t > 0`` of the relaxation.
        hard: return the straight-through one-hot sample (forward one-hot, backward the soft
            sample's gradient); else the soft sample.
        generator: source of the Gumbel noise (ignored when ``noise`` is given).
        noise: explicit Gumbel noise of the logits' shape (tests; reproducing a sample).
    """
    if temperature <= 0:
        raise ValueError(f"gumbel_softmax temperature must be > 0, got {temperature}")
    g = gumbel_noise(logits.shape, generator, logits.device, logits.dtype) if noise is None else noise
    if g.shape != logits.shape:
        raise ValueError(f"gumbel noise has shape {tuple(g.shape)}, expected {tuple(logits.shape)}")
    soft = torch.softmax((logits + g) / temperature, dim=-1)
    if not hard:
        return soft
    index = (logits + g).argmax(-1)
    one_hot = F.one_hot(index, logits.shape[-1]).to(soft.dtype)
    return one_hot - soft.detach() + soft


def one_hot_sample(logits: Tensor, generator: torch.Generator | None = None, deterministic: bool = False) -> Tensor:
    """A one-hot sample ``(..., n)`` (float, no gradient) of ``Categorical(softmax(logits))``; ``deterministic`` takes the argmax."""
    z = logits if deterministic else logits + gumbel_noise(logits.shape, generator, logits.device, logits.dtype)
    return F.one_hot(z.argmax(-1), logits.shape[-1]).to(logits.dtype)
