"""Cost of one MATRPO iteration against one centralised TRPO iteration (issue 21's target: at most 2x),
measured side by side in one process on the paper's settings (Li & He 2020, arXiv 2010.07916, Table I):
10k env steps per iteration (100 paths of 100 steps), 2x128 SELU policies and value nets, and for
MATRPO the ADMM rounds and penalty of each column. The recipes in ``recipes/matrpo/`` hold the same
settings.

    .venv/bin/python benchmarks/matrpo_cost.py                         # navigation N=3 (K=100 rounds)
    .venv/bin/python benchmarks/matrpo_cost.py --tasks nav3 nav6 treasure8 treasure12 --iterations 2
    .venv/bin/python benchmarks/matrpo_cost.py --algos trpo_central trpo_independent matrpo --json out.json
    .venv/bin/python benchmarks/matrpo_cost.py --algos trpo_central matrpo matrpo+subspace
    .venv/bin/python benchmarks/matrpo_cost.py --algos matrpo matrpo@decentralised --admm-rounds 20
    .venv/bin/python benchmarks/matrpo_cost.py --algos trpo_central matrpo+subspace --set refresh_cg_iterations=5

``matrpo+subspace`` is MATRPO with ``local_step: subspace``; ``matrpo@decentralised`` is
``distributed.mode=decentralised`` (a Ray actor per agent on an embedded local cluster), reported also
as a ratio to the in-process ``matrpo`` when both run.

Each algorithm runs ``--warmup`` iterations (not timed), then ``--iterations`` timed ones; the time
of an iteration is the trainer's ``time/iteration_s`` (sampling, advantages, value fit and the policy
update, ADMM rounds included; checkpoints and evaluation are off). MATRPO's share spent in the ADMM
rounds (``time/admm_s``) is printed beside it. One torch thread; the figures depend on what else
the machine runs, so ``--rounds R`` measures the algorithms R times in turn (A B A B ...), each a
fresh run, and reports the median over all timed iterations.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import yaml

TASKS = {
    # name: (env, env_config, max_kl, admm_rounds, rho)   (Table I)
    "nav3": ("simple_spread", {"n_agents": 3, "reward": "agent0", "max_cycles": 100}, 0.003, 100, 1.0),
    "nav6": ("simple_spread", {"n_agents": 6, "reward": "agent0", "max_cycles": 100}, 0.003, 150, 1.0),
    "treasure8": ("collect_treasure", {"num_collectors": 6, "num_deposits": 2, "num_treasures": 6, "reward": "matrpo", "max_cycles": 100}, 0.001, 200, 5.0),
    "treasure12": ("collect_treasure", {"num_collectors": 9, "num_deposits": 3, "num_treasures": 9, "reward": "matrpo", "max_cycles": 100}, 0.001, 500, 5.0),
}




def iteration_times(
    algo: str, task: str, iterations: int, warmup: int, paths: int = 100, steps: int = 100, seed: int = 0, admm_rounds: int = 0,
    subspace_growth: float = 2.0, overrides: dict[str, object] | None = None,
) -> list[dict[str, float]]:
    """Per timed iteration, ``time/iteration_s`` and (MATRPO) ``time/admm_s``; ``algo@decentralised`` runs on Ray."""
    import maestro
    from maestro.core.run import Run, RunConfig
    from maestro.registry import algo_entry

    env_name, env_cfg, max_kl, rounds, rho = TASKS[task]
    algo, _, mode = algo.partition("@")
    algo, _, local_step = algo.partition("+")
    entry = algo_entry(algo)
    extra = {"admm_rounds": admm_rounds or rounds, "rho": rho, "local_step": local_step or "trpo", "subspace_growth": subspace_growth, **(overrides or {})} if algo == "matrpo" else {}
    cfg = entry.config(rollout_steps=steps, max_kl=max_kl, **extra)
    env = maestro.make_env(env_name, num_envs=paths, seed=seed, **env_cfg)
    rows: list[dict[str, float]] = []
    total = warmup + iterations
    run_cfg = RunConfig(env_steps=total * paths * steps, num_envs=paths, eval_episodes=0, progress=False, tensorboard=False)
    with Run(run_cfg, None, seed=seed) as run:
        step = run.step

        def record(n: int, metrics: dict[str, float]) -> None:
            rows.append({k: v for k, v in metrics.items() if k.startswith("time/")})
            step(n, metrics)

        run.step = record
        if mode == "decentralised":
            from maestro.distributed import DistributedConfig, train_distributed

            train_distributed(DistributedConfig(mode="decentralised"), algo, cfg, env_name, None, env, run, seed)
        else:
            entry.train(cfg, env, run)
    return rows[warmup:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["nav3"], choices=sorted(TASKS))
    parser.add_argument("--algos", nargs="+", default=["trpo_central", "matrpo"])
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--paths", type=int, default=100, help="env copies B (Table I: 100)")
    parser.add_argument("--steps", type=int, default=100, help="steps per path T (Table I: 100)")
    parser.add_argument("--admm-rounds", type=int, default=0, help="MATRPO's rounds K (0: Table I's for the task)")
    parser.add_argument("--subspace-growth", type=float, default=2.0, help="matrpo+subspace: algo_config.subspace_growth")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a MATRPO setting for every matrpo algo (e.g. refresh_cg_iterations=5)")
    parser.add_argument("--rounds", type=int, default=1, help="measure the algorithms this many times in turn (A B A B ...)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    overrides = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.set)}
    results = []
    for task in args.tasks:
        rows: dict[str, list[dict[str, float]]] = {algo: [] for algo in args.algos}
        wall: dict[str, float] = {algo: 0.0 for algo in args.algos}
        for _ in range(args.rounds):
            for algo in args.algos:
                t = time.perf_counter()
                rows[algo] += iteration_times(algo, task, args.iterations, args.warmup, args.paths, args.steps, admm_rounds=args.admm_rounds, subspace_growth=args.subspace_growth, overrides=overrides)
                wall[algo] += time.perf_counter() - t
        times = {
            algo: {
                "iteration_s": statistics.median(r["time/iteration_s"] for r in rows[algo]),
                "admm_s": statistics.median(r.get("time/admm_s", 0.0) for r in rows[algo]),
                "wall_s": wall[algo],
            }
            for algo in args.algos
        }
        base = times.get("trpo_central", {}).get("iteration_s")
        in_process = times.get("matrpo", {}).get("iteration_s")
        for algo, row in times.items():
            ratio = row["iteration_s"] / base if base else float("nan")
            admm = f", ADMM {row['admm_s']:.2f} s" if algo.startswith("matrpo") else ""
            versus = f"   x{ratio:.1f} trpo_central" if base else ""
            if algo == "matrpo@decentralised" and in_process:
                versus += f"   x{row['iteration_s'] / in_process:.2f} in-process matrpo"
            print(f"{task:11s} {algo:21s} {row['iteration_s']:8.2f} s/iteration{admm}{versus}")
            results.append({"task": task, "algo": algo, **row, "ratio_to_trpo_central": ratio})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
