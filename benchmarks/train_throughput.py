"""End-to-end training throughput of MAPPO on simple_spread (N=3, 25-step episodes), in env steps/s.

One "env step" is one step of one env copy (the unit of MAPPO's ``num_env_steps``). Each
configuration runs a warm-up iteration, then ``--iterations`` timed iterations of the real training
loop (``maestro.algos.ppo.train_mappo`` with a ``Run``: collect 25 steps of B copies, epochs of
PPO with the ``mappo/simple_spread`` recipe's values unless ``--epochs``/``--minibatches`` say otherwise,
metrics), and also the env alone with random actions for reference.

    .venv/bin/python benchmarks/train_throughput.py --num-envs 32 128 512 --iterations 10
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

import maestro
from maestro.algos.ppo import Config, train_mappo
from maestro.core.run import Run, RunConfig
from maestro.envs.api import random_actions
from maestro.recipes import load_recipe


def env_only(num_envs: int, steps: int) -> float:
    env = maestro.make_env("simple_spread", num_envs=num_envs, seed=0, n_agents=3)
    env.reset()
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        env.step(random_actions(env, g))
    t = time.perf_counter()
    for _ in range(steps):
        env.step(random_actions(env, g))
    return steps * num_envs / (time.perf_counter() - t)


def train_rate(num_envs: int, iterations: int, cfg: Config, threads: int) -> tuple[float, float]:
    """(env steps/s over the timed iterations, seconds per iteration)."""
    env = maestro.make_env("simple_spread", num_envs=num_envs, seed=0, n_agents=3)
    per_iter = cfg.rollout_steps * num_envs
    stamps: list[float] = []
    run_cfg = RunConfig(env_steps=per_iter * (iterations + 1), num_envs=num_envs, eval_episodes=0, progress=False, torch_threads=threads)
    with Run(run_cfg, None, seed=0, hooks=(lambda run: stamps.append(time.perf_counter()),)) as run:
        train_mappo(cfg, env, run)
    dt = stamps[-1] - stamps[0]  # excludes the warm-up iteration
    return per_iter * iterations / dt, dt / iterations


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-envs", type=int, nargs="+", default=[32, 128, 512])
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--epochs", type=int, default=None, help="PPO epochs per rollout (default: the recipe's; MAPPO MPE: 10)")
    p.add_argument("--minibatches", type=int, default=None, help="minibatches per epoch (default: the recipe's; MAPPO MPE: 1)")
    args = p.parse_args()
    cfg: Config = load_recipe("mappo/simple_spread").algo_config  # the recipe's PPO values
    changes = {k: v for k, v in (("epochs", args.epochs), ("minibatches", args.minibatches)) if v is not None}
    cfg = dataclasses.replace(cfg, **changes)
    print(f"MAPPO simple_spread N=3, T=25, epochs={cfg.epochs}, minibatches={cfg.minibatches}, torch threads={args.threads}, torch {torch.__version__}")
    print(f"{'B':>6} {'train env-steps/s':>18} {'s/iteration':>12} {'env-only steps/s':>17}")
    for B in args.num_envs:
        rate, it = train_rate(B, args.iterations, cfg, args.threads)
        print(f"{B:>6} {rate:>18,.0f} {it:>12.3f} {env_only(B, 100):>17,.0f}")


if __name__ == "__main__":
    main()
