"""``check_algo``: does a registered algorithm honour the training contract? (``check_env``'s twin)

Each algorithm's ``Config`` declares its smoke settings (``SMOKE: ClassVar[Smoke]``: config overrides
small enough that a few iterations really update, the number of env copies and of iterations). On
those settings, against one env, ``check_algo`` runs short training runs and checks, each failure an
``AlgoCheckError`` (an ``AssertionError``) that names the property and what differs:

1. **it trains**: the run completes its iterations, writes checkpoints whose state holds the
   ``policy``, and the policy's parameters after the last iteration differ from those after the
   first (an update really ran; settings whose updates never start fail here); the trained policy
   acts on the env and its evaluation returns are finite;
2. **determinism**: the same seed twice gives bit-identical checkpoint states (every tensor: policy,
   critics, optimisers, generators, env, replay); another seed gives different parameters;
3. **resume**: a run interrupted after ``stop_at`` iterations (as SIGINT/SIGTERM would: a last
   checkpoint, then exit) and resumed in a fresh process state (fresh ``Run`` and env, the global
   RNGs scrambled) ends bit-identical to the uninterrupted run, with the same metric rows;
4. **save/load** (as Stable-Baselines3 tests it): the final policy, its parameters perturbed, saved
   with ``policy.save`` and loaded with its class's ``load`` has every key of its state equal
   (weights, layout, architecture), acts identically (greedy, and sampled with equal generators, over
   several steps carrying the recurrent state), and training continues after loading (resuming the
   finished run for one more iteration changes the parameters).

Runs stop through ``Run.request_stop`` after a number of iterations (budgets differ per algorithm:
an iteration is one rollout, one batch of episodes or ``iteration_steps`` vectorised steps), with
periodic evaluation off so that only training consumes randomness.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from maestro.config import build_config
from maestro.core import checkpoint as ckpt
from maestro.core.evaluate import evaluate
from maestro.core.run import Run, RunConfig
from maestro.envs.api import BatchedEnv
from maestro.registry import AlgoEntry, Smoke, algo_entry

EnvFactory = Callable[[int, int], BatchedEnv]
BUDGET = 10**12
"""Env-step budget of the check's runs: never reached, they stop after a number of iterations."""


class AlgoCheckError(AssertionError):
    """A property of ``check_algo`` does not hold; the message names it and what differs."""


@dataclass
class AlgoCheckReport:
    """What ``check_algo`` measured (for tests and ``maestro`` developers)."""

    algo: str
    env: str
    iterations: int
    env_steps: int
    changed_parameters: list[str]


def smoke_of(entry: AlgoEntry) -> Smoke:
    """The smoke settings the algorithm's ``Config`` declares (``SMOKE``); a missing one is an error."""
    smoke = getattr(entry.config, "SMOKE", None)
    if not isinstance(smoke, Smoke):
        raise AlgoCheckError(
            f"algorithm {entry.name!r}: its Config {entry.config.__qualname__} declares no smoke settings; "
            "add `SMOKE: ClassVar[Smoke] = Smoke(config={...})` with overrides small enough that updates run within a few iterations"
        )
    return smoke


def _fail(prop: int, entry: AlgoEntry, env_name: str, msg: str) -> AlgoCheckError:
    return AlgoCheckError(f"check_algo property {prop} failed for algorithm {entry.name!r} on env {env_name!r}: {msg}")


def _leaves(x: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a nested checkpoint state, by path."""
    out: dict[str, Any] = {}
    if isinstance(x, dict):
        for k, v in x.items():
            out.update(_leaves(v, f"{prefix}/{k}"))
    elif isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            out.update(_leaves(v, f"{prefix}/{i}"))
    else:
        out[prefix] = x
    return out


def _differences(a: Any, b: Any, limit: int = 5) -> list[str]:
    """Paths at which two nested states differ (tensors compared bit for bit, NaN equal to NaN)."""
    la, lb = _leaves(a), _leaves(b)
    diffs = [f"{k} only in one state" for k in sorted(set(la) ^ set(lb))]
    for k in sorted(set(la) & set(lb)):
        x, y = la[k], lb[k]
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            same = x.shape == y.shape and x.dtype == y.dtype and bool(torch.equal(x, y) or (x.dtype.is_floating_point and torch.equal(x.isnan(), y.isnan()) and torch.equal(x.nan_to_num(), y.nan_to_num())))
        else:
            same = type(x) is type(y) and x == y
        if not same:
            diffs.append(k)
        if len(diffs) >= limit:
            break
    return diffs


def _weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state["policy"]["weights"].items() if v.is_floating_point()}


class _Trainer:
    """Runs of one (algorithm, env) pair on the smoke settings, each stopped after ``n`` iterations."""

    def __init__(self, entry: AlgoEntry, make_env: EnvFactory, env_name: str, smoke: Smoke) -> None:
        self.entry, self.make_env, self.env_name, self.smoke = entry, make_env, env_name, smoke
        self.cfg = build_config(entry.config, smoke.config, where=f"{entry.name}.SMOKE")

    def run(self, directory: Path, seed: int, stop_at: int, resume: bool = False) -> Run:
        def stop(run: Run) -> None:
            if run.iteration >= stop_at:
                run.request_stop()

        run_cfg = RunConfig(env_steps=BUDGET, num_envs=self.smoke.num_envs, eval_episodes=0, checkpoint_every=1, keep_checkpoints=0, progress=False, tensorboard=False)
        env = self.make_env(self.smoke.num_envs, seed)
        with Run(run_cfg, directory, seed=seed, resume=resume, hooks=(stop,), name=self.entry.name) as run:
            if run.iteration < stop_at:
                self.entry.train(self.cfg, env, run)
        self.env = env
        return run


def _final_state(directory: Path) -> dict[str, Any]:
    _, payload, _ = ckpt.latest_valid(directory / "checkpoints")
    return payload["state"]


def _metric_rows(directory: Path) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in (directory / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def _actions_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[g], b[g]) for g in a)


def check_algo(algo: str | AlgoEntry, make_env: EnvFactory, directory: str | Path, *, env_name: str = "", seed: int = 0) -> AlgoCheckReport:
    """Check properties 1-4 of the module docstring for ``algo`` on the env ``make_env(num_envs, seed)``.

    Args:
        algo: a registered algorithm's name or its ``AlgoEntry`` (tests pass deliberately broken ones).
        make_env: ``make_env(num_envs, seed) -> env``.
        directory: an empty folder for the runs' directories (checkpoints, metrics).
        env_name: the env's name for messages (default: ``env.spec.name``).
        seed: the seed of the reference runs (``seed + 1`` is the "other seed").

    Raises ``AlgoCheckError`` naming the first property that fails.
    """
    entry = algo if isinstance(algo, AlgoEntry) else algo_entry(algo)
    smoke = smoke_of(entry)
    directory = Path(directory)
    env_name = env_name or make_env(1, seed).spec.name
    k, j = smoke.iterations, smoke.stop_at
    if not 1 <= j < k:
        raise AlgoCheckError(f"algorithm {entry.name!r}: SMOKE needs 1 <= stop_at < iterations, got stop_at={j}, iterations={k}")
    trainer = _Trainer(entry, make_env, env_name, smoke)

    # 1. it trains
    a = trainer.run(directory / "a", seed, k)
    if a.iteration != k:
        raise _fail(1, entry, env_name, f"the run stopped at iteration {a.iteration}, expected {k}")
    files = ckpt.list_checkpoints(directory / "a" / "checkpoints")
    if len(files) < 2:
        raise _fail(1, entry, env_name, f"expected a checkpoint per iteration ({k}), found {len(files)}")
    first = ckpt.load_checkpoint(files[-1])["state"]
    final = _final_state(directory / "a")
    if "policy" not in final or "weights" not in final["policy"]:
        raise _fail(1, entry, env_name, "the checkpoint state has no 'policy' with 'weights' (policy_state())")
    w0, w1 = _weights(first), _weights(final)
    changed = [name for name in w1 if name in w0 and not torch.equal(w0[name], w1[name])]
    if not changed:
        raise _fail(1, entry, env_name, f"no policy parameter changed from iteration 1 to iteration {k}: no update ran (are the SMOKE settings small enough, e.g. warm-up?)")
    policy = ckpt.load_policy(final["policy"])
    env = make_env(smoke.num_envs, seed + 7)
    obs = env.reset(seed=seed + 7)
    acts, _ = policy.act(obs, env.state(), None, action_mask=env.action_mask(), alive=env.alive())
    env.step(acts)  # the env validates shapes, dtypes and ranges
    per_episode = evaluate(policy, make_env(2, seed + 1), seed=seed + 1)
    bad = [m for m, v in per_episode.items() if not np.isfinite(v).all()]
    if bad:
        raise _fail(1, entry, env_name, f"evaluation metrics {bad} are not finite")

    # 2. determinism
    trainer.run(directory / "a_again", seed, k)
    diffs = _differences(final, _final_state(directory / "a_again"))
    if diffs:
        raise _fail(2, entry, env_name, f"the same seed gave different states at {diffs}")
    trainer.run(directory / "other_seed", seed + 1, k)
    w_other = _weights(_final_state(directory / "other_seed"))
    if all(torch.equal(w1[name], w_other[name]) for name in w1):
        raise _fail(2, entry, env_name, f"seeds {seed} and {seed + 1} gave identical policy parameters")

    # 3. resume
    b = trainer.run(directory / "b", seed, j)
    if b.iteration != j:
        raise _fail(3, entry, env_name, f"the interrupted run stopped at iteration {b.iteration}, expected {j}")
    torch.manual_seed(12345)  # the resumed run must not depend on the process's RNG state
    random.seed(12345)
    np.random.seed(12345)
    b = trainer.run(directory / "b", seed, k, resume=True)
    if b.iteration != k:
        raise _fail(3, entry, env_name, f"the resumed run ended at iteration {b.iteration}, expected {k}")
    diffs = _differences(final, _final_state(directory / "b"))
    if diffs:
        raise _fail(3, entry, env_name, f"resumed after iteration {j}, the final state differs from the uninterrupted run at {diffs}")
    rows_a, rows_b = _metric_rows(directory / "a"), _metric_rows(directory / "b")
    if rows_a != rows_b:
        at = next((i for i, (x, y) in enumerate(zip(rows_a, rows_b)) if x != y), min(len(rows_a), len(rows_b)))
        raise _fail(3, entry, env_name, f"metric rows differ from the uninterrupted run's at row {at} ({len(rows_a)} vs {len(rows_b)} rows)")

    # 4. save / load
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed + 11)
        for p in policy.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    path = policy.save(directory / "policy.pt")
    loaded = type(policy).load(path)
    diffs = _differences(policy.policy_state(), loaded.policy_state())
    if diffs:
        raise _fail(4, entry, env_name, f"the loaded policy's state differs at {diffs}")
    for deterministic in (True, False):
        env_a, env_b = make_env(smoke.num_envs, seed + 3), make_env(smoke.num_envs, seed + 3)
        obs_a, obs_b = env_a.reset(seed=seed + 3), env_b.reset(seed=seed + 3)
        ga, gb = torch.Generator().manual_seed(seed + 5), torch.Generator().manual_seed(seed + 5)
        ha = hb = None
        for t in range(3):
            act_a, ha = policy.act(obs_a, env_a.state(), ha, action_mask=env_a.action_mask(), alive=env_a.alive(), deterministic=deterministic, generator=ga)
            act_b, hb = loaded.act(obs_b, env_b.state(), hb, action_mask=env_b.action_mask(), alive=env_b.alive(), deterministic=deterministic, generator=gb)
            if not _actions_equal(act_a, act_b):
                raise _fail(4, entry, env_name, f"the loaded policy acts differently at step {t} ({'greedy' if deterministic else 'sampled'})")
            obs_a, obs_b = env_a.step(act_a).obs, env_b.step(act_b).obs
    again = trainer.run(directory / "a", seed, k + 1, resume=True)
    if again.iteration != k + 1:
        raise _fail(4, entry, env_name, f"training after loading the checkpoint ended at iteration {again.iteration}, expected {k + 1}")
    w2 = _weights(_final_state(directory / "a"))
    if all(torch.equal(w1[name], w2[name]) for name in w1):
        raise _fail(4, entry, env_name, "training one more iteration after loading the checkpoint left every policy parameter unchanged")
    return AlgoCheckReport(entry.name, env_name, k, a.env_steps, changed)


__all__ = ["AlgoCheckError", "AlgoCheckReport", "check_algo", "smoke_of"]
