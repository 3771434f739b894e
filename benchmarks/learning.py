"""Learning benchmark: wall-clock time and env steps for MAPPO to close 90% of the gap between the
random policy's and the scripted heuristic's mean return on simple_spread (N=3, 25 steps).

The two reference returns are measured first on the same fixed evaluation episodes; training then
runs the ``mappo/simple_spread`` recipe, evaluating every ``--eval-every`` env steps, and stops at
the first evaluation whose mean return reaches ``random + 0.9 (heuristic - random)``.

    .venv/bin/python benchmarks/learning.py --max-env-steps 3000000
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

import torch

import maestro
from maestro.core.evaluate import ScriptedPolicy, evaluate, random_policy, summarise
from maestro.envs.particle.common import heuristic
from maestro.recipes import env_factory, load_recipe

EVAL_SEED = 2024


def reference_return(kind: str, episodes: int) -> float:
    env = maestro.make_env("simple_spread", num_envs=episodes, seed=EVAL_SEED, n_agents=3)
    policy = random_policy() if kind == "random" else ScriptedPolicy(lambda e, g: heuristic("simple_spread")(e))
    return summarise(evaluate(policy, env, seed=EVAL_SEED))["episode_return/agent"][0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="mappo/simple_spread")
    p.add_argument("--max-env-steps", type=int, default=3_000_000)
    p.add_argument("--eval-every", type=int, default=64_000)
    p.add_argument("--episodes", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], help="recipe overrides, as for maestro train")
    args = p.parse_args()

    rnd, heu = reference_return("random", args.episodes), reference_return("heuristic", args.episodes)
    target = rnd + 0.9 * (heu - rnd)
    print(f"simple_spread N=3: random {rnd:.2f}, heuristic {heu:.2f}, target (90% of the gap) {target:.2f}")

    recipe = load_recipe(args.recipe, [*args.set, f"seed={args.seed}"])
    run_cfg = dataclasses.replace(
        recipe.run, env_steps=args.max_env_steps, eval_every=args.eval_every, eval_episodes=args.episodes, eval_seed=EVAL_SEED, progress=False
    )
    make = env_factory(recipe)
    hit: dict[str, float] = {}
    t0 = time.perf_counter()
    last_seen = [-1]

    def watch(run: Any) -> None:
        if run.last_eval and run._last_eval_steps != last_seen[0]:
            last_seen[0] = run._last_eval_steps
            r = run.last_eval["eval/episode_return"]
            print(f"  {run._last_eval_steps:>9,} env steps  {time.perf_counter() - t0:7.1f} s  eval return {r:8.2f}", flush=True)
            if r >= target and not hit:
                hit.update(env_steps=run._last_eval_steps, seconds=time.perf_counter() - t0, ret=r)
                run.request_stop()

    from maestro.core.run import Run
    from maestro.registry import algo_entry

    with Run(run_cfg, None, seed=args.seed, make_env=make, hooks=(watch,)) as run:
        algo_entry(recipe.algo).train(recipe.algo_config, make(run_cfg.num_envs, args.seed), run)
        watch(run)
    if hit:
        print(f"reached {hit['ret']:.2f} >= {target:.2f} after {hit['env_steps']:,.0f} env steps in {hit['seconds']:.1f} s wall-clock "
              f"({recipe.algo}, {run_cfg.num_envs} envs, torch {torch.__version__}, {torch.get_num_threads()} thread(s))")
    else:
        print(f"did not reach {target:.2f} within {run.env_steps:,} env steps ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
