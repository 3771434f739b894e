"""Multi-task MARL generalisation benchmark (issue 24; Zhang 2020, papers/003).

Trains, per seed, with the recipes of ``recipes/multitask``:

* the multi-task learner on the training sizes (spread: N = 3, 4, 5; tag: 3-5 predators vs 1-2 prey)
  and its three ablations (no skills, no MI reward, no auto-encoder);
* the single-task baselines at the held-out size (MAPPO and MADDPG for spread N = 6, MAPPO for tag
  6 vs 2), with the same total env steps;
* the multi-task learner on the largest training task alone (spread N = 5; the notes' motivation:
  does joint training beat it?);
* a fine-tune of each multi-task run on the held-out size for ``--finetune-fraction`` of the budget;

then evaluates every policy on every size (zero-shot on the held-out ones) with ``maestro eval``'s
machinery (``load_run_policy`` with ``--set`` overrides, fixed seeds), writes a Markdown table with
means and 95% CIs over seeds (``mean_ci95``), plots the skill distributions ``psi(t)`` per task of
the multi-task runs, and reports wall-clock per run and per 100k env steps (to plan a full budget).

    python benchmarks/multitask_generalisation.py --env-steps 2000000 --seeds 0 1 2 --out runs/bench_multitask
    python benchmarks/multitask_generalisation.py --env-steps 4000 --seeds 0 --episodes 16   # end to end, tiny

Runs are kept in ``--out`` (run directories as ``maestro train`` writes them); the report is
``--out/report.md``, the figure ``--out/psi_<family>.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from maestro.core.evaluate import evaluate, mean_ci95
from maestro.recipes import env_factory, load_recipe, load_run_policy, train_recipe

FAMILIES = {
    "spread": {
        "train": "multitask/spread_train345",
        "single": "multitask/spread_single5",
        "baselines": ["multitask/mappo_spread6", "multitask/maddpg_spread6"],
        "sizes": {f"N={n}": [f"env_config.n_agents={n}"] for n in (2, 3, 4, 5, 6, 8)},
        "held_out": "N=6",
        "largest": "N=5",
        "trained_on": {"N=3", "N=4", "N=5"},
    },
    "tag": {
        "train": "multitask/tag_train",
        "single": None,
        "baselines": ["multitask/mappo_tag6"],
        "sizes": {
            f"{a}v{g}": [f"env_config.num_adversaries={a}", f"env_config.num_good={g}"]
            for a, g in ((2, 1), (3, 1), (4, 1), (5, 2), (6, 2), (8, 3))
        },
        "held_out": "6v2",
        "largest": "5v2",
        "trained_on": {"3v1", "4v1", "5v2"},
    },
}
ABLATIONS = {"full": [], "no_skills": ["algo_config.skills=false"], "no_mi": ["algo_config.mi_reward=false"], "no_ae": ["algo_config.autoencoder=false"]}
QUIET = ["run.progress=false", "run.tensorboard=false", "run.eval_every=0", "run.eval_episodes=0", "run.checkpoint_every=0"]


def train(recipe: str, name: str, seed: int, steps: int, out: Path, extra: list[str]) -> tuple[Path, float]:
    """Train ``recipe`` as run ``name``; returns its directory and wall-clock seconds."""
    r = load_recipe(recipe, [f"name={name}", f"seed={seed}", f"run.env_steps={steps}", *QUIET, *extra])
    t0 = time.perf_counter()
    result = train_recipe(r, out)
    return result.dir, time.perf_counter() - t0


def evaluate_on(run_dir: Path, overrides: list[str], episodes: int, seed: int) -> float:
    """Mean episode return (first group, e.g. the predators) of the run's policy on the task ``overrides``."""
    recipe, policy, _ = load_run_policy(run_dir, "cpu", overrides)
    env = env_factory(recipe)(episodes, seed)
    return float(evaluate(policy, env, seed=seed, deterministic=True)["episode_return"].mean())


def psi_figure(run_dir: Path, sizes: dict[str, list[str]], path: Path) -> None:
    """Bar chart of ``softmax(psi(t))`` of a multi-task run's policy for every task size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs = {}
    for label, over in sizes.items():
        recipe, policy, _ = load_run_policy(run_dir, "cpu", over)
        env = env_factory(recipe)(1, 0)
        desc = torch.tensor([list(env.task_description().values())], dtype=torch.float32)
        with torch.no_grad():
            probs[label] = torch.softmax(policy.encoder(desc), -1)[0].numpy()
    K = len(next(iter(probs.values())))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(probs)
    for i, (label, p) in enumerate(probs.items()):
        ax.bar(np.arange(K) + i * width, p, width, label=label)
    ax.set_xticks(np.arange(K) + 0.4 - width / 2, [f"z={k}" for k in range(K)])
    ax.set_ylabel("psi(t): probability")
    ax.set_title(f"skill distributions per task ({run_dir.parent.name})")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cell(values: list[float]) -> str:
    if not values:
        return "-"
    m, ci = mean_ci95(np.array(values))
    return f"{m:.2f} ± {ci:.2f}" if len(values) > 1 else f"{m:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", choices=sorted(FAMILIES), default="spread")
    p.add_argument("--env-steps", type=int, default=2_000_000, help="budget of every training run (all tasks together)")
    p.add_argument("--finetune-fraction", type=float, default=0.1, help="fine-tuning budget as a fraction of --env-steps")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--episodes", type=int, default=100, help="evaluation episodes per task")
    p.add_argument("--eval-seed", type=int, default=12345)
    p.add_argument("--ablations", nargs="*", default=list(ABLATIONS), choices=list(ABLATIONS))
    p.add_argument("--out", default="runs/bench_multitask")
    args = p.parse_args()
    fam, out = FAMILIES[args.family], Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, list[float]]] = {}  # row -> task -> per-seed returns
    clock: dict[str, list[tuple[float, int]]] = {}  # row -> (seconds, env steps)
    first_full: Path | None = None

    def record(row: str, task: str, value: float) -> None:
        results.setdefault(row, {}).setdefault(task, []).append(value)

    ft_steps = max(1, int(args.env_steps * args.finetune_fraction))
    for seed in args.seeds:
        for ab in args.ablations:
            row = f"multitask ({ab})"
            run_dir, sec = train(fam["train"], f"bench_{args.family}_{ab}", seed, args.env_steps, out, ABLATIONS[ab])
            clock.setdefault(row, []).append((sec, args.env_steps))
            print(f"[seed {seed}] {row}: {sec:.0f} s", flush=True)
            if ab == "full" and first_full is None:
                first_full = run_dir
            for task, over in fam["sizes"].items():
                record(row, task, evaluate_on(run_dir, over, args.episodes, args.eval_seed))
            held = fam["sizes"][fam["held_out"]]
            ft_dir, sec = train(fam["train"], f"bench_{args.family}_{ab}_finetune", seed, ft_steps, out, [*ABLATIONS[ab], "algo_config.tasks=[]", f"algo_config.init_from={run_dir}", f"algo_config.warmup_steps={min(2000, ft_steps // 4)}", *held])
            clock.setdefault(f"{row}, fine-tuned", []).append((sec, ft_steps))
            record(f"{row}, fine-tuned", fam["held_out"], evaluate_on(ft_dir, held, args.episodes, args.eval_seed))
        if fam["single"]:
            row = f"multitask, {fam['largest']} alone"
            run_dir, sec = train(fam["single"], f"bench_{args.family}_single", seed, args.env_steps, out, [])
            clock.setdefault(row, []).append((sec, args.env_steps))
            record(row, fam["largest"], evaluate_on(run_dir, fam["sizes"][fam["largest"]], args.episodes, args.eval_seed))
        for base in fam["baselines"]:
            row = f"{load_recipe(base).algo}, {fam['held_out']} alone"
            run_dir, sec = train(base, f"bench_{args.family}_{Path(base).name}", seed, args.env_steps, out, [])
            clock.setdefault(row, []).append((sec, args.env_steps))
            print(f"[seed {seed}] {row}: {sec:.0f} s", flush=True)
            record(row, fam["held_out"], evaluate_on(run_dir, fam["sizes"][fam["held_out"]], args.episodes, args.eval_seed))

    tasks = list(fam["sizes"])
    lines = [
        f"# Multi-task generalisation ({args.family}): {args.env_steps:,} env steps per run, fine-tune {ft_steps:,}, seeds {args.seeds}, {args.episodes} episodes per task",
        "",
        f"Mean episode return (deterministic actions), ± the 95% CI over seeds; trained on {', '.join(sorted(fam['trained_on']))}, the other sizes zero-shot; held out for the baselines: {fam['held_out']}.",
        "",
        "| policy | " + " | ".join(tasks) + " | s per 100k steps |",
        "|---|" + "---|" * (len(tasks) + 1),
    ]
    for row, per_task in results.items():
        rate = np.mean([1e5 * s / n for s, n in clock[row]])
        lines.append(f"| {row} | " + " | ".join(cell(per_task.get(t, [])) for t in tasks) + f" | {rate:.0f} |")
    lines += ["", "Wall-clock per run (s): " + "; ".join(f"{row}: {np.mean([s for s, _ in c]):.0f}" for row, c in clock.items())]
    if first_full is not None:
        fig = out / f"psi_{args.family}.png"
        psi_figure(first_full, fam["sizes"], fig)
        lines += ["", f"![psi(t) per task]({fig.name})"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"results": results, "clock": clock}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
