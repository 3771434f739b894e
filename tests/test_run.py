"""The run context: determinism, bitwise resume, atomic and corrupt checkpoints, RNG snapshots."""

import dataclasses
import json
import random

import numpy as np
import pytest
import torch

import maestro
from maestro.algos.ppo import Config, train_ippo, train_mappo
from maestro.core import checkpoint as ckpt
from maestro.core.run import Run, RunConfig
from maestro.core.seeding import capture_rng, restore_rng, seed_everything
from tiny_envs import MatchConfig, MatchEnv
from toy_env import ToyConfig, ToyEnv

SMALL = Config(rollout_steps=5, epochs=2, minibatches=2, hidden=(16,))


def make_spread(n, s):
    return maestro.make_env("simple_spread", num_envs=n, seed=s, n_agents=3)


def make_toy(n, s):
    return ToyEnv(ToyConfig(), num_envs=n, seed=s)


ENVS = {"toy": make_toy, "simple_spread": make_spread}


def run_cfg(iterations, B=8, **kw):
    return RunConfig(env_steps=iterations * SMALL.rollout_steps * B, num_envs=B, eval_episodes=0, progress=False, **kw)


def params(state_holder):
    """Every tensor of a trainer snapshot (policy, critics, optimiser), flattened by name."""
    out = {}

    def walk(prefix, x):
        if isinstance(x, torch.Tensor):
            out[prefix] = x
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(f"{prefix}/{k}", v)
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(f"{prefix}/{i}", v)

    walk("", state_holder)
    return out


def final_state(directory):
    _, payload, _ = ckpt.latest_valid(directory / "checkpoints")
    s = payload["state"]
    return {k: s[k] for k in ("policy", "critics", "optimiser", "vnorm", "generator", "env")}


def assert_bitwise_equal(a, b):
    pa, pb = params(a), params(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.equal(pa[k], pb[k]), f"{k} differs"


@pytest.mark.parametrize("env_name", ["toy", "simple_spread"])
def test_resume_is_bitwise_equal_to_uninterrupted(tmp_path, env_name):
    make = ENVS[env_name]
    total = 6
    cfg = dataclasses.replace(SMALL, lr_end_factor=0.1)  # the annealed learning rates must resume too

    # uninterrupted
    with Run(run_cfg(total), tmp_path / "a", seed=3) as run:
        train_mappo(cfg, make(8, 3), run)

    # interrupted after 2 iterations (as SIGINT would), then resumed in a fresh Run and env
    def stop_at_2(run):
        if run.iteration == 2:
            run.request_stop()

    with Run(run_cfg(total, checkpoint_every=cfg.rollout_steps * 8), tmp_path / "b", seed=3, hooks=(stop_at_2,)) as run:
        train_mappo(cfg, make(8, 3), run)
    assert run.stop_requested and run.iteration == 2
    assert ckpt.list_checkpoints(tmp_path / "b" / "checkpoints")[0].name == ckpt.checkpoint_name(2 * 40)
    torch.manual_seed(999)  # the resumed run must not depend on the process's RNG state
    random.seed(999)
    with Run(run_cfg(total), tmp_path / "b", seed=3, resume=True) as run:
        assert run.iteration == 2
        train_mappo(cfg, make(8, 3), run)
    assert run.iteration == total
    assert_bitwise_equal(final_state(tmp_path / "a"), final_state(tmp_path / "b"))
    rows = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == list(range(1, total + 1))
    assert [r["train/lr"] for r in rows] == pytest.approx([SMALL.lr * (1 - 0.9 * i / total) for i in range(total)])


def test_resume_drops_metric_rows_after_the_checkpoint(tmp_path):
    B = 8
    with Run(run_cfg(4, checkpoint_every=2 * SMALL.rollout_steps * B), tmp_path, seed=0) as run:
        train_ippo(SMALL, make_toy(B, 0), run)
    # pretend the process died after iteration 3: remove the final checkpoint
    ckpt.list_checkpoints(tmp_path / "checkpoints")[0].unlink()
    with Run(run_cfg(4), tmp_path, seed=0, resume=True) as run:
        assert run.iteration == 2
        train_ippo(SMALL, make_toy(B, 0), run)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]


def test_corrupt_checkpoint_is_reported_and_resume_falls_back(tmp_path):
    B = 8
    with Run(run_cfg(3, checkpoint_every=SMALL.rollout_steps * B), tmp_path, seed=0) as run:
        train_mappo(SMALL, make_toy(B, 0), run)
    files = ckpt.list_checkpoints(tmp_path / "checkpoints")
    assert len(files) == 3
    newest, previous = files[0], files[1]
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(ckpt.CheckpointError, match="corrupt or truncated"):
        ckpt.load_checkpoint(newest)
    path, _, skipped = ckpt.latest_valid(tmp_path / "checkpoints")
    assert path == previous and skipped[0][0] == newest
    files[2].write_bytes(b"not a checkpoint at all")
    with Run(run_cfg(3), tmp_path, seed=0, resume=True) as run:
        assert run.resumed_from == previous and run.iteration == 2
        train_mappo(SMALL, make_toy(B, 0), run)
    assert run.iteration == 3


def test_no_valid_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / ckpt.checkpoint_name(5)).write_bytes(b"\x00" * 10)
    with pytest.raises(ckpt.CheckpointError, match="no valid checkpoint"):
        Run(run_cfg(1), tmp_path, resume=True)
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(ckpt.CheckpointError, match="not a maestro checkpoint"):
        ckpt.load_checkpoint(tmp_path / "other.pt")


def test_save_atomic_leaves_no_temp_files_and_loads_weights_only(tmp_path):
    p = ckpt.save_atomic({"a": torch.arange(3), "rng": capture_rng()}, tmp_path / "c.pt")
    assert [x.name for x in tmp_path.iterdir()] == ["c.pt"]
    obj = torch.load(p, weights_only=True)
    assert torch.equal(obj["a"], torch.arange(3))


def test_rng_capture_restore_round_trip():
    seed_everything(5)
    snap = capture_rng()
    a = (random.random(), np.random.rand(), torch.rand(1))
    restore_rng(snap)
    b = (random.random(), np.random.rand(), torch.rand(1))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_keep_checkpoints_prunes_old_ones(tmp_path):
    cfg = run_cfg(5, checkpoint_every=SMALL.rollout_steps * 8, keep_checkpoints=2)
    with Run(cfg, tmp_path, seed=0) as run:
        train_ippo(SMALL, make_toy(8, 0), run)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")] == [ckpt.checkpoint_name(200), ckpt.checkpoint_name(160)]


def test_periodic_evaluation_logs_eval_namespace(tmp_path):
    cfg = RunConfig(env_steps=4 * 5 * 8, num_envs=8, eval_every=2 * 5 * 8, eval_episodes=6, progress=False)
    mc = MatchConfig()
    with Run(cfg, tmp_path, seed=0, make_env=lambda n, s: MatchEnv(mc, n, s)) as run:
        train_mappo(SMALL, MatchEnv(mc, 8, 0), run)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/episode_return" in r]
    assert [r["env_steps"] for r in evals] == [80, 160]
    train = [r for r in rows if "train/episode_return" in r]
    assert train and all("time/env_steps_per_s" in r and "loss/policy" in r for r in train)
    assert "train/success" in train[-1] and "eval/success" in evals[-1]
    assert any((tmp_path / "tb").iterdir())


def test_ci95_uses_student_t_over_seeds():
    from maestro.core.evaluate import mean_ci95, t_critical95

    # three seeds 1, 2, 3: s = 1, so the half-width is t_{0.975,2} / sqrt(3) = 4.3027 / 1.7321
    mean, ci = mean_ci95(np.array([1.0, 2.0, 3.0]))
    assert mean == 2.0 and ci == pytest.approx(2.48414, abs=1e-4)
    assert mean_ci95(np.array([5.0])) == (5.0, 0.0)
    with pytest.raises(ValueError, match="df >= 1"):
        t_critical95(0)
    stats = pytest.importorskip("scipy.stats")  # the reference (installed with mpe2); the checks above run without it
    for df in (1, 2, 3, 5, 9, 29, 63, 99, 999):
        assert t_critical95(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-7)


def test_summarise_averages_the_return_of_successful_episodes_only():
    """papers/000 Table 1's "average successful episode reward": the first group's return over the
    episodes with ``success``; no such row when none succeeded, none for envs without ``success``."""
    from maestro.core.evaluate import summarise

    per_ep = {"episode_return/agent": np.array([10.0, 30.0, 50.0, 70.0]), "episode_length": np.array([5.0, 9.0, 9.0, 9.0]), "success": np.array([0.0, 1.0, 0.0, 1.0])}
    s = summarise(per_ep)
    assert s["successful_return"][0] == pytest.approx(50.0) and s["success"][0] == pytest.approx(0.5)
    assert "successful_return" not in summarise({**per_ep, "success": np.zeros(4)})
    assert "successful_return" not in summarise({k: v for k, v in per_ep.items() if k != "success"})
