"""``python -m maestro.demo`` (``make demo``): train MAPPO on simple_spread briefly, then evaluate,
render and report it, printing where everything went.

The budget (300k env steps, about a minute or two on 2 CPU cores) shows learning, not the final
performance: ``maestro train mappo/simple_spread`` runs the full recipe.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m maestro.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="where the run and its report go")
    p.add_argument("--env-steps", type=int, default=300_000, help="training budget")
    args = p.parse_args(argv)

    from maestro.cli import _setup_logging, main as cli

    _setup_logging(False)
    from maestro.recipes import load_recipe, train_recipe

    t0 = time.perf_counter()
    recipe = load_recipe(
        "mappo/simple_spread",
        [f"run.env_steps={args.env_steps}", f"run.eval_every={max(args.env_steps // 4, 1)}", "run.eval_episodes=64", f"run.checkpoint_every={args.env_steps // 2}"],
    )
    print(f"maestro demo: {recipe.algo} on {recipe.env} (N={recipe.env_config.n_agents}) for {args.env_steps:,} env steps, {recipe.run.num_envs} env copies")
    result = train_recipe(recipe, Path(args.out))
    print(f"trained in {time.perf_counter() - t0:.0f} s")
    run_dir = result.dir
    code = cli(["eval", str(run_dir), "--episodes", "100"])
    code |= cli(["render", str(run_dir), "--out", str(run_dir / "episode.gif")])
    code |= cli(["report", str(run_dir), "--out", str(run_dir / "report")])
    print("\nresults:")
    print(f"  run directory      {run_dir}  (config.yaml, metrics.jsonl, checkpoints/, tb/ for `tensorboard --logdir {run_dir / 'tb'}`)")
    print(f"  evaluation         {run_dir / 'eval.json'}")
    print(f"  episode animation  {run_dir / 'episode.gif'}")
    print(f"  report             {run_dir / 'report' / 'report.md'}  (curves: {run_dir / 'report' / (recipe.name + '.png')})")
    print(f"  resume / extend    maestro train --resume {run_dir} --set run.env_steps=2000000")
    return code


if __name__ == "__main__":
    sys.exit(main())
