"""Per-copy random streams of the grid worlds (pure maths, against naive Python references)."""

import random

import torch

from maestro.envs.grid.common import _mul32, chebyshev, hash32, stream_uniform


def _hash32_ref(x: int) -> int:
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_mul32_and_hash32_match_python_integers():
    rnd = random.Random(0)
    xs = [0, 1, 0xFFFFFFFF, 0x80000000] + [rnd.getrandbits(32) for _ in range(500)]
    t = torch.tensor(xs, dtype=torch.long)
    for c in (0x7FEB352D, 0x846CA68B, 0x9E3779B9, 0xFFFFFFFF):
        assert _mul32(t, c).tolist() == [(x * c) % 2**32 for x in xs]
    assert hash32(t).tolist() == [_hash32_ref(x) for x in xs]


def test_stream_uniform_is_uniform_and_per_copy():
    B, n = 4096, 16
    key = torch.randint(0, 2**32, (B,), generator=torch.Generator().manual_seed(0))
    counter = torch.zeros(B, dtype=torch.long)
    u = stream_uniform(key, counter, n)
    assert u.shape == (B, n) and u.dtype == torch.float32
    assert (u >= 0).all() and (u < 1).all()
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.005
    hist = torch.histc(u, bins=10, min=0, max=1) / u.numel()
    assert (hist - 0.1).abs().max() < 0.01
    corr = torch.corrcoef(torch.stack([u[:, 0], u[:, 1], stream_uniform(key, counter + 1, n)[:, 0]]))
    assert corr.sub(torch.eye(3)).abs().max() < 0.06, "columns and successive draws must be uncorrelated"
    # copy b's numbers depend on its own key and counter only, not on the batch around it
    alone = stream_uniform(key[7:8], counter[7:8], n)
    assert torch.equal(alone, u[7:8])


def test_chebyshev():
    a = torch.tensor([[[0, 0], [3, 1]]])
    b = torch.tensor([[[1, 2], [3, 1], [-2, 0]]])
    assert chebyshev(a, b).tolist() == [[[2, 3, 2], [2, 0, 5]]]


def test_ramp_is_a_clamped_linear_window():
    import pytest

    from maestro.envs.grid.common import ramp

    assert [ramp(p, 0.2, 0.7) for p in (0.0, 0.2, 0.45, 0.7, 1.0)] == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])
    assert [ramp(p, 0.5, 0.5) for p in (0.49, 0.5)] == [0.0, 1.0], "a step where both ends coincide"
