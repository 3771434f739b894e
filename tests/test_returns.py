"""Pure maths: GAE and discounted returns vs naive loops, action heads vs torch.distributions, normaliser,
schedules."""

import numpy as np
import pytest
import torch

from maestro.core.normalise import RunningMeanStd
from maestro.core.returns import discounted_returns, gae
from maestro.core.schedules import linear, set_learning_rates
from maestro.nn.heads import (
    categorical_entropy,
    categorical_log_prob,
    categorical_sample,
    gaussian_entropy,
    gaussian_log_prob,
    mask_logits,
)


def naive_gae(r, v, nv, term, done, gamma, lam):
    T, B, N = r.shape
    adv = torch.zeros_like(r)
    for b in range(B):
        for n in range(N):
            last = 0.0
            for t in reversed(range(T)):
                delta = r[t, b, n] + gamma * (0.0 if term[t, b] else nv[t, b, n]) - v[t, b, n]
                last = delta + (0.0 if done[t, b] else gamma * lam * last)
                adv[t, b, n] = last
    return adv, adv + v


def test_gae_matches_naive_loop():
    g = torch.Generator().manual_seed(0)
    T, B, N = 7, 4, 3
    r, v, nv = (torch.randn(T, B, N, generator=g, dtype=torch.float64) for _ in range(3))
    done = torch.rand(T, B, generator=g) < 0.3
    term = done & (torch.rand(T, B, generator=g) < 0.5)
    adv, ret = gae(r, v, nv, term, done, 0.97, 0.9)
    adv_ref, ret_ref = naive_gae(r, v, nv, term, done, 0.97, 0.9)
    torch.testing.assert_close(adv, adv_ref)
    torch.testing.assert_close(ret, ret_ref)


def test_gae_truncation_bootstraps_and_termination_does_not():
    r = torch.zeros(1, 2, 1)
    v = torch.zeros(1, 2, 1)
    nv = torch.full((1, 2, 1), 10.0)
    done = torch.tensor([[True, True]])
    term = torch.tensor([[True, False]])  # copy 0 terminated, copy 1 truncated
    adv, _ = gae(r, v, nv, term, done, 0.5, 1.0)
    assert adv[0, 0, 0] == 0.0 and adv[0, 1, 0] == 5.0


def test_gae_lambda_one_is_discounted_return_minus_value():
    g = torch.Generator().manual_seed(1)
    T, B = 6, 3
    r = torch.randn(T, B, generator=g, dtype=torch.float64)
    v = torch.randn(T, B, generator=g, dtype=torch.float64)
    done = torch.zeros(T, B, dtype=torch.bool)
    done[2, 1] = True
    nv = torch.cat([v[1:], torch.zeros(1, B, dtype=torch.float64)])
    _, ret = gae(r, v, nv, done, done, 0.9, 1.0)
    torch.testing.assert_close(ret, discounted_returns(r, done, 0.9))


def test_discounted_returns_matches_naive_with_bootstrap():
    r = torch.tensor([[1.0], [2.0], [3.0]])
    done = torch.tensor([[False], [True], [False]])
    out = discounted_returns(r, done, 0.5, bootstrap=torch.tensor([4.0]))
    torch.testing.assert_close(out, torch.tensor([[2.0], [2.0], [5.0]]))


def test_gae_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same"):
        gae(torch.zeros(3, 2, 1), torch.zeros(3, 2, 2), torch.zeros(3, 2, 1), torch.zeros(3, 2, dtype=torch.bool), torch.zeros(3, 2, dtype=torch.bool), 0.9, 0.9)


def test_categorical_head_matches_torch_and_respects_masks():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 3, 5, generator=g)
    mask = torch.rand(50, 3, 5, generator=g) < 0.6
    mask[..., 0] |= ~mask.any(-1)
    ml = mask_logits(logits, mask)
    a = categorical_sample(ml, g)
    assert mask.gather(-1, a[..., None]).all()
    ref = torch.distributions.Categorical(logits=ml)
    torch.testing.assert_close(categorical_log_prob(ml, a), ref.log_prob(a))
    torch.testing.assert_close(categorical_entropy(ml), ref.entropy(), atol=1e-5, rtol=1e-5)
    assert torch.isfinite(categorical_entropy(ml)).all()


def test_categorical_sampling_frequencies():
    g = torch.Generator().manual_seed(0)
    logits = torch.log(torch.tensor([0.2, 0.5, 0.3])).expand(20000, 3)
    freq = torch.bincount(categorical_sample(logits, g), minlength=3).float() / 20000
    torch.testing.assert_close(freq, torch.tensor([0.2, 0.5, 0.3]), atol=0.015, rtol=0)


def test_gaussian_head_matches_torch():
    g = torch.Generator().manual_seed(0)
    mean, x = torch.randn(4, 3, 2, generator=g), torch.randn(4, 3, 2, generator=g)
    log_std = torch.tensor([-0.3, 0.2])
    ref = torch.distributions.Normal(mean, log_std.exp())
    torch.testing.assert_close(gaussian_log_prob(mean, log_std, x), ref.log_prob(x).sum(-1))
    torch.testing.assert_close(gaussian_entropy(log_std, (4, 3)), ref.entropy().sum(-1))


def test_running_mean_std_matches_numpy():
    g = torch.Generator().manual_seed(0)
    rms = RunningMeanStd()
    xs = [torch.randn(7, 3, generator=g) * 3 + 1 for _ in range(5)]
    ws = [(torch.rand(7, 3, generator=g) < 0.7).float() for _ in range(5)]
    for x, w in zip(xs, ws):
        rms.update(x, w)
    flat = np.concatenate([x[w > 0].numpy() for x, w in zip(xs, ws)])
    assert abs(float(rms.mean) - flat.mean()) < 1e-6
    assert abs(float(rms.var) - flat.var()) < 1e-5
    x = torch.randn(4)
    torch.testing.assert_close(rms.denormalise(rms.normalise(x)), x)


# ---------------------------------------------------------------------- schedules
def test_linear_schedule_by_hand_and_clamped():
    assert [linear(1.0, 0.2, p) for p in (-1.0, 0.0, 0.25, 1.0, 3.0)] == pytest.approx([1.0, 1.0, 0.8, 0.2, 0.2])
    assert linear(0.05, 0.05, 0.7) == 0.05


def test_set_learning_rates_scales_each_group_and_checks_the_count():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.Adam([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 1.0}])
    assert set_learning_rates(opt, [1e-3, 4e-3], 0.5) == [5e-4, 2e-3]
    assert [g["lr"] for g in opt.param_groups] == [5e-4, 2e-3]
    with pytest.raises(ValueError, match="1 base rates for 2 parameter groups"):
        set_learning_rates(opt, [1e-3], 0.5)
