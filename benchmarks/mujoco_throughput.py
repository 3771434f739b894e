"""MuJoCo env throughput: maestro's batched bodies beside Gymnasium's envs, in one process run.

One env-step is one step of one env copy: stepping ``B`` copies at once counts ``B``. Contenders, for
each body (``walker2d`` = Walker2d-v5, ``humanoid`` = Humanoid-v5) and each ``B``:

* ``gym x1``: one Gymnasium env (``gymnasium.make``), stepped and reset by hand; its rate does not
  depend on ``B`` but is re-measured in every cell, beside the others;
* ``gym sync`` / ``gym async``: Gymnasium's ``SyncVectorEnv`` / ``AsyncVectorEnv`` (one worker
  process per copy, shared memory) of ``B`` envs;
* ``maestro loop``: maestro's env with ``threads=1`` (the copies stepped in a loop, bit-identical
  to Gymnasium);
* ``maestro rollout2``: maestro's env with ``threads=2`` (``mujoco.rollout`` on two threads);
* ``envpool``: EnvPool's C++ ``Walker2d-v5`` / ``Humanoid-v5`` (2 threads, synchronous batch of
  ``B``), when ``envpool`` is importable (it is not a dependency: EnvPool has no way to set a
  copy's simulator state, which maestro's contract needs for ``set_state``, checkpoints and resume;
  it is measured as a reference point only).

Random actions over the whole action Box are drawn before the timed loop (a pool cycled through),
so every contender steps through falls and resets. Within a cell the contenders are timed in
``--rounds`` interleaved slices of ``--seconds`` and the best slice of each is reported, so that
all face the same machine load; the load average is printed before and after (other processes
on a shared machine change the figures by 2-3x from minute to minute). The target of issue 22:
maestro at ``B = 8`` >= 1.8x one Gymnasium env.

    python benchmarks/mujoco_throughput.py
    python benchmarks/mujoco_throughput.py --bodies walker2d --batch-sizes 8 --rounds 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch

import maestro

sys.path.insert(0, str(Path(__file__).resolve().parent))
from env_throughput import timed  # noqa: E402  (the same timed slices as the particle benchmark)

GYM_IDS = {"walker2d": "Walker2d-v5", "humanoid": "Humanoid-v5"}
Stepper = Callable[[int], None]


def contenders(body: str, B: int, pool: int, seed: int) -> dict[str, tuple[Stepper, int, Callable[[], None]]]:
    """``name -> (step, copies per call, close)`` for one cell."""
    gid = GYM_IDS[body]
    space = gym.make(gid).action_space
    rng = np.random.default_rng(seed)
    acts = rng.uniform(space.low, space.high, size=(pool, B, *space.shape)).astype(np.float32)
    out: dict[str, tuple[Stepper, int, Callable[[], None]]] = {}

    single = gym.make(gid)
    single.reset(seed=seed)

    def step_single(k: int) -> None:
        _, _, term, trunc, _ = single.step(acts[k % pool, 0])
        if term or trunc:
            single.reset()

    out["gym x1"] = (step_single, 1, single.close)
    for name, cls in (("gym sync", gym.vector.SyncVectorEnv), ("gym async", gym.vector.AsyncVectorEnv)):
        venv = cls([lambda: gym.make(gid) for _ in range(B)])
        venv.reset(seed=seed)
        out[name] = ((lambda v: lambda k: v.step(acts[k % pool]))(venv), B, venv.close)
    try:
        import envpool
    except ImportError:
        envpool = None
    if envpool is not None:
        pool_env = envpool.make_gymnasium(gid, num_envs=B, batch_size=B, num_threads=2, seed=seed)
        pool_env.reset()
        out["envpool"] = ((lambda e: lambda k: e.step(acts[k % pool]))(pool_env), B, pool_env.close)
    for name, threads in (("maestro loop", 1), ("maestro rollout2", 2)):
        env = maestro.make_env(body, num_envs=B, seed=seed, threads=threads)
        env.reset()
        t_acts = [{"agent": torch.as_tensor(acts[i])[:, None]} for i in range(pool)]
        out[name] = ((lambda e, a: lambda k: e.step(a[k % pool]))(env, t_acts), B, env.close)
    return out


def measure(body: str, B: int, rounds: int, seconds: float, pool: int, seed: int) -> dict[str, Any]:
    cells = contenders(body, B, pool, seed)
    best: dict[str, float] = {name: 0.0 for name in cells}
    slices: dict[str, list[float]] = {name: [] for name in cells}
    for r in range(rounds):
        for name, (step, copies, _) in cells.items():
            calls, dt = timed(step, seconds, warmup=20 if r == 0 else 0)
            rate = calls * copies / dt
            slices[name].append(rate)
            best[name] = max(best[name], rate)
    for _, _, close in cells.values():
        close()
    return {"body": body, "B": B, "best": best, "median": {k: float(np.median(v)) for k, v in slices.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bodies", nargs="+", default=["walker2d", "humanoid"], choices=sorted(GYM_IDS))
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=1.0, help="length of one timed slice")
    p.add_argument("--pool", type=int, default=64, help="pre-drawn action batches")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="", help="also write the figures here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(f"load average before: {os.getloadavg()} on {os.cpu_count()} cores; mujoco {__import__('mujoco').__version__}, gymnasium {gym.__version__}")
    results = []
    names = ["gym x1", "gym sync", "gym async", "maestro loop", "maestro rollout2"]
    try:
        import envpool  # noqa: F401
    except ImportError:
        pass
    else:
        names.append("envpool")
    print("| body | B | " + " | ".join(names) + " | loop / x1 | rollout2 / x1 | best maestro / sync |")
    print("|---|---|" + "---|" * (len(names) + 3))
    for body in args.bodies:
        for B in args.batch_sizes:
            r = measure(body, B, args.rounds, args.seconds, args.pool, args.seed)
            results.append(r)
            b = r["best"]
            top = max(b["maestro loop"], b["maestro rollout2"])
            row = " | ".join(f"{b[n]:.0f}" for n in names)
            print(f"| {body} | {B} | {row} | {b['maestro loop'] / b['gym x1']:.2f} | {b['maestro rollout2'] / b['gym x1']:.2f} | {top / b['gym sync']:.2f} |", flush=True)
    print(f"load average after: {os.getloadavg()}")
    print("steps/s (one step of one copy), best of the interleaved slices; target: maestro at B=8 >= 1.8x gym x1")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"load_average_after": os.getloadavg(), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
