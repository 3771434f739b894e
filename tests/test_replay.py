"""The replay buffer: wrap-around, uniform sampling (no bias to recent data), partitions per sub-policy."""

import numpy as np
import pytest
import torch

from maestro.core.replay import ReplayBuffer


def _fields(P=2):
    return {"x": ((), torch.int64), "v": ((3,), torch.float32), "sub": ((P,), torch.int8)}


def _batch(start, B, sub=None, P=2):
    x = torch.arange(start, start + B)
    return {"x": x, "v": x[:, None].float().expand(B, 3), "sub": torch.zeros(B, P, dtype=torch.int8) if sub is None else sub}


def test_add_wraps_around_and_keeps_the_newest():
    buf = ReplayBuffer(10, _fields())
    slots = buf.add(_batch(0, 7))
    assert slots.tolist() == list(range(7)) and len(buf) == 7
    slots = buf.add(_batch(7, 6))  # 3 free slots, then overwrite slots 0..2
    assert slots.tolist() == [7, 8, 9, 0, 1, 2] and len(buf) == 10 and buf.ptr == 3 and buf.total == 13
    assert sorted(buf.data["x"].tolist()) == list(range(3, 13))
    assert torch.equal(buf.data["v"][:, 0].long(), buf.data["x"])
    with pytest.raises(ValueError, match="expected"):
        buf.add({"x": torch.zeros(2, dtype=torch.long), "v": torch.zeros(2, 4), "sub": torch.zeros(2, 2, dtype=torch.int8)})


def test_sampling_is_uniform_over_stored_transitions_not_biased_to_recent():
    cap, B = 100, 7
    buf = ReplayBuffer(cap, _fields())
    for start in range(0, 357, B):  # wraps several times; the ring's write pointer ends mid-buffer
        buf.add(_batch(start, B))
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x = buf.gather(buf.sample_index((n,), g))["x"]
    newest = int(buf.data["x"].max())
    age = (newest - x).numpy()  # 0 = most recent
    assert age.min() >= 0 and age.max() == cap - 1  # only stored transitions
    counts = np.bincount(age, minlength=cap)
    chi2 = ((counts - n / cap) ** 2 / (n / cap)).sum()
    assert chi2 < 160  # chi-square with 99 dof: P(chi2 > 160) < 1e-4 under uniformity
    # no trend with age: the mean age matches the uniform mean (cap - 1) / 2 within 5 sigma
    sd = np.sqrt((cap**2 - 1) / 12 / n)
    assert abs(age.mean() - (cap - 1) / 2) < 5 * sd


def test_partitions_sample_only_their_subpolicy_uniformly_after_wraparound():
    cap, B, P, K = 60, 8, 2, 3
    buf = ReplayBuffer(cap, _fields(P), partition=("sub", K))
    g = torch.Generator().manual_seed(1)
    for start in range(0, 200, B):
        sub = torch.randint(0, K, (B, P), generator=g).to(torch.int8)
        buf.add(_batch(start, B, sub, P))
    stored_sub = buf.data["sub"].long()  # (cap, P)
    for p in range(P):
        for k in range(K):
            assert int(buf.ring_size[p * K + k]) == int((stored_sub[:, p] == k).sum())
    n = 30_000
    idx = buf.sample_partitioned(n, g)  # (P, K, n)
    assert idx.shape == (P, K, n)
    for p in range(P):
        for k in range(K):
            got = buf.data["sub"][idx[p, k], p].long()
            assert bool((got == k).all())  # only sub-buffer (p, k)
            members = torch.nonzero(stored_sub[:, p] == k).squeeze(1)
            counts = torch.bincount(idx[p, k], minlength=cap)[members].double()
            expected = n / len(members)
            chi2 = float(((counts - expected) ** 2 / expected).sum())
            assert chi2 < len(members) + 6 * np.sqrt(2 * len(members))  # mean dof, sd sqrt(2 dof)


def test_empty_partition_falls_back_to_the_whole_buffer_and_state_round_trips():
    buf = ReplayBuffer(20, _fields(1), partition=("sub", 2))
    buf.add(_batch(0, 5, torch.zeros(5, 1, dtype=torch.int8), 1))
    idx = buf.sample_partitioned(100, torch.Generator().manual_seed(0))
    assert int(idx.max()) < 5
    again = ReplayBuffer(20, _fields(1), partition=("sub", 2))
    again.load_state_dict(buf.state_dict())
    assert torch.equal(again.data["x"], buf.data["x"]) and again.ptr == buf.ptr and torch.equal(again.ring_size, buf.ring_size)
