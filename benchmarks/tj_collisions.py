"""Why traffic-junction policies crash: the cause of each episode's first collision, and braking.

    .venv/bin/python benchmarks/tj_collisions.py RUN [RUN ...]            # trained runs (newest checkpoint)
    .venv/bin/python benchmarks/tj_collisions.py RUN --episodes 1000 --stochastic
    .venv/bin/python benchmarks/tj_collisions.py --difficulty hard        # the scripted policies only

Every row plays ``--episodes`` episodes at once (one per env copy, the fixed seed ``--seed``, the
final add rate) and reports:

- success (no collision in the episode) and collision cells per episode (``info["collisions"]``,
  which counts a pair of cars again at every step they stay together);
- the cause of each failed episode's *first* collision (the one that decides success), from
  ``traffic_junction.conflicts``: ``crossing`` (two cars driving on from different cells into one
  cell: a junction where one had to yield), ``rear_end`` (a car driving into one that brakes) or
  ``entry`` (a new car arriving on a car that waits on the entry cell); per episode, so that the
  three add up to 1 − success;
- how often cars brake: overall, when the next cell of their route holds a car, and when it is free.

Trained runs are read like ``maestro eval`` reads them (the recipe's env settings; greedy actions
unless ``--stochastic``). The scripted ``always_gas``, ``brake_if_occupied`` and ``reservation``
rows are printed for reference (``--no-scripted`` drops them).
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

import torch

import maestro
from maestro.envs.grid.traffic_junction import BRAKE, CONFLICT_KINDS, always_gas, brake_if_occupied, conflicts, next_cell_taken, reservation

Actor = Callable[[Any, dict, Any, Any], tuple[dict, Any]]


@torch.no_grad()
def diagnose(env: Any, actor: Actor, seed: int) -> dict[str, float]:
    """Play one episode in every copy of the traffic junction ``env`` with ``actor(env, obs, state, hidden)
    -> (actions, hidden)``; returns the row's figures (see the module docstring)."""
    B = env.num_envs
    obs, hidden = env.reset(seed=seed), None
    state = env.state()
    first = {k: torch.zeros(B, dtype=torch.bool) for k in (*CONFLICT_KINDS, "entry")}
    crashed = torch.zeros(B, dtype=torch.bool)
    n = {k: torch.zeros((), dtype=torch.long) for k in ("steps", "brake", "blocked", "brake_blocked")}
    for _ in range(env.spec.max_steps):
        actions, hidden = actor(env, obs, state, hidden)
        on = env.on_grid
        brake = on & (actions["car"] == BRAKE)
        blocked = on & next_cell_taken(env)
        n["steps"] += on.sum()
        n["brake"] += brake.sum()
        n["blocked"] += blocked.sum()
        n["brake_blocked"] += (brake & blocked).sum()
        kinds = conflicts(env, actions)
        out = env.step(actions)
        new = (out.info["success"] == 0) & ~crashed
        explained = torch.zeros(B, dtype=torch.bool)
        for k in CONFLICT_KINDS:  # the first cause that applies, as conflicts() orders them
            hit = new & ~explained & (kinds[k] > 0)
            first[k] |= hit
            explained |= hit
        first["entry"] |= new & ~explained
        crashed |= new
        obs, state = out.obs, out.state
    assert bool(out.done.all()), "every copy plays exactly one episode of max_steps"
    n = {k: int(v) for k, v in n.items()}
    free = n["steps"] - n["blocked"]
    return {
        "success": float(out.info["success"].mean()),
        "collisions": float(out.info["collisions"].mean()),
        **{f"first_{k}": float(v.float().mean()) for k, v in first.items()},
        "brake": n["brake"] / max(n["steps"], 1),
        "brake_blocked": n["brake_blocked"] / max(n["blocked"], 1),
        "brake_free": (n["brake"] - n["brake_blocked"]) / max(free, 1),
        "blocked_share": n["blocked"] / max(n["steps"], 1),
    }


def scripted(fn: Callable[[Any], dict]) -> Actor:
    return lambda env, obs, state, hidden: (fn(env), None)


def trained(policy: Any, seed: int, deterministic: bool) -> Actor:
    gen = torch.Generator().manual_seed(seed)

    def act(env: Any, obs: dict, state: Any, hidden: Any) -> tuple[dict, Any]:
        return policy.act(obs, state, hidden, action_mask=env.action_mask(), deterministic=deterministic, generator=gen, alive=env.alive())

    return act


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="*", help="run directories (or directories of runs: the newest is used)")
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--stochastic", action="store_true", help="sample the trained policies' actions (default: greedy)")
    p.add_argument("--difficulty", default="hard", help="for the scripted rows when no run is given")
    p.add_argument("--no-scripted", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from maestro.recipes import env_factory, find_run_dir, load_run_policy

    rows: list[tuple[str, dict[str, float]]] = []
    env_kw: dict[str, Any] = {"difficulty": args.difficulty}
    make: Callable[[int, int], Any] = lambda b, s: maestro.make_env("traffic_junction", num_envs=b, seed=s, **env_kw)  # noqa: E731
    for run in args.runs:
        run_dir = find_run_dir(run)
        recipe, policy, ckpt = load_run_policy(run_dir, "cpu")
        if recipe.env != "traffic_junction":
            raise SystemExit(f"{run_dir}: a {recipe.env!r} run, not a traffic junction one")
        make = env_factory(recipe)
        rows.append((f"{run_dir} ({ckpt.name})", diagnose(make(args.episodes, args.seed), trained(policy, args.seed, not args.stochastic), args.seed)))
    if not args.no_scripted:
        for name, fn in (("always_gas", always_gas), ("brake_if_occupied", brake_if_occupied), ("reservation (centralised)", reservation)):
            rows.append((name, diagnose(make(args.episodes, args.seed), scripted(fn), args.seed)))

    mode = "stochastic" if args.stochastic else "greedy"
    print(f"{args.episodes} episodes, seed {args.seed}, trained policies {mode}\n")
    print("| policy | success | collision cells / episode | first collision: crossing | rear-end | entry | brakes | P(brake \\| next cell taken) | P(brake \\| next cell free) | next cell taken |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        print(
            f"| {name} | {r['success']:.3f} | {r['collisions']:.2f} | {r['first_crossing']:.3f} | {r['first_rear_end']:.3f} | {r['first_entry']:.3f} "
            f"| {r['brake']:.3f} | {r['brake_blocked']:.3f} | {r['brake_free']:.3f} | {r['blocked_share']:.3f} |"
        )


if __name__ == "__main__":
    main()
