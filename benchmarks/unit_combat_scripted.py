"""Win rates of scripted (non-learning) policies in ``unit_combat`` against the built-in AI.

For each scenario, ``--battles`` battles (1000) with fixed spawn layouts (env seed ``--seed``: every
policy faces the same 1000 layouts) are played as one batch until every copy has finished its
first battle. Policies: ``attack_closest``, ``focus_fire`` (weakest enemy in range, else closest),
``focus_fire_no_overkill`` (no more shots at an enemy in a step than its hit points need), plus
``idle`` (every unit stands still) and ``random`` (uniform BiCNet actions) for scale. Reported:
win rate (with a 95% Wilson interval), draw rate, mean own and enemy units left, mean length.

Beside them, the published "real game" win rates of Usunier et al. 2016 (arXiv 1609.02993,
Table 1, 1000 test battles against the built-in AI of StarCraft: Brood War): m15v16 attack-closest
(c) .81, weakest-closest (wc) .10, no-overkill-no-change (nok_nc) .68; w15v17 c .20, wc .02,
nok_nc .12 (m10v13z was not in that table).

    python benchmarks/unit_combat_scripted.py
    python benchmarks/unit_combat_scripted.py --scenarios m15v16 --battles 200 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

import maestro
from maestro.envs.units.engine import SCRIPTED

USUNIER = {  # Usunier et al. 2016, Table 1 (real game, 1000 battles): c, wc, nok_nc
    "m15v16": {"attack_closest": 0.81, "focus_fire": 0.10, "focus_fire_no_overkill": 0.68},
    "w15v17": {"attack_closest": 0.20, "focus_fire": 0.02, "focus_fire_no_overkill": 0.12},
}


def idle(env):
    a = torch.zeros(env.num_envs, env.n, 3, device=env.device)
    a[..., 0], a[..., 2] = -1.0, -1.0
    return {"agent": a}


def make_random(seed: int):
    g = torch.Generator().manual_seed(seed)

    def policy(env):
        return {"agent": torch.rand(env.num_envs, env.n, 3, generator=g) * 2 - 1}

    return policy


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def play(scenario: str, policy, battles: int, seed: int, **env_kw) -> dict:
    env = maestro.make_env("unit_combat", num_envs=battles, seed=seed, scenario=scenario, **env_kw)
    env.reset()
    done = torch.zeros(battles, dtype=torch.bool)
    keys = ("win", "draw", "own_units", "enemy_units")
    rec = {k: torch.zeros(battles) for k in keys}
    length = torch.zeros(battles)
    for _ in range(env.spec.max_steps):
        out = env.step(policy(env))
        new = out.done & ~done
        for k in keys:
            rec[k] = torch.where(new, out.info[k], rec[k])
        length = torch.where(new, out.info["episode_length"].float(), length)
        done |= out.done
        if bool(done.all()):
            break
    wins = float(rec["win"].sum())
    lo, hi = wilson(wins, battles)
    return {
        "win": wins / battles, "win_lo": lo, "win_hi": hi, "draw": float(rec["draw"].mean()),
        "own_left": float(rec["own_units"].mean()), "enemy_left": float(rec["enemy_units"].mean()), "length": float(length.mean()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenarios", nargs="+", default=["m15v16", "m10v13z", "w15v17"])
    p.add_argument("--battles", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bot-idle", default="attack_move", choices=["attack_move", "hold"], help="the env's bot_idle")
    p.add_argument("--bot-acquisition", default="openbw", choices=["openbw", "sight"], help="the env's bot_acquisition")
    p.add_argument("--bot-retaliate", action="store_true", help="the env's bot_retaliate")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    policies = {**SCRIPTED, "idle": idle, "random": make_random(args.seed)}
    results = {}
    print(f"# unit_combat scripted policies vs the built-in AI (bot_idle={args.bot_idle}, bot_acquisition={args.bot_acquisition}, bot_retaliate={args.bot_retaliate}); {args.battles} battles per cell, env seed {args.seed}")
    print("| scenario | policy | win rate [95% CI] | draws | own units left | enemy units left | steps | Usunier et al. (real game) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for sc in args.scenarios:
        for name, pol in policies.items():
            t = time.perf_counter()
            r = play(sc, pol, args.battles, args.seed, bot_idle=args.bot_idle, bot_acquisition=args.bot_acquisition, bot_retaliate=args.bot_retaliate)
            r["seconds"] = time.perf_counter() - t
            results[f"{sc}/{name}"] = r
            ref = USUNIER.get(sc, {}).get(name)
            print(
                f"| {sc} | {name} | {r['win']:.3f} [{r['win_lo']:.3f}, {r['win_hi']:.3f}] | {r['draw']:.3f} | {r['own_left']:.1f} | "
                f"{r['enemy_left']:.1f} | {r['length']:.1f} | {ref if ref is not None else '-'} |",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
