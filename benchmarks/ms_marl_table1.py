"""MS-MARL Table 1 (Kong et al. 2017, arXiv 1712.07305): the models on traffic junction (hard) and
combat (5 vs 5), trained by Algorithm 1 for a given budget, evaluated on fixed-seed test episodes.

Every cell trains the shipped recipe ``recipes/ms_marl/<task>_<model>.yaml`` (its hyperparameters,
batch size ``B`` = 64 / 144 episodes and env settings) with the budget replaced by ``--tj-steps`` /
``--combat-steps`` env steps (valid steps of the batches' episodes), then plays ``--eval-episodes``
episodes with the seed ``--eval-seed`` (the same set for every model) and reports the success rate
(traffic junction: no collision) or the win rate (combat) with a 95% CI, beside the paper's
number where Table 1 has one. It also reports the training speed of each model: episodes per
second of wall time (collection, forward and backward passes, update; evaluation excluded).

    python benchmarks/ms_marl_table1.py                              # a short budget, 1 seed
    python benchmarks/ms_marl_table1.py --tj-steps 2e7 --combat-steps 4e7 --seeds 0 1 2
    python benchmarks/ms_marl_table1.py --tasks combat --models commnet ms_marl ms_marl_no_state
    python benchmarks/ms_marl_table1.py --tasks traffic_junction_3routes --models commnet ms_marl --tj-steps 1e7

Full-length runs take days on a 2-core CPU; a short budget shows the pipeline and the speeds, not
the paper's numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np
import torch

from maestro.core.evaluate import evaluate, mean_ci95
from maestro.core.run import Run
from maestro.recipes import env_factory, list_recipes, load_recipe
from maestro.registry import algo_entry

TASKS = {
    "traffic_junction": ("success", "TJ hard success"),  # 7 routes per entry (CommNet's and IC3Net's code)
    "traffic_junction_3routes": ("success", "TJ hard, 3 routes, success"),  # the paper's text (§4.1); MS-MARL and CommNet only
    "combat": ("win", "combat 5v5 win"),
}
MODELS = ["independent", "commnet", "bicnet", "ms_marl", "ms_marl_gcm", "ms_marl_no_state"]


def run_cell(task: str, model: str, seed: int, env_steps: int, eval_episodes: int, eval_seed: int, device: str) -> dict:
    """Train one (task, model, seed) cell and evaluate it; returns the measured numbers."""
    overrides = [f"run.env_steps={env_steps}", "run.eval_episodes=0", f"seed={seed}", f"run.device={device}", "run.tensorboard=false"]
    recipe = load_recipe(f"ms_marl/{task}_{model}", overrides)
    make = env_factory(recipe)
    env = make(recipe.run.num_envs, seed)
    with Run(recipe.run, None, seed=seed, config=recipe.to_dict(), name=recipe.name) as run:
        t0 = time.perf_counter()
        policy = algo_entry(recipe.algo).train(recipe.algo_config, env, run)
        train_s = time.perf_counter() - t0
        batches, steps = run.iteration, run.env_steps
    episodes = batches * recipe.run.num_envs
    per_ep = evaluate(policy, make(eval_episodes, eval_seed), seed=eval_seed)
    key = TASKS[task][0]
    mean, ci = mean_ci95(per_ep[key])
    return {
        "task": task, "model": model, "seed": seed, "batches": batches, "env_steps": steps, "episodes": episodes,
        "train_s": train_s, "episodes_per_s": episodes / train_s, "env_steps_per_s": steps / train_s,
        "metric": key, "mean": mean, "ci95": ci, "paper": recipe.paper.value if recipe.paper else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--models", nargs="+", default=MODELS[:5], choices=MODELS, help="a (task, model) without a recipe (ms_marl_no_state outside combat; traffic_junction_3routes has ms_marl and commnet) is skipped")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--tj-steps", type=float, default=20_000, help="training env steps per traffic-junction cell")
    p.add_argument("--combat-steps", type=float, default=60_000, help="training env steps per combat cell")
    p.add_argument("--eval-episodes", type=int, default=100)
    p.add_argument("--eval-seed", type=int, default=12345)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write every cell's numbers to this file")
    args = p.parse_args(argv)

    print(f"# MS-MARL Table 1 -- torch {torch.__version__}, {platform.processor() or platform.machine()}, threads {torch.get_num_threads()} -> 1 per run")
    cells = []
    recipes = list_recipes()

    def budget(task: str) -> int:
        """Training env steps of one cell of ``task`` (both junction tasks take ``--tj-steps``)."""
        return int(args.tj_steps if task.startswith("traffic_junction") else args.combat_steps)

    for task in args.tasks:
        steps = budget(task)
        for model in args.models:
            if f"ms_marl/{task}_{model}" not in recipes:
                print(f"  {task:<16} {model:<17} no recipe ms_marl/{task}_{model}: skipped", flush=True)
                continue
            for seed in args.seeds:
                c = run_cell(task, model, seed, steps, args.eval_episodes, args.eval_seed, args.device)
                cells.append(c)
                print(
                    f"  {task:<16} {model:<17} seed {seed}: {c['batches']} batches, {c['env_steps']:,} steps in {c['train_s']:.1f}s "
                    f"({c['episodes_per_s']:.1f} episodes/s, {c['env_steps_per_s']:.0f} steps/s); {c['metric']} {c['mean']:.2f} ± {c['ci95']:.2f}",
                    flush=True,
                )

    print()
    header = ["model"]
    for task in args.tasks:
        header += [f"{TASKS[task][1]} (ours)", "paper", "train episodes/s"]
    rows = []
    for model in args.models:
        row = [model]
        for task in args.tasks:
            mine = [c for c in cells if c["task"] == task and c["model"] == model]
            if not mine:
                row += ["-", "-", "-"]
                continue
            means = np.array([c["mean"] for c in mine])
            spread = f" ± {mean_ci95(means)[1]:.2f} (seeds)" if len(means) > 1 else f" ± {mine[0]['ci95']:.2f}"
            paper = mine[0]["paper"]
            row += [f"{means.mean():.2f}{spread}", "-" if paper is None else f"{paper:.2f}", f"{np.mean([c['episodes_per_s'] for c in mine]):.1f}"]
        rows.append(row)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(x).ljust(w) for x, w in zip(r, widths)) + " |"  # noqa: E731
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    budgets = ", ".join(f"{t}: {budget(t):,} env steps" for t in args.tasks)
    print(f"\nbudget per cell: {budgets}; seeds {args.seeds}; {args.eval_episodes} test episodes (seed {args.eval_seed}), stochastic actions.")
    print("paper: Kong et al. 2017 Table 1 (CommNet and MS-MARL only); '-' = not reported.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(cells, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
