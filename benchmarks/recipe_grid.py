"""Train a grid of shipped recipes x seeds with ``maestro train`` (checkpointed), then one
``maestro report`` over all of them (learning curves per recipe and per paper figure, mean and 95% CI over seeds, and the
final values beside the paper's): one command for a paper's table or figure.

Re-running the same command picks up where it stopped: a cell whose run finished is skipped, a cell
with an unfinished run is resumed from its newest valid checkpoint (``maestro train --resume``), a
missing cell is started. So a long grid can be filled over several sittings, in the background at
low priority, and by two processes at once (the same command twice, e.g. one per core): a grid holds a
lock on the cell it trains (``<out>/<recipe basename>/s<seed>.lock``), and another grid passes over a
held cell to the next one::

    # Guo & Duan (papers/000) Table 1 and Figure 5; Table 2 with master_slave/humanoid_*
    nice -n 19 python benchmarks/recipe_grid.py --recipes 'master_slave/walker2d_*' --seeds 0 1 2 --out bench/master_slave
    # Li & He (papers/004) Figure 2, navigation N = 3, with the subspace local step
    nice -n 19 python benchmarks/recipe_grid.py --recipes 'matrpo/navigation_n3_*' --seeds 0 1 2 --out bench/matrpo_n3 \
        --set algo_config.local_step=subspace --set-only-algo matrpo
    python benchmarks/recipe_grid.py --recipes 'master_slave/*' --out bench/master_slave --report-only

Runs go to ``<out>/<recipe basename>/s<seed>/<name>/<time>-s<seed>/``; the report to
``<out>/report/``. The wall-clock of each cell's sitting is appended to ``<out>/cells.jsonl``.

``--archive DIR`` keeps what a report needs of each finished cell (``config.yaml``, ``metrics.jsonl``,
``eval.json``; no checkpoints) under ``DIR`` with the same layout, plus ``cells.jsonl``, and counts an
archived cell as done: the archive is small enough to commit (``benchmarks/results/``), so a grid
longer than one machine's life is filled over several, and ``maestro report DIR`` redraws its figures
and tables from it. A cell stopped part-way (SIGTERM to the grid: its ``maestro train`` writes a last
checkpoint) is archived with that checkpoint, and the same command on another machine resumes it::

    nice -n 19 python benchmarks/recipe_grid.py --recipes 'master_slave/walker2d_*' --seeds 0 1 2 \
        --out bench/master_slave --archive benchmarks/results/master_slave
"""

from __future__ import annotations

import argparse
import fnmatch
import gzip
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from filelock import FileLock, Timeout

from maestro.core.checkpoint import checkpointed_env_steps, latest_valid
from maestro.recipes import list_recipes, newest_run, parse_yaml


def read_field(path: Path, *keys: str) -> object:
    """One field of a recipe or a run's ``config.yaml``, read as plain YAML: the grid outlives many
    sittings and pulls, so it leaves validating recipes to the ``maestro train`` it starts (whose
    code is the current one; this process's may be older than a recipe's keys)."""
    d = parse_yaml(Path(path).read_text())
    for k in keys:
        d = d[k]
    return d


ARCHIVED = ("metrics.jsonl", "eval.json", "config.yaml")  # config last: it marks the cell archived


def _write(path: Path, data: bytes) -> None:
    """Write beside and rename: an interrupted copy leaves no half file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def archive_run(run_dir: Path, out: Path, archive: Path, checkpoint: bool = False) -> Path:
    """Copy the report's files of ``run_dir`` (below ``out``) to the same place below ``archive``, the
    metrics gzipped (``maestro report`` reads either). ``checkpoint``: the cell is unfinished, and its
    newest valid checkpoint goes along (``checkpoints/`` in the archive, older ones dropped) so that
    another machine resumes it; a finished cell's archive holds no ``checkpoints/``."""
    dest = archive / run_dir.relative_to(out)
    kept = dest / "checkpoints"
    kept.mkdir(parents=True, exist_ok=True)
    newest = latest_valid(run_dir / "checkpoints")[0] if checkpoint else None
    if newest is not None:
        _write(kept / newest.name, newest.read_bytes())
    for name in ARCHIVED:
        if (run_dir / name).is_file():
            data = (run_dir / name).read_bytes()
            if name.endswith(".jsonl"):
                name, data = name + ".gz", gzip.compress(data, mtime=0)
            _write(dest / name, data)
    for old in kept.iterdir():  # the checkpoint of an earlier sitting, or every one once the cell is finished
        if newest is None or old.name != newest.name:
            old.unlink()
    if newest is None:
        kept.rmdir()
    return dest


def restore_run(archived: Path, archive: Path, out: Path) -> Path:
    """An unfinished archived cell copied back below ``out`` (config, metrics, its checkpoint), ready for ``--resume``."""
    dest = out / archived.relative_to(archive)
    (dest / "checkpoints").mkdir(parents=True, exist_ok=True)
    for ckpt in (archived / "checkpoints").iterdir():
        _write(dest / "checkpoints" / ckpt.name, ckpt.read_bytes())
    if (archived / "metrics.jsonl.gz").is_file():
        _write(dest / "metrics.jsonl", gzip.decompress((archived / "metrics.jsonl.gz").read_bytes()))
    for name in ("eval.json", "config.yaml"):
        if (archived / name).is_file():
            _write(dest / name, (archived / name).read_bytes())
    return dest


_child: list[subprocess.Popen] = []
_stopping: list[bool] = []


def maestro(*args: str) -> int:
    """Run ``python -m maestro.cli ARGS`` and wait for it."""
    with subprocess.Popen([sys.executable, "-m", "maestro.cli", *args]) as child:
        _child[:] = [child]
        code = child.wait()
        _child.clear()
    return code


def _stop(signum: int, frame: object) -> None:
    """SIGTERM to the grid: passed on to the running ``maestro train`` (which writes a last checkpoint
    and exits); the grid then archives that unfinished cell and stops."""
    _stopping.append(True)
    for child in _child:
        child.send_signal(signum)


def train_cell(args: argparse.Namespace, known: dict[str, Path], recipe: str, seed: int, cell: Path) -> None:
    """Bring one cell (``recipe`` x ``seed`` under ``cell``) to its budget: skip it if finished (here or in the
    archive), resume it from its newest checkpoint (or the archive's), or start it; log the sitting, archive
    the run, and exit the grid if training stopped early."""
    archived = None if args.archive is None else newest_run(args.archive / cell.relative_to(args.out))
    if archived is not None and not (archived / "checkpoints").exists():
        return  # finished on this machine or an earlier one
    run_dir = newest_run(cell)
    steps = None if run_dir is None else checkpointed_env_steps(run_dir)
    if archived is not None and (steps or 0) < (checkpointed_env_steps(archived) or 0):
        run_dir = restore_run(archived, args.archive, args.out)  # started on another machine
        steps = checkpointed_env_steps(run_dir)
    if steps is not None and steps >= int(read_field(run_dir / "config.yaml", "run", "env_steps")):
        if args.archive is not None:
            archive_run(run_dir, args.out, args.archive)
        return  # finished
    if steps is None:
        run_dir = None  # stopped before its first checkpoint: start the cell again
    t0 = time.time()
    if run_dir is None:
        extra = args.set if args.set_only_algo in (None, read_field(known[recipe], "algo")) else []
        code = maestro("train", recipe, f"--set=seed={seed}", *(f"--set={s}" for s in extra), "--out", str(cell), "--no-progress")
    else:
        code = maestro("train", "--resume", str(run_dir), "--no-progress")
    row = json.dumps({"recipe": recipe, "seed": seed, "resumed": run_dir is not None, "exit": code, "wall_s": round(time.time() - t0, 1)}) + "\n"
    for log in [args.out] + ([args.archive] if args.archive is not None else []):
        with open(log / "cells.jsonl", "a") as f:
            f.write(row)
    latest = newest_run(cell)
    if args.archive is not None and latest is not None:
        if code == 0:  # the budget was reached: the cell is finished
            archive_run(latest, args.out, args.archive)
        elif checkpointed_env_steps(latest) is not None:
            archive_run(latest, args.out, args.archive, checkpoint=True)
    if code != 0 or _stopping:
        sys.exit(f"{recipe} seed {seed} stopped (exit code {code}); re-run this command to resume it")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", nargs="+", required=True, help="recipe names or shell patterns over `maestro list` (e.g. 'master_slave/walker2d_*')")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra override for every cell (e.g. run.env_steps=100000 for a short pass)")
    ap.add_argument("--set-only-algo", default=None, metavar="ALGO", help="apply --set only to the recipes of this algorithm (e.g. matrpo)")
    ap.add_argument("--archive", type=Path, default=None, metavar="DIR", help="keep each finished cell's config, metrics and eval under DIR (committable) and skip cells already there")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, _stop)

    known = list_recipes()
    recipes = [r for pat in args.recipes for r in known if fnmatch.fnmatchcase(r, pat)]
    if not recipes:
        sys.exit(f"no recipe matches {args.recipes}; see `maestro list`")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.archive is not None:
        args.archive.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        for seed in args.seeds:  # seed-major: every recipe gets seed 0 before any gets seed 1
            for recipe in dict.fromkeys(recipes):
                cell = args.out / recipe.split("/")[-1] / f"s{seed}"
                cell.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with FileLock(cell.with_name(cell.name + ".lock"), timeout=0):
                        train_cell(args, known, recipe, seed, cell)
                except Timeout:
                    print(f"{recipe} seed {seed} is held by another grid; passed over", file=sys.stderr)
    root = args.out if args.archive is None else args.archive
    maestro("report", *[str(root / r.split("/")[-1]) for r in dict.fromkeys(recipes) if (root / r.split("/")[-1]).exists()], "--out", str(args.out / "report"))


if __name__ == "__main__":
    main()
