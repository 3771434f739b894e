"""Tables 1 and 2 of the master-slave framework (Guo & Duan, papers/000): every cell a shipped recipe
``recipes/master_slave/<body>_<method>.yaml`` trained with ``maestro train`` (checkpointed), then one
``maestro report`` over all of them (learning curves per recipe, mean and std over seeds, and the
final values beside the paper's).

Re-running the same command picks up where it stopped: a cell whose run finished is skipped, a cell
with an unfinished run is resumed from its newest valid checkpoint (``maestro train --resume``), a
missing cell is started. So a long table can be filled over several sittings, e.g. in the
background at low priority::

    nice -n 19 python benchmarks/master_slave_tables.py --bodies walker2d --seeds 0 1 2 --out bench/master_slave
    python benchmarks/master_slave_tables.py --bodies walker2d humanoid --seeds 0 1 2 --out bench/master_slave --report-only

Runs go to ``<out>/<recipe>/s<seed>/<name>/<time>-s<seed>/``; the report to ``<out>/report/``. The
wall-clock of each cell's sitting is appended to ``<out>/cells.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from maestro.core.checkpoint import latest_valid
from maestro.recipes import load_recipe

METHODS = ["master", "slave", "pretraining", "multitasking", "gradient_momentum"]


def run_dir_of(cell: Path) -> Path | None:
    """The run directory inside a cell's ``--out`` (``<name>/<time>-s<seed>``), or None."""
    found = sorted(p.parent for p in cell.glob("*/*/config.yaml"))
    return found[-1] if found else None


def finished(run_dir: Path) -> bool:
    """Whether the run's newest valid checkpoint has spent the budget of its config."""
    budget = load_recipe(run_dir / "config.yaml").run.env_steps
    try:
        _, payload, _ = latest_valid(run_dir / "checkpoints")
    except Exception:  # no valid checkpoint yet: start again
        return False
    return int(payload["run"]["env_steps"]) >= budget


def maestro(*args: str) -> int:
    return subprocess.call([sys.executable, "-m", "maestro.cli", *args])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bodies", nargs="+", default=["walker2d"], choices=["walker2d", "humanoid"])
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--out", type=Path, default=Path("bench/master_slave"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra override for every cell (e.g. run.env_steps=100000 for a short pass)")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        for seed in args.seeds:  # seed-major: every method gets seed 0 before any gets seed 1
            for body in args.bodies:
                for method in args.methods:
                    recipe = f"master_slave/{body}_{method}"
                    cell = args.out / f"{body}_{method}" / f"s{seed}"
                    run_dir = run_dir_of(cell)
                    if run_dir is not None and finished(run_dir):
                        continue
                    t0 = time.time()
                    if run_dir is None:
                        sets = [f"--set=seed={seed}", *(f"--set={s}" for s in args.set)]
                        code = maestro("train", recipe, *sets, "--out", str(cell), "--no-progress")
                    else:
                        code = maestro("train", "--resume", str(run_dir), "--no-progress")
                    with open(args.out / "cells.jsonl", "a") as f:
                        f.write(json.dumps({"recipe": recipe, "seed": seed, "resumed": run_dir is not None, "exit": code, "wall_s": round(time.time() - t0, 1)}) + "\n")
                    if code != 0:
                        sys.exit(f"{recipe} seed {seed} stopped with exit code {code}; re-run this command to resume it")
    maestro("report", str(args.out), "--out", str(args.out / "report"))


if __name__ == "__main__":
    main()
