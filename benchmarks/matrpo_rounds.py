"""How many ADMM rounds a MATRPO task needs: one batch, the same ``theta_old``, the consensus run for
``K`` rounds for each ``K`` given, and what the update then gains (Li & He 2020, arXiv 2010.07916,
Table I sets ``K`` = 100 / 150 / 200 / 500 on its four tasks).

    .venv/bin/python benchmarks/matrpo_rounds.py matrpo/treasure_n8_matrpo --rounds 50 100 200 500 1000 2000
    .venv/bin/python benchmarks/matrpo_rounds.py runs/matrpo_treasure_n8_matrpo/20261205-095224-s2 --batches 3
    .venv/bin/python benchmarks/matrpo_rounds.py matrpo/navigation_n6_matrpo --set algo_config.edge_order=round_robin

The first argument is a recipe (the policy at its initialisation, seeded by the recipe's ``seed``) or
a run directory (the policy of its newest valid checkpoint, read from a copy: the run is not touched);
``--set`` overrides the recipe as ``maestro train`` does (``algo_config.rho=1``, ...). Each of
``--batches`` batches is sampled by the trainer from the same policy (the env and the action stream go
on from one batch to the next; the policy does not change), its advantages fitted once, and then for
every ``K`` the ADMM update of ``maestro.algos.matrpo.admm_update`` runs from ``theta_old``, with the
first ``K`` rounds of the run's edge order. Per ``K``, means over the batches of:

- ``believed``: ``loss/surrogate_gain``, each agent's gain on its own advantages under its own local joint
  ratio (what the agents believe the update gains);
- ``executed``: ``loss/team_surrogate_gain``, the same advantages under the executed policy's ratio
  (what the team gets); ``by_group``: the same, averaged over each group's agents instead of all
  (treasure collection: do the collectors gain what the deposits pay?);
- ``negative``: how many batches end with a negative believed gain (worse than no update on the agents'
  own batches: the rounds ended far from a consensus optimum, where the sum of gains is at least 0);
- ``disagreement``: mean absolute log-ratio difference across edges; ``kl``: the agents' mean KL;
- seconds of the update (one torch thread).

Advantages are normalised as the trainer does. Nothing here changes the trainer: it calls its pieces.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch


def round_sweep(source: str, rounds: list[int], batches: int, overrides: list[str]) -> list[dict[str, float]]:
    """Per ``K`` in ``rounds``, the update's metrics averaged over ``batches`` batches (see the module docstring)."""
    from maestro.algos.matrpo import admm_update, comm_graph, executed_gains, normalise_advantages
    from maestro.core.checkpoint import CheckpointError, latest_valid
    from maestro.core.consensus import edge_schedule, group_rounds
    from maestro.core.joint_policy import HeadsOnBatch
    from maestro.core.run import Run
    from maestro.core.seeding import derived_seed, make_generator
    from maestro.core.trpo_family import TrpoAgents, agent_major
    from maestro.recipes import env_factory, find_run_dir, load_recipe

    path = Path(source)
    run_dir = find_run_dir(path) if path.is_dir() else None
    recipe = load_recipe(run_dir / "config.yaml" if run_dir else source, overrides)
    if recipe.algo != "matrpo":
        raise SystemExit(f"{source}: algo is {recipe.algo!r}; this measures MATRPO's ADMM rounds")
    cfg = recipe.algo_config
    env = env_factory(recipe)(recipe.run.num_envs, recipe.seed)
    with tempfile.TemporaryDirectory() as tmp:
        directory = None
        if run_dir is not None:  # resume a copy: config and newest valid checkpoint only
            try:
                checkpoint, _, _ = latest_valid(run_dir / "checkpoints")
            except CheckpointError as err:
                raise SystemExit(f"{source}: {err}") from None
            directory = Path(tmp) / "run"
            (directory / "checkpoints").mkdir(parents=True)
            shutil.copy(run_dir / "config.yaml", directory / "config.yaml")
            shutil.copy(checkpoint, directory / "checkpoints" / checkpoint.name)
        with Run(recipe.run, directory, seed=recipe.seed, config=recipe.to_dict(), resume=run_dir is not None) as run:
            agents = TrpoAgents(cfg, env, run, "consensus")
            N, D = agents.axis.n_agents, agents.axis.obs_dim
            M = agents.batch.num_samples
            graph = comm_graph(cfg, N)
            theta_old = agents.policy.theta.detach().clone()
            order = make_generator(derived_seed(recipe.seed, "edge-order"))  # the trainer's stream, where it resumes
            if agents.resumed is not None:
                order.set_state(agents.resumed["edge_order"])
            order_state = order.get_state()
            rows: dict[int, list[dict[str, float]]] = {k: [] for k in rounds}
            for _ in range(batches):
                agents.sample()
                advantages, _ = agents.advantages()
                advantages = normalise_advantages(agent_major(advantages), cfg.advantage_norm)
                obs, actions = agents.batch.obs.reshape(M, N, D), agents.batch.actions.reshape(M, N)
                heads = HeadsOnBatch.of_batch(agents.policy, obs, actions, cfg.fisher_every)  # at theta_old: every K's update, and its score
                for k in rounds:
                    order.set_state(order_state)  # every K: the first K rounds of the same schedule
                    steps = group_rounds(graph, edge_schedule(graph, k, cfg.edge_order, order))
                    t = time.perf_counter()
                    metrics = admm_update(cfg, agents.policy, obs, actions, advantages, graph, steps, heads)
                    metrics["seconds"] = time.perf_counter() - t
                    with torch.no_grad():
                        gains = executed_gains(advantages, heads.log_ratios_and_kl(agents.policy.theta, torch.arange(N))[0])  # (N,)
                        for name, group_gains in agents.axis.split(gains).items():  # the agent axis's groups, in order
                            metrics[f"group/{name}"] = float(group_gains.mean())
                        agents.policy.theta.copy_(theta_old)
                    rows[k].append(metrics)
    env.close()
    groups = agents.axis.groups
    out = []
    for k in rounds:
        r = rows[k]
        mean = {name: statistics.fmean(m[name] for m in r) for name in r[0]}
        out.append({
            "rounds": k,
            "believed": mean["loss/surrogate_gain"],
            "executed": mean["loss/team_surrogate_gain"],
            "by_group": {name: mean[f"group/{name}"] for name in groups},
            "negative": sum(m["loss/surrogate_gain"] < 0 for m in r),
            "batches": len(r),
            "disagreement": mean["loss/consensus_disagreement"],
            "kl": mean["loss/kl"],
            "seconds": mean["seconds"],
        })
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a matrpo recipe (file or name) or a run directory with checkpoints")
    parser.add_argument("--rounds", type=int, nargs="+", default=[50, 100, 200, 500, 1000], help="ADMM rounds K to compare")
    parser.add_argument("--batches", type=int, default=2, help="batches sampled from the same policy")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field (as maestro train --set)")
    args = parser.parse_args(argv)
    if min(args.rounds) < 1 or args.batches < 1:
        parser.error("--rounds and --batches must be >= 1")
    torch.set_num_threads(1)
    rows = round_sweep(args.source, sorted(set(args.rounds)), args.batches, args.set)
    print("| ADMM rounds | believed gain | executed gain | executed gain by group | believed < 0 | disagreement | KL | s / update |")
    print("|---:|---:|---:|---|---:|---:|---:|---:|")
    for r in rows:
        by_group = ", ".join(f"{name} {v:+.5f}" for name, v in r["by_group"].items())
        print(f"| {r['rounds']} | {r['believed']:+.5f} | {r['executed']:+.5f} | {by_group} | {r['negative']} of {r['batches']} | {r['disagreement']:.4f} | {r['kl']:.5f} | {r['seconds']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
