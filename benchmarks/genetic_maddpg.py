"""Distributed Genetic MADDPG against single-process MADDPG (Zhou & Chen, "Distributed MADDPG",
``papers/002`` Figs. 4-6): the three predators of ``simple_tag`` trained against a frozen
pre-trained prey (``--prey weak``: 300k steps of self-play; ``strong``: 2M; Figs. 4-5), or with the
prey learning alongside from scratch (``--prey scratch``, Fig. 6: the ``both_from_scratch``
recipes; each run's predators then face their own run's prey), at equal env steps per worker.

Each cell trains a shipped recipe with its budget replaced:

- ``single``: ``distributed_maddpg/predators_vs_<prey>_prey`` for ``--steps-per-worker`` env steps;
- ``genetic``: ``distributed_maddpg/genetic_predators_vs_<prey>_prey`` with ``--workers`` K workers,
  ``run.env_steps = K * steps-per-worker`` (a genetic run counts the steps of all its workers),
  every worker syncing to the best worker's critics each ``critic_sync_rate`` (5000) of its steps.

Reported per (prey, mode), mean and Student-t 95% CI over seeds, at the end of the budget:

- ``eval``: the greedy evaluation of the predators' episode return summed over the 3 predators
  (64 fixed-seed episodes; for genetic, the policy of the worker that won the last sync);
- ``train``: the predators' training return (with exploration noise) averaged over the last 20% of
  the budget (for genetic, averaged over the workers' episodes);

plus, per prey, the paired difference genetic minus single of the greedy eval seed by seed (the
genetic run's worker 0 has the single run's seed) with its 95% CI, and one PNG of both curves
against env steps *per worker*; ``table.json`` holds all of it. A frozen prey is read from
``runs/distributed_maddpg_prey_<prey>`` (relative to the working directory), so train it first:

    maestro train distributed_maddpg/prey_weak          # and/or prey_strong
    python benchmarks/genetic_maddpg.py --prey weak --seeds 0 1 2 --steps-per-worker 500000 --out bench/genetic
    python benchmarks/genetic_maddpg.py --prey weak --seeds 0 1 2 --out bench/genetic --table-only

Cells whose run already finished under ``--out`` are not trained again, so several invocations
with different ``--seeds`` / ``--modes`` can run side by side and a last one writes the table. A
cell that stopped short (a killed job, or a larger ``--steps-per-worker`` than it was trained for)
resumes from its newest checkpoint; the checkpoints (every ``--checkpoint-every`` env steps per
worker) hold the replay buffers, so a resumed cell continues where it stopped. The table reads
every run at ``--steps-per-worker``, so a run extended to 2M env steps still gives its 1M row.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from maestro.core.evaluate import mean_ci95
from maestro.core.checkpoint import list_checkpoints
from maestro.recipes import load_recipe, resume_run, train_recipe

METRIC = "episode_return/adversary_sum"
MODES = ("single", "genetic")


def recipe_name(prey: str, mode: str) -> str:
    """The shipped recipe of a cell; ``prey="scratch"`` is Fig. 6's both-sides-learn set-up."""
    genetic = "genetic_" if mode == "genetic" else ""
    return f"distributed_maddpg/{genetic}both_from_scratch" if prey == "scratch" else f"distributed_maddpg/{genetic}predators_vs_{prey}_prey"


def cell_dir(out: Path, prey: str, mode: str, seed: int) -> Path:
    return out / f"{prey}_{mode}_s{seed}"


def run_dirs(cell: Path) -> list[Path]:
    """The run directories under a cell, oldest first."""
    return sorted(d.parent for d in cell.glob("**/config.yaml"))


def read_metrics(cell: Path) -> list[dict]:
    """The metrics rows of the cell's newest run (none if it has no run yet)."""
    runs = run_dirs(cell)
    f = runs[-1] / "metrics.jsonl" if runs else None
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()] if f is not None and f.exists() else []


def finished(cell: Path, total_steps: int) -> bool:
    """Whether the cell's newest run reached ``total_steps`` env steps (all workers') and was evaluated there."""
    rows = read_metrics(cell)
    return bool(rows) and rows[-1]["env_steps"] >= total_steps and any(f"eval/{METRIC}" in r and r["env_steps"] >= total_steps for r in rows)


def train_cell(out: Path, prey: str, mode: str, seed: int, steps: int, workers: int, eval_every: int, ckpt_every: int, replay: bool) -> None:
    """Train one (prey, mode, seed) cell to ``steps`` env steps per worker. A cell whose run stopped
    short (a killed job, or a finished run asked for a larger budget) is resumed from its newest
    checkpoint with the new budget instead of starting again; with ``replay`` the checkpoints hold the
    replay buffers, so the resumed run continues exactly where it stopped."""
    k = workers if mode == "genetic" else 1
    d = cell_dir(out, prey, mode, seed)
    if finished(d, k * steps):
        print(f"{d.name}: already trained", flush=True)
        return
    overrides = [f"run.env_steps={k * steps}", f"run.eval_every={k * eval_every}", f"run.checkpoint_every={k * ckpt_every}"]
    old = [r for r in run_dirs(d) if list_checkpoints(r / "checkpoints")]
    if old:
        result = resume_run(old[-1], overrides, progress=False)
        print(f"{d.name}: resumed to {result.env_steps:,} env steps in {result.dir}", flush=True)
        return
    overrides += [f"seed={seed}", f"algo_config.checkpoint_replay={str(replay).lower()}"]
    if mode == "genetic":
        overrides += [f"distributed.workers={workers}", f"distributed.num_cpus={workers}"]
    recipe = load_recipe(recipe_name(prey, mode), overrides)
    result = train_recipe(recipe, d, progress=False)
    print(f"{d.name}: {result.env_steps:,} env steps in {result.dir}", flush=True)


def summarise(out: Path, prey: str, mode: str, seeds: list[int], steps: int, workers: int) -> dict | None:
    k = workers if mode == "genetic" else 1
    evals, trains, curves, ids = [], [], [], []
    for s in seeds:
        rows = read_metrics(cell_dir(out, prey, mode, s))
        ev = [(r["env_steps"] / k, r[f"eval/{METRIC}"]) for r in rows if f"eval/{METRIC}" in r]
        tr = [(r["env_steps"] / k, r[f"train/{METRIC}"]) for r in rows if f"train/{METRIC}" in r]
        at = [v for x, v in ev if x >= steps]  # a run extended past ``steps`` is read at ``steps``
        if not at:
            continue
        evals.append(at[0])
        ids.append(s)
        trains.append(float(np.mean([v for x, v in tr if 0.8 * steps <= x <= steps])))
        curves.append(np.asarray([(x, v) for x, v in ev if x <= steps]))
    if not evals:
        return None
    em, eci = mean_ci95(np.asarray(evals))
    tm, tci = mean_ci95(np.asarray(trains))
    return {"prey": prey, "mode": mode, "seeds": len(evals), "seed_ids": ids, "eval": em, "eval_ci": eci, "evals": evals, "train": tm, "train_ci": tci, "trains": trains, "curves": curves}


def paired_difference(rows: list[dict], prey: str) -> dict | None:
    """Genetic minus single-process greedy eval, seed by seed (the genetic run's worker 0 has the
    single run's seed), with the Student-t 95% CI of the mean difference; ``None`` unless both modes
    have a seed in common for ``prey``."""
    by_mode = {r["mode"]: dict(zip(r["seed_ids"], r["evals"])) for r in rows if r["prey"] == prey}
    if "single" not in by_mode or "genetic" not in by_mode:
        return None
    common = sorted(set(by_mode["single"]) & set(by_mode["genetic"]))
    if not common:
        return None
    diffs = [by_mode["genetic"][s] - by_mode["single"][s] for s in common]
    mean, ci = mean_ci95(np.asarray(diffs))
    return {"prey": prey, "seed_ids": common, "diffs": diffs, "mean": mean, "ci": ci}


def plot(rows: list[dict], path: Path, steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    preys = sorted({r["prey"] for r in rows})
    fig, axes = plt.subplots(1, len(preys), figsize=(5.5 * len(preys), 3.8), squeeze=False)
    for ax, prey in zip(axes[0], preys):
        for r in (r for r in rows if r["prey"] == prey):
            n = min(len(c) for c in r["curves"])
            x = r["curves"][0][:n, 0]
            y = np.stack([c[:n, 1] for c in r["curves"]])
            mu, sd = y.mean(0), y.std(0)
            ax.plot(x, mu, label=f"{r['mode']} ({r['seeds']} seeds)")
            ax.fill_between(x, mu - sd, mu + sd, alpha=0.2)
        ax.set_title("predators and prey from scratch (Fig. 6)" if prey == "scratch" else f"predators vs {prey} prey")
        ax.set_xlabel("env steps per worker")
        ax.set_ylabel("greedy eval return, 3 predators")
        ax.set_xlim(0, steps)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prey", nargs="+", default=["weak"], choices=["weak", "strong", "scratch"], help="a frozen pre-trained prey (Figs. 4-5), or scratch: the prey learns alongside (Fig. 6)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps-per-worker", type=float, default=5e5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--eval-every", type=float, default=5e4, help="env steps per worker between evaluations")
    p.add_argument("--checkpoint-every", type=float, default=2.5e5, help="env steps per worker between checkpoints")
    p.add_argument("--no-replay-checkpoints", action="store_true", help="leave the replay buffers (about 300 MB per worker) out of the checkpoints; a resumed cell then refills its buffer")
    p.add_argument("--out", type=Path, default=Path("bench/genetic"))
    p.add_argument("--table-only", action="store_true", help="only summarise the finished runs under --out")
    a = p.parse_args(argv)
    steps, every = int(a.steps_per_worker), int(a.eval_every)
    if not a.table_only:
        for prey in a.prey:
            for seed in a.seeds:
                for mode in a.modes:
                    train_cell(a.out, prey, mode, seed, steps, a.workers, every, int(a.checkpoint_every), not a.no_replay_checkpoints)
    rows = [r for prey in a.prey for mode in a.modes if (r := summarise(a.out, prey, mode, a.seeds, steps, a.workers))]
    if not rows:
        print("no finished runs under", a.out, file=sys.stderr)
        return 1
    print(f"\nSimple tag, 3 predators vs a frozen prey, {steps:,} env steps per worker (genetic: {a.workers} workers)\n")
    print("| prey | MADDPG | seeds | greedy eval (mean ± 95% CI) | per seed | training return, last 20% | per seed |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['prey']} | {r['mode']} | {r['seeds']} | {r['eval']:.0f} ± {r['eval_ci']:.0f} | {', '.join(f'{v:.0f}' for v in r['evals'])} "
            f"| {r['train']:.0f} ± {r['train_ci']:.0f} | {', '.join(f'{v:.0f}' for v in r['trains'])} |"
        )
    diffs = [d for prey in a.prey if (d := paired_difference(rows, prey))]
    for d in diffs:
        print(
            f"\n{d['prey']} prey, genetic − single, paired by seed: {d['mean']:+.0f} ± {d['ci']:.0f} "
            f"(per seed {', '.join(f'{v:+.0f}' for v in d['diffs'])}): "
            + ("one seed, no interval" if len(d["diffs"]) < 2 else f"{'not ' if abs(d['mean']) <= d['ci'] else ''}significant at 95%")
        )
    a.out.mkdir(parents=True, exist_ok=True)
    png = a.out / "genetic_vs_single.png"
    plot(rows, png, steps)
    table = {"steps_per_worker": steps, "rows": [{k: v for k, v in r.items() if k != "curves"} for r in rows], "paired_differences": diffs}
    (a.out / "table.json").write_text(json.dumps(table, indent=1))
    print(f"\ncurves: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
