"""Shared pieces of the grid worlds: per-copy random streams and a few tensor helpers.

Why per-copy streams. ``check_env`` replays each copy of a batched env alone in a ``num_envs=1``
env from its snapshot and requires the same trajectory. The grid worlds draw random numbers on
every step (cars entering the traffic junction, the combat bot's moves), so those draws cannot
come from one generator shared by the batch (a batch of 4 consumes it differently from a batch
of 1). Instead each copy carries a 32-bit ``key`` (drawn from the env's ``torch.Generator`` when
the copy is reset, so a seed still fixes everything) and a ``counter`` (advanced by every draw);
the numbers of a draw are a hash of (key, counter, index). Both tensors are part of the
simulator state, so ``get_state``/``set_state`` carry the streams with the world.

The hash is Chris Wellons' ``lowbias32`` integer finaliser, computed in int64 with 16-bit limbs
so that no product overflows (the result is identical on CPU and CUDA).
"""

from __future__ import annotations

import torch
from torch import Tensor

_M32 = 0xFFFFFFFF


def _mul32(x: Tensor, c: int) -> Tensor:
    """``(x * c) mod 2**32`` for int64 ``x`` in ``[0, 2**32)`` without int64 overflow."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _M32


def hash32(x: Tensor) -> Tensor:
    """A well-mixed 32-bit hash of the low 32 bits of an int64 tensor (same shape, in ``[0, 2**32)``)."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def new_keys(n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """``n`` fresh stream keys (int64 in ``[0, 2**32)``) drawn from ``generator``."""
    return torch.randint(0, 2**32, (n,), generator=generator, device=device, dtype=torch.long)


def stream_uniform(key: Tensor, counter: Tensor, n: int) -> Tensor:
    """Uniform numbers in ``[0, 1)`` of shape ``(B, n)`` from per-copy streams.

    Args:
        key: ``(B,)`` int64 stream keys.
        counter: ``(B,)`` int64 draw counters; the caller advances them by one after the draw.
        n: numbers per copy.

    Returns:
        ``(B, n)`` float32 with 24 random bits each; copy ``b`` depends only on ``key[b]``,
        ``counter[b]`` and the column index.
    """
    seed = hash32(key ^ _mul32(counter & _M32, 0x9E3779B9))
    j = torch.arange(1, n + 1, device=key.device, dtype=torch.long)
    h = hash32(hash32(seed[:, None] ^ _mul32(j, 0x85EBCA6B)[None, :]) + seed[:, None])
    return (h >> 8).to(torch.float32) * (1.0 / (1 << 24))


def ramp(progress: float, start: float, end: float) -> float:
    """A curriculum's fraction done at training fraction ``progress``: 0 before ``start``, 1 after
    ``end``, linear in between (a step at ``start`` if both coincide). The traffic junction's add
    rate and unit combat's enemy count follow it."""
    if end > start:
        return min(max((progress - start) / (end - start), 0.0), 1.0)
    return 1.0 if progress >= start else 0.0


def chebyshev(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise L-inf distances: ``a (..., P, 2)``, ``b (..., Q, 2)`` -> ``(..., P, Q)`` (same dtype)."""
    d = (a[..., :, None, :] - b[..., None, :, :]).abs()
    return d.amax(-1)


def palette(i: int) -> tuple[int, int, int]:
    """A distinct RGB colour for index ``i`` (cycles after 12)."""
    colors = [
        (31, 119, 180), (255, 127, 14), (44, 160, 44), (148, 103, 189), (140, 86, 75), (227, 119, 194),
        (23, 190, 207), (188, 189, 34), (127, 127, 127), (57, 59, 121), (99, 121, 57), (140, 109, 49),
    ]
    return colors[i % len(colors)]
