"""Throughput and scripted-policy statistics of the grid worlds (traffic junction, combat).

    .venv/bin/python benchmarks/grid_stats.py                 # defaults: B=1024, 2000 episodes
    .venv/bin/python benchmarks/grid_stats.py --episodes 500 --threads 2
    .venv/bin/python benchmarks/grid_stats.py --sections ic3net --episodes 4000 --reference ic3net_stats.json

(a) env-steps/s at ``--batch`` copies with random legal actions (the time of ``env.step`` alone,
and of the loop including the sampling of the actions); (b) over ``--episodes`` episodes per row
(one episode per copy, all copies stepped together), the collision rate (1 − success) of the
scripted traffic policies at the final add rate of each difficulty, and the win / draw rates of
scripted combat policies against the built-in bot; (c) ``ic3net``: success and team return (the
episode's reward summed over steps and cars) per episode, mean ± standard error, of always-gas and
uniformly random play on the easy, medium and hard junctions (and hard at IC3Net's 80 steps), under
both ``slot_reuse`` rules, with how many episodes differ between the rules; ``--reference FILE``
puts IC3Net's own figures beside them (a JSON list of rows ``{case, policy, success, success_se,
return, return_se}``, made by running IC3Net's ``ic3net-envs`` outside the project: the driver and
the commands are in ``docs/traffic_junction.md``) with ``z`` = the difference over its standard
error. Prints Markdown tables.

No peer implementation is timed: the references (IC3Net's ``ic3net-envs``, CommNet's Lua/Torch7
MazeBase games) are not installable from a package registry here. The published numbers of trained
models (MS-MARL Table 1) are printed beside the scripted baselines for orientation.
"""

from __future__ import annotations

import argparse
import json
import math
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
            keep.setdefault(k, torch.zeros_like(v, dtype=torch.float32))
            keep[k] = torch.where(newly.view(-1, *([1] * (v.dim() - 1))), v.float(), keep[k])
        finished |= out.done
        if bool(finished.all()):
            break
    assert bool(finished.all())
    return keep


# IC3Net's cases (README and traffic_junction_env.py; curriculum off: the final add rate); the
# hard junction at maestro's 40 steps (CommNet, MS-MARL Table 1) and at IC3Net's 80.
IC3NET_CASES = [("easy", "easy", {}), ("medium", "medium", {}), ("hard", "hard", {}), ("hard80", "hard", {"max_steps": 80})]


def mean_se(x: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error of the mean of the per-episode values ``x (E,)``."""
    x = x.double()
    return x.mean().item(), (x.std(unbiased=True) / math.sqrt(x.numel())).item()


def ic3net_parity(episodes: int, seed: int, reference: str | None, rules: tuple[str, ...] = ("same_step", "next_step")) -> None:
    """Section (c): scripted-policy success and team return beside IC3Net's env (see the module docstring)."""
    ref = {}
    if reference:
        with open(reference) as f:
            ref = {(r["case"], r["policy"]): r for r in json.load(f)}
    print(f"\n## Traffic junction, scripted policies beside IC3Net's env ({episodes} episodes per row, final add rate, mean ± s.e.)\n")
    print("| case | grid, cars, steps, add rate | policy | slot_reuse | success | team return | cars through | episodes differing from the other rule | IC3Net success | IC3Net return | z success | z return |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for case, difficulty, extra in IC3NET_CASES:
        for pname in ("gas", "random"):
            per_rule = {}
            for rule in rules:
                env = maestro.make_env("traffic_junction", num_envs=episodes, seed=seed, difficulty=difficulty, slot_reuse=rule, initial_progress=1.0, **extra)
                env.reset()
                gen = torch.Generator().manual_seed(seed + 1)
                pol = always_gas if pname == "gas" else (lambda e: random_actions(e, gen))
                info = first_episode(env, pol)
                per_rule[rule] = (env, info["success"], info["episode_return/car"].sum(-1), info["exited"])
            for rule in rules:
                env, succ, ret, through = per_rule[rule]
                other = per_rule.get("next_step" if rule == "same_step" else "same_step")
                differ = "" if other is None else str(int(((succ != other[1]) | (ret != other[2]) | (through != other[3])).sum()))
                p = env.params
                (ms, ss), (mr, sr), (mx, sx) = mean_se(succ), mean_se(ret), mean_se(through)
                cells = [f"{ms:.4f} ± {ss:.4f}", f"{mr:.2f} ± {sr:.2f}", f"{mx:.2f} ± {sx:.2f}", differ]
                r = ref.get((case, pname))
                if r is None:
                    cells += ["", "", "", ""]
                else:
                    zs = (ms - r["success"]) / max(math.hypot(ss, r["success_se"]), 1e-12)
                    zr = (mr - r["return"]) / max(math.hypot(sr, r["return_se"]), 1e-12)
                    cells += [f"{r['success']:.4f} ± {r['success_se']:.4f}", f"{r['return']:.2f} ± {r['return_se']:.2f}", f"{zs:+.2f}", f"{zr:+.2f}"]
                policy = "always gas" if pname == "gas" else "uniform random"
                print(f"| {case} | {p.dim}×{p.dim}, {p.n_cars}, {p.max_steps}, {p.add_rate_max:g} | {policy} | {rule} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1024, help="copies for the throughput rows")
    ap.add_argument("--steps", type=int, default=100, help="timed steps per throughput row")
    ap.add_argument("--episodes", type=int, default=2000, help="episodes per statistics row")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sections", default="throughput,traffic,combat,ic3net", help="comma-separated: throughput, traffic, combat, ic3net")
    ap.add_argument("--reference", default=None, help="JSON of IC3Net's figures for the ic3net section (docs/traffic_junction.md)")
    ap.add_argument("--slot-reuse", default="same_step,next_step", help="the traffic junction's slot_reuse rules of the ic3net section")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sections = set(args.sections.split(","))
    if sections - {"throughput", "traffic", "combat", "ic3net"}:
        ap.error(f"--sections: unknown {sorted(sections - {'throughput', 'traffic', 'combat', 'ic3net'})}")
    gen = torch.Generator().manual_seed(args.seed)  # one stream for the traffic and combat sections, in this order
    if "throughput" in sections:
        throughput_section(args)
    if "traffic" in sections:
        traffic_section(args, gen)
    if "combat" in sections:
        combat_section(args, gen)
    if "ic3net" in sections:
        rules = tuple(args.slot_reuse.split(","))
        if set(rules) - {"same_step", "next_step"}:
            ap.error(f"--slot-reuse: unknown {sorted(set(rules) - {'same_step', 'next_step'})}")
        ic3net_parity(args.episodes, args.seed, args.reference, rules)


def throughput_section(args: argparse.Namespace) -> None:
    print(f"## Throughput (B={args.batch}, random legal actions, {args.steps} steps, torch threads={args.threads}, CPU)\n")
    print("| env | config | env-steps/s (step) | env-steps/s (sample + step) |")
    print("|---|---|---:|---:|")
    for d, extra in TJ[:3]:
        s, t = throughput("traffic_junction", {"difficulty": d, **extra}, args.batch, args.steps, args.seed)
        print(f"| traffic_junction | {d} | {s:,.0f} | {t:,.0f} |")
    s, t = throughput("combat", {}, args.batch, args.steps, args.seed)
    print(f"| combat | 5 vs 5, 15×15 | {s:,.0f} | {t:,.0f} |")


def traffic_section(args: argparse.Namespace, gen: torch.Generator) -> None:
    E = args.episodes
    print(f"\n## Traffic junction, scripted policies ({E} episodes per row, final add rate)\n")
    print("| difficulty | max_steps | add rate | policy | collision rate (1 − success) | cars through per episode | published (trained, MS-MARL Table 1) |")
    print("|---|---:|---:|---|---:|---:|---|")
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


def combat_section(args: argparse.Namespace, gen: torch.Generator) -> None:
    E = args.episodes
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
