"""Throughput and scripted-policy statistics of the grid worlds (traffic junction, combat).

    .venv/bin/python benchmarks/grid_stats.py                 # defaults: B=1024, 2000 episodes
    .venv/bin/python benchmarks/grid_stats.py --episodes 500 --threads 2

(a) env-steps/s at ``--batch`` copies with random legal actions (the time of ``env.step`` alone,
and of the loop including the sampling of the actions); (b) over ``--episodes`` episodes per row
(one episode per copy, all copies stepped together), the collision rate (1 − success) of the
scripted traffic policies at the final add rate of each difficulty, and the win / draw rates of
scripted combat policies against the built-in bot. Prints Markdown tables.

No peer implementation is timed: the references (IC3Net's ``ic3net-envs``, CommNet's Lua/Torch7
MazeBase games) are not installable from a package registry here. The published numbers of trained
models (MS-MARL Table 1) are printed beside the scripted baselines for orientation.
"""

from __future__ import annotations

import argparse
import time

import torch

import maestro
from maestro.envs.api import random_actions
from maestro.envs.grid.combat import attack_nearest
from maestro.envs.grid.traffic_junction import always_gas, brake_if_occupied, reservation

TJ = [("easy", {}), ("medium", {}), ("hard", {}), ("hard", {"max_steps": 80}), ("hard", {"route_set": "first_turn"})]  # the last: MS-MARL's text, 3 routes per car


def throughput(name: str, kw: dict, batch: int, steps: int, seed: int = 0) -> tuple[float, float]:
    """(env-steps/s of env.step alone, env-steps/s of sampling + step) with random legal actions."""
    env = maestro.make_env(name, num_envs=batch, seed=seed, **kw)
    env.reset()
    gen = torch.Generator(device=env.device).manual_seed(seed)
    for _ in range(5):  # warm-up
        env.step(random_actions(env, gen))
    t_step = 0.0
    t0 = time.perf_counter()
    for _ in range(steps):
        a = random_actions(env, gen)
        t1 = time.perf_counter()
        env.step(a)
        t_step += time.perf_counter() - t1
    total = time.perf_counter() - t0
    return batch * steps / t_step, batch * steps / total


def first_episode(env, policy) -> dict[str, torch.Tensor]:
    """Step every copy until its first episode ends; the info of that last step, per copy."""
    B = env.num_envs
    finished = torch.zeros(B, dtype=torch.bool, device=env.device)
    keep: dict[str, torch.Tensor] = {}
    for _ in range(env.spec.max_steps):
        out = env.step(policy(env))
        newly = out.done & ~finished
        for k, v in out.info.items():
            if v.dim() == 1:
                keep.setdefault(k, torch.zeros_like(v, dtype=torch.float32))
                keep[k] = torch.where(newly, v.float(), keep[k])
        finished |= out.done
        if bool(finished.all()):
            break
    assert bool(finished.all())
    return keep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1024, help="copies for the throughput rows")
    ap.add_argument("--steps", type=int, default=100, help="timed steps per throughput row")
    ap.add_argument("--episodes", type=int, default=2000, help="episodes per statistics row")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    print(f"## Throughput (B={args.batch}, random legal actions, {args.steps} steps, torch threads={args.threads}, CPU)\n")
    print("| env | config | env-steps/s (step) | env-steps/s (sample + step) |")
    print("|---|---|---:|---:|")
    for d, extra in TJ[:3]:
        s, t = throughput("traffic_junction", {"difficulty": d, **extra}, args.batch, args.steps, args.seed)
        print(f"| traffic_junction | {d} | {s:,.0f} | {t:,.0f} |")
    s, t = throughput("combat", {}, args.batch, args.steps, args.seed)
    print(f"| combat | 5 vs 5, 15×15 | {s:,.0f} | {t:,.0f} |")

    E = args.episodes
    print(f"\n## Traffic junction, scripted policies ({E} episodes per row, final add rate)\n")
    print("| difficulty | max_steps | add rate | policy | collision rate (1 − success) | cars through per episode | published (trained, MS-MARL Table 1) |")
    print("|---|---:|---:|---|---:|---:|---|")
    gen = torch.Generator().manual_seed(args.seed)
    for d, extra in TJ:
        for j, (pname, pol) in enumerate( (("always gas", always_gas), ("brake if occupied", brake_if_occupied),
                           ("random", lambda e: random_actions(e, gen)),
                           ("centralised reservation (sees every car)", reservation))):
            env = maestro.make_env("traffic_junction", num_envs=E, seed=args.seed, difficulty=d, initial_progress=1.0, **extra)
            env.reset()
            info = first_episode(env, pol)
            fail = 1.0 - info["success"].mean().item()
            pub = "success 0.94 CommNet, 0.96 MS-MARL" if (d == "hard" and extra.get("max_steps") is None and j == 0) else ""
            label = f"{d}, 3 routes" if extra.get("route_set") == "first_turn" else d
            print(f"| {label} | {env.spec.max_steps} | {env.params.add_rate_max:g} | {pname} | {fail:.3f} | {info['exited'].mean().item():.1f} | {pub} |")

    print(f"\n## Combat, scripted policies vs the bot ({E} episodes per row)\n")
    print("| policy | win | draw | loss | mean terminal reward | published (trained, MS-MARL Table 1) |")
    print("|---|---:|---:|---:|---:|---|")
    rows = [
        ("attack nearest (deterministic steps)", {}, lambda e: attack_nearest(e)),
        ("attack nearest (random steps, as the bot)", {}, lambda e: attack_nearest(e, gen)),
        ("attack nearest + seek unseen enemies (privileged)", {}, lambda e: attack_nearest(e, seek=True)),
        ("random legal", {}, lambda e: random_actions(e, gen)),
        ("no-op", {}, lambda e: {"agent": torch.zeros(e.num_envs, e.n, dtype=torch.long)}),
        ("attack nearest, bots without shared vision", {"bot_shared_vision": False}, lambda e: attack_nearest(e)),
    ]
    for i, (pname, kw, pol) in enumerate(rows):
        env = maestro.make_env("combat", num_envs=E, seed=args.seed, **kw)
        env.reset()
        info = first_episode(env, pol)
        win, draw = info["win"].mean().item(), info["draw"].mean().item()
        pub = "win 0.31 CommNet, 0.59 MS-MARL" if i == 0 else ""
        print(f"| {pname} | {win:.3f} | {draw:.3f} | {max(0.0, 1 - win - draw):.3f} | {info['terminal_reward'].mean().item():.2f} | {pub} |")


if __name__ == "__main__":
    main()
