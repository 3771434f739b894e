"""The ``maestro`` command line: list, train, eval, render, report.

    maestro list
    maestro train mappo/simple_spread --set run.env_steps=200000 --set algo_config.lr=3e-4
    maestro train --resume runs/mappo_simple_spread/20250101-120000-s0
    maestro eval runs/mappo_simple_spread/20250101-120000-s0 --episodes 100
    maestro eval runs/multitask_spread_train345/20250101-120000-s0 --set env_config.n_agents=6
    maestro render runs/mappo_simple_spread/20250101-120000-s0 --out episode.gif
    maestro report runs/mappo_simple_spread --out reports/spread

User errors (unknown recipe key, wrong type, an algorithm that cannot handle the env, a missing or
corrupt checkpoint, a run directory that does not exist) print one ``error:`` line and exit with
status 2, without a traceback (set ``MAESTRO_DEBUG=1`` to see one).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

EXIT_USER_ERROR = 2


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname).1s %(message)s"))
    logger = logging.getLogger("maestro")
    logger.handlers = [h for h in logger.handlers if not isinstance(h, logging.StreamHandler) or isinstance(h, logging.FileHandler)]
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


# ---------------------------------------------------------------------- list
def cmd_list(args: argparse.Namespace) -> int:
    from maestro.algos import incompatibility
    from maestro.recipes import list_recipes, load_recipe
    from maestro.registry import algo_entry, algo_names, env_entry, env_names

    algos = algo_names()
    print("Environments:")
    for name in env_names():
        e = env_entry(name)
        try:
            env = e.cls(e.config(), num_envs=1, seed=0, device="cpu")
            spec = env.spec
            groups = ", ".join(
                f"{g}×{gs.n_agents} {'Discrete(%d)' % gs.action_dim if gs.discrete else 'Box(%d)' % gs.action_dim}" for g, gs in spec.groups.items()
            )
            ok = [a for a in algos if incompatibility(a, spec) is None]
            print(f"  {name:<22} {e.summary}")
            print(f"  {'':<22} groups: {groups}; max_steps {spec.max_steps}; algorithms: {', '.join(ok) or 'none'}")
        except Exception as err:  # an env that cannot be built with defaults is still listed
            print(f"  {name:<22} {e.summary} (cannot build with defaults: {err})")
    print("\nAlgorithms:")
    for name in algos:
        a = algo_entry(name)
        print(f"  {name:<22} {a.summary}")
        print(f"  {'':<22} capabilities: {', '.join(sorted(a.capabilities))}")
    print("\nRecipes:")
    for name, path in list_recipes().items():
        try:
            r = load_recipe(path)
            paper = f"; paper: {r.paper.reference}" if r.paper else ""
            print(f"  {name:<22} {r.env} + {r.algo}, {r.run.env_steps:,} env steps{paper}")
        except Exception as err:
            print(f"  {name:<22} (invalid: {err})")
    return 0


# ---------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    from maestro.recipes import load_recipe, resume_run, train_recipe

    progress = False if args.no_progress else None
    if args.ray_address:
        args.set.append(f"distributed.address={args.ray_address}")
    if args.resume:
        if args.recipe:
            raise _UserError("give either RECIPE or --resume RUN, not both")
        result = resume_run(args.resume, args.set, progress=progress)
    else:
        if not args.recipe:
            raise _UserError("train needs a RECIPE (a file or a name from `maestro list`) or --resume RUN")
        recipe = load_recipe(args.recipe, args.set)
        result = train_recipe(recipe, args.out, progress=progress)
    if result.stopped:
        sig = signal.Signals(result.stop_signal).name if result.stop_signal else "a stop request"
        print(f"stopped by {sig} at {result.env_steps:,} env steps; checkpoint: {result.checkpoint}")
        print(f"continue with: maestro train --resume {result.dir}")
        return 128 + int(result.stop_signal) if result.stop_signal else 0
    print(f"trained {result.env_steps:,} env steps; run directory: {result.dir}")
    return 0


# ---------------------------------------------------------------------- eval
def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) if i == 0 or i == 1 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, rows)])


def cmd_eval(args: argparse.Namespace) -> int:
    import re

    from maestro.config import config_to_dict
    from maestro.core.evaluate import evaluate, summarise
    from maestro.recipes import env_factory, find_run_dir, load_run_policy

    run_dir = find_run_dir(args.run)
    recipe, policy, ckpt_path = load_run_policy(run_dir, args.device, args.set)
    env = env_factory(recipe)(args.episodes, args.seed)
    per_ep = evaluate(policy, env, seed=args.seed, deterministic=not args.stochastic)
    summ = summarise(per_ep)
    rows = []
    for g, gs in env.spec.groups.items():
        m, ci = summ[f"episode_return/{g}"]
        rows.append([g, "episode return", f"{m:.4g}", f"±{ci:.3g}"])
        if gs.n_agents > 1:
            m, ci = summ[f"episode_return/{g}_sum"]
            rows.append([g, "episode return, summed over agents", f"{m:.4g}", f"±{ci:.3g}"])
    for k, (m, ci) in summ.items():
        if k != "episode_return" and not k.startswith("episode_return/"):  # (the alias of the first group's)
            label = {"episode_length": "episode length", "success": "success rate", "win": "win rate", "successful_return": "episode return, successful episodes"}.get(k, k)
            rows.append(["all", label, f"{m:.4g}", f"±{ci:.3g}"])
    mode = "stochastic" if args.stochastic else "deterministic"
    task = f" on {recipe.env} with {' '.join(args.set)}" if args.set else ""
    print(f"{recipe.name}: {args.episodes} episodes{task} (seed {args.seed}, {mode} actions), checkpoint {ckpt_path.name}")
    print(_table(rows, ["group", "metric", "mean", "95% CI"]))
    out = {
        "checkpoint": str(ckpt_path),
        "episodes": args.episodes,
        "seed": args.seed,
        "deterministic": not args.stochastic,
        "set": list(args.set),
        "env_config": config_to_dict(recipe.env_config),
        "summary": {k: [m, ci] for k, (m, ci) in summ.items()},
    }
    name = "eval.json" if not args.set else "eval-" + re.sub(r"[^A-Za-z0-9_.=-]+", "_", "_".join(args.set)) + ".json"
    (run_dir / name).write_text(json.dumps(out, indent=2))
    return 0


# ---------------------------------------------------------------------- render
def cmd_render(args: argparse.Namespace) -> int:
    from maestro.envs.render import record_episode, write_gif
    from maestro.recipes import env_factory, load_run_policy

    recipe, policy, _ = load_run_policy(args.run, args.device, args.set)
    env = env_factory(recipe)(1, args.seed)
    env.reset(seed=args.seed)
    if hasattr(policy, "bind"):  # a policy that reads the env's task (multitask)
        policy = policy.bind(env)
    import torch

    gen = torch.Generator(device=env.device)
    gen.manual_seed(args.seed)

    hidden = None  # recurrent policies keep their memory over the episode

    def act(obs: dict) -> dict:
        nonlocal hidden
        actions, hidden = policy.act(
            obs, env.state(), hidden, action_mask=env.action_mask(), deterministic=not args.stochastic, generator=gen, alive=env.alive()
        )
        return actions

    frames = record_episode(env, act)
    path = write_gif(frames, args.out, fps=args.fps)
    print(f"wrote {len(frames)} frames to {path}")
    return 0


# ---------------------------------------------------------------------- components
def cmd_components(args: argparse.Namespace) -> int:
    from maestro.algos.reinforce import Policy as ReinforcePolicy
    from maestro.reports.components import plot_action_components
    from maestro.recipes import env_factory, find_run_dir, load_run_policy

    run_dir = find_run_dir(args.run)
    recipe, policy, _ = load_run_policy(run_dir, "cpu")
    if not isinstance(policy, ReinforcePolicy) or policy.model_name not in ("ms_marl", "ms_marl_gcm"):
        raise _UserError(f"{run_dir}: components are drawn for MS-MARL policies (algo ms_marl or ms_marl_gcm), this run's algo is {recipe.algo!r}")
    path = plot_action_components(policy, env_factory(recipe)(1, args.seed), out=args.out, seed=args.seed)
    print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------------- demo
DEMO_RECIPES = {
    # recipe: (env steps, what the short run shows)
    "ms_marl/combat_ms_marl": (1_500_000, "MS-MARL (master LSTM + slave RNNs) against CommNet's bot on 5 vs 5 combat"),
    "mappo/simple_spread": (300_000, "MAPPO on simple_spread (N=3)"),
}
"""The recipes ``maestro demo`` knows a short budget for (any other recipe needs ``--env-steps``)."""


def cmd_demo(args: argparse.Namespace) -> int:
    from maestro.recipes import load_recipe, train_recipe

    t0 = time.perf_counter()
    known = DEMO_RECIPES.get(args.recipe)
    steps = args.env_steps or (known[0] if known else None)
    if steps is None:
        raise _UserError(f"maestro demo has no short budget for recipe {args.recipe!r}; give --env-steps (known: {', '.join(DEMO_RECIPES)})")
    recipe = load_recipe(
        args.recipe,
        [f"run.env_steps={steps}", f"run.eval_every={max(steps // 4, 1)}", "run.eval_episodes=100", f"run.checkpoint_every={max(steps // 2, 1)}", *args.set],
    )
    what = known[1] if known else f"{recipe.algo} on {recipe.env}"
    print(f"maestro demo: {what}, recipe {args.recipe}, {steps:,} env steps, {recipe.run.num_envs} env copies")
    result = train_recipe(recipe, Path(args.out))
    print(f"trained in {time.perf_counter() - t0:.0f} s")
    run_dir = result.dir
    code = main(["eval", str(run_dir), "--episodes", "100"])
    code |= main(["render", str(run_dir), "--out", str(run_dir / "episode.gif")])
    code |= main(["report", str(run_dir), "--out", str(run_dir / "report")])
    extra = []
    if recipe.algo in ("ms_marl", "ms_marl_gcm"):
        code |= main(["components", str(run_dir), "--out", str(run_dir / "action_components.png")])
        extra = [f"  action components  {run_dir / 'action_components.png'}  (the master's and the slaves' parts of the logits, Kong et al. Fig. 6b)"]
    print("\nresults:")
    print(f"  run directory      {run_dir}  (config.yaml, metrics.jsonl, checkpoints/, tb/ for `tensorboard --logdir {run_dir / 'tb'}`)")
    print(f"  evaluation         {run_dir / 'eval.json'}")
    print(f"  episode animation  {run_dir / 'episode.gif'}")
    print(f"  report             {run_dir / 'report' / 'report.md'}  (curves: {run_dir / 'report' / (recipe.name + '.png')})")
    for line in extra:
        print(line)
    print(f"  resume / extend    maestro train --resume {run_dir} --set run.env_steps={10 * steps}")
    return code


# ---------------------------------------------------------------------- report
def cmd_report(args: argparse.Namespace) -> int:
    from maestro.reports import write_report

    files = write_report(args.runs, args.out)
    print(f"report: {files[0]}")
    for f in files[1:]:
        print(f"figure: {f}")
    return 0


# ---------------------------------------------------------------------- parser
class _UserError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="maestro",
        description="Batched multi-agent reinforcement learning: train, evaluate, render and report runs from recipes.",
        epilog=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=_Formatter,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("list", help="list environments, algorithms and recipes", formatter_class=_Formatter,
                       description="List the registered environments (with their groups and the algorithms that can train on them), algorithms (with capabilities) and recipes.")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("train", help="train a recipe (or resume a run)", formatter_class=_Formatter,
                       description="Train RECIPE into <out>/<name>/<time>-s<seed>/ (config.yaml, metrics.jsonl, tb/, checkpoints/, log.txt). "
                       "Ctrl-C or SIGTERM writes a checkpoint and stops; --resume continues from the newest valid checkpoint.")
    s.add_argument("recipe", nargs="?", help="recipe file or name (e.g. mappo/simple_spread, see `maestro list`)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field by dotted path, value parsed as YAML (e.g. algo_config.lr=3e-4, run.env_steps=1e5, seed=1); repeatable")
    s.add_argument("--out", default="runs", help="parent directory of run directories")
    s.add_argument("--resume", metavar="RUN", help="continue this run directory from its newest valid checkpoint")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--ray-address", metavar="ADDR", help="join this Ray cluster for distributed.mode runs (same as --set distributed.address=ADDR)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("eval", help="evaluate a run's policy on a fixed seed set", formatter_class=_Formatter,
                       description="Run EPISODES test episodes (one per env copy, fixed seeds) with the policy of the newest valid checkpoint of RUN; "
                       "print mean episode return per group, episode length and success/win rates with 95%% confidence intervals; write RUN/eval.json.")
    s.add_argument("run", help="run directory (or a directory of runs: the newest is used)")
    s.add_argument("--episodes", type=int, default=100, help="number of test episodes")
    s.add_argument("--seed", type=int, default=12345, help="seed of the test episodes")
    s.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the policy's mode")
    s.add_argument("--device", default="cpu", help="torch device")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="evaluate on a changed recipe, as `train --set` (e.g. env_config.n_agents=6: a task the run never trained on; "
                   "the policy must take any number of agents, as the multitask learner's does); writes RUN/eval-<settings>.json; repeatable")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("render", help="write a GIF of one episode of a run's policy", formatter_class=_Formatter,
                       description="Play one episode (env copy 0) with the policy of the newest valid checkpoint of RUN and write it as a GIF.")
    s.add_argument("run", help="run directory")
    s.add_argument("--out", default="episode.gif", help="output GIF path")
    s.add_argument("--seed", type=int, default=0, help="episode seed")
    s.add_argument("--fps", type=int, default=10, help="frames per second")
    s.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the policy's mode")
    s.add_argument("--device", default="cpu", help="torch device")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="render on a changed recipe, as `eval --set`; repeatable")
    s.set_defaults(func=cmd_render)

    s = sub.add_parser("components", help="plot an MS-MARL policy's master and slave action components (Fig. 6b)", formatter_class=_Formatter,
                       description="Play one episode with the MS-MARL policy of RUN and plot the master's and the slaves' components "
                       "of the action logits, the action probabilities and the chosen actions over time (Kong et al. 2017, Figure 6b).")
    s.add_argument("run", help="run directory of an ms_marl or ms_marl_gcm recipe")
    s.add_argument("--out", default="action_components.png", help="output PNG path")
    s.add_argument("--seed", type=int, default=0, help="episode seed")
    s.set_defaults(func=cmd_components)

    s = sub.add_parser("demo", help="train a recipe briefly (default: MS-MARL on combat), then evaluate, render and report it", formatter_class=_Formatter,
                       description="The demo of `make demo`: a short run of RECIPE (default ms_marl/combat_ms_marl; mappo/simple_spread also has "
                       "a short budget), then `eval`, `render` and `report` of it (and `components` for MS-MARL), printing where everything went.")
    s.add_argument("recipe", nargs="?", default="ms_marl/combat_ms_marl", help="recipe name or YAML path")
    s.add_argument("--out", default="runs/demo", help="where the run and its report go")
    s.add_argument("--env-steps", type=int, default=None, help="training budget (default: the recipe's demo budget)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field (repeatable)")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("report", help="learning curves and a paper-style table over runs", formatter_class=_Formatter,
                       description="Group the runs at or below each RUN by recipe; write one PNG of learning curves per recipe "
                       "(mean and 95% confidence interval over seeds against env steps), one PNG per paper figure the recipes name (paper.figure: "
                       "a panel per paper.panel, a curve per recipe) and report.md with final values beside the paper's numbers. "
                       "Once one seed of a recipe has reached its run.env_steps, its unfinished seeds are left out of curves and means "
                       "(the tables name them and how far they got).")
    s.add_argument("runs", nargs="+", metavar="RUN", help="run directories or directories holding runs")
    s.add_argument("--out", required=True, help="output directory")
    s.set_defaults(func=cmd_report)
    return p


EXIT_BROKEN_PIPE = 128 + 13
"""Exit status when the reader of standard output went away (as a process killed by SIGPIPE)."""


def _silence_stdout() -> None:
    """Point standard output at /dev/null so that Python's final flush does not fail again
    (the recipe of the Python docs, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real file descriptor (stdout replaced in-process)
        pass


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``maestro`` script; returns the exit status."""
    from maestro.config import ConfigError
    from maestro.core.checkpoint import CheckpointError
    from maestro.distributed.config import WorkerLostError
    from maestro.recipes import RunDirError

    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    user_errors: tuple[type[BaseException], ...] = (_UserError, ConfigError, CheckpointError, RunDirError, FileNotFoundError)
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return status
    except BrokenPipeError:  # the reader closed the pipe (`maestro list | head`): stop quietly
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except user_errors as err:
        if os.environ.get("MAESTRO_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except WorkerLostError as err:  # a run-time failure, reported like a user error: no traceback
        if os.environ.get("MAESTRO_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _entry() -> Any:
    sys.exit(main())


if __name__ == "__main__":
    _entry()
