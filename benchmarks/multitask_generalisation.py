"""Multi-task MARL generalisation benchmark (issue 24; Zhang 2020, papers/003).

Trains, per seed, with the recipes of ``recipes/multitask``:

* the multi-task learner on the training sizes (spread: N = 3, 4, 5; tag: 3-5 predators vs 1-2 prey)
  and its three ablations (no skills, no MI reward, no auto-encoder);
* the single-task baselines at the held-out size (MAPPO and MADDPG for spread N = 6, MAPPO for tag
  6 vs 2), with the same total env steps;
* the multi-task learner on the largest training task alone (spread N = 5; the notes' motivation:
  does joint training beat it?);
* a fine-tune of each multi-task run on the held-out size for ``--finetune-fraction`` of the budget
  (its policies at a tenth of the learning rate, ``--finetune-lr``);

then evaluates every finished policy on every size (zero-shot on the held-out ones) with ``maestro
eval``'s machinery (``load_run_policy`` with ``--set`` overrides, fixed seeds), writes a Markdown
table with means and 95% CIs over seeds (``mean_ci95``), plots the skill distributions ``psi(t)``
per task of the multi-task runs, and reports wall-clock per run and per 100k env steps.

    nice -n 19 python benchmarks/multitask_generalisation.py --env-steps 2000000 --seeds 0 1 2 --out bench/multitask
    python benchmarks/multitask_generalisation.py --env-steps 4000 --seeds 0 --episodes 16 --out /tmp/mt  # end to end, tiny
    python benchmarks/multitask_generalisation.py --seeds 0 1 2 --out bench/multitask --report-only

The full budget takes hours per run, so the benchmark is a grid of resumable cells (as
``recipe_grid.py``): each training run is a cell ``<out>/<cell>/s<seed>/`` with checkpoints (replay
buffers included), and re-running the same command skips the finished cells, resumes a stopped one
from its newest checkpoint and starts the missing ones. Cells go seed-major, the comparison's own
first (the multi-task run, the baselines, its fine-tune, then the single-task run, the longest of
them after the multi-task run), the ablations last.
A SIGTERM / Ctrl-C stops the cell at a checkpoint and the script with it. The report covers the
cells finished so far (a row says over how many seeds it is); the wall-clock of a cell is the sum
of its sittings (``<out>/cells.jsonl``).

``--archive DIR`` (as ``recipe_grid.py``'s) keeps each finished cell under ``DIR`` with the same
layout: its config, gzipped metrics and final checkpoint without the replay buffers (the report
evaluates that policy and a fine-tune starts from its networks; a few hundred KB instead of hundreds
of MB), plus ``cells.jsonl``. The archive is small enough to commit (``benchmarks/results/``); the
same command on another machine copies the archived cells back below ``--out`` and counts them as
done. A cell stopped part-way is not archived (its checkpoint carries the replay buffers, about
0.9 KB per env step on the spread tasks): on the same machine it resumes exactly, on a new one it
starts again.

    nice -n 19 python benchmarks/multitask_generalisation.py --env-steps 300000 --seeds 0 1 2 \
        --out bench/multitask --archive benchmarks/results/multitask
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maestro.core.checkpoint import checkpointed_env_steps, latest_valid, save_atomic
from maestro.core.evaluate import ScriptedPolicy, evaluate, mean_ci95, random_policy
from maestro.envs.particle.common import heuristic
from maestro.recipes import env_factory, load_recipe, load_run_policy, newest_run, resume_run, train_recipe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipe_grid import archive_run, restore_run  # noqa: E402  (a sibling script: the grids share one archive format)

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


@dataclass(frozen=True)
class Cell:
    """One training run of the grid (per seed): ``key`` names its directory, ``row`` its table row."""

    key: str
    row: str
    recipe: str
    overrides: tuple[str, ...]
    steps: int
    parent: str | None = None
    """A fine-tune: the key of the cell whose finished run it starts from (``algo_config.init_from``)."""
    evaluate: tuple[str, ...] = ()
    """The task sizes its policy is evaluated on (labels of the family's ``sizes``)."""


FINETUNE_LR = 1e-4
"""The fine-tune's learning rate of the role policies, relation net and task encoder: a tenth of the
learner's default (its critic keeps 1e-3, to fit the new size). At the learner's own rate the
fine-tune on N = 6 lowered seed 2's zero-shot return from -27.16 to -33.26 within 6k env steps
(docs/multitask.md, "The fine-tune")."""


def grid(fam: dict, env_steps: int, finetune_fraction: float, ablations: list[str], extra: tuple[str, ...] = (), finetune_lr: float = FINETUNE_LR) -> list[Cell]:
    """The cells of one seed in training order: the comparison's own first, the ablations last;
    ``extra`` overrides go to every cell (``--set``)."""
    ft_steps = max(1, int(env_steps * finetune_fraction))
    held = fam["sizes"][fam["held_out"]]

    def multitask(ab: str) -> list[Cell]:
        key = f"multitask_{ab}"
        return [
            Cell(key, f"multitask ({ab})", fam["train"], tuple(ABLATIONS[ab]), env_steps, evaluate=tuple(fam["sizes"])),
            Cell(f"{key}_finetune", f"multitask ({ab}), fine-tuned", fam["train"],
                 (*ABLATIONS[ab], "algo_config.tasks=[]", f"algo_config.warmup_steps={min(2000, ft_steps // 4)}",
                  f"algo_config.lr={finetune_lr}", f"algo_config.relation_lr={finetune_lr}", *held),
                 ft_steps, parent=key, evaluate=(fam["held_out"],)),
        ]

    cells = multitask("full")[:1]
    cells += [Cell(Path(b).name, f"{load_recipe(b).algo}, {fam['held_out']} alone", b, (), env_steps, evaluate=(fam["held_out"],)) for b in fam["baselines"]]
    cells += multitask("full")[1:]  # the cheap cells of the comparison before the long single-task run
    if fam["single"]:
        cells.append(Cell("multitask_single", f"multitask, {fam['largest']} alone", fam["single"], (), env_steps, evaluate=(fam["largest"],)))
    for ab in ablations:
        if ab != "full":
            cells += multitask(ab)
    return [replace(c, overrides=(*c.overrides, *extra)) for c in cells]


def cell_dir(out: Path, cell: Cell, seed: int) -> Path:
    return out / cell.key / f"s{seed}"


def run_of(out: Path, cell: Cell, seed: int) -> Path | None:
    """The cell's newest run directory, or None."""
    return newest_run(cell_dir(out, cell, seed))


def trained_steps(run_dir: Path | None) -> int:
    """Env steps of the run's newest valid checkpoint (0: no run or no checkpoint)."""
    return (checkpointed_env_steps(run_dir) if run_dir is not None else None) or 0


def train_cell(out: Path, cell: Cell, seed: int, archive: Path | None = None) -> bool:
    """Train (or resume) one cell to its budget, and archive it once finished (``archive``); False when
    a signal stopped it (the script stops too)."""
    run_dir = run_of(out, cell, seed)
    done = trained_steps(run_dir)
    if done >= cell.steps:
        if archive is not None and newest_run(archive / cell.key / f"s{seed}") is None:
            archive_cell(run_dir, out, archive)  # finished before the archive was asked for
        return True
    budget = [f"run.env_steps={cell.steps}", f"run.checkpoint_every={max(1, cell.steps // 10)}", "run.keep_checkpoints=2"]
    t0 = time.perf_counter()
    if done > 0:
        result = resume_run(run_dir, budget, progress=False)
    else:
        extra = list(cell.overrides)
        if cell.parent is not None:
            parent = run_of(out, replace(cell, key=cell.parent), seed)
            extra.append(f"algo_config.init_from={parent}")
        recipe = load_recipe(cell.recipe, [f"name=bench_{cell.key}", f"seed={seed}", *budget, *extra])
        result = train_recipe(recipe, cell_dir(out, cell, seed), progress=False)
    sec = time.perf_counter() - t0
    row = json.dumps({"cell": cell.key, "seed": seed, "from": done, "to": result.env_steps, "wall_s": round(sec, 1), "stopped": result.stopped}) + "\n"
    for log in [out] + ([archive] if archive is not None else []):
        with open(log / "cells.jsonl", "a") as f:
            f.write(row)
    if archive is not None and result.env_steps >= cell.steps:
        archive_cell(run_of(out, cell, seed), out, archive)
    print(f"[seed {seed}] {cell.row}: {done:,} -> {result.env_steps:,} env steps in {sec:.0f} s", flush=True)
    return not result.stopped


def without_replay(tree: Any) -> Any:
    """A checkpoint's content with every ``replay`` entry (MADDPG's and the multitask learner's
    buffers) left out: what evaluating the policy or fine-tuning from the networks needs."""
    if isinstance(tree, dict):
        return {k: without_replay(v) for k, v in tree.items() if k != "replay"}
    if isinstance(tree, list):
        return [without_replay(v) for v in tree]
    return tree


def archive_cell(run_dir: Path, out: Path, archive: Path) -> Path:
    """Keep a finished cell below ``archive``: ``recipe_grid``'s files (config, gzipped metrics) and the
    run's final checkpoint without its replay buffers."""
    dest = archive_run(run_dir, out, archive)
    path, payload, _ = latest_valid(run_dir / "checkpoints")
    payload.pop("format")
    save_atomic(without_replay(payload), dest / "checkpoints" / path.name)
    return dest


def restore_archived(out: Path, archive: Path, cells: list[Cell], seeds: list[int]) -> None:
    """Copy every archived cell that ``out`` has not finished back below ``out`` (it becomes the cell's
    newest run, so it counts as done, is evaluated and is a fine-tune's parent)."""
    for seed in seeds:
        for c in cells:
            archived = newest_run(archive / c.key / f"s{seed}")
            if archived is not None and trained_steps(archived) >= c.steps > trained_steps(run_of(out, c, seed)):
                restore_run(archived, archive, out)


def wall_clock(out: Path) -> dict[tuple[str, int], float]:
    """Seconds spent on each (cell, seed), summed over the sittings of its run: a sitting from env step
    0 starts the run again (a stopped cell is not archived, so on another machine it restarts), and
    the sittings before it are not counted."""
    total: dict[tuple[str, int], float] = {}
    path = out / "cells.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        r = json.loads(line)
        key = (r["cell"], r["seed"])
        total[key] = (0.0 if r["from"] == 0 else total.get(key, 0.0)) + r["wall_s"]
    return total


def evaluate_on(run_dir: Path, overrides: list[str], episodes: int, seed: int) -> float:
    """Mean episode return (first group, e.g. the predators) of the run's policy on the task ``overrides``."""
    recipe, policy, _ = load_run_policy(run_dir, "cpu", overrides)
    env = env_factory(recipe)(episodes, seed)
    return float(evaluate(policy, env, seed=seed, deterministic=True)["episode_return"].mean())


def reference_returns(fam: dict, episodes: int, seed: int) -> dict[str, dict[str, float]]:
    """Per task size, the mean return of uniform random play and of the env's scripted heuristic
    (``maestro.envs.particle``) on the same episodes: the scale the returns are read on."""
    out: dict[str, dict[str, float]] = {"random": {}, "heuristic": {}}
    for task, over in fam["sizes"].items():
        recipe = load_recipe(fam["train"], over)
        script = heuristic(recipe.env)
        for name, policy in (("random", random_policy()), ("heuristic", ScriptedPolicy(lambda e, g: script(e)))):
            env = env_factory(recipe)(episodes, seed)
            out[name][task] = float(evaluate(policy, env, seed=seed, deterministic=True)["episode_return"].mean())
    return out


def gap_closed(value: float, baseline: float, random: float) -> float:
    """The share of the random-to-baseline gap a return closes, ``(value - random) / (baseline - random)``:
    the issue's "90% of the return" read on a scale where random play is 0 and the baseline 1
    (returns here are negative, so a plain ratio would not say "worse" or "better")."""
    return (value - random) / (baseline - random)


def psi_of(run_dir: Path, sizes: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """``softmax(psi(t))`` of a multi-task run's task encoder for every task size: label -> ``(K,)``."""
    probs = {}
    for label, over in sizes.items():
        recipe, policy, _ = load_run_policy(run_dir, "cpu", over)
        env = env_factory(recipe)(1, 0)
        desc = torch.tensor([list(env.task_description().values())], dtype=torch.float32)
        with torch.no_grad():
            probs[label] = torch.softmax(policy.encoder(desc), -1)[0].numpy()
    return probs


def psi_figure(runs: list[Path], sizes: dict[str, list[str]], path: Path) -> dict[str, list[list[float]]]:
    """Bar charts of ``softmax(psi(t))`` per task size, one panel per run (seed): a skill's index is
    arbitrary and differs between seeds, so the seeds are not averaged. Returns the per-run
    distributions (label -> runs x K) for the report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_run = [psi_of(r, sizes) for r in runs]
    labels = list(sizes)
    K = len(per_run[0][labels[0]])
    fig, axes = plt.subplots(1, len(per_run), figsize=(4.5 * len(per_run), 3.5), sharey=True, squeeze=False)
    width = 0.8 / len(labels)
    for ax, run, probs in zip(axes[0], runs, per_run):
        for i, label in enumerate(labels):
            ax.bar(np.arange(K) + i * width, probs[label], width, label=label)
        ax.set_xticks(np.arange(K) + 0.4 - width / 2, [f"z={k}" for k in range(K)])
        ax.set_title(run.parent.parent.name if run.parent.parent.name.startswith("s") else run.parent.name, fontsize=9)
    axes[0][0].set_ylabel("psi(t): probability")
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.suptitle("skill distributions per task (one panel per seed; skill indices are arbitrary per seed)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return {label: [r[label].tolist() for r in per_run] for label in labels}


def paired(a: dict[int, float], b: dict[int, float]) -> dict[int, float]:
    """Per-seed differences ``a - b`` over the seeds both have (each seed's runs share their seed)."""
    return {s: a[s] - b[s] for s in sorted(a) if s in b}


def cell(values: list[float]) -> str:
    if not values:
        return "-"
    m, ci = mean_ci95(np.array(values))
    return f"{m:.2f} ± {ci:.2f}" if len(values) > 1 else f"{m:.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", choices=sorted(FAMILIES), default="spread")
    p.add_argument("--env-steps", type=int, default=2_000_000, help="budget of every training run (all tasks together)")
    p.add_argument("--finetune-fraction", type=float, default=0.1, help="fine-tuning budget as a fraction of --env-steps")
    p.add_argument("--finetune-lr", type=float, default=FINETUNE_LR, help="the fine-tune's learning rate of policies, relation net and task encoder (its critic keeps the recipe's)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--episodes", type=int, default=100, help="evaluation episodes per task")
    p.add_argument("--eval-seed", type=int, default=12345)
    p.add_argument("--ablations", nargs="*", default=list(ABLATIONS), choices=list(ABLATIONS))
    p.add_argument("--out", default="runs/bench_multitask")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every cell (as maestro train --set), e.g. run.num_envs=16")
    p.add_argument("--archive", type=Path, default=None, metavar="DIR", help="keep each finished cell (config, metrics, final checkpoint without replay) under DIR, committable; restore them from there on a new machine")
    p.add_argument("--report-only", action="store_true", help="evaluate the finished cells and write the report; train nothing")
    args = p.parse_args(argv)
    fam, out = FAMILIES[args.family], Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cells = grid(fam, args.env_steps, args.finetune_fraction, args.ablations, tuple(args.set), args.finetune_lr)
    if args.archive is not None:
        args.archive.mkdir(parents=True, exist_ok=True)
        restore_archived(out, args.archive, cells, args.seeds)
    if not args.report_only:
        for seed in args.seeds:
            for c in cells:
                if not train_cell(out, c, seed, args.archive):
                    print(f"stopped in {c.key} seed {seed}; run the same command again to resume", flush=True)
                    return 1

    results: dict[str, dict[str, dict[int, float]]] = {}  # row -> task -> seed -> return
    clock: dict[str, list[tuple[float, int]]] = {}  # row -> (seconds, env steps)
    spent = wall_clock(out if args.archive is None else args.archive)
    full_runs: list[Path] = []
    for seed in args.seeds:
        for c in cells:
            run_dir = run_of(out, c, seed)
            if trained_steps(run_dir) < c.steps:
                continue  # not finished: left out of the report
            if c.key == "multitask_full":
                full_runs.append(run_dir)
            for task in c.evaluate:
                results.setdefault(c.row, {}).setdefault(task, {})[seed] = evaluate_on(run_dir, fam["sizes"][task], args.episodes, args.eval_seed)
            if (c.key, seed) in spent:
                clock.setdefault(c.row, []).append((spent[(c.key, seed)], c.steps))

    refs = reference_returns(fam, args.episodes, args.eval_seed)
    for name, per_task in refs.items():
        results[f"{name} (reference)"] = {t: {-1: v} for t, v in per_task.items()}
    tasks = list(fam["sizes"])
    lines = [
        f"# Multi-task generalisation ({args.family}): {args.env_steps:,} env steps per run, fine-tune {max(1, int(args.env_steps * args.finetune_fraction)):,}, seeds {args.seeds}, {args.episodes} episodes per task",
        "",
        f"Mean episode return (deterministic actions), ± the 95% CI over seeds (n: seeds finished); trained on {', '.join(sorted(fam['trained_on']))}, the other sizes zero-shot; held out for the baselines: {fam['held_out']}.",
        "",
        "| policy | n | " + " | ".join(tasks) + " | s per 100k steps |",
        "|---|---|" + "---|" * (len(tasks) + 1),
    ]
    for row, per_task in results.items():
        n = max(len(v) for v in per_task.values())
        rate = f"{np.mean([1e5 * s / k for s, k in clock[row]]):.0f}" if row in clock else "-"
        lines.append(f"| {row} | {n} | " + " | ".join(cell(list(per_task.get(t, {}).values())) for t in tasks) + f" | {rate} |")
    held, largest = fam["held_out"], fam["largest"]
    base_rows = [r for r in results if r.endswith(f"{held} alone") and results[r].get(held)]
    if base_rows and "multitask (full)" in results:
        best = max(base_rows, key=lambda r: np.mean(list(results[r][held].values())))
        base, rnd = float(np.mean(list(results[best][held].values()))), refs["random"][held]
        lines += ["", f"Share of the gap from random play ({rnd:.2f}) to the stronger single-task baseline at {held} ({best}: {base:.2f}) closed (the target: >= 0.9 zero-shot, > 1 fine-tuned):", ""]
        for row in ("multitask (full)", "multitask (full), fine-tuned"):
            if results.get(row, {}).get(held):
                vals = [gap_closed(v, base, rnd) for v in results[row][held].values()]
                lines.append(f"- {row}: {cell(vals)} (per seed {', '.join(f'{v:.2f}' for v in vals)})")
    # the same comparisons paired by seed (a run and its baseline share their seed): mean difference ± 95% CI
    pairs = [(f"multitask (full) - {r}", "multitask (full)", r, held) for r in base_rows]
    pairs += [(f"multitask (full), fine-tuned - {r}", "multitask (full), fine-tuned", r, held) for r in base_rows]
    pairs.append(("the fine-tune's gain: fine-tuned - zero-shot", "multitask (full), fine-tuned", "multitask (full)", held))
    single = f"multitask, {largest} alone"
    pairs.append((f"joint training - {single} (the notes' motivation)", "multitask (full)", single, largest))
    for ab in ABLATIONS:
        if ab != "full":
            pairs.append((f"multitask ({ab}) - multitask (full)", f"multitask ({ab})", "multitask (full)", held))
    diffs = []
    for label, a, b, task in pairs:
        d = paired(results.get(a, {}).get(task, {}), results.get(b, {}).get(task, {}))
        if d:
            diffs.append(f"- {label}, at {task}: {cell(list(d.values()))} (per seed {', '.join(f's{s} {v:+.2f}' for s, v in d.items())})")
    if diffs:
        lines += ["", "Differences of return paired by seed (positive: the first is better), ± the 95% CI over seeds:", "", *diffs]
    lines += ["", "Wall-clock per run (s): " + "; ".join(f"{row}: {np.mean([s for s, _ in c]):.0f}" for row, c in clock.items())]
    psi: dict[str, list[list[float]]] = {}
    if full_runs:
        fig = out / f"psi_{args.family}.png"
        psi = psi_figure(full_runs, fam["sizes"], fig)
        lines += ["", f"![psi(t) per task]({fig.name})"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"results": results, "clock": clock, "psi": psi}, indent=2))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
